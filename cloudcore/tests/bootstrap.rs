//! Bootstrap, edge cache and node lifecycle in process, against the embedded API server on
//! 127.0.0.1:0: two replicas converging on one node CA, token → join → certificate,
//! refusals with their codes, revocation on Node deletion, the edge cache's per-node sets
//! (pods, referenced ConfigMaps, tombstones for missing Secrets, late edge nodes), and the
//! node-lifecycle controller (Unknown + taints on a stale Lease, eviction after
//! `tolerationSeconds`, recovery on connect).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::Utc;
use cloudcore::edge::{EdgeCache, NodeChange};
use cloudcore::join::{Bootstrap, ErrorBody, JoinRequest, JoinResponse};
use cloudcore::lifecycle::{self, LeaseRenewal, LifecycleConfig};
use cloudcore::token::{self, TokenRecord};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use proto::ResourceKey;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde_json::json;
use sha2::Digest;

mod common;

use common::{Cluster, eventually, within};

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

async fn post_join(b: &Bootstrap, req: &JoinRequest) -> (u16, Bytes) {
    let body = Bytes::from(serde_json::to_vec(req).unwrap());
    let http_req = http::Request::builder()
        .method("POST")
        .uri("/join")
        .body(body)
        .unwrap();
    let resp = b.handle(http_req).await;
    (resp.status().as_u16(), resp.into_body())
}

fn join_req(token: &str, node: &str) -> JoinRequest {
    JoinRequest {
        token: token.into(),
        node_name: node.into(),
        csr: csr(),
        labels: [("site".to_owned(), "lab".to_owned())].into(),
        force: false,
    }
}

async fn expect_refusal(
    b: &Bootstrap,
    req: &JoinRequest,
    code: u16,
    reason: &str,
) -> anyhow::Result<()> {
    let (got, body) = post_join(b, req).await;
    let err: ErrorBody = serde_json::from_slice(&body)
        .with_context(|| format!("error body: {}", String::from_utf8_lossy(&body)))?;
    if got != code || err.reason != reason || err.code != code {
        bail!(
            "expected {code} {reason}, got {got} {} ({})",
            err.reason,
            err.message
        );
    }
    Ok(())
}

