//! Field sets: which fields of an object a manager owns, as structured-merge-diff's
//! `fieldpath.Set`, and their `FieldsV1` encoding
//! (`{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"x\"}":{".":{},…}}}}`).
//!
//! A set is a tree of path elements; a node is a *member* when the field (or list item) at
//! that path is owned. Fields are `f:<name>`, items of map-lists `k:<key fields as JSON>`,
//! items of set-lists `v:<value as JSON>`, others `i:<index>`; `.` marks a node that is a
//! member and has children.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object (or a key of a map).
    Field(String),
    /// An item of a map-list, by its key fields: a JSON object with sorted keys.
    Key(String),
    /// An item of a set-list, by its value (JSON).
    Value(String),
    /// An item of a list without keys, by position.
    Index(usize),
}

impl PathElement {
    /// The `FieldsV1` spelling.
    pub fn encode(&self) -> String {
        match self {
            Self::Field(f) => format!("f:{f}"),
            Self::Key(k) => format!("k:{k}"),
            Self::Value(v) => format!("v:{v}"),
            Self::Index(i) => format!("i:{i}"),
        }
    }

    /// Parse the `FieldsV1` spelling.
    pub fn decode(s: &str) -> Option<Self> {
        let (kind, rest) = s.split_at_checked(2)?;
        Some(match kind {
            "f:" => Self::Field(rest.to_string()),
            "k:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                Self::Key(canonical(v.as_object()?))
            }
            "v:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                Self::Value(serde_json::to_string(&v).ok()?)
            }
            "i:" => Self::Index(rest.parse().ok()?),
            _ => return None,
        })
    }

    /// The key of a map-list item from its key fields.
    pub fn key(fields: &Map<String, Value>) -> Self {
        Self::Key(canonical(fields))
    }
}

/// Compact JSON of an object with its keys sorted (structured-merge-diff sorts key fields).
fn canonical(fields: &Map<String, Value>) -> String {
    let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

/// A path as Kubernetes prints it in conflicts: `.spec.containers[name="x"].image`.
pub fn display(path: &[PathElement]) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            PathElement::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            PathElement::Key(k) => {
                let fields: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = write!(out, "[{}]", parts.join(","));
            }
            PathElement::Value(v) => {
                let _ = write!(out, "[={v}]");
            }
            PathElement::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// A set of paths (a tree; see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// The path leading here is in the set.
    pub member: bool,
    /// Paths continuing below.
    pub children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// True when no path is in the set.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// The subtree at `pe`, created when missing.
    pub fn child_mut(&mut self, pe: PathElement) -> &mut FieldSet {
        self.children.entry(pe).or_default()
    }

    /// Add `path`.
    pub fn insert(&mut self, path: &[PathElement]) {
        let mut node = self;
        for pe in path {
            node = node.child_mut(pe.clone());
        }
        node.member = true;
    }

    /// Is `path` in the set?
    pub fn contains(&self, path: &[PathElement]) -> bool {
        let mut node = self;
        for pe in path {
            match node.children.get(pe) {
                Some(n) => node = n,
                None => return false,
            }
        }
        node.member
    }

    /// Add every path of `other`.
    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, sub) in &other.children {
            self.child_mut(pe.clone()).union_with(sub);
        }
    }

    /// Add every path of `other`, taking its nodes instead of copying them.
    pub fn absorb(&mut self, other: FieldSet) {
        self.member |= other.member;
        for (pe, sub) in other.children {
            match self.children.entry(pe) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(sub);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().absorb(sub),
            }
        }
    }

    /// The paths of `self` that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, sub) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => sub.difference(o),
                None => sub.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// The paths in both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, sub) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = sub.intersection(o);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Every path in the set, in order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (pe, sub) in &self.children {
            prefix.push(pe.clone());
            sub.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `FieldsV1` object of this set (of the children of the root).
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for (pe, sub) in &self.children {
            if sub.is_empty() {
                continue;
            }
            m.insert(pe.encode(), sub.encode_node());
        }
        Value::Object(m)
    }

    fn encode_node(&self) -> Value {
        let mut m = Map::new();
        let has_children = self.children.values().any(|c| !c.is_empty());
        if self.member && has_children {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, sub) in &self.children {
            if !sub.is_empty() {
                m.insert(pe.encode(), sub.encode_node());
            }
        }
        Value::Object(m)
    }

    /// Parse a `FieldsV1` object; `None` when malformed.
    pub fn from_fields_v1(v: &Value) -> Option<FieldSet> {
        let mut root = Self::decode_node(v)?;
        root.member = false;
        Some(root)
    }

    fn decode_node(v: &Value) -> Option<FieldSet> {
        let m = v.as_object()?;
        let mut out = FieldSet {
            // `{}` is a leaf member; `{".": {}, …}` a member with children.
            member: m.is_empty() || m.contains_key("."),
            children: BTreeMap::new(),
        };
        for (k, sub) in m {
            if k == "." {
                continue;
            }
            out.children
                .insert(PathElement::decode(k)?, Self::decode_node(sub)?);
        }
        Some(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> PathElement {
        PathElement::Field(s.into())
    }

    #[test]
    fn fields_v1_round_trips_as_kubernetes_writes_it() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}},
                       "f:finalizers": {"v:\"a\"": {}}, "f:replicas": {}},
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert!(set.contains(&[f("spec"), f("replicas")]));
        assert!(set.contains(&[f("metadata"), f("labels")]));
        assert!(!set.contains(&[f("metadata")]));
        let key = PathElement::Key(r#"{"name":"nginx"}"#.into());
        assert!(set.contains(&[f("spec"), f("containers"), key.clone()]));
        assert_eq!(set.to_fields_v1(), v);
        assert_eq!(set.paths().len(), 7);
        assert_eq!(
            display(&[f("spec"), f("containers"), key, f("image")]),
            ".spec.containers[name=\"nginx\"].image"
        );
        assert_eq!(FieldSet::from_fields_v1(&json!({"x:y": {}})), None);
        assert_eq!(FieldSet::from_fields_v1(&json!([])), None);
    }

    #[test]
    fn keys_are_canonical_and_printed_in_order() {
        let a = PathElement::decode(r#"k:{"protocol":"TCP","containerPort":80}"#).unwrap();
        let b = PathElement::decode(r#"k:{"containerPort":80,"protocol":"TCP"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.encode(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        assert_eq!(display(&[a]), "[containerPort=80,protocol=\"TCP\"]");
        assert_eq!(display(&[PathElement::Value("\"x\"".into())]), "[=\"x\"]");
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::default();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::default();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("metadata"), f("labels"), f("x")]);
        let i = a.intersection(&b);
        assert_eq!(i.paths(), vec![vec![f("spec"), f("replicas")]]);
        let d = a.difference(&b);
        assert_eq!(d.paths(), vec![vec![f("spec"), f("paused")]]);
        assert!(b.difference(&b).is_empty());
        let mut u = a.clone();
        u.union_with(&b);
        assert_eq!(u.paths().len(), 3);
        let mut moved = a.clone();
        moved.absorb(b.clone());
        assert_eq!(moved, u);
    }
}
