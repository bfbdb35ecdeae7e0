//! One stored version of an object: [`Stored`] — its bytes, and a small copy of the fields
//! selectors read.
//!
//! The store keeps no parsed object tree. A 6 KB pod parsed into a `serde_json::Value`
//! (`preserve_order`: an `IndexMap` and a `String` per key) takes ~45 KiB of heap in ~700
//! allocations; its bytes take 6 KB in one. Lists, watches and GETs send the bytes as they
//! are; writes, tables and admission parse the version they read ([`Stored::value`]), a
//! few microseconds for a pod, and drop the tree when done. What must be cheap for every
//! stored object — label and field selectors on lists and watches — reads
//! [`Stored::fields`]: the name, namespace, labels and the resource's selectable fields.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;

/// One stored version of an object. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Stored(Arc<StoredObj>);

/// The contents of a [`Stored`].
#[derive(Debug)]
pub struct StoredObj {
    /// The object as JSON (lists, watches and GETs send it as it is).
    pub raw: Bytes,
    /// Its resourceVersion.
    pub rv: u64,
    /// What selectors read, built from `raw` on first use (see [`Stored::fields`]).
    fields: OnceLock<SelectorFields>,
    /// The group and plural of the object's resource.
    resource: (&'static str, &'static str),
    /// The object as its protobuf message (see [`Stored::protobuf`]), encoded on first use.
    proto: OnceLock<Option<Bytes>>,
}

/// What label and field selectors read of one object, in one string: its labels (string
/// values) and the value of each of its resource's selectable fields as a field selector
/// sees it ([`crate::selector::builtin_field_value`]). About 0.5 KB for a pod, where the
/// same parts as a `serde_json::Value` take ~3 KB.
#[derive(Debug, Default)]
pub struct SelectorFields {
    text: Box<str>,
    /// `(key, value)` spans in `text`, one per label.
    labels: Box<[(Span, Span)]>,
    /// One span in `text` per name of `names`.
    values: Box<[Span]>,
    /// The selectable field names ([`crate::selector::builtin_fields`]).
    names: &'static [&'static str],
}

type Span = (u32, u32);

impl SelectorFields {
    fn of(value: &Value, (group, plural): (&'static str, &'static str)) -> Self {
        let names = crate::selector::builtin_fields(group, plural);
        let mut text = String::new();
        let mut push = |s: &str| {
            let start = u32::try_from(text.len()).unwrap_or(u32::MAX);
            text.push_str(s);
            (start, u32::try_from(text.len()).unwrap_or(u32::MAX))
        };
        let labels: Vec<(Span, Span)> = value
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((push(k), push(v.as_str()?))))
            .collect();
        let values: Vec<Span> = names
            .iter()
            .map(|n| {
                push(&crate::selector::builtin_field_value(
                    value, group, plural, n,
                ))
            })
            .collect();
        Self {
            text: text.into_boxed_str(),
            labels: labels.into_boxed_slice(),
            values: values.into_boxed_slice(),
            names,
        }
    }

    fn at(&self, (start, end): Span) -> &str {
        self.text.get(start as usize..end as usize).unwrap_or("")
    }

    /// The value of label `key`, if the object has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| self.at(*k) == key)
            .map(|(_, v)| self.at(*v))
    }

    /// The labels, in the object's order.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels.iter().map(|(k, v)| (self.at(*k), self.at(*v)))
    }

    /// The value of selectable field `name` (`""` when absent), or `None` when `name` is
    /// not a selectable field of the resource.
    pub fn field(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.values.get(i).map(|s| self.at(*s))
    }
}

/// The group and plural of the resource a storage key (`<group>/<plural>/<ns>/<name>`,
/// `core` for the core group) belongs to, as static strings for the built-in resources
/// (others: just `""`, which have no selectable fields beyond name and namespace).
fn resource_of(key: &str) -> (&'static str, &'static str) {
    let mut parts = key.splitn(3, '/');
    let group = parts.next().unwrap_or("");
    let plural = parts.next().unwrap_or("");
    let group = if group == "core" { "" } else { group };
    crate::selector::builtin_resource(group, plural).unwrap_or(("", ""))
}

impl Stored {
    /// The version `value` of the object at `key`, serialised.
    pub(super) fn new(value: &Value, key: &str, rv: u64) -> Self {
        let mut raw = serde_json::to_vec(value).unwrap_or_default();
        // `to_vec` grows by doubling: without this a 6.2 KB pod keeps an 8 KB buffer.
        raw.shrink_to_fit();
        let resource = resource_of(key);
        Self(Arc::new(StoredObj {
            raw: Bytes::from(raw),
            rv,
            fields: OnceLock::from(SelectorFields::of(value, resource)),
            resource,
            proto: OnceLock::new(),
        }))
    }

