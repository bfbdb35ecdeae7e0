//! `metadata.managedFields`: who owns which field of an object, and server-side apply.
//!
//! Every write records its manager's fields the way Kubernetes' field manager does (on
//! structured-merge-diff): a non-apply write (create, update, patch) is an `Update` entry of
//! its manager that takes over every field it added or changed from everybody else
//! ([`update`]); an apply (`application/apply-patch+yaml`) merges the configuration into the
//! object, makes the manager's `Apply` entry exactly the configuration's fields, removes
//! the fields it applied before and no longer applies (unless another manager owns them),
//! and refuses — 409 with one `FieldManagerConflict` cause per field — to change a field
//! another manager owns, unless forced, which takes the field over ([`apply`]).
//!
//! Start reading at [`apply`]. `set` holds the field sets and their `FieldsV1` encoding,
//! `walk` the schema-guided merge, diff and prune. No IO.
//!
//! Left out (differences from Kubernetes): no conversion between versions (every entry is
//! read as the stored version); no upgrade of client-side-apply ownership
//! (`last-applied-configuration`) on the first server-side apply; a list item's key fields
//! must be present (only `protocol` of ports is defaulted); ownership of fields set by
//! admission and defaulting goes to the writer; the first `.` of built-in structs follows
//! the schema (`properties`), not Go's pointer-ness.

pub mod set;
pub mod walk;

use serde_json::{Map, Value, json};

use crate::status::ApiError;
pub use set::{FieldSet, PathElement};
pub use walk::Node;

/// Longest manager name Kubernetes accepts.
pub const MAX_MANAGER_LEN: usize = 128;

/// `metadata` fields no manager owns.
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The operation of a managedFields entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Entry {
    fn decode(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let operation = match v.get("operation").and_then(Value::as_str)? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        let fields = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f)?,
            None => FieldSet::default(),
        };
        Some(Entry {
            manager: s("manager").unwrap_or_default(),
            operation,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|x| !x.is_empty()),
            fields,
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }

    /// How Kubernetes names the manager in conflicts.
    fn printed(&self) -> String {
        match (self.operation, &self.time) {
            (Operation::Apply, _) => format!("{:?}", self.manager),
            (Operation::Update, Some(t)) => {
                format!("{:?} using {} at {t}", self.manager, self.api_version)
            }
            (Operation::Update, None) => format!("{:?} using {}", self.manager, self.api_version),
        }
    }
}

/// The managedFields of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Managed(pub Vec<Entry>);

impl Managed {
    /// The entries of `obj`; `None` when its managedFields are malformed.
    pub fn of(obj: &Value) -> Option<Managed> {
        match obj.pointer("/metadata/managedFields") {
            None | Some(Value::Null) => Some(Managed::default()),
            Some(Value::Array(a)) => a
                .iter()
                .map(Entry::decode)
                .collect::<Option<_>>()
                .map(Managed),
            Some(_) => None,
        }
    }

    /// The entries a write starts from (Kubernetes' `decodeLiveOrNew`): `[]` (or `[{}]`) in
    /// the new object resets them; other valid, non-empty ones in the new object are taken
    /// as set by the client; otherwise the live object's.
    pub fn live_or_new(live: Option<&Value>, new: &Value) -> Managed {
        let from_live = || live.and_then(Managed::of).unwrap_or_default();
        match new.pointer("/metadata/managedFields") {
            Some(Value::Array(a)) if a.is_empty() => Managed::default(),
            Some(Value::Array(a)) if a.len() == 1 && a[0] == json!({}) => Managed::default(),
            Some(_) => match Managed::of(new) {
                Some(m) if !m.0.is_empty() => m,
                _ => from_live(),
            },
            None => from_live(),
        }
    }

    fn position(&self, op: &Op<'_>, operation: Operation) -> Option<usize> {
        self.0.iter().position(|e| {
            e.manager == op.manager
                && e.operation == operation
                && e.subresource.as_deref() == op.subresource
                && (operation == Operation::Apply || e.api_version == op.api_version)
        })
    }

