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
//!
//! The device-set side lives in [`sync`], what an accepted change turns into (publishes,
//! saves, statuses) in `effects`, and the `InvalidDesired` Events in [`events`].

use std::collections::BTreeMap;
use std::sync::Arc;

use devicetwin::model::{DeviceModelSpec, DeviceState};
use devicetwin::payload::{self, BaseMsg, ErrorCode, ResultMsg};
use devicetwin::shadow::{DesiredPatch, PropertyWrite, TwinReport};
use devicetwin::topic::{self, NodeTopic, TopicForm};
use devicetwin::{
    Device, DeviceKey, DeviceStatus, DeviceTopic, Membership, Shadow, Stamp, Topic, TwinEvent,
};
use tracing::{debug, warn};

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
}

mod effects;
mod events;
mod sync;
#[cfg(test)]
mod tests;
