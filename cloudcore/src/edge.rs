//! The cloud's watch caches for edges: what each edge node should hold right now, and the
//! per-node changes as the cluster moves.
//!
//! One set of kube-runtime watchers per replica (Nodes labelled
//! `node-role.kubernetes.io/edge`; Pods with `spec.nodeName` set; ConfigMaps; Secrets;
//! `devices.kubeedge.io/v1beta1` Devices and DeviceModels) feeds one pure state machine
//! (`state`), filtering at ingest: a pod or device is kept only while bound to an edge
//! node, a ConfigMap/Secret/DeviceModel only while something kept references it — memory
//! follows the edge nodes, not the cluster. A referenced object that does not exist is a
//! [`NodeChange::Tombstone`], so "missing" and "not synced yet" differ.
//!
//! Readers ([`EdgeCache::desired`], [`EdgeCache::node_may_read`], ...) take a short lock;
//! the single writer path ([`EdgeCache::commit`]) applies an event and hands the resulting
//! changes to the node's feeds (`feed`) under the same lock, so a session that calls
//! `subscribe_node()` and then `desired()` misses nothing. Relists are buffered and applied as a diff.
//!
//! Objects are stored as the JSON k8s-openapi serialises (kind and apiVersion included),
//! without `metadata.managedFields` (large, and of no use at the edge).
//!
//! Where to start: [`EdgeCache::start`]; `state` for the rules, `refs` for what a pod
//! references, `watch` for the watchers and GETs.

mod feed;
mod refs;
mod state;
mod watch;

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use proto::ResourceKey;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use feed::NodeFeed;
pub use refs::{device_refs, pod_refs};
pub use state::Kind;

/// Capacity of the broadcast of every node's changes ([`EdgeCache::subscribe`]). A
/// subscriber that falls further behind gets `RecvError::Lagged` and must resynchronise its
/// nodes from [`EdgeCache::desired`].
pub const CHANGES_CAPACITY: usize = 16 * 1024;

fn kind_bit(kind: Kind) -> u8 {
    1 << (kind as u8)
}

const ALL_KINDS: u8 = (1 << Kind::ALL.len()) - 1;

/// One object an edge node should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredObject {
    /// `<ns>/<kind>/<name>`.
    pub key: ResourceKey,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// The object's JSON.
    pub json: Bytes,
}

/// A change to what one node should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChange {
    /// Hold this object (new or newer version).
    Upsert(DesiredObject),
    /// Remove this incarnation (`uid`) of the key. An empty `uid` removes a tombstone the
    /// node held for the key (the reference is gone).
    Delete {
        /// The key.
        key: ResourceKey,
        /// The incarnation to remove; empty for "forget the tombstone".
        uid: String,
        /// Last resourceVersion seen (may be empty).
        resource_version: String,
    },
    /// The node references this key but the object does not exist.
    Tombstone {
        /// The key.
        key: ResourceKey,
    },
}

/// Pending rescans after new edge nodes appeared.
#[derive(Default)]
struct Rescan {
    pods: Notify,
    pod_nodes: Mutex<Vec<String>>,
    devices: Notify,
}

/// The shared cache (one per replica).
pub struct EdgeCache {
    state: Mutex<state::State>,
    /// Every node's changes, for whoever watches them all (tests, diagnostics): created by
    /// the first such subscriber (its 16 Ki slots are 3.3 MiB, allocated up front) and sent
    /// to only while someone listens.
    changes: std::sync::OnceLock<broadcast::Sender<(String, NodeChange)>>,
    /// Each node's changes, for its sessions. Locked inside `state`'s lock on the write path.
    feeds: Mutex<feed::Feeds>,
    /// Bit `1 << kind as u8` set once that kind's first list completed.
    synced: tokio::sync::watch::Sender<u8>,
    rescan: Rescan,
    client: kube::Client,
    fetch_permits: Arc<tokio::sync::Semaphore>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for EdgeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (nodes, held, refs) = self.lock().sizes();
        f.debug_struct("EdgeCache")
            .field("nodes", &nodes)
            .field("held", &held)
            .field("referenced", &refs)
            .field("synced", &self.is_synced())
            .finish_non_exhaustive()
    }
}

impl EdgeCache {
    /// Starts the watchers; returns at once (see [`EdgeCache::wait_synced`]). Everything
    /// stops when `shutdown` fires.
    pub async fn start(client: kube::Client, shutdown: CancellationToken) -> Arc<Self> {
        let cache = Arc::new(Self {
            state: Mutex::new(state::State::default()),
            changes: std::sync::OnceLock::new(),
            feeds: Mutex::new(feed::Feeds::default()),
            synced: tokio::sync::watch::Sender::new(0),
            rescan: Rescan::default(),
            client,
            fetch_permits: Arc::new(tokio::sync::Semaphore::new(watch::MAX_CONCURRENT_FETCHES)),
            shutdown,
        });
        watch::spawn_all(&cache);
        cache
    }

