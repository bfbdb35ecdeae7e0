//! What every walk asks of a schema node, worked out once: the node behind its `$ref` /
//! `allOf` wrapper and the typed branches of its junctors, with their `properties`,
//! `items` and `additionalProperties` (see [`SchemaRef::resolved`] and the `*_for` lookups).
//!
//! Validation, pruning and the field manager each ask these questions at every node of
//! every object written, and answering them from the raw JSON costs a handful of hashed
//! lookups and an allocation each time. For built-in kinds the answers are computed for
//! every node of the definitions map on first use and kept (the map is `'static` and never
//! changes, so a node's address identifies it for the life of the process). A custom
//! resource's schema is answered afresh per walk node ([`NodeFacts::of`]): it belongs to
//! one CRD version and is replaced with it, so nothing about it is kept here and nothing
//! can go stale.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::{MAX_HOPS, Origin, SchemaRef, builtin_definitions, ref_name};

/// The facts of one schema node (borrowing from its schema).
#[derive(Debug, Clone)]
pub(crate) struct NodeFacts<'a> {
    /// The node with `$ref` and a lone `allOf` followed.
    pub(crate) resolved: &'a Value,
    /// `x-kubernetes-embedded-resource` on the resolved node.
    pub(crate) embedded: bool,
    /// The resolved node as a shape.
    first: Shape<'a>,
    /// The resolved branches of the resolved node's `allOf`/`anyOf`/`oneOf` that declare
    /// a container type (the only ones a lookup can select), in document order.
    branches: Vec<Shape<'a>>,
}

/// One schema describing a value's fields: the resolved node or a typed junctor branch.
#[derive(Debug, Clone, Copy)]
struct Shape<'a> {
    /// `type`.
    ty: Option<&'a str>,
    properties: Option<&'a Value>,
    items: Option<&'a Value>,
    additional: Option<&'a Value>,
    preserve_unknown: bool,
}

impl<'a> Shape<'a> {
    fn of(node: &'a Value) -> Self {
        Shape {
            ty: node.get("type").and_then(Value::as_str),
            properties: node.get("properties"),
            items: node.get("items").filter(|i| i.is_object()),
            additional: node.get("additionalProperties"),
            preserve_unknown: node.get("x-kubernetes-preserve-unknown-fields")
                == Some(&Value::Bool(true)),
        }
    }
}

impl<'a> NodeFacts<'a> {
    /// Works out the facts of `s` from its JSON.
    pub(crate) fn of(s: SchemaRef<'a>) -> Self {
        let resolved = resolve(s.defs, s.node);
        let mut branches = Vec::new();
        for junctor in ["allOf", "anyOf", "oneOf"] {
            let Some(list) = resolved.get(junctor).and_then(Value::as_array) else {
                continue;
            };
            for branch in list {
                let b = resolve(s.defs, branch);
                let shape = Shape::of(b);
                if shape.ty.is_some() {
                    branches.push(shape);
                }
            }
        }
        NodeFacts {
            resolved,
            embedded: resolved
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            first: Shape::of(resolved),
            branches,
        }
    }

    /// The shapes that describe a value of JSON type `want` (any container type for
    /// `None`): the resolved node, then the branches that declare that type.
    fn shapes(&self, want: Option<&str>) -> impl Iterator<Item = &Shape<'a>> {
        let branches = self.branches.iter().filter(move |b| match (b.ty, want) {
            (Some(t), Some(w)) => t == w,
            (Some(t), None) => t == "object" || t == "array",
            (None, _) => false,
        });
        std::iter::once(&self.first).chain(branches)
    }

    /// The schema node of property `name` (the first shape that declares it).
    pub(crate) fn property(&self, name: &str, want: Option<&str>) -> Option<&'a Value> {
        self.shapes(want).find_map(|s| s.properties?.get(name))
    }

    /// `additionalProperties`: `Some(Some(node))`, `Some(None)` for `true`, `None` when no
    /// shape allows extra keys.
    pub(crate) fn additional(&self, want: Option<&str>) -> Option<Option<&'a Value>> {
        self.shapes(want).find_map(|s| match s.additional? {
            Value::Bool(true) => Some(None),
            Value::Bool(false) => None,
            other => Some(Some(other)),
        })
    }

    /// `items` (an object schema) of the first shape that has it.
    pub(crate) fn items(&self, want: Option<&str>) -> Option<&'a Value> {
        self.shapes(want).find_map(|s| s.items)
    }

    /// Whether an object shape keeps unknown fields.
    pub(crate) fn preserves_unknown(&self) -> bool {
        self.shapes(Some("object")).any(|s| s.preserve_unknown)
    }

    /// Whether an object shape declares fields (`type: object` or `properties`).
    pub(crate) fn declares_fields(&self) -> bool {
        self.shapes(Some("object"))
            .any(|s| s.ty == Some("object") || s.properties.is_some())
    }
}

