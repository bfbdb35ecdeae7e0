//! CloudHub: the cloud end of the cloud-edge link.
//!
//! One TLS port serves the bootstrap endpoints (`GET /ca.crt`, `POST /join`,
//! handled by `join::Bootstrap`, client certificate optional) and the edge
//! WebSocket (`GET /v1/connect`, client certificate required, node identity
//! taken from it). Each connected node gets one session; a node that
//! reconnects replaces its old session.
//!
//! Where to start reading:
//! - [`Hub`]: the handle (`new`, `run`, `ready`, `connected_nodes`).
//! - `accept`: TLS handshake, HTTP routing, authentication, WebSocket upgrade.
//! - `session`: the per-node event loop (tasks, channels, timers) and
//!   `phase`: its lifecycle enum and other pure session logic.
//! - `queue`: the coalescing cloud -> edge queue and send window (pure).
//! - `authz`: node authorisation of edge requests (pure).
//! - `upstream`: running edge requests against the API.
//! - `identity`, `metrics`: certificate identity; Prometheus metrics.
//!
//! Tasks: one accept loop; per connection one task (TLS + HTTP); per
//! session one loop task plus one writer task (bounded channel) and a
//! short-lived Node registration task. The only state shared between
//! sessions is the registry of sessions (a mutex held for map updates only),
//! the metrics, and the read-only edge cache.

mod accept;
pub mod authz;
pub mod identity;
pub mod metrics;
pub mod phase;
pub mod queue;
mod session;
pub use session::node_check_for;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::edge::EdgeCache;
use crate::join::Bootstrap;
use metrics::HubMetrics;

/// Path of the edge WebSocket.
pub const CONNECT_PATH: &str = "/v1/connect";

/// API calls the sessions make at once (edge requests, heartbeats, registrations). Each
/// concurrent call is one pooled HTTP/1.1 connection to the API server, with its TLS state
/// and buffers on both sides: without a bound their number follows the connected nodes
/// (about three calls per node at a Lease renewal peak).
const MAX_API_CALLS: usize = 64;

/// Heartbeat calls at once, on permits of their own ([`ApiPermits`]).
const MAX_HEARTBEAT_CALLS: usize = 8;

/// Permits for the sessions' API calls: [`MAX_API_CALLS`] shared by edge requests and
/// registrations, and [`MAX_HEARTBEAT_CALLS`] for heartbeats alone. A heartbeat that calls
/// the API reads the Node to heal its Ready condition (or renews the Lease of an edge that
/// does not renew it): while a fleet's renewals keep every shared permit busy on a lagging
/// API server, heartbeats queued behind them gave up after their interval — at 5,000 edges,
/// Nodes marked Unknown during the joins stayed Unknown though their Leases were fresh.
struct ApiPermits {
    calls: Arc<tokio::sync::Semaphore>,
    heartbeats: Arc<tokio::sync::Semaphore>,
}

impl ApiPermits {
    fn new(calls: usize, heartbeats: usize) -> Self {
        ApiPermits {
            calls: Arc::new(tokio::sync::Semaphore::new(calls)),
            heartbeats: Arc::new(tokio::sync::Semaphore::new(heartbeats)),
        }
    }

    /// A permit for an edge request or a registration; `None` only if closed (never).
    async fn call(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.calls.clone().acquire_owned().await.ok()
    }

    /// A permit for a heartbeat's calls; `None` only if closed (never).
    async fn heartbeat(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.heartbeats.clone().acquire_owned().await.ok()
    }
}

/// How long shutdown waits for sessions and connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// CloudHub settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Listen address (the caller binds it and passes the listener to
    /// [`Hub::run`]; kept here for logs and for callers that bind from it).
    pub listen: SocketAddr,
    /// Largest frame accepted (and WebSocket message / frame limit).
    pub max_frame_bytes: usize,
    /// Interval between pings (and what edges are told to use).
    pub ping: Duration,
    /// Silence after which a session is dropped.
    pub idle: Duration,
    /// Where connecting nodes without a pod CIDR get one.
    pub pod_cidrs: crate::lifecycle::CidrConfig,
    /// How long a heartbeat trusts its last read of the Node and renews only the Lease
    /// ([`session::node_check_for`] of the lifecycle grace; zero: always read).
    pub node_check: Duration,
    /// Bytes of edge requests all sessions together may queue for their API call; a
    /// request that would exceed it (or a session's share, [`session_share`]) is not
    /// delivered and the edge sends it again later. Keeps the hub's memory bounded when the
    /// API lags behind thousands of edges.
    pub queued_request_budget: usize,
}

/// What one session may queue of `budget` while it has something queued already: a
/// sixteenth (a session with nothing queued may take any frame the budget has room for).
pub fn session_share(budget: usize) -> usize {
    budget / 16
}

/// Default of [`HubConfig::queued_request_budget`].
pub const DEFAULT_QUEUED_REQUEST_BUDGET: usize = 64 * 1024 * 1024;

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 10000)),
            max_frame_bytes: proto::DEFAULT_MAX_FRAME,
            ping: Duration::from_secs(15),
            idle: Duration::from_secs(45),
            pod_cidrs: crate::lifecycle::CidrConfig::default(),
            node_check: session::node_check_for(Duration::from_secs(40)),
            queued_request_budget: DEFAULT_QUEUED_REQUEST_BUDGET,
        }
    }
}

/// The CloudHub handle; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("cfg", &self.shared.cfg)
            .field("connected", &self.connected_nodes())
            .finish()
    }
}

