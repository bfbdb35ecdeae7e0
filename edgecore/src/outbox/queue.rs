//! The pure bookkeeping of the outbox: coalescing by key, send order, which
//! entry is in flight, retry times. No IO; time comes in as `now`.
//!
//! Each key holds at most one entry — the latest put (latest wins). Every put
//! gets a new sequence number, and entries are sent in sequence order. An
//! entry sent in one frame is identified by `(key, seq)`: if a newer put
//! replaced it while it was in flight, the ACK of the old frame leaves the
//! newer entry queued.
//!
//! Outcome of a sent entry, decided in [`classify`]: 2xx → done when acked;
//! permanent errors (400, 403, 404, 405, 409, 410, 413, 415, 422) → dropped at
//! once; anything else (408, 429, 5xx, unknown) → sent again after a
//! jittered back-off once the ACK releases it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use proto::Timestamp as Time;

/// What a RESPONSE code means for the entry that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The API write succeeded.
    Success,
    /// The API refused for good; retrying cannot help.
    Permanent,
    /// Worth retrying later.
    Transient,
}

/// The one place that decides which API results are retried.
pub fn classify(code: u32) -> Verdict {
    match code {
        200..=299 => Verdict::Success,
        400 | 403 | 404 | 405 | 409 | 410 | 413 | 415 | 422 => Verdict::Permanent,
        _ => Verdict::Transient,
    }
}

/// What happened to an entry after an ACK or RESPONSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Finished: delete it from the store.
    Done,
    /// Refused for good with this code: delete it and count it.
    Dropped(u32),
    /// Will be sent again (after a back-off).
    Retry,
    /// The entry was replaced by a newer put, or is unknown: nothing to do.
    Stale,
}

#[derive(Debug, Clone)]
enum State<I> {
    /// Waiting to be sent, not before `not_before`.
    Pending { not_before: Option<I> },
    /// Sent in a frame of the current session; `retry_at` is set when a
    /// transient error came back for it.
    InFlight { retry_at: Option<I> },
}

#[derive(Debug, Clone)]
struct Slot<T, I> {
    seq: u64,
    item: Arc<T>,
    attempts: u32,
    state: State<I>,
}

/// Coalescing queue of upstream items of type `T`.
#[derive(Debug)]
pub struct Queue<T, I = tokio::time::Instant> {
    slots: HashMap<String, Slot<T, I>>,
    /// seq -> key of every pending entry, in send order.
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

impl<T, I: Time> Default for Queue<T, I> {
    fn default() -> Self {
        Queue {
            slots: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 1,
        }
    }
}

impl<T, I: Time> Queue<T, I> {
    /// Restores an entry loaded from the store (keeps its seq).
    pub fn restore(&mut self, key: String, seq: u64, item: T) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        if let Some(old) = self.slots.get(&key)
            && old.seq > seq
        {
            return;
        }
        self.remove(&key);
        self.order.insert(seq, key.clone());
        self.slots.insert(
            key,
            Slot {
                seq,
                item: Arc::new(item),
                attempts: 0,
                state: State::Pending { not_before: None },
            },
        );
    }

    /// Queues `item` under `key`, replacing what is queued there. Returns
    /// the new seq and whether an older entry was replaced.
    pub fn put(&mut self, key: String, item: T) -> (u64, bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let replaced = self.remove(&key);
        self.order.insert(seq, key.clone());
        self.slots.insert(
            key,
            Slot {
                seq,
                item: Arc::new(item),
                attempts: 0,
                state: State::Pending { not_before: None },
            },
        );
        (seq, replaced)
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.slots.remove(key) {
            Some(old) => {
                self.order.remove(&old.seq);
                true
            }
            None => false,
        }
    }

    /// The oldest pending entry whose back-off has passed; it becomes in
    /// flight. `None` if nothing is ready.
    pub fn next_ready(&mut self, now: I) -> Option<(String, u64, Arc<T>)> {
        let (seq, key) = self
            .order
            .iter()
            .find(|(_, key)| {
                matches!(self.slots.get(*key), Some(Slot { state: State::Pending { not_before }, .. })
                    if not_before.is_none_or(|t| t <= now))
            })
            .map(|(s, k)| (*s, k.clone()))?;
        self.order.remove(&seq);
        let slot = self.slots.get_mut(&key)?;
        slot.state = State::InFlight { retry_at: None };
        slot.attempts = slot.attempts.saturating_add(1);
        Some((key, seq, slot.item.clone()))
    }

