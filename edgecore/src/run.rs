//! `edgecore run`: opens the store (recovering a broken one), starts
//! MetaManager, the outbox, EdgeHub, the node reporter and the metrics
//! endpoint, and on shutdown drains them in order within the grace period.
//!
//! Tasks and who owns what:
//! - MetaManager writer: the objects/tombstones trees and the cache snapshots.
//! - EdgeHub loop: the socket, the link state, the send window.
//! - node reporter: queues Node status + Lease renewals into the outbox.
//! - status updater: refreshes the `/status` document once a second.
//! - metrics server: `/metrics`, `/healthz`, `/readyz`, `/status`.
//! - device bus ([`devices`]): the MQTT broker and twin topics, fed by MetaManager
//!   snapshots, draining device reports into the outbox.

pub mod devices;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use proto::Hello;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, ServerUrl};
use crate::hub::link::{Link, LinkConfig};
use crate::hub::{HubConfig, HubDeps, HubStatus};
use crate::node::{Condition, Reporter, STORE_RECOVERED};
use crate::outbox::Outbox;
use crate::status::StatusReport;
use crate::store::{Recovery, Store, StoreConfig};
use crate::telemetry::{LiveStatus, Metrics};

/// System key recording a store recovery until the resync refilled it.
pub const RECOVERY_KEY: &str = "store_recovery";

/// Why `edgecore run` could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The node's certificates are missing or invalid.
    #[error("cannot load the node certificates ({0}) — run `edgecore join` first")]
    Pki(String),
    /// The store could not be opened, even by moving it aside.
    #[error("cannot open the edge store: {0}")]
    Store(String),
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(String),
    /// A component failed to start.
    #[error("{0}")]
    Start(String),
}

