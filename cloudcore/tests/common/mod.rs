//! What cloudcore's in-process integration tests share: the embedded API server on
//! 127.0.0.1:0 with cloudcore's CRDs ([`Cluster`]), CloudHub on top of it ([`Cloud`]), and a
//! minimal edge speaking the link protocol with a certificate from `/join` ([`Edge`]).
//! Each test binary uses part of it.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use cloudcore::edge::EdgeCache;
use cloudcore::hub::{CONNECT_PATH, Hub, HubConfig};
use cloudcore::join::{Bootstrap, JoinRequest, JoinResponse};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use prometheus_client::registry::Registry;
use proto::{Ack, Frame, Hello, HelloAck, Inventory, Kind, Limits, NodeInfo, Op, ResourceKey};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// How long one step of a test may take.
pub const STEP: Duration = Duration::from_secs(20);

/// `f`, or an error naming `what` after [`STEP`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP, f)
        .await
        .with_context(|| format!("timed out: {what}"))
}

/// Polls `check` until it yields `Some`, or fails naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await? {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?
}

/// Polls a synchronous condition until it holds, or fails naming `what`.
pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    within(what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A pod bound to `node` in `default`.
pub fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

/// The embedded API server with cloudcore's CRDs, and an admin client. Stops when dropped.
pub struct Cluster {
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    pub shutdown: CancellationToken,
    _server: apiserver::ApiServer,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Cluster> {
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
        Ok(Cluster {
            client,
            kubeconfig,
            shutdown,
            _server: server,
            _dir: dir,
        })
    }
}

/// CloudHub in process (edge cache, bootstrap, hub on 127.0.0.1:0) over a [`Cluster`].
pub struct Cloud {
    pub hub_addr: SocketAddr,
    pub client: kube::Client,
    pub cache: Arc<EdgeCache>,
    pub bootstrap: Arc<Bootstrap>,
    pub registry: Arc<Mutex<Registry>>,
    pub hub: Hub,
    pub kubeconfig: PathBuf,
    pub shutdown: CancellationToken,
    _cluster: Cluster,
}

impl Cloud {
    pub async fn start() -> anyhow::Result<Cloud> {
        Self::start_with(HubConfig::default()).await
    }

    /// [`Cloud::start`] with these hub settings (`listen` is replaced by a free port).
    pub async fn start_with(hub_cfg: HubConfig) -> anyhow::Result<Cloud> {
        let cluster = Cluster::start().await?;
        let (client, shutdown) = (cluster.client.clone(), cluster.shutdown.clone());
        let cache = EdgeCache::start(client.clone(), shutdown.clone()).await;
        let bootstrap = Bootstrap::new(client.clone(), &[]).await?;
        let mut registry = Registry::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hub_addr = listener.local_addr()?;
        let hub = Hub::new(
            HubConfig {
                listen: hub_addr,
                ..hub_cfg
            },
            client.clone(),
            cache.clone(),
            bootstrap.clone(),
            &mut registry,
        );
        tokio::spawn(hub.clone().run(listener, shutdown.clone()));
        within("caches synced", cache.wait_synced()).await?;
        assert!(hub.ready());
        Ok(Cloud {
            hub_addr,
            client,
            cache,
            bootstrap,
            registry: Arc::new(Mutex::new(registry)),
            hub,
            kubeconfig: cluster.kubeconfig.clone(),
            shutdown,
            _cluster: cluster,
        })
    }

    /// The hub's metrics in the text format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap())
            .unwrap();
        out
    }

    /// The value of the first metric line starting with `line_prefix` (0 when absent).
    pub fn metric(&self, line_prefix: &str) -> u64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub async fn tls(&self, config: ClientConfig) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.hub_addr).await?;
        let name = ServerName::try_from("localhost")?;
        Ok(TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?)
    }

    /// The node CA, as a trust store.
    pub fn roots(&self) -> anyhow::Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.bootstrap.ca_pem().as_bytes()) {
            roots.add(cert?)?;
        }
        Ok(roots)
    }

    /// `POST /join` as `node`, returning (certificate PEM, key PEM).
    pub async fn join(&self, node: &str) -> anyhow::Result<(String, String)> {
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
        let config = ClientConfig::builder()
            .with_root_certificates(self.roots()?)
            .with_no_client_auth();
        let (status, body) = self.http(config, "POST", "/join", body).await?;
        if status != 200 {
            bail!("join failed: {status} {}", String::from_utf8_lossy(&body));
        }
        let res: JoinResponse = serde_json::from_slice(&body)?;
        Ok((res.certificate, key.serialize_pem()))
    }

    /// One HTTP/1.1 request over TLS.
    pub async fn http(
        &self,
        config: ClientConfig,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let tls = self.tls(config).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::from(body)))?;
        let res = sender.send_request(req).await?;
        let status = res.status().as_u16();
        Ok((status, res.into_body().collect().await?.to_bytes()))
    }

    /// Opens the link as a node with a certificate.
    pub async fn connect(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<Edge> {
        let certs =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let config = ClientConfig::builder()
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(certs, key)?;
        let tls = self.tls(config).await?;
        let url = format!("wss://localhost{CONNECT_PATH}");
        let (ws, _) = tokio_tungstenite::client_async(url, tls).await?;
        Ok(Edge {
            ws,
            next_id: 1,
            acked: 0,
        })
    }

    /// Joins as `node`, opens the link and completes the handshake.
    pub async fn edge(&self, node: &str) -> anyhow::Result<Edge> {
        let (cert, key) = self.join(node).await?;
        let mut edge = self.connect(&cert, &key).await?;
        edge.handshake(node).await?;
        Ok(edge)
    }
}

