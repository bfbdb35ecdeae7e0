//! What every write shares, and create (update and patch are `handler/update.rs`,
//! server-side apply `handler/apply.rs`, deletes `handler/delete.rs`).
//!
//! Every write goes the same way: decode and check the body, compute the new object from
//! the current one inside [`Store::mutate`] (so the resourceVersion check and the write are
//! one step), validate it against the resource's schema and metadata rules, let
//! `admission` apply the kind's own rules, record the field manager's fields in
//! `metadata.managedFields` (`fieldmanager`), then wait until the write is durable and
//! answer. `dryRun=All` runs the same steps and stores nothing.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Ctx, Resp, decode_body, json_resp, value_resp};
use crate::admission;
use crate::api::Api;
use crate::fieldmanager;
use crate::registry::{Origin, Resource};
use crate::request::ResourcePath;
use crate::schema;
use crate::status::{ApiError, ApiResult};
use crate::store::{Event, EventType, Outcome, Stored};
use crate::validation;

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub(super) fn from_ctx(ctx: &Ctx) -> ApiResult<Self> {
        match ctx.query.get("fieldValidation").unwrap_or("") {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict; got {other:?}"
            ))),
        }
    }
}

pub(super) fn dry_run(ctx: &Ctx) -> bool {
    ctx.query.get("dryRun") == Some("All")
}

/// Run a mutation, or (dry run) only compute it.
pub(super) fn run<F>(api: &Api, dry: bool, key: &str, f: F) -> ApiResult<Option<Arc<Event>>>
where
    F: FnOnce(Option<&Stored>, u64) -> ApiResult<Outcome>,
{
    if !dry {
        return api.store.mutate(key, f);
    }
    let cur = api.store.get(key);
    let rv = api.store.current_rv();
    Ok(match f(cur.as_ref(), rv)? {
        Outcome::Unchanged => None,
        Outcome::Put(v) => Some(Arc::new(Event {
            rv,
            kind: EventType::Modified,
            key: key.to_string(),
            obj: crate::store::Stored::detached(v, key, rv),
            prev: cur,
        })),
        Outcome::Delete => cur.map(|c| {
            Arc::new(Event {
                rv,
                kind: EventType::Deleted,
                key: key.to_string(),
                obj: c.clone(),
                prev: Some(c),
            })
        }),
    })
}

/// After a real write: wait for durability and run the kind's follow-ups.
pub(super) async fn commit(
    api: &Arc<Api>,
    dry: bool,
    res: &Resource,
    ev: &Option<Arc<Event>>,
) -> ApiResult<()> {
    if let Some(ev) = ev
        && !dry
    {
        api.store.durable(ev.rv).await?;
        admission::after_write(api, res, ev).await;
    }
    Ok(())
}

/// Check `apiVersion`/`kind` of a body against the resource; fill them when absent.
pub(super) fn check_type_meta(res: &Resource, obj: &mut Value) -> ApiResult<()> {
    let want_av = res.api_version();
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be an object"));
    };
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), Value::String(want_av));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), Value::String(res.kind.clone()));
        }
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )));
        }
    }
    if !map.get("metadata").is_some_and(Value::is_object) {
        if map.get("metadata").is_some_and(|m| !m.is_null()) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        map.insert("metadata".into(), Value::Object(Map::new()));
    }
    Ok(())
}

/// Schema validation of a whole object: type errors are 422; unknown fields are refused
/// (Strict: 400 BadRequest, "strict decoding error", as Kubernetes answers), or dropped
/// with a warning (Warn) or silently (Ignore).
pub fn validate_schema(
    warnings: &mut Vec<String>,
    mode: FieldValidation,
    res: &Resource,
    obj: &mut Value,
) -> ApiResult<()> {
    let Some(schema) = schema_of(res) else {
        return Ok(());
    };
    drop_unknown(warnings, mode, res, obj)?;
    if res.is_custom() {
        schema::apply_defaults(schema, obj);
    }
    let v = schema::validate(schema, obj);
    if !v.errors.is_empty() {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let causes: Vec<Value> = v
            .errors
            .iter()
            .map(|e| json!({"reason": e.reason.as_str(), "message": e.message, "field": e.path}))
            .collect();
        return Err(ApiError::invalid(&res.kind, name, causes, &res.group));
    }
    Ok(())
}

/// The schema of a resource's objects, when it has one.
pub fn schema_of(res: &Resource) -> Option<schema::SchemaRef<'_>> {
    match &res.origin {
        Origin::Builtin { definition } => schema::builtin_schema(definition),
        Origin::Custom(cv) => Some(schema::crd_schema(&cv.schema)),
    }
}

/// Unknown fields: refused (Strict), dropped with a warning (Warn) or silently (Ignore);
/// nulls of non-nullable fields dropped. Values are not checked (apply configurations are
/// partial objects).
pub(super) fn drop_unknown(
    warnings: &mut Vec<String>,
    mode: FieldValidation,
    res: &Resource,
    obj: &mut Value,
) -> ApiResult<()> {
    let Some(schema) = schema_of(res) else {
        return Ok(());
    };
    // Unknown fields and nulls of non-nullable fields are dropped, as the decoder does,
    // before the values are checked; pruning reports the unknown fields as validation
    // would (same paths, same order), so one walk both finds and drops them.
    let unknown = schema::prune(schema, obj);
    if !unknown.is_empty() {
        match mode {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{ver}\" cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", "),
                    kind = res.kind,
                    ver = res.version
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")))
            }
            FieldValidation::Ignore => {}
        }
    }
    Ok(())
}

