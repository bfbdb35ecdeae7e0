//! Everything cloudcore runs against a Kubernetes API — the same for `cloudcore run` (a real
//! cluster) and `cloudcore standalone` (the embedded API server): the watch caches for
//! edges, bootstrap (node CA, tokens, `/join`), CloudHub, and optionally the node-lifecycle
//! emulation (standalone only: a real cluster has its own controller).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::edge::EdgeCache;
use crate::hub::{Hub, HubConfig};
use crate::join::{Bootstrap, JoinConfig};

/// A running control plane.
#[derive(Debug)]
pub struct Control {
    pub hub: Hub,
    /// The address the hub listens on (the OS-chosen port when the config said 0).
    pub hub_addr: SocketAddr,
    pub cache: Arc<EdgeCache>,
    pub bootstrap: Arc<Bootstrap>,
}

impl Control {
    /// A URL edges on this machine can use (`wss://127.0.0.1:<port>` for a wildcard listen).
    pub fn local_hub_url(&self) -> String {
        let ip = if self.hub_addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            self.hub_addr.ip().to_string()
        };
        if ip.contains(':') {
            format!("wss://[{ip}]:{}", self.hub_addr.port())
        } else {
            format!("wss://{ip}:{}", self.hub_addr.port())
        }
    }

    /// True when the caches synced (the hub serves edges).
    pub fn ready(&self) -> bool {
        self.hub.ready()
    }
}

/// Bind the hub's port, start caches, bootstrap, hub (and the lifecycle emulation, with its
/// own client: in standalone it runs as the node controller would, under its own identity).
pub async fn start(
    client: kube::Client,
    cfg: &Config,
    registry: &Arc<Mutex<prometheus_client::registry::Registry>>,
    lifecycle_client: Option<kube::Client>,
    shutdown: CancellationToken,
) -> anyhow::Result<Control> {
    let listener = tokio::net::TcpListener::bind(cfg.hub.listen)
        .await
        .with_context(|| format!("cannot listen on {} (hub)", cfg.hub.listen))?;
    let hub_addr = listener.local_addr()?;
    let mut sans = cfg.hub.advertise.clone();
    if !hub_addr.ip().is_unspecified() {
        sans.push(hub_addr.ip().to_string());
    }
    let join_cfg = JoinConfig {
        node_cert_validity: Duration::from_secs(cfg.hub.node_cert_validity_seconds),
        shutdown: shutdown.clone(),
        ..JoinConfig::default()
    };
    let bootstrap = Bootstrap::with_config(client.clone(), &sans, join_cfg)
        .await
        .context("loading the node CA")?;
    let cache = EdgeCache::start(client.clone(), shutdown.clone()).await;
    let hub_cfg = HubConfig {
        listen: hub_addr,
        max_frame_bytes: cfg.hub.max_frame_bytes,
        ping: Duration::from_secs(cfg.hub.ping_seconds),
        idle: Duration::from_secs(cfg.hub.idle_seconds),
        pod_cidrs: cfg.hub.pod_cidrs(),
        node_check: crate::hub::node_check_for(Duration::from_secs(cfg.lifecycle.grace_seconds)),
        queued_request_budget: cfg.hub.queued_request_budget_mib * 1024 * 1024,
    };
    tracing::info!(
        cluster_cidr = %cfg.hub.cluster_cidr,
        node_cidr_mask_size = cfg.hub.node_cidr_mask_size,
        node_blocks = hub_cfg.pod_cidrs.blocks(),
        "pod CIDR range"
    );
    let hub = {
        let mut reg = registry
            .lock()
            .map_err(|_| anyhow::anyhow!("metrics registry poisoned"))?;
        Hub::new(
            hub_cfg,
            client.clone(),
            cache.clone(),
            bootstrap.clone(),
            &mut reg,
        )
    };
    tokio::spawn(hub.clone().run(listener, shutdown.clone()));
    if let Some(lifecycle_client) = lifecycle_client {
        let lc = crate::lifecycle::LifecycleConfig {
            grace: Duration::from_secs(cfg.lifecycle.grace_seconds),
            eviction: cfg.lifecycle.eviction,
            ..Default::default()
        };
        tokio::spawn(crate::lifecycle::run_node_lifecycle(
            lifecycle_client,
            lc,
            shutdown.clone(),
        ));
    }
    tracing::info!(hub = %hub_addr, "CloudHub listening");
    Ok(Control {
        hub,
        hub_addr,
        cache,
        bootstrap,
    })
}

/// A kube client from a kubeconfig file, or the in-cluster / default configuration.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let cfg = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no kubeconfig given and none found (KUBECONFIG, ~/.kube/config, in-cluster)",
        )?,
    };
    kube::Client::try_from(cfg).context("building the Kubernetes client")
}
