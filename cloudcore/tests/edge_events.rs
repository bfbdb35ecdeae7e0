//! Events written by an edge, end to end through the link: CloudHub in process against the
//! embedded API server, a minimal edge (proto + tokio-tungstenite, certificate from
//! `/join`) that sends EVENT frames. An Event about its own pod is stored and `kubectl
//! describe pod` shows it; an Event about another node's pod is refused (ERROR 403, a
//! refusal metric) and never reaches the API.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use cloudcore::edge::EdgeCache;
use cloudcore::hub::{CONNECT_PATH, Hub, HubConfig};
use cloudcore::join::{Bootstrap, JoinRequest, JoinResponse};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use prometheus_client::registry::Registry;
use proto::{ErrorInfo, Frame, Hello, Inventory, Kind, Limits, NodeInfo, Op, ResourceKey};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const STEP: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP, f)
        .await
        .with_context(|| format!("timed out: {what}"))
}

struct Cloud {
    hub_addr: SocketAddr,
    client: kube::Client,
    cache: Arc<EdgeCache>,
    bootstrap: Arc<Bootstrap>,
    registry: Registry,
    kubeconfig: PathBuf,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Cloud {
    async fn start() -> anyhow::Result<Cloud> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let server = apiserver::ApiServer::start(
            apiserver::ApiConfig {
                data_dir: dir.path().join("api"),
                listen: "127.0.0.1:0".parse()?,
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await?;
        for crd in cloudcore::crds::objects().map_err(anyhow::Error::msg)? {
            apiserver::bootstrap::ensure(&server.api, crd)
                .await
                .map_err(|e| anyhow::anyhow!("installing CRDs: {e}"))?;
        }
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        server.write_kubeconfig(&kubeconfig)?;
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let client = kube::Client::try_from(cfg)?;
        let cache = EdgeCache::start(client.clone(), shutdown.clone()).await;
        let bootstrap = Bootstrap::new(client.clone(), &[]).await?;
        let mut registry = Registry::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hub_addr = listener.local_addr()?;
        let hub = Hub::new(
            HubConfig {
                listen: hub_addr,
                ..Default::default()
            },
            client.clone(),
            cache.clone(),
            bootstrap.clone(),
            &mut registry,
        );
        tokio::spawn(hub.run(listener, shutdown.clone()));
        within("caches synced", cache.wait_synced()).await?;
        Ok(Cloud {
            hub_addr,
            client,
            cache,
            bootstrap,
            registry,
            kubeconfig,
            shutdown,
            _dir: dir,
        })
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    async fn tls(&self, config: ClientConfig) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.hub_addr).await?;
        let name = ServerName::try_from("localhost")?;
        Ok(TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?)
    }

    fn roots(&self) -> anyhow::Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.bootstrap.ca_pem().as_bytes()) {
            roots.add(cert?)?;
        }
        Ok(roots)
    }

    /// `POST /join` as `node`, then open the link and handshake.
    async fn edge(&self, node: &str) -> anyhow::Result<Edge> {
        let token =
            cloudcore::token::create(&self.client, self.bootstrap.ca_hash(), None, None, None)
                .await?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
        let csr = params.serialize_request(&key)?.pem()?;
        let body = serde_json::to_vec(&JoinRequest {
            token,
            node_name: node.into(),
            csr,
            ..Default::default()
        })?;
        let plain = ClientConfig::builder()
            .with_root_certificates(self.roots()?)
            .with_no_client_auth();
        let tls = self.tls(plain).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = http::Request::post("/join")
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::from(body)))?;
        let res = sender.send_request(req).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        if status != 200 {
            bail!("join failed: {status} {}", String::from_utf8_lossy(&body));
        }
        let joined: JoinResponse = serde_json::from_slice(&body)?;
        let certs = CertificateDer::pem_slice_iter(joined.certificate.as_bytes())
            .collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?;
        let config = ClientConfig::builder()
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(certs, key)?;
        let tls = self.tls(config).await?;
        let (ws, _) =
            tokio_tungstenite::client_async(format!("wss://localhost{CONNECT_PATH}"), tls).await?;
        let mut edge = Edge { ws, acked: 0 };
        edge.handshake(node).await?;
        Ok(edge)
    }
}

struct Edge {
    ws: WebSocketStream<TlsStream<TcpStream>>,
    acked: u64,
}

impl Edge {
    async fn send(&mut self, frame: &Frame) -> anyhow::Result<()> {
        self.ws
            .send(Message::Binary(Bytes::from(proto::encode(frame))))
            .await?;
        Ok(())
    }

    /// The next frame, answering pings and acking sequenced frames on the way.
    async fn recv(&mut self) -> anyhow::Result<Frame> {
        loop {
            let msg = within("a frame from the cloud", self.ws.next())
                .await?
                .context("connection closed")??;
            let Message::Binary(bytes) = msg else {
                continue;
            };
            let frame = proto::decode(&bytes, Limits::default())?;
            if frame.checked_kind()? == Kind::Ping {
                let nonce = frame.control::<proto::Ping>()?.nonce;
                self.send(&Frame::pong(nonce)).await?;
                continue;
            }
            if frame.id > self.acked {
                self.send(&Frame::ack(frame.id)).await?;
                self.acked = frame.id;
            }
            return Ok(frame);
        }
    }

