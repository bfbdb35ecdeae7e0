//! Pod CIDR allocation: one block per node (default a /24) from the cluster range (default
//! `10.244.0.0/16`), first free block first.
//!
//! Replicas may allocate at the same time, so claims go through one ConfigMap,
//! `kedge-system/kedge-pod-cidrs` (data `<a.b.c.d>-<prefix>` → node name), written with
//! optimistic concurrency: two replicas never hand out the same block. A claim whose node no
//! longer exists (and that no Node still uses) is free again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::oneshot;

use crate::nodeca::{NAMESPACE, api_status};

/// The claims ConfigMap.
pub const CLAIMS_CONFIGMAP: &str = "kedge-pod-cidrs";
const MAX_ATTEMPTS: usize = 16;

/// The cluster's pod range and the size of each node's block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrConfig {
    /// Cluster pod range, IPv4 CIDR.
    pub cluster_cidr: String,
    /// Prefix length of each node's block.
    pub node_prefix: u8,
}

impl Default for CidrConfig {
    fn default() -> Self {
        Self {
            cluster_cidr: "10.244.0.0/16".into(),
            node_prefix: 24,
        }
    }
}

impl CidrConfig {
    /// Checks the range and the node prefix (what `first_free` would refuse), so a bad
    /// configuration stops cloudcore at start instead of failing every node's connect.
    pub fn check(&self) -> Result<(), CidrError> {
        let bad = |reason| CidrError::Config {
            cidr: self.cluster_cidr.clone(),
            prefix: self.node_prefix,
            reason,
        };
        let (_, len) = parse_v4(&self.cluster_cidr).ok_or(bad("not an IPv4 CIDR"))?;
        if self.node_prefix < len || self.node_prefix > 32 {
            return Err(bad(
                "the node prefix must be between the range's prefix and 32",
            ));
        }
        Ok(())
    }

    /// How many node blocks the range holds.
    pub fn blocks(&self) -> u64 {
        parse_v4(&self.cluster_cidr)
            .filter(|(_, len)| self.node_prefix >= *len && self.node_prefix <= 32)
            .map(|(_, len)| 1u64 << (self.node_prefix - len))
            .unwrap_or(0)
    }
}