/// Runs edgecore until `shutdown` is cancelled, then drains.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let stopping = shutdown.clone();
    let server = ServerUrl::parse(&cfg.server).map_err(RunError::Start)?;
    // A rotation interrupted by a crash is finished before the files are used.
    if let Err(e) = crate::hub::renew::recover_pair(&cfg.pki) {
        tracing::warn!(error = %e, "cannot finish an interrupted certificate write");
    }
    let tls = crate::pki::link_client_config_from(&cfg.pki)
        .map_err(|e| RunError::Pki(crate::hub::conn::chain(&e)))?;
    let listener = crate::telemetry::bind(cfg.metrics_listen)
        .await
        .map_err(|e| RunError::Bind(e.to_string()))?;

    let store_config = StoreConfig {
        cache_capacity: cfg.store.cache_capacity_mib.saturating_mul(1024 * 1024),
        flush_seconds: Some(metrics.store_flush_seconds.clone()),
        // `edgecore status` reads the store while the daemon is not serving yet; it holds
        // the lock for milliseconds, and that must not stop a (re)start.
        lock_wait: Duration::from_secs(15),
    };
    let opened = Store::open_or_recover(&cfg.data_dir, &store_config)
        .map_err(|e| RunError::Store(crate::hub::conn::chain(&e)))?;
    let store = opened.store;
    let recovery = remember_recovery(&store, opened.recovered.as_ref());

    let (meta, reader) = crate::meta::start(store.clone(), metrics.clone())
        .map_err(|e| RunError::Store(crate::hub::conn::chain(&e)))?;
    let outbox = Outbox::open(store.clone(), metrics.clone())
        .map_err(|e| RunError::Store(crate::hub::conn::chain(&e)))?;

    let info = crate::node::node_info(&cfg.node_name, &server, &cfg.labels);
    let runtime_info = info.clone();
    let hello = Hello {
        node_name: cfg.node_name.clone(),
        info: Some(info.clone()),
        ..Hello::default()
    };
    let (hub_tx, hub_rx) = watch::channel(HubStatus::default());
    let conditions: Vec<Condition> = recovery.iter().map(recovered_condition).collect();
    let (cond_tx, cond_rx) = watch::channel(conditions);

    let hub_config = HubConfig {
        server: server.clone(),
        tls: Arc::new(tls),
        pki: Some(cfg.pki.clone()),
        link: LinkConfig {
            ping_interval: Duration::from_secs(cfg.hub.ping_interval_secs),
            idle_timeout: Duration::from_secs(cfg.hub.idle_timeout_secs),
            backoff_max: Duration::from_secs(cfg.hub.backoff_max_secs),
            max_frame: cfg.hub.max_frame_bytes,
            window: proto::WindowConfig {
                capacity: cfg.hub.window,
                ..proto::WindowConfig::default()
            },
            ..LinkConfig::default()
        },
        hello,
        connect_timeout: Duration::from_secs(cfg.hub.connect_timeout_secs),
        grace: Duration::from_secs(cfg.shutdown_grace_secs),
    };
    let deps = HubDeps {
        meta,
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        status: hub_tx,
    };
    let span = tracing::info_span!("edgehub", node = %cfg.node_name, %server);
    let hub_task =
        tokio::spawn(crate::hub::run(hub_config, deps, shutdown.clone()).instrument(span));

    let reporter = Reporter {
        node: cfg.node_name.clone(),
        info,
        conditions: cond_rx,
        interval: Duration::from_secs(cfg.status.interval_secs),
        lease_duration_secs: cfg.status.lease_duration_secs,
        report: Duration::from_secs(cfg.status.report_secs),
    };
    tokio::spawn(crate::node::run_reporter(
        reporter,
        outbox.clone(),
        hub_rx.clone(),
        shutdown.clone(),
    ));

    let bus = match cfg.bus_config() {
        Some(bus_cfg) => Some(
            devices::spawn(
                bus_cfg,
                reader.clone(),
                outbox.clone(),
                &store,
                metrics.bus.clone(),
                shutdown.clone(),
            )
            .map_err(|e| RunError::Store(crate::hub::conn::chain(&e)))?,
        ),
        None => {
            tracing::info!("device bus off (mqtt_listen port 0 and no mqtt.external)");
            None
        }
    };
    // A bus that cannot start (port taken, broker unreachable config) stops edgecore.
    let bus_failed = bus.map(|task| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match task.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the device bus failed to start; stopping");
                    shutdown.cancel();
                    Some(e.to_string())
                }
                Err(e) => Some(format!("the device bus task failed: {e}")),
            }
        })
    });

    let live: LiveStatus = Arc::new(Mutex::new(StatusReport {
        node: cfg.node_name.clone(),
        server: server.to_string(),
        running: true,
        ..StatusReport::default()
    }));
    tokio::spawn(crate::telemetry::serve(
        listener,
        metrics.clone(),
        live.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(update_status(
        live,
        hub_rx.clone(),
        reader.clone(),
        outbox.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    let cond_tx = Arc::new(cond_tx);
    let tokens = crate::satoken::SaTokens::open(&store)
        .map_err(|e| RunError::Store(crate::hub::conn::chain(&e)))?;
    let shared = RuntimeShared {
        reader: reader.clone(),
        outbox: outbox.clone(),
        tokens,
        conditions: cond_tx.clone(),
        metrics: metrics.clone(),
    };
    spawn_runtime(&cfg, &runtime_info, shared, &shutdown);
    if cfg.memory.release_startup_code {
        tokio::spawn(release_startup_code(hub_rx.clone(), shutdown.clone()));
    }
    if recovery.is_some() {
        tokio::spawn(clear_recovery_when_synced(
            store.clone(),
            hub_rx,
            cond_tx,
            shutdown.clone(),
        ));
    } else {
        // Keep the sender alive so the reporter's receiver stays open.
        tokio::spawn(async move {
            shutdown.cancelled().await;
            drop(cond_tx);
        });
    }
    tracing::info!(node = %cfg.node_name, %server, data_dir = %cfg.data_dir.display(), "edgecore running");

    // The hub returns after the shutdown token fired and it drained: wait for the token,
    // then give the hub the grace period.
    let mut hub_task = hub_task;
    let hub_done = tokio::select! {
        () = stopping.cancelled() => false,
        _ = &mut hub_task => true,
    };
    let grace = Duration::from_secs(cfg.shutdown_grace_secs) + Duration::from_secs(1);
    if !hub_done && tokio::time::timeout(grace, hub_task).await.is_err() {
        tracing::warn!("the link did not close within the grace period");
    }
    let bus_error = match bus_failed {
        Some(task) => tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten(),
        None => None,
    };
    store
        .flush_blocking()
        .await
        .map_err(|e| RunError::Store(crate::hub::conn::chain(&e)))?;
    tracing::info!("store flushed; edgecore stopped");
    match bus_error {
        Some(e) => Err(RunError::Bind(e)),
        None => Ok(()),
    }
}

/// What the pod runtime shares with the rest of edgecore.
struct RuntimeShared {
    reader: crate::meta::MetaReader,
    outbox: Outbox,
    tokens: crate::satoken::SaTokens,
    conditions: Arc<watch::Sender<Vec<Condition>>>,
    metrics: Metrics,
}

/// Starts the pod runtime (unless `[runtime] enabled = false`). A bad endpoint is a config
/// error caught by validation; an unreachable runtime is the runtime node condition.
fn spawn_runtime(
    cfg: &Config,
    info: &proto::NodeInfo,
    shared: RuntimeShared,
    shutdown: &CancellationToken,
) {
    let RuntimeShared {
        reader,
        outbox,
        tokens,
        conditions,
        metrics,
    } = shared;
    if !cfg.runtime.enabled {
        tracing::info!("pod runtime off ([runtime] enabled = false)");
        return;
    }
    let cri = match crate::runtime::cri::Cri::new(&cfg.cri_endpoint) {
        Ok(cri) => cri,
        Err(e) => {
            tracing::error!(error = %e, "pod runtime not started");
            return;
        }
    };
    let host_ip = info
        .addresses
        .iter()
        .find(|a| a.r#type == "InternalIP")
        .map(|a| a.address.clone())
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let rcfg = crate::runtime::RuntimeConfig {
        node: cfg.node_name.clone(),
        host_ip,
        endpoint: cfg.cri_endpoint.clone(),
        pods_dir: crate::runtime::runtime_root(&cfg.data_dir).join("pods"),
        logs_dir: crate::runtime::runtime_root(&cfg.data_dir).join("logs/pods"),
        settings: cfg.runtime.clone(),
    };
    tokio::spawn(
        crate::satoken::run(
            cfg.node_name.clone(),
            reader.clone(),
            outbox.clone(),
            tokens.clone(),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("satokens")),
    );
    let deps = crate::runtime::exec::Deps {
        cri,
        reader,
        outbox,
        conditions,
        metrics,
        tokens,
    };
    let span = tracing::info_span!("runtime", node = %cfg.node_name);
    tokio::spawn(crate::runtime::exec::run(rcfg, deps, shutdown.clone()).instrument(span));
}

/// Persists a fresh recovery (so the condition survives restarts until the
/// resync refilled the store) and returns the one in force, if any.
fn remember_recovery(store: &Store, fresh: Option<&Recovery>) -> Option<(String, i64)> {
    let system = store.tree(crate::meta::SYSTEM).ok()?;
    if let Some(r) = fresh {
        let text = format!(
            "store moved aside to {} at {}: {}",
            r.moved_to.display(),
            r.at_unix,
            r.reason
        );
        let _ = system.put(RECOVERY_KEY, &text);
        let _ = store.flush();
        return Some((text, i64::try_from(r.at_unix).unwrap_or(0)));
    }
    let text = String::from_utf8(system.get(RECOVERY_KEY).ok()??).ok()?;
    let at = text
        .split(" at ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Some((text, at))
}

fn recovered_condition((message, at): &(String, i64)) -> Condition {
    Condition {
        kind: STORE_RECOVERED.to_owned(),
        status: "True".to_owned(),
        reason: "StoreMovedAside".to_owned(),
        message: message.clone(),
        since: Utc.timestamp_opt(*at, 0).single().unwrap_or_else(Utc::now),
    }
}

/// Once the link is first live (the resync done) or [`crate::memory::OFFLINE_DELAY`] went by
/// without it, and a moment later, pages out the code start-up ran ([`crate::memory`]).
async fn release_startup_code(mut hub: watch::Receiver<HubStatus>, shutdown: CancellationToken) {
    let due = async {
        // A closed status channel is not a live link: wait out the offline delay then.
        let _ = tokio::time::timeout(crate::memory::OFFLINE_DELAY, async {
            if hub.wait_for(|s| s.link == Link::Live).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await;
        // What the first moments of a session run besides the resync (the Node status, the
        // first Lease) comes back anyway; let it run first.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::select! {
        () = shutdown.cancelled() => return,
        () = due => {}
    }
    match tokio::task::spawn_blocking(crate::memory::release_startup_code).await {
        Ok(Ok(r)) => tracing::info!(
            mappings = r.mappings,
            mapped_kib = r.bytes / 1024,
            resident_file_kib_before = r.file_kib_before,
            resident_file_kib_after = r.file_kib_after,
            "start-up code paged out; what keeps running comes back from the binary"
        ),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "start-up code left in memory (the kernel refused MADV_PAGEOUT)")
        }
        Err(e) => tracing::warn!(error = %e, "paging out the start-up code failed"),
    }
}

/// After a recovery: once a resync completed (link Live), the store is
/// refilled — flip the condition to False and forget the recovery.
async fn clear_recovery_when_synced(
    store: Store,
    mut hub: watch::Receiver<HubStatus>,
    conditions: Arc<watch::Sender<Vec<Condition>>>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        () = shutdown.cancelled() => return,
        r = hub.wait_for(|s| s.link == Link::Live) => if r.is_err() { return },
    }
    conditions.send_modify(|c| {
        for cond in c.iter_mut().filter(|c| c.kind == STORE_RECOVERED) {
            cond.status = "False".to_owned();
            cond.reason = "StoreRefilled".to_owned();
            cond.message = format!("{} (refilled by the resync)", cond.message);
            cond.since = Utc::now();
        }
    });
    if let Ok(system) = store.tree(crate::meta::SYSTEM) {
        let _ = system.delete(RECOVERY_KEY);
    }
    let _ = store.flush_blocking().await;
    shutdown.cancelled().await;
}

async fn update_status(
    live: LiveStatus,
    hub: watch::Receiver<HubStatus>,
    reader: crate::meta::MetaReader,
    outbox: Outbox,
    store: Store,
    shutdown: CancellationToken,
) {
    let system = store.tree(crate::meta::SYSTEM).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let h = hub.borrow().clone();
        let get = |k: &str| {
            system
                .as_ref()
                .and_then(|t| t.get(k).ok().flatten())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let last_sync = get(crate::meta::LAST_SYNC_KEY);
        let recovered = get(RECOVERY_KEY);
        let objects = reader.snapshot().len();
        let depth = outbox.depth();
        if let Ok(mut s) = live.lock() {
            s.link = h.link.label().to_owned();
            s.since = Some(chrono::DateTime::<Utc>::from(h.since).to_rfc3339());
            s.session_id = h.session_id;
            s.sessions = h.sessions;
            s.last_sync = last_sync;
            s.store_recovered = recovered;
            s.objects = objects;
            s.outbox_depth = depth;
        }
    }
}
