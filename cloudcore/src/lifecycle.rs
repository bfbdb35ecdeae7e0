//! Node lifecycle: the Node and Lease of a connected edge, and (in standalone) the emulation
//! of Kubernetes' node-lifecycle controller.
//!
//! - [`node_connected`]: on every (re)connect, create the Node if absent (edge role,
//!   hostname/os/arch and join labels), give it a pod CIDR, renew its Lease, then post its
//!   status (addresses, capacity, nodeInfo, Ready=True `KedgeReady`).
//! - [`heartbeat`]: while connected, renew the Lease (and put Ready back to True if the
//!   controller marked it Unknown during a stall).
//! - [`run_node_lifecycle`]: Ready=Unknown and `unreachable` taints once a Lease is older than
//!   the grace period, taint-based eviction honouring `tolerationSeconds`.
//!
//! Liveness is only ever the Lease's `renewTime`, never "connected to me", so replicas
//! never fight over a node's Ready condition: `cloudcore run` runs no lifecycle controller
//! (kube-controller-manager owns NotReady/Unknown and the taints in a cluster) and writes
//! Ready=True only right after a Lease renewal of a node whose session it holds. Decisions are pure (`decide`, `status`,
//! `cidr`) and unit-tested there.

pub mod cidr;
mod controller;
pub mod decide;
pub mod status;

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

pub use cidr::CidrConfig;
pub use controller::{LifecycleConfig, run_node_lifecycle};

use crate::nodeca::api_status;

/// The label that marks edge nodes.
pub const EDGE_ROLE_LABEL: &str = "node-role.kubernetes.io/edge";
/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `leaseDurationSeconds` of node Leases.
pub const LEASE_DURATION_SECS: i32 = 40;
/// Retries of a read-modify-write that met a conflict.
const MAX_ATTEMPTS: usize = 8;

/// Errors of the lifecycle writes.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// An API call failed.
    #[error("{action} for node {node}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The node.
        node: String,
        #[source]
        source: kube::Error,
    },
    /// No pod CIDR could be allocated.
    #[error("allocating a pod CIDR for node {node}")]
    Cidr {
        /// The node.
        node: String,
        #[source]
        source: cidr::CidrError,
    },
}

fn api_err(action: &'static str, node: &str) -> impl FnOnce(kube::Error) -> LifecycleError {
    let node = node.to_owned();
    move |source| LifecycleError::Api {
        action,
        node,
        source,
    }
}

/// RFC 3339 with microseconds (what `MicroTime` fields carry).
pub fn now_micro() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn now_secs() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Creates or refreshes the Node and its Lease for a node that just connected.
/// `pod_cidr`: the block to use if the Node has none yet; `None` allocates one from the
/// default cluster range (see [`node_connected_with`] to configure it).
pub async fn node_connected(
    client: &Client,
    node: &str,
    hello: &proto::Hello,
    pod_cidr: Option<String>,
) -> anyhow::Result<()> {
    Ok(node_connected_with(client, node, hello, pod_cidr, &CidrConfig::default()).await?)
}

/// [`node_connected`] with an explicit cluster pod range.
pub async fn node_connected_with(
    client: &Client,
    node: &str,
    hello: &proto::Hello,
    pod_cidr: Option<String>,
    cidr_cfg: &CidrConfig,
) -> Result<(), LifecycleError> {
    let source = match pod_cidr.filter(|c| !c.is_empty()) {
        Some(c) => PodCidr::Given(c),
        None => PodCidr::Range(cidr_cfg),
    };
    node_connected_from(client, node, hello, source).await
}

