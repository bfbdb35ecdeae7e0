//! The link half of a session: HELLO, inventory, the wait for the caches,
//! the inventory diff and the cache's change feed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::{Frame, Hello, HelloAck, Inventory, Limits};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::super::metrics::ReasonLabel;
use super::super::phase::{CloseReason, Phase};
use super::super::queue::{Change, Queue};
use super::{NODE_WAIT, REFS_WAIT, Session, window_config};
use crate::edge::NodeChange;
use crate::lifecycle::{PodCidr, node_connected_from};

impl Session {
    pub(super) fn on_hello(&mut self, frame: &Frame) -> Option<CloseReason> {
        let hello: Hello = frame.control().unwrap_or_default();
        if hello.node_name != self.node {
            self.shared.metrics.refuse("node_mismatch");
            let msg = format!(
                "HELLO names node {:?} but the certificate is for {:?}",
                hello.node_name, self.node
            );
            self.error(403, "node_mismatch", msg, 0);
            return Some(CloseReason::Protocol("node_mismatch"));
        }
        let version = match proto::negotiate_with_peer(hello.min_version, hello.max_version) {
            Ok(v) => v,
            Err(e) => {
                self.shared.metrics.refuse(e.reason());
                self.error(426, e.reason(), e.to_string(), 0);
                return Some(CloseReason::Protocol(e.reason()));
            }
        };
        let edge_max = match hello.max_frame_bytes {
            0 => proto::DEFAULT_MAX_FRAME,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        self.edge_limits = Limits::with_max_frame(edge_max);
        self.queue = Queue::new(window_config(), self.edge_limits);
        let cfg = &self.shared.cfg;
        let ack = HelloAck {
            version,
            session_id: self.session_id.clone(),
            ping_interval_secs: u32::try_from(cfg.ping.as_secs()).unwrap_or(u32::MAX),
            idle_timeout_secs: u32::try_from(cfg.idle.as_secs()).unwrap_or(u32::MAX),
            max_frame_bytes: u32::try_from(cfg.max_frame_bytes).unwrap_or(u32::MAX),
        };
        self.push(&Frame::hello_ack(&ack));
        self.set_phase(Phase::Syncing);
        tracing::info!(version, agent = %hello.info.as_ref().map(|i| i.agent_version.as_str()).unwrap_or(""), "hello");
        self.spawn_node_connected(hello);
        None
    }

    /// Creates / refreshes the Node and Lease, retrying with back-off until
    /// it works or the session ends.
    fn spawn_node_connected(&self, hello: Hello) {
        let shared = self.shared.clone();
        let node = self.node.clone();
        let ended = self.ended.clone();
        let registered = self.registered.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                let cidr = PodCidr::Allocator(&shared.pod_cidrs);
                tokio::select! {
                    _ = ended.cancelled() => return,
                    r = async {
                        let _permit = shared.api_permit().await;
                        node_connected_from(&shared.client, &node, &hello, cidr).await
                    } => match r {
                        Ok(()) => {
                            registered.store(true, Ordering::Release);
                            return;
                        }
                        Err(e) => tracing::warn!(node = %node, error = %e, retry_in = ?delay, "registering the node failed"),
                    },
                }
                tokio::select! {
                    _ = ended.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        });
    }

    pub(super) fn on_inventory(&mut self, frame: &Frame) -> Option<CloseReason> {
        let chunk: Inventory = frame.control().unwrap_or_default();
        match self.inventory.push(chunk) {
            Ok(Some(entries)) => {
                tracing::info!(objects = entries.len(), "inventory complete");
                self.held = Some(entries);
                self.try_sync();
                None
            }
            Ok(None) => None,
            Err(e) => {
                self.shared.metrics.refuse(e.reason());
                self.error(400, e.reason(), e.to_string(), 0);
                Some(CloseReason::Protocol(e.reason()))
            }
        }
    }

