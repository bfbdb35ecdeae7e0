//! An in-process API server on 127.0.0.1:0 with a kube-rs client, and raw requests that
//! keep what kube-rs drops (status codes, Status metadata).

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use apiserver::{ApiConfig, ApiServer};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A running server and an admin client.
pub struct Server {
    pub server: ApiServer,
    pub client: kube::Client,
    pub kubeconfig: std::path::PathBuf,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Start a server with the defaults changed by `tune`.
pub async fn start(tune: impl FnOnce(&mut ApiConfig)) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ApiConfig {
        data_dir: dir.path().join("api"),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ApiConfig::default()
    };
    tune(&mut cfg);
    let shutdown = CancellationToken::new();
    let server = within("server start", ApiServer::start(cfg, shutdown.clone()))
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let kcfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(kcfg).unwrap();
    Server {
        server,
        client,
        kubeconfig,
        dir,
        shutdown,
    }
}

/// Fail naming `what` when `f` takes longer than 30 s.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after 30 s: {what}"))
}

impl Server {
    /// A request over a fresh connection with the admin token: (HTTP status, JSON body or
    /// Null). No client-side retries (kube-rs retries 5xx answers).
    pub async fn raw(
        &self,
        method: &str,
        uri: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let token = self.server.pki.admin_token().to_string();
        self.request(method, uri, &token, content_type, body).await
    }

    /// GET `uri` as the admin.
    pub async fn get(&self, uri: &str) -> (u16, Value) {
        self.raw("GET", uri, "application/json", Vec::new()).await
    }

    /// A request with bearer `token` (none when empty: anonymous) and no client
    /// certificate.
    pub async fn request(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let ca = rustls_pki_types::CertificateDer::from(self.server.pki.ca_cert_der().to_vec());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
        let tcp = tokio::net::TcpStream::connect(self.server.addr)
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "localhost");
        if !token.is_empty() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req
            .header("content-type", content_type)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let resp = within(uri, send.send_request(req)).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}
