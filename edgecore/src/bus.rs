//! The edge's device bus: an MQTT broker (embedded rumqttd, or an external one such as
//! Mosquitto), a client that serves KubeEdge-compatible twin topics on it, the device shadows,
//! and the built-in [`crate::driver`]s.
//!
//! Where to start reading:
//! - [`run`]: wires everything and owns the event loop (one task owns every shadow).
//! - [`twins`]: what happens to a message, a device set change or a driver reading — pure
//!   logic over [`devicetwin`], returning [`twins::Effect`]s that the loop carries out.
//! - [`link`]: the rumqttc client (subscribe, re-subscribe after reconnecting, back off).
//! - [`broker`]: the embedded rumqttd broker on its own thread.
//! - [`throttle`]: at most one `Device.status` write per device per 200 ms, latest wins.
//!
//! **Prefix.** KubeEdge's topics start with `$hw`, which rumqttd cannot route, so the
//! embedded broker uses `kedge/events/device/{ns}/{name}/twin/update` and friends; with an
//! external broker use `$hw` for unmodified KubeEdge mappers. See [`devicetwin::topic`].
//!
//! **Durability.** A report is durable once the outbox has committed the
//! [`Upstream::DeviceStatus`] this loop sends (and the shadow is saved in the
//! [`ShadowStore`] before that: [`Twins::status`] saves it as it builds the status that
//! leaves, so the shadow is written once per status, not once per report). The client
//! acknowledges a QoS 1 `twin/update` (PUBACK) when it arrives, before the shadow is saved
//! and before the outbox commits, so a crash in that window (normally well under a
//! millisecond, at most one 200 ms throttle interval) loses that report; a mapper
//! re-reporting on its next cycle heals it.
//!
//! **Offline.** Nothing here needs the cloud: reports update shadows and queue upstream; the
//! outbox keeps the latest per device until the link is back.

pub mod broker;
pub mod link;
pub mod metrics;
pub mod throttle;
pub mod twins;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devicetwin::shadow::DesiredPatch;
use devicetwin::{DeviceKey, topic};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::driver::{DriverEvent, Drivers};
use metrics::BusMetrics;
use throttle::Throttle;
use twins::{Effect, Twins};

/// Shortest interval between two `Device.status` writes of one device.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(200);
/// Most device Events held while the upstream channel is full; the oldest go first.
const EVENT_BACKLOG: usize = 256;

/// Bus settings (the rest of edgecore fills them from its config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// Listen address of the embedded broker (default 127.0.0.1:1883); ignored with `external`.
    pub listen: SocketAddr,
    /// An external broker instead of the embedded one: `mqtt://host:port` (or `tcp://`).
    pub external: Option<String>,
    /// Topic prefix: `kedge` with the embedded broker, `$hw` (KubeEdge's) with an external one.
    pub prefix: String,
    /// MQTT username (the embedded broker then requires it too).
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
    /// This node's name (membership topics, and which Devices are ours).
    pub node_name: String,
    /// Directory of the simulated GPIO pin bank (`pin-<n>` files), used off a Raspberry Pi.
    pub gpio_sim_dir: PathBuf,
}

impl BusConfig {
    /// Defaults for `node`: embedded broker on 127.0.0.1:1883, prefix `kedge`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            external: None,
            prefix: topic::EMBEDDED_PREFIX.to_owned(),
            username: None,
            password: None,
            node_name: node.into(),
            gpio_sim_dir: PathBuf::from("/var/lib/kedge/gpio-sim"),
        }
    }
}

/// The Devices bound to this node with their DeviceModels, as the edge cache holds them
/// (raw JSON, as the API returned it). Keyed by `ns/name`. The JSON is shared with the
/// feeder's cache (and a model with all its devices), not copied into every set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSet {
    /// `ns/name` -> (Device, its DeviceModel if cached).
    pub devices: BTreeMap<String, (Arc<serde_json::Value>, Option<Arc<serde_json::Value>>)>,
}

/// What the outbox must send to the cloud. Coalesce by [`Upstream::coalesce_key`]: statuses
/// replace each other, desired patches merge ([`Upstream::merge`] does both).
#[derive(Debug, Clone, PartialEq)]
pub enum Upstream {
    /// The whole `Device.status` (twins list, state, lastOnlineTime, versions).
    DeviceStatus {
        /// Device namespace.
        namespace: String,
        /// Device name.
        name: String,
        /// The whole status object.
        status: serde_json::Value,
    },
    /// A Kubernetes Event about the device (never coalesced: each has its own name).
    DeviceEvent {
        /// Device namespace.
        namespace: String,
        /// The core/v1 Event object (named in its `metadata.name`).
        event: serde_json::Value,
    },
    /// Desired values written at the edge, for the Device spec.
    DeviceDesired {
        /// Device namespace.
        namespace: String,
        /// Device name.
        name: String,
        /// The change (merge, never replace).
        patch: DesiredPatch,
    },
}

