//! Strategic merge patch, as apimachinery's `strategicpatch` applies it on the server
//! (`StrategicMergeMapPatch`: parallel lists merged, unmatched nulls ignored).
//!
//! Start at [`merge_map`]; it walks the patch and the object with the [`PatchMeta`] of the
//! node beside them. Maps merge key by key and `null` deletes; a list whose field has strategy
//! `merge` merges by its merge key ([`merge_slice`]) or, for primitives, as a union; other lists
//! are replaced. Directives: `$patch` (`replace`, `delete`, `merge`) on maps and list elements,
//! `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`; list order
//! is the business of the `order` module. The deliberate differences from apimachinery are
//! listed in the parent module's doc.

use super::PatchError;
use super::order::{normalize_order, partition, set_element_order};
use crate::patch_meta::PatchMeta;
use serde_json::{Map, Value};

pub(super) const SET_ORDER: &str = "$setElementOrder";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList";
const RETAIN_KEYS: &str = "$retainKeys";
pub(super) const DIRECTIVE: &str = "$patch";

/// How the field holding a value is patched, from its schema node.
pub(super) struct Strategy {
    pub(super) merge: bool,
    pub(super) replace: bool,
    pub(super) merge_key: Option<String>,
}

pub(super) fn strategy<M: PatchMeta>(meta: Option<&M>) -> Strategy {
    let Some(meta) = meta else {
        return Strategy {
            merge: false,
            replace: false,
            merge_key: None,
        };
    };
    let strategies = meta.strategies();
    let main = strategies
        .iter()
        .map(|s| s.trim())
        .find(|s| *s != "retainKeys");
    Strategy {
        merge: main == Some("merge"),
        replace: main == Some("replace"),
        merge_key: meta.merge_key(),
    }
}

/// The schema of key `key` of an object node: a struct's field, else a map's values.
fn child<M: PatchMeta>(meta: Option<&M>, key: &str) -> Option<M> {
    meta.and_then(|m| m.field(key).or_else(|| m.items()))
}

pub(super) fn compact(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(super) fn no_merge_key(elem: &Value, key: &str) -> PatchError {
    let elem = compact(elem);
    PatchError::InvalidStrategicPatch(format!(
        "map: {elem} does not contain declared merge key: {key}"
    ))
}

/// `$setElementOrder/containers` -> `containers`, as apimachinery's `extractKey`.
pub(super) fn directive_target<'k>(key: &'k str, prefix: &str) -> Result<&'k str, PatchError> {
    match key.split_once('/') {
        Some((p, rest)) if p == prefix => Ok(rest),
        _ if prefix == SET_ORDER => Err(bad_format("setElementOrder list")),
        _ => Err(bad_format("primitive list")),
    }
}

pub(super) fn bad_format(what: &str) -> PatchError {
    PatchError::BadDirective(format!("invalid patch format of {what}"))
}

/// Merges patch map `patch` into `original` (`mergeMap`). `None` means `$patch: delete`.
pub(super) fn merge_map<M: PatchMeta>(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    meta: Option<&M>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        match directive.as_str() {
            Some("delete") => return Ok(None),
            Some("replace") => original = Map::new(),
            Some("merge") => {}
            _ => {
                let (d, p) = (compact(&directive), compact(&patch));
                let msg = format!("unknown patch type: {d} in map: {p}");
                return Err(PatchError::InvalidStrategicPatch(msg));
            }
        }
    }
    if let Some(retain) = patch.shift_remove(RETAIN_KEYS) {
        let Value::Array(retain) = retain else {
            return Err(bad_format("retainKeys"));
        };
        let keep = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
        let outside = patch.iter().any(|(k, v)| {
            !v.is_null()
                && !k.starts_with(SET_ORDER)
                && !k.starts_with(DELETE_PRIMITIVE)
                && !keep(k)
        });
        if outside {
            let msg = "patch content doesn't match retainKeys list".to_owned();
            return Err(PatchError::InvalidStrategicPatch(msg));
        }
        original.retain(|k, _| keep(k));
    }
    let order_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for order_key in order_keys {
        let order = patch.shift_remove(&order_key).unwrap_or_default();
        let field = directive_target(&order_key, SET_ORDER)?;
        set_element_order(
            &mut original,
            &mut patch,
            field,
            order,
            child(meta, field).as_ref(),
        )?;
    }
    for (key, value) in patch {
        let (key, delete_list) = if key.starts_with(DELETE_PRIMITIVE) {
            (directive_target(&key, DELETE_PRIMITIVE)?.to_owned(), true)
        } else {
            (key, false)
        };
        if value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let sub = child(meta, &key);
        let Some(slot) = original.get_mut(&key) else {
            if !delete_list && let Some(v) = fresh(value, sub.as_ref())? {
                original.insert(key, v);
            }
            continue;
        };
        match merge_value(std::mem::take(slot), value, sub.as_ref(), delete_list)? {
            Some(v) => *slot = v,
            None => {
                original.shift_remove(&key);
            }
        }
    }
    Ok(Some(original))
}

