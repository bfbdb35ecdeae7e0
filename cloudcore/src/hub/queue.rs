//! The cloud -> edge half of one session, with no IO: a per-node queue keyed
//! by resource key, coalescing, feeding a bounded [`SendWindow`].
//!
//! The queue holds two maps:
//! - `projected`: what the edge will hold once every frame sent so far is
//!   applied (its inventory, then every sent OBJECT / TOMBSTONE). Frames in
//!   flight are retransmitted until acked or the session ends, so within a
//!   session "sent" is as good as "acked" for deciding what still has to go;
//!   a new session starts again from a fresh inventory.
//! - `pending`: the target state of each key not sent yet, in first-enqueue
//!   order. A newer change of a queued key replaces it in place (coalescing):
//!   a newer version replaces the older one, a delete after an unsent upsert
//!   of the same uid cancels into a delete (or into nothing when the edge
//!   never held it), and a change that brings a key back to what the edge
//!   already holds leaves the queue.
//!
//! Changes are applied UID-aware and never move a key backwards: an upsert
//! whose numeric resourceVersion is older than what is queued or held is
//! dropped (a replay after a resync), and a delete only removes the
//! incarnation it names. Frames are built when they leave the queue, so a
//! delete names the uid the edge really holds.
//!
//! Start at [`Queue::offer`], [`Queue::pop`], [`Queue::on_ack`],
//! [`Queue::due`]; [`Queue::start`] + [`Queue::resync`] + [`Queue::push_synced`]
//! do the inventory diff, [`Queue::resync`] alone recovers from a lagging
//! change feed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use proto::{
    EncodeError, Frame, InventoryEntry, Kind, Limits, ResourceKey, SendWindow, Timestamp,
    WindowConfig, WindowError,
};

/// A change of what one node should hold (the hub's copy of the cache's
/// `NodeChange`, so this module needs nothing but `proto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The object at `key` should be this one.
    Upsert {
        /// Its key.
        key: ResourceKey,
        /// `metadata.uid`.
        uid: String,
        /// `metadata.resourceVersion`.
        rv: String,
        /// The object JSON as the API returned it.
        json: Bytes,
    },
    /// The incarnation `uid` of `key` is gone (empty uid: whatever is there).
    Delete {
        /// Its key.
        key: ResourceKey,
        /// The uid that was deleted.
        uid: String,
        /// Its last resourceVersion.
        rv: String,
    },
    /// `key` is referenced but does not exist.
    Tombstone {
        /// Its key.
        key: ResourceKey,
    },
}

impl Change {
    /// The key the change is about.
    pub fn key(&self) -> &ResourceKey {
        match self {
            Change::Upsert { key, .. } | Change::Delete { key, .. } | Change::Tombstone { key } => {
                key
            }
        }
    }
}

/// What the edge holds at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// An object incarnation.
    Object {
        /// `metadata.uid`.
        uid: String,
        /// `metadata.resourceVersion`.
        rv: String,
    },
    /// A tombstone ("known not to exist"). Inventory entries with an empty
    /// uid count as tombstones: the protocol cannot delete them by uid.
    Tombstone,
}

/// The target state of a queued key.
#[derive(Debug, Clone)]
enum Target {
    Object {
        uid: String,
        rv: String,
        json: Bytes,
    },
    Absent {
        rv: String,
    },
    Tombstone,
}

/// A position in the send order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Key(ResourceKey),
    Synced,
}

/// A frame in the window: kept encoded for retransmission.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Frame kind (for metrics).
    pub kind: Kind,
    /// The encoded frame.
    pub wire: Bytes,
}

/// What [`Queue::pop`] produced.
#[derive(Debug)]
pub enum Popped {
    /// Send these bytes (already recorded in the window).
    Frame(Sent),
    /// The object could not be encoded for the edge (too large): it was
    /// dropped and the edge keeps what it had.
    Skipped {
        /// The key.
        key: ResourceKey,
        /// Why.
        error: EncodeError,
    },
}

/// What an ACK released.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acked {
    /// Frames released.
    pub released: usize,
    /// Whether the SYNCED frame was among them.
    pub synced: bool,
}

/// The cloud -> edge queue of one session.
#[derive(Debug)]
pub struct Queue<I = Instant> {
    limits: Limits,
    window: SendWindow<Sent, I>,
    projected: HashMap<ResourceKey, Held>,
    pending: HashMap<ResourceKey, Target>,
    order: VecDeque<Slot>,
}

