//! Pod CIDR allocation: one block per node (default a /24) from the cluster range (default
//! `10.244.0.0/16`), first free block first.
//!
//! Replicas may allocate at the same time, so claims go through one ConfigMap,
//! `kedge-system/kedge-pod-cidrs` (data `<a.b.c.d>-<prefix>` → node name), written with
//! optimistic concurrency: two replicas never hand out the same block. A claim whose node no
//! longer exists (and that no Node still uses) is free again.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

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
pub fn first_free(cfg: &CidrConfig, used: &HashSet<String>) -> Result<String, CidrError> {
    let bad = |reason| CidrError::Config {
        cidr: cfg.cluster_cidr.clone(),
        prefix: cfg.node_prefix,
        reason,
    };
    let (net, len) = parse_v4(&cfg.cluster_cidr).ok_or(bad("not an IPv4 CIDR"))?;
    if cfg.node_prefix < len || cfg.node_prefix > 32 {
        return Err(bad(
            "the node prefix must be between the range's prefix and 32",
        ));
    }
    let used: Vec<(u32, u8)> = used.iter().filter_map(|c| parse_v4(c)).collect();
    let blocks = 1u64 << (cfg.node_prefix - len);
    let size = 1u64 << (32 - cfg.node_prefix);
    for i in 0..blocks {
        let start = u64::from(net) + i * size;
        let end = start + size - 1;
        let overlaps = used.iter().any(|(u, l)| {
            let u_start = u64::from(*u);
            let u_end = u_start + (1u64 << (32 - l)) - 1;
            u_start <= end && start <= u_end
        });
        if !overlaps {
            let addr = Ipv4Addr::from(u32::try_from(start).unwrap_or(0));
            return Ok(format!("{addr}/{}", cfg.node_prefix));
        }
    }
    Err(CidrError::Exhausted(cfg.cluster_cidr.clone()))
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
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(CLAIMS_CONFIGMAP.into()),
                        namespace: Some(NAMESPACE.into()),
                        ..Default::default()
                    },
                    data: Some(kept),
                    ..Default::default()
                };
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
    fn claim_keys_round_trip() {
        assert_eq!(claim_key("10.244.3.0/24"), "10.244.3.0-24");
        assert_eq!(key_cidr("10.244.3.0-24"), "10.244.3.0/24");
    }
}
