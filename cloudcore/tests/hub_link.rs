//! CloudHub in process, against the embedded API server: the real edge cache,
//! bootstrap (node CA, `/join`) and hub on 127.0.0.1:0, and a minimal edge
//! built from `proto` + tokio-tungstenite with a certificate issued by `/join`.
//!
//! Covers: hello / inventory / SYNCED, a pod created through the API reaching
//! its node and being acked, an upstream write acked after the API call,
//! refusals (no client certificate; node A reading node B's pod or writing
//! B's status, while B keeps working), garbage frames, session replacement.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use cloudcore::hub::CONNECT_PATH;
use common::{Cloud, STEP, pod, wait_for};
use futures::SinkExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use proto::{ErrorInfo, Frame, Hello, HelloAck, Inventory, Kind, Op};
use rustls::ClientConfig;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_receives_its_pods_and_is_refused_others() -> anyhow::Result<()> {
    let cloud = Cloud::start().await?;

    // No client certificate: 401 and counted.
    let no_cert = ClientConfig::builder()
        .with_root_certificates(cloud.roots()?)
        .with_no_client_auth();
    let tls = cloud.tls(no_cert.clone()).await?;
    let url = format!("wss://localhost{CONNECT_PATH}");
    match tokio_tungstenite::client_async(url, tls).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 401);
        }
        other => bail!("expected 401, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        cloud.metric("cloudcore_hub_refused_total{reason=\"no_certificate\"}"),
        1
    );
    // The CA is served without one.
    let (status, ca) = cloud.http(no_cert, "GET", "/ca.crt", vec![]).await?;
    assert_eq!(
        (status, ca.as_ref()),
        (200, cloud.bootstrap.ca_pem().as_bytes())
    );

    // Node A and node B join and connect.
    let (cert_a, key_a) = cloud.join("edge-a").await?;
    let (cert_b, key_b) = cloud.join("edge-b").await?;
    let mut a = cloud.connect(&cert_a, &key_a).await?;
    let ack = a.handshake("edge-a").await?;
    assert_eq!(
        (ack.version, ack.ping_interval_secs, ack.idle_timeout_secs),
        (1, 15, 45)
    );
    let mut b = cloud.connect(&cert_b, &key_b).await?;
    b.handshake("edge-b").await?;
    assert_eq!(cloud.hub.connected_nodes(), ["edge-a", "edge-b"]);

    // A pod bound to A reaches A only, and is acked.
    let pods: Api<Pod> = Api::namespaced(cloud.client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("pa", "edge-a"))
        .await?;
    let frame = a
        .recv_until(|f| {
            f.route
                .as_ref()
                .is_some_and(|r| r.resource == "default/pod/pa")
        })
        .await?;
    assert_eq!(frame.op()?, Op::Upsert);
    assert_eq!(Some(frame.uid.as_str()), created.metadata.uid.as_deref());
    let json: serde_json::Value = serde_json::from_slice(&frame.payload)?;
    assert_eq!(json["spec"]["nodeName"], "edge-a");

    pods.create(&PostParams::default(), &pod("pb", "edge-b"))
        .await?;
    b.recv_until(|f| {
        f.route
            .as_ref()
            .is_some_and(|r| r.resource == "default/pod/pb")
    })
    .await?;
    wait_for("cache knows pb", || {
        cloud.cache.pod_node("default", "pb").is_some()
    })
    .await?;

    // A reads its own pod; reading B's pod or writing B's status is refused.
    let own = a.request(Op::Get, "default/pod/pa", "").await?;
    assert_eq!(own.code, 200);
    let theirs = a.request(Op::Get, "default/pod/pb", "").await?;
    assert_eq!((theirs.code, theirs.reason.as_str()), (403, "Forbidden"));
    let status = r#"{"status":{"phase":"Failed"}}"#;
    let write = a.request(Op::PatchStatus, "default/pod/pb", status).await?;
    assert_eq!(write.code, 403);
    let node_status = r#"{"status":{"conditions":[{"type":"Hacked","status":"True"}]}}"#;
    let write = a
        .request(Op::PatchStatus, "null/node/edge-b", node_status)
        .await?;
    assert_eq!(write.code, 403);
    assert_eq!(
        cloud.metric("cloudcore_hub_refused_total{reason=\"forbidden_get\"}"),
        1
    );
    assert_eq!(
        cloud.metric("cloudcore_hub_refused_total{reason=\"forbidden_patch_status\"}"),
        2
    );
    let pb = pods.get("pb").await?;
    assert_ne!(pb.status.and_then(|s| s.phase).as_deref(), Some("Failed"));
    let nodes: Api<Node> = Api::all(cloud.client.clone());
    let node_b = nodes.get("edge-b").await?;
    let conditions = node_b.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(conditions.iter().all(|c| c.type_ != "Hacked"));

    // B keeps working: its status write goes through and is acked.
    let running = r#"{"status":{"phase":"Running"}}"#;
    let ok = b
        .request(Op::PatchStatus, "default/pod/pb", running)
        .await?;
    assert_eq!(ok.code, 200, "{}", ok.message);
    let pb = pods.get("pb").await?;
    assert_eq!(pb.status.and_then(|s| s.phase).as_deref(), Some("Running"));

    // Garbage gets an ERROR and the session stays up.
    a.ws.send(Message::Binary(Bytes::from_static(b"\xff\xffgarbage")))
        .await?;
    let err = a.recv().await?;
    assert_eq!(err.control::<ErrorInfo>()?.reason, "malformed");
    assert_eq!(a.request(Op::Get, "default/pod/pa", "").await?.code, 200);

    // Reconnecting replaces the old session.
    let mut a2 = cloud.connect(&cert_a, &key_a).await?;
    a2.handshake("edge-a").await?;
    let replaced = loop {
        match a.recv().await {
            Ok(f) if f.kind == Kind::Error as i32 => break f.control::<ErrorInfo>()?,
            Ok(_) => continue,
            Err(e) => bail!("old session ended without saying why: {e}"),
        }
    };
    assert_eq!(replaced.reason, "replaced");
    assert_eq!(cloud.hub.connected_nodes(), ["edge-a", "edge-b"]);
    // The new session got pa again (the inventory was empty).
    assert!(cloud.metric("cloudcore_hub_resyncs_total{reason=\"inventory\"}") >= 3);

    // Each session renews its node's Lease, the first time with a full check of the Node:
    // counted by result (B's session and A's new one, 10 s after they began).
    wait_for("a counted heartbeat of each session", || {
        cloud.metric("cloudcore_hub_heartbeats_total{result=\"checked\"}") >= 2
    })
    .await?;
    for result in ["failed", "busy", "timeout"] {
        let line = format!("cloudcore_hub_heartbeats_total{{result=\"{result}\"}}");
        assert_eq!(cloud.metric(&line), 0, "{result}");
    }

    cloud.shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_diffs_the_inventory_and_oversized_frames_are_refused() -> anyhow::Result<()> {
    let cloud = Cloud::start().await?;
    let (cert, key) = cloud.join("edge-c").await?;
    let pods: Api<Pod> = Api::namespaced(cloud.client.clone(), "default");
    let pc = pods
        .create(&PostParams::default(), &pod("pc", "edge-c"))
        .await?;
    let uid = pc.metadata.uid.clone().unwrap_or_default();
    wait_for("cache knows pc", || {
        cloud.cache.pod_node("default", "pc").is_some()
    })
    .await?;

    // The edge holds an old incarnation of pc and a pod that is gone.
    let mut c = cloud.connect(&cert, &key).await?;
    c.send(&Frame::hello(&Hello {
        min_version: 1,
        max_version: 1,
        node_name: "edge-c".into(),
        ..Default::default()
    }))
    .await?;
    c.recv().await?.control::<HelloAck>()?;
    let held = |k: &str, uid: &str| proto::InventoryEntry {
        key: k.into(),
        uid: uid.into(),
        resource_version: "1".into(),
    };
    c.send(&Frame::inventory(&Inventory {
        entries: vec![held("default/pod/pc", "old-uid")],
        chunk: 0,
        complete: false,
    }))
    .await?;
    c.send(&Frame::inventory(&Inventory {
        entries: vec![held("default/pod/gone", "g")],
        chunk: 1,
        complete: true,
    }))
    .await?;
    let mut seen = Vec::new();
    c.recv_until(|f| {
        let route = f.route.clone().unwrap_or_default();
        seen.push((
            f.checked_kind().ok(),
            route.op,
            route.resource,
            f.uid.clone(),
        ));
        f.kind == Kind::Synced as i32
    })
    .await?;
    let has = |op: &str, res: &str, uid: &str| {
        seen.iter()
            .any(|(_, o, r, u)| o == op && r == res && u == uid)
    };
    assert!(has("delete", "default/pod/gone", "g"), "{seen:?}");
    assert!(has("upsert", "default/pod/pc", &uid), "{seen:?}");
    assert!(
        has(
            "upsert",
            "null/node/edge-c",
            &seen_node_uid(&cloud, "edge-c").await?
        ),
        "{seen:?}"
    );
    assert_eq!(seen.last().and_then(|s| s.0), Some(Kind::Synced));

    // A message above the frame limit: counted and the session closed. The
    // WebSocket library refuses it from its header, so the connection is cut
    // while the edge may still be writing; the ERROR 413 is best effort.
    let big = vec![0u8; proto::DEFAULT_MAX_FRAME + 1];
    if c.ws.send(Message::Binary(Bytes::from(big))).await.is_ok() {
        while let Ok(f) = c.recv().await {
            if f.kind == Kind::Error as i32 {
                let err = f.control::<ErrorInfo>()?;
                assert_eq!((err.code, err.reason.as_str()), (413, "oversized"));
                break;
            }
        }
    }
    wait_for("oversized counted", || {
        cloud.metric("cloudcore_hub_refused_total{reason=\"oversized\"}") == 1
    })
    .await?;
    wait_for("session gone", || cloud.hub.connected_nodes().is_empty()).await?;

    // A node that reconnects with a HELLO for another name is refused.
    let mut c = cloud.connect(&cert, &key).await?;
    c.send(&Frame::hello(&Hello {
        min_version: 1,
        max_version: 1,
        node_name: "edge-x".into(),
        ..Default::default()
    }))
    .await?;
    let err = c.recv().await?.control::<ErrorInfo>()?;
    assert_eq!((err.code, err.reason.as_str()), (403, "node_mismatch"));

    cloud.shutdown.cancel();
    Ok(())
}

