//! Field validation and pruning of an object against its schema.
//!
//! Follows Kubernetes' structural-schema rules (`apiextensions-apiserver` validation and
//! pruning, kube-openapi's validator): a key that is not in `properties` of an object node
//! without `additionalProperties` or `x-kubernetes-preserve-unknown-fields` is an *unknown
//! field* — an error under `fieldValidation=Strict`, a warning (and dropped by [`prune`](super::prune()))
//! under `Warn`, silently dropped under `Ignore`. Value errors come out as Kubernetes
//! prints them: `spec.replicas: Invalid value: "string": spec.replicas in body must be of
//! type integer: "string"`.
//!
//! `null` on a field that is not `nullable` counts as absent (Kubernetes drops it), so
//! `creationTimestamp: null` is fine and [`prune`](super::prune()) removes it.

use std::fmt;

use serde_json::Value;

use super::values::{
    Path, Seg, has_duplicates, is_base64, is_date_time, is_integer, json_eq, json_type,
    pattern_matches, show, show_num, type_matches,
};
use super::{NodeFacts, Origin, SchemaRef};

/// Deepest nesting [`validate`] and `prune` descend into (serde_json refuses deeper input
/// anyway); below it values are accepted unchecked.
pub(super) const MAX_DEPTH: usize = 256;

/// Kubernetes' `StatusCause` reasons for field errors (`metav1.CauseType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CauseType {
    /// `FieldValueInvalid`: a value constraint failed.
    Invalid,
    /// `FieldValueRequired`: a required field is missing.
    Required,
    /// `FieldValueNotSupported`: a value not in `enum`.
    NotSupported,
    /// `FieldValueTypeInvalid`: the JSON type is wrong.
    TypeInvalid,
    /// `FieldValueDuplicate`: a repeated item of a `set` / key of a `map` list.
    Duplicate,
    /// `FieldValueTooLong`: a string over `maxLength`.
    TooLong,
    /// `FieldValueTooMany`: a list or map over `maxItems` / `maxProperties`.
    TooMany,
    /// `FieldValueForbidden`: a field that may not be set.
    Forbidden,
}

impl CauseType {
    /// The `reason` of a `StatusCause`.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseType::Invalid => "FieldValueInvalid",
            CauseType::Required => "FieldValueRequired",
            CauseType::NotSupported => "FieldValueNotSupported",
            CauseType::TypeInvalid => "FieldValueTypeInvalid",
            CauseType::Duplicate => "FieldValueDuplicate",
            CauseType::TooLong => "FieldValueTooLong",
            CauseType::TooMany => "FieldValueTooMany",
            CauseType::Forbidden => "FieldValueForbidden",
        }
    }
}

/// One field error, shaped like a Kubernetes `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, e.g. `spec.containers[0].image` (the cause's `field`).
    pub path: String,
    /// Cause type (the cause's `reason`).
    pub reason: CauseType,
    /// Error body (the cause's `message`), e.g. `Required value` or
    /// `Invalid value: "string": spec.replicas in body must be of type integer: "string"`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// What [`validate`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    /// Value errors (types, required, enums, bounds, …): the object is invalid (422).
    pub errors: Vec<FieldError>,
    /// Dotted paths of unknown fields (`spec.containers[0].imagee`), in document order.
    pub unknown_fields: Vec<String>,
}

impl Validation {
    /// No value errors (unknown fields are judged by the caller's `fieldValidation`).
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors as Kubernetes aggregates them after `<Kind> "<name>" is invalid: `: the
    /// error itself when there is one, `[e1, e2]` when there are more.
    pub fn error_summary(&self) -> String {
        let all: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        match all.as_slice() {
            [one] => one.clone(),
            _ => format!("[{}]", all.join(", ")),
        }
    }

    /// [`unknown_field_message`] of every unknown field (warning texts / strict errors).
    pub fn unknown_field_messages(&self) -> Vec<String> {
        self.unknown_fields
            .iter()
            .map(|p| unknown_field_message(p))
            .collect()
    }
}

/// Kubernetes' text for an unknown field: `unknown field "spec.foo"`.
pub fn unknown_field_message(path: &str) -> String {
    format!("unknown field \"{path}\"")
}

