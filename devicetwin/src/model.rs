//! Kubernetes-side types: the `devices.kubeedge.io/v1beta1` Device and DeviceModel objects as
//! kedge reads them, and the Device status kedge writes.
//!
//! Start with [`Device`] and [`DeviceModel`]. The spec types follow KubeEdge's v1beta1 shape so
//! existing YAML deserialises unchanged; unknown fields are ignored on read (kedge never writes
//! a spec from these types, so nothing is lost: cloudcore patches the raw JSON, see
//! [`crate::shadow::DesiredPatch::apply_to_spec`]). Free-form protocol settings stay
//! [`serde_json::Value`] because only the driver that owns a protocol can interpret them.
//! The CRDs that admit these objects live in `deploy/crds/`.

mod device;
mod device_model;
mod status;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use device::{
    DesiredSpec, Device, DeviceMethod, DeviceProperty, DeviceSpec, ModelRef, ProtocolConfig,
    StateReportConfig, Visitors,
};
pub(crate) use device_model::parse_bool;
pub use device_model::{
    AccessMode, DeviceModel, DeviceModelSpec, ModelError, ModelProperty, PropertyType, UnknownType,
    ValueError, check_value_len,
};
pub(crate) use status::saturating_i64;
pub use status::{
    DesiredRefusal, DeviceState, DeviceStatus, Twin, TwinMetadata, TwinValue, rfc3339_from_millis,
};

/// The API group of Device and DeviceModel.
pub const GROUP: &str = "devices.kubeedge.io";
/// The served and stored version of Device and DeviceModel.
pub const VERSION: &str = "v1beta1";
/// The namespace a device gets when nothing names one (legacy topics, objects without one).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Identity of a device: its namespace and name. Orders by namespace, then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceKey {
    /// Kubernetes namespace of the Device.
    pub namespace: String,
    /// `metadata.name` of the Device.
    pub name: String,
}

impl DeviceKey {
    /// A key from a namespace and a name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `ns/name`; a bare `name` lands in [`DEFAULT_NAMESPACE`]. `None` when a part is
    /// empty or there are more than two parts.
    pub fn parse(id: &str) -> Option<Self> {
        let mut parts = id.split('/');
        let (ns, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, None) => (DEFAULT_NAMESPACE, name),
            (Some(ns), Some(name), None) => (ns, name),
            _ => return None,
        };
        if ns.is_empty() || name.is_empty() {
            return None;
        }
        Some(Self::new(ns, name))
    }
}

/// `ns/name`, the device id kedge uses in membership payloads (which makes KubeEdge mappers
/// that format `.../device/{id}/...` land on the namespaced topic form).
impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The part of Kubernetes `ObjectMeta` kedge's device logic reads. Other fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// Object name.
    pub name: Option<String>,
    /// Namespace; `None` reads as [`DEFAULT_NAMESPACE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Object UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Spec generation; kedge's desired version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Opaque storage version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl ObjectMeta {
    /// The [`DeviceKey`] of the object, if it has a name.
    pub fn key(&self) -> Option<DeviceKey> {
        let name = self.name.as_deref().filter(|n| !n.is_empty())?;
        let ns = self
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE);
        Some(DeviceKey::new(ns, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_key_parse_and_display() {
        assert_eq!(DeviceKey::parse("a/b"), Some(DeviceKey::new("a", "b")));
        assert_eq!(DeviceKey::parse("b"), Some(DeviceKey::new("default", "b")));
        assert_eq!(DeviceKey::parse(""), None);
        assert_eq!(DeviceKey::parse("a/"), None);
        assert_eq!(DeviceKey::parse("/b"), None);
        assert_eq!(DeviceKey::parse("a/b/c"), None);
        assert_eq!(DeviceKey::new("ns", "x").to_string(), "ns/x");
    }

    #[test]
    fn meta_key_defaults_namespace() {
        let meta = ObjectMeta {
            name: Some("x".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(meta.key(), Some(DeviceKey::new("default", "x")));
        assert_eq!(ObjectMeta::default().key(), None);
    }
}