async fn seen_node_uid(cloud: &Cloud, node: &str) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(cloud.client.clone());
    Ok(nodes.get(node).await?.metadata.uid.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_acking_does_not_hold_up_others() -> anyhow::Result<()> {
    const PODS: usize = 300;
    let window = proto::WindowConfig::default().capacity as u64;
    let cloud = Cloud::start().await?;
    let (cert_a, key_a) = cloud.join("slow").await?;
    let (cert_b, key_b) = cloud.join("fast").await?;
    let mut slow = cloud.connect(&cert_a, &key_a).await?;
    slow.handshake("slow").await?;
    let mut fast = cloud.connect(&cert_b, &key_b).await?;
    fast.handshake("fast").await?;

    let pods: Api<Pod> = Api::namespaced(cloud.client.clone(), "default");
    for i in 0..PODS {
        pods.create(&PostParams::default(), &pod(&format!("p{i}"), "slow"))
            .await?;
    }
    // The slow node reads but does not ack: exactly one window is sent,
    // then only retransmissions.
    let mut seen = std::collections::HashSet::new();
    let note = |seen: &mut std::collections::HashSet<String>, f: &Frame| {
        if let Some(r) = f
            .route
            .as_ref()
            .filter(|r| r.resource.starts_with("default/pod/p"))
        {
            seen.insert(r.resource.clone());
        }
    };
    let base = slow.acked;
    let mut highest = 0;
    tokio::time::timeout(STEP, async {
        while highest < base + window {
            let f = slow.recv().await?;
            note(&mut seen, &f);
            highest = highest.max(f.id);
        }
        anyhow::Ok(())
    })
    .await
    .context("the window never filled: frames stuck in the queue?")??;
    let quiet = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(f) = tokio::time::timeout_at(quiet, slow.recv()).await {
        let f = f?;
        assert!(
            f.id <= base + window,
            "frame {} sent beyond the window",
            f.id
        );
        note(&mut seen, &f);
    }
    assert!(cloud.metric("cloudcore_hub_retransmits_total") > 0);

    // Meanwhile the other node's requests are answered and acked.
    let started = std::time::Instant::now();
    let own = fast.request(Op::Get, "null/node/fast", "").await?;
    assert_eq!(own.code, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fast node held up by the slow one"
    );

    // The slow node catches up: every pod arrives once it acks.
    tokio::time::timeout(
        Duration::from_secs(60),
        slow.recv_until(|f| {
            note(&mut seen, f);
            seen.len() == PODS
        }),
    )
    .await
    .context("the slow node never got all its pods: window/ack deadlock?")??;

    cloud.shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_node_closes_its_session_and_refuses_its_certificate() -> anyhow::Result<()> {
    let cloud = Cloud::start().await?;
    let (cert, key) = cloud.join("edge-d").await?;
    let mut d = cloud.connect(&cert, &key).await?;
    d.handshake("edge-d").await?;

    let nodes: Api<Node> = Api::all(cloud.client.clone());
    nodes.delete("edge-d", &Default::default()).await?;
    let why = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let f = d.recv().await?;
            if f.kind == Kind::Error as i32 {
                return anyhow::Ok(f.control::<ErrorInfo>()?);
            }
            if f.id > d.acked {
                // Best effort: the cloud may already be closing.
                let _ = d.send(&Frame::ack(f.id)).await;
                d.acked = f.id;
            }
        }
    })
    .await
    .context("the session outlived its Node")??;
    assert!(
        ["node_deleted", "revoked"].contains(&why.reason.as_str()),
        "{why:?}"
    );
    wait_for("session gone", || cloud.hub.connected_nodes().is_empty()).await?;

    // The certificate is revoked: the WebSocket is refused with 403.
    let refused = tokio::time::timeout(STEP, async {
        loop {
            match cloud.connect(&cert, &key).await {
                Err(e) => {
                    if let Some(tokio_tungstenite::tungstenite::Error::Http(res)) =
                        e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
                    {
                        break res.status().as_u16();
                    }
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .context("the deleted node's certificate was never refused")?;
    assert_eq!(refused, 403);
    assert!(cloud.metric("cloudcore_hub_refused_total{reason=\"revoked\"}") >= 1);

    cloud.shutdown.cancel();
    Ok(())
}

/// An edge that renews its own Lease over the link (edgecore does, as the kubelet does) is
/// left to it: the hub's heartbeats only check the Node, so the Lease is written once per
/// renewal, not twice. When the edge's renewals stop while it is still heard from, the hub
/// renews the Lease again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_leaves_the_lease_to_an_edge_that_renews_it() -> anyhow::Result<()> {
    use futures::StreamExt;
    use kube::api::WatchEvent;

    let cloud = Cloud::start().await?;
    let mut e = cloud.edge("edge-l").await?;
    const LEASE: &str = "kube-node-lease/lease/edge-l";
    const RENEWAL: &str =
        r#"{"spec":{"holderIdentity":"edge-l","renewTime":"2020-01-01T00:00:00.000000Z"}}"#;
    // The first renewal waits for the session's registration of the Lease.
    assert_eq!(e.request(Op::Patch, LEASE, RENEWAL).await?.code, 200);
    let mut writes = lease_watch(&cloud, "edge-l").await?;
    // Past a hub heartbeat (every 10 s), renewing every 2 s.
    async fn renew_for(e: &mut common::Edge, secs: u64) -> anyhow::Result<usize> {
        let mut renewed = 0;
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(e.request(Op::Patch, LEASE, RENEWAL).await?.code, 200);
            renewed += 1;
        }
        Ok(renewed)
    }
    let renewed = renew_for(&mut e, 13).await?;
    assert_eq!(
        lease_writes(&mut writes).await?,
        renewed,
        "only the edge's renewals wrote the Lease"
    );
    // The Node is Ready in the hub's cache: nothing to read.
    assert!(cloud.metric("cloudcore_hub_heartbeats_total{result=\"edge\"}") >= 1);
    assert_eq!(
        cloud.metric("cloudcore_hub_heartbeats_total{result=\"lease\"}"),
        0
    );

    // A lifecycle controller marks the Node Unknown (a stall): the next heartbeat sees it
    // in its cache, reads the Node and makes it Ready again — still without renewing.
    let nodes: Api<Node> = Api::all(cloud.client.clone());
    let unknown = serde_json::json!({"status": {"conditions": [{"type": "Ready",
        "status": "Unknown", "reason": "NodeStatusUnknown", "lastHeartbeatTime": null,
        "lastTransitionTime": null}]}});
    nodes
        .patch_status(
            "edge-l",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&unknown),
        )
        .await?;
    let renewed = renew_for(&mut e, 12).await?;
    let ready = nodes.get("edge-l").await?;
    assert_eq!(cloudcore::lifecycle::ready_status(&ready), Some("True"));
    assert!(cloud.metric("cloudcore_hub_heartbeats_total{result=\"checked\"}") >= 1);
    assert_eq!(lease_writes(&mut writes).await?, renewed);

    // The edge stops renewing but keeps talking: the hub renews the Lease once the edge's
    // last renewal is older than a heartbeat interval and a margin (at most ~25 s).
    let hub_renewed = async {
        loop {
            match writes.next().await {
                Some(Ok(WatchEvent::Modified(_))) => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(anyhow::Error::from(err)),
                None => bail!("the Lease watch ended"),
            }
        }
    };
    let talking = async {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let own = e.request(Op::Get, "null/node/edge-l", "").await?;
            anyhow::ensure!(own.code == 200, "reading its own Node: {}", own.code);
        }
    };
    tokio::time::timeout(Duration::from_secs(40), async {
        tokio::select! {
            r = hub_renewed => r,
            r = talking => r,
        }
    })
    .await
    .context("the hub did not take the Lease over")??;

    cloud.shutdown.cancel();
    Ok(())
}

