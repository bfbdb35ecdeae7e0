//! Schema-guided walks over objects for server-side apply: the set of fields a
//! configuration specifies, merging a configuration into an object, the fields two versions
//! differ in, and removing fields. No IO.
//!
//! The schema says how each value is owned: maps (objects) are granular — every key is a
//! field of its own — unless `x-kubernetes-map-type: atomic` (or a struct Kubernetes marks
//! atomic, like `LabelSelector`); lists are atomic unless `x-kubernetes-list-type` is
//! `map` (items keyed by `x-kubernetes-list-map-keys`) or `set` (items keyed by value), or
//! they carry a strategic-merge `merge` strategy (keyed by the merge key). Without a schema
//! (preserved unknown fields) maps are granular and lists atomic.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::set::{FieldSet, PathElement};
use crate::patch_meta::PatchMeta;
use crate::schema::{self, SchemaRef};

/// The schema of a value, when known.
pub type Node<'a> = Option<SchemaRef<'a>>;

/// Built-in structs Kubernetes declares atomic (`+structType=atomic`).
const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ResourceFieldSelector",
];

/// How a list's items are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    /// The list is one value.
    Atomic,
    /// Items are keyed by their value.
    Set,
    /// Items are keyed by these fields.
    Map(Vec<String>),
}

/// How a value is owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// As a whole.
    Leaf,
    /// Key by key.
    Object,
    /// Item by item.
    List(ListKind),
}

fn extension<'a>(s: &SchemaRef<'a>, keyword: &str) -> Option<&'a Value> {
    s.node().get(keyword).or_else(|| s.get(keyword))
}

fn definition_name<'a>(s: &SchemaRef<'a>) -> Option<&'a str> {
    let node = s.node();
    let reference = node.get("$ref").or_else(|| {
        node.get("allOf")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|f| f.get("$ref"))
    })?;
    schema::ref_name(reference.as_str()?)
}

/// The schema of key `key` of an object.
pub fn child<'a>(node: Node<'a>, key: &str) -> Node<'a> {
    node.and_then(|s| s.field(key))
}

fn items(node: Node<'_>) -> Node<'_> {
    node.and_then(|s| s.items())
}

/// How the list at `node` is keyed.
pub fn list_kind(node: Node<'_>) -> ListKind {
    let Some(s) = node else {
        return ListKind::Atomic;
    };
    let map_keys = || -> Vec<String> {
        let keys: Vec<String> = extension(&s, "x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if keys.is_empty() {
            s.merge_key().into_iter().collect()
        } else {
            keys
        }
    };
    match extension(&s, "x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => match map_keys() {
            k if k.is_empty() => ListKind::Atomic,
            k => ListKind::Map(k),
        },
        Some("set") => ListKind::Set,
        Some(_) => ListKind::Atomic,
        None if s.strategies().iter().any(|x| x == "merge") => match s.merge_key() {
            Some(k) => ListKind::Map(vec![k]),
            None => ListKind::Set,
        },
        None => ListKind::Atomic,
    }
}

