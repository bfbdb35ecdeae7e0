//! Which devices are bound to a node, and what changed: the data behind
//! `membership/get/result` and `membership/updated`.
//!
//! edgecore keeps one [`Membership`] for its node, feeds it the node's device set whenever
//! the cached Devices change (or one device at a time), and publishes the returned
//! [`MembershipChange`] when it is not empty.

use std::collections::BTreeSet;

use crate::model::DeviceKey;
use crate::payload::{MembershipDevice, MembershipResultMsg, MembershipUpdatedMsg};
use crate::shadow::Stamp;

/// The devices bound to one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    node: String,
    devices: BTreeSet<DeviceKey>,
}

/// Devices added to and removed from a node, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipChange {
    /// Newly bound.
    pub added: Vec<DeviceKey>,
    /// No longer bound.
    pub removed: Vec<DeviceKey>,
}

/// The change from `previous` to `current`.
pub fn diff(previous: &BTreeSet<DeviceKey>, current: &BTreeSet<DeviceKey>) -> MembershipChange {
    MembershipChange {
        added: current.difference(previous).cloned().collect(),
        removed: previous.difference(current).cloned().collect(),
    }
}

impl MembershipChange {
    /// Nothing changed (publish nothing).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// The `membership/updated` payload (devices with id and name only; fill in twins or
    /// states on the returned value if wanted).
    pub fn to_message(&self, at: &Stamp) -> MembershipUpdatedMsg {
        MembershipUpdatedMsg {
            event_id: at.event_id.clone(),
            timestamp: at.timestamp,
            added_devices: self.added.iter().map(MembershipDevice::from_key).collect(),
            removed_devices: self
                .removed
                .iter()
                .map(MembershipDevice::from_key)
                .collect(),
        }
    }
}

impl MembershipDevice {
    /// A device entry with `id` = `ns/name` and `name`.
    pub fn from_key(key: &DeviceKey) -> Self {
        Self {
            id: key.to_string(),
            name: key.name.clone(),
            ..Self::default()
        }
    }
}

impl Membership {
    /// An empty membership for `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            devices: BTreeSet::new(),
        }
    }

    /// The node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The bound devices.
    pub fn devices(&self) -> &BTreeSet<DeviceKey> {
        &self.devices
    }

    /// Whether `key` is bound.
    pub fn contains(&self, key: &DeviceKey) -> bool {
        self.devices.contains(key)
    }

    /// Replaces the set (after a resync) and returns what changed.
    pub fn replace(&mut self, current: impl IntoIterator<Item = DeviceKey>) -> MembershipChange {
        let current: BTreeSet<DeviceKey> = current.into_iter().collect();
        let change = diff(&self.devices, &current);
        self.devices = current;
        change
    }

    /// Binds one device.
    pub fn insert(&mut self, key: DeviceKey) -> MembershipChange {
        if self.devices.insert(key.clone()) {
            MembershipChange {
                added: vec![key],
                removed: Vec::new(),
            }
        } else {
            MembershipChange::default()
        }
    }

    /// Unbinds one device.
    pub fn remove(&mut self, key: &DeviceKey) -> MembershipChange {
        if self.devices.remove(key) {
            MembershipChange {
                added: Vec::new(),
                removed: vec![key.clone()],
            }
        } else {
            MembershipChange::default()
        }
    }

    /// The `membership/get/result` payload answering a request stamped `at`.
    pub fn get_result(&self, at: &Stamp) -> MembershipResultMsg {
        MembershipResultMsg {
            event_id: at.event_id.clone(),
            timestamp: at.timestamp,
            devices: self
                .devices
                .iter()
                .map(MembershipDevice::from_key)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn k(ns: &str, n: &str) -> DeviceKey {
        DeviceKey::new(ns, n)
    }

    #[test]
    fn replace_reports_added_and_removed() {
        let mut m = Membership::new("edge-1");
        let c = m.replace([k("a", "x"), k("a", "y")]);
        assert_eq!(c.added, [k("a", "x"), k("a", "y")]);
        assert!(c.removed.is_empty());
        let c = m.replace([k("a", "y"), k("b", "z")]);
        assert_eq!(c.added, [k("b", "z")]);
        assert_eq!(c.removed, [k("a", "x")]);
        assert!(m.replace([k("b", "z"), k("a", "y")]).is_empty());
        assert_eq!(m.node(), "edge-1");
        assert!(m.contains(&k("b", "z")));
        assert_eq!(m.devices().len(), 2);
    }

    #[test]
    fn insert_and_remove_are_idempotent() {
        let mut m = Membership::new("n");
        assert_eq!(m.insert(k("a", "x")).added, [k("a", "x")]);
        assert!(m.insert(k("a", "x")).is_empty());
        assert_eq!(m.remove(&k("a", "x")).removed, [k("a", "x")]);
        assert!(m.remove(&k("a", "x")).is_empty());
    }

    #[test]
    fn messages_use_ns_slash_name_ids() {
        let mut m = Membership::new("n");
        let change = m.replace([k("factory", "pump")]);
        let msg = change.to_message(&Stamp::new("e1", 7));
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event_id": "e1", "timestamp": 7,
                "added_devices": [{"id": "factory/pump", "name": "pump"}], "removed_devices": []})
        );
        let res = m.get_result(&Stamp::new("g", 8));
        assert_eq!(res.devices[0].id, "factory/pump");
        assert_eq!(
            diff(&BTreeSet::new(), &BTreeSet::new()),
            MembershipChange::default()
        );
    }
}
