//! Pure builders for what `node_connected` writes: the Node's labels, its status (from the
//! edge's `Hello.info`) and the merge of one condition into the existing list.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::EDGE_ROLE_LABEL;

/// Reason of the Ready=True condition kedge writes.
pub const READY_REASON: &str = "KedgeReady";
/// Reason of Ready=Unknown set by the lifecycle controller.
pub const UNKNOWN_REASON: &str = "NodeStatusUnknown";
/// Message of Ready=Unknown (Kubernetes' wording).
pub const UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
/// Pods a node may run when the edge does not report it.
const DEFAULT_MAX_PODS: &str = "110";

/// The labels a connected node carries: the edge role, hostname, OS and architecture, then
/// the edge's own labels (invalid or reserved ones are skipped).
pub fn node_labels(node: &str, info: &proto::NodeInfo) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = info
        .labels
        .iter()
        .filter(|(k, v)| {
            crate::join::validate_labels(&BTreeMap::from([((*k).clone(), (*v).clone())])).is_ok()
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(EDGE_ROLE_LABEL.into(), String::new());
    if crate::join::validate_labels(&BTreeMap::from([("h".into(), node.to_owned())])).is_ok() {
        labels.insert("kubernetes.io/hostname".into(), node.to_owned());
    }
    let os = if info.os.is_empty() {
        "linux"
    } else {
        &info.os
    };
    labels.insert("kubernetes.io/os".into(), os.to_owned());
    labels.insert("beta.kubernetes.io/os".into(), os.to_owned());
    if !info.arch.is_empty() {
        labels.insert("kubernetes.io/arch".into(), info.arch.clone());
        labels.insert("beta.kubernetes.io/arch".into(), info.arch.clone());
    }
    labels
}

/// Whether every label in `wanted` is already on the node with that value.
pub fn labels_present(
    current: Option<&BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
) -> bool {
    wanted
        .iter()
        .all(|(k, v)| current.and_then(|c| c.get(k)) == Some(v))
}

/// A Ready condition (`status` True/False/Unknown) stamped `now` (RFC 3339).
pub fn ready_condition(status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    })
}

/// Merges `cond` into `existing` by `type`. A condition whose status does not change keeps
/// its `lastTransitionTime`; `keep_heartbeat` keeps the old `lastHeartbeatTime` too (the
/// lifecycle controller does not heartbeat for the node).
pub fn merge_condition(existing: &[Value], mut cond: Value, keep_heartbeat: bool) -> Vec<Value> {
    let ty = cond.get("type").cloned().unwrap_or(Value::Null);
    let mut out: Vec<Value> = Vec::with_capacity(existing.len() + 1);
    let mut merged = false;
    for c in existing {
        if c.get("type") != Some(&ty) {
            out.push(c.clone());
            continue;
        }
        if c.get("status") == cond.get("status")
            && let Some(t) = c.get("lastTransitionTime")
        {
            cond["lastTransitionTime"] = t.clone();
        }
        if keep_heartbeat && let Some(h) = c.get("lastHeartbeatTime") {
            cond["lastHeartbeatTime"] = h.clone();
        }
        if !merged {
            out.push(cond.clone());
            merged = true;
        }
    }
    if !merged {
        out.push(cond);
    }
    out
}

