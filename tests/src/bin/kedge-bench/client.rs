//! A small HTTP/2 client for the benchmark: TLS with the API's own CA (ALPN `h2`), the admin
//! bearer token, requests multiplexed over a few connections.
//!
//! Raw hyper rather than kube-rs so the client spends as little CPU as it can on a machine
//! whose two cores it shares with the server, and so that the benchmark controls exactly how
//! many connections carry the load. Flow-control windows are those of Go's client-go (4 MiB
//! per stream), the client kubectl uses.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tests::Standalone;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// No single request of the benchmark may take longer than this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes read from the socket at once, at most.
const READ_BUFFER: usize = 256 << 10;

/// Where and how to reach one running server.
#[derive(Clone)]
pub struct Endpoint {
    authority: String,
    base: Arc<str>,
    auth: HeaderValue,
    tls: TlsConnector,
    server_name: ServerName<'static>,
}

impl Endpoint {
    /// The endpoint of `server`: its URL, its CA and its admin token (both from the data dir).
    pub fn of(server: &Standalone) -> Result<Self> {
        let base = server.url.trim_end_matches('/').to_string();
        let authority = base
            .strip_prefix("https://")
            .with_context(|| format!("server URL {base} is not https://host:port"))?
            .to_string();
        let token_file = server.data_dir.join("apiserver/pki/admin.token");
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading {}", token_file.display()))?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .context("the admin token is not a valid header value")?;
        let ca = std::fs::read(server.ca_file()).context("reading the API CA certificate")?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots
                .add(cert.context("parsing the API CA certificate")?)
                .context("adding the API CA")?;
        }
        tests::init_crypto();
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&authority)
            .trim_matches(['[', ']']);
        let server_name =
            ServerName::try_from(host.to_string()).context("server host is not a TLS name")?;
        Ok(Self {
            authority,
            base: base.into(),
            auth,
            tls: TlsConnector::from(Arc::new(cfg)),
            server_name,
        })
    }

    /// Open one HTTP/2 connection.
    pub async fn connect(&self) -> Result<Conn> {
        let tcp = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .context("TCP connect timed out")?
            .with_context(|| format!("connecting to {}", self.authority))?;
        tcp.set_nodelay(true)?;
        // rustls asks its transport for 4 KiB at a time: unbuffered, a 60 MB list would be
        // ~15,000 read syscalls. Go's crypto/tls (client-go) reads whatever has arrived into
        // a growing buffer; this buffer does the same for the benchmark.
        let tcp = BufReader::with_capacity(READ_BUFFER, tcp);
        let tls = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake")?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("the server did not negotiate HTTP/2 via ALPN");
        }
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            tx,
            base: self.base.clone(),
            auth: self.auth.clone(),
        })
    }

    /// Open `n` connections.
    pub async fn connect_many(&self, n: usize) -> Result<Vec<Conn>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            out.push(self.connect().await?);
        }
        Ok(out)
    }
}

/// One HTTP/2 connection; clones share it (each request is a stream).
#[derive(Clone)]
pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
    base: Arc<str>,
    auth: HeaderValue,
}

/// The Accept header of JSON requests.
pub const JSON: &str = "application/json";

/// The Accept header of client-go's typed clients and informers: protobuf, else JSON.
pub const PROTOBUF_FIRST: &str = "application/vnd.kubernetes.protobuf, application/json";

/// Content type of a JSON merge patch.
pub const MERGE_PATCH: &str = "application/merge-patch+json";

impl Conn {
    /// Send a request and return once the response headers arrived.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        self.send_accepting(method, path, content_type, JSON, body)
            .await
    }

    /// [`Conn::send`] with another Accept header.
    async fn send_accepting(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: &'static str,
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, self.auth.clone())
            .header(header::ACCEPT, accept);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(Full::new(body))?;
        let mut tx = self.tx.clone();
        let fut = async move {
            tx.ready().await?;
            tx.send_request(req).await
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .with_context(|| format!("{path}: no response within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{path}: request failed"))
    }

    /// Send a request and read the whole response.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, content_type, body).await?;
        let status = resp.status();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .with_context(|| format!("{path}: body not read within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{path}: reading the body"))?
            .to_bytes();
        Ok((status, body))
    }

    /// GET `path` accepting `accept`: status, content type and body.
    pub async fn get_as(
        &self,
        path: &str,
        accept: &'static str,
    ) -> Result<(StatusCode, String, Bytes)> {
        let resp = self
            .send_accepting(Method::GET, path, None, accept, Bytes::new())
            .await?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .with_context(|| format!("{path}: body not read within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{path}: reading the body"))?
            .to_bytes();
        Ok((status, ct, body))
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Result<(StatusCode, Bytes)> {
        self.call(Method::GET, path, None, Bytes::new()).await
    }

    /// POST a JSON body to `path`.
    pub async fn post_json(&self, path: &str, body: Bytes) -> Result<(StatusCode, Bytes)> {
        self.call(Method::POST, path, Some("application/json"), body)
            .await
    }

    /// GET that must answer 200.
    pub async fn get_ok(&self, path: &str) -> Result<Bytes> {
        let (status, body) = self.get(path).await?;
        if status != StatusCode::OK {
            bail!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            );
        }
        Ok(body)
    }

    /// GET that must answer 200, reading the body frame by frame without joining it: the
    /// body's length and its last (up to 16) bytes (timed lists: what the server delivers, without
    /// the client's cost of assembling 60 MB in one buffer).
    pub async fn get_len(&self, path: &str, accept: &'static str) -> Result<(usize, Bytes)> {
        let resp = self
            .send_accepting(Method::GET, path, None, accept, Bytes::new())
            .await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let read = async {
            let mut len = 0usize;
            let mut last: Vec<u8> = Vec::with_capacity(32);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    len += data.len();
                    last.extend_from_slice(&data[data.len().saturating_sub(16)..]);
                    last.drain(..last.len().saturating_sub(16));
                }
            }
            Ok::<_, hyper::Error>((len, Bytes::from(last)))
        };
        let (len, last) = tokio::time::timeout(REQUEST_TIMEOUT, read)
            .await
            .with_context(|| format!("{path}: body not read within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{path}: reading the body"))?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&last));
        }
        Ok((len, last))
    }

    /// Create a namespace (already existing is fine).
    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))?;
        let (status, resp) = self.post_json("/api/v1/namespaces", body.into()).await?;
        if status != StatusCode::CREATED && status != StatusCode::CONFLICT {
            bail!(
                "creating namespace {name}: {status}: {}",
                String::from_utf8_lossy(&resp)
            );
        }
        Ok(())
    }
}