/// What every connection and session of the hub shares.
struct Shared {
    cfg: HubConfig,
    client: kube::Client,
    cache: Arc<EdgeCache>,
    bootstrap: Arc<Bootstrap>,
    metrics: HubMetrics,
    /// Pod CIDRs for nodes connecting for the first time (batched: a reconnect storm of
    /// new nodes must not cost one Node list each).
    pod_cidrs: crate::lifecycle::cidr::Allocator,
    /// Permits for the sessions' API calls.
    api_permits: ApiPermits,
    /// Bytes of queued edge requests still free ([`HubConfig::queued_request_budget`]).
    queued_budget: Arc<tokio::sync::Semaphore>,
    /// The budget's size in bytes, as the semaphore was created with.
    queued_budget_total: usize,
    sessions: Mutex<HashMap<String, SessionEntry>>,
    next_seq: AtomicU64,
}

/// A registered session.
struct SessionEntry {
    seq: u64,
    replaced: CancellationToken,
}

impl Hub {
    /// Creates the hub and registers its metrics in `registry`.
    pub fn new(
        cfg: HubConfig,
        client: kube::Client,
        cache: Arc<EdgeCache>,
        bootstrap: Arc<Bootstrap>,
        registry: &mut Registry,
    ) -> Hub {
        let metrics = HubMetrics::new(registry);
        let pod_cidrs =
            crate::lifecycle::cidr::Allocator::new(client.clone(), cfg.pod_cidrs.clone());
        let queued_budget_total = cfg
            .queued_request_budget
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        let queued_budget = Arc::new(tokio::sync::Semaphore::new(queued_budget_total));
        Hub {
            shared: Arc::new(Shared {
                cfg,
                pod_cidrs,
                api_permits: ApiPermits::new(MAX_API_CALLS, MAX_HEARTBEAT_CALLS),
                queued_budget,
                queued_budget_total,
                client,
                cache,
                bootstrap,
                metrics,
                sessions: Mutex::new(HashMap::new()),
                next_seq: AtomicU64::new(1),
            }),
        }
    }

    /// Serves `listener` until `shutdown`, then closes every session (the
    /// edges get an ERROR saying why) and waits up to a few seconds for
    /// connections to finish.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        let addr = listener.local_addr().ok();
        tracing::info!(addr = ?addr, "CloudHub listening");
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and similar: back off a little.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            tasks.spawn(accept::connection(
                self.shared.clone(),
                tcp,
                peer,
                tasks.clone(),
                shutdown.clone(),
            ));
        }
        drop(listener);
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = tasks.len(),
                "connections still open after the shutdown grace"
            );
        }
        tracing::info!("CloudHub stopped");
    }

    /// Whether the hub can serve edges correctly: its caches finished their
    /// first list (until then sessions wait in `Syncing`). For `/readyz`.
    pub fn ready(&self) -> bool {
        self.shared.cache.is_synced()
    }

    /// Names of the nodes with a session on this replica, sorted.
    pub fn connected_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.shared.lock_sessions().keys().cloned().collect();
        nodes.sort();
        nodes
    }

    /// Closes the session of `node`, if any (e.g. after revoking it).
    pub fn disconnect(&self, node: &str) -> bool {
        match self.shared.lock_sessions().get(node) {
            Some(entry) => {
                entry.replaced.cancel();
                true
            }
            None => false,
        }
    }
}

impl Shared {
    /// Waits for a permit to call the API ([`MAX_API_CALLS`] at once); `None` once the
    /// hub is shutting down (the semaphore is never closed, so never in practice).
    async fn api_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.api_permits.call().await
    }

    /// Waits for a permit for a heartbeat's API calls ([`ApiPermits`]).
    async fn heartbeat_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.api_permits.heartbeat().await
    }

    /// Sets the queued-request gauge from the budget's free bytes.
    fn note_queued_bytes(&self) {
        let used = self.queued_budget_total - self.queued_budget.available_permits();
        self.metrics
            .queued_request_bytes
            .set(i64::try_from(used).unwrap_or(i64::MAX));
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new session of `node`, closing the one it replaces.
    /// Returns the session's sequence number and its "replaced" token.
    fn register(&self, node: &str) -> (u64, CancellationToken) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let replaced = CancellationToken::new();
        let mut sessions = self.lock_sessions();
        let entry = SessionEntry {
            seq,
            replaced: replaced.clone(),
        };
        if let Some(old) = sessions.insert(node.to_owned(), entry) {
            tracing::info!(
                node,
                old = old.seq,
                new = seq,
                "node reconnected; replacing its session"
            );
            old.replaced.cancel();
        }
        self.metrics
            .connected
            .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
        (seq, replaced)
    }

    /// Removes session `seq` of `node` unless a newer one replaced it.
    fn unregister(&self, node: &str, seq: u64) {
        let mut sessions = self.lock_sessions();
        if sessions.get(node).is_some_and(|e| e.seq == seq) {
            sessions.remove(node);
        }
        self.metrics
            .connected
            .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
    }
}

/// The edge cache answers the authoriser's questions.
impl authz::Facts for EdgeCache {
    fn node_may_read(&self, node: &str, key: &proto::ResourceKey) -> bool {
        EdgeCache::node_may_read(self, node, key)
    }
    fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
        EdgeCache::pod_node(self, namespace, name)
    }
    fn device_node(&self, namespace: &str, name: &str) -> Option<String> {
        EdgeCache::device_node(self, namespace, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heartbeats_do_not_wait_behind_busy_request_permits() {
        let permits = ApiPermits::new(2, 1);
        // A fleet's renewals hold every shared permit.
        let _held = (permits.call().await, permits.call().await);
        let wait = Duration::from_millis(200);
        assert!(
            tokio::time::timeout(wait, permits.call()).await.is_err(),
            "the shared permits are all taken"
        );
        let heartbeat = tokio::time::timeout(wait, permits.heartbeat()).await;
        assert!(
            matches!(heartbeat, Ok(Some(_))),
            "a heartbeat waited behind the requests' permits"
        );
    }
}
