//! The emulation of Kubernetes' node-lifecycle controller that `cloudcore standalone` runs:
//! every `check_every`, for each edge Node, Lease age → Ready condition and lifecycle
//! taints, then taint-based eviction of the pods bound to it. Decisions are
//! [`super::decide`]; this file only reads, writes and keeps time.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::decide::{self, Eviction};
use super::status::{UNKNOWN_MESSAGE, UNKNOWN_REASON, merge_condition, ready_condition};
use super::{
    EDGE_ROLE_LABEL, LEASE_NAMESPACE, LifecycleError, api_err, ready_status, update_status,
};
use crate::nodeca::api_status;

/// Tunables of [`run_node_lifecycle`].
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// A Lease older than this marks the node Unknown (Kubernetes: 40 s).
    pub grace: Duration,
    /// How often nodes are checked.
    pub check_every: Duration,
    /// Whether taint-based eviction deletes pods.
    pub eviction: bool,
    /// The wall clock, in Unix milliseconds (tests give a clock of their own).
    pub clock: fn() -> i64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(40),
            check_every: Duration::from_secs(2),
            eviction: true,
            clock: now_ms,
        }
    }
}

/// When a taint without `timeAdded` was first seen, per (node, key, effect).
type FirstSeen = HashMap<(String, String, String), i64>;

/// Runs the controller until `shutdown`.
pub async fn run_node_lifecycle(client: Client, cfg: LifecycleConfig, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(cfg.check_every.max(Duration::from_millis(50)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first_seen = FirstSeen::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = round(&client, &cfg, &mut first_seen).await {
            tracing::warn!(error = %e, "node lifecycle round failed");
        }
    }
}

/// The wall clock in Unix milliseconds: [`LifecycleConfig::clock`]'s default.
fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

async fn round(
    client: &Client,
    cfg: &LifecycleConfig,
    first_seen: &mut FirstSeen,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let edge_nodes = nodes
        .list(&ListParams::default().labels(EDGE_ROLE_LABEL))
        .await?;
    // Lease ages are judged at the time of this list, not when the loop below reaches a
    // node: with thousands of nodes a round takes many seconds, and a renewal listed at 13 s
    // old must not count as 43 s old half a minute later (5,000 edges: ~800 Nodes with fresh
    // Leases were marked Unknown that way).
    let listed_at = (cfg.clock)();
    let renewed: HashMap<String, i64> = leases
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|l| {
            let t = l.spec.as_ref()?.renew_time.as_ref()?;
            Some((l.name_any(), t.0.as_millisecond()))
        })
        .collect();
    let mut seen = HashSet::new();
    for node in edge_nodes.items {
        let name = node.name_any();
        let span = tracing::info_span!("node_lifecycle", node = %name);
        let _entered = span.enter();
        let lease = LeaseSeen {
            renewed_ms: renewed.get(&name).copied(),
            at_ms: listed_at,
        };
        match check_node(client, cfg, node, lease, first_seen).await {
            Ok(keys) => seen.extend(keys),
            Err(e) => tracing::warn!(error = %e, "node lifecycle check failed"),
        }
    }
    first_seen.retain(|k, _| seen.contains(k));
    Ok(())
}

/// A node's Lease `renewTime` as listed, and when the list was taken.
#[derive(Debug, Clone, Copy)]
struct LeaseSeen {
    renewed_ms: Option<i64>,
    at_ms: i64,
}

/// One node: condition, taints, eviction. Returns the first-seen keys still in use.
async fn check_node(
    client: &Client,
    cfg: &LifecycleConfig,
    node: Node,
    lease: LeaseSeen,
    first_seen: &mut FirstSeen,
) -> Result<Vec<(String, String, String)>, LifecycleError> {
    let name = node.name_any();
    let nodes: Api<Node> = Api::all(client.clone());
    let created = node
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(lease.at_ms, |t| t.0.as_millisecond());
    let grace = i64::try_from(cfg.grace.as_millis()).unwrap_or(i64::MAX);
    let mut stale = decide::lease_stale(lease.renewed_ms, created, lease.at_ms, grace);
    let mut renewed_ms = lease.renewed_ms;
    if stale {
        // Confirm with the Lease as it is now before acting: the node may have renewed
        // since the list (the round can be long), and marking it Unknown would only have
        // its next heartbeat undo it.
        let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        if let Ok(Some(l)) = leases.get_opt(&name).await {
            renewed_ms = l
                .spec
                .and_then(|s| s.renew_time)
                .map(|t| t.0.as_millisecond());
            stale = decide::lease_stale(renewed_ms, created, (cfg.clock)(), grace);
        }
    }
    let now = (cfg.clock)();
    let mut ready = ready_status(&node).map(str::to_owned);
    if stale && ready.as_deref() != Some("Unknown") {
        let reason = if ready.is_none() {
            "NodeStatusNeverUpdated"
        } else {
            UNKNOWN_REASON
        };
        let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        update_status(&nodes, &name, node.clone(), |conditions| {
            let unknown = ready_condition("Unknown", reason, UNKNOWN_MESSAGE, &stamp);
            Some(json!({"conditions": merge_condition(conditions, unknown, true)}))
        })
        .await?;
        tracing::info!(renewed_ms, "lease expired; node marked Unknown");
        ready = Some("Unknown".into());
    }
    let node = match decide::wanted_taints(stale, ready.as_deref()) {
        Some(wanted) => update_taints(&nodes, &name, &wanted).await?,
        None => node,
    };
    let mut keys = Vec::new();
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == decide::NO_EXECUTE)
        .collect();
    if taints.is_empty() {
        return Ok(keys);
    }
    let timed: Vec<(&Taint, i64)> = taints
        .iter()
        .map(|t| {
            let added = match &t.time_added {
                Some(at) => at.0.as_millisecond(),
                None => {
                    let key = (name.clone(), t.key.clone(), t.effect.clone());
                    keys.push(key.clone());
                    *first_seen.entry(key).or_insert(now)
                }
            };
            (t, added)
        })
        .collect();
    if cfg.eviction {
        evict(client, &name, &timed, now).await?;
    }
    Ok(keys)
}

/// Read-modify-write of the node's taints, retried on conflicts. Returns the node as it
/// is afterwards.
async fn update_taints(
    nodes: &Api<Node>,
    name: &str,
    wanted: &[(&str, &str)],
) -> Result<Node, LifecycleError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = nodes
            .get(name)
            .await
            .map_err(api_err("reading the Node", name))?;
        let taints = current
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let Some(new) =
            decide::reconcile_taints(&taints, wanted, k8s_openapi::jiff::Timestamp::now())
        else {
            return Ok(current);
        };
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"taints": new},
        });
        match nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                tracing::info!(taints = ?wanted, "lifecycle taints updated");
                return Ok(updated);
            }
            Err(e) if api_status(&e) == Some(409) && attempt < 8 => continue,
            Err(e) => return Err(api_err("updating the Node's taints", name)(e)),
        }
    }
}

/// Deletes the node's pods whose tolerations ran out.
async fn evict(
    client: &Client,
    node: &str,
    taints: &[(&Taint, i64)],
    now: i64,
) -> Result<(), LifecycleError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(api_err("listing the node's pods", node))?;
    for pod in list.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        if decide::eviction(&tolerations, taints, now) != Eviction::Now {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let pod_name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api.delete(&pod_name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{pod_name}"), "evicted by taint"),
            Err(e) if api_status(&e) == Some(404) => {}
            Err(e) => return Err(api_err("evicting a pod", node)(e)),
        }
    }
    Ok(())
}
