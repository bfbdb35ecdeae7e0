//! Logging and metrics: `tracing` to stderr as text or JSON (`--log-format`),
//! Prometheus [`Metrics`], and the small HTTP endpoint on the metrics listen
//! address (default 127.0.0.1:9101) serving `/metrics`, `/healthz`, `/readyz`
//! and `/status` (the JSON that `edgecore status` prints).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::status::StatusReport;

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
    /// Log filter (`info`, `debug`, `edgecore=debug`, ...).
    #[arg(
        long,
        global = true,
        default_value = "info,rumqttd=warn",
        env = "KEDGE_LOG"
    )]
    pub log_level: String,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| format!("invalid --log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let no_broker_spans = filter_fn(not_a_broker_span);
    let res = match args.log_format {
        LogFormat::Text => builder
            .finish()
            .with(no_broker_spans)
            .with(QuietDisconnects)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(no_broker_spans)
            .with(QuietDisconnects)
            .try_init(),
    };
    res.map_err(|e| format!("installing the logger: {e}"))
}

/// Whether a callsite may be recorded: everything except the embedded broker's spans.
///
/// rumqttd opens an *error*-level span for every publish it routes
/// (`publish{topic=…, pkid=…}`), so no level filter keeps it out, and recording it
/// (allocating the span, Debug-formatting the topic byte by byte) was a visible part of
/// edgecore's CPU per twin report (three routed publishes per report). rumqttd's events
/// still pass the level filter; they only lose that span as context.
fn not_a_broker_span(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.is_span() && meta.target().starts_with("rumqttd"))
}

/// Drops the embedded broker's ERROR lines for a client's ordinary disconnect.
///
/// rumqttd 0.20 logs every MQTT client that disconnects — each `mosquitto_pub`, each sensor
/// that connects per reading — at ERROR (`router-drop`, `no-connection id N is already
/// gone`, `connection-stop`), so an operator saw an error per publish and real errors got
/// lost among them. Its other events (a failing link, a refused connection) still pass.
struct QuietDisconnects;

/// rumqttd's messages for an ordinary disconnect.
fn is_disconnect_chatter(message: &str) -> bool {
    message == "router-drop"
        || message == "connection-stop"
        || (message.starts_with("no-connection id ") && message.ends_with(" is already gone"))
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QuietDisconnects {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        if !event.metadata().target().starts_with("rumqttd") {
            return true;
        }
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "message" {
                    self.0 = is_disconnect_chatter(value);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = is_disconnect_chatter(&format!("{value:?}"));
                }
            }
        }
        let mut m = Message(false);
        event.record(&mut m);
        !m.0
    }
}

/// Label set of the metric families: `[(name, value)]`.
pub type Labels = Vec<(String, String)>;

/// One label.
pub fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