    fn find_or_insert(&mut self, op: &Op<'_>, operation: Operation) -> usize {
        if let Some(i) = self.position(op, operation) {
            return i;
        }
        self.0.push(Entry {
            manager: op.manager.to_string(),
            operation,
            api_version: op.api_version.to_string(),
            time: None,
            subresource: op.subresource.map(str::to_string),
            fields: FieldSet::default(),
        });
        self.0.len() - 1
    }

    /// Write the entries into `obj` (sorted as Kubernetes sorts them; none: no field).
    pub fn store(mut self, obj: &mut Value) {
        self.0.retain(|e| !e.fields.is_empty());
        self.0.sort_by(|a, b| {
            (
                a.operation,
                &a.time,
                &a.manager,
                &a.api_version,
                &a.subresource,
            )
                .cmp(&(
                    b.operation,
                    &b.time,
                    &b.manager,
                    &b.api_version,
                    &b.subresource,
                ))
        });
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        if self.0.is_empty() {
            meta.shift_remove("managedFields");
        } else {
            let entries: Vec<Value> = self.0.iter().map(Entry::encode).collect();
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Who writes, and where.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// `apiVersion` of the resource written.
    pub api_version: &'a str,
    /// `status` for status writes.
    pub subresource: Option<&'a str>,
    /// Whether the resource has a status subresource (main writes then own no status).
    pub has_status: bool,
    /// The time to record (RFC 3339).
    pub now: &'a str,
}

/// The part of `obj` managers own through this write: no type or system metadata; only
/// the status for status writes; no status for main writes of kinds with a status
/// subresource.
pub fn tracked(obj: &Value, op: &Op<'_>) -> Value {
    let meta = tracked_meta(obj);
    let out = tracked_fields(obj, op, meta.as_ref())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Value::Object(out)
}

/// `metadata` of `obj` without the system fields, when it is an object that keeps any.
fn tracked_meta(obj: &Value) -> Option<Value> {
    let meta = obj.get("metadata")?.as_object()?;
    let kept: Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| !SYSTEM_META.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then_some(Value::Object(kept))
}

/// The fields of [`tracked`], borrowed from `obj` but for `metadata`, which is `meta`
/// ([`tracked_meta`] of `obj`).
fn tracked_fields<'v>(
    obj: &'v Value,
    op: &Op<'_>,
    meta: Option<&'v Value>,
) -> impl Iterator<Item = (&'v str, &'v Value)> {
    let subresource = op.subresource;
    let has_status = op.has_status;
    obj.as_object()
        .into_iter()
        .flatten()
        .filter_map(move |(k, v)| {
            let keep = match (subresource, k.as_str()) {
                (Some(_), "status") => true,
                (Some(_), _) => false,
                (None, "apiVersion" | "kind") => false,
                (None, "status") => !has_status,
                (None, _) => true,
            };
            if !keep {
                return None;
            }
            if k == "metadata" && v.is_object() {
                return meta.map(|m| (k.as_str(), m));
            }
            Some((k.as_str(), v))
        })
}

/// Record a non-apply write of `new` (over `live`, `None` for a create) by `op.manager`.
pub fn update(live: Option<&Value>, new: &mut Value, node: Node<'_>, op: &Op<'_>) {
    let mut managed = Managed::live_or_new(live, new);
    // The tracked parts are compared in place: only metadata is copied (without its
    // system fields), not the object.
    let changes = {
        let live_meta = live.and_then(tracked_meta);
        let new_meta = tracked_meta(new);
        let before = live
            .map(|l| walk::object_elements(tracked_fields(l, op, live_meta.as_ref()), node))
            .unwrap_or_default();
        let after = walk::object_elements(tracked_fields(new, op, new_meta.as_ref()), node);
        walk::diff_elements(before, after)
    };
    let walk::Changes {
        added,
        modified,
        removed,
    } = changes;
    let mut touched = modified;
    touched.absorb(added);
    let idx = managed.find_or_insert(op, Operation::Update);
    for (i, e) in managed.0.iter_mut().enumerate() {
        if i != idx {
            e.fields = e.fields.difference(&touched).difference(&removed);
        }
    }
    let e = &mut managed.0[idx];
    let mut fields = e.fields.difference(&removed);
    fields.absorb(touched);
    if fields != e.fields || e.time.is_none() {
        e.time = Some(op.now.to_string());
    }
    e.fields = fields;
    managed.store(new);
}

/// A field another manager owns, as a conflict reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The manager, as Kubernetes prints it (`"a"`, `"b" using v1 at <time>`).
    pub manager: String,
    /// The field (`.spec.replicas`).
    pub field: String,
}

