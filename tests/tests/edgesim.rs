//! edgesim against the real `cloudcore standalone`: 50 simulated edges join through `/join`
//! and become Ready Nodes in the API; each gets its own pod plus a shared ConfigMap, and an
//! object for one node reaches only that node (node authorisation at the cloud's cache);
//! then cloudcore is killed with -9 and restarted on the same hub port while objects
//! change — every edge reconnects (a storm of 50) and resyncs with nothing lost or stale.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tests::edge::{condition, free_addr};
use tests::edgesim::{Fleet, SimConfig};
use tests::{Standalone, eventually};

const EDGES: usize = 50;
const NS: &str = "sim";
/// The edge that also gets a private ConfigMap.
const LONE: usize = 7;

/// What every edge must hold of namespace `sim`, from the API: key -> rv.
async fn expected(client: &kube::Client, cfg: &SimConfig) -> Vec<BTreeMap<String, String>> {
    let pods = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    let rv = |name: &str| {
        cms.items
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .and_then(|c| c.metadata.resource_version.clone())
    };
    (0..EDGES)
        .map(|i| {
            let node = cfg.node_name(i);
            let mut want = BTreeMap::new();
            for p in &pods.items {
                let spec = p.spec.as_ref().unwrap();
                if spec.node_name.as_deref() != Some(node.as_str()) {
                    continue;
                }
                let name = p.metadata.name.clone().unwrap();
                want.insert(
                    format!("{NS}/pod/{name}"),
                    p.metadata.resource_version.clone().unwrap(),
                );
                for v in spec.volumes.iter().flatten() {
                    let Some(cm) = v.config_map.as_ref().map(|c| c.name.clone()) else {
                        continue;
                    };
                    if let Some(rv) = rv(&cm) {
                        want.insert(format!("{NS}/configmap/{cm}"), rv);
                    }
                }
            }
            want
        })
        .collect()
}

/// Edges whose objects of namespace `sim` differ from `want` (index, held).
fn differing(
    fleet: &Fleet,
    want: &[BTreeMap<String, String>],
) -> Vec<(usize, BTreeMap<String, String>)> {
    fleet
        .edges
        .iter()
        .zip(want)
        .enumerate()
        .filter_map(|(i, (e, w))| {
            let held: BTreeMap<String, String> = e
                .held_rvs()
                .into_iter()
                // The projected service-account volume's CA bundle is not part of the test.
                .filter(|(k, _)| k.starts_with("sim/") && !k.ends_with("/kube-root-ca.crt"))
                .collect();
            (held != *w).then_some((i, held))
        })
        .collect()
}

/// Waits until every edge holds `want` (at most `timeout`); the failure lists who differs.
async fn wait_in_sync(fleet: &Fleet, want: &[BTreeMap<String, String>], what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let diff = differing(fleet, want);
        if diff.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let (i, held) = &diff[0];
            panic!(
                "timed out after 60 s waiting for {what}: {} edges differ; edge {i} holds {held:?}, \
                 expected {:?}",
                diff.len(),
                want[*i]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pod(name: &str, node: &str, cms: &[&str]) -> Pod {
    let volumes: Vec<_> = cms
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": format!("v{i}"), "configMap": {"name": c}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": volumes}
    }))
    .unwrap()
}

async fn ready_nodes(client: &kube::Client) -> usize {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    nodes
        .iter()
        .filter(|n| {
            n.metadata
                .name
                .as_deref()
                .is_some_and(|m| m.starts_with("sim-"))
        })
        .filter(|n| condition(&serde_json::to_value(n).unwrap(), "Ready") == "True")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simulated_edges_ready_authorised_and_resynced_after_a_cloud_restart() {
    tests::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cloud");
    let hub_listen = free_addr();
    let mut cloud = Standalone::start(&data, &["--hub-listen", &hub_listen]).unwrap();
    let client = cloud.client().await.unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let mut cfg = SimConfig::new(&cloud.hub, &cloud.token(), EDGES, tmp.path().join("edges"));
    cfg.sources = 8;
    let fleet = tokio::time::timeout(Duration::from_secs(120), Fleet::start(&cfg))
        .await
        .expect("joining 50 edges took over 120 s")
        .unwrap();
    eventually(
        "50 Ready sim Nodes in the API",
        Duration::from_secs(90),
        || {
            let client = client.clone();
            async move { (ready_nodes(&client).await == EDGES).then_some(()) }
        },
    )
    .await;
    eventually("50 live edges", Duration::from_secs(60), || async {
        (fleet.live() == EDGES).then_some(())
    })
    .await;

    // A shared ConfigMap for everyone, a private one for one edge, a pod per edge.
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NS);
    for name in ["shared", "only-7"] {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": NS}, "data": {"v": "1"}}),
        )
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    for i in 0..EDGES {
        let refs: &[&str] = if i == LONE {
            &["shared", "only-7"]
        } else {
            &["shared"]
        };
        let p = pod(&format!("p-{i}"), &cfg.node_name(i), refs);
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let want = expected(&client, &cfg).await;
    assert_eq!(want[LONE].len(), 3, "{:?}", want[LONE]);
    wait_in_sync(
        &fleet,
        &want,
        "every edge holding exactly its pod and the ConfigMaps it references",
    )
    .await;
    // Node authorisation: nothing of edge 7 anywhere else.
    for (i, e) in fleet.edges.iter().enumerate().filter(|(i, _)| *i != LONE) {
        assert!(
            e.get("sim/configmap/only-7").is_none(),
            "edge {i} got only-7"
        );
        assert!(e.get("sim/pod/p-7").is_none(), "edge {i} got p-7");
    }

    // Reconnect storm: kill -9, restart on the same hub port, change objects meanwhile.
    cloud.kill9();
    let mut cloud = Standalone::start(&data, &["--hub-listen", &hub_listen]).unwrap();
    let client = cloud.client().await.unwrap();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NS);
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let patch = json!({"data": {"v": "2"}});
    cms.patch("shared", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    pods.delete("p-3", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let want = expected(&client, &cfg).await;
    eventually(
        "every edge back in sync after the restart (a second session each)",
        Duration::from_secs(90),
        || async { (fleet.live_after(2) == EDGES).then_some(()) },
    )
    .await;
    wait_in_sync(
        &fleet,
        &want,
        "every edge holding the API's state after the storm (no loss, nothing stale)",
    )
    .await;
    let s = fleet.summary();
    assert_eq!(s.upstream_errors, 0, "{s:?}");
    assert!(s.lease_renewals >= EDGES as u64, "{s:?}");
    fleet.stop().await;
    cloud.stop().unwrap();
}