/// Every metric edgecore exports. Cheap to clone (handles share values).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// `edgecore_link_state{state}`: 1 for the current link state.
    pub link_state: Family<Labels, Gauge>,
    /// `edgecore_reconnects_total`: failed dials and ended sessions.
    pub reconnects: Counter,
    /// `edgecore_frames_in_total{kind}`.
    pub frames_in: Family<Labels, Counter>,
    /// `edgecore_frames_out_total{kind}`.
    pub frames_out: Family<Labels, Counter>,
    /// `edgecore_acks_sent_total`: ACKs of durable cloud frames.
    pub acks_sent: Counter,
    /// `edgecore_acks_received_total`: ACKs of upstream frames.
    pub acks_received: Counter,
    /// `edgecore_refused_frames_total{reason}`: cloud frames not accepted.
    pub refused: Family<Labels, Counter>,
    /// `edgecore_cloud_errors_total{reason}`: ERROR frames from the cloud.
    pub cloud_errors: Family<Labels, Counter>,
    /// `edgecore_outbox_depth`: upstream writes queued.
    pub outbox_depth: Gauge,
    /// `edgecore_outbox_dropped_total{code}`: writes dropped on permanent errors.
    pub outbox_dropped: Family<Labels, Counter>,
    /// `edgecore_store_flush_seconds`: latency of store flushes (fsync).
    pub store_flush_seconds: Histogram,
    /// `edgecore_objects`: objects held in the edge cache.
    pub objects: Gauge,
    /// `edgecore_meta_ignored_total{reason}`: cloud frames that changed nothing.
    pub meta_ignored: Family<Labels, Counter>,
    /// `edgecore_meta_status_echoes_total`: Device updates that changed only the status this
    /// edge wrote, held in memory without a store write.
    pub meta_status_echoes: Counter,
    /// `edgecore_runtime_actions_total{action}` and failures `{action="failed",reason}`.
    pub runtime_actions: Family<Labels, Counter>,
    /// `edgecore_pods`: pods of this node the runtime manages.
    pub pods: Gauge,
    /// `edgecore_cert_renewals_total{result}`: node certificate renewals over the link
    /// (`renewed`, `refused`, `failed`).
    pub cert_renewals: Family<Labels, Counter>,
    /// `edgecore_cert_expiry_seconds`: seconds until the node certificate's notAfter
    /// (negative once expired).
    pub cert_expiry_seconds: Gauge,
    /// The device bus's metrics (twin requests, deltas, drivers, broker).
    pub bus: crate::bus::metrics::BusMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            link_state: Family::default(),
            reconnects: Counter::default(),
            frames_in: Family::default(),
            frames_out: Family::default(),
            acks_sent: Counter::default(),
            acks_received: Counter::default(),
            refused: Family::default(),
            cloud_errors: Family::default(),
            outbox_depth: Gauge::default(),
            outbox_dropped: Family::default(),
            store_flush_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            objects: Gauge::default(),
            meta_ignored: Family::default(),
            meta_status_echoes: Counter::default(),
            runtime_actions: Family::default(),
            pods: Gauge::default(),
            cert_renewals: Family::default(),
            cert_expiry_seconds: Gauge::default(),
            bus: crate::bus::metrics::BusMetrics::default(),
        };
        let mut r = Registry::default();
        r.register(
            "edgecore_link_state",
            "1 for the current state of the link to cloudcore",
            m.link_state.clone(),
        );
        r.register(
            "edgecore_reconnects",
            "Failed dials and ended sessions (each followed by a reconnect)",
            m.reconnects.clone(),
        );
        r.register(
            "edgecore_frames_in",
            "Frames received from cloudcore, by kind",
            m.frames_in.clone(),
        );
        r.register(
            "edgecore_frames_out",
            "Frames sent to cloudcore, by kind",
            m.frames_out.clone(),
        );
        r.register(
            "edgecore_acks_sent",
            "ACKs sent for durable cloud frames",
            m.acks_sent.clone(),
        );
        r.register(
            "edgecore_acks_received",
            "ACKs received for upstream frames",
            m.acks_received.clone(),
        );
        r.register(
            "edgecore_refused_frames",
            "Cloud frames refused, by reason",
            m.refused.clone(),
        );
        r.register(
            "edgecore_cloud_errors",
            "ERROR frames received from cloudcore, by reason",
            m.cloud_errors.clone(),
        );
        r.register(
            "edgecore_outbox_depth",
            "Upstream writes queued in the outbox",
            m.outbox_depth.clone(),
        );
        r.register(
            "edgecore_outbox_dropped",
            "Upstream writes dropped after a permanent API error, by code",
            m.outbox_dropped.clone(),
        );
        r.register(
            "edgecore_store_flush_seconds",
            "Latency of store flushes (fsync)",
            m.store_flush_seconds.clone(),
        );
        r.register(
            "edgecore_objects",
            "Objects held in the edge cache",
            m.objects.clone(),
        );
        r.register(
            "edgecore_meta_ignored",
            "Cloud frames that changed nothing, by reason",
            m.meta_ignored.clone(),
        );
        r.register(
            "edgecore_meta_status_echoes",
            "Device updates that changed only the status this edge wrote (held, not stored)",
            m.meta_status_echoes.clone(),
        );
        r.register(
            "edgecore_runtime_actions",
            "Pod runtime actions taken, and failures by reason",
            m.runtime_actions.clone(),
        );
        r.register("edgecore_pods", "Pods of this node", m.pods.clone());
        r.register(
            "edgecore_cert_renewals",
            "Node certificate renewals over the link, by result",
            m.cert_renewals.clone(),
        );
        r.register(
            "edgecore_cert_expiry_seconds",
            "Seconds until the node certificate expires (negative once expired)",
            m.cert_expiry_seconds.clone(),
        );
        let bus = crate::bus::metrics::BusMetrics::register(&mut r);
        Metrics {
            registry: Arc::new(r),
            bus,
            ..m
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a refused cloud frame.
    pub fn refuse(&self, reason: &str) {
        self.refused.get_or_create(&label("reason", reason)).inc();
    }
}

/// The live status the running process publishes at `/status`.
pub type LiveStatus = Arc<Mutex<StatusReport>>;

/// Serves `/metrics`, `/healthz`, `/readyz` (ready once the store is open
/// and the cache loaded: the edge works without the cloud) and `/status`
/// on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    status: LiveStatus,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.cancelled() => return,
        };
        let metrics = metrics.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (code, ctype, body) = match req.uri().path() {
                    "/metrics" => (
                        200,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        metrics.encode(),
                    ),
                    "/healthz" | "/livez" | "/readyz" => (200, "text/plain", "ok".to_owned()),
                    "/status" => {
                        let report = status
                            .lock()
                            .map(|s| s.clone())
                            .unwrap_or_else(|p| p.into_inner().clone());
                        match serde_json::to_string(&report) {
                            Ok(json) => (200, "application/json", json),
                            Err(e) => (500, "text/plain", e.to_string()),
                        }
                    }
                    _ => (404, "text/plain", "not found".to_owned()),
                };
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
                if let Ok(v) = http::HeaderValue::from_str(ctype) {
                    r.headers_mut().insert(http::header::CONTENT_TYPE, v);
                }
                std::future::ready(Ok::<_, std::convert::Infallible>(r))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Binds the metrics listener (an error names the address).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} (metrics): {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::Layer;

    /// Collects the messages of the events that reach it.
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct V(String);
            impl tracing::field::Visit for V {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            let mut v = V(String::new());
            event.record(&mut v);
            if let Ok(mut seen) = self.0.lock() {
                seen.push(v.0);
            }
        }
    }

    #[test]
    fn a_client_disconnect_is_not_logged_as_an_error_but_broker_errors_are() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(QuietDisconnects)
            .with(Capture(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "rumqttd::server::broker", error = ?"Link(Recv)", "router-drop");
            tracing::error!(target: "rumqttd::router::routing", "no-connection id {} is already gone", 7);
            tracing::error!(target: "rumqttd::server::broker", "connection-stop");
            tracing::error!(target: "rumqttd::server::broker", error = ?"Io", "Remote link error");
            tracing::error!(target: "edgecore::bus", "router-drop");
        });
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, ["Remote link error", "router-drop"], "{seen:?}");
    }
}