    /// The cloud acked the frame that carried `(key, seq)`.
    pub fn on_acked(&mut self, key: &str, seq: u64) -> Outcome {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.seq == seq) else {
            return Outcome::Stale;
        };
        match slot.state {
            State::InFlight { retry_at: Some(at) } => {
                slot.state = State::Pending {
                    not_before: Some(at),
                };
                self.order.insert(seq, key.to_owned());
                Outcome::Retry
            }
            State::InFlight { retry_at: None } => {
                self.slots.remove(key);
                Outcome::Done
            }
            // Acked while pending: a frame of a previous session; sent again anyway.
            State::Pending { .. } => Outcome::Stale,
        }
    }

    /// A RESPONSE with `code` came for `(key, seq)`. `delay` gives the
    /// back-off for a given attempt count (transient errors only).
    pub fn on_response(
        &mut self,
        key: &str,
        seq: u64,
        code: u32,
        now: I,
        delay: impl FnOnce(u32) -> Duration,
    ) -> Outcome {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.seq == seq) else {
            return Outcome::Stale;
        };
        match classify(code) {
            Verdict::Success => {
                // A retransmission succeeded after an earlier transient error.
                if let State::InFlight { retry_at } = &mut slot.state {
                    *retry_at = None;
                }
                Outcome::Stale
            }
            Verdict::Permanent => {
                self.remove(key);
                Outcome::Dropped(code)
            }
            Verdict::Transient => {
                if let State::InFlight { retry_at } = &mut slot.state {
                    *retry_at = Some(now + delay(slot.attempts.saturating_sub(1)));
                }
                Outcome::Retry
            }
        }
    }

    /// The session ended: everything in flight is pending again (keeping
    /// any retry time), to be sent in the next session in seq order.
    pub fn restart(&mut self) {
        for (key, slot) in &mut self.slots {
            if let State::InFlight { retry_at } = slot.state {
                slot.state = State::Pending {
                    not_before: retry_at,
                };
                self.order.insert(slot.seq, key.clone());
            }
        }
    }

    /// Removes the oldest pending entry whose item matches `evictable` and
    /// returns its key (to make room under a cap).
    pub fn evict_oldest(&mut self, evictable: impl Fn(&T) -> bool) -> Option<String> {
        let key = self
            .order
            .values()
            .find(|k| self.slots.get(*k).is_some_and(|s| evictable(&s.item)))
            .cloned()?;
        self.remove(&key);
        Some(key)
    }

    /// Whether `key` is queued.
    pub fn contains(&self, key: &str) -> bool {
        self.slots.contains_key(key)
    }

    /// Entries queued (pending or in flight).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The item currently queued under `key` (pending or in flight).
    pub fn peek(&self, key: &str) -> Option<Arc<T>> {
        self.slots.get(key).map(|s| s.item.clone())
    }

    /// The seq currently queued under `key`.
    pub fn seq_of(&self, key: &str) -> Option<u64> {
        self.slots.get(key).map(|s| s.seq)
    }

    /// The earliest back-off end among pending entries (for a timer).
    pub fn next_wakeup(&self) -> Option<I> {
        self.order
            .values()
            .filter_map(|k| match self.slots.get(k)?.state {
                State::Pending { not_before } => not_before,
                State::InFlight { .. } => None,
            })
            .min()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    type Q = Queue<&'static str, Instant>;

    fn sec(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn latest_put_wins_and_order_follows_seq() {
        let now = Instant::now();
        let mut q = Q::default();
        q.put("node".into(), "status-1");
        q.put("pod/a".into(), "a-1");
        let (_, replaced) = q.put("node".into(), "status-2");
        assert!(replaced);
        assert_eq!(q.len(), 2);
        let (k1, _, v1) = q.next_ready(now).unwrap();
        let (k2, _, v2) = q.next_ready(now).unwrap();
        assert_eq!((k1.as_str(), *v1), ("pod/a", "a-1"));
        assert_eq!((k2.as_str(), *v2), ("node", "status-2"));
        assert!(q.next_ready(now).is_none());
    }

    #[test]
    fn removed_only_on_ack_and_only_the_acked_version() {
        let now = Instant::now();
        let mut q = Q::default();
        q.put("node".into(), "v1");
        let (key, seq1, _) = q.next_ready(now).unwrap();
        // a newer status arrives while v1 is in flight
        let (seq2, _) = q.put("node".into(), "v2");
        assert_eq!(q.on_acked(&key, seq1), Outcome::Stale);
        assert_eq!(q.seq_of("node"), Some(seq2));
        let (_, s, v) = q.next_ready(now).unwrap();
        assert_eq!((s, *v), (seq2, "v2"));
        assert_eq!(q.on_acked("node", seq2), Outcome::Done);
        assert!(q.is_empty());
    }

    #[test]
    fn permanent_errors_drop_transient_ones_retry_after_backoff() {
        let now = Instant::now();
        let mut q = Q::default();
        q.put("a".into(), "x");
        q.put("b".into(), "y");
        let (_, sa, _) = q.next_ready(now).unwrap();
        let (_, sb, _) = q.next_ready(now).unwrap();
        assert_eq!(
            q.on_response("a", sa, 422, now, |_| sec(1)),
            Outcome::Dropped(422)
        );
        assert_eq!(q.on_response("b", sb, 503, now, |_| sec(2)), Outcome::Retry);
        assert_eq!(q.len(), 1);
        // the ACK releases it into back-off, not into Done
        assert_eq!(q.on_acked("b", sb), Outcome::Retry);
        assert!(q.next_ready(now + sec(1)).is_none());
        assert_eq!(q.next_wakeup(), Some(now + sec(2)));
        let (k, s, _) = q.next_ready(now + sec(2)).unwrap();
        assert_eq!((k.as_str(), s), ("b", sb));
        assert_eq!(q.on_acked("b", sb), Outcome::Done);
    }

    #[test]
    fn success_after_a_transient_error_is_done_on_ack() {
        let now = Instant::now();
        let mut q = Q::default();
        q.put("a".into(), "x");
        let (_, s, _) = q.next_ready(now).unwrap();
        assert_eq!(q.on_response("a", s, 503, now, |_| sec(2)), Outcome::Retry);
        // the retransmitted frame succeeded
        assert_eq!(q.on_response("a", s, 200, now, |_| sec(2)), Outcome::Stale);
        assert_eq!(q.on_acked("a", s), Outcome::Done);
        assert!(q.is_empty());
    }

    #[test]
    fn restart_requeues_in_flight_in_order() {
        let now = Instant::now();
        let mut q = Q::default();
        q.put("a".into(), "1");
        q.put("b".into(), "2");
        q.next_ready(now).unwrap();
        q.next_ready(now).unwrap();
        assert!(q.next_ready(now).is_none());
        q.restart();
        assert_eq!(q.next_ready(now).unwrap().0, "a");
        assert_eq!(q.next_ready(now).unwrap().0, "b");
    }

    #[test]
    fn restore_keeps_seq_and_continues_after_it() {
        let mut q = Q::default();
        q.restore("b".into(), 7, "old-b");
        q.restore("a".into(), 3, "a");
        let (seq, _) = q.put("c".into(), "c");
        assert_eq!(seq, 8);
        let now = Instant::now();
        assert_eq!(q.next_ready(now).unwrap().0, "a");
        assert_eq!(q.next_ready(now).unwrap().0, "b");
    }

    #[test]
    fn eviction_takes_the_oldest_matching_pending_entry() {
        let now = Instant::now();
        let mut q = Q::default();
        q.put("ev1".into(), "event");
        q.put("st".into(), "status");
        q.put("ev2".into(), "event");
        q.next_ready(now).unwrap(); // ev1 in flight: not evictable
        assert_eq!(q.evict_oldest(|i| *i == "event").as_deref(), Some("ev2"));
        assert_eq!(q.evict_oldest(|i| *i == "event"), None);
        assert!(q.contains("st") && !q.contains("ev2"));
    }

    #[test]
    fn classification() {
        assert_eq!(classify(200), Verdict::Success);
        assert_eq!(classify(201), Verdict::Success);
        for c in [403, 404, 422] {
            assert_eq!(classify(c), Verdict::Permanent);
        }
        for c in [0, 408, 429, 500, 503] {
            assert_eq!(classify(c), Verdict::Transient);
        }
    }
}
