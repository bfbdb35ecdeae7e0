//! One TCP connection: TLS handshake (client certificate optional, verified
//! against the node CA by rustls), then HTTP/1.1 routing:
//! `GET /ca.crt` and `POST /join` go to `Bootstrap::handle`; `GET /v1/connect`
//! is authenticated from the certificate and upgraded to a WebSocket that
//! becomes a session. Every refusal is counted in
//! `cloudcore_hub_refused_total{reason}` and answered with a plain-text body
//! saying what is wrong.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::identity::{IdentityError, PeerIdentity, peer_identity};
use super::{CONNECT_PATH, Shared, session};

/// Time allowed for the TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Initial WebSocket read buffer of a session. tungstenite's default (128 KiB, allocated
/// and zero-filled at once) would be most of a session's memory; frames larger than this
/// grow it as needed.
const WS_READ_BUFFER: usize = 8 * 1024;
/// Bytes of frames buffered before they are written to the socket (the writer flushes
/// whenever its queue runs dry anyway).
const WS_WRITE_BUFFER: usize = 16 * 1024;
/// Largest bootstrap request body (a CSR and a token).
const MAX_BOOTSTRAP_BODY: usize = 64 * 1024;

type Reply = Response<Full<Bytes>>;

/// Serves one TCP connection until it closes, is upgraded, or `shutdown`.
pub(super) async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(shared.bootstrap.tls_config());
    let tls = match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = tls_reason(&e);
            shared.metrics.refuse(reason);
            tracing::info!(%peer, reason, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            shared.metrics.refuse("tls_timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = peer_identity(tls.get_ref().1.peer_certificates());
    let svc = {
        let shutdown = shutdown.clone();
        service_fn(move |req| {
            route(
                shared.clone(),
                identity.clone(),
                peer,
                tasks.clone(),
                shutdown.clone(),
                req,
            )
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder
        .serve_connection(TokioIo::new(tls), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        },
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

/// Classifies a failed TLS handshake for the refusal metric.
fn tls_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "expired_certificate"
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_ca",
            CertificateError::Revoked => "revoked",
            _ => "bad_certificate",
        },
        Some(_) => "tls_handshake",
        None => "tls_io",
    }
}

async fn route(
    shared: Arc<Shared>,
    identity: Result<PeerIdentity, IdentityError>,
    peer: SocketAddr,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    Ok(match (&method, path.as_str()) {
        (&Method::GET, "/ca.crt") | (&Method::POST, "/join") => bootstrap(&shared, req).await,
        (&Method::GET, CONNECT_PATH) => connect(shared, identity, peer, tasks, shutdown, req),
        (_, "/ca.crt" | "/join" | CONNECT_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found (CloudHub serves /ca.crt, /join and /v1/connect)",
        ),
    })
}

/// Hands a bootstrap request to `Bootstrap::handle`.
async fn bootstrap(shared: &Shared, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BOOTSTRAP_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            shared.metrics.refuse("bootstrap_body");
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable",
            );
        }
    };
    let res = shared
        .bootstrap
        .handle(Request::from_parts(parts, body))
        .await;
    res.map(Full::new)
}

/// Authenticates and upgrades `GET /v1/connect`.
fn connect(
    shared: Arc<Shared>,
    identity: Result<PeerIdentity, IdentityError>,
    peer: SocketAddr,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    req: Request<Incoming>,
) -> Reply {
    let id = match identity {
        Ok(id) => id,
        Err(e) => {
            shared.metrics.refuse(e.reason());
            tracing::info!(%peer, reason = e.reason(), "connection refused");
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
            return text(status, &e.to_string());
        }
    };
    if id.expired_at(crate::join::unix_now()) {
        shared.metrics.refuse("expired_certificate");
        tracing::warn!(%peer, node = %id.node, serial = %id.serial_hex, not_after = id.not_after,
            "expired node certificate refused (resumed TLS session)");
        return text(
            StatusCode::FORBIDDEN,
            "this node certificate has expired; join the node again with a fresh token (`edgecore join --server ... --token ...`)",
        );
    }
    if shared.bootstrap.is_revoked(&id.serial_hex) {
        shared.metrics.refuse("revoked");
        tracing::info!(%peer, node = %id.node, serial = %id.serial_hex, "revoked certificate refused");
        return text(
            StatusCode::FORBIDDEN,
            "this node certificate was revoked (the Node was deleted?); join again with a new token",
        );
    }
    let Some(key) = websocket_key(&req) else {
        shared.metrics.refuse("not_websocket");
        return text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13)",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let max = shared.cfg.max_frame_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let span = tracing::info_span!("session", node = %id.node, %peer);
    tasks.spawn(
        async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    let (seq, replaced) = shared.register(&id.node);
                    session::run(shared, ws, id, seq, replaced, shutdown).await;
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        }
        .instrument(span),
    );
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// The `Sec-WebSocket-Key` of a valid WebSocket upgrade request.
fn websocket_key<B>(req: &Request<B>) -> Option<String> {
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    let ok = has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
        && h.get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    ok.then(|| {
        h.get(header::SEC_WEBSOCKET_KEY)?
            .to_str()
            .ok()
            .map(str::to_owned)
    })
    .flatten()
}

fn text(status: StatusCode, body: &str) -> Reply {
    let mut res = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn upgrade_req() -> http::request::Builder {
        Request::get(CONNECT_PATH)
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
    }

    #[test]
    fn websocket_upgrade_is_recognised() {
        let req = upgrade_req()
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        assert_eq!(
            websocket_key(&req).as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        let no_key = upgrade_req().body(()).unwrap();
        assert_eq!(websocket_key(&no_key), None);
        let plain = Request::get(CONNECT_PATH).body(()).unwrap();
        assert_eq!(websocket_key(&plain), None);
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn tls_failures_are_classified() {
        let wrap = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let cert = |c| wrap(rustls::Error::InvalidCertificate(c));
        assert_eq!(
            tls_reason(&cert(rustls::CertificateError::Expired)),
            "expired_certificate"
        );
        assert_eq!(
            tls_reason(&cert(rustls::CertificateError::UnknownIssuer)),
            "unknown_ca"
        );
        assert_eq!(
            tls_reason(&cert(rustls::CertificateError::BadEncoding)),
            "bad_certificate"
        );
        assert_eq!(
            tls_reason(&wrap(rustls::Error::HandshakeNotComplete)),
            "tls_handshake"
        );
        assert_eq!(tls_reason(&std::io::Error::other("reset")), "tls_io");
    }
}
