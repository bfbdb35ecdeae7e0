//! `cloudcore nodes`: the edge nodes as an operator wants to see them — Ready or not,
//! connected to a hub or not, when they last checked in, what they run — read from the
//! Kubernetes API alone, so it works against any cloudcore replica's cluster.
//!
//! "Connected" is the same liveness the node-lifecycle logic uses (`lifecycle.rs`): the
//! node's Lease in `kube-node-lease` is renewed every few seconds while the edge's session
//! to a hub is up (by the edge through its session, or by the hub for an edge that does
//! not), so a Lease younger than its `leaseDurationSeconds` means connected — unless the
//! node-lifecycle controller already set Ready=Unknown (its grace period can be shorter than
//! the Lease's duration). [`rows`] decides everything from the objects and the time, with
//! no IO; [`list`] fetches them.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::lifecycle::{EDGE_ROLE_LABEL, LEASE_DURATION_SECS, LEASE_NAMESPACE};

/// One edge node as `cloudcore nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// `Ready`, `NotReady` or `Unknown` (the Ready condition), plus
    /// `,SchedulingDisabled` when cordoned.
    pub status: String,
    /// Whether the node's Lease is fresh: its session to a hub is up.
    pub connected: bool,
    /// The Lease's last renewal (RFC 3339), or the Ready condition's heartbeat without one.
    pub last_heartbeat: Option<String>,
    /// Seconds since [`NodeRow::last_heartbeat`].
    pub heartbeat_age_seconds: Option<i64>,
    /// edgecore's version (`nodeInfo.kubeletVersion`).
    pub version: String,
    /// Container runtime (`nodeInfo.containerRuntimeVersion`).
    pub runtime: String,
    /// `os/arch`.
    pub platform: String,
    /// InternalIP addresses.
    pub internal_ips: Vec<String>,
    /// When the Node was created (RFC 3339).
    pub created: Option<String>,
    /// Seconds since creation.
    pub age_seconds: Option<i64>,
    /// Lifecycle and other taints, `key:effect`.
    pub taints: Vec<String>,
}

/// Why `cloudcore nodes` failed.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// Listing Nodes or Leases failed.
    #[error("listing {what}: {source}")]
    List {
        /// What was listed.
        what: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Fetch the edge Nodes (or every Node with `all`) and their Leases, and build the rows.
pub async fn list(client: kube::Client, all: bool) -> Result<Vec<NodeRow>, NodesError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = if all {
        ListParams::default()
    } else {
        ListParams::default().labels(EDGE_ROLE_LABEL)
    };
    let nodes = nodes
        .list(&params)
        .await
        .map_err(|source| NodesError::List {
            what: "nodes",
            source,
        })?
        .items;
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let leases = match leases.list(&ListParams::default()).await {
        Ok(l) => l.items,
        // Without Lease access (a read-only operator), fall back to the Ready heartbeat.
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => Vec::new(),
        Err(source) => {
            return Err(NodesError::List {
                what: "node leases",
                source,
            });
        }
    };
    Ok(rows(&nodes, &leases, chrono::Utc::now().timestamp()))
}