fn verifies(ca_pem: &str, cert_pem: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    verifier
        .verify_client_cert(&der, &[], UnixTime::now())
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_on_one_ca_and_join_issues_node_certificates() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let sans = ["hub.example".to_owned()];
    let (a, b) = within("two concurrent Bootstrap::new", async {
        tokio::join!(
            Bootstrap::new(c.client.clone(), &sans),
            Bootstrap::new(c.client.clone(), &[])
        )
    })
    .await?;
    let (a, b) = (a?, b?);
    assert_eq!(a.ca_pem(), b.ca_pem(), "replicas must converge on one CA");
    let secret = Api::<Secret>::namespaced(c.client.clone(), "kedge-system")
        .get("kedge-node-ca")
        .await?;
    assert_eq!(secret.type_.as_deref(), Some("kedge.io/node-ca"));
    assert_eq!(a.tls_config().alpn_protocols, vec![b"http/1.1".to_vec()]);

    // GET /ca.crt
    let resp = a
        .handle(http::Request::builder().uri("/ca.crt").body(Bytes::new())?)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-pem-file");
    assert_eq!(resp.body().as_ref(), a.ca_pem().as_bytes());

    // token create → join
    let tok = within(
        "token create",
        token::cli_create(
            c.client.clone(),
            Duration::from_secs(3600),
            None,
            Some("test".into()),
        ),
    )
    .await??;
    let ca_hash = hex::encode(sha2::Sha256::digest(a.ca_pem().as_bytes()));
    assert!(tok.starts_with(&format!("K10{ca_hash}::")), "{tok}");
    let (code, body) = post_join(&b, &join_req(&tok, "edge-1")).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let ok: JoinResponse = serde_json::from_slice(&body)?;
    assert_eq!(ok.ca, a.ca_pem());
    assert!(verifies(a.ca_pem(), &ok.certificate));
    let der = CertificateDer::from_pem_slice(ok.certificate.as_bytes())?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)?;
    let cn = x509
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()?
        .to_owned();
    assert_eq!(cn, "system:node:edge-1");
    let node = Api::<Node>::all(c.client.clone()).get("edge-1").await?;
    let labels = node.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("node-role.kubernetes.io/edge")
            .map(String::as_str),
        Some("")
    );
    assert_eq!(labels.get("site").map(String::as_str), Some("lab"));
    let listed = token::cli_list(c.client.clone()).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].description.as_deref(), Some("test"));

    // Deleting the Node revokes the certificate, on every replica.
    let serial = cloudcore::nodeca::serial_hex(&der).unwrap();
    assert!(!a.is_revoked(&serial));
    Api::<Node>::all(c.client.clone())
        .delete("edge-1", &DeleteParams::default())
        .await?;
    eventually("revocation seen by both replicas", || async {
        Ok((a.is_revoked(&serial) && b.is_revoked(&serial.to_uppercase())).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_live_names_are_refused_with_their_codes() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let b = within("bootstrap", Bootstrap::new(c.client.clone(), &[])).await??;
    let hash = b.ca_hash().to_owned();
    let good = token::create(&c.client, &hash, Some(Duration::from_secs(600)), None, None).await?;
    let parsed = token::parse(&good)?;

    let wrong_secret = token::format_token(&hash, &parsed.id, "0000000000000000");
    expect_refusal(&b, &join_req(&wrong_secret, "n1"), 401, "InvalidToken").await?;
    let unknown = token::format_token(&hash, "zzzzzz", &parsed.secret);
    expect_refusal(&b, &join_req(&unknown, "n1"), 401, "InvalidToken").await?;
    expect_refusal(&b, &join_req("garbage", "n1"), 401, "InvalidToken").await?;
    let other_ca = token::format_token(&"ab".repeat(32), &parsed.id, &parsed.secret);
    expect_refusal(&b, &join_req(&other_ca, "n1"), 400, "CAHashMismatch").await?;

    // An expired token, stored directly.
    let expired = TokenRecord {
        id: "exp001".into(),
        secret_sha256: sha2::Sha256::digest(b"0123456789abcdef").into(),
        expires: Some(Utc::now() - chrono::Duration::hours(1)),
        node: None,
        description: None,
        created: Some(Utc::now() - chrono::Duration::hours(2)),
    };
    Api::<Secret>::namespaced(c.client.clone(), "kedge-system")
        .create(&PostParams::default(), &expired.to_secret())
        .await?;
    let expired_tok = token::format_token(&hash, "exp001", "0123456789abcdef");
    expect_refusal(&b, &join_req(&expired_tok, "n1"), 401, "TokenExpired").await?;

    // Bound tokens.
    let bound = token::create(&c.client, &hash, None, Some("edge-b".into()), None).await?;
    expect_refusal(
        &b,
        &join_req(&bound, "someone-else"),
        403,
        "TokenBoundToOtherNode",
    )
    .await?;
    expect_refusal(&b, &join_req(&good, "Bad_Name"), 400, "InvalidNodeName").await?;
    let mut bad_csr = join_req(&good, "n1");
    bad_csr.csr =
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into();
    expect_refusal(&b, &bad_csr, 400, "InvalidCSR").await?;

    // A live node's name is refused unless forced or bound to it.
    let hello = proto::Hello {
        node_name: "edge-b".into(),
        info: Some(proto::NodeInfo::default()),
        ..Default::default()
    };
    lifecycle::node_connected(&c.client, "edge-b", &hello, None).await?;
    expect_refusal(&b, &join_req(&good, "edge-b"), 409, "NodeNameInUse").await?;
    let mut forced = join_req(&good, "edge-b");
    forced.force = true;
    assert_eq!(post_join(&b, &forced).await.0, 200);
    let mut by_binding = join_req(&bound, "");
    by_binding.node_name = String::new();
    assert_eq!(
        post_join(&b, &by_binding).await.0,
        200,
        "a bound token may omit the name"
    );

    // A deleted token no longer works.
    token::cli_delete(c.client.clone(), &parsed.id).await?;
    expect_refusal(&b, &join_req(&good, "n2"), 401, "InvalidToken").await?;
    assert!(
        token::cli_delete(c.client.clone(), &parsed.id)
            .await
            .is_err()
    );
    Ok(())
}

fn pod_json(name: &str, node: &str, extra_spec: serde_json::Value) -> Pod {
    let mut spec = json!({
        "nodeName": node,
        "containers": [{"name": "c", "image": "busybox"}],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

fn edge_node(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/edge": ""}},
    }))
    .unwrap()
}

/// Sorted `op key` lines, without the `kube-root-ca.crt` ConfigMap the service-account
/// admission adds to every pod (tested on its own below).
fn summary(changes: &[NodeChange]) -> Vec<String> {
    let mut out: Vec<String> = changes
        .iter()
        .filter(|c| !matches!(c, NodeChange::Upsert(o) if o.key.name == "kube-root-ca.crt"))
        .map(|c| match c {
            NodeChange::Upsert(o) => format!("upsert {}", o.key),
            NodeChange::Delete { key, .. } => format!("delete {key}"),
            NodeChange::Tombstone { key } => format!("tombstone {key}"),
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cache_holds_pods_their_references_and_tombstones() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    nodes.create(&pp, &edge_node("edge-1")).await?;
    let mut worker = edge_node("worker-1");
    worker.metadata.labels = None;
    nodes.create(&pp, &worker).await?;
    cms.create(
        &pp,
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}}))?,
    )
    .await?;
    cms.create(
        &pp,
        &serde_json::from_value(json!({"metadata": {"name": "unrelated"}}))?,
    )
    .await?;
    let refs = json!({
        "volumes": [{"name": "v", "configMap": {"name": "cfg"}}],
        "imagePullSecrets": [{"name": "missing"}],
    });
    pods.create(&pp, &pod_json("app", "edge-1", refs.clone()))
        .await?;
    pods.create(&pp, &pod_json("cloud-app", "worker-1", refs))
        .await?;

    let cache = EdgeCache::start(c.client.clone(), c.shutdown.clone()).await;
    within("edge cache sync", cache.wait_synced()).await?;
    assert!(cache.is_synced());
    assert_eq!(
        summary(&cache.desired("edge-1")),
        vec![
            "tombstone default/secret/missing",
            "upsert default/configmap/cfg",
            "upsert default/pod/app",
            "upsert null/node/edge-1",
        ]
    );
    assert!(
        cache.desired("worker-1").is_empty(),
        "non-edge nodes hold nothing"
    );
    assert_eq!(cache.pod_node("default", "app").as_deref(), Some("edge-1"));
    assert_eq!(cache.pod_node("default", "cloud-app"), None);
    assert!(cache.node_may_read("edge-1", &ResourceKey::parse("default/configmap/cfg")?));
    assert!(!cache.node_may_read(
        "edge-1",
        &ResourceKey::parse("default/configmap/unrelated")?
    ));
    // One edge node, one pod, and what it references (cfg, missing, and kube-root-ca.crt
    // when the API server's service-account admission projected it).
    let root_ca = ResourceKey::parse("default/configmap/kube-root-ca.crt")?;
    let refs = 2 + usize::from(cache.node_may_read("edge-1", &root_ca));
    assert_eq!(cache.sizes(), (1, 1, refs), "memory follows edge nodes");

    // Changes arrive per node.
    let mut rx = cache.subscribe();
    secrets
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "missing"}}))?,
        )
        .await?;
    let (node, change) = within("secret upsert", rx.recv()).await??;
    assert_eq!(node, "edge-1");
    assert!(
        matches!(&change, NodeChange::Upsert(o) if o.key.to_string() == "default/secret/missing")
    );

    // A new pod referencing a new ConfigMap: fetched and sent.
    cms.create(
        &pp,
        &serde_json::from_value(json!({"metadata": {"name": "cfg2"}}))?,
    )
    .await?;
    let env = json!({"containers": [{"name": "c", "image": "busybox", "envFrom": [{"configMapRef": {"name": "cfg2"}}]}]});
    pods.create(&pp, &pod_json("app2", "edge-1", env)).await?;
    eventually("cfg2 reaches edge-1", || async {
        let d = summary(&cache.desired("edge-1"));
        Ok(d.contains(&"upsert default/configmap/cfg2".to_owned())
            .then_some(()))
    })
    .await?;

    // Deleting the referenced Secret turns it into a tombstone.
    secrets.delete("missing", &DeleteParams::default()).await?;
    eventually("secret tombstone", || async {
        let d = summary(&cache.desired("edge-1"));
        Ok(d.contains(&"tombstone default/secret/missing".to_owned())
            .then_some(()))
    })
    .await?;

    // An edge node that appears after its pod: the pod is picked up.
    pods.create(&pp, &pod_json("early", "edge-late", json!({})))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cache.desired("edge-late").is_empty());
    nodes.create(&pp, &edge_node("edge-late")).await?;
    eventually("late edge node gets its pod", || async {
        Ok(cache
            .pod_node("default", "early")
            .filter(|n| n == "edge-late"))
    })
    .await?;

    // Removing the edge label drops the node and everything it held.
    let patch = json!({"metadata": {"labels": {"node-role.kubernetes.io/edge": null}}});
    nodes
        .patch(
            "edge-late",
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    eventually("unlabelled node forgotten", || async {
        Ok(
            (!cache.node_exists("edge-late") && cache.pod_node("default", "early").is_none())
                .then_some(()),
        )
    })
    .await?;
    Ok(())
}

