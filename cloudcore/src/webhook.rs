//! The edge-autonomy mutating admission webhook that `cloudcore run` serves over HTTPS for
//! a real cluster (the Helm chart registers it): kube-apiserver's `DefaultTolerationSeconds`
//! has given every pod 300 s `not-ready`/`unreachable` tolerations; for pods bound for edge
//! nodes this answers a JSON Patch that makes them untimed, so an offline gateway keeps its
//! pods. The decision is the embedded API's own ([`apiserver::admission::autonomy`]), so
//! standalone and a cluster behave the same.
//!
//! Where to start: [`serve`] (accept loop, TLS, HTTP), [`review`] (AdmissionReview in/out,
//! pure), [`tls`] (the serving certificate, reloaded when its files change). The only IO of
//! a review is reading the pod's Node (its labels), through [`NodeLookup`].

pub mod review;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use apiserver::admission::autonomy::{self, Decision};

/// The path the chart's MutatingWebhookConfiguration calls.
pub const PATH: &str = "/mutate/v1/pods/autonomy";
/// Largest AdmissionReview accepted (a pod is at most 3 MiB in etcd; the review wraps it).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// How long a review waits for the Node.
const NODE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a node's labels: `Ok(None)` when the node does not exist.
pub trait NodeLookup: Send + Sync + 'static {
    /// The labels of `node`.
    fn labels(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Option<Map<String, Value>>, String>> + Send;
}

impl NodeLookup for kube::Client {
    async fn labels(&self, node: &str) -> Result<Option<Map<String, Value>>, String> {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(self.clone());
        let found = nodes
            .get_metadata_opt(node)
            .await
            .map_err(|e| e.to_string())?;
        Ok(found.map(|n| {
            n.metadata
                .labels
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        }))
    }
}

/// What the webhook decides with.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `[autonomy] enabled`: off answers every review unchanged.
    pub enabled: bool,
    /// `[autonomy] edge_label`.
    pub edge_label: String,
}

/// `{result}` of a review.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The webhook's metrics.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    reviews: Family<ResultLabel, Counter>,
    lookup_errors: Counter,
}

impl WebhookMetrics {
    /// Register under `kedge_autonomy_webhook_*`.
    pub fn register(&self, reg: &mut Registry) {
        let sub = reg.sub_registry_with_prefix("kedge_autonomy_webhook");
        sub.register(
            "reviews",
            "AdmissionReviews answered, by result (mutated, tolerated, not_edge, opted_out, bad_request)",
            self.reviews.clone(),
        );
        sub.register(
            "node_lookup_errors",
            "Reviews whose Node could not be read (answered from the pod alone, with a warning)",
            self.lookup_errors.clone(),
        );
    }

    fn count(&self, result: &'static str) {
        self.reviews.get_or_create(&ResultLabel { result }).inc();
    }
}

/// The webhook's shared state.
#[derive(Debug)]
pub struct Webhook<L> {
    settings: WebhookSettings,
    lookup: L,
    metrics: WebhookMetrics,
}

impl<L: NodeLookup> Webhook<L> {
    /// A webhook deciding with `settings`, reading nodes through `lookup`.
    pub fn new(settings: WebhookSettings, lookup: L, metrics: WebhookMetrics) -> Arc<Self> {
        Arc::new(Self {
            settings,
            lookup,
            metrics,
        })
    }

    /// Answer one parsed review.
    pub async fn review(&self, req: &review::Request) -> Value {
        let mut warnings = Vec::new();
        let mut labels = None;
        if self.settings.enabled
            && review::concerns_pods(req)
            && let Some(node) = autonomy::node_name(&req.object)
        {
            let err =
                match tokio::time::timeout(NODE_LOOKUP_TIMEOUT, self.lookup.labels(node)).await {
                    Ok(Ok(l)) => {
                        labels = l;
                        None
                    }
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("no answer within {NODE_LOOKUP_TIMEOUT:?}")),
                };
            if let Some(e) = err {
                self.metrics.lookup_errors.inc();
                tracing::warn!(node, error = %e, "edge autonomy: reading the pod's node failed");
                warnings.push(format!(
                    "kedge edge autonomy: could not read node {node} ({e}); decided from the pod's selectors alone"
                ));
            }
        }
        let decision = review::decide(
            req,
            self.settings.enabled,
            &self.settings.edge_label,
            labels.as_ref(),
        );
        let result = match &decision {
            Decision::NotEdge => "not_edge",
            Decision::OptedOut => "opted_out",
            Decision::Tolerated(_) => "tolerated",
            Decision::Mutate { reason, .. } => {
                tracing::info!(namespace = %req.namespace, pod = %req.name, %reason,
                    "edge autonomy: not-ready/unreachable tolerated without a time limit");
                "mutated"
            }
        };
        self.metrics.count(result);
        review::response(&req.uid, &req.object, &decision, &warnings)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != PATH {
            return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
        }
        if req.method() != hyper::Method::POST {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "POST an AdmissionReview\n".into(),
            );
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.metrics.count("bad_request");
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("reading the body: {e}\n"),
                );
            }
        };
        match review::parse(&body) {
            Ok(r) => {
                let out = self.review(&r).await;
                reply(StatusCode::OK, "application/json", out.to_string())
            }
            Err(e) => {
                self.metrics.count("bad_request");
                tracing::info!(error = %e, "webhook: bad AdmissionReview");
                reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"))
            }
        }
    }
}

fn reply(code: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    r
}

/// Serve HTTPS on `listener` until `shutdown`.
pub async fn serve<L: NodeLookup>(
    webhook: Arc<Webhook<L>>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        tasks.spawn(connection(
            webhook.clone(),
            acceptor.clone(),
            tcp,
            peer,
            shutdown.clone(),
        ));
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
}

async fn connection<L: NodeLookup>(
    webhook: Arc<Webhook<L>>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let tls = match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "webhook TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let svc = service_fn(move |req| {
        let w = webhook.clone();
        async move { Ok::<_, Infallible>(w.handle(req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
        },
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

/// Bind, load the certificate and spawn [`serve`] (for `cloudcore run`). A certificate
/// that does not load yet is logged, not fatal: the files are retried on each handshake
/// (a cert-manager Secret may arrive after the pod starts).
pub async fn start(
    cfg: &crate::config::AutonomySection,
    client: kube::Client,
    registry: &std::sync::Mutex<Registry>,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    use anyhow::Context;
    let Some(addr) = cfg.webhook_addr() else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (autonomy webhook)"))?;
    let local = listener.local_addr()?;
    let (tls, first) = tls::server_config(&cfg.webhook_cert, &cfg.webhook_key)
        .context("building the webhook's TLS configuration")?;
    if let Err(e) = first {
        tracing::warn!(error = %e, "webhook certificate not loadable yet; retrying on each connection");
    }
    let metrics = WebhookMetrics::default();
    if let Ok(mut reg) = registry.lock() {
        metrics.register(&mut reg);
    }
    let settings = WebhookSettings {
        enabled: cfg.enabled,
        edge_label: cfg.edge_label.clone(),
    };
    let webhook = Webhook::new(settings, client, metrics);
    tokio::spawn(serve(webhook, listener, tls, shutdown));
    tracing::info!(addr = %local, path = PATH, enabled = cfg.enabled, "autonomy webhook listening");
    Ok(Some(local))
}