/// The status a connected node gets: addresses, capacity/allocatable, nodeInfo and the
/// conditions (`existing` with Ready=True merged in).
pub fn connected_status(
    node: &str,
    info: &proto::NodeInfo,
    existing_conditions: &[Value],
    now: &str,
) -> Value {
    let mut addresses: Vec<Value> = info
        .addresses
        .iter()
        .filter(|a| !a.r#type.is_empty() && !a.address.is_empty())
        .map(|a| json!({"type": a.r#type, "address": a.address}))
        .collect();
    if !addresses.iter().any(|a| a["type"] == "Hostname") {
        addresses.push(json!({"type": "Hostname", "address": node}));
    }
    let mut capacity: BTreeMap<String, String> = info.capacity.clone().into_iter().collect();
    capacity
        .entry("pods".into())
        .or_insert_with(|| DEFAULT_MAX_PODS.into());
    let mut allocatable: BTreeMap<String, String> = if info.allocatable.is_empty() {
        capacity.clone()
    } else {
        info.allocatable.clone().into_iter().collect()
    };
    allocatable
        .entry("pods".into())
        .or_insert_with(|| capacity.get("pods").cloned().unwrap_or_default());
    let ready = ready_condition(
        "True",
        READY_REASON,
        "edgecore is connected and posting status",
        now,
    );
    json!({
        "addresses": addresses,
        "capacity": capacity,
        "allocatable": allocatable,
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": info.kernel_version,
            "osImage": info.os_image,
            "containerRuntimeVersion": info.container_runtime_version,
            "kubeletVersion": info.agent_version,
            "kubeProxyVersion": "",
            "operatingSystem": if info.os.is_empty() { "linux" } else { info.os.as_str() },
            "architecture": info.arch,
        },
        "conditions": merge_condition(existing_conditions, ready, false),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info() -> proto::NodeInfo {
        proto::NodeInfo {
            os: "linux".into(),
            arch: "arm64".into(),
            kernel_version: "6.1.0".into(),
            agent_version: "v0.1.0".into(),
            capacity: [("cpu".to_owned(), "4".to_owned())].into(),
            addresses: vec![proto::NodeAddress {
                r#type: "InternalIP".into(),
                address: "10.0.0.5".into(),
            }],
            labels: [
                ("site".to_owned(), "lab".to_owned()),
                ("bad key!".to_owned(), "x".to_owned()),
                ("kedge.io/x".to_owned(), "y".to_owned()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn labels_include_role_platform_and_valid_edge_labels() {
        let l = node_labels("edge-1", &info());
        assert_eq!(l.get(EDGE_ROLE_LABEL).map(String::as_str), Some(""));
        assert_eq!(l["kubernetes.io/hostname"], "edge-1");
        assert_eq!(l["kubernetes.io/arch"], "arm64");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["site"], "lab");
        assert!(!l.contains_key("bad key!") && !l.contains_key("kedge.io/x"));
        assert!(labels_present(Some(&l), &l));
        assert!(!labels_present(None, &l));
    }

    #[test]
    fn status_is_built_from_the_hello() {
        let s = connected_status("edge-1", &info(), &[], "2025-01-01T00:00:00Z");
        assert_eq!(s["capacity"]["cpu"], "4");
        assert_eq!(s["capacity"]["pods"], "110");
        assert_eq!(s["allocatable"]["cpu"], "4");
        assert_eq!(s["nodeInfo"]["architecture"], "arm64");
        assert_eq!(s["nodeInfo"]["kubeletVersion"], "v0.1.0");
        assert_eq!(s["addresses"][0]["address"], "10.0.0.5");
        assert_eq!(s["addresses"][1]["type"], "Hostname");
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(s["conditions"][0]["reason"], READY_REASON);
    }

    #[test]
    fn merging_keeps_other_conditions_and_transition_times() {
        let runtime = json!({"type": "RuntimeReady", "status": "False"});
        let old = ready_condition("True", READY_REASON, "", "t0");
        let merged = merge_condition(
            &[runtime.clone(), old],
            ready_condition("True", READY_REASON, "", "t1"),
            false,
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0], runtime);
        assert_eq!(merged[1]["lastTransitionTime"], "t0");
        assert_eq!(merged[1]["lastHeartbeatTime"], "t1");
        let unknown = merge_condition(
            &merged,
            ready_condition("Unknown", UNKNOWN_REASON, UNKNOWN_MESSAGE, "t2"),
            true,
        );
        assert_eq!(unknown[1]["lastTransitionTime"], "t2");
        assert_eq!(unknown[1]["lastHeartbeatTime"], "t1");
        assert_eq!(unknown[1]["message"], UNKNOWN_MESSAGE);
    }
}