/// Validates `obj` against `schema` (a root from `builtin_schema` / `crd_schema`).
pub fn validate(schema: SchemaRef<'_>, obj: &Value) -> Validation {
    let mut walker = Walker {
        errors: Vec::new(),
        unknown: Vec::new(),
        report_unknown: true,
    };
    walker.check(schema, obj, &mut Path::default(), 0);
    let mut seen = std::collections::HashSet::new();
    walker
        .errors
        .retain(|e| seen.insert((e.path.clone(), e.message.clone())));
    Validation {
        errors: walker.errors,
        unknown_fields: walker.unknown,
    }
}

struct Walker {
    errors: Vec<FieldError>,
    unknown: Vec<String>,
    report_unknown: bool,
}

impl Walker {
    fn push(&mut self, path: &Path, reason: CauseType, message: String) {
        self.errors.push(FieldError {
            path: path.to_string(),
            reason,
            message,
        });
    }

    /// `Invalid value: <v>: <path> in body <detail>`.
    fn invalid(&mut self, path: &Path, v: &Value, detail: &str) {
        let name = path.to_string();
        let name = if name.is_empty() {
            "body".to_owned()
        } else {
            format!("{name} in body")
        };
        self.push(
            path,
            CauseType::Invalid,
            format!("Invalid value: {}: {name} {detail}", show(v)),
        );
    }

    fn type_invalid(&mut self, path: &Path, expected: &str, v: &Value) {
        let name = path.to_string();
        let actual = json_type(v);
        let name = if name.is_empty() {
            "body".to_owned()
        } else {
            format!("{name} in body")
        };
        self.push(
            path,
            CauseType::TypeInvalid,
            format!("Invalid value: \"{actual}\": {name} must be of type {expected}: \"{actual}\""),
        );
    }

    /// Errors of `v` against a junctor branch, unknown fields not considered.
    fn branch_errors(s: SchemaRef<'_>, v: &Value, path: &Path, depth: usize) -> Vec<FieldError> {
        let mut w = Walker {
            errors: Vec::new(),
            unknown: Vec::new(),
            report_unknown: false,
        };
        w.check(s, v, &mut path.clone(), depth + 1);
        w.errors
    }

    fn check(&mut self, s: SchemaRef<'_>, v: &Value, path: &mut Path, depth: usize) {
        if depth > MAX_DEPTH || v.is_null() {
            return;
        }
        let f = s.facts();
        let r = s.resolved_in(&f);
        let Some(n) = r.node().as_object() else {
            return;
        };
        if r.flag("x-kubernetes-int-or-string") {
            if !(is_integer(v) || v.is_string()) {
                self.type_invalid(path, "integer,string", v);
                return;
            }
        } else if let Some(ty) = n.get("type").and_then(Value::as_str)
            && !type_matches(ty, v)
        {
            self.type_invalid(path, ty, v);
            return;
        }
        self.check_format(n.get("format").and_then(Value::as_str), v, path);
        if let Some(allowed) = n.get("enum").and_then(Value::as_array)
            && !allowed.iter().any(|a| json_eq(a, v))
        {
            let list: Vec<String> = allowed.iter().map(show).collect();
            let message = format!(
                "Unsupported value: {}: supported values: {}",
                show(v),
                list.join(", ")
            );
            self.push(path, CauseType::NotSupported, message);
        }
        match v {
            Value::Number(num) => self.check_number(n, v, num.as_f64().unwrap_or(0.0), path),
            Value::String(text) => self.check_string(n, v, text, path),
            Value::Array(items) => self.check_array(s, &f, items, path, depth),
            Value::Object(_) => self.check_object(s, &f, v, path, depth),
            _ => {}
        }
        self.check_junctors(n, r, v, path, depth);
    }

