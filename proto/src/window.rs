//! The sender's side of "nothing lost": [`SendWindow`] numbers sequenced
//! frames, keeps each one until a cumulative ACK covers it, and says when to
//! retransmit what, with exponential back-off per frame. No IO, no clock of
//! its own: every call that depends on time takes `now`.
//!
//! Life of a frame: [`SendWindow::push`] assigns the next id (1, 2, 3... per
//! session) and records the first transmission; [`SendWindow::due`] returns
//! frames whose deadline passed and doubles their timeout (capped);
//! [`SendWindow::on_ack`] releases every frame with id <= `up_to` and hands
//! the items back (so the caller can drop them from its outbox). When the
//! session ends, [`SendWindow::restart`] returns every unacked item in order
//! and the next session numbers from 1 again.
//!
//! Ids are contiguous, so the window is a queue whose front has id
//! `acked + 1`. The receiver delivers strictly in order (see
//! [`crate::ack::AckTracker`]), so a retransmitted frame k is followed by
//! retransmissions of k+1.. as their own deadlines pass.

use std::collections::VecDeque;
use std::ops::Add;
use std::time::{Duration, Instant};

/// A point in time the window can compare and add durations to:
/// `std::time::Instant`, `tokio::time::Instant` (paused time in tests), or
/// a plain test clock.
pub trait Timestamp: Copy + Ord + Add<Duration, Output = Self> {}

impl<T: Copy + Ord + Add<Duration, Output = T>> Timestamp for T {}

/// Largest timeout or delay the window and [`crate::ack::AckTracker`] use
/// (one day); larger configured values are lowered to it.
pub const TIMEOUT_CAP: Duration = Duration::from_secs(24 * 60 * 60);

/// Tuning of a [`SendWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Most frames in flight (unacked) at once; `push` refuses beyond it.
    pub capacity: usize,
    /// Timeout before the first retransmission of a frame.
    pub initial_timeout: Duration,
    /// Upper bound of the doubled timeout.
    pub max_timeout: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            capacity: 256,
            initial_timeout: Duration::from_secs(3),
            max_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the window refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `push` with `capacity` frames already in flight; wait for an ACK.
    #[error("send window full ({capacity} frames in flight)")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// The peer acked an id that was never sent: a protocol violation
    /// (drop the session).
    #[error("ack up to {up_to} but only {highest} frames were sent")]
    AckBeyondSent {
        /// The acked id.
        up_to: u64,
        /// Highest id assigned so far.
        highest: u64,
    },
    /// The session used up every u64 id; start a new session.
    #[error("sequence ids exhausted")]
    Exhausted,
}

impl WindowError {
    /// Stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            WindowError::Full { .. } => "window_full",
            WindowError::AckBeyondSent { .. } => "ack_beyond_sent",
            WindowError::Exhausted => "ids_exhausted",
        }
    }
}

/// An item [`SendWindow::push`] refused, handed back with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct Rejected<T> {
    /// Why it was refused.
    pub error: WindowError,
    /// The item, untouched.
    pub item: T,
}

/// One unacked frame.
#[derive(Debug)]
struct Slot<T, I> {
    item: T,
    /// When to retransmit next.
    deadline: I,
    /// How many times it was sent (1 after `push`).
    sends: u32,
}

/// In-flight frames of one direction of one session, ids `acked+1..next_id`.
#[derive(Debug)]
pub struct SendWindow<T, I = Instant> {
    config: WindowConfig,
    /// Highest id the peer acked (0 = none).
    acked: u64,
    /// `slots[i]` holds id `acked + 1 + i`.
    slots: VecDeque<Slot<T, I>>,
}

