//! edgesim: many simulated edges in one process, speaking the real link protocol to a
//! real cloudcore — for benchmarks (`kedge-bench edges`), storm tests
//! (`tests/tests/edgesim.rs`) and the `edgesim` binary.
//!
//! Each edge ([`edge`]) joins through the real bootstrap (`edgecore::join::join`: CA
//! pinned by the token, key + CSR, `POST /join`, certificate files under
//! `<dir>/<node>`; a second run on the same directory reuses still-valid certificates),
//! then runs edgecore's own pure link state machine with its objects in memory instead
//! of sled. Edges bind their sockets to 127.0.0.2, .3, … (`sources` of them) so that
//! thousands of connections do not share one source address's ephemeral ports.
//!
//! Start reading at [`Fleet::start`]; [`Fleet::kick`] cuts every session at once (a
//! reconnect storm seen from the cloud: all edges dial, handshake and send inventories).

pub mod edge;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use edgecore::config::ServerUrl;
use edgecore::hub::link::Link;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use edge::SimEdge;

/// What a fleet is started with.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// `wss://IP:PORT` of cloudcore's hub.
    pub server: String,
    /// A (multi-use) join token.
    pub token: String,
    /// Number of edges.
    pub edges: usize,
    /// Node names are `<prefix>-<index>`.
    pub prefix: String,
    /// Time over which edges are started (evenly spread).
    pub ramp: Duration,
    /// Lease renewal interval (±10 % jitter); the Node status goes on each new session and
    /// every 30th.
    pub report_interval: Duration,
    /// How many 127.0.0.x source addresses the edges spread over (from 127.0.0.2).
    pub sources: u8,
    /// Certificates and join files, one directory per edge.
    pub dir: PathBuf,
    /// Joins run in parallel.
    pub join_parallel: usize,
}

impl SimConfig {
    /// Defaults for `edges` edges against `server` with `token`, files under `dir`.
    pub fn new(server: &str, token: &str, edges: usize, dir: PathBuf) -> Self {
        SimConfig {
            server: server.to_owned(),
            token: token.to_owned(),
            edges,
            prefix: "sim".to_owned(),
            ramp: Duration::ZERO,
            report_interval: Duration::from_secs(10),
            sources: 32,
            dir,
            join_parallel: 8,
        }
    }

    /// The node name of edge `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }
}

/// Counters over the whole fleet.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sessions that got a HELLO_ACK.
    pub sessions: AtomicU64,
    /// Lease renewals the cloud answered with success (the API write finished; one the hub
    /// replaced by a newer renewal before it ran is acked but not answered).
    pub lease_renewals: AtomicU64,
    /// Dial attempts that failed (TCP, TLS, upgrade, timeout).
    pub dial_failures: AtomicU64,
    /// Upstream requests answered with a non-2xx code (except `lease_not_found`).
    pub upstream_errors: AtomicU64,
    /// Lease renewals answered 404: sent right after HELLO_ACK, before the cloud's
    /// registration task created the Lease (cloudcore does not hold upstream requests
    /// until the node is registered; a real edgecore drops such a write as permanent).
    pub lease_not_found: AtomicU64,
    /// ERROR frames from the cloud.
    pub cloud_errors: AtomicU64,
    /// OBJECT/TOMBSTONE/SYNCED frames applied.
    pub objects_applied: AtomicU64,
    /// The latest upstream error (`<key>: <code> <reason> <message>`).
    pub last_upstream_error: std::sync::Mutex<Option<String>>,
}

/// A point-in-time summary (the `--output json|table` of the binary).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Edges in the fleet.
    pub edges: usize,
    /// Edges whose link is `Live` (in sync).
    pub live: usize,
    /// Sessions established so far.
    pub sessions: u64,
    /// Lease renewals acked so far.
    pub lease_renewals: u64,
    /// Failed dials so far.
    pub dial_failures: u64,
    /// Upstream requests refused by the API (except `lease_not_found`).
    pub upstream_errors: u64,
    /// Lease renewals that raced the Lease's creation (404).
    pub lease_not_found: u64,
    /// ERROR frames received.
    pub cloud_errors: u64,
    /// Objects held, summed over edges.
    pub objects_held: usize,
    /// The latest upstream error, if any.
    pub last_upstream_error: Option<String>,
}

