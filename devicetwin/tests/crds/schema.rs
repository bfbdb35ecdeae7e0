//! A small checker for CRD schemas: the structural rules Kubernetes enforces that matter
//! here, an instance validator, and a "their schema is accepted by ours" comparison.

use serde_json::Value;

/// Whether a schema node keeps unknown fields.
pub fn preserves(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == true
}

/// Structural-schema rules (the subset Kubernetes enforces that matters here): every node has
/// a `type` (unless it only preserves unknown fields), `properties` and
/// `additionalProperties` are exclusive, arrays have `items`, and the root `metadata` is a
/// bare object.
pub fn structural_errors(schema: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        errors.push(format!("{path}: schema is not an object"));
        return;
    };
    let ty = obj.get("type").and_then(Value::as_str);
    if ty.is_none()
        && !preserves(schema)
        && obj.get("x-kubernetes-int-or-string") != Some(&Value::Bool(true))
    {
        errors.push(format!("{path}: missing type"));
    }
    if let Some(t) = ty
        && !["object", "array", "string", "integer", "number", "boolean"].contains(&t)
    {
        errors.push(format!("{path}: unknown type {t}"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        errors.push(format!("{path}: both properties and additionalProperties"));
    }
    if preserves(schema) && ty != Some("object") {
        errors.push(format!("{path}: preserve-unknown-fields on a non-object"));
    }
    if ty == Some("array") && !obj.contains_key("items") {
        errors.push(format!("{path}: array without items"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_errors(v, &format!("{path}.{k}"), errors);
        }
    }
    if let Some(ap) = obj.get("additionalProperties")
        && ap.is_object()
    {
        structural_errors(ap, &format!("{path}[*]"), errors);
    }
    if let Some(items) = obj.get("items") {
        structural_errors(items, &format!("{path}[]"), errors);
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

/// Validates `v` against `schema`: `nullable`, types, enums, required, items, additionalProperties, and
/// unknown fields (refused unless the node preserves them). The root `metadata` is opaque, as
/// in Kubernetes.
fn validate(v: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    if v.is_null() && schema["nullable"] == true {
        return;
    }
    if let Some(ty) = schema["type"].as_str()
        && !type_ok(ty, v)
    {
        errors.push(format!("{path}: expected {ty}, got {v}"));
        return;
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(v)
    {
        errors.push(format!("{path}: {v} not in enum"));
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if let Some(r) = r.as_str()
                && !obj.contains_key(r)
            {
                errors.push(format!("{path}: missing required {r}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, child) in obj {
            let child_path = format!("{path}.{k}");
            if path == "$" && k == "metadata" {
                continue;
            }
            if let Some(s) = props.and_then(|p| p.get(k)) {
                validate(child, s, &child_path, errors);
            } else if let Some(ap) = schema.get("additionalProperties") {
                if ap.is_object() {
                    validate(child, ap, &child_path, errors);
                }
            } else if !preserves(schema) {
                errors.push(format!("{child_path}: unknown field"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            validate(item, items, &format!("{path}[{i}]"), errors);
        }
    }
}

pub fn errors_for(v: &Value, schema: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate(v, schema, "$", &mut errors);
    errors
}

/// Every path in `theirs` must be accepted by `ours`: present with a compatible type (or
/// under a node of ours that preserves unknown fields), with our enum a superset of theirs
/// and our required list a subset of theirs.
pub fn subsumption_errors(theirs: &Value, ours: &Value, path: &str, errors: &mut Vec<String>) {
    if preserves(ours) && ours.get("properties").is_none() {
        return;
    }
    let (tt, ot) = (theirs["type"].as_str(), ours["type"].as_str());
    if tt != ot && !(tt == Some("integer") && ot == Some("number")) {
        errors.push(format!("{path}: type {tt:?} vs ours {ot:?}"));
        return;
    }
    if preserves(theirs) && !preserves(ours) {
        errors.push(format!(
            "{path}: theirs preserves unknown fields, ours does not"
        ));
    }
    if let (Some(te), Some(oe)) = (theirs["enum"].as_array(), ours["enum"].as_array()) {
        for e in te {
            if !oe.contains(e) {
                errors.push(format!("{path}: enum value {e} missing"));
            }
        }
    } else if ours["enum"].is_array() {
        errors.push(format!(
            "{path}: ours restricts values with an enum, theirs does not"
        ));
    }
    let their_required = theirs["required"].as_array().cloned().unwrap_or_default();
    for r in ours["required"].as_array().into_iter().flatten() {
        if !their_required.contains(r) {
            errors.push(format!("{path}: ours requires {r}, theirs does not"));
        }
    }
    if let Some(tp) = theirs["properties"].as_object() {
        for (k, ts) in tp {
            match ours["properties"].get(k) {
                Some(os) => subsumption_errors(ts, os, &format!("{path}.{k}"), errors),
                None if preserves(ours) => {}
                None => errors.push(format!("{path}.{k}: field missing from ours")),
            }
        }
    }
    match (
        theirs.get("additionalProperties"),
        ours.get("additionalProperties"),
    ) {
        (Some(ta), Some(oa)) => subsumption_errors(ta, oa, &format!("{path}[*]"), errors),
        (Some(_), None) => errors.push(format!("{path}: theirs allows any keys, ours does not")),
        _ => {}
    }
    if let (Some(ti), Some(oi)) = (theirs.get("items"), ours.get("items")) {
        subsumption_errors(ti, oi, &format!("{path}[]"), errors);
    }
}

/// JSON paths of every node that preserves unknown fields.
pub fn preserve_paths(schema: &Value, path: &str, out: &mut Vec<String>) {
    if preserves(schema) {
        out.push(path.to_owned());
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            preserve_paths(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        preserve_paths(items, &format!("{path}[]"), out);
    }
}