/// Where the pod CIDR of a connecting node whose Node has none comes from.
#[derive(Debug)]
pub enum PodCidr<'a> {
    /// This block.
    Given(String),
    /// A block of this range, claimed alone ([`cidr::allocate`]: reads the claims and
    /// lists every Node per call).
    Range(&'a CidrConfig),
    /// A block from a shared allocator (batched, for many nodes at once). When its range
    /// is exhausted the node is registered without a pod CIDR and a warning says why:
    /// its Node, Lease and Ready must not depend on the address plan.
    Allocator(&'a cidr::Allocator),
}

/// [`node_connected`] with the pod CIDR taken from `cidr`.
pub async fn node_connected_from(
    client: &Client,
    node: &str,
    hello: &proto::Hello,
    cidr: PodCidr<'_>,
) -> Result<(), LifecycleError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let info = hello.info.clone().unwrap_or_default();
    let labels = status::node_labels(node, &info);
    let mut current = ensure_node(&nodes, node, &labels).await?;

    let has_cidr = current
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty());
    if !has_cidr {
        let cidr_err = |source| LifecycleError::Cidr {
            node: node.to_owned(),
            source,
        };
        let cidr = match cidr {
            PodCidr::Given(c) => Some(c),
            PodCidr::Range(cfg) => Some(cidr::allocate(client, node, cfg).await.map_err(cidr_err)?),
            PodCidr::Allocator(a) => match a.allocate(node).await {
                Ok(c) => Some(c),
                Err(e @ cidr::CidrError::Exhausted(_)) => {
                    tracing::warn!(node, error = %e, "no pod CIDR for this node; registering it without one");
                    None
                }
                Err(e) => return Err(cidr_err(e)),
            },
        };
        if let Some(cidr) = cidr {
            let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
            current = nodes
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err("setting the pod CIDR", node))?;
        }
    }

    // The Lease first: Ready=True is only ever written after a successful renewal, so a
    // replica whose API calls fail never claims a node it cannot keep alive.
    let uid = current.metadata.uid.clone();
    renew_lease_for(client, node, uid.as_deref()).await?;
    update_status(&nodes, node, current, |conditions| {
        Some(status::connected_status(
            node,
            &info,
            conditions,
            &now_secs(),
        ))
    })
    .await
}

/// Renews the node's Lease and then, if its Ready condition is not True (the lifecycle
/// controller marked it Unknown during a stall), sets it back to True. Call periodically
/// (e.g. every 10 s) while the node is connected.
///
/// This and [`node_connected`] are the only places cloudcore writes Ready, always True and
/// always right after renewing the Lease: with several replicas, whichever holds the
/// node's session keeps it alive, and a replica that lost the session simply stops
/// renewing — none ever writes NotReady/Unknown (that is the node-lifecycle controller's
/// job, judged by the Lease's age).
pub async fn heartbeat(client: &Client, node: &str) -> Result<(), LifecycleError> {
    heartbeat_checked(client, node, true).await.map(drop)
}

/// What a full heartbeat learnt: the Node's UID (`None`: no Node) and when it was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChecked {
    /// The Node's UID at the check (the Lease's owner).
    pub uid: Option<String>,
    /// When the Node was read and found Ready (or made Ready).
    pub at: std::time::Instant,
}

/// Who renews the node's Lease while its session is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRenewal {
    /// The hub renews it on every heartbeat.
    Hub,
    /// The edge renewed it itself through the session within the last heartbeat interval
    /// (edgecore does, as the kubelet does): the hub only checks the Node.
    Edge,
}

/// [`heartbeat`] that skips reading the Node while `last` is younger than `fresh_for`, and
/// skips the Lease when the edge renews it itself. A node whose Lease was renewed within
/// the grace cannot have been marked Unknown by a lifecycle controller, so reading the
/// whole Node on every renewal (a GET and a parse of a few KB, per node, every ~15 s) only
/// re-confirms what the last full heartbeat saw; the caller drops `last` when a renewal
/// fails, and a full check every `fresh_for` heals anything else (a condition edited by
/// hand). Returns the check now in force and whether this call wrote or read anything
/// (`false`: nothing was due — the edge renews the Lease and the last check is fresh).
pub async fn heartbeat_with(
    client: &Client,
    node: &str,
    last: Option<&NodeChecked>,
    fresh_for: std::time::Duration,
    lease: LeaseRenewal,
) -> Result<(NodeChecked, bool), LifecycleError> {
    let renew = lease == LeaseRenewal::Hub;
    match last {
        Some(last) if last.at.elapsed() < fresh_for => {
            if renew {
                renew_lease_for(client, node, last.uid.as_deref()).await?;
            }
            Ok((last.clone(), renew))
        }
        _ => heartbeat_checked(client, node, renew)
            .await
            .map(|c| (c, true)),
    }
}