/// Why no pod CIDR could be allocated.
#[derive(Debug, thiserror::Error)]
pub enum CidrError {
    /// The configured range is not an IPv4 CIDR, or the node prefix does not fit in it.
    #[error("invalid pod CIDR configuration {cidr}/{prefix}: {reason}")]
    Config {
        /// The cluster range.
        cidr: String,
        /// The node prefix.
        prefix: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// Every block is taken.
    #[error("the cluster pod range {0} is exhausted")]
    Exhausted(String),
    /// The batch this request was part of failed (see [`Allocator`]).
    #[error("allocating pod CIDRs failed: {0}")]
    Batch(String),
    /// An API call failed.
    #[error("{action}")]
    Api {
        /// What was being done.
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// Parses `a.b.c.d/n` into the network address and prefix length.
pub fn parse_v4(cidr: &str) -> Option<(u32, u8)> {
    let (addr, len) = cidr.trim().split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

/// The first `node_prefix` block of `cluster` that does not overlap any CIDR in `used`.
/// A sweep over the used blocks sorted by start: O(u log u), whatever the range's size.
pub fn first_free(cfg: &CidrConfig, used: &HashSet<String>) -> Result<String, CidrError> {
    let bad = |reason| CidrError::Config {
        cidr: cfg.cluster_cidr.clone(),
        prefix: cfg.node_prefix,
        reason,
    };
    cfg.check()?;
    let (net, len) = parse_v4(&cfg.cluster_cidr).ok_or(bad("not an IPv4 CIDR"))?;
    let mut used: Vec<(u64, u64)> = used
        .iter()
        .filter_map(|c| parse_v4(c))
        .map(|(u, l)| (u64::from(u), u64::from(u) + (1u64 << (32 - l)) - 1))
        .collect();
    used.sort_unstable();
    let size = 1u64 << (32 - cfg.node_prefix);
    let range_end = u64::from(net) + (1u64 << (32 - len)) - 1;
    let mut start = u64::from(net);
    for (u_start, u_end) in used {
        if start + size - 1 > range_end {
            break;
        }
        if u_start < start + size && start <= u_end {
            // Overlaps: the next candidate is the first block boundary after it.
            start = start.max((u_end + 1).div_ceil(size) * size);
        }
    }
    if start + size - 1 > range_end {
        return Err(CidrError::Exhausted(cfg.cluster_cidr.clone()));
    }
    let addr = Ipv4Addr::from(u32::try_from(start).unwrap_or(0));
    Ok(format!("{addr}/{}", cfg.node_prefix))
}

/// ConfigMap keys cannot hold `/`.
fn claim_key(cidr: &str) -> String {
    cidr.replace('/', "-")
}

fn key_cidr(key: &str) -> String {
    match key.rsplit_once('-') {
        Some((addr, len)) => format!("{addr}/{len}"),
        None => key.to_owned(),
    }
}

/// Allocates (or returns the already claimed) pod CIDR of `node`.
pub async fn allocate(client: &Client, node: &str, cfg: &CidrConfig) -> Result<String, CidrError> {
    let api_err = |action| move |source| CidrError::Api { action, source };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let nodes: Api<Node> = Api::all(client.clone());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = cms
            .get_opt(CLAIMS_CONFIGMAP)
            .await
            .map_err(api_err("reading the pod CIDR claims"))?;
        let claims: BTreeMap<String, String> = current
            .as_ref()
            .and_then(|c| c.data.clone())
            .unwrap_or_default();
        if let Some((key, _)) = claims.iter().find(|(_, n)| *n == node) {
            return Ok(key_cidr(key));
        }
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(api_err("listing Nodes"))?;
        let existing: HashSet<String> = list.items.iter().map(|n| n.name_any()).collect();
        let mut used: HashSet<String> = list
            .items
            .iter()
            .filter_map(|n| n.spec.as_ref())
            .flat_map(|s| {
                s.pod_cidr
                    .iter()
                    .chain(s.pod_cidrs.iter().flatten())
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        // Claims of nodes that are gone are free again.
        let mut kept: BTreeMap<String, String> = claims
            .into_iter()
            .filter(|(_, n)| existing.contains(n))
            .collect();
        used.extend(kept.keys().map(|k| key_cidr(k)));
        let cidr = first_free(cfg, &used)?;
        kept.insert(claim_key(&cidr), node.to_owned());
        let result = match current {
            Some(mut cm) => {
                cm.data = Some(kept);
                cms.replace(CLAIMS_CONFIGMAP, &PostParams::default(), &cm)
                    .await
            }
            None => {
                let cm = claims_configmap(kept);
                if let Err(e) = crate::nodeca::ensure_namespace(client).await {
                    tracing::warn!(error = %e, "ensuring namespace kedge-system");
                }
                cms.create(&PostParams::default(), &cm).await
            }
        };
        match result {
            Ok(_) => return Ok(cidr),
            Err(e) if api_status(&e) == Some(409) && attempt < MAX_ATTEMPTS => continue,
            Err(e) => return Err(api_err("claiming a pod CIDR")(e)),
        }
    }
}

/// How long a scan of the Nodes' pod CIDRs is reused by an [`Allocator`].
const NODE_SCAN_TTL: Duration = Duration::from_secs(60);
/// Nodes per page of that scan (memory stays bounded whatever the cluster's size).
const NODE_SCAN_PAGE: u32 = 500;

/// Pod CIDR allocation for many nodes connecting at once (one per hub process).
///
/// [`allocate`] alone reads the claims and lists every Node (the whole objects) per call,
/// and concurrent calls conflict on the claims ConfigMap: with N nodes connecting that is
/// N full Node lists held at once and up to 16 retries each — memory and API work that
/// grow as N². The allocator instead serves one batch at a time: requests that arrive
/// while a batch runs are answered together by the next one, with one read of the claims
/// (only after a conflict: the last written version is kept), one write for the whole
/// batch, and the Nodes' pod CIDRs from a paged scan reused for [`NODE_SCAN_TTL`].
///
/// Claims of nodes that no longer exist are freed only right after a scan that followed
/// the read of those claims (as [`allocate`] does), so a claim made after the scan by
/// another replica is never mistaken for a stale one.
pub struct Allocator {
    client: Client,
    cfg: CidrConfig,
    /// Nodes waiting for a block, with where to send it.
    waiting: std::sync::Mutex<Vec<Waiter>>,
    /// Held by the batch in progress.
    state: tokio::sync::Mutex<Snapshot>,
}

type Waiter = (String, oneshot::Sender<Result<String, CidrError>>);

#[derive(Default)]
struct Snapshot {
    /// The claims as last read or written.
    claims: Option<ConfigMap>,
    /// The last scan of the Nodes.
    scan: Option<NodeScan>,
}

struct NodeScan {
    names: HashSet<String>,
    cidrs: HashSet<String>,
    at: Instant,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Allocator {
    /// An allocator for blocks of `cfg`.
    pub fn new(client: Client, cfg: CidrConfig) -> Self {
        Allocator {
            client,
            cfg,
            waiting: std::sync::Mutex::new(Vec::new()),
            state: tokio::sync::Mutex::new(Snapshot::default()),
        }
    }

    /// The block claimed for `node` (an existing claim, or a new one).
    pub async fn allocate(&self, node: &str) -> Result<String, CidrError> {
        let (tx, mut rx) = oneshot::channel();
        self.lock_waiting().push((node.to_owned(), tx));
        let mut snapshot = self.state.lock().await;
        // The batch before this one may have served us already.
        if let Ok(answer) = rx.try_recv() {
            return answer;
        }
        let batch = std::mem::take(&mut *self.lock_waiting());
        let names: Vec<&str> = batch.iter().map(|(n, _)| n.as_str()).collect();
        let outcome = self.run_batch(&mut snapshot, &names).await;
        drop(snapshot);
        match outcome {
            Ok(mut blocks) => {
                for (name, tx) in batch {
                    let answer = blocks.remove(&name).unwrap_or_else(|| {
                        Err(CidrError::Exhausted(self.cfg.cluster_cidr.clone()))
                    });
                    let _ = tx.send(answer);
                }
            }
            Err(e) => {
                let message = format!("{e}: {}", error_chain(&e));
                for (_, tx) in batch {
                    let _ = tx.send(Err(CidrError::Batch(message.clone())));
                }
                // Our own request is in the batch; report the real error to this caller.
                return Err(e);
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(CidrError::Batch("the allocation batch ended".into())))
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Vec<Waiter>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims blocks for `nodes` in one write; per-node results (`Exhausted` for those that
    /// did not fit), or the API error that stopped the batch.
    async fn run_batch(
        &self,
        st: &mut Snapshot,
        nodes: &[&str],
    ) -> Result<BTreeMap<String, Result<String, CidrError>>, CidrError> {
        let api_err = |action| move |source| CidrError::Api { action, source };
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), NAMESPACE);
        for attempt in 1..=MAX_ATTEMPTS {
            let stale_scan = st
                .scan
                .as_ref()
                .is_none_or(|s| s.at.elapsed() >= NODE_SCAN_TTL);
            if st.claims.is_none() || attempt > 1 || stale_scan {
                st.claims = cms
                    .get_opt(CLAIMS_CONFIGMAP)
                    .await
                    .map_err(api_err("reading the pod CIDR claims"))?;
            }
            let mut claims: BTreeMap<String, String> = st
                .claims
                .as_ref()
                .and_then(|c| c.data.clone())
                .unwrap_or_default();
            if stale_scan {
                st.scan = Some(self.scan_nodes().await?);
            }
            let Some(scan) = st.scan.as_ref() else {
                continue;
            };
            let before = claims.len();
            if stale_scan {
                // Claims of nodes that are gone are free again (the scan followed the read).
                claims.retain(|_, n| scan.names.contains(n));
            }
            let freed = claims.len() != before;
            let claimed: HashMap<&str, String> = claims
                .iter()
                .map(|(k, n)| (n.as_str(), key_cidr(k)))
                .collect();
            let mut used: HashSet<String> = scan.cidrs.clone();
            used.extend(claims.keys().map(|k| key_cidr(k)));
            let mut out = BTreeMap::new();
            let mut new_claims = Vec::new();
            for node in nodes {
                if let Some(cidr) = claimed.get(node) {
                    out.insert((*node).to_owned(), Ok(cidr.clone()));
                    continue;
                }
                if out.contains_key(*node) {
                    continue;
                }
                match first_free(&self.cfg, &used) {
                    Ok(cidr) => {
                        used.insert(cidr.clone());
                        new_claims.push((claim_key(&cidr), (*node).to_owned()));
                        out.insert((*node).to_owned(), Ok(cidr));
                    }
                    Err(e) => {
                        out.insert((*node).to_owned(), Err(e));
                    }
                }
            }
            if new_claims.is_empty() && !freed {
                return Ok(out);
            }
            claims.extend(new_claims);
            let written = match st.claims.clone() {
                Some(mut cm) => {
                    cm.data = Some(claims);
                    cms.replace(CLAIMS_CONFIGMAP, &PostParams::default(), &cm)
                        .await
                }
                None => {
                    if let Err(e) = crate::nodeca::ensure_namespace(&self.client).await {
                        tracing::warn!(error = %e, "ensuring namespace kedge-system");
                    }
                    cms.create(&PostParams::default(), &claims_configmap(claims))
                        .await
                }
            };
            match written {
                Ok(cm) => {
                    st.claims = Some(cm);
                    return Ok(out);
                }
                Err(e) if matches!(api_status(&e), Some(409)) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        "pod CIDR claims changed meanwhile; reading them again"
                    );
                }
                Err(e) => {
                    st.claims = None;
                    return Err(api_err("claiming pod CIDRs")(e));
                }
            }
        }
        Err(CidrError::Batch(
            "too many conflicting writes of the pod CIDR claims".into(),
        ))
    }

    /// Names and pod CIDRs of every Node, a page at a time.
    async fn scan_nodes(&self) -> Result<NodeScan, CidrError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut scan = NodeScan {
            names: HashSet::new(),
            cidrs: HashSet::new(),
            at: Instant::now(),
        };
        let mut lp = ListParams::default().limit(NODE_SCAN_PAGE);
        loop {
            let page = nodes.list(&lp).await.map_err(|source| CidrError::Api {
                action: "listing Nodes",
                source,
            })?;
            for n in &page.items {
                scan.names.insert(n.name_any());
                if let Some(spec) = &n.spec {
                    scan.cidrs.extend(
                        spec.pod_cidr
                            .iter()
                            .chain(spec.pod_cidrs.iter().flatten())
                            .cloned(),
                    );
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => return Ok(scan),
            }
        }
    }
}

fn claims_configmap(data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CLAIMS_CONFIGMAP.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// The causes of `e`, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out.join(": ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn used(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn first_free_block_is_taken_in_order() {
        let cfg = CidrConfig::default();
        assert_eq!(first_free(&cfg, &used(&[])).unwrap(), "10.244.0.0/24");
        assert_eq!(
            first_free(&cfg, &used(&["10.244.0.0/24", "10.244.2.0/24"])).unwrap(),
            "10.244.1.0/24"
        );
        // A larger used block covers several node blocks.
        assert_eq!(
            first_free(&cfg, &used(&["10.244.0.0/23"])).unwrap(),
            "10.244.2.0/24"
        );
        // Garbage in `used` is ignored.
        assert_eq!(
            first_free(&cfg, &used(&["nonsense"])).unwrap(),
            "10.244.0.0/24"
        );
    }

    #[test]
    fn exhaustion_and_bad_config_are_errors() {
        let small = CidrConfig {
            cluster_cidr: "10.0.0.0/23".into(),
            node_prefix: 24,
        };
        assert!(matches!(
            first_free(&small, &used(&["10.0.0.0/24", "10.0.1.0/24"])),
            Err(CidrError::Exhausted(_))
        ));
        let bad = CidrConfig {
            cluster_cidr: "10.0.0.0/24".into(),
            node_prefix: 16,
        };
        assert!(matches!(
            first_free(&bad, &used(&[])),
            Err(CidrError::Config { .. })
        ));
        assert_eq!(
            parse_v4("10.1.2.3/16"),
            Some((u32::from(Ipv4Addr::new(10, 1, 0, 0)), 16))
        );
        assert_eq!(parse_v4("fd00::/8"), None);
    }

    #[test]
    fn first_free_sweeps_unsorted_overlapping_and_foreign_blocks() {
        let cfg = CidrConfig::default();
        // Unsorted, nested and overlapping blocks, and one outside the range.
        let taken = used(&[
            "10.244.3.0/24",
            "10.244.0.0/24",
            "10.244.1.0/24",
            "10.244.0.128/25",
            "10.244.2.0/23",
            "10.0.0.0/8",
            "192.168.0.0/16",
        ]);
        // 10.0.0.0/8 covers the whole range.
        assert!(matches!(
            first_free(&cfg, &taken),
            Err(CidrError::Exhausted(_))
        ));
        let mut taken = taken;
        taken.remove("10.0.0.0/8");
        assert_eq!(first_free(&cfg, &taken).unwrap(), "10.244.4.0/24");
        // Every block but the last taken: the last one; then none.
        let mut all: HashSet<String> = (0..255).map(|i| format!("10.244.{i}.0/24")).collect();
        assert_eq!(first_free(&cfg, &all).unwrap(), "10.244.255.0/24");
        all.insert("10.244.255.0/24".into());
        assert!(matches!(
            first_free(&cfg, &all),
            Err(CidrError::Exhausted(_))
        ));
        // A large range with many used blocks stays fast (a sweep, not blocks x used).
        let big = CidrConfig {
            cluster_cidr: "10.0.0.0/8".into(),
            node_prefix: 24,
        };
        let many: HashSet<String> = (0..20_000u32)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        assert_eq!(first_free(&big, &many).unwrap(), "10.78.32.0/24");
    }

    #[test]
    fn claim_keys_round_trip() {
        assert_eq!(claim_key("10.244.3.0/24"), "10.244.3.0-24");
        assert_eq!(key_cidr("10.244.3.0-24"), "10.244.3.0/24");
    }
}
