//! `edgecore join` against a fake bootstrap server (HTTPS on 127.0.0.1:0
//! serving `GET /ca.crt` and `POST /join`, rcgen node CA signing the CSR):
//! success and the files it writes, idempotence, wrong CA pin, refused
//! token, unreachable server, bad token syntax (exit codes via the binary).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::Pki;
use edgecore::config::{Config, Layout};
use edgecore::join::{JoinError, JoinRequest, join};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Serves the bootstrap endpoints; `answer_401` makes /join refuse the token.
/// Returns the port and a counter of /join requests.
async fn bootstrap(pki: Arc<Pki>, answer_401: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.bootstrap_server_config()));
    let joins = Arc::new(AtomicUsize::new(0));
    let counter = joins.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let pki = pki.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let pki = pki.clone();
                    let counter = counter.clone();
                    async move {
                        let (code, body) = match (req.method().as_str(), req.uri().path()) {
                            ("GET", "/ca.crt") => (200, pki.ca_pem.clone()),
                            ("POST", "/join") if answer_401 => (
                                401,
                                r#"{"code":401,"reason":"TokenExpired","message":"token abc has expired"}"#.to_owned(),
                            ),
                            ("POST", "/join") => {
                                counter.fetch_add(1, Ordering::SeqCst);
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                                assert_eq!(v["nodeName"], "edge-1");
                                assert_eq!(v["labels"]["zone"], "a");
                                assert_eq!(v["force"], false);
                                assert!(v["token"].as_str().unwrap().starts_with("K10"));
                                let cert = pki.sign_csr(v["csr"].as_str().unwrap());
                                (200, serde_json::json!({"certificate": cert, "ca": pki.ca_pem}).to_string())
                            }
                            _ => (404, String::new()),
                        };
                        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, joins)
}

fn token_for(ca_pem: &str) -> String {
    format!(
        "K10{}::abc123.secret456",
        edgecore::pki::sha256_hex(ca_pem.as_bytes())
    )
}

fn request(port: u16, token: String, root: &std::path::Path) -> JoinRequest {
    JoinRequest {
        server: format!("wss://127.0.0.1:{port}"),
        token,
        node_name: Some("edge-1".into()),
        labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        root: root.to_owned(),
        cri_endpoint: None,
        mqtt_listen: None,
        metrics_listen: Some("127.0.0.1:19101".parse().unwrap()),
        force: false,
    }
}

async fn run_join(req: &JoinRequest) -> (Result<edgecore::join::Joined, JoinError>, String) {
    let mut out = Vec::new();
    let res = tokio::time::timeout(common::T, join(req, &mut out))
        .await
        .expect("join did not finish within 10 s");
    (res, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn join_writes_config_and_certs_and_is_idempotent() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Arc::new(Pki::new("unused"));
    let (port, joins) = bootstrap(pki.clone(), false).await;
    let tmp = tempfile::tempdir().unwrap();
    let req = request(port, token_for(&pki.ca_pem), tmp.path());

    let (res, out) = run_join(&req).await;
    let joined = res.unwrap();
    assert!(joined.requested);
    for step in ["[1/4]", "[2/4]", "[3/4]", "[4/4]"] {
        assert!(out.contains(step), "{out}");
    }
    let layout = Layout::new(tmp.path());
    assert_eq!(joined.config_path, layout.config);
    let cfg = Config::load(&layout.config).unwrap();
    assert_eq!(cfg.node_name, "edge-1");
    assert_eq!(cfg.server, format!("wss://127.0.0.1:{port}"));
    assert_eq!(cfg.data_dir, tmp.path().join("var/lib/kedge"));
    assert_eq!(cfg.labels["zone"], "a");
    assert_eq!(cfg.metrics_listen.port(), 19101);
    assert_eq!(std::fs::read_to_string(&cfg.pki.ca).unwrap(), pki.ca_pem);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cfg.pki.key)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let cert = std::fs::read_to_string(&cfg.pki.cert).unwrap();
    let key = std::fs::read_to_string(&cfg.pki.key).unwrap();
    assert!(edgecore::join::cert_matches_key_and_valid(
        &cert, &key, 3600
    ));
    // the written files make a working mutual-TLS client config
    edgecore::pki::link_client_config_from(&cfg.pki).unwrap();

    // A second join with the same arguments succeeds without a new request.
    let (res, out) = run_join(&req).await;
    assert!(!res.unwrap().requested, "{out}");
    assert!(out.contains("already joined"), "{out}");
    assert_eq!(joins.load(Ordering::SeqCst), 1);
    assert_eq!(std::fs::read_to_string(&cfg.pki.cert).unwrap(), cert);

    // reset removes it all
    let removed = edgecore::join::reset(tmp.path()).unwrap();
    assert!(removed.contains(&layout.config) && removed.contains(&layout.pki));
    assert!(!layout.config.exists() && !layout.pki.exists());
}

