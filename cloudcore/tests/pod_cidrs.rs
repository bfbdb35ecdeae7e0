//! The hub's batched pod CIDR allocator against the embedded API server: many nodes
//! connecting at once get distinct blocks recorded in the claims ConfigMap, a second
//! replica sees them, and an exhausted range still registers the node (Node, Lease,
//! Ready) without a pod CIDR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::Duration;

use common::{Cloud, Cluster};

use cloudcore::lifecycle::cidr::{self, Allocator, CidrError};
use cloudcore::lifecycle::{self, CidrConfig, PodCidr};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .map_err(|_| anyhow::anyhow!("timed out: {what} (a deadlock in the allocator's batching?)"))
}

async fn create_node(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    Ok(())
}

async fn claims(client: &kube::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "kedge-system")
        .get(cidr::CLAIMS_CONFIGMAP)
        .await?;
    Ok(cm.data.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_allocations_are_distinct_claimed_and_seen_by_another_replica()
-> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let names: Vec<String> = (0..64).map(|i| format!("edge-{i:02}")).collect();
    for n in &names {
        create_node(&c.client, n).await?;
    }
    let alloc = Allocator::new(c.client.clone(), CidrConfig::default());
    let results = within(
        "64 concurrent allocations",
        futures::future::join_all(names.iter().map(|n| alloc.allocate(n))),
    )
    .await?;
    let blocks: Vec<String> = results.into_iter().collect::<Result<_, _>>()?;
    let distinct: HashSet<&String> = blocks.iter().collect();
    assert_eq!(distinct.len(), 64, "duplicate blocks: {blocks:?}");
    assert!(
        blocks
            .iter()
            .all(|b| b.starts_with("10.244.") && b.ends_with("/24"))
    );
    // Every block is recorded for its node.
    let recorded = claims(&c.client).await?;
    for (n, b) in names.iter().zip(&blocks) {
        assert_eq!(recorded.get(&b.replace('/', "-")), Some(n), "claim of {n}");
    }
    // Asking again returns the same block.
    assert_eq!(alloc.allocate("edge-07").await?, blocks[7]);
    // Another replica (a fresh allocator) sees the claims and picks a free block.
    create_node(&c.client, "edge-other").await?;
    let other = Allocator::new(c.client.clone(), CidrConfig::default())
        .allocate("edge-other")
        .await?;
    assert!(!distinct.contains(&other), "{other} handed out twice");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_range_registers_the_node_without_a_pod_cidr() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    // Two blocks only.
    let tiny = CidrConfig {
        cluster_cidr: "10.9.0.0/23".into(),
        node_prefix: 24,
    };
    let alloc = Allocator::new(c.client.clone(), tiny);
    for n in ["a", "b", "c"] {
        create_node(&c.client, n).await?;
    }
    let got = within(
        "three allocations from two blocks",
        futures::future::join_all(["a", "b", "c"].map(|n| alloc.allocate(n))),
    )
    .await?;
    let ok = got.iter().filter(|r| r.is_ok()).count();
    let exhausted = got
        .iter()
        .filter(|r| matches!(r, Err(CidrError::Exhausted(_))))
        .count();
    assert_eq!((ok, exhausted), (2, 1), "{got:?}");

    let hello = proto::Hello {
        node_name: "d".into(),
        ..Default::default()
    };
    within(
        "registering a node from an exhausted range",
        lifecycle::node_connected_from(&c.client, "d", &hello, PodCidr::Allocator(&alloc)),
    )
    .await??;
    let node = Api::<Node>::all(c.client.clone()).get("d").await?;
    assert_eq!(node.spec.and_then(|s| s.pod_cidr), None);
    let lease = Api::<Lease>::namespaced(c.client.clone(), "kube-node-lease")
        .get("d")
        .await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("d")
    );
    Ok(())
}

/// A connecting edge gets its block from the hub's configured range, not the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_allocates_from_its_configured_range() -> anyhow::Result<()> {
    let cloud = Cloud::start_with(cloudcore::hub::HubConfig {
        pod_cidrs: CidrConfig {
            cluster_cidr: "10.77.0.0/22".into(),
            node_prefix: 26,
        },
        ..Default::default()
    })
    .await?;
    let nodes = Api::<Node>::all(cloud.client.clone());
    let mut got = Vec::new();
    let mut edges = Vec::new();
    for node in ["cfg-a", "cfg-b"] {
        edges.push(cloud.edge(node).await?);
        let block = common::eventually("the node's pod CIDR", || async {
            let n = nodes.get_opt(node).await?;
            Ok(n.and_then(|n| n.spec?.pod_cidr))
        })
        .await?;
        got.push(block);
    }
    assert_eq!(got, ["10.77.0.0/26", "10.77.0.64/26"]);
    Ok(())
}