fn atomic_map(node: Node<'_>) -> bool {
    node.is_some_and(|s| {
        extension(&s, "x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
            || definition_name(&s).is_some_and(|d| ATOMIC_STRUCTS.contains(&d))
    })
}

/// A built-in struct (fixed properties): Kubernetes does not record it as a field of its
/// own when an update adds it, only its fields (unlike maps, list items and the objects
/// of custom resources).
fn builtin_struct(node: Node<'_>) -> bool {
    node.is_some_and(|s| {
        s.origin() == schema::Origin::Builtin && s.resolved().node().get("properties").is_some()
    })
}

fn shape(v: &Value, node: Node<'_>) -> Shape {
    match v {
        Value::Object(_) if !atomic_map(node) => Shape::Object,
        Value::Array(_) => match list_kind(node) {
            ListKind::Atomic => Shape::Leaf,
            k => Shape::List(k),
        },
        _ => Shape::Leaf,
    }
}

/// The path element of list item `item` at position `i`.
fn key_of(item: &Value, kind: &ListKind, i: usize) -> PathElement {
    match kind {
        ListKind::Map(keys) => {
            let Some(o) = item.as_object() else {
                return PathElement::Index(i);
            };
            let mut m = Map::new();
            for k in keys {
                match o.get(k) {
                    Some(v) => {
                        m.insert(k.clone(), v.clone());
                    }
                    // The one defaulted key of built-in map-lists (ports): Kubernetes
                    // keys an item without it as its default.
                    None if k == "protocol" => {
                        m.insert(k.clone(), Value::from("TCP"));
                    }
                    None => {}
                }
            }
            if m.is_empty() {
                PathElement::Index(i)
            } else {
                PathElement::key(&m)
            }
        }
        ListKind::Set => PathElement::Value(serde_json::to_string(item).unwrap_or_default()),
        ListKind::Atomic => PathElement::Index(i),
    }
}

/// The owned parts of a granular value: (path element, value, schema), in order.
fn elements<'v, 'a>(v: &'v Value, node: Node<'a>) -> Vec<Element<'v, 'a>> {
    match (v, shape(v, node)) {
        (Value::Object(m), Shape::Object) => m
            .iter()
            .map(|(k, c)| (PathElement::Field(k.clone()), c, child(node, k)))
            .collect(),
        (Value::Array(a), Shape::List(kind)) => {
            let inode = items(node);
            a.iter()
                .enumerate()
                .map(|(i, c)| (key_of(c, &kind, i), c, inode))
                .collect()
        }
        _ => Vec::new(),
    }
}

fn is_item(pe: &PathElement) -> bool {
    !matches!(pe, PathElement::Field(_))
}

/// The fields a configuration specifies (structured-merge-diff's `ToFieldSet`): every
/// leaf, and every list item.
pub fn applied_set(v: &Value, node: Node<'_>) -> FieldSet {
    let mut out = FieldSet::default();
    for (pe, c, cn) in elements(v, node) {
        if c.is_null() {
            continue;
        }
        let item = is_item(&pe);
        match shape(c, cn) {
            Shape::Leaf => out.child_mut(pe).member = true,
            _ => {
                let mut sub = applied_set(c, cn);
                sub.member |= item;
                if !sub.is_empty() {
                    out.children.insert(pe, sub);
                }
            }
        }
    }
    out
}

/// `cfg` merged into `live`: maps key by key, keyed lists item by item (live order, new
/// items appended), everything else replaced. A `null` in `cfg` removes the key.
pub fn merge(live: &Value, cfg: &Value, node: Node<'_>) -> Value {
    match (shape(cfg, node), live, cfg) {
        (Shape::Object, Value::Object(l), Value::Object(c)) if !atomic_map(node) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.shift_remove(k);
                    continue;
                }
                let v = match l.get(k) {
                    Some(lv) => merge(lv, cv, child(node, k)),
                    None => cv.clone(),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        (Shape::List(kind), Value::Array(l), Value::Array(c)) => {
            let inode = items(node);
            let mut by_key: BTreeMap<PathElement, &Value> = BTreeMap::new();
            for (i, ci) in c.iter().enumerate() {
                by_key.entry(key_of(ci, &kind, i)).or_insert(ci);
            }
            let mut out = Vec::with_capacity(l.len().max(c.len()));
            let mut seen = std::collections::BTreeSet::new();
            for (i, li) in l.iter().enumerate() {
                let k = key_of(li, &kind, i);
                match by_key.get(&k) {
                    Some(ci) if seen.insert(k.clone()) => out.push(merge(li, ci, inode)),
                    _ => out.push(li.clone()),
                }
            }
            for (i, ci) in c.iter().enumerate() {
                let k = key_of(ci, &kind, i);
                if seen.insert(k) {
                    out.push(ci.clone());
                }
            }
            Value::Array(out)
        }
        _ => cfg.clone(),
    }
}

/// The fields that differ between two versions of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Only in the new version (with the maps and list items that hold them).
    pub added: FieldSet,
    /// In both, with different values.
    pub modified: FieldSet,
    /// Only in the old version.
    pub removed: FieldSet,
}

/// What changed from `old` to `new` (the children of two granular values).
pub fn diff(old: Option<&Value>, new: Option<&Value>, node: Node<'_>) -> Changes {
    diff_elements(
        old.map(|o| elements(o, node)).unwrap_or_default(),
        new.map(|n| elements(n, node)).unwrap_or_default(),
    )
}

