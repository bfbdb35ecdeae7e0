//! The listener: TLS (the API's own CA; client certificates optional and verified), HTTP/1.1
//! and HTTP/2, one task per connection, writes batched per poll of it ([`batch`]), graceful
//! shutdown.

mod batch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::api::Api;

/// Accept connections until `shutdown`; then stop accepting and give open requests
/// `grace` to finish.
pub async fn serve(
    api: Arc<Api>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                Duration::from_secs(10),
                crate::pki::accept_tls(&acceptor, tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    api.reject("tls_handshake");
                    tracing::debug!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    api.reject("tls_timeout");
                    return;
                }
            };
            let epoch = batch::Epoch::default();
            let tls = batch::Batched::new(tls, epoch.clone());
            let user = tls
                .get_ref()
                .get_ref()
                .1
                .peer_certificates()
                .and_then(crate::auth::user_from_peer_certs);
            let svc = service_fn(move |req| {
                let api = api.clone();
                let user = user.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(crate::handler::handle(api, user, req).await)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = epoch.run(watcher.watch(conn.into_owned())).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("open connections did not finish within the grace period");
    }
}

/// Bind a listener, with a clear error naming the address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
