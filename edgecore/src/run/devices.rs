//! Wiring of the device [`bus`](crate::bus) into `edgecore run`.
//!
//! Three tasks around [`bus::run`]:
//! - the **device set** feeder turns every MetaManager snapshot into the [`DeviceSet`] of this
//!   node (its Devices and their DeviceModels) and publishes it when it changed;
//! - the **bus** itself (broker, MQTT client, shadows, drivers);
//! - the **upstream drain** puts what the bus reports into the [`Outbox`] as REQUESTs:
//!   a status as a merge patch of the whole `Device.status` (the twins list is always sent
//!   whole, so a later report never drops another property), coalesced per device (latest
//!   wins); edge-written desired values as a merge patch of `spec.properties[*].desired`,
//!   *merged* with a still-queued one so no property's write is lost.
//!
//! Shadows persist in the edge store ([`StoreShadows`], keys `shadow/<ns>/<name>`).

use std::collections::BTreeMap;
use std::sync::Arc;

use proto::{Op, ResourceKey};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use crate::bus::metrics::BusMetrics;
use crate::bus::{self, BusConfig, BusError, DeviceSet, ShadowStore, Upstream as BusUpstream};
use crate::meta::{MetaReader, MetaSnapshot, StoredObject};
use crate::outbox::{Outbox, Upstream};
use crate::store::{Store, Tree};

/// Store tree of the bus; shadows live under [`SHADOW_PREFIX`].
const TREE: &str = "bus";
/// Key prefix of saved shadows.
pub const SHADOW_PREFIX: &str = "shadow/";
/// Capacity of the bus -> outbox channel (the bus retries when it is full).
const UPSTREAM_CAPACITY: usize = 256;
/// Most entries the drain hands to the outbox per flush.
const DRAIN_BUDGET: usize = 128;

/// A [`ShadowStore`] over the edge store. Saves are not flushed here: the outbox commit that
/// follows every reported change flushes the whole store.
#[derive(Debug, Clone)]
pub struct StoreShadows {
    tree: Tree,
}

impl StoreShadows {
    /// The shadows of `store`.
    pub fn open(store: &Store) -> Result<Self, crate::store::StoreError> {
        Ok(Self {
            tree: store.tree(TREE)?,
        })
    }
}

impl ShadowStore for StoreShadows {
    fn load(&self, key: &str) -> Option<Vec<u8>> {
        match self.tree.get(format!("{SHADOW_PREFIX}{key}")) {
            Ok(v) => v,
            Err(e) => {
                warn!(device = key, error = %e, "reading a saved shadow failed");
                None
            }
        }
    }

    fn save(&self, key: &str, bytes: &[u8]) {
        if let Err(e) = self.tree.put(format!("{SHADOW_PREFIX}{key}"), bytes) {
            warn!(device = key, error = %e, "saving a shadow failed");
        }
    }

    fn remove(&self, key: &str) {
        if let Err(e) = self.tree.delete(format!("{SHADOW_PREFIX}{key}")) {
            warn!(device = key, error = %e, "forgetting a shadow failed");
        }
    }
}

/// The Devices of `node` in `snapshot`, each with its DeviceModel when cached.
pub fn device_set(snapshot: &MetaSnapshot, node: &str) -> DeviceSet {
    let mut cache = DeviceCache::default();
    cache.refresh(snapshot.prefix(""));
    cache.set(node)
}

/// The cached Devices and DeviceModels, parsed, kept from one cache snapshot to the next so
/// that a new snapshot re-parses only the objects that changed. The bus's own status
/// reports come back from the cloud several times a second per device; parsing every
/// Device on each of them made the feeder's work grow with devices × status writes.
#[derive(Debug, Default)]
pub struct DeviceCache {
    /// Store key (`<ns>/device/<name>`, `<ns>/devicemodel/<name>`) -> the object as last
    /// seen and its JSON.
    parsed: BTreeMap<String, Parsed>,
    /// Number of the current [`DeviceCache::refresh`]; marks the entries it saw.
    round: u64,
}