async fn heartbeat_checked(
    client: &Client,
    node: &str,
    renew: bool,
) -> Result<NodeChecked, LifecycleError> {
    let at = std::time::Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(current) = nodes
        .get_opt(node)
        .await
        .map_err(api_err("reading the Node", node))?
    else {
        if renew {
            renew_lease_for(client, node, None).await?;
        }
        return Ok(NodeChecked { uid: None, at });
    };
    let uid = current.metadata.uid.clone();
    if renew {
        renew_lease_for(client, node, uid.as_deref()).await?;
    }
    if ready_status(&current) != Some("True") {
        update_status(&nodes, node, current, |conditions| {
            let ready = status::ready_condition(
                "True",
                status::READY_REASON,
                "edgecore is connected and posting status",
                &now_secs(),
            );
            Some(json!({"conditions": status::merge_condition(conditions, ready, false)}))
        })
        .await?;
    }
    Ok(NodeChecked { uid, at })
}

/// Creates or renews `kube-node-lease/<node>` (holder = node, 40 s, renewTime now).
pub async fn renew_lease(client: &Client, node: &str) -> Result<(), LifecycleError> {
    renew_lease_for(client, node, None).await
}

async fn renew_lease_for(
    client: &Client,
    node: &str,
    node_uid: Option<&str>,
) -> Result<(), LifecycleError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = now_micro();
    let patch = json!({"spec": {
        "holderIdentity": node,
        "leaseDurationSeconds": LEASE_DURATION_SECS,
        "renewTime": now,
    }});
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if api_status(&e) == Some(404) => {}
        Err(e) => return Err(api_err("renewing the Lease", node)(e)),
    }
    let owner = node_uid.map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.to_owned(),
        uid: uid.to_owned(),
        ..Default::default()
    });
    let stamp = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(node.to_owned()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_owned()),
            lease_duration_seconds: Some(LEASE_DURATION_SECS),
            acquire_time: stamp.clone(),
            renew_time: stamp,
            ..Default::default()
        }),
    };
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(e) if api_status(&e) == Some(409) => leases
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(api_err("renewing the Lease", node)),
        Err(e) => Err(api_err("creating the Lease", node)(e)),
    }
}

/// Gets the Node, creating it with `labels` if absent or adding missing labels.
async fn ensure_node(
    nodes: &Api<Node>,
    node: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Node, LifecycleError> {
    if let Some(n) = nodes
        .get_opt(node)
        .await
        .map_err(api_err("reading the Node", node))?
    {
        if status::labels_present(n.metadata.labels.as_ref(), labels) {
            return Ok(n);
        }
    } else {
        let new = Node {
            metadata: ObjectMeta {
                name: Some(node.to_owned()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match nodes.create(&PostParams::default(), &new).await {
            Ok(n) => return Ok(n),
            Err(e) if api_status(&e) == Some(409) => {}
            Err(e) => return Err(api_err("creating the Node", node)(e)),
        }
    }
    let patch = json!({"metadata": {"labels": labels}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_err("labelling the Node", node))
}

/// The Ready condition's status.
pub fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// Read-modify-write of a Node's status: `build` gets the current conditions (JSON) and
/// returns the status fields to merge (or `None` for no write). The patch carries the
/// resourceVersion it was built from, so a concurrent writer (the edge posting its own
/// conditions) is never overwritten; conflicts are retried.
pub(crate) async fn update_status(
    nodes: &Api<Node>,
    node: &str,
    mut current: Node,
    mut build: impl FnMut(&[Value]) -> Option<Value>,
) -> Result<(), LifecycleError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let conditions: Vec<Value> = current
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| {
                c.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            })
            .unwrap_or_default();
        let Some(status) = build(&conditions) else {
            return Ok(());
        };
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": status,
        });
        match nodes
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if api_status(&e) == Some(409) && attempt < MAX_ATTEMPTS => {
                current = nodes
                    .get(node)
                    .await
                    .map_err(api_err("reading the Node", node))?;
            }
            Err(e) => return Err(api_err("updating the Node status", node)(e)),
        }
    }
}