/// Merges a patch value into the present value of the same key. `None` removes the key.
fn merge_value<M: PatchMeta>(
    current: Value,
    patch: Value,
    meta: Option<&M>,
    delete_list: bool,
) -> Result<Option<Value>, PatchError> {
    match (current, patch) {
        (Value::Object(o), Value::Object(p)) if !strategy(meta).replace => {
            Ok(merge_map(o, p, meta)?.map(Value::Object))
        }
        (Value::Array(o), Value::Array(p)) => {
            Ok(Some(Value::Array(merge_list(o, p, meta, delete_list)?)))
        }
        (current, _) if delete_list => Ok(Some(current)),
        (_, patch) => fresh(patch, meta),
    }
}

/// A patch value for a place the original does not have (or replaces): merged into nothing,
/// so nulls and directives are dropped. `None` when the value is itself `$patch: delete`.
fn fresh<M: PatchMeta>(value: Value, meta: Option<&M>) -> Result<Option<Value>, PatchError> {
    match value {
        Value::Object(m) => Ok(merge_map(Map::new(), m, meta)?.map(Value::Object)),
        Value::Array(items) => {
            let items_meta = meta.and_then(|m| m.items());
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                // As apimachinery's removeDirectives: list elements carrying `$patch` are dropped.
                if item.get(DIRECTIVE).is_some() {
                    continue;
                }
                out.extend(fresh(item, items_meta.as_ref())?);
            }
            Ok(Some(Value::Array(out)))
        }
        other => Ok(Some(other)),
    }
}

/// Merges two lists by the strategy of the list's schema node (`mergeSliceHandler`).
pub(super) fn merge_list<M: PatchMeta>(
    original: Vec<Value>,
    patch: Vec<Value>,
    meta: Option<&M>,
    delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if delete_list {
        return Ok(original
            .into_iter()
            .filter(|v| !patch.contains(v))
            .collect());
    }
    let st = strategy(meta);
    if !st.merge {
        return match fresh(Value::Array(patch), meta)? {
            Some(Value::Array(items)) => Ok(items),
            _ => Ok(Vec::new()),
        };
    }
    let items_meta = meta.and_then(|m| m.items());
    merge_slice(
        original,
        patch,
        items_meta.as_ref(),
        st.merge_key.as_deref(),
    )
}

/// The JSON kind all elements of both lists share (`sliceElementType`).
fn element_kind(lists: [&[Value]; 2]) -> Result<Option<u8>, PatchError> {
    let kind = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    };
    let mut seen = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        match (seen, kind(v)) {
            (_, 4) => {
                return Err(PatchError::InvalidStrategicPatch(
                    "lists of lists are not supported".into(),
                ));
            }
            (None, k) => seen = Some(k),
            (Some(s), k) if s != k => {
                let msg = format!("list element types are not identical: {}", compact(&lists));
                return Err(PatchError::InvalidStrategicPatch(msg));
            }
            _ => {}
        }
    }
    Ok(seen)
}

