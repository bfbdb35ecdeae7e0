//! Pruning and defaulting: what the server does to an object before storing it.
//!
//! [`prune`] drops unknown fields and non-nullable `null`s (every kind); [`apply_defaults`]
//! fills in the `default`s of a structural schema (custom resources — built-in defaults are
//! Go code, not schema).

use serde_json::Value;

use super::SchemaRef;
use super::validate::MAX_DEPTH;
use super::values::{Path, Seg};

/// Drops the unknown fields of `obj` (returning their paths, as [`validate`](super::validate())
/// reports them) and the `null`s of fields that are not `nullable`, as Kubernetes does
/// before storing. Call it after a successful `validate` whatever the `fieldValidation`
/// mode.
pub fn prune(schema: SchemaRef<'_>, obj: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    prune_node(schema, obj, &mut Path::default(), &mut out, 0);
    out
}

fn prune_node(
    s: SchemaRef<'_>,
    v: &mut Value,
    path: &mut Path,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(map) => {
            let f = s.facts();
            if f.resolved
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "object")
            {
                return;
            }
            let additional = s.additional_in(&f, Some("object"));
            let closed = !f.preserves_unknown() && s.defines_fields_in(&f);
            // One pass in document order: decide, record, recurse; then drop.
            let mut drop = std::collections::HashSet::new();
            for (key, child) in map.iter_mut() {
                let schema = s
                    .property_in(&f, key, Some("object"))
                    .or(additional.flatten());
                path.with(Seg::Field(key.clone()), |p| match schema {
                    Some(cs) if child.is_null() && !cs.nullable() => {
                        drop.insert(key.clone());
                    }
                    Some(cs) => prune_node(cs, child, p, out, depth + 1),
                    None if additional.is_some() || !closed => {}
                    None => {
                        out.push(p.to_string());
                        drop.insert(key.clone());
                    }
                });
            }
            if !drop.is_empty() {
                map.retain(|key, _| !drop.contains(key));
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.items_for(Some("array")) {
                for (i, item) in items.iter_mut().enumerate() {
                    path.with(Seg::Index(i), |p| {
                        prune_node(item_schema, item, p, out, depth + 1)
                    });
                }
            }
        }
        _ => {}
    }
}

/// Sets every absent field that has a `default` in the schema, recursively, as Kubernetes
/// does for custom resources on create, update and read. Call it after [`prune`] (a pruned
/// `null` then gets its default too).
pub fn apply_defaults(schema: SchemaRef<'_>, obj: &mut Value) {
    default_node(schema, obj, 0);
}

fn default_node(s: SchemaRef<'_>, v: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = s.get("properties") {
                for (name, prop) in props {
                    let default = s.child(prop).get("default");
                    if let (false, Some(default)) = (map.contains_key(name), default) {
                        map.insert(name.clone(), default.clone());
                    }
                }
            }
            let additional = s.additional_for(Some("object")).flatten();
            for (key, child) in map.iter_mut() {
                if let Some(cs) = s.property_for(key, Some("object")).or(additional) {
                    default_node(cs, child, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.items_for(Some("array")) {
                for item in items.iter_mut() {
                    default_node(item_schema, item, depth + 1);
                }
            }
        }
        _ => {}
    }
}
