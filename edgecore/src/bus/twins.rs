//! The shadows of this node's devices and what happens to them: requests from MQTT, device
//! set changes from the cloud, readings from the built-in drivers. No IO: every input returns
//! [`Effect`]s for the bus loop to carry out (publish, drive, send upstream), except that
//! accepted changes are saved to the [`ShadowStore`]: at once when they change no status,
//! else by [`Twins::status`] when the device's rate-limited status leaves (once per status,
//! not once per report; always before the status can reach the outbox).
//!
//! Per input:
//! - request (`twin/update`, `twin/get`, `state/update`): validate with
//!   [`payload::request_event`] against the DeviceModel, [`Shadow::apply`], publish the result
//!   on the request's reply topic (same topic form, so legacy mappers hear back), deltas and
//!   documents, drive changed desired values, and send the whole status upstream. Anything
//!   refused becomes an error result with code and reason, counted by reason.
//! - device set: membership diff -> `membership/updated`; a new `metadata.generation`, or
//!   a changed DeviceModel at the same generation (a [`TwinEvent::CloudRecheck`]) ->
//!   [`TwinEvent::cloud_desired_checked`] -> delta + drive, refusals in
//!   `status.desiredRefusals` and, once per distinct refusal, a `Warning InvalidDesired`
//!   Event ([`events`]). A DeviceModel is checked ([`DeviceModelSpec::validate`]) before it
//!   is used; an invalid one holds the device (`state: model-invalid`). Properties removed
//!   from the Device's spec lose their reported values.
//! - driver reading or state: like a mapper's report, without a result message.

use std::collections::BTreeMap;
use std::sync::Arc;

use devicetwin::model::{DeviceModel, DeviceModelSpec, DeviceState};
use devicetwin::payload::{self, BaseMsg, ErrorCode, ResultMsg};
use devicetwin::shadow::{DesiredPatch, PropertyWrite, TwinReport};
use devicetwin::topic::{self, NodeTopic, TopicForm};
use devicetwin::{
    Device, DeviceKey, DeviceStatus, DeviceTopic, Membership, Shadow, Stamp, Topic, TwinEvent,
};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::ShadowStore;
use super::metrics::{BusMetrics, label};
use crate::driver::DriverEvent;
use effects::{carry, persist, publish, save, status_effect};

/// Something the bus loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish (QoS 1) on a topic.
    Publish {
        /// Full topic.
        topic: String,
        /// JSON payload.
        payload: Vec<u8>,
    },
    /// Write a desired value to the device's built-in driver (ignored without one).
    Drive {
        /// Device.
        device: DeviceKey,
        /// Property.
        property: String,
        /// Desired value.
        value: String,
    },
    /// The device's status changed (rate-limited before it goes upstream). The whole
    /// `Device.status` is built by [`Twins::status`] when it may leave, not per change.
    Status {
        /// Device.
        device: DeviceKey,
    },
    /// A Kubernetes Event about the device (e.g. `InvalidDesired`), for the cloud.
    Event {
        /// Device.
        device: DeviceKey,
        /// The core/v1 Event object.
        event: serde_json::Value,
    },
    /// Desired values written at the edge, for the cloud.
    Desired {
        /// Device.
        device: DeviceKey,
        /// The change.
        patch: DesiredPatch,
    },
}

/// Refusals of the bus itself (the rest come from [`devicetwin`]).
#[derive(Debug, thiserror::Error)]
pub enum BusReject {
    /// A request for a device not bound to this node.
    #[error("device {0} is not bound to this node")]
    UnknownDevice(DeviceKey),
    /// A desired value for a property the Device does not list in `spec.properties`: the
    /// cloud has nowhere to keep it (and would refuse the whole write).
    #[error(
        "the Device has no property {0:?} in spec.properties; desired values can only be set for listed properties"
    )]
    NotInDeviceSpec(String),
}

impl ErrorCode for BusReject {
    fn code(&self) -> u16 {
        404
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::UnknownDevice(_) => "unknown_device",
            Self::NotInDeviceSpec(_) => "unknown_property",
        }
    }
}

