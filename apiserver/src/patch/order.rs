//! The order of merged lists in strategic merge patch: `$setElementOrder/<list>` and
//! apimachinery's `normalizeElementOrder`. Start at [`set_element_order`]; the rule itself is
//! in [`normalize_order`].

use super::PatchError;
use super::strategic::{
    DIRECTIVE, SET_ORDER, bad_format, compact, merge_list, no_merge_key, strategy,
};
use crate::patch_meta::PatchMeta;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Processes `$setElementOrder/<field>` with the `<field>` list of the same patch
/// (`mergePatchIntoOriginal`): merge, then order by the directive, the patch and the server.
pub(super) fn set_element_order<M: PatchMeta>(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    field: &str,
    order: Value,
    meta: Option<&M>,
) -> Result<(), PatchError> {
    let Value::Array(order) = order else {
        return Err(bad_format("setElementOrder list"));
    };
    let not_list = |what: &str| {
        PatchError::InvalidStrategicPatch(format!(
            "{what} of {field} must be a list for {SET_ORDER}"
        ))
    };
    let server = match original.get(field) {
        None => None,
        Some(Value::Array(l)) => Some(l.clone()),
        Some(_) => return Err(not_list("the object's value")),
    };
    let patched = match patch.shift_remove(field) {
        None => None,
        Some(Value::Array(l)) => Some(l),
        Some(_) => return Err(not_list("the patch's value")),
    };
    let key = strategy(meta).merge_key;
    let key = key.as_deref();
    if let Some(p) = &patched {
        validate_order(p, &order, key)?;
    }
    let merged = match (server.clone(), patched) {
        (None, None) => return Ok(()),
        (Some(s), None) => s,
        (s, Some(p)) => merge_list(s.unwrap_or_default(), p, meta, false)?,
    };
    let key = if merged.iter().all(Value::is_object) {
        key
    } else {
        None
    };
    let (in_order, server_only) = partition(merged, &order, key)?;
    let server = server.unwrap_or_default();
    let list = normalize_order(in_order, server_only, &order, &server, key);
    original.insert(field.to_owned(), Value::Array(list));
    Ok(())
}

/// The patch list must be a subsequence of the `$setElementOrder` list, deletions and other
/// directive elements aside (`validatePatchWithSetOrderList`).
fn validate_order(patch: &[Value], order: &[Value], key: Option<&str>) -> Result<(), PatchError> {
    let ident = |v: &Value| -> Result<Value, PatchError> {
        match key {
            None => Ok(v.clone()),
            Some(k) => v.get(k).cloned().ok_or_else(|| no_merge_key(v, k)),
        }
    };
    let mut wanted = patch
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .peekable();
    for o in order {
        let Some(p) = wanted.peek() else { break };
        if ident(p)? == ident(o)? {
            wanted.next();
        }
    }
    match wanted.next() {
        None => Ok(()),
        Some(_) => Err(PatchError::BadDirective(format!(
            "The order in patch list: {} doesn't match {SET_ORDER} list: {}",
            compact(&patch),
            compact(&order)
        ))),
    }
}

/// What identifies a list element for ordering: its merge key value, or itself.
fn identity(v: &Value, key: Option<&str>) -> String {
    match key {
        Some(k) => v.get(k).map(compact).unwrap_or_default(),
        None => compact(v),
    }
}

fn positions(list: &[Value], key: Option<&str>) -> HashMap<String, usize> {
    let mut map = HashMap::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        map.entry(identity(v, key)).or_insert(i);
    }
    map
}

/// Splits `merged` into the elements named in `by` and the rest (`partition*ByPresentInList`).
pub(super) fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    if let Some(k) = key
        && let Some(bad) = merged.iter().find(|v| v.get(k).is_none())
    {
        return Err(no_merge_key(bad, k));
    }
    let named = positions(by, key);
    Ok(merged
        .into_iter()
        .partition(|v| named.contains_key(&identity(v, key))))
}

/// apimachinery's `normalizeElementOrder`: the patch's elements sorted by `patch_order`, the
/// server-only ones by `server_order`, then interleaved: a server-only element goes before a
/// patch element only when both are on the server and it came first there.
pub(super) fn normalize_order(
    in_patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let sort = |mut items: Vec<Value>, order: &[Value]| {
        let pos = positions(order, key);
        items.sort_by_cached_key(|v| pos.get(&identity(v, key)).copied().unwrap_or(usize::MAX));
        items
    };
    let right = sort(in_patch, patch_order);
    let left = sort(server_only, server_order);
    let server = positions(server_order, key);
    let at = |v: &Value| server.get(&identity(v, key)).copied();
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut left, mut right) = (left.into_iter().peekable(), right.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => return out,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((at(l), at(r)), (Some(a), Some(b)) if a < b),
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
}