impl<T, I: Timestamp> SendWindow<T, I> {
    /// An empty window; the first id is 1. A capacity of 0 is treated as 1;
    /// timeouts are capped at [`TIMEOUT_CAP`] so `now + timeout` cannot
    /// overflow a clock.
    pub fn new(config: WindowConfig) -> Self {
        let config = WindowConfig {
            capacity: config.capacity.max(1),
            initial_timeout: config.initial_timeout.min(TIMEOUT_CAP),
            max_timeout: config.max_timeout.min(TIMEOUT_CAP),
        };
        SendWindow {
            config,
            acked: 0,
            // Grown as frames are pushed: most windows stay nearly empty, and a hub holds one
            // per connected node.
            slots: VecDeque::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    /// Highest id acked by the peer (0 before the first ACK).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest id assigned (0 before the first push).
    pub fn highest_sent(&self) -> u64 {
        // slots.len() <= capacity (usize) and acked + len never exceeds
        // u64::MAX because push checks it.
        self.acked.saturating_add(self.slots.len() as u64)
    }

    /// Frames in flight.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// True when `push` would be refused for lack of room.
    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.config.capacity
    }

    /// The id the next `push` will assign, if any remain.
    pub fn next_id(&self) -> Option<u64> {
        self.highest_sent().checked_add(1)
    }

    /// Records `item` as sent now under the next id and returns that id.
    /// Put the id in `Frame.id` before sending. A refused item comes back
    /// in [`Rejected`], so nothing is lost.
    pub fn push(&mut self, item: T, now: I) -> Result<u64, Rejected<T>> {
        if self.is_full() {
            let error = WindowError::Full {
                capacity: self.config.capacity,
            };
            return Err(Rejected { error, item });
        }
        let Some(id) = self.next_id() else {
            let error = WindowError::Exhausted;
            return Err(Rejected { error, item });
        };
        self.slots.push_back(Slot {
            item,
            deadline: now + self.config.initial_timeout,
            sends: 1,
        });
        Ok(id)
    }

    /// The item with `id`, if it is in flight.
    pub fn get(&self, id: u64) -> Option<&T> {
        self.index_of(id)
            .and_then(|i| self.slots.get(i))
            .map(|s| &s.item)
    }

    /// How many times `id` was sent so far, if it is in flight.
    pub fn sends(&self, id: u64) -> Option<u32> {
        self.index_of(id)
            .and_then(|i| self.slots.get(i))
            .map(|s| s.sends)
    }

    /// Processes a cumulative ACK: releases and returns, in id order, every
    /// in-flight `(id, item)` with id <= `up_to`. A stale ACK (at or below
    /// what was already acked) releases nothing.
    pub fn on_ack(&mut self, up_to: u64) -> Result<Vec<(u64, T)>, WindowError> {
        let highest = self.highest_sent();
        if up_to > highest {
            return Err(WindowError::AckBeyondSent { up_to, highest });
        }
        let mut released = Vec::new();
        while self.acked < up_to {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            self.acked += 1;
            released.push((self.acked, slot.item));
        }
        Ok(released)
    }

    /// Frames whose retransmit deadline is at or before `now`, in id order.
    /// Each returned frame counts as sent again now: its next deadline is
    /// `now + min(initial_timeout * 2^(sends-1), max_timeout)`.
    pub fn due(&mut self, now: I) -> Vec<(u64, &T)> {
        let base = self.acked;
        let config = self.config;
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.deadline <= now {
                slot.sends = slot.sends.saturating_add(1);
                slot.deadline = now + backoff(&config, slot.sends);
                out.push((base + 1 + i as u64, &slot.item));
            }
        }
        out
    }

    /// The earliest retransmit deadline, for the caller's timer.
    pub fn next_deadline(&self) -> Option<I> {
        self.slots.iter().map(|s| s.deadline).min()
    }

    /// Ends the session: returns every unacked item in id order (to be sent
    /// again, with new ids, in the next session) and restarts ids at 1.
    pub fn restart(&mut self) -> Vec<T> {
        self.acked = 0;
        self.slots.drain(..).map(|s| s.item).collect()
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        let offset = id.checked_sub(self.acked)?.checked_sub(1)?;
        usize::try_from(offset).ok()
    }
}

/// Timeout after a frame's `sends`-th transmission.
fn backoff(config: &WindowConfig, sends: u32) -> Duration {
    let doublings = sends.saturating_sub(1).min(31);
    config
        .initial_timeout
        .saturating_mul(1u32 << doublings)
        .min(config.max_timeout)
}

#[cfg(test)]
mod tests;
