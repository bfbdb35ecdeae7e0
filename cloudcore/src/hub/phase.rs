//! The pure parts of a session: its lifecycle ([`Phase`]), which frame
//! kinds each phase accepts ([`admit`]), inventory collection
//! ([`InventoryCollector`]), the garbage budget ([`GarbageMeter`]) and why
//! a session ends ([`CloseReason`]). The event loop in `session` owns the
//! sockets and timers and asks these what to do.

use std::collections::VecDeque;
use std::time::Duration;

use proto::{ErrorInfo, Inventory, InventoryEntry, Kind, Timestamp};

/// Lifecycle of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Entered when the WebSocket is accepted. Only HELLO is valid. Left
    /// for `Syncing` once HELLO names the certificate's node and a
    /// version is agreed (HELLO_ACK sent), or for `Closed`.
    Handshake,
    /// Entered after HELLO_ACK. The edge sends its inventory; upstream
    /// requests are accepted but run only once the caches are synced. Left
    /// for `Live` when the inventory is complete, the caches finished their
    /// first list, and the diff plus SYNCED are queued.
    Syncing,
    /// Entered when SYNCED is queued: the session follows the cache's
    /// change feed for its node. Left only for `Closed`.
    Live,
    /// Terminal: see [`CloseReason`].
    Closed,
}

impl Phase {
    /// Every phase, for metrics.
    pub const ALL: [Phase; 4] = [Phase::Handshake, Phase::Syncing, Phase::Live, Phase::Closed];

    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::Syncing => "syncing",
            Phase::Live => "live",
            Phase::Closed => "closed",
        }
    }
}

/// What to do with a decoded frame in the current phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Handle it.
    Accept,
    /// Ignore it silently (the session is closing).
    Ignore,
    /// Refuse it with an ERROR; `fatal` closes the session afterwards.
    Refuse {
        /// Reason label (also a metric label).
        reason: &'static str,
        /// Whether the session must end.
        fatal: bool,
    },
}

/// Which frame kinds from the edge each phase accepts.
pub fn admit(phase: Phase, kind: Kind) -> Admission {
    use Kind::*;
    let refuse = |reason, fatal| Admission::Refuse { reason, fatal };
    match (phase, kind) {
        (Phase::Closed, _) => Admission::Ignore,
        (Phase::Handshake, Hello | Ping | Pong) => Admission::Accept,
        (Phase::Handshake, _) => refuse("hello_expected", true),
        (_, Hello) => refuse("duplicate_hello", true),
        (Phase::Syncing, Inventory) => Admission::Accept,
        (Phase::Live, Inventory) => refuse("unexpected_inventory", false),
        (_, Ack | Ping | Pong | Error | Request | Event | CertRenewRequest) => Admission::Accept,
        (
            _,
            Unspecified | HelloAck | Object | Tombstone | Synced | Response | CertRenewResponse,
        ) => refuse("unexpected_kind", false),
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The node connected again; the new session wins.
    Replaced,
    /// The Node object was deleted.
    NodeDeleted,
    /// The node's certificate was revoked.
    Revoked,
    /// The certificate the session authenticated with expired (the edge did not renew).
    CertificateExpired,
    /// The caches do not know the node (no edge Node object).
    UnknownNode,
    /// Nothing heard from the edge for the idle timeout.
    Idle,
    /// The edge closed the connection (or it broke).
    PeerClosed,
    /// cloudcore is shutting down.
    Shutdown,
    /// The edge broke the protocol; the reason label says how.
    Protocol(&'static str),
    /// Too many undecodable frames.
    Garbage,
    /// A WebSocket message above the frame limit: the stream cannot be
    /// resynchronised after the WebSocket library refused it.
    Oversized,
    /// The writer could not keep up or the socket failed.
    WriteFailed,
}

impl CloseReason {
    /// Metrics / log label.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::Replaced => "replaced",
            CloseReason::NodeDeleted => "node_deleted",
            CloseReason::Revoked => "revoked",
            CloseReason::CertificateExpired => "certificate_expired",
            CloseReason::UnknownNode => "unknown_node",
            CloseReason::Idle => "idle",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Protocol(r) => r,
            CloseReason::Garbage => "garbage",
            CloseReason::Oversized => "oversized",
            CloseReason::WriteFailed => "write_failed",
        }
    }

    /// The ERROR to send the edge before closing, if it should get one.
    pub fn error_info(&self) -> Option<ErrorInfo> {
        let (code, message) = match self {
            CloseReason::Replaced => (409, "a newer session of this node replaced this one"),
            CloseReason::NodeDeleted => (403, "the Node object was deleted"),
            CloseReason::Revoked => (403, "the node certificate was revoked; join again"),
            CloseReason::CertificateExpired => (
                403,
                "the node certificate expired; it should have been renewed over the link — join again with a fresh token",
            ),
            CloseReason::UnknownNode => (
                403,
                "no edge Node object of this name exists (deleted, or not labelled as an edge); join again",
            ),
            CloseReason::Idle => (408, "nothing received within the idle timeout"),
            CloseReason::Shutdown => (503, "cloudcore is shutting down"),
            CloseReason::Garbage => (400, "too many malformed frames"),
            CloseReason::Oversized => (413, "message larger than the frame limit"),
            // A violation was already answered with an ERROR naming it.
            CloseReason::Protocol(_) | CloseReason::PeerClosed | CloseReason::WriteFailed => {
                return None;
            }
        };
        Some(ErrorInfo {
            code,
            reason: self.label().to_owned(),
            message: message.to_owned(),
            in_reply_to: 0,
        })
    }
}