/// `status.state` of a device whose protocol settings cannot be used.
pub const CONFIG_ERROR: &str = "config-error";
/// `status.state` of a device held because its DeviceModel is not at the edge.
pub const MODEL_MISSING: &str = "model-missing";
/// `status.state` of a device held because its DeviceModel is at the edge but unusable
/// (it does not parse, e.g. a property without a `type`).
pub const MODEL_INVALID: &str = "model-invalid";

/// A `twin/update` or `state/update` for a device held until its DeviceModel arrives (or,
/// with `problem`, until its unusable DeviceModel is fixed): the property types are unknown,
/// so values cannot be validated yet. Retryable once the model is there or fixed.
#[derive(Debug, thiserror::Error)]
#[error("device {device} waits for its DeviceModel {model}{}", problem.as_ref().map(|p| format!(", which is invalid: {p}")).unwrap_or_default())]
pub struct ModelMissing {
    device: DeviceKey,
    model: String,
    problem: Option<String>,
}

impl ErrorCode for ModelMissing {
    fn code(&self) -> u16 {
        if self.problem.is_some() { 422 } else { 503 }
    }

    fn reason(&self) -> &'static str {
        if self.problem.is_some() {
            "model_invalid"
        } else {
            "model_missing"
        }
    }
}

/// One device.
#[derive(Debug)]
struct Entry {
    device: Device,
    model: Option<DeviceModelSpec>,
    /// Why the cached DeviceModel could not be read (`model` is then `None`).
    model_error: Option<String>,
    shadow: Shadow,
    /// The status as last built, except for `report`.
    status: DeviceStatus,
    /// The newest twin report not yet folded into `status` (reports replace each other).
    report: Option<TwinReport>,
    /// A status change was announced ([`Effect::Status`]) and not yet built by
    /// [`Twins::status`].
    status_pending: bool,
    /// The shadow has changes not in the [`ShadowStore`]; [`Twins::status`] saves them.
    unsaved: bool,
    /// Topic form its requesters last used; the bus's own publishes follow it.
    form: TopicForm,
}

impl Entry {
    /// Forgets the shadow and status (a new incarnation of the device's name).
    fn reset(&mut self) {
        self.shadow = Shadow::new();
        self.status = DeviceStatus::default();
        self.report = None;
        self.unsaved = true;
    }

    /// The DeviceModel the device names but the edge does not hold: the device is held
    /// (no driver, no cloud desired values applied, twin updates refused) until it arrives.
    fn missing_model(&self) -> Option<&str> {
        self.device
            .spec
            .model_name()
            .filter(|_| self.model.is_none())
    }
}

/// All shadows of the node (one owner: the bus loop).
pub struct Twins {
    prefix: String,
    node: String,
    membership: Membership,
    entries: BTreeMap<DeviceKey, Entry>,
    store: Arc<dyn ShadowStore>,
    metrics: BusMetrics,
    seq: u64,
}

impl std::fmt::Debug for Twins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twins")
            .field("node", &self.node)
            .field("devices", &self.entries.len())
            .finish()
    }
}

impl Twins {
    /// No devices yet.
    pub fn new(prefix: &str, node: &str, store: Arc<dyn ShadowStore>, metrics: BusMetrics) -> Self {
        Self {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            membership: Membership::new(node),
            entries: BTreeMap::new(),
            store,
            metrics,
            seq: 0,
        }
    }

    /// The shadow of `key` (tests, status).
    pub fn shadow(&self, key: &DeviceKey) -> Option<&Shadow> {
        self.entries.get(key).map(|e| &e.shadow)
    }

