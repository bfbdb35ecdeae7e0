//! Node certificate rotation end to end, with short-lived certificates: an edge renews over
//! the live link (the serial on disk changes, the link comes back, the Node stays Ready,
//! metrics count it); the cloud refuses a CSR for another identity (403) and garbage (400);
//! an edge whose certificate expired while it was stopped is refused, keeps running its pod
//! from the cache, and a re-join with a fresh token while it runs brings it back without a
//! restart: same Node UID, same container.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use proto::{CertRenewResponse, ErrorInfo, Frame, Hello, Kind, Limits};
use tests::containerd::Containerd;
use tests::edge::{Edge, join, wait_for, wait_until};
use tests::{Standalone, curl};
use tokio_tungstenite::tungstenite::Message;

/// Serial (hex) and notAfter (Unix seconds) of the node certificate under `root`.
fn node_cert(root: &Path) -> (String, i64) {
    let pem = std::fs::read(root.join("etc/kedge/pki/node.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    (
        x509_parser::utils::format_serial(cert.raw_serial()),
        cert.validity().not_after.timestamp(),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn edge_metrics(edge: &Edge) -> String {
    let cfg = edgecore::config::Config::load(&edge.config()).unwrap();
    curl(&[&format!("http://{}/metrics", cfg.metrics_listen)]).1
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn node_uid(s: &Standalone, node: &str) -> String {
    s.get_json(&["node", node]).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn certificate_rotates_over_the_live_link() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("cloud"), &["--node-cert-validity", "20s"]).unwrap();
    let root = dir.path().join("edge");
    let edge = Edge::join_ready(&s, "edge-rot", &root, &[]);
    let uid = node_uid(&s, "edge-rot");
    let (first, first_expiry) = node_cert(&root);
    assert!(first_expiry - now() <= 20, "a 20 s certificate");

    // Renewed at 80% +- 5% of 20 s (+ the 2 s backdating): well before it expires.
    let second = wait_for("the first renewal", Duration::from_secs(30), || {
        let (serial, _) = node_cert(&root);
        (serial != first).then_some(serial)
    });
    assert!(now() < first_expiry, "renewed before expiry");
    // ...and again with the new certificate, which proves the link uses it.
    wait_until("a second renewal", Duration::from_secs(30), || {
        node_cert(&root).0 != second
    });
    wait_until("edge-rot Ready", Duration::from_secs(20), || {
        s.node_ready("edge-rot") == "True"
    });
    assert_eq!(node_uid(&s, "edge-rot"), uid, "same Node");
    let m = edge_metrics(&edge);
    let renewed = metric(&m, "edgecore_cert_renewals_total{result=\"renewed\"}").unwrap_or(0.0);
    assert!(renewed >= 2.0, "{m}");
    let expiry = metric(&m, "edgecore_cert_expiry_seconds").unwrap();
    assert!((0.0..=20.0).contains(&expiry), "{expiry}");
    let cloud_log = std::fs::read_to_string(&s.stderr_log).unwrap();
    assert!(
        cloud_log.contains("node certificate renewed"),
        "{cloud_log}"
    );
    assert!(
        !edge.log().contains("certificate expired"),
        "no session outlived its certificate: {}",
        edge.log()
    );
    eprintln!("rotation test took {:?}", started.elapsed());
}

/// Reads frames until `pick` returns something (skipping pings, acks, objects).
async fn next_matching<T>(
    ws: &mut edgecore::hub::conn::Ws,
    mut pick: impl FnMut(&Frame) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("an answer within 20 s")
            .expect("the session stays open")
            .unwrap();
        if let Message::Binary(b) = msg {
            let frame = proto::decode(&b, Limits::default()).unwrap();
            if let Some(v) = pick(&frame) {
                return v;
            }
        }
    }
}

fn refusal_of(id: u64) -> impl FnMut(&Frame) -> Option<Result<CertRenewResponse, ErrorInfo>> {
    move |f| match f.checked_kind() {
        Ok(Kind::Error) => {
            let info = f.control::<ErrorInfo>().unwrap();
            (info.in_reply_to == id || info.in_reply_to == 0).then_some(Err(info))
        }
        Ok(Kind::CertRenewResponse) if f.ack_of == Some(id) => {
            Some(Ok(f.control::<CertRenewResponse>().unwrap()))
        }
        _ => None,
    }
}

#[tokio::test]
async fn forged_and_garbage_csrs_are_refused() {
    tests::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("cloud"), &[]).unwrap();
    let root = dir.path().join("edge");
    let edge = Edge::join(&s, "edge-forge", &root, &[]);
    let cfg = edgecore::config::Config::load(&edge.config()).unwrap();
    let tls = edgecore::pki::link_client_config_from(&cfg.pki).unwrap();
    let server = edgecore::config::ServerUrl::parse(&cfg.server).unwrap();
    let mut ws = edgecore::hub::conn::dial(&server, Arc::new(tls), 4 << 20)
        .await
        .unwrap();
    let send = |f: Frame| Message::Binary(proto::encode(&f).into());
    let hello = Hello {
        node_name: "edge-forge".into(),
        min_version: proto::MIN_PROTOCOL_VERSION,
        max_version: proto::MAX_PROTOCOL_VERSION,
        ..Hello::default()
    };
    ws.send(send(Frame::hello(&hello))).await.unwrap();
    next_matching(&mut ws, |f| {
        (f.checked_kind().ok() == Some(Kind::HelloAck)).then_some(())
    })
    .await;
    for f in proto::inventory_frames(Vec::new(), 4 << 20) {
        ws.send(send(f)).await.unwrap();
    }

    // Another node's identity: 403.
    let (_, forged) = edgecore::join::key_and_csr("edge-other").unwrap();
    ws.send(send(Frame::cert_renew_request(1, &forged)))
        .await
        .unwrap();
    let err = next_matching(&mut ws, refusal_of(1)).await.unwrap_err();
    assert_eq!(
        (err.code, err.reason.as_str()),
        (403, "CSRIdentityMismatch"),
        "{err:?}"
    );
    assert!(err.message.contains("system:node:edge-other"), "{err:?}");

    // Garbage: 400.
    ws.send(send(Frame::cert_renew_request(
        2,
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )))
    .await
    .unwrap();
    let err = next_matching(&mut ws, refusal_of(2)).await.unwrap_err();
    assert_eq!(
        (err.code, err.reason.as_str()),
        (400, "InvalidCSR"),
        "{err:?}"
    );

    // Its own identity: a certificate for that node.
    let (_, own) = edgecore::join::key_and_csr("edge-forge").unwrap();
    ws.send(send(Frame::cert_renew_request(3, &own)))
        .await
        .unwrap();
    let ok = next_matching(&mut ws, refusal_of(3)).await.unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(ok.cert_chain_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cn, ["system:node:edge-forge"]);
    assert!(ok.ca_pem.contains("BEGIN CERTIFICATE"));

    // A deleted Node renews nothing (refused, or its session is closed first).
    s.kubectl_ok(&["delete", "node", "edge-forge"]);
    ws.send(send(Frame::cert_renew_request(4, &own)))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => break,
            Err(_) => panic!("neither a refusal nor a close within 20 s"),
        };
        let Message::Binary(b) = msg else { continue };
        let f = proto::decode(&b, Limits::default()).unwrap();
        assert!(
            !(f.checked_kind().ok() == Some(Kind::CertRenewResponse) && f.ack_of == Some(4)),
            "a deleted node got a certificate"
        );
        if f.checked_kind().ok() == Some(Kind::Error) {
            let info = f.control::<ErrorInfo>().unwrap();
            if info.in_reply_to == 4 {
                assert_eq!(
                    (info.code, info.reason.as_str()),
                    (403, "NodeRevoked"),
                    "{info:?}"
                );
                break;
            }
            if info.reason == "node_deleted" || info.reason == "revoked" {
                break;
            }
        }
    }
    let log = std::fs::read_to_string(&s.stderr_log).unwrap();
    assert!(
        log.contains("CSRIdentityMismatch") && log.contains("InvalidCSR"),
        "{log}"
    );
}