#[derive(Debug)]
struct Parsed {
    object: Arc<StoredObject>,
    json: Arc<Value>,
    /// The last refresh round that saw the object.
    seen: u64,
}

impl DeviceCache {
    /// Takes in the objects of a snapshot (all of them, in key order). Returns whether
    /// something the bus reacts to changed: a Device or DeviceModel came or went, or its
    /// uid, `metadata.generation` or spec changed ([`inputs_changed`] decides the rest).
    pub fn refresh<'a>(
        &mut self,
        objects: impl Iterator<Item = (&'a String, &'a Arc<StoredObject>)>,
    ) -> bool {
        self.round += 1;
        let round = self.round;
        let mut relevant = false;
        let mut seen = 0usize;
        for (key, object) in objects {
            if !is_device_or_model(key) {
                continue;
            }
            if let Some(held) = self.parsed.get_mut(key)
                && (Arc::ptr_eq(&held.object, object) || *held.object == **object)
            {
                held.seen = round;
                seen += 1;
                continue;
            }
            match serde_json::from_slice::<Value>(&object.json) {
                Ok(json) => {
                    seen += 1;
                    relevant |= self
                        .parsed
                        .get(key)
                        .is_none_or(|old| !same_inputs(&old.json, &json));
                    let entry = Parsed {
                        object: object.clone(),
                        json: Arc::new(json),
                        seen: round,
                    };
                    self.parsed.insert(key.clone(), entry);
                }
                Err(_) => {
                    warn!(object = %key, "skipping a cached Device or DeviceModel that is not JSON");
                    relevant |= self.parsed.remove(key).is_some();
                }
            }
        }
        if self.parsed.len() != seen {
            self.parsed.retain(|_, p| p.seen == round);
            relevant = true;
        }
        relevant
    }

    /// The Devices of `node`, each with its DeviceModel when cached.
    pub fn set(&self, node: &str) -> DeviceSet {
        let mut devices = BTreeMap::new();
        for (key, Parsed { json: device, .. }) in &self.parsed {
            let mut parts = key.splitn(3, '/');
            let (Some(ns), Some("device"), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let spec = device.get("spec");
            let bound = spec.and_then(|s| s.get("nodeName")).and_then(Value::as_str);
            if bound != Some(node) {
                continue;
            }
            let model = spec
                .and_then(|s| s.pointer("/deviceModelRef/name"))
                .and_then(Value::as_str)
                .and_then(|m| self.parsed.get(&format!("{ns}/devicemodel/{m}")))
                .map(|m| m.json.clone());
            devices.insert(format!("{ns}/{name}"), (device.clone(), model));
        }
        DeviceSet { devices }
    }
}

fn is_device_or_model(key: &str) -> bool {
    matches!(key.split('/').nth(1), Some("device" | "devicemodel"))
}

/// The outbox entry of a bus report: `(coalescing key, REQUEST)`, or an EVENT for a
/// device Event.
pub fn outbox_entry(up: &BusUpstream) -> Option<(String, Upstream)> {
    let device_key = |namespace: &str, name: &str| {
        ResourceKey::namespaced(namespace, "device", name.to_owned()).ok()
    };
    let item = match up {
        BusUpstream::DeviceStatus {
            namespace,
            name,
            status,
        } => Upstream::request(
            Op::PatchStatus,
            &device_key(namespace, name)?,
            &json!({ "status": status }),
        )
        .with_content_type(proto::frame::MERGE_PATCH),
        BusUpstream::DeviceDesired {
            namespace,
            name,
            patch,
        } => {
            let props: Vec<Value> = patch
                .props
                .iter()
                .map(|(name, v)| desired_entry(name, v.as_ref().map(|v| json!({"value": v}))))
                .collect();
            Upstream::request(
                Op::Patch,
                &device_key(namespace, name)?,
                &desired_body(props),
            )
            .with_content_type(proto::frame::MERGE_PATCH)
        }
        BusUpstream::DeviceEvent { namespace, event } => {
            // Created like the pods' Events (an EVENT frame), never coalesced.
            let name = event.pointer("/metadata/name")?.as_str()?.to_owned();
            let key = ResourceKey::namespaced(namespace, "event", name).ok()?;
            Upstream::event(Op::Create, &key, event)
        }
    };
    Some((up.coalesce_key(), item))
}