    async fn handshake(&mut self, node: &str) -> anyhow::Result<()> {
        self.send(&Frame::hello(&Hello {
            min_version: 1,
            max_version: 1,
            node_name: node.into(),
            info: Some(NodeInfo {
                os: "linux".into(),
                arch: "amd64".into(),
                agent_version: "test".into(),
                ..Default::default()
            }),
            max_frame_bytes: 0,
        }))
        .await?;
        self.recv().await?;
        self.send(&Frame::inventory(&Inventory {
            entries: vec![],
            chunk: 0,
            complete: true,
        }))
        .await?;
        while self.recv().await?.kind != Kind::Synced as i32 {}
        Ok(())
    }

    /// Sends an EVENT; returns `Ok(None)` once the cloud acked it, `Ok(Some(error))` when it
    /// answered with an ERROR instead.
    async fn event(
        &mut self,
        id: u64,
        key: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<Option<ErrorInfo>> {
        let key = ResourceKey::parse(key)?;
        self.send(&Frame::event(
            id,
            Op::Create,
            &key,
            body.to_string().into_bytes(),
        ))
        .await?;
        let mut error = None;
        loop {
            let f = self.recv().await?;
            match f.checked_kind()? {
                Kind::Error if f.ack_of == Some(id) => error = Some(f.control::<ErrorInfo>()?),
                Kind::Ack if f.control::<proto::Ack>()?.up_to >= id => return Ok(error),
                _ => {}
            }
        }
    }
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

/// An Event as the edge runtime writes one (kubelet's shape).
fn event(name: &str, pod: &Pod, node: &str, reason: &str, message: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "default",
            "name": pod.metadata.name, "uid": pod.metadata.uid, "fieldPath": "spec.containers{c}"},
        "reason": reason, "message": message, "type": "Normal", "count": 1,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet", "reportingInstance": node,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_events_reach_describe_and_only_for_own_pods() -> anyhow::Result<()> {
    let cloud = Cloud::start().await?;
    let _stop = cloud.shutdown.clone().drop_guard();
    let mut a = cloud.edge("edge-a").await?;
    let _b = cloud.edge("edge-b").await?;
    let pods: Api<Pod> = Api::namespaced(cloud.client.clone(), "default");
    let pa = pods
        .create(&PostParams::default(), &pod("pa", "edge-a"))
        .await?;
    let pb = pods
        .create(&PostParams::default(), &pod("pb", "edge-b"))
        .await?;
    within("the cache knows both pods", async {
        while cloud.cache.pod_node("default", "pa").is_none()
            || cloud.cache.pod_node("default", "pb").is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;

    // Its own pod: stored, and kubectl describe shows it.
    let ok = event(
        "pa.pulled",
        &pa,
        "edge-a",
        "Pulled",
        "Container image \"busybox\" already present on machine",
    );
    assert!(a.event(1, "default/event/pa.pulled", &ok).await?.is_none());
    let events: Api<Event> = Api::namespaced(cloud.client.clone(), "default");
    let stored = within("the Event in the API", async {
        loop {
            if let Ok(Some(e)) = events.get_opt("pa.pulled").await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    assert_eq!(stored.involved_object.name.as_deref(), Some("pa"));
    let kubeconfig = cloud.kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--request-timeout",
                "20s",
                "describe",
                "pod",
                "pa",
                "-n",
                "default",
            ])
            .env_remove("KUBECONFIG")
            .output()
    })
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events_part = text.split("Events:").nth(1).unwrap_or("");
    assert!(
        events_part.contains("Pulled") && events_part.contains("already present on machine"),
        "kubectl describe pod pa:\n{text}"
    );

    // Another node's pod: refused with 403, counted, never stored.
    let forged = event(
        "pb.killing",
        &pb,
        "edge-b",
        "Killing",
        "Stopping container c",
    );
    let err = a
        .event(2, "default/event/pb.killing", &forged)
        .await?
        .context("an ERROR for an Event about another node's pod")?;
    assert_eq!(err.code, 403, "{err:?}");
    assert!(events.get_opt("pb.killing").await?.is_none());
    let about_pb = events
        .list(&ListParams::default().fields("involvedObject.name=pb"))
        .await?;
    assert!(about_pb.items.is_empty());
    let metrics = cloud.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l == "cloudcore_hub_refused_total{reason=\"forbidden_create\"} 1"),
        "{metrics}"
    );
    // The session is still up: another event of its own goes through.
    let again = event(
        "pa.started",
        &pa,
        "edge-a",
        "Started",
        "Started container c",
    );
    assert!(
        a.event(3, "default/event/pa.started", &again)
            .await?
            .is_none()
    );
    Ok(())
}