/// Why an inventory was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// A chunk arrived out of order.
    #[error("inventory chunk {got} arrived, expected {expected}")]
    OutOfOrder {
        /// The expected chunk index.
        expected: u32,
        /// The index received.
        got: u32,
    },
    /// More entries than a node may hold.
    #[error("inventory exceeds {max} entries")]
    TooLarge {
        /// The bound.
        max: usize,
    },
}

impl InventoryError {
    /// Metrics / ErrorInfo reason.
    pub fn reason(&self) -> &'static str {
        match self {
            InventoryError::OutOfOrder { .. } => "inventory_out_of_order",
            InventoryError::TooLarge { .. } => "inventory_too_large",
        }
    }
}

/// Collects INVENTORY chunks until the one marked `complete`.
#[derive(Debug, Default)]
pub struct InventoryCollector {
    next: u32,
    entries: Vec<InventoryEntry>,
    max: usize,
}

impl InventoryCollector {
    /// A collector accepting at most `max` entries in total.
    pub fn new(max: usize) -> Self {
        InventoryCollector {
            next: 0,
            entries: Vec::new(),
            max,
        }
    }

    /// Adds a chunk; returns every entry once the last chunk arrived.
    pub fn push(
        &mut self,
        chunk: Inventory,
    ) -> Result<Option<Vec<InventoryEntry>>, InventoryError> {
        if chunk.chunk != self.next {
            return Err(InventoryError::OutOfOrder {
                expected: self.next,
                got: chunk.chunk,
            });
        }
        if self.entries.len() + chunk.entries.len() > self.max {
            return Err(InventoryError::TooLarge { max: self.max });
        }
        self.next = self.next.saturating_add(1);
        self.entries.extend(chunk.entries);
        Ok(chunk.complete.then(|| std::mem::take(&mut self.entries)))
    }
}

/// Counts undecodable frames in a sliding window; too many closes the session.
#[derive(Debug)]
pub struct GarbageMeter<I> {
    window: Duration,
    max: usize,
    seen: VecDeque<I>,
}