/// A minimal edge speaking the protocol.
pub struct Edge {
    pub ws: WebSocketStream<TlsStream<TcpStream>>,
    /// The id of the next upstream frame.
    pub next_id: u64,
    /// Highest cloud frame id acked.
    pub acked: u64,
}

impl Edge {
    pub async fn send(&mut self, frame: &Frame) -> anyhow::Result<()> {
        self.ws
            .send(Message::Binary(Bytes::from(proto::encode(frame))))
            .await?;
        Ok(())
    }

    /// The next frame (answering pings on the way).
    pub async fn recv(&mut self) -> anyhow::Result<Frame> {
        loop {
            let msg = within("a frame from the cloud", self.ws.next())
                .await?
                .context("connection closed")??;
            let Message::Binary(bytes) = msg else {
                if let Message::Close(c) = msg {
                    bail!("closed by the cloud: {c:?}");
                }
                continue;
            };
            let frame = proto::decode(&bytes, Limits::default())?;
            if frame.checked_kind()? == Kind::Ping {
                let nonce = frame.control::<proto::Ping>()?.nonce;
                self.send(&Frame::pong(nonce)).await?;
                continue;
            }
            return Ok(frame);
        }
    }

    /// The next frame, acked if it is sequenced and new.
    pub async fn recv_acking(&mut self) -> anyhow::Result<Frame> {
        let frame = self.recv().await?;
        if frame.id > self.acked {
            self.send(&Frame::ack(frame.id)).await?;
            self.acked = frame.id;
        }
        Ok(frame)
    }

    /// Receives until a frame matches, acking every sequenced frame.
    pub async fn recv_until(
        &mut self,
        mut pred: impl FnMut(&Frame) -> bool,
    ) -> anyhow::Result<Frame> {
        loop {
            let frame = self.recv_acking().await?;
            if pred(&frame) {
                return Ok(frame);
            }
        }
    }

    /// HELLO + empty inventory; returns the HELLO_ACK and waits for SYNCED.
    pub async fn handshake(&mut self, node: &str) -> anyhow::Result<HelloAck> {
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
        let ack = self.recv().await?.control::<HelloAck>()?;
        self.send(&Frame::inventory(&Inventory {
            entries: vec![],
            chunk: 0,
            complete: true,
        }))
        .await?;
        self.recv_until(|f| f.kind == Kind::Synced as i32).await?;
        Ok(ack)
    }

    /// Sends a REQUEST; returns its RESPONSE after the cloud acked it.
    pub async fn request(
        &mut self,
        op: Op,
        key: &str,
        body: &str,
    ) -> anyhow::Result<proto::Response> {
        let id = self.next_id;
        self.next_id += 1;
        let key = ResourceKey::parse(key)?;
        self.send(&Frame::request(id, op, &key, body.as_bytes().to_vec()))
            .await?;
        let (mut response, mut acked) = (None, false);
        while response.is_none() || !acked {
            let f = self.recv().await?;
            match f.checked_kind()? {
                Kind::Response if f.ack_of == Some(id) => response = Some(f.control()?),
                Kind::Ack => acked |= f.control::<Ack>()?.up_to >= id,
                _ if f.id > self.acked => {
                    self.send(&Frame::ack(f.id)).await?;
                    self.acked = f.id;
                }
                _ => {}
            }
        }
        response.context("no response")
    }
}