impl<I: Timestamp> Queue<I> {
    /// An empty queue; frames are encoded within `limits` (the edge's).
    pub fn new(window: WindowConfig, limits: Limits) -> Self {
        Queue {
            limits,
            window: SendWindow::new(window),
            projected: HashMap::new(),
            pending: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Takes the edge's inventory as what it holds. Entries with invalid
    /// keys are skipped (they are returned, for logging).
    pub fn start(&mut self, inventory: impl IntoIterator<Item = InventoryEntry>) -> Vec<String> {
        let mut invalid = Vec::new();
        for entry in inventory {
            let Ok(key) = ResourceKey::parse(&entry.key) else {
                invalid.push(entry.key);
                continue;
            };
            let held = if entry.uid.is_empty() {
                Held::Tombstone
            } else {
                Held::Object {
                    uid: entry.uid,
                    rv: entry.resource_version,
                }
            };
            self.projected.insert(key, held);
        }
        invalid
    }

    /// Brings the queue to exactly `desired` (the full state the node
    /// should hold): keys the edge holds or would receive but that are not
    /// desired are deleted, desired ones offered. Used after the inventory
    /// and whenever the change feed lagged.
    pub fn resync(&mut self, desired: impl IntoIterator<Item = Change>) {
        self.resync_keeping(desired, &HashSet::new());
    }

    /// [`Queue::resync`], except that keys in `keep` are left as they are:
    /// objects the cache knows are wanted but has not resolved yet (a
    /// referenced ConfigMap still being fetched). Deleting them would make
    /// the edge lose an object it needs until the fetch completes.
    pub fn resync_keeping(
        &mut self,
        desired: impl IntoIterator<Item = Change>,
        keep: &HashSet<ResourceKey>,
    ) {
        let desired: Vec<Change> = desired.into_iter().collect();
        let wanted: HashSet<&ResourceKey> = desired
            .iter()
            .filter(|c| !matches!(c, Change::Delete { .. }))
            .map(Change::key)
            .collect();
        let stale: Vec<ResourceKey> = self
            .projected
            .keys()
            .chain(self.pending.keys())
            .filter(|k| !wanted.contains(k) && !keep.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            self.set_target(key, Target::Absent { rv: String::new() });
        }
        for change in desired {
            self.offer(change);
        }
    }

    /// Queues the SYNCED marker behind everything queued so far.
    pub fn push_synced(&mut self) {
        self.order.push_back(Slot::Synced);
    }

    /// Applies one change (coalescing; see the module docs). Returns false
    /// when it was dropped as stale or changed nothing.
    pub fn offer(&mut self, change: Change) -> bool {
        match change {
            Change::Upsert { key, uid, rv, json } => {
                if let Some((cur_uid, cur_rv)) = self.latest_object(&key)
                    && (cur_uid == uid && cur_rv == rv || rv_older(&rv, cur_rv))
                {
                    return false;
                }
                self.set_target(key, Target::Object { uid, rv, json })
            }
            Change::Delete { key, uid, rv } => match self.latest_object(&key) {
                Some((cur_uid, _)) if uid.is_empty() || cur_uid == uid => {
                    self.set_target(key, Target::Absent { rv })
                }
                _ => false,
            },
            Change::Tombstone { key } => {
                let latest_is_tombstone = match self.pending.get(&key) {
                    Some(t) => matches!(t, Target::Tombstone),
                    None => self.projected.get(&key) == Some(&Held::Tombstone),
                };
                !latest_is_tombstone && self.set_target(key, Target::Tombstone)
            }
        }
    }

    /// The next frame to send, if the window has room and anything is queued.
    pub fn pop(&mut self, now: I) -> Option<Popped> {
        while !self.window.is_full() {
            let id = self.window.next_id()?;
            let (key, frame) = match self.order.pop_front()? {
                Slot::Synced => (None, Frame::synced(id)),
                Slot::Key(key) => {
                    let Some(target) = self.pending.remove(&key) else {
                        continue; // stale slot: the key left the queue
                    };
                    let before = self.projected.get(&key).cloned();
                    let Some(frame) = self.frame_for(id, &key, target) else {
                        continue;
                    };
                    (Some((key, before)), frame)
                }
            };
            let kind = frame.checked_kind().unwrap_or(Kind::Unspecified);
            let wire = match proto::encode_checked(&frame, self.limits) {
                Ok(w) => Bytes::from(w),
                Err(error) => {
                    let Some((key, before)) = key else { continue };
                    // Not sent: the edge keeps what it had.
                    match before {
                        Some(held) => self.projected.insert(key.clone(), held),
                        None => self.projected.remove(&key),
                    };
                    return Some(Popped::Skipped { key, error });
                }
            };
            let sent = Sent { kind, wire };
            // Cannot fail: the window has room and `id` is its next id.
            return self
                .window
                .push(sent.clone(), now)
                .ok()
                .map(|_| Popped::Frame(sent));
        }
        None
    }

    /// Whether [`Queue::pop`] may return something now.
    pub fn can_send(&self) -> bool {
        !self.window.is_full() && !self.order.is_empty()
    }

    /// A cumulative ACK from the edge.
    pub fn on_ack(&mut self, up_to: u64) -> Result<Acked, WindowError> {
        let released = self.window.on_ack(up_to)?;
        Ok(Acked {
            released: released.len(),
            synced: released.iter().any(|(_, s)| s.kind == Kind::Synced),
        })
    }

    /// Frames due for retransmission at `now` (their back-off restarts).
    pub fn due(&mut self, now: I) -> Vec<Sent> {
        self.window
            .due(now)
            .into_iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// The earliest retransmission deadline.
    pub fn next_deadline(&self) -> Option<I> {
        self.window.next_deadline()
    }

    /// Keys queued plus frames in flight.
    pub fn depth(&self) -> usize {
        self.pending.len() + self.window.len()
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.window.len()
    }

    /// What the edge will hold at `key` once everything sent is applied.
    pub fn projected(&self, key: &ResourceKey) -> Option<&Held> {
        self.projected.get(key)
    }

    /// The newest object (uid, rv) known for `key`: queued, else held.
    fn latest_object(&self, key: &ResourceKey) -> Option<(&str, &str)> {
        match self.pending.get(key) {
            Some(Target::Object { uid, rv, .. }) => Some((uid, rv)),
            Some(Target::Absent { .. } | Target::Tombstone) => None,
            None => match self.projected.get(key) {
                Some(Held::Object { uid, rv }) => Some((uid, rv)),
                _ => None,
            },
        }
    }

    /// Makes `target` the queued state of `key`, or drops the queued entry
    /// when the edge already holds it. Returns whether anything is queued.
    fn set_target(&mut self, key: ResourceKey, target: Target) -> bool {
        let held = self.projected.get(&key);
        let already = match (&target, held) {
            (Target::Object { uid, rv, .. }, Some(Held::Object { uid: u, rv: r })) => {
                uid == u && rv == r
            }
            // Nothing to delete; a tombstone cannot be deleted by uid.
            (Target::Absent { .. }, None | Some(Held::Tombstone)) => true,
            (Target::Tombstone, Some(Held::Tombstone)) => true,
            _ => false,
        };
        if already {
            self.pending.remove(&key);
            self.compact();
            return false;
        }
        if self.pending.insert(key.clone(), target).is_none() {
            self.order.push_back(Slot::Key(key));
        }
        true
    }

    /// Builds frame `id` for `target` and records its effect in
    /// `projected`; `None` when there is nothing to send after all.
    fn frame_for(&mut self, id: u64, key: &ResourceKey, target: Target) -> Option<Frame> {
        match target {
            Target::Object { uid, rv, json } => {
                let frame = Frame::upsert(id, key, &uid, &rv, json.to_vec());
                self.projected.insert(key.clone(), Held::Object { uid, rv });
                Some(frame)
            }
            Target::Absent { rv } => match self.projected.get(key) {
                Some(Held::Object { uid, rv: held_rv }) => {
                    let rv = if rv.is_empty() { held_rv } else { &rv };
                    let frame = Frame::delete(id, key, uid, rv);
                    self.projected.remove(key);
                    Some(frame)
                }
                Some(Held::Tombstone) | None => None,
            },
            Target::Tombstone => {
                self.projected.insert(key.clone(), Held::Tombstone);
                Some(Frame::tombstone(id, key))
            }
        }
    }

    /// Drops order slots whose key left the queue once they dominate.
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.pending.len() + 64 {
            return;
        }
        let mut seen = HashSet::new();
        let pending = &self.pending;
        self.order.retain(|slot| match slot {
            Slot::Synced => true,
            Slot::Key(k) => pending.contains_key(k) && seen.insert(k.clone()),
        });
    }
}

/// True when both resourceVersions are numbers and `new` is below `current`.
/// Kubernetes calls them opaque, but etcd and kedge's API server issue
/// increasing integers; anything else is never considered older.
fn rv_older(new: &str, current: &str) -> bool {
    match (new.parse::<u64>(), current.parse::<u64>()) {
        (Ok(n), Ok(c)) => n < c,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
