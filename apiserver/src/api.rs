//! The shared state every request handler reads: registry, store, credentials, settings,
//! metrics. One [`Api`] per server, behind an `Arc`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::registry::Registry;
use crate::store::Store;

/// Settings of the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where the store and the PKI live.
    pub data_dir: PathBuf,
    /// Listen address (default 127.0.0.1:6443).
    pub listen: SocketAddr,
    /// Extra DNS names / IPs for the serving certificate.
    pub extra_sans: Vec<String>,
    /// Largest accepted request body (Kubernetes: 3 MiB).
    pub max_body_bytes: usize,
    /// Events a watch can resume from (older resourceVersions get 410 Gone).
    pub watch_history: usize,
    /// How long history stays for consistent lists (continue tokens,
    /// `resourceVersionMatch=Exact`) even beyond `watch_history` events: history is
    /// compacted only when it is both longer than `watch_history` and older than this —
    /// whichever keeps more. Default 5 minutes (Kubernetes' etcd compaction interval).
    pub history_window: Duration,
    /// Interval of watch bookmarks.
    pub bookmark_interval: Duration,
    /// Append one JSON line per request here when set.
    pub audit_log: Option<PathBuf>,
    /// `iss` of ServiceAccount tokens, and the audience the API accepts.
    pub service_account_issuer: String,
    /// Shortest lifetime a TokenRequest may ask for (Kubernetes: 10 minutes). Lower it only
    /// for tests that watch tokens expire.
    pub min_token_ttl: Duration,
    /// Admission plugins' settings (toleration defaults, edge autonomy).
    pub admission: crate::admission::AdmissionConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/kedge/apiserver"),
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            extra_sans: Vec::new(),
            max_body_bytes: 3 * 1024 * 1024,
            watch_history: 100_000,
            history_window: Duration::from_secs(300),
            bookmark_interval: Duration::from_secs(30),
            audit_log: None,
            service_account_issuer: crate::serviceaccount::DEFAULT_ISSUER.to_string(),
            min_token_ttl: Duration::from_secs(600),
            admission: crate::admission::AdmissionConfig::default(),
        }
    }
}

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: u16,
}

/// Labels of the rejected-input counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The API server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub rejected: Family<ReasonLabels, Counter>,
    pub watchers: Gauge,
}

impl Metrics {
    /// Register into a Prometheus registry under `apiserver_`.
    pub fn register(&self, reg: &mut prometheus_client::registry::Registry) {
        reg.register(
            "apiserver_requests",
            "API requests by verb, resource and HTTP code",
            self.requests.clone(),
        );
        reg.register(
            "apiserver_rejected_requests",
            "Requests refused for bad input, by reason",
            self.rejected.clone(),
        );
        reg.register(
            "apiserver_watchers",
            "Open watch streams",
            self.watchers.clone(),
        );
    }
}

/// Everything a handler needs.
pub struct Api {
    pub cfg: ApiConfig,
    pub registry: Registry,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub prom: Mutex<prometheus_client::registry::Registry>,
    pub tokens: crate::auth::TokenAuthenticator,
    /// OpenAPI documents by group-version path, with their hash; cleared when CRDs change.
    pub openapi_cache: Mutex<HashMap<String, (String, Bytes)>>,
    ready: AtomicBool,
    pub audit: Option<crate::audit::AuditLog>,
    /// ServiceAccount token signing and the published CA.
    pub service_accounts: Arc<crate::serviceaccount::ServiceAccounts>,
    /// Fires when the server stops (ends watches).
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl Api {
    /// Assemble the state.
    pub fn new(
        cfg: ApiConfig,
        store: Arc<Store>,
        tokens: crate::auth::TokenAuthenticator,
        service_accounts: Arc<crate::serviceaccount::ServiceAccounts>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<Self> {
        let metrics = Metrics::default();
        let mut prom = prometheus_client::registry::Registry::default();
        metrics.register(&mut prom);
        let audit = match &cfg.audit_log {
            Some(p) => Some(crate::audit::AuditLog::open(p)?),
            None => None,
        };
        Ok(Self {
            cfg,
            registry: Registry::with_builtins(),
            store,
            metrics,
            prom: Mutex::new(prom),
            tokens,
            openapi_cache: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
            audit,
            service_accounts,
            shutdown,
        })
    }

    /// Mark the server ready (bootstrap done).
    pub fn set_ready(&self, v: bool) {
        self.ready.store(v, Ordering::SeqCst);
    }

    /// True once bootstrap finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Forget cached OpenAPI documents (the set of resources changed).
    pub fn invalidate_openapi(&self) {
        if let Ok(mut c) = self.openapi_cache.lock() {
            c.clear();
        }
    }

    /// Count a refused request by reason.
    pub fn reject(&self, reason: &str) {
        self.metrics
            .rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }
}