    /// A version of the object at `key` from its bytes (read back from disk).
    pub(super) fn from_bytes(raw: Bytes, key: &str, rv: u64) -> Self {
        Self(Arc::new(StoredObj {
            raw,
            rv,
            fields: OnceLock::new(),
            resource: resource_of(key),
            proto: OnceLock::new(),
        }))
    }

    /// A version that is not in the store (dry runs): its resourceVersion is set to `rv`.
    pub fn detached(mut value: Value, key: &str, rv: u64) -> Self {
        super::set_rv(&mut value, rv);
        Self::new(&value, key, rv)
    }

    /// The object, parsed from its bytes (each call parses again: keep the result while
    /// it is needed). Bytes that do not parse (never written by this server) read as
    /// `null`.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.raw).unwrap_or(Value::Null)
    }

    /// What selectors read: labels, name, namespace and the selectable fields of
    /// built-in resources ([`crate::selector::builtin_fields`]). A selector on other
    /// fields (a CRD's `selectableFields`) must read [`Stored::value`].
    pub fn fields(&self) -> &SelectorFields {
        self.fields
            .get_or_init(|| SelectorFields::of(&self.value(), self.resource))
    }

    /// The object as the protobuf message of `kind` (its resource's), for clients that ask
    /// for protobuf. Encoded on the first call and kept with this version, as the JSON
    /// bytes are: a list of 10,000 pods in protobuf is then a copy of stored bytes, like
    /// its JSON. `None` when the object has a field the message lacks (the caller answers
    /// in JSON).
    pub fn protobuf(&self, kind: &crate::protobuf::ProtoKind) -> Option<&Bytes> {
        self.proto
            .get_or_init(|| match kind.encode(&self.value()) {
                Ok(mut b) => {
                    b.shrink_to_fit();
                    Some(Bytes::from(b))
                }
                Err(e) => {
                    tracing::debug!(kind = kind.kind, reason = %e.0, "answering in JSON, not protobuf");
                    None
                }
            })
            .as_ref()
    }

    /// Do `a` and `b` share one stored version (not merely equal ones)?
    pub fn same(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl std::ops::Deref for Stored {
    type Target = StoredObj;
    fn deref(&self) -> &StoredObj {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_hold_what_selectors_read() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "d", "labels": {"app": "web", "n": 1},
                         "annotations": {"a": "b"}, "managedFields": [{"manager": "m"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "conditions": []}
        });
        let s = Stored::new(&pod, "core/pods/d/p", 7);
        let check = |f: &SelectorFields| {
            assert_eq!(f.labels().collect::<Vec<_>>(), vec![("app", "web")]);
            assert_eq!(f.label("app"), Some("web"));
            assert_eq!(
                f.label("n"),
                None,
                "non-string label values count as absent"
            );
            assert_eq!(f.field("metadata.name"), Some("p"));
            assert_eq!(f.field("metadata.namespace"), Some("d"));
            assert_eq!(f.field("spec.nodeName"), Some("n1"));
            assert_eq!(f.field("status.phase"), Some("Running"));
            assert_eq!(f.field("status.podIP"), Some(""));
            assert_eq!(
                f.field("spec.hostNetwork"),
                Some("false"),
                "Go's zero value"
            );
            assert_eq!(f.field("spec.containers"), None, "not selectable");
        };
        check(s.fields());
        assert_eq!(s.value(), pod);
        // Read back from bytes: the same fields, built on first use.
        check(Stored::from_bytes(s.raw.clone(), "core/pods/d/p", 7).fields());
        // Events select on `source` (its `component`).
        let ev = json!({"metadata": {"name": "e"}, "source": {"component": "kubelet"}});
        let e = Stored::new(&ev, "core/events/d/e", 1);
        assert_eq!(e.fields().field("source"), Some("kubelet"));
        // Another group's resource of the same plural has no pod fields.
        let other = Stored::new(&pod, "example.com/pods/d/p", 1);
        assert_eq!(other.fields().field("spec.nodeName"), None);
        assert_eq!(other.fields().field("metadata.name"), Some("p"));
    }

    #[test]
    fn bytes_that_do_not_parse_read_as_null() {
        let s = Stored::from_bytes(Bytes::from_static(b"{not json"), "core/pods/d/p", 1);
        assert_eq!(s.value(), Value::Null);
        assert_eq!(s.fields().labels().count(), 0);
        assert_eq!(s.fields().field("metadata.name"), Some(""));
    }
}