fn desired_entry(name: &str, desired: Option<Value>) -> Value {
    json!({"name": name, "desired": desired.unwrap_or(Value::Null)})
}

fn desired_body(props: Vec<Value>) -> Value {
    json!({"spec": {"properties": props}})
}

/// Folds a later desired merge patch into a queued one: per property name, later wins.
pub fn merge_desired(queued: &Upstream, later: Upstream) -> Upstream {
    let entries = |body: &str| -> Vec<(String, Value)> {
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|b| {
                b.pointer("/spec/properties")
                    .and_then(Value::as_array)
                    .cloned()
            })
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let name = p.get("name")?.as_str()?.to_owned();
                Some((name, p.get("desired").cloned().unwrap_or(Value::Null)))
            })
            .collect()
    };
    let mut merged: BTreeMap<String, Value> = entries(&queued.body).into_iter().collect();
    merged.extend(entries(&later.body));
    let props = merged
        .into_iter()
        .map(|(name, d)| desired_entry(&name, (!d.is_null()).then_some(d)))
        .collect();
    Upstream {
        body: desired_body(props).to_string(),
        ..later
    }
}

/// Starts the bus tasks. Returns the bus task: it ends with the bus's start-up error, or
/// `Ok` after `shutdown`.
pub fn spawn(
    cfg: BusConfig,
    reader: MetaReader,
    outbox: Outbox,
    store: &Store,
    metrics: BusMetrics,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), BusError>>, crate::store::StoreError> {
    let shadows: Arc<dyn ShadowStore> = Arc::new(StoreShadows::open(store)?);
    let node = cfg.node_name.clone();
    let mut cache = DeviceCache::default();
    cache.refresh(reader.snapshot().prefix(""));
    let (set_tx, set_rx) = watch::channel(cache.set(&node));
    let (up_tx, up_rx) = mpsc::channel(UPSTREAM_CAPACITY);
    tokio::spawn(feed_devices(
        reader,
        node.clone(),
        cache,
        set_tx,
        shutdown.clone(),
    ));
    tokio::spawn(drain_upstream(up_rx, outbox));
    let span = tracing::info_span!("bus", %node);
    Ok(tokio::spawn(
        async move { bus::run(cfg, set_rx, up_tx, shadows, metrics, shutdown).await }
            .instrument(span),
    ))
}

async fn feed_devices(
    mut reader: MetaReader,
    node: String,
    mut cache: DeviceCache,
    set: watch::Sender<DeviceSet>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            alive = reader.changed() => if !alive { return },
        }
        if !cache.refresh(reader.snapshot().prefix("")) {
            continue;
        }
        let next = cache.set(&node);
        set.send_if_modified(|cur| {
            if !inputs_changed(cur, &next) {
                return false;
            }
            debug!(devices = next.devices.len(), "device set changed");
            *cur = next;
            true
        });
    }
}

/// Whether the bus must see `next`: a device came or went, or a device's or its model's
/// identity (uid), `metadata.generation` or spec changed. Status-only changes (our own
/// reports coming back through the cloud, every few hundred ms per device) are not
/// published: they would make the bus re-sync, and drivers re-plan, for nothing.
pub fn inputs_changed(cur: &DeviceSet, next: &DeviceSet) -> bool {
    let same = same_inputs;
    cur.devices.len() != next.devices.len()
        || cur
            .devices
            .iter()
            .zip(&next.devices)
            .any(|((ka, (da, ma)), (kb, (db, mb)))| {
                ka != kb
                    || !same(da, db)
                    || match (ma, mb) {
                        (Some(a), Some(b)) => !same(a, b),
                        (None, None) => false,
                        _ => true,
                    }
            })
}