    /// Devices and models, for [`crate::driver::Drivers::sync`]. Held devices (DeviceModel
    /// missing) are left out: a driver without the model's types would report and write
    /// values of the wrong type.
    pub fn driver_inputs(
        &self,
    ) -> impl Iterator<Item = (&DeviceKey, &Device, Option<&DeviceModelSpec>)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.missing_model().is_none())
            .map(|(k, e)| (k, &e.device, e.model.as_ref()))
    }

    /// Drive every desired value of `keys` (their drivers just started).
    pub fn desired_drives(&self, keys: &[DeviceKey]) -> Vec<Effect> {
        keys.iter()
            .filter_map(|k| Some((k, self.entries.get(k)?)))
            .flat_map(|(k, e)| {
                e.shadow
                    .desired()
                    .props()
                    .iter()
                    .map(|(p, s)| Effect::Drive {
                        device: k.clone(),
                        property: p.clone(),
                        value: s.value.clone(),
                    })
            })
            .collect()
    }

    /// The whole `Device.status` of `key` as it leaves for the cloud (`None` if the device
    /// left the node). Folds in the newest report and first saves the shadow if it has
    /// unsaved changes, so a status never reaches the outbox ahead of the saved shadow.
    pub fn status(&mut self, key: &DeviceKey) -> Option<serde_json::Value> {
        let entry = self.entries.get_mut(key)?;
        if entry.unsaved {
            save(self.store.as_ref(), key, entry);
            entry.unsaved = false;
        }
        entry.status_pending = false;
        entry.status.node_name = Some(self.node.clone());
        if let Some(report) = entry.report.take() {
            entry.status.apply_report(&report);
        }
        match serde_json::to_value(&entry.status) {
            Ok(status) => Some(status),
            Err(e) => {
                warn!(device = %key, error = %e, "serialising a status failed");
                None
            }
        }
    }

    fn next_id(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("kedge-{what}-{}", self.seq)
    }

    /// A message arrived on a subscribed topic.
    pub fn on_message(&mut self, topic_name: &str, bytes: &[u8], now: i64) -> Vec<Effect> {
        let parsed = match topic::parse(&self.prefix, topic_name) {
            Ok(t) => t,
            Err(e) => {
                debug!(topic = topic_name, error = %e, "ignoring a message on a foreign topic");
                return Vec::new();
            }
        };
        match &parsed {
            Topic::Node {
                node,
                kind: NodeTopic::MembershipGet,
            } if *node == self.node => {
                self.count("membership_get");
                let id = payload::decode::<BaseMsg>(bytes)
                    .map(|b| b.event_id)
                    .unwrap_or_else(|_| payload::peek_event_id(bytes));
                let msg = self.membership.get_result(&Stamp::new(id, now));
                let reply = Topic::node(self.node.clone(), NodeTopic::MembershipGetResult);
                publish(&self.prefix, &reply, &msg).into_iter().collect()
            }
            Topic::Device { device, form, kind } if kind.is_request() => {
                self.on_request(device.clone(), *form, *kind, &parsed, bytes, now)
            }
            _ => Vec::new(),
        }
    }

    fn count(&self, kind: &str) {
        self.metrics
            .requests
            .get_or_create(&label("kind", kind))
            .inc();
    }

    fn reject(
        &self,
        reply: &Topic,
        event_id: String,
        now: i64,
        err: &dyn ErrorCode,
    ) -> Vec<Effect> {
        self.metrics
            .rejected
            .get_or_create(&label("reason", err.reason()))
            .inc();
        debug!(topic = %reply.display(&self.prefix), code = err.code(), reason = err.reason(), error = %err, "twin request refused");
        let msg = ResultMsg::error(event_id, now, err);
        publish(&self.prefix, reply, &msg).into_iter().collect()
    }

    fn on_request(
        &mut self,
        key: DeviceKey,
        form: TopicForm,
        kind: DeviceTopic,
        parsed: &Topic,
        bytes: &[u8],
        now: i64,
    ) -> Vec<Effect> {
        let kind_name = match kind {
            DeviceTopic::TwinUpdate => "twin_update",
            DeviceTopic::TwinGet => "twin_get",
            _ => "state_update",
        };
        self.count(kind_name);
        let Some(reply) = parsed.reply() else {
            return Vec::new();
        };
        let Some(entry) = self.entries.get_mut(&key) else {
            let id = payload::peek_event_id(bytes);
            return self.reject(&reply, id, now, &BusReject::UnknownDevice(key));
        };
        entry.form = form;
        if kind != DeviceTopic::TwinGet
            && let Some(model) = entry.missing_model()
        {
            let err = ModelMissing {
                device: key.clone(),
                model: model.to_owned(),
                problem: entry.model_error.clone(),
            };
            return self.reject(&reply, payload::peek_event_id(bytes), now, &err);
        }
        let event = match payload::request_event(kind, bytes, entry.model.as_ref(), now) {
            Ok(ev) => ev,
            Err(e) => return self.reject(&reply, payload::peek_event_id(bytes), now, &e),
        };
        let event_id = event.stamp().event_id.clone();
        if let TwinEvent::EdgeUpdate {
            desired: Some(d), ..
        } = &event
            && let Some(name) = d
                .props
                .keys()
                .find(|n| entry.device.spec.property(n).is_none())
        {
            let err = BusReject::NotInDeviceSpec(name.clone());
            return self.reject(&reply, event_id, now, &err);
        }
        match entry.shadow.apply(event) {
            Ok(actions) => {
                self.metrics
                    .accepted
                    .get_or_create(&label("kind", kind_name))
                    .inc();
                let fx = carry(&self.prefix, &key, entry, actions, true);
                persist(self.store.as_ref(), &key, entry);
                fx
            }
            Err(e) => self.reject(&reply, event_id, now, &e),
        }
    }

    /// Records which devices have unusable protocol settings (`problems`, from
    /// [`crate::driver::Drivers::problems`]): their status gets `state: config-error` and the
    /// reason in `message`, cleared once the settings are fixed. Returns the status changes.
    pub fn driver_problems(&mut self, problems: &BTreeMap<DeviceKey, String>) -> Vec<Effect> {
        let mut fx = Vec::new();
        for (key, entry) in &mut self.entries {
            if entry.missing_model().is_some() {
                // Held devices get no driver, so no verdict: their state says why.
                continue;
            }
            let want = problems.get(key);
            if entry.status.message.as_ref() == want {
                continue;
            }
            match want {
                Some(msg) => {
                    entry.status.message = Some(msg.clone());
                    entry.status.state = Some(DeviceState::Other(CONFIG_ERROR.to_owned()));
                }
                None => {
                    entry.status.message = None;
                    if entry.status.state.as_ref().map(DeviceState::as_str) == Some(CONFIG_ERROR) {
                        entry.status.state = Some(DeviceState::Unknown);
                    }
                }
            }
            debug!(device = %key, problem = ?want, "driver settings status changed");
            fx.push(status_effect(key, entry));
        }
        self.metrics
            .driver_config_errors
            .set(i64::try_from(problems.len()).unwrap_or(i64::MAX));
        fx
    }

    /// A built-in driver read values or saw the device come or go.
    pub fn on_driver(&mut self, ev: DriverEvent, now: i64) -> Vec<Effect> {
        let (key, event) = match ev {
            DriverEvent::Readings {
                device,
                values,
                timestamp,
            } => {
                let Some(entry) = self.entries.get(&device) else {
                    return Vec::new();
                };
                if entry.missing_model().is_some() {
                    // Left over from a driver stopped when the model went: untyped.
                    return Vec::new();
                }
                let props = values
                    .into_iter()
                    .map(|(name, value)| {
                        let ty = entry
                            .model
                            .as_ref()
                            .and_then(|m| m.property(&name))
                            .map(|p| p.ty);
                        let w = PropertyWrite {
                            value,
                            timestamp: Some(timestamp),
                            ty,
                        };
                        (name, Some(w))
                    })
                    .collect();
                let at = Stamp::new(self.next_id("driver"), now);
                (device, TwinEvent::edge_reported(props, None, at))
            }
            DriverEvent::State { device, state } => {
                let at = Stamp::new(self.next_id("driver"), now);
                (device, TwinEvent::EdgeState { state, at })
            }
        };
        let Some(entry) = self.entries.get_mut(&key) else {
            return Vec::new();
        };
        match entry.shadow.apply(event) {
            Ok(actions) => {
                let fx = carry(&self.prefix, &key, entry, actions, false);
                persist(self.store.as_ref(), &key, entry);
                fx
            }
            Err(e) => {
                warn!(device = %key, error = %e, "a driver report was refused by the shadow");
                Vec::new()
            }
        }
    }

    /// The node's device set changed (or is first known).
    pub fn sync_devices(&mut self, set: &super::DeviceSet, now: i64) -> Vec<Effect> {
        let mut current = BTreeMap::new();
        for (id, (dv, mv)) in &set.devices {
            let device = match Device::deserialize(&**dv) {
                Ok(d) => d,
                Err(e) => {
                    warn!(device = %id, error = %e, "skipping a Device that does not parse");
                    continue;
                }
            };
            let Some(key) = device.key() else { continue };
            if let Some(n) = device.spec.node_name.as_deref()
                && !n.is_empty()
                && n != self.node
            {
                debug!(device = %key, node = n, "skipping a Device bound to another node");
                continue;
            }
            let (model, model_error) = match mv.as_ref().map(|m| DeviceModel::deserialize(&**m)) {
                None => (None, None),
                Some(Ok(m)) => match m.spec.validate() {
                    Ok(()) => (Some(m.spec), None),
                    Err(e) => {
                        debug!(device = %key, error = %e, "the device's DeviceModel is invalid");
                        (None, Some(e.to_string()))
                    }
                },
                Some(Err(e)) => {
                    debug!(device = %key, error = %e, "the device's DeviceModel does not parse");
                    (None, Some(e.to_string()))
                }
            };
            current.insert(key, (device, model, model_error));
        }

        let mut fx = Vec::new();
        let change = self.membership.replace(current.keys().cloned());
        for key in &change.removed {
            self.entries.remove(key);
            self.store.remove(&key.to_string());
            info!(device = %key, "device left the node");
        }
        if !change.is_empty() {
            let msg = change.to_message(&Stamp::new(self.next_id("membership"), now));
            let t = Topic::node(self.node.clone(), NodeTopic::MembershipUpdated);
            fx.extend(publish(&self.prefix, &t, &msg));
        }
        self.metrics
            .devices
            .set(i64::try_from(current.len()).unwrap_or(i64::MAX));

        for (key, (device, model, model_error)) in current {
            // A new entry's shadow may have been checked against another model (saved before
            // a restart, or rebuilt from the status): check it again, like a model change.
            if !self.entries.contains_key(&key) {
                let (entry, status_fx) = self.load(&key, device.clone());
                fx.extend(status_fx);
                self.entries.insert(key.clone(), entry);
            }
            let id = self.next_id("cloud");
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if let (Some(old), Some(new)) = (uid_of(&entry.device), uid_of(&device))
                && old != new
            {
                // Deleted and re-created under the same name while the edge did not see
                // the gap (offline, or both in one snapshot): a new device, whatever its
                // generation. The old incarnation's values must not reach the new object.
                info!(device = %key, old, new, "device re-created; resetting its shadow");
                entry.reset();
                fx.push(status_effect(&key, entry));
            }
            let dropped = dropped_properties(&entry.device, &device);
            let model_changed = entry.model != model;
            entry.device = device;
            entry.model = model;
            entry.model_error = model_error;
            fx.extend(hold_status(&key, entry));
            if entry.missing_model().is_none() {
                fx.extend(self.cloud_desired_for(&key, id, now, model_changed));
            }
            if !dropped.is_empty() {
                let at = Stamp::new(self.next_id("spec"), now);
                fx.extend(self.drop_reported(&key, dropped, at));
            }
        }
        let held = self
            .entries
            .values()
            .filter(|e| e.missing_model().is_some())
            .count();
        self.metrics
            .devices_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        fx
    }

    /// Applies the Device's desired values, checked against its DeviceModel, when the
    /// generation is new, or with `model_changed` also at the applied generation (a
    /// [`TwinEvent::CloudRecheck`]: refusals appear or clear, deltas and drives follow).
    fn cloud_desired_for(
        &mut self,
        key: &DeviceKey,
        event_id: String,
        now: i64,
        model_changed: bool,
    ) -> Vec<Effect> {
        let node = self.node.clone();
        let Some(entry) = self.entries.get_mut(key) else {
            return Vec::new();
        };
        let generation = entry.device.generation();
        let mut recheck = false;
        if let Some(observed) = entry.shadow.observed_generation() {
            if generation == observed {
                if !model_changed {
                    return Vec::new();
                }
                recheck = true;
            }
            if generation < observed {
                // The cache always holds the newest object, so a lower generation is a new
                // incarnation of the name (deleted and re-created): start over.
                info!(device = %key, generation, observed, "device re-created; resetting its shadow");
                entry.reset();
            }
        }
        let (event, refusals) = TwinEvent::cloud_desired_checked(
            &entry.device.spec,
            generation,
            entry.model.as_ref(),
            &entry.shadow,
            Stamp::new(event_id, now),
        );
        let event = if recheck { event.into_recheck() } else { event };
        match entry.shadow.apply(event) {
            Ok(actions) => {
                let mut fx = Vec::new();
                // Counted and announced once per distinct refusal: a later generation or a
                // model recheck that refuses the same value again says nothing new.
                let before = entry.status.desired_refusals.as_deref().unwrap_or_default();
                for r in refusals.iter().filter(|r| !events::known(before, r)) {
                    warn!(device = %key, property = %r.property_name, value = %r.value, reason = %r.reason, "desired value from the cloud refused");
                    self.metrics
                        .desired_refused
                        .get_or_create(&label("reason", &r.reason))
                        .inc();
                    fx.push(Effect::Event {
                        device: key.clone(),
                        event: events::invalid_desired(&entry.device, &node, r, now),
                    });
                }
                let refusals = (!refusals.is_empty()).then_some(refusals);
                let refusals_changed = entry.status.desired_refusals != refusals;
                // Set before carrying: the ReportUp it holds marks the status for sending.
                entry.status.desired_refusals = refusals;
                let carried = carry(&self.prefix, key, entry, actions, false);
                let announced = carried.iter().any(|e| matches!(e, Effect::Status { .. }));
                fx.extend(carried);
                if refusals_changed && !announced {
                    fx.push(status_effect(key, entry));
                }
                persist(self.store.as_ref(), key, entry);
                fx
            }
            Err(e) => {
                warn!(device = %key, error = %e, "cloud desired values refused by the shadow");
                Vec::new()
            }
        }
    }

    /// Forgets the reported values of properties removed from the Device's spec, so their
    /// entries leave `status.twins` with the next status (desired values go with the new
    /// generation's spec already).
    fn drop_reported(&mut self, key: &DeviceKey, names: Vec<String>, at: Stamp) -> Vec<Effect> {
        let Some(entry) = self.entries.get_mut(key) else {
            return Vec::new();
        };
        let props: BTreeMap<String, Option<PropertyWrite>> = names
            .into_iter()
            .filter(|n| entry.shadow.reported().get(n).is_some())
            .map(|n| (n, None))
            .collect();
        if props.is_empty() {
            return Vec::new();
        }
        info!(device = %key, properties = ?props.keys().collect::<Vec<_>>(), "properties removed from the Device; their reported values dropped");
        match entry
            .shadow
            .apply(TwinEvent::edge_reported(props, None, at))
        {
            Ok(actions) => {
                let fx = carry(&self.prefix, key, entry, actions, false);
                persist(self.store.as_ref(), key, entry);
                fx
            }
            Err(e) => {
                warn!(device = %key, error = %e, "dropping removed properties was refused by the shadow");
                Vec::new()
            }
        }
    }

    /// A new entry: the saved shadow, else one rebuilt from the cached status. If the saved
    /// shadow is ahead of the cached status (reports not yet delivered), the status goes up.
    /// The entry starts without a model: the caller sets it, and sees a change.
    fn load(&self, key: &DeviceKey, device: Device) -> (Entry, Vec<Effect>) {
        let cached = device.status.clone().unwrap_or_default();
        let moved_from = cached.node_name.clone().filter(|n| *n != self.node);
        let saved = self
            .store
            .load(&key.to_string())
            .and_then(|b| match serde_json::from_slice::<Shadow>(&b) {
                Ok(s) => Some((s, effects::saved_uid(&b))),
                Err(e) => {
                    warn!(device = %key, error = %e, "saved shadow unreadable; rebuilding it from the Device status");
                    None
                }
            })
            .and_then(|(shadow, saved_uid)| match (saved_uid, uid_of(&device)) {
                (Some(old), Some(new)) if old != new => {
                    info!(device = %key, old, new, "saved shadow is of an earlier Device of this name; starting over");
                    None
                }
                _ => Some(shadow),
            });
        let mut ahead = false;
        let (shadow, status) = match saved {
            Some(shadow) => {
                let mut status = cached.clone();
                status.apply_report(&shadow.report());
                if let Some(s) = shadow.state() {
                    status.state = Some(s.clone());
                }
                ahead = status != cached;
                (shadow, status)
            }
            None => (Shadow::from_status(&cached), cached),
        };
        let (shadow, status) = match moved_from {
            // Moved here from another node: the status is that edge's view (its state, its
            // mapper's readings). Take it over from scratch and say so at once; the cloud
            // refuses the old edge's later writes, as the Device is no longer its own.
            Some(from) => {
                info!(device = %key, from, "device moved here from another node; its status is taken over");
                ahead = true;
                let status = DeviceStatus {
                    state: Some(DeviceState::Unknown),
                    node_name: Some(self.node.clone()),
                    ..DeviceStatus::default()
                };
                (Shadow::new(), status)
            }
            None => (shadow, status),
        };
        info!(device = %key, protocol = device.spec.protocol.as_ref().and_then(|p| p.protocol_name.as_deref()).unwrap_or("-"), "device bound to the node");
        let mut entry = Entry {
            device,
            model: None,
            model_error: None,
            shadow,
            status,
            report: None,
            status_pending: false,
            unsaved: false,
            form: TopicForm::Namespaced,
        };
        let fx = if ahead {
            vec![status_effect(key, &mut entry)]
        } else {
            Vec::new()
        };
        (entry, fx)
    }
}