    fn check_format(&mut self, format: Option<&str>, v: &Value, path: &Path) {
        let ok = match (format, v) {
            (Some("int32"), Value::Number(n)) => n
                .as_f64()
                .is_some_and(|f| f >= f64::from(i32::MIN) && f <= f64::from(i32::MAX)),
            (Some("int64"), Value::Number(n)) => {
                n.is_i64() || n.as_f64().is_some_and(|f| f.abs() < 9.3e18)
            }
            (Some("byte"), Value::String(s)) => is_base64(s),
            (Some("date-time"), Value::String(s)) => is_date_time(s),
            _ => true,
        };
        if !ok {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let format = format.unwrap_or_default();
            let detail = format!("must be of type {format}: {}", show(&Value::String(text)));
            self.invalid(path, v, &detail);
        }
    }

    fn check_number(&mut self, n: &serde_json::Map<String, Value>, v: &Value, x: f64, path: &Path) {
        let num = |k: &str| n.get(k).and_then(Value::as_f64);
        let excl = |k: &str| n.get(k).and_then(Value::as_bool).unwrap_or(false);
        if let Some(min) = num("minimum") {
            if excl("exclusiveMinimum") && x <= min {
                self.invalid(
                    path,
                    v,
                    &format!("should be greater than {}", show_num(min)),
                );
            } else if x < min {
                self.invalid(
                    path,
                    v,
                    &format!("should be greater than or equal to {}", show_num(min)),
                );
            }
        }
        if let Some(max) = num("maximum") {
            if excl("exclusiveMaximum") && x >= max {
                self.invalid(path, v, &format!("should be less than {}", show_num(max)));
            } else if x > max {
                self.invalid(
                    path,
                    v,
                    &format!("should be less than or equal to {}", show_num(max)),
                );
            }
        }
        if let Some(m) = num("multipleOf").filter(|m| *m > 0.0) {
            let q = x / m;
            if (q - q.round()).abs() > 1e-9 {
                self.invalid(path, v, &format!("should be a multiple of {}", show_num(m)));
            }
        }
    }

