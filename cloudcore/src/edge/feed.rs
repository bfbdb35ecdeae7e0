//! Per-node change feeds: a change is handed only to the sessions of the node it is for.
//!
//! One broadcast of every change to every session made each session clone and drop every
//! other node's changes: with 10,000 edges renewing their Leases and reporting status, the
//! hub spent its CPU copying changes nobody wanted (O(nodes²); docs/benchmarks.md, "Many
//! edges, session 10"). A node has one session, two while one replaces the other.
//!
//! A feed is a bounded channel. When it is full the change is dropped and the feed reports
//! `Lagged` before anything else; the session then takes a new feed and resyncs from
//! [`super::EdgeCache::desired`], as it did when the broadcast lagged. Channels allocate as
//! they fill, so an idle feed costs a few words.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::NodeChange;

/// Changes a node's feed holds before it lags.
pub(super) const NODE_FEED_CAPACITY: usize = 4 * 1024;

/// The sending side of one feed (kept by the cache).
#[derive(Debug)]
struct FeedTx {
    tx: mpsc::Sender<NodeChange>,
    lagged: Arc<AtomicU64>,
}

/// The feeds of all subscribed nodes.
#[derive(Debug, Default)]
pub(super) struct Feeds {
    by_node: HashMap<String, Vec<FeedTx>>,
}

impl Feeds {
    /// A new feed for `node`.
    pub(super) fn subscribe(&mut self, node: &str, capacity: usize) -> NodeFeed {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lagged = Arc::new(AtomicU64::new(0));
        let subs = self.by_node.entry(node.to_owned()).or_default();
        subs.retain(|s| !s.tx.is_closed());
        subs.push(FeedTx {
            tx,
            lagged: lagged.clone(),
        });
        NodeFeed { rx, lagged }
    }

    /// Hands `change` to `node`'s feeds; forgets feeds whose receiver is gone.
    pub(super) fn send(&mut self, node: &str, change: &NodeChange) {
        let Some(subs) = self.by_node.get_mut(node) else {
            return;
        };
        subs.retain(|s| match s.tx.try_send(change.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.lagged.fetch_add(1, Ordering::AcqRel);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if subs.is_empty() {
            self.by_node.remove(node);
        }
    }

    /// Nodes with at least one feed (receivers dropped since the last send still count).
    #[cfg(test)]
    fn nodes(&self) -> usize {
        self.by_node.len()
    }
}

/// The receiving side: the changes of one node, from the moment it was taken.
#[derive(Debug)]
pub struct NodeFeed {
    rx: mpsc::Receiver<NodeChange>,
    lagged: Arc<AtomicU64>,
}

impl NodeFeed {
    /// The next change of the feed's node. `Lagged(n)` once `n` changes were dropped
    /// because the feed was full (take a new feed and resync); `Closed` when the cache is
    /// gone. Cancel-safe.
    pub async fn recv(&mut self) -> Result<NodeChange, RecvError> {
        let missed = self.lagged.swap(0, Ordering::AcqRel);
        if missed > 0 {
            return Err(RecvError::Lagged(missed));
        }
        self.rx.recv().await.ok_or(RecvError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tombstone(name: &str) -> NodeChange {
        NodeChange::Tombstone {
            key: proto::ResourceKey::parse(&format!("default/configmap/{name}")).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_feed_gets_only_its_nodes_changes_in_order() {
        let mut feeds = Feeds::default();
        let mut a = feeds.subscribe("a", 8);
        let mut b = feeds.subscribe("b", 8);
        feeds.send("a", &tombstone("one"));
        feeds.send("b", &tombstone("two"));
        feeds.send("a", &tombstone("three"));
        feeds.send("nobody", &tombstone("four"));
        assert_eq!(a.recv().await.unwrap(), tombstone("one"));
        assert_eq!(a.recv().await.unwrap(), tombstone("three"));
        assert_eq!(b.recv().await.unwrap(), tombstone("two"));
        assert!(a.rx.try_recv().is_err() && b.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn two_sessions_of_one_node_both_get_its_changes() {
        let mut feeds = Feeds::default();
        let mut old = feeds.subscribe("a", 8);
        let mut new = feeds.subscribe("a", 8);
        feeds.send("a", &tombstone("one"));
        assert_eq!(old.recv().await.unwrap(), tombstone("one"));
        assert_eq!(new.recv().await.unwrap(), tombstone("one"));
    }

    #[tokio::test]
    async fn a_full_feed_reports_lagged_before_anything_else() {
        let mut feeds = Feeds::default();
        let mut a = feeds.subscribe("a", 2);
        for n in ["1", "2", "3", "4"] {
            feeds.send("a", &tombstone(n));
        }
        assert!(matches!(a.recv().await, Err(RecvError::Lagged(2))));
        // After the report the feed goes on (the session takes a new one and resyncs).
        assert_eq!(a.recv().await.unwrap(), tombstone("1"));
    }

    #[tokio::test]
    async fn dropped_feeds_are_forgotten_on_the_next_change() {
        let mut feeds = Feeds::default();
        let a = feeds.subscribe("a", 8);
        let _b = feeds.subscribe("b", 8);
        assert_eq!(feeds.nodes(), 2);
        drop(a);
        feeds.send("a", &tombstone("one"));
        assert_eq!(feeds.nodes(), 1);
    }
}