/// Follows `$ref` and a lone `allOf: [x]` wrapper (see [`SchemaRef::resolved`]).
pub(super) fn resolve<'a>(defs: &'a Map<String, Value>, node: &'a Value) -> &'a Value {
    let mut current = node;
    for _ in 0..MAX_HOPS {
        let Some(obj) = current.as_object() else {
            return current;
        };
        if let Some(target) = obj
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(ref_name)
            .and_then(|name| defs.get(name))
        {
            current = target;
            continue;
        }
        let shaped = ["type", "properties", "items", "additionalProperties"]
            .iter()
            .any(|k| obj.contains_key(*k));
        match obj.get("allOf").and_then(Value::as_array) {
            Some(all) if all.len() == 1 && !shaped => current = &all[0],
            _ => return current,
        }
    }
    current
}

/// The kept facts of a built-in node, when `s` is one.
pub(super) fn builtin(s: &SchemaRef<'_>) -> Option<&'static NodeFacts<'static>> {
    if s.origin != Origin::Builtin || !std::ptr::eq(s.defs, builtin_definitions()) {
        return None;
    }
    BUILTIN.get(&address(s.node))
}

/// A node's address: its identity while the value it belongs to is neither dropped nor
/// changed (the built-in definitions are neither).
fn address(node: &Value) -> usize {
    std::ptr::from_ref(node) as usize
}

/// The facts of every object node of the built-in definitions, by address.
static BUILTIN: LazyLock<HashMap<usize, NodeFacts<'static>, BuildHasherDefault<AddressHasher>>> =
    LazyLock::new(|| {
        builtin_object_nodes()
            .into_iter()
            .map(|s| (address(s.node), NodeFacts::of(s)))
            .collect()
    });

/// Every object node of the built-in definitions, as a built-in cursor.
fn builtin_object_nodes() -> Vec<SchemaRef<'static>> {
    let defs = builtin_definitions();
    let mut out = Vec::new();
    let mut stack: Vec<&'static Value> = defs.values().collect();
    while let Some(node) = stack.pop() {
        match node {
            Value::Object(map) => {
                out.push(SchemaRef {
                    defs,
                    node,
                    origin: Origin::Builtin,
                    root: false,
                });
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

/// Hashes an address: a multiply and fold (no need for SipHash's flood resistance; the
/// keys are the server's own nodes).
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::{crd_schema, object_meta};

    #[test]
    fn kept_facts_of_builtin_nodes_are_what_the_json_says() {
        for s in builtin_object_nodes() {
            let kept = builtin(&s).unwrap();
            let fresh = NodeFacts::of(s);
            assert!(std::ptr::eq(kept.resolved, fresh.resolved));
            assert!(std::ptr::eq(kept.resolved, resolve(s.defs, s.node)));
            assert_eq!(kept.embedded, fresh.embedded);
            assert_eq!(kept.preserves_unknown(), fresh.preserves_unknown());
            assert_eq!(kept.declares_fields(), fresh.declares_fields());
            for want in [None, Some("object"), Some("array")] {
                assert_eq!(kept.additional(want), fresh.additional(want));
                assert_eq!(kept.items(want), fresh.items(want));
            }
        }
    }

    #[test]
    fn only_builtin_nodes_are_kept() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert!(builtin(&crd_schema(&schema)).is_none());
        // The same JSON as a built-in node but not in the definitions map: worked out afresh.
        let loose = SchemaRef {
            defs: builtin_definitions(),
            node: &schema,
            origin: Origin::Builtin,
            root: false,
        };
        assert!(builtin(&loose).is_none());
        assert!(loose.property_for("a", Some("object")).is_some());
        assert!(builtin(&object_meta().unwrap()).is_some());
    }

    #[test]
    fn typed_junctor_branches_define_fields() {
        let schema = json!({
            "anyOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}},
                {"type": "array", "items": {"type": "integer"}},
                {"properties": {"untyped": {}}},
            ],
        });
        let f = NodeFacts::of(crd_schema(&schema));
        assert!(f.property("a", Some("object")).is_some());
        assert!(f.property("a", Some("array")).is_none());
        assert!(f.property("untyped", None).is_none());
        assert!(f.items(Some("array")).is_some());
        assert!(f.items(None).is_some());
        assert!(f.declares_fields());
        assert!(!f.preserves_unknown());
    }
}