/// Lease renewals sent faster than the API answers them (an edge renews every interval
/// whether or not the last renewal was answered) are coalesced: a queued renewal replaced by
/// a newer one is acked without its API call, so they neither pile up in the hub nor cost
/// the API a write each; the newest is always written and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_renewals_of_the_lease_are_coalesced() -> anyhow::Result<()> {
    const LEASE: &str = "kube-node-lease/lease/edge-q";
    const RENEWAL: &str =
        r#"{"spec":{"holderIdentity":"edge-q","renewTime":"2020-01-01T00:00:00.000000Z"}}"#;
    const BURST: u64 = 30;
    let cloud = Cloud::start().await?;
    let mut e = cloud.edge("edge-q").await?;
    assert_eq!(e.request(Op::Patch, LEASE, RENEWAL).await?.code, 200);
    let mut writes = lease_watch(&cloud, "edge-q").await?;

    let key = proto::ResourceKey::parse(LEASE)?;
    let first = e.next_id;
    for _ in 0..BURST {
        let id = e.next_id;
        e.next_id += 1;
        e.send(&Frame::request(
            id,
            Op::Patch,
            &key,
            RENEWAL.as_bytes().to_vec(),
        ))
        .await?;
    }
    let last = e.next_id - 1;
    let (mut answered, mut acked) = (Vec::new(), 0);
    while acked < last || !answered.contains(&last) {
        let f = e.recv().await?;
        match f.checked_kind()? {
            Kind::Response => {
                let r = f.control::<proto::Response>()?;
                assert_eq!(r.code, 200, "{}", r.message);
                answered.extend(f.ack_of);
            }
            Kind::Ack => acked = acked.max(f.control::<proto::Ack>()?.up_to),
            _ if f.id > e.acked => {
                e.send(&Frame::ack(f.id)).await?;
                e.acked = f.id;
            }
            _ => {}
        }
    }
    assert!(answered.iter().all(|id| (first..=last).contains(id)));
    let superseded =
        cloud.metric("cloudcore_hub_upstream_requests_total{op=\"patch\",code=\"superseded\"}");
    assert!(
        superseded >= 1,
        "a burst of {BURST} renewals was not coalesced"
    );
    assert_eq!(answered.len() as u64 + superseded, BURST);
    // Only the answered renewals wrote the Lease.
    assert_eq!(lease_writes(&mut writes).await?, answered.len());

    cloud.shutdown.cancel();
    Ok(())
}

