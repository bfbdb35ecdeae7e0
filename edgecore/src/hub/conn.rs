//! Dialing cloudcore: TCP, TLS (mutual, node CA only), WebSocket upgrade on
//! `/v1/connect` with the library's message and frame limits set to the
//! protocol's frame limit. One function, [`dial`]; the caller bounds it with
//! a timeout.

use std::sync::Arc;

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::ServerUrl;
use crate::pki;

/// The WebSocket of one session.
pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Why dialing failed (each variant names the step).
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP connect failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// host:port.
        addr: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The server name is not usable for TLS.
    #[error("invalid server name")]
    ServerName(#[source] pki::PkiError),
    /// The TLS handshake failed (wrong CA, certificate refused...).
    #[error("TLS handshake with {addr} failed")]
    Tls {
        /// host:port.
        addr: String,
        /// The IO error wrapping the TLS alert.
        #[source]
        source: std::io::Error,
    },
    /// The WebSocket upgrade failed (HTTP error, wrong path...).
    #[error("WebSocket upgrade at {url} failed")]
    Upgrade {
        /// The URL.
        url: String,
        /// The WebSocket error.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
}

/// The WebSocket limits for a frame limit of `max_frame` bytes.
pub fn ws_config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

/// Connects to `server` and upgrades to the link's WebSocket.
pub async fn dial(
    server: &ServerUrl,
    tls: Arc<ClientConfig>,
    max_frame: usize,
) -> Result<Ws, DialError> {
    let addr = server.authority();
    let tcp = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|source| DialError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let name = pki::server_name(&server.host).map_err(DialError::ServerName)?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|source| DialError::Tls { addr, source })?;
    let url = server.connect_url();
    let (ws, _response) = tokio_tungstenite::client_async_with_config(
        url.as_str(),
        stream,
        Some(ws_config(max_frame)),
    )
    .await
    .map_err(|e| DialError::Upgrade {
        url,
        source: Box::new(e),
    })?;
    Ok(ws)
}

/// The full chain of an error as one line (`a: b: c`), for logs and reasons.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
