//! Turning shadow actions into bus [`Effect`]s, and the small helpers around it.

use std::collections::BTreeSet;

use devicetwin::{DeviceKey, DeviceTopic, Shadow, Topic, TwinAction};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::{Effect, Entry};
use crate::bus::ShadowStore;

/// Saves the entry's shadow with the uid of the Device it belongs to (an extra field that
/// [`devicetwin::Shadow`]'s own reader ignores), so a restart can tell it from a later Device of the
/// same name.
pub(super) fn save(store: &dyn ShadowStore, key: &DeviceKey, entry: &Entry) {
    let saved = Saved {
        shadow: &entry.shadow,
        device_uid: super::sync::uid_of(&entry.device),
    };
    match serde_json::to_vec(&saved) {
        Ok(bytes) => store.save(&key.to_string(), &bytes),
        Err(e) => warn!(device = %key, error = %e, "serialising a shadow failed"),
    }
}

/// A saved shadow: the shadow's own fields and `deviceUid`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Saved<'a> {
    #[serde(flatten)]
    shadow: &'a Shadow,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_uid: Option<String>,
}

/// The Device uid a saved shadow belongs to (`None` for shadows saved without one).
pub(super) fn saved_uid(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SavedUid {
        device_uid: Option<String>,
    }
    serde_json::from_slice::<SavedUid>(bytes).ok()?.device_uid
}

pub(super) fn publish<T: Serialize>(prefix: &str, t: &Topic, msg: &T) -> Option<Effect> {
    let topic = match t.build(prefix) {
        Ok(t) => t,
        Err(e) => {
            debug!(error = %e, "no topic for a publish");
            return None;
        }
    };
    match serde_json::to_vec(msg) {
        Ok(payload) => Some(Effect::Publish { topic, payload }),
        Err(e) => {
            warn!(%topic, error = %e, "serialising a payload failed");
            None
        }
    }
}

/// Saves the entry's shadow now, unless a status of the device is waiting to leave: then
/// [`super::Twins::status`] saves it when the status is built, which still comes before
/// the outbox commit (the durability point) and writes the shadow once per status instead
/// of once per report.
pub(super) fn persist(store: &dyn ShadowStore, key: &DeviceKey, entry: &mut Entry) {
    if entry.status_pending {
        entry.unsaved = true;
    } else {
        save(store, key, entry);
        entry.unsaved = false;
    }
}

/// Notes that the device's status changed; the status itself is built when it leaves.
pub(super) fn status_effect(key: &DeviceKey, entry: &mut Entry) -> Effect {
    entry.status_pending = true;
    Effect::Status {
        device: key.clone(),
    }
}

/// Turns shadow actions into effects, updating the entry's status.
pub(super) fn carry(
    prefix: &str,
    key: &DeviceKey,
    entry: &mut Entry,
    actions: Vec<TwinAction>,
    publish_results: bool,
) -> Vec<Effect> {
    let mut fx = Vec::new();
    let mut status_changed = false;
    let form = entry.form;
    let dev_topic = |kind| Topic::Device {
        device: key.clone(),
        form,
        kind,
    };
    let mut driven = BTreeSet::new();
    for action in actions {
        match action {
            TwinAction::PublishResult { topic: kind, msg } => {
                if publish_results {
                    fx.extend(publish(prefix, &dev_topic(kind), &msg));
                }
            }
            TwinAction::PublishDelta(msg) => {
                fx.extend(publish(
                    prefix,
                    &dev_topic(DeviceTopic::TwinUpdateDelta),
                    &msg,
                ));
            }
            TwinAction::PublishDocument(msg) => {
                fx.extend(publish(
                    prefix,
                    &dev_topic(DeviceTopic::TwinUpdateDocument),
                    &msg,
                ));
            }
            TwinAction::DriveDevice {
                property, value, ..
            } => {
                if driven.insert(property.clone()) {
                    fx.push(Effect::Drive {
                        device: key.clone(),
                        property,
                        value,
                    });
                }
            }
            TwinAction::ReportUp(report) => {
                // Folded into the status only when it leaves: reports replace each other.
                entry.report = Some(report);
                status_changed = true;
            }
            TwinAction::StateUp(state) => {
                entry.status.apply_state(&state);
                status_changed = true;
            }
            TwinAction::DesiredUp(patch) => fx.push(Effect::Desired {
                device: key.clone(),
                patch,
            }),
        }
    }
    if status_changed {
        fx.push(status_effect(key, entry));
    }
    fx
}