impl Upstream {
    /// `<ns>/device/<name>/status` or `<ns>/device/<name>/desired`.
    pub fn coalesce_key(&self) -> String {
        match self {
            Self::DeviceStatus {
                namespace, name, ..
            } => format!("{namespace}/device/{name}/status"),
            Self::DeviceDesired {
                namespace, name, ..
            } => format!("{namespace}/device/{name}/desired"),
            Self::DeviceEvent { namespace, event } => format!(
                "event/{namespace}/{}",
                event
                    .pointer("/metadata/name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
            ),
        }
    }

    /// Folds a later entry with the same key into this one: a status replaces, a desired
    /// patch merges. Entries with another key are ignored (returns `false`).
    pub fn merge(&mut self, later: Upstream) -> bool {
        if self.coalesce_key() != later.coalesce_key() {
            return false;
        }
        match (self, later) {
            (Self::DeviceDesired { patch, .. }, Self::DeviceDesired { patch: p, .. }) => {
                patch.merge(p);
            }
            (this, later) => *this = later,
        }
        true
    }
}

/// Where shadows persist across restarts (serde JSON of [`devicetwin::Shadow`]), keyed by
/// `ns/name`. edgecore implements it over its sled store; saves need not be flushed (the
/// outbox commit is the durability point, see the module docs).
pub trait ShadowStore: Send + Sync {
    /// The saved bytes of `key`, if any.
    fn load(&self, key: &str) -> Option<Vec<u8>>;
    /// Saves `bytes` under `key`.
    fn save(&self, key: &str, bytes: &[u8]);
    /// Forgets `key` (the device left the node). Default: keep it.
    fn remove(&self, _key: &str) {}
}

/// An in-memory [`ShadowStore`] (tests, and runs without a store).
#[derive(Debug, Default, Clone)]
pub struct MemoryShadowStore {
    map: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl MemoryShadowStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ShadowStore for MemoryShadowStore {
    fn load(&self, key: &str) -> Option<Vec<u8>> {
        self.map.lock().ok()?.get(key).cloned()
    }

    fn save(&self, key: &str, bytes: &[u8]) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(key.to_owned(), bytes.to_vec());
        }
    }

    fn remove(&self, key: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(key);
        }
    }
}