/// Server-side apply of configuration `config` by `op.manager` onto `live` (`{}` when the
/// object does not exist yet). Returns the new object, with its managedFields, or the
/// conflicts when not forced.
pub fn apply(
    live: &Value,
    config: &Value,
    node: Node<'_>,
    op: &Op<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut managed = Managed::of(live).unwrap_or_default();
    let applied = walk::applied_set(&tracked(config, op), node);
    let mut merged = walk::merge(live, config, node);
    let idx = managed.find_or_insert(op, Operation::Apply);
    let last = std::mem::replace(&mut managed.0[idx].fields, applied.clone());
    let mut keep = FieldSet::default();
    for e in &managed.0 {
        keep.union_with(&e.fields);
    }
    walk::prune(&mut merged, &last.difference(&applied), &keep, node);
    let changes = walk::diff(Some(&tracked(live, op)), Some(&tracked(&merged, op)), node);
    let mut changed = changes.modified.clone();
    changed.union_with(&changes.added);
    let mut conflicts = Vec::new();
    let mut taken = Vec::new();
    for (i, e) in managed.0.iter().enumerate() {
        if i == idx {
            continue;
        }
        let c = e.fields.intersection(&changed);
        if !c.is_empty() {
            for path in c.paths() {
                conflicts.push(Conflict {
                    manager: e.printed(),
                    field: set::display(&path),
                });
            }
            taken.push((i, c));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (i, c) in taken {
        managed.0[i].fields = managed.0[i].fields.difference(&c);
    }
    for (i, e) in managed.0.iter_mut().enumerate() {
        if i != idx {
            e.fields = e.fields.difference(&changes.removed);
        }
    }
    let e = &mut managed.0[idx];
    if e.fields != last || e.time.is_none() {
        e.time = Some(op.now.to_string());
    }
    e.api_version = op.api_version.to_string();
    managed.store(&mut merged);
    Ok(merged)
}

/// The 409 of an apply that conflicts, as Kubernetes words it.
pub fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.manager), "field": c.field})
        })
        .collect();
    let message = match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager, one.field
        ),
        _ => {
            let mut by_manager: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for c in conflicts {
                by_manager.entry(&c.manager).or_default().push(&c.field);
            }
            let mut lines = Vec::new();
            for (m, fields) in by_manager {
                lines.push(format!("conflicts with {m}:"));
                lines.extend(fields.iter().map(|f| format!("- {f}")));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    ApiError::new(409, "Conflict", message).with_details(json!({ "causes": causes }))
}

/// The manager of a non-apply write without `fieldManager`: the user agent's product
/// (`kubectl` of `kubectl/v1.32.4 (linux/amd64) …`), else `unknown`.
pub fn default_manager(user_agent: &str) -> String {
    let product = user_agent.split('/').next().unwrap_or("").trim();
    if product.is_empty() {
        "unknown".to_string()
    } else {
        product.chars().take(MAX_MANAGER_LEN).collect()
    }
}

/// Check a `fieldManager` value.
pub fn check_manager(name: &str) -> Result<(), ApiError> {
    if name.chars().count() > MAX_MANAGER_LEN {
        return Err(ApiError::bad_request(format!(
            "fieldManager: Too long: may not be longer than {MAX_MANAGER_LEN}"
        )));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request(
            "fieldManager: Invalid value: must only contain printable characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
