//! EdgeHub against a tiny fake cloud (proto + tokio-tungstenite over mutual
//! TLS on 127.0.0.1:0, rcgen certificates):
//! - the inventory follows HELLO/HELLO_ACK, before any upstream write;
//! - cloud objects are acked, and what was acked survives `kill -9`;
//! - a restart with the same data dir reports the same inventory;
//! - outbox entries survive a restart and leave only on the cloud's ACK;
//!   a permanent API error drops them and reports a Warning Event;
//! - SIGTERM closes the WebSocket cleanly and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{FakeCloud, Pki, T};
use edgecore::config::{Config, PkiConfig, ServerUrl};
use edgecore::hub::link::{Link, LinkConfig};
use edgecore::hub::{HubConfig, HubDeps, HubStatus};
use edgecore::outbox::{Outbox, Upstream};
use edgecore::store::{Store, StoreConfig, StoreError};
use edgecore::telemetry::Metrics;
use proto::{Ack, Frame, Hello, Kind, Op, ResourceKey, Response};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

struct Edge {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    outbox: Outbox,
    reader: edgecore::meta::MetaReader,
    status: watch::Receiver<HubStatus>,
    metrics: Metrics,
}

async fn open_store(dir: &std::path::Path) -> Store {
    for _ in 0..200 {
        match Store::open(dir, &StoreConfig::default()) {
            Ok(s) => return s,
            Err(StoreError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("store still locked after 4 s: the previous edge did not release it");
}

async fn start_edge(dir: &std::path::Path, pki: &PkiConfig, server: &str) -> Edge {
    let metrics = Metrics::new();
    let store = open_store(dir).await;
    let (meta, reader) = edgecore::meta::start(store.clone(), metrics.clone()).unwrap();
    let outbox = Outbox::open(store, metrics.clone()).unwrap();
    let tls = edgecore::pki::link_client_config_from(pki).unwrap();
    let (tx, status) = watch::channel(HubStatus::default());
    let config = HubConfig {
        server: ServerUrl::parse(server).unwrap(),
        tls: Arc::new(tls),
        pki: None,
        link: LinkConfig {
            backoff_initial: Duration::from_millis(50),
            ..LinkConfig::default()
        },
        hello: Hello {
            node_name: "edge-1".into(),
            ..Hello::default()
        },
        connect_timeout: Duration::from_secs(5),
        grace: Duration::from_secs(5),
    };
    let deps = HubDeps {
        meta,
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        status: tx,
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(edgecore::hub::run(config, deps, shutdown.clone()));
    Edge {
        shutdown,
        task,
        outbox,
        reader,
        status,
        metrics,
    }
}

impl Edge {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(T, self.task)
            .await
            .expect("the hub did not stop within 10 s of shutdown")
            .unwrap();
    }

    async fn wait_link(&mut self, link: Link) {
        tokio::time::timeout(T, self.status.wait_for(|s| s.link == link))
            .await
            .unwrap_or_else(|_| panic!("link never became {link:?}"))
            .unwrap();
    }

    async fn wait_outbox_depth(&self, depth: usize) {
        let deadline = tokio::time::Instant::now() + T;
        while self.outbox.depth() != depth {
            assert!(
                tokio::time::Instant::now() < deadline,
                "outbox depth stayed {} (expected {depth})",
                self.outbox.depth()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn cm(name: &str) -> ResourceKey {
    ResourceKey::parse(&format!("default/configmap/{name}")).unwrap()
}

fn pod_status(name: &str) -> Upstream {
    let key = ResourceKey::parse(&format!("default/pod/{name}")).unwrap();
    Upstream::request(
        Op::PatchStatus,
        &key,
        &serde_json::json!({"status": {"phase": "Running"}}),
    )
}

/// Reads frames until an ACK covering `up_to`.
async fn wait_ack(conn: &mut common::CloudConn, up_to: u64) {
    loop {
        let (f, _) = conn.recv_until(Kind::Ack).await;
        if f.control::<Ack>().unwrap().up_to >= up_to {
            return;
        }
    }
}

#[tokio::test]
async fn inventory_acks_restart_and_outbox() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new("edge-1");
    let node_pki = pki.write_node_files(&tmp.path().join("pki"));
    let dir = common::data_dir(tmp.path());
    let cloud = FakeCloud::bind(&pki).await;

    // Session 1: an upstream write is queued before the edge ever connects.
    let mut edge = start_edge(&dir, &node_pki, &cloud.server()).await;
    edge.outbox
        .put("pod-status/a", pod_status("a"))
        .await
        .unwrap();
    let mut conn = cloud.accept().await;
    let (hello, inventory, before) = conn.handshake().await;
    assert_eq!(hello.node_name, "edge-1");
    assert!(inventory.is_empty());
    assert!(
        before.is_empty(),
        "nothing may precede the inventory: {before:?}"
    );
    let (req, _) = conn.recv_until(Kind::Request).await;
    assert_eq!((req.id, req.op().unwrap()), (1, Op::PatchStatus));
    assert_eq!(req.route.as_ref().unwrap().resource, "default/pod/a");

    // Cloud objects and SYNCED: acked once durable, then Live.
    conn.send(&Frame::upsert(
        1,
        &cm("c1"),
        "u1",
        "5",
        br#"{"kind":"ConfigMap"}"#.to_vec(),
    ))
    .await;
    conn.send(&Frame::upsert(
        2,
        &cm("c2"),
        "u2",
        "6",
        br#"{"kind":"ConfigMap"}"#.to_vec(),
    ))
    .await;
    conn.send(&Frame::synced(3)).await;
    wait_ack(&mut conn, 3).await;
    edge.wait_link(Link::Live).await;
    assert_eq!(edge.reader.snapshot().len(), 2);

    // The cloud never acked the REQUEST: it must survive the restart.
    edge.stop().await;
    assert!(
        conn.try_recv().await.is_none(),
        "edge should close the WebSocket"
    );

    let mut edge = start_edge(&dir, &node_pki, &cloud.server()).await;
    assert_eq!(edge.outbox.depth(), 1);
    assert_eq!(edge.reader.snapshot().len(), 2);
    let mut conn = cloud.accept().await;
    let (_, inventory, _) = conn.handshake().await;
    let inv: Vec<_> = inventory
        .iter()
        .map(|e| (e.key.as_str(), e.uid.as_str(), e.resource_version.as_str()))
        .collect();
    assert_eq!(
        inv,
        vec![
            ("default/configmap/c1", "u1", "5"),
            ("default/configmap/c2", "u2", "6")
        ]
    );
    let (req, _) = conn.recv_until(Kind::Request).await;
    assert_eq!(req.id, 1, "ids restart at 1 in a new session");
    assert_eq!(req.route.as_ref().unwrap().resource, "default/pod/a");
    conn.send(&Frame::response(
        1,
        &Response {
            code: 200,
            ..Response::default()
        },
    ))
    .await;
    assert_eq!(
        edge.outbox.depth(),
        1,
        "a RESPONSE alone does not remove the entry"
    );
    conn.send(&Frame::ack(1)).await;
    edge.wait_outbox_depth(0).await;

    // A permanent API error drops the entry and counts it.
    edge.outbox
        .put("pod-status/gone", pod_status("gone"))
        .await
        .unwrap();
    let (req, _) = conn.recv_until(Kind::Request).await;
    assert_eq!(req.id, 2);
    conn.send(&Frame::response(
        2,
        &Response {
            code: 404,
            reason: "NotFound".into(),
            ..Response::default()
        },
    ))
    .await;
    // ... and reports it as a Warning Event about the node, which travels
    // like any upstream write.
    let (event, _) = conn.recv_until(Kind::Event).await;
    assert_eq!(event.id, 3);
    let body: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(body["reason"], "UpstreamWriteDropped");
    assert_eq!(body["involvedObject"]["kind"], "Node");
    assert_eq!(body["involvedObject"]["name"], "edge-1");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("default/pod/gone"),
        "{body}"
    );
    conn.send(&Frame::ack(3)).await;
    edge.wait_outbox_depth(0).await;
    assert!(
        edge.metrics
            .encode()
            .contains("edgecore_outbox_dropped_total{code=\"404\"} 1")
    );

    // Ping is answered.
    conn.send(&Frame::ping(42)).await;
    let (pong, _) = conn.recv_until(Kind::Pong).await;
    assert_eq!(pong.control::<proto::Ping>().unwrap().nonce, 42);
    edge.wait_link(Link::Syncing).await; // no SYNCED in this session yet
    edge.stop().await;
}

#[tokio::test]
async fn garbage_from_the_cloud_is_refused_and_the_edge_reconnects() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new("edge-1");
    let node_pki = pki.write_node_files(&tmp.path().join("pki"));
    let cloud = FakeCloud::bind(&pki).await;
    let edge = start_edge(&common::data_dir(tmp.path()), &node_pki, &cloud.server()).await;
    let mut conn = cloud.accept().await;
    conn.handshake().await;
    // An OBJECT without a route: invalid for its kind.
    let bad = Frame {
        id: 1,
        kind: Kind::Object as i32,
        ..Frame::default()
    };
    conn.send(&bad).await;
    let (err, _) = conn.recv_until(Kind::Error).await;
    assert_eq!(
        err.control::<proto::ErrorInfo>().unwrap().reason,
        "missing_route"
    );
    // the session is dropped and a new one comes
    let mut conn2 = cloud.accept().await;
    conn2.handshake().await;
    assert!(
        edge.metrics
            .encode()
            .contains("edgecore_refused_frames_total{reason=\"missing_route\"} 1")
    );
    edge.stop().await;
}

fn write_config(tmp: &std::path::Path, pki: &PkiConfig, server: &str) -> std::path::PathBuf {
    let mut cfg = Config::for_root(tmp);
    cfg.node_name = "edge-1".into();
    cfg.server = server.to_owned();
    cfg.pki = pki.clone();
    cfg.metrics_listen = "127.0.0.1:0".parse().unwrap();
    // Port 0: no device bus (these tests are about the link; never a fixed port).
    cfg.mqtt_listen = "127.0.0.1:0".parse().unwrap();
    cfg.status.interval_secs = 3600;
    cfg.shutdown_grace_secs = 5;
    let path = tmp.join("edgecore.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    path
}

fn spawn_edgecore(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_edgecore"))
        .args(["--log-level", "warn", "run", "--config"])
        .arg(config)
        .spawn()
        .expect("spawn edgecore")
}

#[tokio::test]
async fn acked_objects_survive_kill_9_and_sigterm_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new("edge-1");
    let node_pki = pki.write_node_files(&tmp.path().join("pki"));
    let cloud = FakeCloud::bind(&pki).await;
    let config = write_config(tmp.path(), &node_pki, &cloud.server());

    let mut child = spawn_edgecore(&config);
    let mut conn = cloud.accept().await;
    let (hello, inventory, _) = conn.handshake().await;
    assert_eq!(hello.info.as_ref().unwrap().os, "linux");
    assert!(inventory.is_empty());
    let body = vec![b' '; 16 * 1024];
    for id in 1..=200u64 {
        let json = [br#"{"kind":"ConfigMap","data":""#.as_slice(), &body, b"\"}"].concat();
        conn.send(&Frame::upsert(
            id,
            &cm(&format!("c{id:03}")),
            &format!("u{id}"),
            &id.to_string(),
            json,
        ))
        .await;
    }
    // SIGKILL right after an ACK that covers at least half of what was sent.
    let acked = loop {
        let (ack, _) = conn.recv_until(Kind::Ack).await;
        let up_to = ack.control::<Ack>().unwrap().up_to;
        if up_to >= 100 {
            break up_to;
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    drop(conn);

    let mut child = spawn_edgecore(&config);
    let mut conn = cloud.accept().await;
    let (_, inventory, _) = conn.handshake().await;
    for id in 1..=acked {
        let key = format!("default/configmap/c{id:03}");
        let e = inventory.iter().find(|e| e.key == key).unwrap_or_else(|| {
            panic!("{key} was acked (up to {acked}) but is missing after kill -9")
        });
        assert_eq!(e.resource_version, id.to_string());
    }
    println!(
        "acked {acked} before kill -9; {} held after restart",
        inventory.len()
    );

    // SIGTERM: the edge closes the WebSocket and exits 0.
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // (the fresh session's node status REQUESTs may come first)
    while conn.try_recv().await.is_some() {}
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "edgecore did not exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "edgecore exited with {status}");
}

/// The status REQUEST (`patch_status` on the Node) among `frames`, as JSON.
fn node_status(frames: &[Frame]) -> Option<serde_json::Value> {
    frames.iter().find_map(|f| {
        let route = f.route.as_ref()?;
        (f.kind == Kind::Request as i32
            && route.op == "patch_status"
            && route.resource == "null/node/edge-1")
            .then(|| serde_json::from_slice(&f.payload).unwrap())
    })
}

fn condition<'a>(status: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status}"))
}

#[tokio::test]
async fn broken_store_is_moved_aside_reported_and_cleared_after_resync() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new("edge-1");
    let node_pki = pki.write_node_files(&tmp.path().join("pki"));
    let cloud = FakeCloud::bind(&pki).await;
    let config = write_config(tmp.path(), &node_pki, &cloud.server());
    let data = common::data_dir(tmp.path());
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("conf"), b"\xff\xfe not a sled config").unwrap();
    std::fs::write(data.join("db"), vec![0x5a; 8192]).unwrap();

    let mut child = spawn_edgecore(&config);
    let mut conn = cloud.accept().await;
    let (_, inventory, mut seen) = conn.handshake().await;
    assert!(inventory.is_empty());
    // Node status and Lease renewal are sent at once on connect.
    let status = loop {
        if let Some(s) = node_status(&seen) {
            break s;
        }
        seen.push(conn.recv().await);
    };
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("KedgeReady"))
    );
    let recovered = condition(&status, "KedgeStoreRecovered");
    assert_eq!(recovered["status"], "True");
    assert!(recovered["message"].as_str().unwrap().contains(".corrupt-"));
    let lease = loop {
        if let Some(f) = seen.iter().find(|f| {
            f.route
                .as_ref()
                .is_some_and(|r| r.resource == "kube-node-lease/lease/edge-1")
        }) {
            break f.clone();
        }
        seen.push(conn.recv().await);
    };
    assert_eq!(lease.op().unwrap(), Op::Patch);
    let lease: serde_json::Value = serde_json::from_slice(&lease.payload).unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(
        lease["spec"]["renewTime"].as_str().unwrap().len(),
        "2025-01-01T00:00:00.000000Z".len()
    );
    let moved: Vec<_> = std::fs::read_dir(tmp.path().join("var/lib"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("kedge.corrupt-")
        })
        .collect();
    assert_eq!(moved.len(), 1);

    // The resync completes: the condition turns False (StoreRefilled).
    conn.send(&Frame::synced(1)).await;
    let status = loop {
        let f = conn.recv().await;
        if let Some(s) = node_status(std::slice::from_ref(&f))
            && condition(&s, "KedgeStoreRecovered")["status"] == "False"
        {
            break s;
        }
    };
    assert_eq!(
        condition(&status, "KedgeStoreRecovered")["reason"],
        "StoreRefilled"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_both_ways_must_not_deadlock() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const OBJECTS: u64 = 3000;
    const WRITES: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new("edge-1");
    let node_pki = pki.write_node_files(&tmp.path().join("pki"));
    let cloud = FakeCloud::bind(&pki).await;
    let edge = start_edge(&common::data_dir(tmp.path()), &node_pki, &cloud.server()).await;
    for i in 0..WRITES {
        edge.outbox
            .put(&format!("pod-status/p{i}"), pod_status(&format!("p{i}")))
            .await
            .unwrap();
    }
    let mut conn = cloud.accept().await;
    conn.handshake().await;
    let (mut sink, mut stream) = conn.ws.split();
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<Frame>(1024);
    // Writer: floods objects, interleaving the replies the reader asks for.
    let writer = tokio::spawn(async move {
        let mut next = 1u64;
        loop {
            while let Ok(f) = reply_rx.try_recv() {
                sink.send(Message::Binary(proto::encode(&f).into()))
                    .await
                    .unwrap();
            }
            if next <= OBJECTS {
                let f = Frame::upsert(
                    next,
                    &cm(&format!("c{next}")),
                    "u",
                    "1",
                    br#"{"kind":"ConfigMap"}"#.to_vec(),
                );
                sink.send(Message::Binary(proto::encode(&f).into()))
                    .await
                    .unwrap();
                next += 1;
            } else if next == OBJECTS + 1 {
                sink.send(Message::Binary(proto::encode(&Frame::synced(next)).into()))
                    .await
                    .unwrap();
                next += 1;
            } else {
                match reply_rx.recv().await {
                    Some(f) => sink
                        .send(Message::Binary(proto::encode(&f).into()))
                        .await
                        .unwrap(),
                    None => return,
                }
            }
        }
    });
    // Reader: acks every REQUEST (after answering it) and tracks edge ACKs.
    let reader = async {
        let (mut acked, mut requests) = (0u64, 0usize);
        while acked < OBJECTS + 1 || requests < WRITES {
            let Some(Ok(Message::Binary(b))) = stream.next().await else {
                continue;
            };
            let f = proto::decode(&b, proto::Limits::default()).unwrap();
            match Kind::try_from(f.kind).unwrap() {
                Kind::Ack => acked = f.control::<Ack>().unwrap().up_to,
                Kind::Request => {
                    requests += 1;
                    reply_tx
                        .send(Frame::response(
                            f.id,
                            &Response {
                                code: 200,
                                ..Response::default()
                            },
                        ))
                        .await
                        .unwrap();
                    reply_tx.send(Frame::ack(f.id)).await.unwrap();
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .expect("flood: not everything was acked within 60 s — suspected deadlock between the hub loop, its WebSocket writer and the MetaManager writer");
    edge.wait_outbox_depth(0).await;
    assert_eq!(edge.reader.snapshot().len(), OBJECTS as usize);
    drop(reply_tx);
    writer.abort();
    edge.stop().await;
}