/// Whether two versions of a Device or DeviceModel are the same to the bus: same uid,
/// `metadata.generation` and spec (the status may differ).
fn same_inputs(a: &Value, b: &Value) -> bool {
    ["/metadata/uid", "/metadata/generation", "/spec"]
        .iter()
        .all(|p| a.pointer(p) == b.pointer(p))
}

/// Ends when the bus drops its sender (after its own drain on shutdown), so the last
/// reports still reach the outbox.
async fn drain_upstream(mut rx: mpsc::Receiver<BusUpstream>, outbox: Outbox) {
    let mut batch = Vec::with_capacity(DRAIN_BUDGET);
    while rx.recv_many(&mut batch, DRAIN_BUDGET).await > 0 {
        let mut statuses: BTreeMap<String, Upstream> = BTreeMap::new();
        for up in batch.drain(..) {
            let Some((key, item)) = outbox_entry(&up) else {
                warn!(key = %up.coalesce_key(), "a device report has an invalid key; dropped");
                continue;
            };
            match up {
                // Events have keys of their own, so they ride in the same batch.
                BusUpstream::DeviceStatus { .. } | BusUpstream::DeviceEvent { .. } => {
                    statuses.insert(key, item);
                }
                BusUpstream::DeviceDesired { .. } => {
                    if let Err(e) = outbox.put_merged(&key, item, merge_desired).await {
                        warn!(%key, error = %crate::hub::conn::chain(&e), "cannot queue a desired write");
                    }
                }
            }
        }
        if statuses.is_empty() {
            continue;
        }
        if let Err(e) = outbox.put_many(statuses.into_iter().collect()).await {
            warn!(error = %crate::hub::conn::chain(&e), "cannot queue device statuses");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use devicetwin::shadow::DesiredPatch;

    fn desired(props: &[(&str, Option<&str>)]) -> BusUpstream {
        BusUpstream::DeviceDesired {
            namespace: "ns".into(),
            name: "d".into(),
            patch: DesiredPatch {
                version: 2,
                base_generation: Some(1),
                props: props
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                    .collect(),
            },
        }
    }

    #[test]
    fn only_spec_and_model_changes_reach_the_bus() {
        let device = |generation: i64, setpoint: &str, state: &str| {
            json!({"metadata": {"uid": "u1", "generation": generation},
                "spec": {"deviceModelRef": {"name": "m"},
                    "properties": [{"name": "sp", "desired": {"value": setpoint}}]},
                "status": {"state": state, "twins": [{"propertyName": "sp"}]}})
        };
        let model = |ty: &str| {
            json!({"metadata": {"uid": "m1", "generation": 1},
                "spec": {"properties": [{"name": "sp", "type": ty}]}})
        };
        let set = |d: Value, m: Option<Value>| DeviceSet {
            devices: BTreeMap::from([("ns/d".to_owned(), (Arc::new(d), m.map(Arc::new)))]),
        };
        let base = set(device(1, "1", "online"), Some(model("INT")));
        // Status churn (our own reports coming back): nothing to do.
        assert!(!inputs_changed(
            &base,
            &set(device(1, "1", "offline"), Some(model("INT")))
        ));
        // Spec (with its generation), the model's spec, the model's arrival: re-sync.
        assert!(inputs_changed(
            &base,
            &set(device(2, "2", "online"), Some(model("INT")))
        ));
        assert!(inputs_changed(
            &base,
            &set(device(1, "1", "online"), Some(model("FLOAT")))
        ));
        assert!(inputs_changed(&set(device(1, "1", "online"), None), &base));
        assert!(inputs_changed(&base, &DeviceSet::default()));
    }

    #[test]
    fn the_cache_reparses_only_changed_objects_and_ignores_status_churn() {
        let object = |uid: &str, rv: &str, v: Value| {
            Arc::new(StoredObject {
                uid: uid.into(),
                resource_version: rv.into(),
                json: bytes::Bytes::from(v.to_string()),
            })
        };
        let device = |generation: i64, state: &str| {
            json!({"metadata": {"uid": "u1", "generation": generation},
                "spec": {"nodeName": "n", "deviceModelRef": {"name": "m"}},
                "status": {"state": state}})
        };
        let model = json!({"metadata": {"uid": "m1"}, "spec": {"properties": []}});
        let mut objects = BTreeMap::from([
            (
                "ns/device/d".to_owned(),
                object("u1", "1", device(1, "online")),
            ),
            (
                "ns/devicemodel/m".to_owned(),
                object("m1", "1", model.clone()),
            ),
            ("ns/pod/p".to_owned(), object("p1", "1", json!({}))),
        ]);
        let mut cache = DeviceCache::default();
        assert!(cache.refresh(objects.iter()), "first sight");
        let set = cache.set("n");
        assert_eq!(set.devices["ns/d"].1.as_deref(), Some(&model));
        assert!(cache.set("other").devices.is_empty());
        assert!(!cache.refresh(objects.iter()), "same objects");
        objects.insert(
            "ns/device/d".into(),
            object("u1", "2", device(1, "offline")),
        );
        assert!(!cache.refresh(objects.iter()), "status only");
        assert_eq!(
            cache.set("n").devices["ns/d"].0["status"]["state"],
            "offline",
            "the newest object is kept"
        );
        objects.insert(
            "ns/device/d".into(),
            object("u1", "3", device(2, "offline")),
        );
        assert!(cache.refresh(objects.iter()), "new generation");
        objects.insert("ns/pod/q".into(), object("q1", "1", json!({})));
        assert!(!cache.refresh(objects.iter()), "other kinds do not count");
        objects.remove("ns/devicemodel/m");
        assert!(cache.refresh(objects.iter()), "the model went");
        assert!(cache.set("n").devices["ns/d"].1.is_none());
        assert!(!cache.refresh(objects.iter()));
    }

    #[test]
    fn statuses_patch_the_whole_status() {
        let up = BusUpstream::DeviceStatus {
            namespace: "ns".into(),
            name: "d".into(),
            status: json!({"twins": [{"propertyName": "t"}]}),
        };
        let (key, item) = outbox_entry(&up).unwrap();
        assert_eq!(key, "ns/device/d/status");
        assert_eq!(item.op, Op::PatchStatus.as_str());
        assert_eq!(item.resource, "ns/device/d");
        let body: Value = serde_json::from_str(&item.body).unwrap();
        assert_eq!(body, json!({"status": {"twins": [{"propertyName": "t"}]}}));
    }

    #[test]
    fn device_events_become_event_creates_with_keys_of_their_own() {
        let event =
            json!({"metadata": {"name": "d.1a2b", "namespace": "ns"}, "reason": "InvalidDesired"});
        let up = BusUpstream::DeviceEvent {
            namespace: "ns".into(),
            event: event.clone(),
        };
        let (key, item) = outbox_entry(&up).unwrap();
        assert_eq!(key, "event/ns/d.1a2b");
        assert_eq!(item.kind, crate::outbox::UpKind::Event);
        assert_eq!(item.op, Op::Create.as_str());
        assert_eq!(item.resource, "ns/event/d.1a2b");
        assert_eq!(serde_json::from_str::<Value>(&item.body).unwrap(), event);
    }

    #[test]
    fn desired_patches_merge_per_property() {
        let (key, a) = outbox_entry(&desired(&[("a", Some("1")), ("b", Some("2"))])).unwrap();
        assert_eq!(key, "ns/device/d/desired");
        assert_eq!(a.op, Op::Patch.as_str());
        let (_, b) = outbox_entry(&desired(&[("b", None), ("c", Some("3"))])).unwrap();
        let merged = merge_desired(&a, b);
        let body: Value = serde_json::from_str(&merged.body).unwrap();
        assert_eq!(
            body,
            json!({"spec": {"properties": [
                {"name": "a", "desired": {"value": "1"}},
                {"name": "b", "desired": null},
                {"name": "c", "desired": {"value": "3"}},
            ]}})
        );
    }
}