    fn check_string(
        &mut self,
        n: &serde_json::Map<String, Value>,
        v: &Value,
        s: &str,
        path: &Path,
    ) {
        let len = s.chars().count() as u64;
        if let Some(max) = n.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            let unit = if max == 1 { "byte" } else { "bytes" };
            self.push(
                path,
                CauseType::TooLong,
                format!("Too long: may not be more than {max} {unit}"),
            );
        }
        if let Some(min) = n.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            self.invalid(path, v, &format!("should be at least {min} chars long"));
        }
        if let Some(pattern) = n.get("pattern").and_then(Value::as_str)
            && !pattern_matches(pattern, s)
        {
            self.invalid(path, v, &format!("should match '{pattern}'"));
        }
    }

    fn check_array<'a>(
        &mut self,
        s: SchemaRef<'a>,
        f: &NodeFacts<'a>,
        items: &[Value],
        path: &mut Path,
        depth: usize,
    ) {
        let r = s.resolved_in(f);
        let n = |k: &str| r.get(k).and_then(Value::as_u64);
        let len = items.len() as u64;
        if let Some(max) = n("maxItems")
            && len > max
        {
            self.push(
                path,
                CauseType::TooMany,
                format!("Too many: {len}: must have at most {max} items"),
            );
        }
        if let Some(min) = n("minItems")
            && len < min
        {
            self.invalid(
                path,
                &Value::from(len),
                &format!("should have at least {min} items"),
            );
        }
        if r.flag("uniqueItems") && has_duplicates(items, json_eq) {
            self.invalid(
                path,
                &Value::Array(items.to_vec()),
                "shouldn't contain duplicates",
            );
        }
        if s.origin() == Origin::Crd {
            self.check_list_type(r, items, path);
        }
        if let Some(item_schema) = s.items_in(f, Some("array")) {
            for (i, item) in items.iter().enumerate() {
                path.with(Seg::Index(i), |p| {
                    self.check(item_schema, item, p, depth + 1)
                });
            }
        }
    }

    /// `x-kubernetes-list-type: set|map` uniqueness (custom resources only).
    fn check_list_type(&mut self, s: SchemaRef<'_>, items: &[Value], path: &mut Path) {
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].iter().any(|prev| json_eq(prev, item)) {
                        let message = format!("Duplicate value: {}", show(item));
                        path.with(Seg::Index(i), |p| {
                            self.push(p, CauseType::Duplicate, message)
                        });
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if keys.is_empty() {
                    return;
                }
                let key_of = |item: &Value| -> serde_json::Map<String, Value> {
                    keys.iter()
                        .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                        .collect()
                };
                for (i, item) in items.iter().enumerate() {
                    let key = key_of(item);
                    if key.is_empty() {
                        continue;
                    }
                    if items[..i].iter().any(|prev| {
                        json_eq(&Value::Object(key_of(prev)), &Value::Object(key.clone()))
                    }) {
                        let message = format!("Duplicate value: {}", show(&Value::Object(key)));
                        path.with(Seg::Index(i), |p| {
                            self.push(p, CauseType::Duplicate, message)
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn check_object<'a>(
        &mut self,
        s: SchemaRef<'a>,
        f: &NodeFacts<'a>,
        v: &Value,
        path: &mut Path,
        depth: usize,
    ) {
        let Value::Object(map) = v else { return };
        let r = s.resolved_in(f);
        let count = map.len() as u64;
        if let Some(max) = r.get("maxProperties").and_then(Value::as_u64)
            && count > max
        {
            self.push(
                path,
                CauseType::TooMany,
                format!("Too many: {count}: must have at most {max} items"),
            );
        }
        if let Some(min) = r.get("minProperties").and_then(Value::as_u64)
            && count < min
        {
            self.invalid(path, v, &format!("should have at least {min} properties"));
        }
        let present = |name: &str| map.get(name).is_some_and(|v| !v.is_null());
        if let Some(required) = r.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !present(name) {
                    path.with(Seg::Field(name.to_owned()), |p| {
                        self.push(p, CauseType::Required, "Required value".into())
                    });
                }
            }
        }
        if r.flag("x-kubernetes-embedded-resource") && s.origin() == Origin::Crd {
            for name in ["apiVersion", "kind"] {
                if !present(name) {
                    let message = "Required value: must not be empty".to_owned();
                    path.with(Seg::Field(name.to_owned()), |p| {
                        self.push(p, CauseType::Required, message)
                    });
                }
            }
        }
        let additional = s.additional_in(f, Some("object"));
        let closed = !f.preserves_unknown() && s.defines_fields_in(f);
        for (key, child) in map {
            path.with(Seg::Field(key.clone()), |p| {
                match s.property_in(f, key, Some("object")) {
                    Some(ps) => self.check(ps, child, p, depth + 1),
                    None => match additional {
                        Some(Some(schema)) => self.check(schema, child, p, depth + 1),
                        Some(None) => {}
                        None if closed && self.report_unknown => self.unknown.push(p.to_string()),
                        None => {}
                    },
                }
            });
        }
    }

    fn check_junctors(
        &mut self,
        n: &serde_json::Map<String, Value>,
        r: SchemaRef<'_>,
        v: &Value,
        path: &Path,
        depth: usize,
    ) {
        let branches = |k: &str| -> Vec<SchemaRef<'_>> {
            n.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|b| child_of(r, b)).collect())
                .unwrap_or_default()
        };
        for b in branches("allOf") {
            let errors = Self::branch_errors(b, v, path, depth);
            self.errors.extend(errors);
        }
        let any = branches("anyOf");
        if !any.is_empty()
            && !any
                .iter()
                .any(|b| Self::branch_errors(*b, v, path, depth).is_empty())
        {
            self.invalid(path, v, "must validate at least one schema (anyOf)");
        }
        let one = branches("oneOf");
        if !one.is_empty() {
            let passing = one
                .iter()
                .filter(|b| Self::branch_errors(**b, v, path, depth).is_empty())
                .count();
            if passing != 1 {
                self.invalid(path, v, "must validate one and only one schema (oneOf)");
            }
        }
        if let Some(not) = n.get("not")
            && Self::branch_errors(child_of(r, not), v, path, depth).is_empty()
        {
            self.invalid(path, v, "must not validate the schema (not)");
        }
    }
}

/// A branch of `r` (same definitions, not a root).
fn child_of<'a>(r: SchemaRef<'a>, node: &'a Value) -> SchemaRef<'a> {
    r.child(node)
}