/// Merges a list with merge strategy (`mergeSlice`): primitives are a union, maps merge
/// element-wise by merge key; then the order is normalized.
fn merge_slice<M: PatchMeta>(
    original: Vec<Value>,
    patch: Vec<Value>,
    items_meta: Option<&M>,
    merge_key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    let Some(kind) = element_kind([&original, &patch])? else {
        return Ok(original);
    };
    if kind != 5 {
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(&patch) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (in_patch, server_only) = partition(merged, &patch, None)?;
        return Ok(normalize_order(
            in_patch,
            server_only,
            &patch,
            &original,
            None,
        ));
    }
    let Some(key) = merge_key else {
        let msg = "cannot merge lists without merge key".to_owned();
        return Err(PatchError::InvalidStrategicPatch(msg));
    };
    // Special elements first (`mergeSliceWithSpecialElements`).
    let (mut original, mut plain, mut replace) = (original, Vec::with_capacity(patch.len()), false);
    for elem in patch {
        match elem.get(DIRECTIVE).map(|d| d.as_str()) {
            None => plain.push(elem),
            Some(Some("delete")) => {
                let value = elem.get(key).ok_or_else(|| no_merge_key(&elem, key))?;
                original.retain(|o| o.get(key) != Some(value));
            }
            Some(Some("replace")) => replace = true,
            Some(Some("merge")) => {}
            Some(_) => {
                let msg = format!(
                    "unknown patch type: {} in map: {}",
                    compact(&elem[DIRECTIVE]),
                    compact(&elem)
                );
                return Err(PatchError::InvalidStrategicPatch(msg));
            }
        }
    }
    if replace {
        let mut out = Vec::with_capacity(plain.len());
        for item in plain {
            out.extend(fresh(item, items_meta)?);
        }
        return Ok(out);
    }
    // Element-wise merge by key (`mergeSliceWithoutSpecialElements`).
    let server_order = original.clone();
    let mut merged = original;
    for elem in &plain {
        let value = elem.get(key).ok_or_else(|| no_merge_key(elem, key))?;
        let Value::Object(p) = elem.clone() else {
            continue;
        };
        match merged.iter().position(|o| o.get(key) == Some(value)) {
            Some(i) => match std::mem::take(&mut merged[i]) {
                Value::Object(o) => match merge_map(o, p, items_meta)? {
                    Some(m) => merged[i] = Value::Object(m),
                    None => {
                        merged.remove(i);
                    }
                },
                other => merged[i] = other,
            },
            None => merged.extend(fresh(Value::Object(p), items_meta)?),
        }
    }
    let (in_patch, server_only) = partition(merged, &plain, Some(key))?;
    Ok(normalize_order(
        in_patch,
        server_only,
        &plain,
        &server_order,
        Some(key),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::patch::{PatchError, PatchType, apply_patch};
    use crate::patch_meta::{NoMeta, PatchMeta};
    use serde_json::{Value, json};

    /// A schema node described in JSON: `{"fields": {name: node}, "items": node, "key": "name",
    /// "strategy": "merge,retainKeys"}`.
    #[derive(Debug, Clone)]
    struct Schema(Value);

    impl PatchMeta for Schema {
        fn field(&self, name: &str) -> Option<Self> {
            self.0.get("fields")?.get(name).cloned().map(Schema)
        }
        fn items(&self) -> Option<Self> {
            self.0.get("items").cloned().map(Schema)
        }
        fn merge_key(&self) -> Option<String> {
            self.0.get("key")?.as_str().map(str::to_owned)
        }
        fn strategies(&self) -> Vec<String> {
            let s = self
                .0
                .get("strategy")
                .and_then(Value::as_str)
                .unwrap_or_default();
            s.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }
    }

    fn schema() -> Schema {
        let merge_by = |key: &str| json!({"key": key, "strategy": "merge"});
        let container =
            json!({"fields": {"env": merge_by("name"), "ports": merge_by("containerPort")}});
        let volume = json!({"key": "name", "strategy": "merge,retainKeys"});
        Schema(json!({"fields": {
            "metadata": {"fields": {"finalizers": {"strategy": "merge"}}},
            "spec": {"fields": {
                "containers": {"key": "name", "strategy": "merge", "items": container},
                "volumes": volume,
                "strategy": {"strategy": "retainKeys"},
                "selector": {"strategy": "replace"},
            }},
        }}))
    }

    fn smp(original: &Value, patch: Value) -> Result<Value, PatchError> {
        apply_patch(
            PatchType::StrategicMerge,
            original,
            patch.to_string().as_bytes(),
            &schema(),
        )
    }

    fn names(v: &Value, list: &str) -> Vec<String> {
        let items = v
            .pointer(list)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        items
            .iter()
            .map(|c| {
                c.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect()
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["f1", "f2"]},
               "spec": {"containers": [
                   {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "A", "value": "0"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]},
                   {"name": "b", "image": "b:1"},
                   {"name": "c", "image": "c:1"}]}})
    }

    #[test]
    fn container_image_by_name_keeps_the_others() {
        let out = smp(
            &pod(),
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
        )
        .unwrap();
        assert_eq!(names(&out, "/spec/containers"), ["a", "b", "c"]);
        assert_eq!(
            out["spec"]["containers"][1],
            json!({"name": "b", "image": "b:2"})
        );
        assert_eq!(out["spec"]["containers"][0], pod()["spec"]["containers"][0]);
    }

    #[test]
    fn env_and_ports_merge_by_key_in_apimachinery_order() {
        let patch = json!({"spec": {"containers": [{"name": "a",
            "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "9"}],
            "ports": [{"containerPort": 80, "name": "http"}]}]}});
        let out = smp(&pod(), patch).unwrap();
        let c = &out["spec"]["containers"][0];
        // The patch's elements come in patch order; a server-only element goes first only when
        // it precedes them on the server (`mergeSortedSlice`), so the new `Y` leads.
        let want_env = json!([{"name": "Y", "value": "2"}, {"name": "X", "value": "9"}, {"name": "A", "value": "0"}]);
        assert_eq!(c["env"], want_env);
        let want_ports = json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}]);
        assert_eq!(c["ports"], want_ports);
    }

    #[test]
    fn client_side_apply_deletes_with_set_element_order() {
        // What kubectl apply sends after `b` left the manifest and `c`'s image changed.
        let patch = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
                     "containers": [{"image": "c:2", "name": "c"}, {"$patch": "delete", "name": "b"}]}});
        let out = smp(&pod(), patch).unwrap();
        assert_eq!(names(&out, "/spec/containers"), ["a", "c"]);
        assert_eq!(out["spec"]["containers"][1]["image"], "c:2");
        assert_eq!(
            out["spec"].as_object().unwrap().len(),
            1,
            "no directive key left: {out}"
        );
        assert!(out["metadata"]["annotations"].is_object());
        let env = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
            "containers": [{"$setElementOrder/env": [{"name": "X"}],
                            "env": [{"$patch": "delete", "name": "A"}], "name": "a"}]}});
        let out = smp(&out, env).unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "X", "value": "1"}])
        );
    }

    #[test]
    fn set_element_order_interleaves_server_only_elements() {
        let orig = json!({"spec": {"containers": [{"name": "x"}, {"name": "a"}, {"name": "b"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                                    "containers": [{"name": "a", "image": "new"}]}});
        let out = smp(&orig, patch).unwrap();
        assert_eq!(names(&out, "/spec/containers"), ["x", "b", "a"]);
        let reorder =
            json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}]}});
        let out = smp(&pod(), reorder).unwrap();
        // `b` preceded `c` on the server, so it stays before it.
        assert_eq!(names(&out, "/spec/containers"), ["b", "c", "a"]);
        let added = json!({"spec": {"$setElementOrder/containers": [{"name": "n"}, {"name": "m"}],
                                    "containers": [{"name": "n"}, {"name": "m", "env": [{"$patch": "delete", "name": "E"}]}]}});
        let out = smp(&json!({"spec": {}}), added).unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "n"}, {"name": "m", "env": []}])
        );
    }

    #[test]
    fn labels_delete_with_null_and_primitive_lists_union() {
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3", "zz": null}, "finalizers": ["f3", "f1"]}});
        let out = smp(&pod(), patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["f3", "f1", "f2"]));
        let csa = json!({"metadata": {"$setElementOrder/finalizers": ["f2", "f3"],
            "$deleteFromPrimitiveList/finalizers": ["f1"], "finalizers": ["f3"]}});
        assert_eq!(
            smp(&pod(), csa).unwrap()["metadata"]["finalizers"],
            json!(["f2", "f3"])
        );
        let nolist = json!({"metadata": {"$deleteFromPrimitiveList/missing": ["x"]}});
        assert!(
            smp(&pod(), nolist).unwrap()["metadata"]
                .get("missing")
                .is_none()
        );
    }

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        let dep = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                                  "volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "volumes": [{"$retainKeys": ["hostPath", "name"], "name": "v", "hostPath": {"path": "/x"}}]}});
        let out = smp(&dep, patch).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let want =
            json!([{"name": "v", "hostPath": {"path": "/x"}}, {"name": "w", "emptyDir": {}}]);
        assert_eq!(out["spec"]["volumes"], want);
        let outside = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
        assert_eq!(smp(&dep, outside).unwrap_err().code(), 422);
        let not_list = json!({"spec": {"strategy": {"$retainKeys": "type"}}});
        assert_eq!(smp(&dep, not_list).unwrap_err().code(), 400);
    }

    #[test]
    fn patch_directives_on_maps_and_list_elements() {
        let replace_list =
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z", "gone": null}]}});
        assert_eq!(
            smp(&pod(), replace_list).unwrap()["spec"]["containers"],
            json!([{"name": "z"}])
        );
        let replace_map = json!({"metadata": {"labels": {"$patch": "replace", "n": "1"}}});
        assert_eq!(
            smp(&pod(), replace_map).unwrap()["metadata"]["labels"],
            json!({"n": "1"})
        );
        let delete_map = json!({"metadata": {"labels": {"$patch": "delete"}}});
        assert!(
            smp(&pod(), delete_map).unwrap()["metadata"]
                .get("labels")
                .is_none()
        );
        let merge_map = json!({"metadata": {"labels": {"$patch": "merge", "n": "1"}}});
        assert_eq!(
            smp(&pod(), merge_map).unwrap()["metadata"]["labels"],
            json!({"a": "1", "b": "2", "n": "1"})
        );
        let strategy_replace = json!({"spec": {"selector": {"k": "v"}}});
        let orig = json!({"spec": {"selector": {"old": "x"}}});
        assert_eq!(
            smp(&orig, strategy_replace).unwrap()["spec"]["selector"],
            json!({"k": "v"})
        );
        let fresh = json!({"spec": {"new": {"a": null, "b": {"$patch": "delete"}, "c": [{"$patch": "replace"}, 1, null]}}});
        assert_eq!(
            smp(&pod(), fresh).unwrap()["spec"]["new"],
            json!({"c": [1, null]})
        );
        assert_eq!(smp(&pod(), json!({"$patch": "delete"})).unwrap(), json!({}));
    }

    #[test]
    fn no_meta_replaces_lists_and_still_strips_directives() {
        let body = json!({"spec": {"containers": [{"name": "q"}], "extra": {"$patch": "replace", "k": 1}},
                          "metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}});
        let out = apply_patch(
            PatchType::StrategicMerge,
            &pod(),
            body.to_string().as_bytes(),
            &NoMeta,
        )
        .unwrap();
        assert_eq!(
            out["spec"],
            json!({"containers": [{"name": "q"}], "extra": {"k": 1}})
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["f2"]));
    }

    #[test]
    fn invalid_patches_are_400_or_422() {
        let code = |patch: Value| smp(&pod(), patch).unwrap_err().code();
        let e = smp(&pod(), json!({"spec": {"containers": [{"image": "x"}]}})).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string()),
            (
                422,
                r#"map: {"image":"x"} does not contain declared merge key: name"#.into()
            )
        );
        assert_eq!(
            code(json!({"spec": {"containers": [{"name": "a", "$patch": "bogus"}]}})),
            422
        );
        assert_eq!(code(json!({"metadata": {"labels": {"$patch": 1}}})), 422);
        assert_eq!(
            code(json!({"spec": {"containers": [{"$patch": "delete"}]}})),
            422
        );
        assert_eq!(code(json!({"metadata": {"finalizers": [["nested"]]}})), 422);
        assert_eq!(code(json!({"metadata": {"finalizers": [{"a": 1}]}})), 422);
        assert_eq!(
            code(json!({"spec": {"$setElementOrder/containers": "x"}})),
            400
        );
        assert_eq!(code(json!({"spec": {"$setElementOrderX": []}})), 400);
        assert_eq!(
            code(json!({"metadata": {"$deleteFromPrimitiveListX/finalizers": []}})),
            400
        );
        let mismatch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "b"}]}});
        assert_eq!(code(mismatch), 400);
        assert_eq!(smp(&pod(), json!([])).unwrap_err().code(), 400);
        let bad_json =
            apply_patch(PatchType::StrategicMerge, &pod(), b"{\"a\":", &schema()).unwrap_err();
        assert_eq!(bad_json.code(), 400);
    }
}
