//! The receiver's side of "nothing lost": [`AckTracker`] decides, for each
//! sequenced frame, whether to hand it to the application, and when to send
//! a cumulative ACK. No IO; time comes in as `now`.
//!
//! Three counters, always `acked <= committed <= delivered`:
//! - `delivered`: highest id handed to the application. Frames are delivered
//!   strictly in order ([`Receipt::Deliver`] only for `delivered + 1`), so a
//!   newer version of an object can never be overtaken by an older one.
//!   Lower ids are [`Receipt::Duplicate`]s (retransmits), higher ones a
//!   [`Receipt::Gap`] (dropped; the sender retransmits them in order).
//! - `committed`: highest id the application made durable (edge: flushed
//!   to sled; cloud: API write finished), reported with
//!   [`AckTracker::commit`]. Only this is ever acked: an ACK means durable.
//! - `acked`: highest `up_to` returned by [`AckTracker::poll_ack`].
//!
//! If the application fails to make delivered frames durable, it calls
//! [`AckTracker::redeliver_from`] so their retransmissions are delivered
//! again instead of being dropped as duplicates.
//!
//! A new session starts a new tracker: ids restart at 1 ([`AckTracker::reset`]).

use std::time::{Duration, Instant};

use crate::window::{TIMEOUT_CAP, Timestamp};

/// When to send an ACK once something new is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPolicy {
    /// Ack at once when this many committed frames are unacked. Keep it
    /// well below the sender's window capacity.
    pub max_pending: u64,
    /// Otherwise ack at most this long after the first unacked commit.
    pub max_delay: Duration,
}

impl Default for AckPolicy {
    fn default() -> Self {
        AckPolicy {
            max_pending: 32,
            max_delay: Duration::from_millis(20),
        }
    }
}

/// What to do with a received sequenced frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The next frame in order: apply it, then [`AckTracker::commit`] it
    /// once durable.
    Deliver,
    /// Already delivered (a retransmit): drop it. If it was already
    /// committed, an ACK is scheduled at once so the sender stops resending.
    Duplicate,
    /// Ahead of the next expected id: drop it; the sender will retransmit
    /// `expected` and everything after it.
    Gap {
        /// The id that must come next.
        expected: u64,
    },
    /// id 0: an unsequenced frame, not tracked.
    Unsequenced,
}

/// Why [`AckTracker::commit`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// Commit of an id that was never delivered: an application bug.
    #[error("commit up to {up_to} but only {delivered} frames were delivered")]
    CommitBeyondDelivered {
        /// The id passed to `commit`.
        up_to: u64,
        /// Highest delivered id.
        delivered: u64,
    },
}

/// Receiver-side sequence bookkeeping for one direction of one session.
#[derive(Debug, Clone)]
pub struct AckTracker<I = Instant> {
    policy: AckPolicy,
    delivered: u64,
    committed: u64,
    acked: u64,
    /// When `committed` first went above `acked` (the ack-delay clock).
    pending_since: Option<I>,
    /// A duplicate of a committed frame arrived: re-ack even if nothing new.
    reack: bool,
}

impl<I: Timestamp> AckTracker<I> {
    /// A tracker for a new session (expects id 1 first). `max_delay` is
    /// capped at [`TIMEOUT_CAP`]; a `max_pending` of 0 is treated as 1.
    pub fn new(policy: AckPolicy) -> Self {
        AckTracker {
            policy: AckPolicy {
                max_pending: policy.max_pending.max(1),
                max_delay: policy.max_delay.min(TIMEOUT_CAP),
            },
            delivered: 0,
            committed: 0,
            acked: 0,
            pending_since: None,
            reack: false,
        }
    }

    /// Forgets everything for a new session; ids restart at 1.
    pub fn reset(&mut self) {
        *self = Self::new(self.policy);
    }

    /// Highest id delivered to the application.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Highest id the application committed.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Highest `up_to` handed out by [`AckTracker::poll_ack`].
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The id that must arrive next, if any remain.
    pub fn expected(&self) -> Option<u64> {
        self.delivered.checked_add(1)
    }

    /// Classifies a received frame by its id.
    pub fn on_frame(&mut self, id: u64) -> Receipt {
        if id == 0 {
            return Receipt::Unsequenced;
        }
        if id <= self.delivered {
            if id <= self.committed {
                self.reack = true;
            }
            return Receipt::Duplicate;
        }
        match self.expected() {
            Some(expected) if id == expected => {
                self.delivered = id;
                Receipt::Deliver
            }
            Some(expected) => Receipt::Gap { expected },
            // delivered == u64::MAX: every id is a duplicate, handled above.
            None => Receipt::Duplicate,
        }
    }

    /// The application made every delivered frame with id <= `up_to`
    /// durable. Commits at or below the current one are ignored.
    pub fn commit(&mut self, up_to: u64, now: I) -> Result<(), AckError> {
        if up_to > self.delivered {
            return Err(AckError::CommitBeyondDelivered {
                up_to,
                delivered: self.delivered,
            });
        }
        if up_to > self.committed {
            self.committed = up_to;
            if self.pending_since.is_none() && self.committed > self.acked {
                self.pending_since = Some(now);
            }
        }
        Ok(())
    }

    /// The application could not make frames from `id` on durable: forget
    /// their delivery so retransmissions are delivered again. Committed
    /// frames stay committed (`id` is raised to `committed + 1`).
    pub fn redeliver_from(&mut self, id: u64) {
        let keep = id.saturating_sub(1).max(self.committed);
        self.delivered = self.delivered.min(keep);
    }

    /// `Some(up_to)` when an ACK should be sent now; the ACK then counts as
    /// sent. `None` while nothing needs acking or the delay has not passed.
    pub fn poll_ack(&mut self, now: I) -> Option<u64> {
        if !self.ack_due(now) {
            return None;
        }
        self.acked = self.committed;
        self.pending_since = None;
        self.reack = false;
        Some(self.committed)
    }

    /// Whether [`AckTracker::poll_ack`] would return an ACK at `now`.
    pub fn ack_due(&self, now: I) -> bool {
        if self.committed == 0 {
            return false;
        }
        if self.reack {
            return true;
        }
        let pending = self.committed - self.acked;
        if pending == 0 {
            return false;
        }
        pending >= self.policy.max_pending
            || self
                .pending_since
                .is_some_and(|since| now >= since + self.policy.max_delay)
    }

    /// When the delayed ACK falls due (for the caller's timer), if one is
    /// waiting. An ACK due at once is reported by `ack_due`.
    pub fn next_deadline(&self) -> Option<I> {
        if self.committed > self.acked {
            self.pending_since
                .map(|since| since + self.policy.max_delay)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