#[tokio::test]
async fn wrong_pin_refused_token_and_unreachable_are_one_line_errors() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Arc::new(Pki::new("unused"));
    let tmp = tempfile::tempdir().unwrap();

    let (port, joins) = bootstrap(pki.clone(), false).await;
    let wrong = format!("K10{}::abc123.secret456", "0".repeat(64));
    let (res, _) = run_join(&request(port, wrong, tmp.path())).await;
    let err = res.unwrap_err();
    assert!(matches!(err, JoinError::CaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("does not match the token's pin"));
    assert_eq!(
        joins.load(Ordering::SeqCst),
        0,
        "nothing may be sent to an unpinned server"
    );

    let (port, _) = bootstrap(pki.clone(), true).await;
    let (res, _) = run_join(&request(port, token_for(&pki.ca_pem), tmp.path())).await;
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("401")
            && err.contains("token abc has expired")
            && err.contains("cloudcore token create"),
        "{err}"
    );
    assert!(!err.contains('\n'));

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    let (res, _) = run_join(&request(dead_port, token_for(&pki.ca_pem), tmp.path())).await;
    let err = res.unwrap_err();
    assert!(matches!(err, JoinError::Unreachable { .. }), "{err}");
    assert_eq!(err.exit_code(), 1);
    assert!(
        !Layout::new(tmp.path()).config.exists(),
        "a failed join writes nothing"
    );
}

#[test]
fn cli_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_edgecore");
    let out = std::process::Command::new(bin)
        .args([
            "join",
            "--server",
            "wss://127.0.0.1:1",
            "--token",
            "nonsense",
            "--no-start",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid --token"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let out = std::process::Command::new(bin)
        .args(["run", "--config", "/nonexistent/edgecore.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = std::process::Command::new(bin)
        .args(["config", "print-default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(Config::parse(&text).is_ok(), "{text}");
}

#[tokio::test]
async fn cli_join_then_starts_edgecore_run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Arc::new(Pki::new("unused"));
    let (port, _) = bootstrap(pki.clone(), false).await;
    let tmp = tempfile::tempdir().unwrap();
    // A free port for the metrics listener of the started edgecore.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = probe.local_addr().unwrap();
    drop(probe);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgecore"))
        .args(["--log-level", "warn", "join", "--server"])
        .arg(format!("wss://127.0.0.1:{port}"))
        .args([
            "--token",
            &token_for(&pki.ca_pem),
            "--node-name",
            "edge-1",
            "--labels",
            "zone=a",
        ])
        .arg("--root")
        .arg(tmp.path())
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // join execs `edgecore run`: its /status answers once it runs.
    let cfg = Config::load(&Layout::new(tmp.path()).config);
    let deadline = tokio::time::Instant::now() + common::T;
    let report = loop {
        if let Ok(cfg) = Config::load(&Layout::new(tmp.path()).config)
            && let Ok(r) = edgecore::status::collect(&cfg).await
            && r.running
        {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "edgecore run did not start after join ({cfg:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(report.node, "edge-1");
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "edgecore did not exit after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains("[4/4]") && out.contains("starting:"), "{out}");
}