type LeaseWatch = futures::stream::BoxStream<
    'static,
    kube::Result<kube::api::WatchEvent<k8s_openapi::api::coordination::v1::Lease>>,
>;

/// A watch of `node`'s Lease from its current version: each write is one event.
async fn lease_watch(cloud: &Cloud, node: &str) -> anyhow::Result<LeaseWatch> {
    use futures::StreamExt;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cloud.client.clone(), "kube-node-lease");
    let rv = leases
        .get(node)
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let params = kube::api::WatchParams::default().fields(&format!("metadata.name={node}"));
    Ok(leases.watch(&params, &rv).await?.boxed())
}

/// The writes `writes` shows until it has been quiet for a second.
async fn lease_writes(writes: &mut LeaseWatch) -> anyhow::Result<usize> {
    use futures::StreamExt;
    let mut seen = 0;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(1), writes.next()).await {
        if let kube::api::WatchEvent::Modified(_) = ev? {
            seen += 1;
        }
    }
    Ok(seen)
}

/// A burst of an edge's requests bigger than the hub's queued-request budget: the hub takes
/// what fits (the rest counted as `budget` refusals, never delivered), the edge sends the
/// rest again, every request is written exactly once, and the budget is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_queue_budget_wait_at_the_edge() -> anyhow::Result<()> {
    const BUDGET: usize = 24 * 1024;
    const BURST: u64 = 80;
    let cloud = Cloud::start_with(cloudcore::hub::HubConfig {
        queued_request_budget: BUDGET,
        ..Default::default()
    })
    .await?;
    let _stop = cloud.shutdown.clone().drop_guard();
    let mut e = cloud.edge("edge-b").await?;
    let pods: Api<Pod> = Api::namespaced(cloud.client.clone(), "default");
    let p = pods
        .create(&PostParams::default(), &pod("pb", "edge-b"))
        .await?;
    wait_for("the cache knows the pod", || {
        cloud.cache.pod_node("default", "pb").is_some()
    })
    .await?;

    let padding = "x".repeat(1024);
    let mut frames = Vec::new();
    for i in 0..BURST {
        let name = format!("pb.ev{i}");
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "default",
                "name": "pb", "uid": p.metadata.uid},
            "reason": "Padded", "message": padding, "type": "Normal", "count": 1,
            "source": {"component": "kubelet", "host": "edge-b"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"});
        let key = proto::ResourceKey::parse(&format!("default/event/{name}"))?;
        frames.push(Frame::event(
            e.next_id,
            Op::Create,
            &key,
            body.to_string().into_bytes(),
        ));
        e.next_id += 1;
    }
    let last = e.next_id - 1;
    let (mut up_to, mut rounds) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while up_to < last {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {up_to} of {last} acked in 60 s: refused requests were not taken again"
        );
        rounds += 1;
        // What the edge's outbox does: send everything not yet acked again.
        for f in frames.iter().filter(|f| f.id > up_to) {
            e.send(f).await?;
        }
        while let Ok(f) = tokio::time::timeout(Duration::from_millis(500), e.recv_acking()).await {
            let f = f?;
            match f.checked_kind()? {
                Kind::Ack => up_to = up_to.max(f.control::<proto::Ack>()?.up_to),
                Kind::Error => bail!("refused: {:?}", f.control::<ErrorInfo>()?),
                _ => {}
            }
        }
    }
    let refused = cloud.metric("cloudcore_hub_refused_total{reason=\"budget\"}");
    assert!(
        refused >= 1 && rounds >= 2,
        "{BURST} requests of ~1.3 KB fit a {BUDGET}-byte budget in one round: not enforced"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(cloud.client.clone(), "default");
    let written = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|ev| ev.involved_object.name.as_deref() == Some("pb"))
        .count();
    assert_eq!(written as u64, BURST, "every request written once");
    assert_eq!(
        cloud.metric("cloudcore_hub_queued_request_bytes"),
        0,
        "the budget was not given back"
    );
    Ok(())
}
