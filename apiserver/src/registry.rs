//! Which resources the server serves: the built-in kinds and, live, every served version of
//! every established CustomResourceDefinition.
//!
//! Handlers resolve a URL's (group, version, plural) to a [`Resource`] here; discovery and
//! the OpenAPI documents are generated from the same list, so they never disagree with what
//! the handlers accept.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::builtin;
use crate::table::PrinterColumn;

/// Where a resource's definition comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Compiled in; `definition` names its schema in `schema`'s built-in definitions.
    Builtin { definition: &'static str },
    /// Registered by a CustomResourceDefinition.
    Custom(Arc<CustomVersion>),
}

/// What a CRD says about one of its served versions.
#[derive(Debug)]
pub struct CustomVersion {
    /// The CRD's name (`<plural>.<group>`).
    pub crd_name: String,
    /// `openAPIV3Schema` of this version (`{}` when absent).
    pub schema: Value,
    /// `additionalPrinterColumns`.
    pub printer_columns: Vec<PrinterColumn>,
    /// Field names usable in field selectors (`spec.nodeName`), from `selectableFields`.
    pub selectable_fields: Vec<String>,
    /// True for the storage version.
    pub storage: bool,
}

/// One served resource (a group/version/plural).
#[derive(Debug, Clone)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `status` subresource (main-resource writes then ignore `.status`).
    pub has_status: bool,
    pub origin: Origin,
}

impl Resource {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key prefix of all its objects: `<group>/<plural>/` (`core` for "").
    pub fn prefix(&self) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("{g}/{}/", self.plural)
    }

    /// Storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{}/{}", self.prefix(), namespace.unwrap_or(""), name)
    }

    /// True for custom resources.
    pub fn is_custom(&self) -> bool {
        matches!(self.origin, Origin::Custom(_))
    }

    /// The verbs discovery advertises.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Field names supported by field selectors on this resource.
    pub fn selectable_fields(&self) -> Vec<String> {
        let mut out = vec![
            "metadata.name".to_string(),
            "metadata.namespace".to_string(),
        ];
        match &self.origin {
            Origin::Builtin { .. } => out.extend(
                crate::selector::builtin_fields(&self.group, &self.plural)
                    .iter()
                    .map(|s| s.to_string()),
            ),
            Origin::Custom(cv) => out.extend(cv.selectable_fields.iter().cloned()),
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The set of served resources. Cheap to read concurrently.
#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (group, version, plural) -> resource.
    by_path: BTreeMap<(String, String, String), Arc<Resource>>,
    /// crd name -> the keys it registered.
    crds: BTreeMap<String, Vec<(String, String, String)>>,
}

impl Registry {
    /// A registry holding every built-in kind.
    pub fn with_builtins() -> Self {
        let reg = Self::default();
        {
            let mut inner = reg.write();
            for b in builtin::all() {
                let r = Resource {
                    group: b.group.to_string(),
                    version: b.version.to_string(),
                    kind: b.kind.to_string(),
                    list_kind: format!("{}List", b.kind),
                    plural: b.plural.to_string(),
                    singular: b.kind.to_lowercase(),
                    namespaced: b.namespaced,
                    short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                    categories: b.categories.iter().map(|s| s.to_string()).collect(),
                    has_status: b.has_status,
                    origin: Origin::Builtin {
                        definition: b.definition,
                    },
                };
                inner.by_path.insert(
                    (r.group.clone(), r.version.clone(), r.plural.clone()),
                    Arc::new(r),
                );
            }
        }
        reg
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource served at `/apis/<group>/<version>/<plural>`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.read()
            .by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// The resource of `apiVersion` + `kind`.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<Resource>> {
        self.read()
            .by_path
            .values()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
    }

    /// Every resource, sorted by group, version, plural.
    pub fn all(&self) -> Vec<Arc<Resource>> {
        self.read().by_path.values().cloned().collect()
    }

    /// Group → versions (preferred first: the storage version for CRDs, else the only one).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let inner = self.read();
        let mut out: BTreeMap<String, Vec<(bool, String)>> = BTreeMap::new();
        for r in inner.by_path.values() {
            let pref = match &r.origin {
                Origin::Custom(cv) => cv.storage,
                Origin::Builtin { .. } => true,
            };
            let e = out.entry(r.group.clone()).or_default();
            if !e.iter().any(|(_, v)| v == &r.version) {
                e.push((pref, r.version.clone()));
            }
        }
        out.into_iter()
            .map(|(g, mut vs)| {
                vs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| version_order(&b.1, &a.1)));
                (g, vs.into_iter().map(|(_, v)| v).collect())
            })
            .collect()
    }

    /// The resource another version of the same group/plural stores under, if any
    /// (custom resources with several versions share one storage key).
    pub fn register_crd(&self, crd_name: &str, resources: Vec<Resource>) {
        let mut inner = self.write();
        if let Some(old) = inner.crds.remove(crd_name) {
            for k in old {
                inner.by_path.remove(&k);
            }
        }
        let mut keys = Vec::new();
        for r in resources {
            let k = (r.group.clone(), r.version.clone(), r.plural.clone());
            keys.push(k.clone());
            inner.by_path.insert(k, Arc::new(r));
        }
        inner.crds.insert(crd_name.to_string(), keys);
    }

    /// Stop serving a CRD's resources.
    pub fn unregister_crd(&self, crd_name: &str) {
        let mut inner = self.write();
        if let Some(old) = inner.crds.remove(crd_name) {
            for k in old {
                inner.by_path.remove(&k);
            }
        }
    }

    /// Names (plural, singular, kind, short names) already taken in `group` by resources
    /// other than `crd_name`'s, for the NamesAccepted condition.
    pub fn names_taken(&self, group: &str, crd_name: &str) -> Vec<String> {
        let inner = self.read();
        let own: Vec<_> = inner.crds.get(crd_name).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for (k, r) in &inner.by_path {
            if r.group != group || own.contains(k) {
                continue;
            }
            out.push(r.plural.clone());
            out.push(r.singular.clone());
            out.push(r.kind.clone());
            out.extend(r.short_names.iter().cloned());
        }
        out
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn rank(v: &str) -> (u8, u64, u64) {
        let Some(rest) = v.strip_prefix('v') else {
            return (0, 0, 0);
        };
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major = digits.parse().unwrap_or(0);
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return (3, major, 0);
        }
        let (stage, num) = if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return (0, 0, 0);
        };
        (stage, major, num.parse().unwrap_or(0))
    }
    rank(a).cmp(&rank(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_priority() {
        let mut v = vec!["v1alpha1", "v2", "v1beta2", "v1", "v1beta1"];
        v.sort_by(|a, b| version_order(b, a));
        assert_eq!(v, vec!["v2", "v1", "v1beta2", "v1beta1", "v1alpha1"]);
    }
}
