//! Resource keys in KubeEdge's convention: `<namespace>/<kind>/<name>`
//! (`default/pod/nginx`), with the literal namespace `null` for cluster-scoped
//! objects (`null/node/edge-1`). The kind is the Kubernetes kind lower-cased
//! (`pod`, `configmap`, `secret`, `node`, `lease`, `device`, `devicemodel`,
//! `event`).
//!
//! Start at [`ResourceKey`]; [`ObjectIdentity::from_json`] derives key, uid
//! and resourceVersion from an object's JSON. A namespace literally named
//! `null` cannot be expressed (KubeEdge has the same limit) and is refused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The namespace segment used for cluster-scoped objects.
pub const CLUSTER_SCOPE: &str = "null";
/// Longest namespace (a DNS label).
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Longest lower-cased kind.
pub const MAX_KIND_LEN: usize = 63;
/// Longest object name (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;

/// Why a key (or an object's JSON) does not make a valid resource key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The string does not have the expected number of `/`-separated parts.
    #[error("resource key {key:?} must have {expected} '/'-separated parts")]
    Parts {
        /// The offending input (truncated to 100 bytes).
        key: String,
        /// 3 for an object key, 2 for a collection key.
        expected: usize,
    },
    /// A part is empty.
    #[error("resource key {part} is empty")]
    Empty {
        /// `"namespace"`, `"kind"` or `"name"`.
        part: &'static str,
    },
    /// A part is longer than allowed.
    #[error("resource key {part} is {len} bytes, more than {max}")]
    TooLong {
        /// `"namespace"`, `"kind"` or `"name"`.
        part: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A part contains a character it may not.
    #[error("resource key {part} contains invalid character {ch:?}")]
    InvalidChar {
        /// `"namespace"`, `"kind"` or `"name"`.
        part: &'static str,
        /// The first offending character.
        ch: char,
    },
    /// A name of `.` or `..`, or the namespace `null` given explicitly.
    #[error("resource key {part} {value:?} is reserved")]
    Reserved {
        /// `"namespace"` or `"name"`.
        part: &'static str,
        /// The reserved value.
        value: String,
    },
    /// The object JSON lacks a field the key needs.
    #[error("object JSON has no {field}")]
    MissingField {
        /// Dotted path of the field, e.g. `metadata.name`.
        field: &'static str,
    },
    /// The bytes are not a JSON object of the expected shape.
    #[error("object JSON is invalid")]
    Json(#[source] serde_json::Error),
}

impl KeyError {
    /// Stable label for metrics and `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::Parts { .. } => "key_parts",
            KeyError::Empty { .. } => "key_empty",
            KeyError::TooLong { .. } => "key_too_long",
            KeyError::InvalidChar { .. } => "key_invalid_char",
            KeyError::Reserved { .. } => "key_reserved",
            KeyError::MissingField { .. } => "object_missing_field",
            KeyError::Json(_) => "object_invalid_json",
        }
    }
}

/// The key of one Kubernetes object: `<namespace>/<kind>/<name>`.
///
/// Fields are public for pattern matching; values built by hand should be
/// checked with [`ResourceKey::validate`] (the constructors do it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// Namespace; `None` for cluster-scoped objects (written `null`).
    pub namespace: Option<String>,
    /// Lower-cased kind, `[a-z0-9]+`, e.g. `configmap`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
}

impl ResourceKey {
    /// Builds and validates a key. `kind` is lower-cased first.
    pub fn new(
        namespace: Option<&str>,
        kind: impl AsRef<str>,
        name: impl Into<String>,
    ) -> Result<Self, KeyError> {
        let key = ResourceKey {
            namespace: namespace.map(str::to_owned),
            kind: kind.as_ref().to_ascii_lowercase(),
            name: name.into(),
        };
        key.validate()?;
        Ok(key)
    }

    /// Key of a namespaced object.
    pub fn namespaced(
        namespace: &str,
        kind: impl AsRef<str>,
        name: impl Into<String>,
    ) -> Result<Self, KeyError> {
        Self::new(Some(namespace), kind, name)
    }

    /// Key of a cluster-scoped object (`null/<kind>/<name>`).
    pub fn cluster(kind: impl AsRef<str>, name: impl Into<String>) -> Result<Self, KeyError> {
        Self::new(None, kind, name)
    }

    /// Parses `<namespace>/<kind>/<name>`; `null` namespace means cluster scope.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let mut parts = s.split('/');
        let (Some(ns), Some(kind), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(parts_error(s, 3));
        };
        let key = ResourceKey {
            namespace: (ns != CLUSTER_SCOPE).then(|| ns.to_owned()),
            kind: kind.to_owned(),
            name: name.to_owned(),
        };
        key.validate()?;
        Ok(key)
    }

    /// Checks every part against the rules in the module docs.
    pub fn validate(&self) -> Result<(), KeyError> {
        if let Some(ns) = &self.namespace {
            validate_namespace(ns)?;
        }
        validate_kind(&self.kind)?;
        validate_name(&self.name)
    }

    /// True for cluster-scoped objects.
    pub fn is_cluster_scoped(&self) -> bool {
        self.namespace.is_none()
    }

    /// The namespace segment as written in the key (`null` for cluster scope).
    pub fn namespace_segment(&self) -> &str {
        self.namespace.as_deref().unwrap_or(CLUSTER_SCOPE)
    }

    /// The collection (`<namespace>/<kind>`) this object belongs to.
    pub fn collection(&self) -> CollectionKey {
        CollectionKey {
            namespace: self.namespace.clone(),
            kind: self.kind.clone(),
        }
    }

    /// Key of an object given as JSON bytes (`kind`, `metadata.name`,
    /// `metadata.namespace`). Only those fields are read.
    pub fn from_json(json: &[u8]) -> Result<Self, KeyError> {
        Ok(ObjectIdentity::from_json(json)?.key)
    }

    /// Key of an object given as a parsed JSON value.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, KeyError> {
        Ok(ObjectIdentity::from_value(value)?.key)
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace_segment(),
            self.kind,
            self.name
        )
    }
}