impl<I: Timestamp> GarbageMeter<I> {
    /// Allows `max` bad frames per `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        GarbageMeter {
            window,
            max,
            seen: VecDeque::new(),
        }
    }

    /// Records one bad frame; true when the budget is exceeded.
    pub fn record(&mut self, now: I) -> bool {
        while self.seen.front().is_some_and(|t| *t + self.window <= now) {
            self.seen.pop_front();
        }
        self.seen.push_back(now);
        self.seen.len() > self.max
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn handshake_accepts_only_hello() {
        assert_eq!(admit(Phase::Handshake, Kind::Hello), Admission::Accept);
        assert_eq!(admit(Phase::Handshake, Kind::Ping), Admission::Accept);
        for kind in [Kind::Inventory, Kind::Request, Kind::Ack, Kind::Object] {
            assert_eq!(
                admit(Phase::Handshake, kind),
                Admission::Refuse {
                    reason: "hello_expected",
                    fatal: true
                }
            );
        }
    }

    #[test]
    fn syncing_and_live_accept_the_edges_kinds() {
        for phase in [Phase::Syncing, Phase::Live] {
            for kind in [
                Kind::Ack,
                Kind::Ping,
                Kind::Pong,
                Kind::Request,
                Kind::Event,
                Kind::Error,
            ] {
                assert_eq!(admit(phase, kind), Admission::Accept, "{phase:?} {kind:?}");
            }
            assert!(matches!(
                admit(phase, Kind::Hello),
                Admission::Refuse { fatal: true, .. }
            ));
            for kind in [Kind::Object, Kind::Synced, Kind::HelloAck, Kind::Response] {
                assert_eq!(
                    admit(phase, kind),
                    Admission::Refuse {
                        reason: "unexpected_kind",
                        fatal: false
                    }
                );
            }
        }
        assert_eq!(admit(Phase::Syncing, Kind::Inventory), Admission::Accept);
        assert!(matches!(
            admit(Phase::Live, Kind::Inventory),
            Admission::Refuse { fatal: false, .. }
        ));
        assert_eq!(admit(Phase::Closed, Kind::Request), Admission::Ignore);
    }

    fn chunk(i: u32, n: usize, complete: bool) -> Inventory {
        Inventory {
            entries: (0..n)
                .map(|j| InventoryEntry {
                    key: format!("default/pod/p{i}-{j}"),
                    uid: "u".into(),
                    resource_version: "1".into(),
                })
                .collect(),
            chunk: i,
            complete,
        }
    }

    #[test]
    fn inventory_chunks_in_order_until_complete() {
        let mut c = InventoryCollector::new(100);
        assert_eq!(c.push(chunk(0, 3, false)).unwrap(), None);
        assert_eq!(c.push(chunk(1, 2, true)).unwrap().unwrap().len(), 5);
        let mut c = InventoryCollector::new(100);
        assert_eq!(
            c.push(chunk(1, 1, true)).unwrap_err(),
            InventoryError::OutOfOrder {
                expected: 0,
                got: 1
            }
        );
        let mut c = InventoryCollector::new(4);
        assert_eq!(
            c.push(chunk(0, 5, true)).unwrap_err().reason(),
            "inventory_too_large"
        );
        let mut c = InventoryCollector::new(4);
        assert_eq!(c.push(chunk(0, 0, true)).unwrap(), Some(vec![]));
    }

    #[test]
    fn garbage_budget_is_per_window() {
        let t0 = Instant::now();
        let mut m = GarbageMeter::new(20, Duration::from_secs(60));
        for i in 0..20 {
            assert!(!m.record(t0 + Duration::from_secs(i)));
        }
        assert!(
            m.record(t0 + Duration::from_secs(20)),
            "21st within a minute"
        );
        let mut m = GarbageMeter::new(20, Duration::from_secs(60));
        for i in 0..100 {
            assert!(
                !m.record(t0 + Duration::from_secs(4 * i)),
                "spread out: {i}"
            );
        }
    }

    #[test]
    fn close_reasons_tell_the_edge_why() {
        assert_eq!(
            CloseReason::Replaced.error_info().unwrap().reason,
            "replaced"
        );
        assert_eq!(CloseReason::NodeDeleted.error_info().unwrap().code, 403);
        assert_eq!(
            CloseReason::Protocol("ack_beyond_sent").label(),
            "ack_beyond_sent"
        );
        assert!(CloseReason::PeerClosed.error_info().is_none());
        assert!(CloseReason::Protocol("x").error_info().is_none());
    }
}