/// Why the bus could not start. Once running, nothing is fatal: brokers and devices that
/// go away are retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Invalid settings (prefix, node name, broker URL...).
    #[error("invalid bus config: {0}")]
    Config(String),
    /// Something else listens on the embedded broker's address.
    #[error(
        "the MQTT listen address {addr} is already in use (a system Mosquitto?); stop it, \
         choose another --mqtt-listen, or use it as the external broker"
    )]
    PortInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The embedded broker did not come up.
    #[error("starting the embedded MQTT broker on {addr}: {reason}")]
    Broker {
        /// Listen address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs the bus until `shutdown`: starts the broker (or connects to the external one), serves
/// the twin topics, drives the built-in drivers and sends reports to `upstream`. Counts into
/// `metrics` (edgecore registers them in its `/metrics`).
///
/// The embedded broker has no shutdown API: its thread (and its listener) stay until the
/// process exits.
pub async fn run(
    cfg: BusConfig,
    mut devices: watch::Receiver<DeviceSet>,
    upstream: mpsc::Sender<Upstream>,
    shadows: Arc<dyn ShadowStore>,
    metrics: BusMetrics,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    topic::edge_subscriptions(&cfg.prefix, &cfg.node_name)
        .map_err(|e| BusError::Config(e.to_string()))?;

    let target = match &cfg.external {
        Some(url) => link::parse_broker_url(url)?,
        None => {
            if cfg.listen.port() == 0 {
                return Err(BusError::Config(
                    "the embedded broker needs a fixed listen port (not 0)".to_owned(),
                ));
            }
            if cfg.prefix.starts_with('$') {
                return Err(BusError::Config(format!(
                    "prefix {:?}: the embedded broker cannot route topics starting with '$'; \
                     use \"kedge\" or an external broker",
                    cfg.prefix
                )));
            }
            broker::start(&cfg, metrics.clone()).await?;
            link::BrokerAddr::from_listen(cfg.listen)
        }
    };

    let child = shutdown.child_token();
    let (in_tx, mut in_rx) = mpsc::channel(link::INCOMING_CAPACITY);
    let (client, link_task) = link::spawn(&cfg, target, in_tx, metrics.clone(), child.clone());
    let (drv_tx, mut drv_rx) = mpsc::channel::<DriverEvent>(1024);
    let mut drivers = Drivers::new(
        cfg.gpio_sim_dir.clone(),
        drv_tx,
        metrics.clone(),
        child.clone(),
    );
    let mut twins = Twins::new(&cfg.prefix, &cfg.node_name, shadows, metrics.clone());
    let mut out = Outflow::new(upstream, metrics.clone());

    let initial = devices.borrow_and_update().clone();
    let mut effects = twins.sync_devices(&initial, now_ms());
    let started = drivers.sync(twins.driver_inputs());
    effects.extend(twins.desired_drives(&started));
    effects.extend(twins.driver_problems(&drivers.problems()));
    out.apply(effects, &client, &drivers, &mut twins);

    info!(prefix = %cfg.prefix, node = %cfg.node_name, "device bus running");
    let mut devices_open = true;
    loop {
        let deadline = out.next_deadline();
        let effects = tokio::select! {
            () = shutdown.cancelled() => break,
            msg = in_rx.recv() => match msg {
                Some(m) => twins.on_message(&m.topic, &m.payload, now_ms()),
                None => break,
            },
            changed = devices.changed(), if devices_open => {
                if changed.is_err() {
                    devices_open = false;
                    continue;
                }
                let set = devices.borrow_and_update().clone();
                let mut fx = twins.sync_devices(&set, now_ms());
                let started = drivers.sync(twins.driver_inputs());
                fx.extend(twins.desired_drives(&started));
                fx.extend(twins.driver_problems(&drivers.problems()));
                fx
            },
            ev = drv_rx.recv() => match ev {
                Some(ev) => twins.on_driver(ev, now_ms()),
                None => Vec::new(),
            },
            () = sleep_until(deadline) => Vec::new(),
        };
        out.apply(effects, &client, &drivers, &mut twins);
    }

    child.cancel();
    out.flush_now(&mut twins);
    drivers.stop().await;
    if tokio::time::timeout(Duration::from_secs(2), link_task)
        .await
        .is_err()
    {
        debug!("MQTT link did not stop within 2 s");
    }
    info!("device bus stopped");
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Topic suffix of delta messages (counted).
const DELTA_SUFFIX: &str = "/twin/update/delta";

/// Carries out effects: MQTT publishes, driver writes, and the rate-limited upstream queue.
struct Outflow {
    upstream: mpsc::Sender<Upstream>,
    /// Devices whose status changed; [`Twins::status`] builds it when it may leave.
    status: Throttle<DeviceKey, ()>,
    desired: BTreeMap<DeviceKey, DesiredPatch>,
    /// Events not yet handed over (the channel was full); at most [`EVENT_BACKLOG`].
    events: VecDeque<Upstream>,
    retry_at: Option<Instant>,
    metrics: BusMetrics,
}

impl Outflow {
    fn new(upstream: mpsc::Sender<Upstream>, metrics: BusMetrics) -> Self {
        Self {
            upstream,
            status: Throttle::new(STATUS_INTERVAL),
            desired: BTreeMap::new(),
            events: VecDeque::new(),
            retry_at: None,
            metrics,
        }
    }

    fn apply(
        &mut self,
        effects: Vec<Effect>,
        client: &link::Publisher,
        drivers: &Drivers,
        twins: &mut Twins,
    ) {
        let now = Instant::now();
        for e in effects {
            match e {
                Effect::Publish { topic, payload } => {
                    if topic.ends_with(DELTA_SUFFIX) {
                        self.metrics.deltas_sent.inc();
                    }
                    client.publish(topic, payload);
                }
                Effect::Drive {
                    device,
                    property,
                    value,
                } => drivers.write(&device, &property, &value),
                Effect::Status { device } => {
                    if self.status.offer(device, ()) {
                        self.metrics.status_coalesced.inc();
                    }
                }
                Effect::Event { device, event } => {
                    if self.events.len() >= EVENT_BACKLOG {
                        warn!(device = %device, "device Event backlog full; the oldest Event dropped");
                        self.events.pop_front();
                    }
                    self.events.push_back(Upstream::DeviceEvent {
                        namespace: device.namespace,
                        event,
                    });
                }
                Effect::Desired { device, patch } => match self.desired.get_mut(&device) {
                    Some(p) => p.merge(patch),
                    None => {
                        self.desired.insert(device, patch);
                    }
                },
            }
        }
        self.flush(now, twins);
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.status.next_deadline(), self.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn flush(&mut self, now: Instant, twins: &mut Twins) {
        self.retry_at = None;
        while let Some(event) = self.events.pop_front() {
            if let Err(e) = self.upstream.try_send(event) {
                self.events.push_front(e.into_inner());
                self.retry_at = Some(now + STATUS_INTERVAL);
                break;
            }
        }
        let keys: Vec<DeviceKey> = self.desired.keys().cloned().collect();
        for device in keys {
            let Some(patch) = self.desired.remove(&device) else {
                continue;
            };
            let msg = Upstream::DeviceDesired {
                namespace: device.namespace.clone(),
                name: device.name.clone(),
                patch,
            };
            if let Err(e) = self.upstream.try_send(msg) {
                if let Upstream::DeviceDesired { patch, .. } = e.into_inner() {
                    self.desired.insert(device, patch);
                }
                self.retry_at = Some(now + STATUS_INTERVAL);
            }
        }
        for (device, ()) in self.status.take_due(now) {
            let Some(status) = twins.status(&device) else {
                continue;
            };
            let msg = Upstream::DeviceStatus {
                namespace: device.namespace.clone(),
                name: device.name.clone(),
                status,
            };
            match self.upstream.try_send(msg) {
                Ok(()) => {
                    self.metrics.status_sent.inc();
                }
                Err(_) => self.status.retry(device, ()),
            }
        }
    }

    /// On shutdown: send what is still held back, waiting for no interval.
    fn flush_now(&mut self, twins: &mut Twins) {
        let far = Instant::now() + STATUS_INTERVAL * 2;
        self.flush(far, twins);
        if self.status.pending() > 0 || !self.desired.is_empty() || !self.events.is_empty() {
            warn!(
                statuses = self.status.pending(),
                patches = self.desired.len(),
                "upstream queue full at shutdown; the newest device reports were not handed over"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn desired(version: u64, props: &[(&str, Option<&str>)]) -> Upstream {
        Upstream::DeviceDesired {
            namespace: "ns".into(),
            name: "d".into(),
            patch: DesiredPatch {
                version,
                base_generation: Some(1),
                props: props
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                    .collect(),
            },
        }
    }

    #[test]
    fn upstream_coalescing_replaces_statuses_and_merges_patches() {
        let status = |v: i64| Upstream::DeviceStatus {
            namespace: "ns".into(),
            name: "d".into(),
            status: serde_json::json!({"v": v}),
        };
        let mut s = status(1);
        assert_eq!(s.coalesce_key(), "ns/device/d/status");
        assert!(s.merge(status(2)));
        assert_eq!(s, status(2));
        assert!(!s.merge(desired(1, &[])), "other keys are not folded in");

        let mut d = desired(2, &[("a", Some("1")), ("b", Some("2"))]);
        assert_eq!(d.coalesce_key(), "ns/device/d/desired");
        assert!(d.merge(desired(3, &[("b", None)])));
        let Upstream::DeviceDesired { patch, .. } = d else {
            panic!("still a desired patch")
        };
        assert_eq!(patch.version, 3);
        assert_eq!(
            patch.props,
            BTreeMap::from([
                ("a".to_owned(), Some("1".to_owned())),
                ("b".to_owned(), None)
            ])
        );
    }

    #[test]
    fn the_memory_store_round_trips() {
        let s = MemoryShadowStore::new();
        assert_eq!(s.load("k"), None);
        s.save("k", b"v");
        assert_eq!(s.load("k").as_deref(), Some(&b"v"[..]));
        s.remove("k");
        assert_eq!(s.load("k"), None);
    }

    #[tokio::test]
    async fn invalid_configs_fail_before_binding_anything() {
        let cases = [
            ("$hw", None, 1883),
            ("kedge", None, 0),
            ("kedge", Some("mqtts://h:1"), 1883),
            ("bad/+/prefix", None, 1883),
        ];
        for (prefix, external, port) in cases {
            let mut cfg = BusConfig::new("n");
            cfg.prefix = prefix.into();
            cfg.external = external.map(str::to_owned);
            cfg.listen.set_port(port);
            let (_tx, rx) = watch::channel(DeviceSet::default());
            let (up, _up_rx) = mpsc::channel(1);
            let store: Arc<dyn ShadowStore> = Arc::new(MemoryShadowStore::new());
            let r = run(
                cfg,
                rx,
                up,
                store,
                BusMetrics::default(),
                CancellationToken::new(),
            )
            .await;
            assert!(
                matches!(r, Err(BusError::Config(_))),
                "{prefix} {external:?} {port}: {r:?}"
            );
        }
    }
}