/// The properties `old` lists in `spec.properties` that `new` no longer does.
fn dropped_properties(old: &Device, new: &Device) -> Vec<String> {
    old.spec
        .properties
        .iter()
        .filter(|p| new.spec.property(&p.name).is_none())
        .map(|p| p.name.clone())
        .collect()
}

/// `metadata.uid` of a Device, if it has one.
fn uid_of(device: &Device) -> Option<String> {
    device.metadata.uid.clone().filter(|u| !u.is_empty())
}

/// Sets or clears `state: model-missing` (with the model in `message`) as the device's
/// DeviceModel goes missing or arrives; the status change, if any.
fn hold_status(key: &DeviceKey, entry: &mut Entry) -> Vec<Effect> {
    let held = entry.missing_model().map(str::to_owned);
    let state = entry.status.state.as_ref().map(DeviceState::as_str);
    let is_held_state = state == Some(MODEL_MISSING) || state == Some(MODEL_INVALID);
    match held {
        Some(model) => {
            let (word, message) = match &entry.model_error {
                None => (
                    MODEL_MISSING,
                    format!("DeviceModel {model} is not at the edge yet; the device is held"),
                ),
                Some(e) => (
                    MODEL_INVALID,
                    format!(
                        "DeviceModel {model} is invalid ({e}); the device is held until it is fixed"
                    ),
                ),
            };
            if state == Some(word) && entry.status.message.as_ref() == Some(&message) {
                return Vec::new();
            }
            match &entry.model_error {
                None => warn!(device = %key, model, "device held: its DeviceModel is missing"),
                Some(e) => {
                    warn!(device = %key, model, error = %e, "device held: its DeviceModel is invalid")
                }
            }
            entry.status.state = Some(DeviceState::Other(word.to_owned()));
            entry.status.message = Some(message);
        }
        None if is_held_state => {
            info!(device = %key, "DeviceModel arrived; device released");
            entry.status.state = Some(DeviceState::Unknown);
            entry.status.message = None;
        }
        None => return Vec::new(),
    }
    vec![status_effect(key, entry)]
}

mod effects;
mod events;
#[cfg(test)]
mod tests;
