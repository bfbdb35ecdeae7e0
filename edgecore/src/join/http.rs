//! A minimal HTTPS client for the two bootstrap requests (`GET /ca.crt`,
//! `POST /join`): one request per connection, HTTP/1.1 over rustls.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::ServerUrl;
use crate::pki;

/// Why a bootstrap request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No TCP connection (refused, unreachable, DNS).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// host:port.
        addr: String,
        /// The IO error (with the TLS alert).
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP request to {url} failed: {detail}")]
    Http {
        /// The URL.
        url: String,
        /// Detail.
        detail: String,
    },
    /// No answer in time.
    #[error("{url} did not answer within {secs} s")]
    Timeout {
        /// The URL.
        url: String,
        /// The bound.
        secs: u64,
    },
}

/// Sends one request and returns the status and body.
pub async fn request(
    server: &ServerUrl,
    tls: ClientConfig,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), HttpError> {
    let url = server.https(path);
    let fut = async {
        let addr = server.authority();
        let tcp = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(|source| HttpError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let name = pki::server_name(&server.host).map_err(|e| HttpError::Http {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let tls = TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|source| HttpError::Tls {
                addr: addr.clone(),
                source,
            })?;
        let http_err = |e: &dyn std::fmt::Display| HttpError::Http {
            url: url.clone(),
            detail: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| http_err(&e))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr)
            .header(
                http::header::USER_AGENT,
                concat!("kedge-edgecore/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http_err(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| http_err(&e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http_err(&e))?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.clone(),
            secs: timeout.as_secs(),
        })?
}