/// Who manages the fields a write sets.
#[derive(Debug, Clone)]
pub(super) enum Managing {
    /// A non-apply write by this manager: record an `Update` entry.
    Update(String),
    /// Server-side apply: managedFields were computed already.
    Applied,
}

/// The manager of a non-apply write: `fieldManager`, else from the user agent.
pub(super) fn update_manager(ctx: &Ctx) -> ApiResult<Managing> {
    if ctx.query.get("force").is_some() {
        return Err(ApiError::bad_request(
            "force: Invalid value: force is only allowed for apply requests",
        ));
    }
    let name = match ctx.query.non_empty("fieldManager") {
        Some(m) => m.to_string(),
        None => fieldmanager::default_manager(&ctx.user_agent),
    };
    fieldmanager::check_manager(&name)?;
    Ok(Managing::Update(name))
}

/// Record an `Update` by `managing` of `new` over `cur` (nothing for applies).
pub(super) fn record_update(
    res: &Resource,
    sub: Option<&str>,
    cur: Option<&Value>,
    new: &mut Value,
    managing: &Managing,
) {
    let Managing::Update(manager) = managing else {
        return;
    };
    let api_version = res.api_version();
    let now = now();
    let op = fieldmanager::Op {
        manager,
        api_version: &api_version,
        subresource: sub,
        has_status: res.has_status,
        now: &now,
    };
    fieldmanager::update(cur, new, schema_of(res), &op);
}

/// Metadata rules (names, labels, annotations, finalizers).
pub(super) fn validate_meta(res: &Resource, obj: &Value) -> ApiResult<()> {
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let errs = validation::validate_object_meta(
        meta,
        validation::name_rule(&res.group, &res.plural),
        res.namespaced,
    );
    if errs.is_empty() {
        return Ok(());
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let details = validation::to_status_details(&res.kind, name, &errs);
    let causes = details
        .get("causes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Err(ApiError::invalid(&res.kind, name, causes, &res.group))
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable_meta(),
    }
}

#[allow(clippy::panic)]
fn unreachable_meta() -> ! {
    // metadata was made an object just above.
    panic!("metadata is an object")
}

pub(super) fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// Decide the namespace of a body against the URL.
pub(super) fn place_namespace(res: &Resource, rp: &ResourcePath, obj: &mut Value) -> ApiResult<()> {
    let meta = meta_mut(obj);
    if !res.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let Some(url_ns) = rp.namespace.as_deref() else {
        return Err(ApiError::bad_request(
            "a namespaced resource must be created in a namespace",
        ));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("namespace".into(), Value::String(url_ns.to_string()));
            Ok(())
        }
        Some(ns) if ns == url_ns => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

/// POST to a collection.
pub async fn create(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    body: &[u8],
) -> ApiResult<Resp> {
    let mode = FieldValidation::from_ctx(ctx)?;
    let managing = update_manager(ctx)?;
    let obj = decode_body(&ctx.content_type, body)?;
    create_object(ctx, res, rp, obj, mode, managing).await
}

/// Create `obj` (decoded; for apply, already carrying its managedFields).
pub(super) async fn create_object(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    mut obj: Value,
    mode: FieldValidation,
    managing: Managing,
) -> ApiResult<Resp> {
    check_type_meta(res, &mut obj)?;
    place_namespace(res, rp, &mut obj)?;
    if let Some(ns) = rp.namespace.as_deref() {
        admission::check_namespace_open(&ctx.api, ns)?;
    }
    {
        let meta = meta_mut(&mut obj);
        let has_name = meta
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !has_name {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let name = validation::generate_name(prefix);
                    meta.insert("name".into(), Value::String(name));
                }
                _ => {
                    return Err(ApiError::invalid(
                        &res.kind,
                        "",
                        vec![
                            json!({"reason":"FieldValueRequired","message":"Required value: name or generateName is required","field":"metadata.name"}),
                        ],
                        &res.group,
                    ));
                }
            }
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        meta.insert("creationTimestamp".into(), Value::String(now()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
    }
    validate_schema(&mut ctx.warnings, mode, res, &mut obj)?;
    validate_meta(res, &obj)?;
    admission::on_create(&ctx.api, res, &mut obj, &ctx.user)?;
    record_update(res, None, None, &mut obj, &managing);
    let name = str_at(&obj, "/metadata/name").unwrap_or("").to_string();
    let key = res.key(rp.namespace.as_deref(), &name);
    let dry = dry_run(ctx);
    let ev = run(&ctx.api, dry, &key, |cur, _| match cur {
        Some(_) => Err(ApiError::already_exists(&res.group, &res.plural, &name)),
        None => Ok(Outcome::Put(obj)),
    })?;
    commit(&ctx.api, dry, res, &ev).await?;
    // The stored bytes as they are: no clone of the tree, no second serialisation.
    Ok(match ev {
        Some(e) => json_resp(201, e.obj.raw.clone()),
        None => value_resp(201, &Value::Null),
    })
}