    /// Whether every watcher finished its first list. Until then `desired` may be
    /// incomplete and must not be used to delete anything at an edge.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow() == ALL_KINDS
    }

    /// Waits until [`EdgeCache::is_synced`].
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s == ALL_KINDS).await;
    }

    /// Waits until `kind` finished its first list; `false` on shutdown.
    async fn wait_kind(&self, kind: Kind) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            r = rx.wait_for(|s| s & kind_bit(kind) != 0) => r.is_ok(),
        }
    }

    /// What `node` should hold now: Upserts and Tombstones (its Node, referenced objects,
    /// pods, devices). Empty for an unknown node.
    pub fn desired(&self, node: &str) -> Vec<NodeChange> {
        self.lock().desired(node)
    }

    /// [`EdgeCache::desired`] together with the node's references that are not
    /// resolved yet (read under one lock): a diff must keep those at the edge.
    pub fn desired_with_pending(&self, node: &str) -> (Vec<NodeChange>, Vec<ResourceKey>) {
        let st = self.lock();
        (st.desired(node), st.pending_refs(node))
    }

    /// The node's references the cache has not resolved yet (being fetched).
    pub fn pending_refs(&self, node: &str) -> Vec<ResourceKey> {
        self.lock().pending_refs(node)
    }

    /// Every node's changes from now on. Subscribe before calling `desired` to miss nothing.
    /// A session wants [`EdgeCache::subscribe_node`]: this one hands it every other node's
    /// changes too.
    pub fn subscribe(&self) -> broadcast::Receiver<(String, NodeChange)> {
        let _st = self.lock();
        self.changes
            .get_or_init(|| broadcast::channel(CHANGES_CAPACITY).0)
            .subscribe()
    }

    /// `node`'s changes from now on (see [`NodeFeed`]). Subscribe before calling `desired`
    /// to miss nothing.
    pub fn subscribe_node(&self, node: &str) -> NodeFeed {
        let _st = self.lock();
        self.feeds().subscribe(node, feed::NODE_FEED_CAPACITY)
    }

    fn feeds(&self) -> MutexGuard<'_, feed::Feeds> {
        // Sending cannot leave the map half-updated; poisoning is ignored.
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `node` may read `key`: its own Node and Lease, its pods and devices, and the
    /// ConfigMaps/Secrets/DeviceModels they reference.
    pub fn node_may_read(&self, node: &str, key: &ResourceKey) -> bool {
        self.lock().may_read(node, key)
    }

    /// The edge node a pod is bound to (only pods on edge nodes are known).
    pub fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
        let key = ResourceKey::namespaced(namespace, "pod", name).ok()?;
        self.lock().holder(&key).map(str::to_owned)
    }

    /// The edge node a Device is bound to.
    pub fn device_node(&self, namespace: &str, name: &str) -> Option<String> {
        let key = ResourceKey::namespaced(namespace, "device", name).ok()?;
        self.lock().holder(&key).map(str::to_owned)
    }

    /// Whether `node` is a known edge node (its Node exists and carries the edge label).
    pub fn node_exists(&self, node: &str) -> bool {
        self.lock().node_exists(node)
    }

    /// Whether the cached Node of `node` has `Ready=True` (`None`: no such edge node, or
    /// its JSON unreadable). As fresh as the Node watch.
    pub fn node_ready(&self, node: &str) -> Option<bool> {
        let json = self.lock().node_json(node)?;
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_slice(&json).ok()?;
        Some(crate::lifecycle::ready_status(&node) == Some("True"))
    }

    /// (edge nodes, pods + devices, referenced objects) held — for metrics.
    pub fn sizes(&self) -> (usize, usize, usize) {
        self.lock().sizes()
    }

    fn lock(&self) -> MutexGuard<'_, state::State> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // readers could not cope with, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The single write path: applies `f`, hands its changes to the nodes' feeds (under the
    /// lock, so order matches `desired`), updates the synced flag and starts requested GETs and
    /// rescans.
    fn commit(self: &Arc<Self>, f: impl FnOnce(&mut state::State) -> Vec<state::Change>) {
        let (fetches, new_nodes, synced) = {
            let mut st = self.lock();
            let changes = f(&mut st);
            let mut feeds = self.feeds();
            let everyone = self.changes.get().filter(|tx| tx.receiver_count() > 0);
            for (node, change) in changes {
                feeds.send(&node, &change);
                if let Some(tx) = everyone {
                    let _ = tx.send((node, change));
                }
            }
            drop(feeds);
            let synced = Kind::ALL
                .iter()
                .filter(|k| st.is_synced(**k))
                .fold(0u8, |bits, k| bits | kind_bit(*k));
            (st.take_fetches(), st.take_new_nodes(), synced)
        };
        self.synced.send_if_modified(|s| {
            let changed = *s != synced;
            *s = synced;
            changed
        });
        for (key, touched) in fetches {
            watch::spawn_fetch(self.clone(), key, touched);
        }
        if !new_nodes.is_empty() {
            if let Ok(mut pending) = self.rescan.pod_nodes.lock() {
                pending.extend(new_nodes);
            }
            self.rescan.pods.notify_one();
            self.rescan.devices.notify_one();
        }
    }
}
