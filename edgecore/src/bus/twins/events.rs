//! Kubernetes Events about devices, written at the edge and sent up the link like the pods'
//! Events (cloudcore admits an Event whose `involvedObject` is one of the node's Devices).
//!
//! Today there is one: `Warning InvalidDesired`, when a desired value set in the cloud is
//! refused against the DeviceModel. It is emitted once per distinct refusal (property,
//! value, reason), not on every resync or status write: the status's `desiredRefusals`
//! remembers what was announced, across restarts too (it comes back with the Device).

use devicetwin::Device;
use devicetwin::model::{DesiredRefusal, GROUP, VERSION, rfc3339_from_millis};
use serde_json::{Value, json};

/// The Event reason for a refused cloud desired value.
pub const INVALID_DESIRED: &str = "InvalidDesired";

/// Whether `r` is already among the refusals `before` (same property, value and reason).
pub(super) fn known(before: &[DesiredRefusal], r: &DesiredRefusal) -> bool {
    before
        .iter()
        .any(|b| b.property_name == r.property_name && b.value == r.value && b.reason == r.reason)
}

/// The `Warning InvalidDesired` Event about `device` for refusal `r`, written by `node`.
pub(super) fn invalid_desired(
    device: &Device,
    node: &str,
    r: &DesiredRefusal,
    now_ms: i64,
) -> Value {
    let m = &device.metadata;
    let name = m.name.as_deref().unwrap_or_default();
    let namespace = m
        .namespace
        .as_deref()
        .unwrap_or(devicetwin::model::DEFAULT_NAMESPACE);
    let at = rfc3339_from_millis(now_ms);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            // Unique per refusal: the kubelet's `<object>.<hex time>` with a random tail.
            "name": format!("{name}.{:x}", now_ms.unsigned_abs() * 1000 + u64::from(rand::random::<u16>() % 1000)),
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "Device",
            "name": name,
            "namespace": namespace,
            "uid": m.uid,
            "fieldPath": format!("spec.properties{{{}}}", r.property_name),
        },
        "reason": INVALID_DESIRED,
        "message": format!("{} ({})", r.message, r.reason),
        "type": "Warning",
        "source": {"component": "edgecore", "host": node},
        "reportingComponent": "kedge-edgecore",
        "reportingInstance": node,
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
    })
}