/// Running simulated edges.
#[derive(Debug)]
pub struct Fleet {
    /// The edges, in index order.
    pub edges: Vec<Arc<SimEdge>>,
    /// Fleet-wide counters.
    pub stats: Arc<Stats>,
    /// Joins that failed and were retried (see [`JOIN_ATTEMPTS`]).
    pub join_retries: u64,
    kicks: watch::Sender<u64>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Fleet {
    /// Joins every edge (`join_parallel` at a time), then starts them over `ramp`.
    pub async fn start(config: &SimConfig) -> Result<Fleet> {
        Fleet::connect(config, Joined::join(config).await?).await
    }

    /// Starts already joined edges over `config.ramp`.
    pub async fn connect(config: &SimConfig, joined: Joined) -> Result<Fleet> {
        let server = ServerUrl::parse(&config.server).map_err(anyhow::Error::msg)?;
        let Joined { edges, retries } = joined;
        let stats = Arc::new(Stats::default());
        let (kicks, _) = watch::channel(0u64);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let step = config.ramp / u32::try_from(config.edges.max(1)).unwrap_or(u32::MAX);
        for e in &edges {
            tasks.spawn(edge::run(
                e.clone(),
                server.clone(),
                config.report_interval,
                stats.clone(),
                shutdown.child_token(),
                kicks.subscribe(),
            ));
            if !step.is_zero() {
                tokio::time::sleep(step).await;
            }
        }
        tasks.close();
        Ok(Fleet {
            edges,
            stats,
            join_retries: retries,
            kicks,
            shutdown,
            tasks,
        })
    }

    /// Edges whose link is `Live`.
    pub fn live(&self) -> usize {
        self.edges
            .iter()
            .filter(|e| e.link().0 == Some(Link::Live))
            .count()
    }

    /// Edges that are `Live` after at least `sessions` sessions each.
    pub fn live_after(&self, sessions: u64) -> usize {
        self.edges
            .iter()
            .filter(|e| {
                let (link, s, synced) = e.link();
                link == Some(Link::Live) && s >= sessions && synced >= sessions
            })
            .count()
    }

    /// Cuts every session at once; the edges reconnect through their back-off.
    pub fn kick(&self) {
        self.kicks.send_modify(|k| *k += 1);
    }

    /// The counters now.
    pub fn summary(&self) -> Summary {
        let s = &self.stats;
        Summary {
            edges: self.edges.len(),
            live: self.live(),
            sessions: s.sessions.load(Ordering::Relaxed),
            lease_renewals: s.lease_renewals.load(Ordering::Relaxed),
            dial_failures: s.dial_failures.load(Ordering::Relaxed),
            upstream_errors: s.upstream_errors.load(Ordering::Relaxed),
            lease_not_found: s.lease_not_found.load(Ordering::Relaxed),
            cloud_errors: s.cloud_errors.load(Ordering::Relaxed),
            objects_held: self.edges.iter().map(|e| e.held_rvs().len()).sum(),
            last_upstream_error: s
                .last_upstream_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// Closes every session and waits (bounded) for the edge tasks to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
    }
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (one socket per edge, plus
/// cloudcore's side when it is our child); returns the new soft limit.
pub fn raise_nofile() -> nix::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// Edges that joined (certificates issued) but are not connected yet.
#[derive(Debug)]
pub struct Joined {
    /// The edges, in index order.
    pub edges: Vec<Arc<SimEdge>>,
    /// Joins that failed and were retried.
    pub retries: u64,
}

impl Joined {
    /// Joins every edge of `config`, `join_parallel` at a time.
    pub async fn join(config: &SimConfig) -> Result<Joined> {
        let retries = AtomicU64::new(0);
        let edges = join_all(config, &retries).await?;
        Ok(Joined {
            edges,
            retries: retries.into_inner(),
        })
    }
}

/// The source address of edge `i`: 127.0.0.2 … 127.0.0.(1 + sources).
pub fn source_addr(i: usize, sources: u8) -> IpAddr {
    let n = usize::from(sources.max(1));
    let last = u8::try_from(2 + i % n).unwrap_or(u8::MAX);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// How often one edge's join is tried. Concurrent joins can fail with HTTP 500 when
/// cloudcore's record of issued certificates (one Secret) hits an update conflict; a
/// real `edgecore join` would fail and be rerun, so the simulator retries.
pub const JOIN_ATTEMPTS: u32 = 8;

async fn join_all(config: &SimConfig, retries: &AtomicU64) -> Result<Vec<Arc<SimEdge>>> {
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("creating {}", config.dir.display()))?;
    let results: Vec<Result<Arc<SimEdge>>> = futures::stream::iter(0..config.edges)
        .map(|i| join_retrying(config, i, retries))
        .buffered(config.join_parallel.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn join_retrying(
    config: &SimConfig,
    index: usize,
    retries: &AtomicU64,
) -> Result<Arc<SimEdge>> {
    let mut attempt = 1;
    loop {
        match join_one(config, index).await {
            Ok(e) => return Ok(e),
            Err(e) if attempt >= JOIN_ATTEMPTS => return Err(e),
            Err(_) => {
                retries.fetch_add(1, Ordering::Relaxed);
                let jitter = 50 * (index % 7) as u64;
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt) + jitter)).await;
                attempt += 1;
            }
        }
    }
}

async fn join_one(config: &SimConfig, index: usize) -> Result<Arc<SimEdge>> {
    let name = config.node_name(index);
    let req = edgecore::join::JoinRequest {
        server: config.server.clone(),
        token: config.token.clone(),
        node_name: Some(name.clone()),
        labels: Default::default(),
        root: config.dir.join(&name),
        cri_endpoint: None,
        mqtt_listen: None,
        metrics_listen: None,
        force: false,
    };
    let mut progress = std::io::sink();
    let joined = edgecore::join::join(&req, &mut progress)
        .await
        .with_context(|| format!("joining {name}"))?;
    let cfg = edgecore::config::Config::load(&joined.config_path)
        .with_context(|| format!("reading {}", joined.config_path.display()))?;
    let tls = edgecore::pki::link_client_config_from(&cfg.pki)
        .with_context(|| format!("loading the certificate of {name}"))?;
    Ok(Arc::new(SimEdge {
        name,
        source: source_addr(index, config.sources),
        index,
        tls: Arc::new(tls),
        view: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_over_loopback_addresses() {
        assert_eq!(source_addr(0, 4).to_string(), "127.0.0.2");
        assert_eq!(source_addr(3, 4).to_string(), "127.0.0.5");
        assert_eq!(source_addr(4, 4).to_string(), "127.0.0.2");
        assert_eq!(source_addr(7, 0).to_string(), "127.0.0.2");
    }

    #[test]
    fn node_names_sort_by_index() {
        let c = SimConfig::new("wss://127.0.0.1:1", "t", 1, PathBuf::from("/tmp"));
        assert_eq!(c.node_name(42), "sim-00042");
    }
}