/// The owned parts of an object given as its fields (a subset of a granular object's,
/// e.g. the tracked part of a root), as [`diff_elements`] takes them.
pub fn object_elements<'v, 'a>(
    fields: impl IntoIterator<Item = (&'v str, &'v Value)>,
    node: Node<'a>,
) -> Vec<Element<'v, 'a>> {
    if atomic_map(node) {
        return Vec::new();
    }
    fields
        .into_iter()
        .map(|(k, c)| (PathElement::Field(k.to_string()), c, child(node, k)))
        .collect()
}

/// One owned part of a value: its path element, value and schema.
pub type Element<'v, 'a> = (PathElement, &'v Value, Node<'a>);

/// What changed between the owned parts of two versions of a value.
pub fn diff_elements(olds: Vec<Element<'_, '_>>, news: Vec<Element<'_, '_>>) -> Changes {
    let mut out = Changes::default();
    let mut old_by: BTreeMap<PathElement, (&Value, Node<'_>)> = BTreeMap::new();
    for (pe, v, n) in olds {
        old_by.entry(pe).or_insert((v, n));
    }
    let mut new_by: BTreeMap<PathElement, (&Value, Node<'_>)> = BTreeMap::new();
    for (pe, v, n) in news {
        new_by.entry(pe).or_insert((v, n));
    }
    let keys: std::collections::BTreeSet<&PathElement> =
        old_by.keys().chain(new_by.keys()).collect();
    for pe in keys {
        let o = old_by.get(pe);
        let n = new_by.get(pe);
        let cn = n.or(o).and_then(|(_, n)| *n);
        match (o, n) {
            // Equal values differ in nothing (the common case of an update).
            (Some((ov, _)), Some((nv, _))) if ov == nv => {}
            (Some((ov, _)), Some((nv, _))) => {
                let (so, sn) = (shape(ov, cn), shape(nv, cn));
                if so != Shape::Leaf && so == sn {
                    attach(&mut out, pe, diff(Some(ov), Some(nv), cn));
                } else {
                    out.modified.child_mut(pe.clone()).member = true;
                }
            }
            (None, Some((nv, _))) => {
                let sub = diff(None, Some(nv), cn);
                let mark = shape(nv, cn) == Shape::Leaf || is_item(pe) || !builtin_struct(cn);
                attach(&mut out, pe, sub);
                if mark {
                    out.added.child_mut(pe.clone()).member = true;
                }
            }
            (Some((ov, _)), None) => {
                let sub = diff(Some(ov), None, cn);
                attach(&mut out, pe, sub);
                out.removed.child_mut(pe.clone()).member = true;
            }
            (None, None) => {}
        }
    }
    out
}

fn attach(out: &mut Changes, pe: &PathElement, sub: Changes) {
    for (dst, src) in [
        (&mut out.added, sub.added),
        (&mut out.modified, sub.modified),
        (&mut out.removed, sub.removed),
    ] {
        if !src.is_empty() {
            dst.child_mut(pe.clone()).absorb(src);
        }
    }
}

/// Remove from `v` the fields of `remove` that nobody in `keep` owns (anything under them);
/// maps and lists this leaves empty go too.
pub fn prune(v: &mut Value, remove: &FieldSet, keep: &FieldSet, node: Node<'_>) {
    let empty = FieldSet::default();
    match shape(v, node) {
        Shape::Object => {
            let Value::Object(m) = v else { return };
            for (pe, sub) in &remove.children {
                let PathElement::Field(k) = pe else { continue };
                let kept = keep.children.get(pe).unwrap_or(&empty);
                if sub.member && kept.is_empty() {
                    m.shift_remove(k);
                } else if let Some(c) = m.get_mut(k) {
                    let was_empty = is_empty_container(c);
                    prune(c, sub, kept, child(node, k));
                    if !was_empty && is_empty_container(c) {
                        m.shift_remove(k);
                    }
                }
            }
        }
        Shape::List(kind) => {
            let inode = items(node);
            let Value::Array(a) = v else { return };
            let mut out = Vec::with_capacity(a.len());
            for (i, mut item) in std::mem::take(a).into_iter().enumerate() {
                let pe = key_of(&item, &kind, i);
                match remove.children.get(&pe) {
                    Some(sub) => {
                        let kept = keep.children.get(&pe).unwrap_or(&empty);
                        if sub.member && kept.is_empty() {
                            continue;
                        }
                        prune(&mut item, sub, kept, inode);
                        out.push(item);
                    }
                    None => out.push(item),
                }
            }
            *a = out;
        }
        Shape::Leaf => {}
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}
