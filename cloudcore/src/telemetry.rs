//! Logging and metrics: `tracing` to stderr as text or JSON, and a small HTTP endpoint
//! serving Prometheus `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Log output options (shared by every subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "KEDGE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `cloudcore=debug,apiserver=info`, ...).
    #[arg(long, global = true, default_value = "info", env = "KEDGE_LOG")]
    pub log_level: String,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the global tracing subscriber.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| format!("invalid --log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal: redirected logs (files, journald,
        // `kubectl logs`) stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let res = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    res.map_err(|e| format!("installing the logger: {e}"))
}

/// Readiness reported by `/readyz`.
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serve `/metrics`, `/healthz`, `/readyz` on `listener` until `shutdown`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: Arc<Mutex<prometheus_client::registry::Registry>>,
    ready: Ready,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.cancelled() => return,
        };
        let registry = registry.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                let ready = ready.clone();
                async move {
                    let (code, ctype, body) = match req.uri().path() {
                        "/metrics" => {
                            let mut out = String::new();
                            if let Ok(reg) = registry.lock() {
                                let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
                            }
                            (
                                200,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                out,
                            )
                        }
                        "/healthz" | "/livez" => (200, "text/plain", "ok".to_string()),
                        "/readyz" if ready() => (200, "text/plain", "ok".to_string()),
                        "/readyz" => (503, "text/plain", "not ready".to_string()),
                        _ => (404, "text/plain", "not found".to_string()),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
                    if let Ok(v) = http::HeaderValue::from_str(ctype) {
                        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
                    }
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Bind the metrics listener (an error names the address).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} (metrics): {e}"))
    })
}
