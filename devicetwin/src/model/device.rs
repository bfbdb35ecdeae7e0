//! Device: where a device runs, which model it instantiates, how each property is reached
//! and what value the cloud wants it to take.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DeviceKey, DeviceStatus, ObjectMeta};

/// A `devices.kubeedge.io/v1beta1` Device object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Device {
    /// `devices.kubeedge.io/v1beta1`.
    pub api_version: String,
    /// `Device`.
    pub kind: String,
    /// Object metadata; `generation` is the desired version.
    pub metadata: ObjectMeta,
    /// What the device is and what the cloud wants of it.
    pub spec: DeviceSpec,
    /// The twin as last synchronised from the edge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
}

impl Device {
    /// The device's identity, if it has a name.
    pub fn key(&self) -> Option<DeviceKey> {
        self.metadata.key()
    }

    /// `metadata.generation` as an unsigned version (0 when absent or negative).
    pub fn generation(&self) -> u64 {
        self.metadata
            .generation
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or(0)
    }
}

/// The spec of a Device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceSpec {
    /// The DeviceModel (same namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_model_ref: Option<ModelRef>,
    /// The edge node that owns the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Per-property settings and desired values.
    pub properties: Vec<DeviceProperty>,
    /// Device-wide connection settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolConfig>,
    /// Named multi-property operations (carried, not interpreted, by kedge).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<DeviceMethod>,
    /// Connection-state reporting policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_report: Option<StateReportConfig>,
}

impl DeviceSpec {
    /// The DeviceModel name, if set and non-empty.
    pub fn model_name(&self) -> Option<&str> {
        self.device_model_ref
            .as_ref()
            .map(|r| r.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// The property called `name`, if the spec lists it.
    pub fn property(&self, name: &str) -> Option<&DeviceProperty> {
        self.properties.iter().find(|p| p.name == name)
    }
}

/// Reference to a DeviceModel by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelRef {
    /// DeviceModel name.
    pub name: String,
}

/// One property of a Device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceProperty {
    /// Property name (matches the DeviceModel's).
    pub name: String,
    /// Value the cloud wants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredSpec>,
    /// How a driver or mapper reaches the property.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visitors: Option<Visitors>,
    /// Push interval in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Read interval in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collect_cycle: Option<i64>,
    /// Whether reported values go to the cloud (absent: yes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    /// Mapper push targets (mqtt, http, databases...); opaque to kedge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_method: Option<Value>,
}

/// A desired value in a Device spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DesiredSpec {
    /// The value, as a string.
    pub value: String,
    /// Free-form annotations; kedge reads `type` and `timestamp` (ms) when present.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Visitor settings: which protocol reaches a property, and its protocol-specific config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Visitors {
    /// Protocol name (`gpio`, `modbus`, or an external mapper's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<String>,
    /// Free JSON interpreted by the driver (e.g. modbus register, offset, limit, scale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_data: Option<Value>,
}

/// Device-wide protocol settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProtocolConfig {
    /// Protocol name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<String>,
    /// Free JSON interpreted by the driver (addresses, serial settings...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_data: Option<Value>,
}

/// A named multi-property operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceMethod {
    /// Method name.
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Properties it controls.
    pub property_names: Vec<String>,
}

/// Connection-state reporting policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StateReportConfig {
    /// Interval in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Whether the state goes to the cloud.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn device_reads_kubeedge_shape_and_ignores_unknown_fields() {
        let d: Device = serde_json::from_value(serde_json::json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": "d", "namespace": "ns", "generation": 4, "annotations": {}},
            "spec": {
                "deviceModelRef": {"name": "m"}, "nodeName": "n1", "unknownTopLevel": [1],
                "properties": [{
                    "name": "temp", "collectCycle": 1000, "reportCycle": 2000, "reportToCloud": true,
                    "desired": {"value": "30", "metadata": {"type": "int"}},
                    "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": 2}},
                    "pushMethod": {"mqtt": {"topic": "t"}}
                }],
                "protocol": {"protocolName": "modbus", "configData": {"port": 1}},
                "methods": [{"name": "m1", "propertyNames": ["temp"]}],
                "stateReport": {"reportCycle": 5000}
            },
            "status": {"state": "online", "twins": []}
        }))
        .unwrap();
        assert_eq!(d.key(), Some(DeviceKey::new("ns", "d")));
        assert_eq!(d.generation(), 4);
        assert_eq!(d.spec.model_name(), Some("m"));
        let p = d.spec.property("temp").unwrap();
        assert_eq!(p.desired.as_ref().unwrap().value, "30");
        assert_eq!(p.collect_cycle, Some(1000));
        assert!(d.spec.property("nope").is_none());
        assert_eq!(d.spec.methods[0].property_names, ["temp"]);
    }

    #[test]
    fn empty_and_negative_are_tolerated() {
        let d: Device = serde_json::from_value(
            serde_json::json!({"metadata": {"generation": -1}, "spec": {"deviceModelRef": {}}}),
        )
        .unwrap();
        assert_eq!(d.generation(), 0);
        assert_eq!(d.spec.model_name(), None);
        assert_eq!(d.key(), None);
    }
}