impl FromStr for ResourceKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ResourceKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A collection of objects, `<namespace>/<kind>` (the target of a "list").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionKey {
    /// Namespace; `None` (written `null`) for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// Lower-cased kind.
    pub kind: String,
}

impl CollectionKey {
    /// Parses `<namespace>/<kind>`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let mut parts = s.split('/');
        let (Some(ns), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(parts_error(s, 2));
        };
        if ns != CLUSTER_SCOPE {
            validate_namespace(ns)?;
        }
        validate_kind(kind)?;
        Ok(CollectionKey {
            namespace: (ns != CLUSTER_SCOPE).then(|| ns.to_owned()),
            kind: kind.to_owned(),
        })
    }
}

impl fmt::Display for CollectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.namespace.as_deref().unwrap_or(CLUSTER_SCOPE);
        write!(f, "{ns}/{}", self.kind)
    }
}

/// What identifies one stored object: key, uid and resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    /// The object's key.
    pub key: ResourceKey,
    /// `metadata.uid` (empty if absent).
    pub uid: String,
    /// `metadata.resourceVersion` (empty if absent).
    pub resource_version: String,
}

/// The few fields read from an object's JSON; everything else is skipped.
#[derive(Deserialize)]
struct Head {
    kind: Option<String>,
    metadata: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

impl ObjectIdentity {
    /// Reads `kind` and `metadata.{name,namespace,uid,resourceVersion}` from
    /// object JSON bytes. An absent or empty namespace means cluster scope.
    pub fn from_json(json: &[u8]) -> Result<Self, KeyError> {
        Self::from_head(serde_json::from_slice(json).map_err(KeyError::Json)?)
    }

    /// Same as [`ObjectIdentity::from_json`] for an already parsed value.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, KeyError> {
        Self::from_head(Head::deserialize(value).map_err(KeyError::Json)?)
    }

    fn from_head(head: Head) -> Result<Self, KeyError> {
        let kind = head
            .kind
            .filter(|k| !k.is_empty())
            .ok_or(KeyError::MissingField { field: "kind" })?;
        let meta = head
            .metadata
            .ok_or(KeyError::MissingField { field: "metadata" })?;
        let name = meta
            .name
            .filter(|n| !n.is_empty())
            .ok_or(KeyError::MissingField {
                field: "metadata.name",
            })?;
        let namespace = meta.namespace.filter(|n| !n.is_empty());
        Ok(ObjectIdentity {
            key: ResourceKey::new(namespace.as_deref(), kind, name)?,
            uid: meta.uid.unwrap_or_default(),
            resource_version: meta.resource_version.unwrap_or_default(),
        })
    }
}

fn parts_error(s: &str, expected: usize) -> KeyError {
    KeyError::Parts {
        key: crate::frame::truncate(s, 100),
        expected,
    }
}

fn check_len(part: &'static str, value: &str, max: usize) -> Result<(), KeyError> {
    if value.is_empty() {
        return Err(KeyError::Empty { part });
    }
    if value.len() > max {
        return Err(KeyError::TooLong {
            part,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// A DNS label: `[a-z0-9-]`, not starting or ending with `-`; not `null`.
fn validate_namespace(ns: &str) -> Result<(), KeyError> {
    const PART: &str = "namespace";
    check_len(PART, ns, MAX_NAMESPACE_LEN)?;
    if let Some(ch) = ns
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(KeyError::InvalidChar { part: PART, ch });
    }
    if ns.starts_with('-') || ns.ends_with('-') {
        return Err(KeyError::InvalidChar {
            part: PART,
            ch: '-',
        });
    }
    if ns == CLUSTER_SCOPE {
        return Err(KeyError::Reserved {
            part: PART,
            value: ns.to_owned(),
        });
    }
    Ok(())
}

/// A lower-cased kind: `[a-z0-9]+`.
fn validate_kind(kind: &str) -> Result<(), KeyError> {
    check_len("kind", kind, MAX_KIND_LEN)?;
    match kind
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        Some(ch) => Err(KeyError::InvalidChar { part: "kind", ch }),
        None => Ok(()),
    }
}

/// Any name Kubernetes can put in a URL path segment: no `/`, `%`,
/// whitespace or control characters, and not `.` or `..`.
fn validate_name(name: &str) -> Result<(), KeyError> {
    check_len("name", name, MAX_NAME_LEN)?;
    if let Some(ch) = name
        .chars()
        .find(|c| *c == '/' || *c == '%' || c.is_whitespace() || c.is_control())
    {
        return Err(KeyError::InvalidChar { part: "name", ch });
    }
    if name == "." || name == ".." {
        return Err(KeyError::Reserved {
            part: "name",
            value: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