    /// Diffs the inventory against the cache once both are ready: the
    /// caches finished their first list and know the node. Without its Node
    /// the cache says the node should hold nothing, and the diff would wipe
    /// the edge; so the session waits a little (a Node created a moment ago)
    /// and is refused as `unknown_node` otherwise.
    pub(super) fn try_sync(&mut self) {
        if self.phase != Phase::Syncing || self.held.is_none() {
            return;
        }
        let cache = self.shared.cache.clone();
        let refs_pending = !self.refs_waited && !cache.pending_refs(&self.node).is_empty();
        if !cache.is_synced() || !cache.node_exists(&self.node) || refs_pending {
            if self.sync_wait.is_none() {
                tracing::info!(
                    synced = cache.is_synced(),
                    refs_pending,
                    "waiting for the caches"
                );
                let node = self.node.clone();
                self.sync_wait = Some(Box::pin(async move {
                    cache.wait_synced().await;
                    let deadline = Instant::now() + NODE_WAIT;
                    while !cache.node_exists(&node) {
                        if Instant::now() >= deadline {
                            return false;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    // Referenced objects still being fetched would reach
                    // the edge only after SYNCED; give them a moment so
                    // SYNCED means "you hold what your pods need".
                    let deadline = Instant::now() + REFS_WAIT;
                    while !cache.pending_refs(&node).is_empty() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    true
                }));
            }
            return;
        }
        // Subscribe before reading the snapshot: nothing falls in between
        // (duplicates are dropped by the queue's version checks).
        let feed = cache.subscribe_node(&self.node);
        let (desired, pending) = cache.desired_with_pending(&self.node);
        let held = self.held.take().unwrap_or_default();
        let invalid = self.queue.start(held);
        if !invalid.is_empty() {
            tracing::warn!(count = invalid.len(), first = %invalid[0], "inventory keys ignored");
        }
        self.queue.resync_keeping(
            desired.into_iter().map(to_change),
            &pending.into_iter().collect(),
        );
        self.queue.push_synced();
        self.feed = Some(feed);
        self.shared
            .metrics
            .resyncs
            .get_or_create(&ReasonLabel {
                reason: "inventory".into(),
            })
            .inc();
        tracing::info!(queued = self.queue.depth(), "inventory diffed");
        self.set_phase(Phase::Live);
    }

    pub(super) fn on_change(
        &mut self,
        change: Result<NodeChange, broadcast::error::RecvError>,
    ) -> Option<CloseReason> {
        match change {
            Ok(change) => {
                let change = to_change(change);
                if let Change::Delete { key, .. } = &change
                    && key.kind == "node"
                    && key.is_cluster_scoped()
                    && key.name == self.node
                {
                    return Some(CloseReason::NodeDeleted);
                }
                self.queue.offer(change);
                None
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "change feed lagged; resyncing from the cache");
                if self.feed.is_some() {
                    self.feed = Some(self.shared.cache.subscribe_node(&self.node));
                }
                let (desired, pending) = self.shared.cache.desired_with_pending(&self.node);
                self.queue.resync_keeping(
                    desired.into_iter().map(to_change),
                    &pending.into_iter().collect(),
                );
                self.shared
                    .metrics
                    .resyncs
                    .get_or_create(&ReasonLabel {
                        reason: "lagged".into(),
                    })
                    .inc();
                None
            }
            Err(broadcast::error::RecvError::Closed) => Some(CloseReason::Shutdown),
        }
    }
}

fn to_change(change: NodeChange) -> Change {
    match change {
        NodeChange::Upsert(d) => Change::Upsert {
            key: d.key,
            uid: d.uid,
            rv: d.resource_version,
            json: d.json,
        },
        NodeChange::Delete {
            key,
            uid,
            resource_version,
        } => Change::Delete {
            key,
            uid,
            rv: resource_version,
        },
        NodeChange::Tombstone { key } => Change::Tombstone { key },
    }
}
