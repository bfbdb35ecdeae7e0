//! Several `cloudcore run` replicas serving one cluster (design: "Scaling out"), with the
//! real binaries: a `cloudcore standalone` plays the cluster (API server, and its
//! node-lifecycle emulation plays kube-controller-manager), two `cloudcore run` replicas
//! authenticate as the chart's ServiceAccount (`tests::replica`), and edges reach them
//! through a least-connections loopback balancer (`tests::proxy::Proxy::balance`, the
//! Service in front of the hub port).
//!
//! What the edges hold is read from their delivery journals (see `link_faults.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "link_faults/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use support::{Cloud, Edge, State, api_state, cm_keys, create_app, update_cms};
use tests::edge::free_addr;
use tests::proxy::Proxy;
use tests::replica::{Replica, service_account_kubeconfig};

/// Seconds without a Lease renewal before the standalone's node-lifecycle emulation turns a
/// node Unknown (Kubernetes' default is 40–50 s; tighter here so a slow failover shows).
const GRACE: u64 = 10;
/// Seconds between an edge's Node status reports and Lease renewals (default 10).
const STATUS_INTERVAL: u64 = 2;

/// Replaces the first `key = ...` line of the edge's config.
fn set_config(edge: &Edge, key: &str, value: &str) {
    let path = edge.config();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.trim_start().starts_with(&format!("{key} =")) {
                found = true;
                format!("{key} = {value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(found, "no {key} in {}:\n{text}", path.display());
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn devices_api(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("devices.kubeedge.io", "v1beta1", kind);
    Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk))
}

/// A Device bound to `node` using the shared DeviceModel `replica-model`.
fn device_yaml(node: &str, name: &str) -> String {
    format!(
        r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{name: replica-model, namespace: default}}
spec:
  protocol: virtual
  properties:
  - {{name: temperature, type: INT, accessMode: ReadWrite}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: {name}, namespace: default}}
spec:
  deviceModelRef: {{name: replica-model}}
  nodeName: {node}
  protocol: {{protocolName: virtual}}
  properties:
  - {{name: temperature}}
"#
    )
}

/// The API's (uid, resourceVersion) of ConfigMap/pod keys plus `device` and `devicemodel`
/// keys.
async fn api_state_all(client: &kube::Client, keys: &[String]) -> State {
    let (dev_keys, rest): (Vec<String>, Vec<String>) = keys
        .iter()
        .cloned()
        .partition(|k| k.contains("/device/") || k.contains("/devicemodel/"));
    let mut out = api_state(client, &rest).await;
    for key in dev_keys {
        let kind = if key.contains("/devicemodel/") {
            "DeviceModel"
        } else {
            "Device"
        };
        let name = key.rsplit('/').next().unwrap();
        if let Some(o) = devices_api(client, kind).get_opt(name).await.unwrap() {
            out.insert(
                key.clone(),
                (
                    o.metadata.uid.unwrap_or_default(),
                    o.metadata.resource_version.unwrap_or_default(),
                ),
            );
        }
    }
    out
}

