//! The autonomy webhook in process over real TLS: a CA and a serving certificate made with
//! rcgen, `cloudcore::webhook::serve` on 127.0.0.1:0, AdmissionReviews POSTed by a hyper
//! client that trusts only that CA; the JSON Patch answered is applied with the embedded
//! API's own JSON Patch code and must give the expected tolerations. Also: a node that
//! cannot be read still admits (with a warning), garbage is a 400, and a renewed
//! certificate is served without a restart.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use cloudcore::webhook::{self, NodeLookup, Webhook, WebhookMetrics, WebhookSettings};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

const EDGE: &str = "node-role.kubernetes.io/edge";
const T: Duration = Duration::from_secs(20);

/// Nodes by name; `"broken"` fails like an API error.
struct Nodes(HashMap<String, Map<String, Value>>);

impl NodeLookup for Nodes {
    async fn labels(&self, node: &str) -> Result<Option<Map<String, Value>>, String> {
        if node == "broken" {
            return Err("connection refused".into());
        }
        Ok(self.0.get(node).cloned())
    }
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// Write a serving certificate for 127.0.0.1 signed by `ca` to `dir/tls.{crt,key}`.
fn write_serving(ca: &Ca, dir: &Path) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    std::fs::write(dir.join("tls.key.tmp"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("tls.crt.tmp"), cert.pem()).unwrap();
    std::fs::rename(dir.join("tls.key.tmp"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.tmp"), dir.join("tls.crt")).unwrap();
}

async fn start(dir: &Path, shutdown: CancellationToken) -> SocketAddr {
    let (tls, first) =
        webhook::tls::server_config(&dir.join("tls.crt"), &dir.join("tls.key")).unwrap();
    first.unwrap();
    let nodes = Nodes(HashMap::from([
        (
            "gw-1".to_string(),
            json!({EDGE: "", "kubernetes.io/hostname": "gw-1"})
                .as_object()
                .unwrap()
                .clone(),
        ),
        (
            "cloud-1".to_string(),
            json!({"kubernetes.io/hostname": "cloud-1"})
                .as_object()
                .unwrap()
                .clone(),
        ),
    ]));
    let settings = WebhookSettings {
        enabled: true,
        edge_label: EDGE.into(),
    };
    let wh = Webhook::new(settings, nodes, WebhookMetrics::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(webhook::serve(wh, listener, tls, shutdown));
    addr
}

/// POST `body` to the webhook trusting only `ca_pem`; returns (status, body).
async fn post(addr: SocketAddr, ca_pem: &str, body: String) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::post(webhook::PATH)
        .header("content-type", "application/json")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::from(body)))?;
    let resp = send.send_request(req).await?;
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((code, bytes.to_vec()))
}

fn review(uid: &str, pod: &Value) -> String {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "operation": "CREATE", "namespace": "default",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": pod}})
    .to_string()
}

/// A pod as kube-apiserver hands it over: DefaultTolerationSeconds already ran.
fn pod(node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "gw", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}})
}

/// The review response, and the pod with its patch applied.
async fn admit(addr: SocketAddr, ca_pem: &str, uid: &str, pod: &Value) -> (Value, Value) {
    let (code, body) = tokio::time::timeout(T, post(addr, ca_pem, review(uid, pod)))
        .await
        .expect("webhook answer within 20 s")
        .unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let out: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["response"]["uid"], uid, "uid echoed");
    assert_eq!(out["response"]["allowed"], true);
    let patched = match out["response"]["patch"].as_str() {
        None => pod.clone(),
        Some(b64) => {
            assert_eq!(out["response"]["patchType"], "JSONPatch");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            apiserver::patch::apply_patch(
                apiserver::patch::PatchType::Json,
                pod,
                &raw,
                &apiserver::patch_meta::NoMeta,
            )
            .unwrap()
        }
    };
    (out, patched)
}

#[tokio::test]
async fn webhook_patches_edge_pods_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("webhook-test-ca");
    write_serving(&ca, dir.path());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let addr = start(dir.path(), shutdown.clone()).await;

    // A pod bound to an edge node: the 300 s tolerations lose their seconds, the rest stays.
    let (_, patched) = admit(addr, &ca.pem, "uid-edge", &pod("gw-1")).await;
    assert_eq!(
        patched["spec"]["tolerations"],
        json!([
            {"key": "dedicated", "operator": "Equal", "value": "gw", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
        ])
    );
    assert_eq!(
        patched["spec"]["containers"],
        pod("gw-1")["spec"]["containers"]
    );

    // An unbound pod selecting edge nodes and without tolerations gets them added.
    let selecting = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
        "spec": {"nodeSelector": {EDGE: ""}, "containers": [{"name": "c", "image": "busybox"}]}});
    let (_, patched) = admit(addr, &ca.pem, "uid-sel", &selecting).await;
    assert_eq!(
        patched["spec"]["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
        ])
    );

    // A cloud node's pod is admitted unchanged, without a patch.
    let (out, patched) = admit(addr, &ca.pem, "uid-cloud", &pod("cloud-1")).await;
    assert!(out["response"].get("patch").is_none(), "{out}");
    assert_eq!(patched, pod("cloud-1"));

    // The node cannot be read: still allowed, unchanged, with a warning saying why.
    let (out, patched) = admit(addr, &ca.pem, "uid-broken", &pod("broken")).await;
    assert_eq!(patched, pod("broken"));
    let warning = out["response"]["warnings"][0].as_str().unwrap_or("");
    assert!(warning.contains("could not read node broken"), "{out}");

    // Garbage is a 400 (no uid to answer), and the server keeps serving.
    let (code, body) = tokio::time::timeout(T, post(addr, &ca.pem, "{not json".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    admit(addr, &ca.pem, "uid-after", &pod("gw-1")).await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = ca("old-ca");
    write_serving(&old, dir.path());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let addr = start(dir.path(), shutdown.clone()).await;
    admit(addr, &old.pem, "u1", &pod("gw-1")).await;

    // cert-manager renews with another CA: once the files change, new handshakes use it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = ca("new-ca");
    write_serving(&new, dir.path());
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = tokio::time::timeout(T, post(addr, &new.pem, review("u2", &pod("gw-1")))).await;
        if matches!(r, Ok(Ok((200, _)))) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not served within 20 s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the old CA no longer verifies the server.
    let r = tokio::time::timeout(T, post(addr, &old.pem, review("u3", &pod("gw-1")))).await;
    assert!(matches!(r, Ok(Err(_))), "old CA still accepted: {r:?}");
}