/// Base (real time at the first reading) and readings of [`jumpy_clock`].
static JUMPY_BASE: AtomicI64 = AtomicI64::new(0);
static JUMPY_READS: AtomicI64 = AtomicI64::new(0);

/// A clock that is 30 s later every time it is read: a lifecycle round over many nodes,
/// squeezed into a few readings.
fn jumpy_clock() -> i64 {
    let _ = JUMPY_BASE.compare_exchange(0, Utc::now().timestamp_millis(), SeqCst, SeqCst);
    JUMPY_BASE.load(SeqCst) + 30_000 * JUMPY_READS.fetch_add(1, SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_ages_are_judged_at_the_lease_list_not_when_a_long_round_reaches_the_node()
-> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let names = ["edge-a", "edge-b", "edge-c", "edge-d"];
    for name in names {
        let hello = proto::Hello {
            node_name: name.into(),
            ..Default::default()
        };
        lifecycle::node_connected(&c.client, name, &hello, None).await?;
    }
    // One round (the first tick; the next is an hour away). Its clock moves 30 s per reading,
    // as a round over thousands of nodes moves on real time: judged against the clock when the
    // walk reaches them, the later nodes' fresh Leases would look older than the 40 s grace
    // (5,000 edges: ~800 Nodes Unknown with every Lease < 25 s old).
    let stop = c.shutdown.child_token();
    tokio::spawn(lifecycle::run_node_lifecycle(
        c.client.clone(),
        LifecycleConfig {
            grace: Duration::from_secs(40),
            check_every: Duration::from_secs(3600),
            eviction: false,
            clock: jumpy_clock,
        },
        stop.clone(),
    ));
    wait_reads(names.len() as i64).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    for name in names {
        let n = nodes.get(name).await?;
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert_eq!(
            lifecycle::ready_status(&n),
            Some("True"),
            "{name}: {taints:?}"
        );
        assert!(taints.is_empty(), "{name}: {taints:?}");
    }
    Ok(())
}

/// Waits until [`jumpy_clock`] was read at least `n` times (the round reached every node).
async fn wait_reads(n: i64) -> anyhow::Result<()> {
    eventually("the lifecycle round", || async {
        Ok((JUMPY_READS.load(SeqCst) >= n).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_lifecycle_marks_stale_nodes_unknown_taints_and_evicts() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();

    // A connected node: CIDR, status, Lease.
    let hello = proto::Hello {
        node_name: "edge-1".into(),
        info: Some(proto::NodeInfo {
            os: "linux".into(),
            arch: "amd64".into(),
            agent_version: "v0.1.0".into(),
            capacity: [("cpu".to_owned(), "2".to_owned())].into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    lifecycle::node_connected(&c.client, "edge-1", &hello, None).await?;
    let n = nodes.get("edge-1").await?;
    assert_eq!(
        n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        Some("10.244.0.0/24")
    );
    assert_eq!(lifecycle::ready_status(&n), Some("True"));
    let st = n.status.clone().unwrap_or_default();
    assert_eq!(st.node_info.map(|i| i.architecture), Some("amd64".into()));
    let lease = Api::<Lease>::namespaced(c.client.clone(), "kube-node-lease")
        .get("edge-1")
        .await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("edge-1")
    );
    lifecycle::node_connected(&c.client, "edge-2", &hello, None).await?;
    let n2 = nodes.get("edge-2").await?;
    assert_eq!(
        n2.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        Some("10.244.1.0/24")
    );

    let tol = |secs: Option<i64>| {
        json!({"tolerations": [{
            "key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": secs,
        }]})
    };
    pods.create(&pp, &pod_json("short", "edge-1", tol(Some(1))))
        .await?;
    pods.create(&pp, &pod_json("forever", "edge-1", tol(None)))
        .await?;

    // The edge stops renewing; the controller runs with a 1 s grace.
    let shutdown = c.shutdown.child_token();
    tokio::spawn(lifecycle::run_node_lifecycle(
        c.client.clone(),
        LifecycleConfig {
            grace: Duration::from_secs(1),
            check_every: Duration::from_millis(200),
            eviction: true,
            ..Default::default()
        },
        shutdown.clone(),
    ));
    let node = eventually("node Unknown and tainted", || async {
        let n = nodes.get("edge-1").await?;
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let tainted = taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute");
        Ok((lifecycle::ready_status(&n) == Some("Unknown") && tainted).then_some(n))
    })
    .await?;
    let ready = node
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    eventually("pod with tolerationSeconds 1 evicted", || async {
        let p = pods.get_opt("short").await?;
        Ok(p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await?;
    let forever = pods.get("forever").await?;
    assert!(
        forever.metadata.deletion_timestamp.is_none(),
        "a toleration without seconds never evicts"
    );

    // The edge is back (and keeps heartbeating): Ready, and the taints go.
    lifecycle::node_connected(&c.client, "edge-1", &hello, None).await?;
    let beat = shutdown.clone();
    let client = c.client.clone();
    tokio::spawn(async move {
        while !beat.is_cancelled() {
            if let Err(e) = lifecycle::heartbeat(&client, "edge-1").await {
                eprintln!("heartbeat: {e}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    eventually("taints removed after reconnect", || async {
        let n = nodes.get("edge-1").await?;
        let tainted = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| !t.is_empty());
        Ok((lifecycle::ready_status(&n) == Some("True") && !tainted).then_some(()))
    })
    .await?;
    shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cache_flood_of_pods_and_references_converges() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let pp = PostParams::default();
    for n in ["flood-1", "flood-2"] {
        nodes.create(&pp, &edge_node(n)).await?;
    }
    let cache = EdgeCache::start(c.client.clone(), c.shutdown.clone()).await;
    within("edge cache sync", cache.wait_synced()).await?;
    let mut rx = cache.subscribe();
    // 200 pods on two nodes referencing 20 ConfigMaps (half of which exist), created
    // concurrently with the ConfigMaps themselves.
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let cms = cms.clone();
        tasks.spawn(async move {
            let cm = serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}}))?;
            cms.create(&PostParams::default(), &cm).await?;
            anyhow::Ok(())
        });
    }
    for i in 0..200 {
        let pods = pods.clone();
        tasks.spawn(async move {
            let node = if i % 2 == 0 { "flood-1" } else { "flood-2" };
            let env = json!({"containers": [{"name": "c", "image": "busybox",
                "envFrom": [{"configMapRef": {"name": format!("cm-{}", i % 20)}}]}]});
            pods.create(
                &PostParams::default(),
                &pod_json(&format!("p-{i}"), node, env),
            )
            .await?;
            anyhow::Ok(())
        });
    }
    within("creating the flood", async {
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        anyhow::Ok(())
    })
    .await??;
    let want = |node: &str| {
        let d = summary(&cache.desired(node));
        let pods = d
            .iter()
            .filter(|l| l.starts_with("upsert default/pod/"))
            .count();
        let present = d
            .iter()
            .filter(|l| l.starts_with("upsert default/configmap/cm-"))
            .count();
        let tombs = d
            .iter()
            .filter(|l| l.starts_with("tombstone default/configmap/cm-"))
            .count();
        (pods, present, tombs)
    };
    // Each node: 100 pods; the 10 ConfigMaps of its parity half, 5 present and 5 absent.
    eventually(
        "flood converges (a stall here suggests a deadlock in the cache's commit path)",
        || async {
            Ok((want("flood-1") == (100, 5, 5) && want("flood-2") == (100, 5, 5)).then_some(()))
        },
    )
    .await?;
    // The broadcast kept up and carried the pods.
    let mut seen = 0;
    while let Ok((_, change)) = rx.try_recv() {
        if matches!(&change, NodeChange::Upsert(o) if o.key.kind == "pod") {
            seen += 1;
        }
    }
    assert!(seen >= 200, "saw {seen} pod upserts");
    Ok(())
}

/// A certificate record kept by an earlier version in the single Secret `kedge-node-certs`
/// is moved into the shards at start: its revocations still hold, its issued entries are
/// kept in the node's shard, and the old Secret is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_secret_record_moves_into_shards() -> anyhow::Result<()> {
    use cloudcore::join::revoke::{CERTS_SECRET, CertEntry, CertRecord, shard_name, shard_of};
    let c = Cluster::start().await?;
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(c.client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": "kedge-system"}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let now = Utc::now().timestamp();
    // Issued just now: the revocation watcher's first reconcile (it starts with the
    // Bootstrap) revokes entries of Nodes that do not exist only once they are older than
    // its margin, so "kept" stays issued whenever that pass runs.
    let entry = |node: &str, serial: &str| CertEntry {
        node: node.into(),
        node_uid: "u".into(),
        serial: serial.into(),
        not_after: now + 3600,
        issued_at: now,
    };
    let record = CertRecord {
        issued: vec![entry("kept", "a1")],
        revoked: vec![entry("gone", "b2")],
    };
    let legacy: Secret = serde_json::from_value(json!({
        "metadata": {"name": CERTS_SECRET, "namespace": "kedge-system"},
        "type": "kedge.io/node-certs",
        "data": {"certs.json": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD, serde_json::to_vec(&record)?)},
    }))?;
    let secrets = Api::<Secret>::namespaced(c.client.clone(), "kedge-system");
    secrets.create(&PostParams::default(), &legacy).await?;

    let b = Bootstrap::new(c.client.clone(), &[]).await?;
    assert!(b.is_revoked("b2"), "a revocation survives the move");
    assert!(!b.is_revoked("a1"));
    assert!(secrets.get_opt(CERTS_SECRET).await?.is_none());
    let shard = secrets.get(&shard_name(shard_of("kept"))).await?;
    assert_eq!(
        CertRecord::from_secret(&shard)
            .issued
            .first()
            .map(|e| e.serial.as_str()),
        Some("a1")
    );
    assert_eq!(
        shard.metadata.labels.unwrap_or_default()["kedge.io/node-certs"],
        "true"
    );
    // A second replica starting later finds nothing to move and the same revocations.
    let b2 = Bootstrap::new(c.client.clone(), &[]).await?;
    assert!(b2.is_revoked("b2"));
    Ok(())
}

/// A heartbeat with a fresh check renews only the Lease, or nothing when the edge renews it
/// (no read of the Node: a Ready condition changed meanwhile stays as it is); once the check
/// is older than allowed, the heartbeat reads the Node again and restores Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_reads_the_node_only_when_its_last_check_is_old() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let hello = proto::Hello {
        node_name: "hb".into(),
        ..Default::default()
    };
    lifecycle::node_connected(&c.client, "hb", &hello, None).await?;
    let (first, _) = lifecycle::heartbeat_with(
        &c.client,
        "hb",
        None,
        Duration::from_secs(30),
        LeaseRenewal::Hub,
    )
    .await?;
    let uid = nodes.get("hb").await?.metadata.uid;
    assert_eq!(first.uid, uid);
    let set_ready = |status: &'static str| {
        let nodes = nodes.clone();
        async move {
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status,
                "reason": "Test", "lastHeartbeatTime": null, "lastTransitionTime": null}]}});
            nodes
                .patch_status(
                    "hb",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Strategic(&patch),
                )
                .await
        }
    };
    set_ready("Unknown").await?;
    let renewed = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let before = renewed(leases.get("hb").await?);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = lifecycle::heartbeat_with(
        &c.client,
        "hb",
        Some(&first),
        Duration::from_secs(30),
        LeaseRenewal::Hub,
    )
    .await?;
    assert_eq!(again, (first.clone(), true), "a fresh check is kept");
    let after = renewed(leases.get("hb").await?);
    assert!(after > before, "the Lease is renewed");
    // An edge that renews its own Lease is left to it: a fresh check does nothing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let idle = lifecycle::heartbeat_with(
        &c.client,
        "hb",
        Some(&first),
        Duration::from_secs(30),
        LeaseRenewal::Edge,
    )
    .await?;
    assert_eq!(idle, (first.clone(), false));
    assert_eq!(renewed(leases.get("hb").await?), after, "not renewed twice");
    assert_eq!(
        lifecycle::ready_status(&nodes.get("hb").await?),
        Some("Unknown")
    );
    // Past `fresh_for` the Node is read and made Ready again — also when the edge renews
    // the Lease, which the hub then leaves alone.
    let (full, called) = lifecycle::heartbeat_with(
        &c.client,
        "hb",
        Some(&first),
        Duration::ZERO,
        LeaseRenewal::Edge,
    )
    .await?;
    assert!(called && full.at > first.at);
    assert_eq!(
        lifecycle::ready_status(&nodes.get("hb").await?),
        Some("True")
    );
    assert_eq!(renewed(leases.get("hb").await?), after);
    // The hub never trusts a check past the lifecycle grace.
    assert_eq!(
        cloudcore::hub::node_check_for(Duration::from_secs(40)),
        Duration::from_secs(25)
    );
    assert_eq!(
        cloudcore::hub::node_check_for(Duration::from_secs(4)),
        Duration::ZERO
    );
    assert_eq!(
        cloudcore::hub::node_check_for(Duration::from_secs(300)),
        Duration::from_secs(30)
    );
    Ok(())
}