/// Waits (60 s) until `edge` holds exactly the API's current state of `keys` (re-read at
/// every poll); on timeout fails with the differences and the edge's log.
async fn wait_converged(edge: &Edge, client: &kube::Client, keys: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let want = api_state_all(client, keys).await;
        if edge.converged(&want).is_some() {
            return;
        }
        if Instant::now() > deadline {
            edge.wait_converged(&want, Duration::ZERO).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A twin report of `device` published on an edge's MQTT broker (KubeEdge's topic schema).
fn report(mqtt: &str, device: &str, value: &str) -> bool {
    let (host, port) = mqtt.rsplit_once(':').unwrap();
    let msg = serde_json::json!({
        "event_id": format!("{device}-{value}"),
        "timestamp": now_ms(),
        "twin": {"temperature": {"actual": {"value": value}, "metadata": {"type": "int"}}},
    });
    Command::new("mosquitto_pub")
        .args(["-h", host, "-p", port, "-q", "1"])
        .args([
            "-t",
            &format!("kedge/events/device/default/{device}/twin/update"),
        ])
        .args(["-m", &msg.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The reported `temperature` of `device` in its status.
async fn reported(client: &kube::Client, device: &str) -> Option<String> {
    let d = devices_api(client, "Device").get_opt(device).await.ok()??;
    let status = d.data.get("status")?;
    status["twins"]
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == "temperature")
        .and_then(|t| t["reported"]["value"].as_str().map(str::to_owned))
}

/// What the sampler saw.
#[derive(Debug, Default)]
struct Samples {
    /// Rounds taken.
    rounds: usize,
    /// "node: Ready=X at t" for every sample where a node was not Ready=True.
    not_ready: Vec<String>,
    /// Distinct Lease renewTimes seen per node (ms), in order.
    renewals: BTreeMap<String, Vec<i64>>,
}

/// Samples the nodes' Ready condition and Leases every 200 ms until stopped.
fn sample(
    client: kube::Client,
    nodes: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Samples> {
    tokio::spawn(async move {
        let node_api: Api<Node> = Api::all(client.clone());
        let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
        let mut s = Samples::default();
        while !stop.load(Ordering::Relaxed) {
            s.rounds += 1;
            for n in &nodes {
                let ready = match node_api.get_opt(n).await {
                    Ok(Some(node)) => node
                        .status
                        .and_then(|st| st.conditions)
                        .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"))
                        .map(|c| c.status)
                        .unwrap_or_default(),
                    Ok(None) => "<no node>".into(),
                    // The API itself did not answer: not a node state.
                    Err(_) => continue,
                };
                if ready != "True" {
                    s.not_ready
                        .push(format!("{n}: Ready={ready} at {}", now_ms()));
                }
                if let Ok(Some(l)) = leases.get_opt(n).await
                    && let Some(t) = l.spec.and_then(|sp| sp.renew_time)
                {
                    let ms = t.0.as_millisecond();
                    let seen = s.renewals.entry(n.clone()).or_default();
                    if seen.last() != Some(&ms) {
                        seen.push(ms);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        s
    })
}

/// A standalone cluster, two replicas (a, b) behind a balancer, and edges joined through it.
struct Fleet {
    cloud: Cloud,
    replicas: [Replica; 2],
    proxy: Proxy,
    names: Vec<String>,
    edges: Vec<Edge>,
    /// Each edge's MQTT broker address.
    mqtt: Vec<String>,
    /// Which replica (0 = a, 1 = b) each edge's session landed on.
    holder: Vec<usize>,
}

impl Fleet {
    /// Starts everything; the `n` edges are started one at a time, each once the previous is
    /// Ready and counted on a replica, so least connections alternates a, b, a, b. `edge_cfg`:
    /// extra `(key, value)` lines to set in each edge's config.
    async fn start(dir: &std::path::Path, n: usize, edge_cfg: &[(&str, &str)]) -> Fleet {
        let cloud = Cloud::start_with_grace(&dir.join("cloud"), None, 2, 6, GRACE);
        let kubeconfig = service_account_kubeconfig(&cloud.s, dir).unwrap();
        let replica_cfg = "[hub]\nping_seconds = 2\nidle_seconds = 6\n";
        let replicas = [
            Replica::start(&dir.join("replica-a"), &kubeconfig, replica_cfg).unwrap(),
            Replica::start(&dir.join("replica-b"), &kubeconfig, replica_cfg).unwrap(),
        ];
        let proxy = Proxy::balance(&[replicas[0].hub_addr, replicas[1].hub_addr]).unwrap();
        let names: Vec<String> = (0..n).map(|i| format!("rep-{i}")).collect();
        let mut edges = Vec::new();
        let mut mqtt = Vec::new();
        let mut holder = Vec::new();
        let mut prev = vec![0u64; 2];
        for (i, name) in names.iter().enumerate() {
            let mut edge = Edge::join_via(
                &cloud,
                &proxy.wss_url(),
                name,
                &dir.join(format!("edge-{i}")),
            );
            let broker = free_addr();
            set_config(&edge, "mqtt_listen", &format!("\"{broker}\""));
            set_config(&edge, "interval_secs", &STATUS_INTERVAL.to_string());
            for (k, v) in edge_cfg {
                set_config(&edge, k, v);
            }
            edge.start();
            cloud
                .wait_ready(name, "True", Duration::from_secs(60))
                .await;
            let counts = tests::eventually(
                &format!("{name} counted on a replica"),
                Duration::from_secs(20),
                || async {
                    let counts: Vec<u64> = replicas
                        .iter()
                        .map(|r| r.connected_nodes().unwrap_or(0))
                        .collect();
                    (counts.iter().sum::<u64>() == i as u64 + 1).then_some(counts)
                },
            )
            .await;
            holder.push((0..2).find(|r| counts[*r] > prev[*r]).unwrap());
            prev = counts;
            edges.push(edge);
            mqtt.push(broker);
        }
        Fleet {
            cloud,
            replicas,
            proxy,
            names,
            edges,
            mqtt,
            holder,
        }
    }
}

/// Waits until `edge` is live in a session after its first, and returns when (its own
/// clock, ms) it went live (its status endpoint refreshes every few seconds).
async fn live_again_at(edge: &Edge) -> i64 {
    let since = tests::eventually(
        &format!("{} live in a second session", edge.name),
        Duration::from_secs(60),
        || async {
            let st = edge.status();
            (st["link"] == "live" && st["sessions"].as_u64() >= Some(2))
                .then(|| st["since"].as_str().map(str::to_owned))
                .flatten()
        },
    )
    .await;
    let since: k8s_openapi::jiff::Timestamp = since.parse().unwrap();
    since.as_millisecond()
}

/// Two replicas, four edges (two on each, through the balancer), kill -9 of one replica:
/// its edges reconnect to the other, and
/// - no node's Ready condition leaves True at any sample (the Lease keeps being renewed
///   within the lifecycle grace),
/// - every object reaches every edge exactly — including ConfigMaps, pods and Devices
///   created, updated and deleted while the replica was dead,
/// - device reports made during the failover reach `Device.status`,
/// - each node's Lease is renewed after the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_replica_moves_its_edges_to_the_other_and_nothing_is_lost() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Fleet {
        cloud,
        mut replicas,
        proxy,
        names,
        edges,
        mqtt,
        holder,
    } = Fleet::start(dir.path(), 4, &[]).await;
    let client = cloud.client().await;
    assert_eq!(holder, [0, 1, 0, 1], "least connections alternates");
    assert_eq!(proxy.open_per_backend(), [2, 2]);

    // The workload: per node a pod with three ConfigMaps and a Device.
    for n in &names {
        create_app(&client, n, &format!("{n}-a"), 3).await;
        cloud.s.apply(&device_yaml(n, &format!("{n}-dev")));
    }
    let keys = |n: &str, with_b: bool| {
        let mut k = cm_keys(&format!("{n}-a"), 3, true);
        k.push(format!("default/device/{n}-dev"));
        k.push("default/devicemodel/replica-model".into());
        if with_b {
            k.extend(cm_keys(&format!("{n}-b"), 2, true));
            k.push(format!("default/device/{n}-dev2"));
        }
        k
    };
    for (edge, n) in edges.iter().zip(&names) {
        wait_converged(edge, &client, &keys(n, false)).await;
    }
    // The bus knows the Device before the failover starts.
    for (i, n) in names.iter().enumerate() {
        let dev = format!("{n}-dev");
        tests::eventually(
            &format!("{dev} report"),
            Duration::from_secs(30),
            || async {
                report(&mqtt[i], &dev, "1");
                (reported(&client, &dev).await.as_deref() == Some("1")).then_some(())
            },
        )
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(client.clone(), names.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // kill -9 of replica a.
    let killed_at = now_ms();
    let kill = Instant::now();
    replicas[0].kill9();

    // While its edges reconnect: reports on every edge, and new, changed and deleted
    // objects for every node.
    for (i, n) in names.iter().enumerate() {
        assert!(report(&mqtt[i], &format!("{n}-dev"), "2"), "publish on {n}");
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for n in &names {
        create_app(&client, n, &format!("{n}-b"), 2).await;
        cloud.s.apply(&device_yaml(n, &format!("{n}-dev2")));
        update_cms(&client, &format!("{n}-a"), 3, 1).await;
        // The pod still references it: the edge must drop it (a tombstone).
        cms.delete(&format!("{n}-a-2"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let changes_done = kill.elapsed();

    // All four edges on b.
    tests::eventually(
        "every edge on replica b",
        Duration::from_secs(60),
        || async { (replicas[1].connected_nodes() == Some(4)).then_some(()) },
    )
    .await;
    let moved = kill.elapsed();
    assert_eq!(proxy.open_per_backend(), [0, 4]);

    for (edge, n) in edges.iter().zip(&names) {
        wait_converged(edge, &client, &keys(n, true)).await;
        let held = edge.journal().held;
        assert!(
            !held.contains_key(&format!("default/configmap/{n}-a-2")),
            "{n} still holds the ConfigMap deleted during the failover"
        );
        edge.assert_journal_clean();
    }
    let converged = kill.elapsed();
    // Reconnect + resync of the moved edges, by their own clocks: when they went live again.
    let mut resynced_ms = 0;
    for (edge, _) in edges.iter().zip(&holder).filter(|(_, on)| **on == 0) {
        resynced_ms = resynced_ms.max(live_again_at(edge).await - killed_at);
    }
    for n in &names {
        let dev = format!("{n}-dev");
        tests::eventually(
            &format!("the failover report of {dev} in its status"),
            Duration::from_secs(30),
            || async { (reported(&client, &dev).await.as_deref() == Some("2")).then_some(()) },
        )
        .await;
    }
    let reported_in = kill.elapsed();

    // Leases keep being renewed after the failover: two more renewals for every node.
    tokio::time::sleep(Duration::from_secs(2 * STATUS_INTERVAL + 1)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    assert!(
        samples.not_ready.is_empty(),
        "Ready left True during the failover ({} samples):\n{}",
        samples.rounds,
        samples.not_ready.join("\n")
    );
    let mut max_gap = 0;
    for n in &names {
        let seen = samples.renewals.get(n).cloned().unwrap_or_default();
        let after = seen.iter().filter(|t| **t > killed_at).count();
        assert!(
            after >= 2,
            "{n}: {after} Lease renewals after the kill ({seen:?})"
        );
        let gap = seen.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        max_gap = max_gap.max(gap);
    }
    assert!(
        max_gap < (GRACE * 1000) as i64,
        "a Lease went {max_gap} ms without renewal"
    );
    assert!(replicas[1].ready(), "the surviving replica stays ready");
    eprintln!(
        "failover: moved edges live (resynced) on b {resynced_ms} ms after the kill; changes \
         made {changes_done:?} after the kill, all edges counted on b at {moved:?}, \
         converged at {converged:?}, reports in Device status at {reported_in:?}; \
         longest Lease renewal gap {max_gap} ms; {} samples; test took {:?}",
        samples.rounds,
        started.elapsed()
    );
}

/// A hung replica (SIGSTOP: alive, sockets open, nothing answered) keeps its edges until they
/// notice the silence — after the idle timeout the replica announced (6 s here, 45 s by
/// default) — then they move to the other replica. Resumed, the stale replica drops its dead
/// sessions and does not fight over the nodes: Ready stays True, the edge on b is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_keeps_its_edges_until_the_idle_timeout_then_they_move() {
    const IDLE_MS: i64 = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let Fleet {
        cloud,
        replicas,
        proxy: _proxy,
        names,
        edges,
        holder,
        ..
    } = Fleet::start(dir.path(), 2, &[("connect_timeout_secs", "3")]).await;
    assert_eq!(holder, [0, 1], "least connections alternates");

    let paused_at = now_ms();
    replicas[0].pause();
    let took = live_again_at(&edges[0]).await - paused_at;
    assert!(
        took >= IDLE_MS - 1_000,
        "the edge left the hung replica after {took} ms, before the {IDLE_MS} ms idle timeout"
    );
    // Idle timeout, back-off, possibly one handshake into the hung replica (3 s timeout).
    assert!(
        took < 30_000,
        "the edge took {took} ms to leave a hung replica"
    );
    cloud
        .wait_ready(&names[0], "True", Duration::from_secs(30))
        .await;
    assert_eq!(replicas[1].connected_nodes(), Some(2));

    // Resumed: a's sessions find their connections closed; nobody writes anything but True.
    let client = cloud.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(client, names.clone(), stop.clone());
    replicas[0].resume();
    tests::eventually(
        "the resumed replica dropping its dead sessions",
        Duration::from_secs(30),
        || async { (replicas[0].connected_nodes() == Some(0)).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2 * STATUS_INTERVAL + 1)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    assert!(
        samples.not_ready.is_empty(),
        "Ready left True after the hung replica resumed:\n{}",
        samples.not_ready.join("\n")
    );
    assert_eq!(replicas[1].connected_nodes(), Some(2));
    assert_eq!(
        edges[1].status()["sessions"],
        1,
        "the edge on b kept its one session"
    );
    eprintln!("hung replica: its edge moved {took} ms after SIGSTOP (idle timeout {IDLE_MS} ms)");
}

/// Both replicas started at once against a cluster without a node CA end up with one: each
/// mints a candidate and creates the Secret, the loser of the race (409) loads the winner's.
/// The standalone's own hub created a CA when it started, so the test deletes it first;
/// that hub serves no edge here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_agree_on_the_node_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), None, 2, 6);
    let kubeconfig = service_account_kubeconfig(&cloud.s, dir.path()).unwrap();
    cloud
        .s
        .kubectl_ok(&["delete", "secret", "kedge-node-ca", "-n", "kedge-system"]);

    let a = Replica::spawn(&dir.path().join("replica-a"), &kubeconfig, "").unwrap();
    let b = Replica::spawn(&dir.path().join("replica-b"), &kubeconfig, "").unwrap();
    let (a, b) = (a.wait().unwrap(), b.wait().unwrap());

    let secrets: Api<Secret> = Api::namespaced(cloud.client().await, "kedge-system");
    let secret = secrets.get("kedge-node-ca").await.unwrap();
    let stored = secret
        .data
        .and_then(|d| d.get("ca.crt").cloned())
        .map(|b| String::from_utf8(b.0).unwrap())
        .expect("the Secret holds ca.crt");
    for r in [&a, &b] {
        let url = r.hub.replace("wss://", "https://") + "/ca.crt";
        let (code, served) = tests::curl(&["-k", &url]);
        assert_eq!(code, 200, "GET {url}");
        assert_eq!(
            served.trim(),
            stored.trim(),
            "{} serves another CA than the Secret",
            r.hub
        );
    }
    let created = [&a, &b]
        .iter()
        .filter(|r| {
            r.log()
                .lines()
                .any(|l| l.contains("created the node CA") && !l.contains("another replica"))
        })
        .count();
    let adopted = [&a, &b]
        .iter()
        .filter(|r| {
            r.log()
                .contains("another replica created the node CA first")
        })
        .count();
    assert_eq!(created, 1, "exactly one replica created the CA");
    eprintln!(
        "node CA: one created, {adopted} replica(s) lost the create race (409) and adopted it"
    );

    // An edge joined through one replica is served by the other (one trust root).
    let mut edge = Edge::join_via(&cloud, &a.hub, "ca-edge", &dir.path().join("edge"));
    edge.point_at(&b.hub);
    edge.start();
    cloud
        .wait_ready("ca-edge", "True", Duration::from_secs(60))
        .await;
    tests::eventually(
        "the edge's session counted on replica b",
        Duration::from_secs(20),
        || async { (b.connected_nodes() == Some(1)).then_some(()) },
    )
    .await;
}
