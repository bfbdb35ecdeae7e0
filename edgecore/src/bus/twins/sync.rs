//! The device set side of [`Twins`]: Devices and their DeviceModels arriving, changing and
//! leaving ([`Twins::sync_devices`]) — loading an entry (saved shadow, cached status, or a
//! fresh start for a device moved here), checking cloud-set desired values against the model
//! at a new generation or a model change, dropping removed properties, and holding a device
//! whose model is missing or invalid.

use std::collections::BTreeMap;

use devicetwin::model::{DeviceModel, DeviceState};
use devicetwin::shadow::PropertyWrite;
use devicetwin::topic::{NodeTopic, TopicForm};
use devicetwin::{Device, DeviceKey, DeviceStatus, Shadow, Stamp, Topic, TwinEvent};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::effects::{self, carry, persist, publish, status_effect};
use super::{Effect, Entry, MODEL_INVALID, MODEL_MISSING, Twins, events};
use crate::bus::metrics::label;

impl Twins {
    /// The node's device set changed (or is first known).
    pub fn sync_devices(&mut self, set: &crate::bus::DeviceSet, now: i64) -> Vec<Effect> {
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
pub(super) fn uid_of(device: &Device) -> Option<String> {
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