#[test]
fn expired_edge_rejoins_while_running_and_keeps_its_pod() {
    let ctd = match Containerd::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP expired_edge_rejoins: {e:#}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("cloud"), &["--node-cert-validity", "20s"]).unwrap();
    let root = dir.path().join("edge");
    let mut edge = Edge::join_ready(&s, "edge-exp", &root, &["--cri-endpoint", &ctd.endpoint]);
    let uid = node_uid(&s, "edge-exp");
    s.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: keep, namespace: default}\nspec:\n  nodeName: edge-exp\n  containers:\n  - {name: app, image: docker.io/kedge/busybox:test, command: [sleep, '3600']}\n");
    wait_until("pod keep Running", Duration::from_secs(60), || {
        s.get_json(&["pod", "keep"])
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
    let pod_uid = s.get_json(&["pod", "keep"]).unwrap()["metadata"]["uid"].clone();
    let tasks = ctd.tasks();
    assert!(!tasks.is_empty());

    // Offline past the certificate's expiry.
    edge.kill9();
    let (_, not_after) = node_cert(&root);
    while now() <= not_after + 1 {
        std::thread::sleep(Duration::from_millis(500));
    }
    let log_before = edge.log().len();
    edge.start();
    wait_until(
        "the actionable expiry line",
        Duration::from_secs(20),
        || edge.log()[log_before..].contains("expired while the node was offline"),
    );
    let tail = edge.log()[log_before..].to_owned();
    assert!(tail.contains("edgecore join --server"), "{tail}");
    assert_eq!(
        tail.matches("expired while the node was offline").count(),
        1,
        "logged once: {tail}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ctd.tasks(), tasks, "the pod keeps running from the cache");

    // A technician re-joins with a fresh token while edgecore runs (--force: the Lease may
    // still look live to the cloud). The running edgecore picks it up without a restart.
    let rejoin_at = Instant::now();
    let out = join(
        &s,
        "edge-exp",
        &root,
        &["--no-start", "--force", "--cri-endpoint", &ctd.endpoint],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("edge-exp Ready again", Duration::from_secs(40), || {
        s.node_ready("edge-exp") == "True"
            && edge.log()[log_before..].contains("session established")
    });
    eprintln!("reconnected {:?} after the re-join", rejoin_at.elapsed());
    assert!(edge.is_running());
    assert!(edge.log()[log_before..].contains("new node certificate on disk"));
    assert_eq!(node_uid(&s, "edge-exp"), uid, "same Node");
    assert_eq!(
        s.get_json(&["pod", "keep"]).unwrap()["metadata"]["uid"],
        pod_uid
    );
    assert_eq!(ctd.tasks(), tasks, "same container, not restarted");
    wait_until("pod keep Running", Duration::from_secs(20), || {
        s.get_json(&["pod", "keep"])
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
}

#[tokio::test]
async fn an_expired_certificate_is_refused_even_on_a_resumed_tls_session() {
    tests::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("cloud"), &["--node-cert-validity", "10s"]).unwrap();
    let root = dir.path().join("edge");
    let edge = Edge::join(&s, "edge-resume", &root, &[]);
    let cfg = edgecore::config::Config::load(&edge.config()).unwrap();
    // One client config for both dials: its session cache lets the second one resume.
    let tls = Arc::new(edgecore::pki::link_client_config_from(&cfg.pki).unwrap());
    let server = edgecore::config::ServerUrl::parse(&cfg.server).unwrap();
    let ws = edgecore::hub::conn::dial(&server, tls.clone(), 4 << 20)
        .await
        .unwrap();
    drop(ws);
    let (_, not_after) = node_cert(&root);
    while now() <= not_after + 1 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let Err(err) = edgecore::hub::conn::dial(&server, tls, 4 << 20).await else {
        panic!("an expired certificate was accepted");
    };
    let text = edgecore::hub::conn::chain(&err);
    // The TLS layer let the resumed session through (it does not check the certificate
    // again); the hub's own notAfter check at the upgrade refused it.
    assert!(text.contains("403"), "{text}");
    let log = std::fs::read_to_string(&s.stderr_log).unwrap();
    assert!(log.contains("expired node certificate refused"), "{log}");
    eprintln!("second dial refused: {text}");
}