/// The rows for `nodes` (sorted by name) given their `leases`, at Unix time `now`.
pub fn rows(nodes: &[Node], leases: &[Lease], now: i64) -> Vec<NodeRow> {
    let renewals: BTreeMap<&str, (i64, i64)> = leases
        .iter()
        .filter_map(|l| {
            let name = l.metadata.name.as_deref()?;
            let spec = l.spec.as_ref()?;
            let renewed = spec.renew_time.as_ref()?.0.as_second();
            let duration = spec
                .lease_duration_seconds
                .map_or(i64::from(LEASE_DURATION_SECS), i64::from);
            Some((name, (renewed, duration)))
        })
        .collect();
    let mut out: Vec<NodeRow> = nodes
        .iter()
        .map(|n| {
            row(
                n,
                renewals.get(n.metadata.name.as_deref().unwrap_or("")),
                now,
            )
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn row(node: &Node, lease: Option<&(i64, i64)>, now: i64) -> NodeRow {
    let status = node.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Ready");
    let mut state = match ready.map(|c| c.status.as_str()) {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    }
    .to_owned();
    let spec = node.spec.clone().unwrap_or_default();
    if spec.unschedulable == Some(true) {
        state.push_str(",SchedulingDisabled");
    }
    let heartbeat = lease.map(|(renewed, _)| *renewed).or_else(|| {
        ready
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.as_second())
    });
    // A Lease within its duration, unless the node-lifecycle controller (whose grace may be
    // shorter) already declared the node Unknown.
    let connected = lease.is_some_and(|(renewed, duration)| now - renewed <= *duration)
        && ready.is_some_and(|c| c.status != "Unknown");
    let info = status.node_info.unwrap_or_default();
    let created = node
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    NodeRow {
        name: node.metadata.name.clone().unwrap_or_default(),
        status: state,
        connected,
        last_heartbeat: heartbeat.map(rfc3339),
        heartbeat_age_seconds: heartbeat.map(|h| (now - h).max(0)),
        version: info.kubelet_version,
        runtime: info.container_runtime_version,
        platform: if info.operating_system.is_empty() {
            String::new()
        } else {
            format!("{}/{}", info.operating_system, info.architecture)
        },
        internal_ips: status
            .addresses
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .collect(),
        created: created.map(rfc3339),
        age_seconds: created.map(|c| (now - c).max(0)),
        taints: spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect(),
    }
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `kubectl`-style age: `45s`, `12m`, `5h`, `3d`.
pub fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// The table columns of one row (keys in display order).
pub fn table_row(r: &NodeRow) -> serde_json::Value {
    let age = |s: Option<i64>| s.map(human_age).unwrap_or_else(|| "<none>".into());
    serde_json::json!({
        "name": r.name,
        "status": r.status,
        "connected": if r.connected { "yes" } else { "no" },
        "lastHeartbeat": r.heartbeat_age_seconds.map(|s| format!("{} ago", human_age(s))),
        "version": r.version,
        "runtime": r.runtime,
        "internalIp": r.internal_ips.join(","),
        "age": age(r.age_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: &str, unschedulable: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"unschedulable": unschedulable, "taints": [
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": ready,
                    "lastHeartbeatTime": "2026-01-01T00:01:00Z"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.7"},
                              {"type": "Hostname", "address": name}],
                "nodeInfo": {"kubeletVersion": "v0.1.0-kedge", "containerRuntimeVersion":
                    "containerd://2.0", "operatingSystem": "linux", "architecture": "arm64",
                    "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                    "osImage": "", "kubeProxyVersion": ""},
            },
        }))
        .unwrap()
    }

    fn lease(name: &str, renewed: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renewed},
        }))
        .unwrap()
    }

    // 2026-01-01T00:02:00Z
    const NOW: i64 = 1_767_225_720;

    #[test]
    fn status_connected_heartbeat_and_facts() {
        let nodes = [
            node("b", "True", false),
            node("a", "Unknown", true),
            node("c", "False", false),
        ];
        let leases = [
            lease("b", "2026-01-01T00:01:50.000000Z"),
            lease("a", "2026-01-01T00:00:30.000000Z"),
        ];
        let r = rows(&nodes, &leases, NOW);
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // a: lease 90 s old > 40 s: disconnected, cordoned.
        assert_eq!(r[0].status, "Unknown,SchedulingDisabled");
        assert!(!r[0].connected);
        assert_eq!(r[0].heartbeat_age_seconds, Some(90));
        // b: fresh lease.
        assert_eq!(r[1].status, "Ready");
        assert!(r[1].connected);
        assert_eq!(r[1].last_heartbeat.as_deref(), Some("2026-01-01T00:01:50Z"));
        assert_eq!(r[1].version, "v0.1.0-kedge");
        assert_eq!(r[1].platform, "linux/arm64");
        assert_eq!(r[1].internal_ips, ["10.0.0.7"]);
        assert_eq!(r[1].age_seconds, Some(120));
        assert_eq!(r[1].taints, ["node.kubernetes.io/unreachable:NoExecute"]);
        // c: no lease: not connected, heartbeat from the Ready condition.
        assert_eq!(r[2].status, "NotReady");
        assert!(!r[2].connected);
        assert_eq!(r[2].heartbeat_age_seconds, Some(60));
    }

    #[test]
    fn a_fresh_lease_of_a_node_declared_unknown_is_not_connected() {
        let r = rows(
            &[node("a", "Unknown", false)],
            &[lease("a", "2026-01-01T00:01:55.000000Z")],
            NOW,
        );
        assert!(!r[0].connected, "{r:?}");
        assert_eq!(r[0].heartbeat_age_seconds, Some(5));
    }

    #[test]
    fn table_columns_and_ages() {
        let r = rows(&[node("b", "True", false)], &[], NOW);
        let t = table_row(&r[0]);
        let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "name",
                "status",
                "connected",
                "lastHeartbeat",
                "version",
                "runtime",
                "internalIp",
                "age"
            ]
        );
        assert_eq!(t["connected"], "no");
        assert_eq!(t["lastHeartbeat"], "60s ago");
        assert_eq!(human_age(3 * 86_400 + 5), "3d");
        assert_eq!(human_age(7_199), "119m");
    }
}
