//! The cloud-edge link end to end with the real binaries: token → `edgecore join` → Node
//! Ready; Lease renewals; the edge receives a pod and its ConfigMap; kill -9 of the edge →
//! Ready=Unknown + unreachable taint (standalone's node-lifecycle emulation); restart →
//! Ready again with its cache; refusals at the hub and at join.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::edge::edge_objects;
use tests::{Standalone, bin, curl};

fn hub_url(s: &Standalone) -> String {
    s.hub.clone()
}

fn start_cloud(dir: &Path) -> Standalone {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("cloud.toml");
    std::fs::write(&cfg, "[lifecycle]\ngrace_seconds = 4\n").unwrap();
    Standalone::start(dir, &["--config", cfg.to_str().unwrap()]).unwrap()
}

fn token(s: &Standalone, extra: &[&str]) -> String {
    let out = Command::new(bin("cloudcore"))
        .args(["token", "create", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn join(hub: &str, token: &str, node: &str, root: &Path, no_start: bool) -> std::process::Output {
    let mut cmd = Command::new(bin("edgecore"));
    cmd.args([
        "join",
        "--server",
        hub,
        "--token",
        token,
        "--node-name",
        node,
    ])
    .arg("--root")
    .arg(root);
    // MQTT port 0: no device bus. A real metrics port: `edgecore status` asks the running
    // edge (its store is locked while it runs).
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cmd.args(["--mqtt-listen", "127.0.0.1:0", "--metrics-listen"])
        .arg(metrics.to_string());
    if no_start {
        cmd.arg("--no-start");
    }
    cmd.output().unwrap()
}

fn run_edge(root: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("edge.log"))
        .unwrap();
    Command::new(bin("edgecore"))
        .arg("run")
        .arg("--config")
        .arg(root.join("etc/kedge/edgecore.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn node(s: &Standalone, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", "node", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn ready(n: &Value) -> String {
    n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn join_ready_lease_sync_offline_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_cloud(&dir.path().join("cloud"));
    let hub = hub_url(&s);
    assert!(hub.starts_with("wss://127.0.0.1:"), "hub url {hub:?}");
    let tok = token(&s, &["--ttl", "1h"]);
    assert!(tok.starts_with("K10"), "{tok}");

    let root = dir.path().join("edge");
    let out = join(&hub, &tok, "edge-a", &root, true);
    assert!(
        out.status.success(),
        "join: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Idempotent.
    let out = join(&hub, &tok, "edge-a", &root, true);
    assert!(
        out.status.success(),
        "second join: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let started = Instant::now();
    let mut edge = run_edge(&root);
    wait_for("node edge-a Ready", Duration::from_secs(5), || {
        node(&s, "edge-a").is_some_and(|n| ready(&n) == "True")
    });
    let n = node(&s, "edge-a").unwrap();
    assert!(
        n["metadata"]["labels"]
            .get("node-role.kubernetes.io/edge")
            .is_some(),
        "{n}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let table = s.kubectl_ok(&["get", "nodes"]);
    assert!(
        table.contains("edge-a") && table.contains("Ready") && table.contains("edge"),
        "{table}"
    );

    // The Lease is renewed.
    let renew = || -> String {
        let l: Value = serde_json::from_str(&s.kubectl_ok(&[
            "get",
            "lease",
            "edge-a",
            "-n",
            "kube-node-lease",
            "-o",
            "json",
        ]))
        .unwrap();
        l["spec"]["renewTime"].as_str().unwrap_or("").to_string()
    };
    wait_for("a Lease for edge-a", Duration::from_secs(5), || {
        s.kubectl(&["get", "lease", "edge-a", "-n", "kube-node-lease"])
            .status
            .success()
    });
    let first = renew();
    wait_for(
        "the Lease renewTime to advance",
        Duration::from_secs(15),
        || renew() != first,
    );

    // A pod bound to the edge and the ConfigMap it references reach the edge's store.
    let before = edge_objects(&root);
    s.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-cfg, namespace: default}\ndata: {k: v}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: app, namespace: default}\nspec:\n  nodeName: edge-a\n  containers:\n  - name: c\n    image: busybox\n    envFrom: [{configMapRef: {name: app-cfg}}]\n");
    wait_for(
        "the pod and its ConfigMap at the edge",
        Duration::from_secs(10),
        || edge_objects(&root) >= before + 2,
    );

    // kill -9 the edge: Ready=Unknown and the unreachable taint within the grace period.
    edge.kill().unwrap();
    edge.wait().unwrap();
    let took = wait_for("edge-a Ready=Unknown", Duration::from_secs(15), || {
        node(&s, "edge-a").is_some_and(|n| ready(&n) == "Unknown")
    });
    assert!(took < Duration::from_secs(12), "{took:?}");
    let n = node(&s, "edge-a").unwrap();
    let taints = n["spec"]["taints"].to_string();
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );

    // Restart from its own store: Ready again, taint gone, objects still held.
    let held = edge_objects(&root);
    assert!(
        held >= before + 2,
        "the edge keeps its cache offline: {held}"
    );
    let mut edge = run_edge(&root);
    wait_for("edge-a Ready again", Duration::from_secs(10), || {
        node(&s, "edge-a").is_some_and(|n| ready(&n) == "True")
    });
    wait_for(
        "the unreachable taint removed",
        Duration::from_secs(10),
        || {
            node(&s, "edge-a")
                .is_some_and(|n| !n["spec"]["taints"].to_string().contains("unreachable"))
        },
    );
    let _ = edge.kill();
    let _ = edge.wait();
}

#[test]
fn refusals_at_join_and_hub() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_cloud(&dir.path().join("cloud"));
    let hub = hub_url(&s);
    let root = dir.path().join("edge");
    // Wrong secret, wrong CA pin, garbage: one line, non-zero exit.
    let good = token(&s, &["--ttl", "1h"]);
    let (pin, creds) = good.split_once("::").unwrap();
    let (id, _) = creds.split_once('.').unwrap();
    let wrong_secret = format!("{pin}::{id}.0000000000000000");
    let wrong_pin = format!("K10{}::{creds}", "0".repeat(64));
    for (bad, what) in [
        (wrong_secret.as_str(), "wrong secret"),
        (wrong_pin.as_str(), "wrong CA pin"),
        ("garbage", "garbage"),
    ] {
        let out = join(&hub, bad, "edge-x", &root, true);
        assert!(!out.status.success(), "{what} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{what}: an error line");
    }
    // Unreachable server.
    let out = join("wss://127.0.0.1:1", &good, "edge-x", &root, true);
    assert!(!out.status.success());
    // The WebSocket route wants a node certificate.
    let ca = dir.path().join("node-ca.crt");
    let (code, body) = curl(&[
        "-k",
        &format!("{}/ca.crt", hub.replace("wss://", "https://")),
    ]);
    assert_eq!(code, 200);
    std::fs::write(&ca, body).unwrap();
    let (code, _) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        &format!("{}/v1/connect", hub.replace("wss://", "https://")),
    ]);
    assert!(code == 401 || code == 403, "no client certificate: {code}");
    // An expired token.
    let short = token(&s, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let out = join(&hub, &short, "edge-y", &root, true);
    assert!(!out.status.success(), "expired token");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("expire"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[path = "link_faults/support.rs"]
mod support;

use tests::edge::free_port;

/// The acceptance run: 20 edges, 1,000 ConfigMap updates to them,
/// `kill -9` of cloudcore as soon as the API acknowledged the last one (the
/// hub still has them in flight); after the restart every edge converges to
/// exactly the API's state, and no edge's journal shows a key going back to
/// an older resourceVersion or a deleted incarnation coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_cloud_with_1000_updates_in_flight_to_20_edges() {
    const EDGES: usize = 20;
    const CMS: usize = 5;
    const ROUNDS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cloud = support::Cloud::start(&dir.path().join("cloud"), Some(port), 15, 45);
    let client = cloud.client().await;
    let mut edges = Vec::new();
    for i in 0..EDGES {
        let name = format!("acc-{i:02}");
        let mut edge = support::Edge::join(&cloud, &name, &dir.path().join(&name));
        edge.start();
        support::create_app(&client, &name, &format!("t-a{i:02}"), CMS).await;
        edges.push(edge);
    }
    let keys: Vec<Vec<String>> = (0..EDGES)
        .map(|i| support::cm_keys(&format!("t-a{i:02}"), CMS, true))
        .collect();
    for (edge, keys) in edges.iter().zip(&keys) {
        let want = support::api_state(&client, keys).await;
        tests::eventually(
            &format!("{} synced", edge.name),
            Duration::from_secs(90),
            || async { edge.converged(&want) },
        )
        .await;
    }

    // 1,000 updates: every round touches each edge's 5 ConfigMaps.
    for _ in 0..ROUNDS {
        let client = &client;
        futures::future::join_all((0..EDGES).map(|i| async move {
            support::update_cms(client, &format!("t-a{i:02}"), CMS, 1).await;
        }))
        .await;
    }
    cloud.kill9();
    let at_kill: Vec<support::State> = edges.iter().map(|e| e.journal().held).collect();
    let cloud = support::Cloud::start(&dir.path().join("cloud"), Some(port), 15, 45);
    let client = cloud.client().await;
    let started = Instant::now();
    let mut behind = 0;
    for ((edge, keys), held) in edges.iter().zip(&keys).zip(&at_kill) {
        let want = support::api_state(&client, keys).await;
        assert_eq!(want.len(), CMS + 1);
        behind += usize::from(want.iter().any(|(k, v)| held.get(k) != Some(v)));
        edge.wait_converged_to_api(&client, keys, Duration::from_secs(120))
            .await;
    }
    eprintln!(
        "{behind} of {EDGES} edges were behind at the kill; all converged {:?} after the restart",
        started.elapsed()
    );
    for mut edge in edges {
        edge.assert_journal_clean();
        edge.stop();
    }
}

/// cloudcore restarted (kill -9) again and again, sometimes while its caches
/// are still loading: sessions wait in Syncing until the caches are synced,
/// so no edge is ever told to delete an object it should keep — not even
/// for a moment — and every edge converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_restarts_while_caches_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cloud = support::Cloud::start(&dir.path().join("cloud"), Some(port), 15, 45);
    let client = cloud.client().await;
    // Objects the caches must list (and filter out) before they are synced.
    support::create_app(&client, "nobody", "bulk", 1500).await;
    let mut edges = Vec::new();
    for i in 0..2 {
        let name = format!("rl-{i}");
        let mut edge = support::Edge::join(&cloud, &name, &dir.path().join(&name));
        edge.start();
        support::create_app(&client, &name, &format!("t-rl{i}"), 60).await;
        edges.push(edge);
    }
    let keys: Vec<Vec<String>> = (0..2)
        .map(|i| support::cm_keys(&format!("t-rl{i}"), 60, true))
        .collect();
    for (edge, keys) in edges.iter().zip(&keys) {
        let want = support::api_state(&client, keys).await;
        tests::eventually("edges synced", Duration::from_secs(60), || async {
            edge.converged(&want)
        })
        .await;
    }
    // Kill, restart, and kill again after a short, varying time — while the
    // caches load and the edges' sessions wait in Syncing — then once more
    // after the edges resynced.
    for (round, pause_ms) in [50u64, 250, 600, 1500].into_iter().enumerate() {
        cloud.kill9();
        cloud = support::Cloud::start(&dir.path().join("cloud"), Some(port), 15, 45);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        if round == 1 {
            // A change while the edges are disconnected or syncing.
            let client = cloud.client().await;
            support::update_cms(&client, "t-rl0", 3, 1).await;
        }
    }
    let client = cloud.client().await;
    for (edge, keys) in edges.iter().zip(&keys) {
        edge.wait_converged_to_api(&client, keys, Duration::from_secs(90))
            .await;
        let journal = edge.journal();
        let removed: Vec<_> = keys
            .iter()
            .filter(|k| journal.removals.contains_key(*k))
            .collect();
        assert!(
            removed.is_empty(),
            "{}: the cloud told the edge to delete objects it should keep: {removed:?}",
            edge.name
        );
    }
    for mut edge in edges {
        edge.assert_journal_clean();
        edge.stop();
    }
}
