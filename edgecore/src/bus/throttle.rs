//! Per-key rate limit with "latest wins": at most one value per key per interval leaves,
//! values offered in between replace each other, and the last one offered always leaves
//! (when its interval is over). 1,000 reports/s of one device become 5 status writes/s.
//!
//! Pure: the caller passes `now` and sleeps until [`Throttle::next_deadline`].

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Slot<V> {
    /// When a value of this key last left (`None`: never, or long enough ago).
    last_sent: Option<Instant>,
    /// The newest value not sent yet.
    pending: Option<V>,
}

/// The limiter. Memory is proportional to keys with a pending value or a recent send.
#[derive(Debug)]
pub struct Throttle<K, V> {
    interval: Duration,
    slots: HashMap<K, Slot<V>>,
}

impl<K: Eq + Hash + Clone, V> Throttle<K, V> {
    /// A limiter allowing one value per key per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: HashMap::new(),
        }
    }

    /// Offers a value; it replaces any pending value of the key. It leaves at the next
    /// [`Throttle::take_due`] at or after its slot's deadline. Returns whether it replaced
    /// a pending value (coalesced).
    pub fn offer(&mut self, key: K, value: V) -> bool {
        let slot = self.slots.entry(key).or_insert(Slot {
            last_sent: None,
            pending: None,
        });
        slot.pending.replace(value).is_some()
    }

    /// Puts back a value that could not be handed over (newer offers win over it). It is
    /// retried one interval later.
    pub fn retry(&mut self, key: K, value: V) {
        if let Some(slot) = self.slots.get_mut(&key) {
            if slot.pending.is_none() {
                slot.pending = Some(value);
            }
        } else {
            self.slots.insert(
                key,
                Slot {
                    last_sent: None,
                    pending: Some(value),
                },
            );
        }
    }

    fn due_at(&self, slot: &Slot<V>) -> Option<Instant> {
        slot.pending.as_ref()?;
        Some(match slot.last_sent {
            Some(t) => t + self.interval,
            None => Instant::now() - Duration::from_millis(1),
        })
    }

    /// Values whose key may send now; marks them sent at `now`. Forgets idle keys.
    pub fn take_due(&mut self, now: Instant) -> Vec<(K, V)> {
        let interval = self.interval;
        let mut out = Vec::new();
        self.slots.retain(|key, slot| {
            let may_send = slot.last_sent.is_none_or(|t| now >= t + interval);
            if may_send && let Some(v) = slot.pending.take() {
                slot.last_sent = Some(now);
                out.push((key.clone(), v));
                return true;
            }
            // Keep keys that wait, or that sent within the interval (their next value must wait).
            slot.pending.is_some() || slot.last_sent.is_some_and(|t| now < t + interval)
        });
        out
    }

    /// The earliest time a pending value may leave, if any is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.values().filter_map(|s| self.due_at(s)).min()
    }

    /// How many keys hold a pending value.
    pub fn pending(&self) -> usize {
        self.slots.values().filter(|s| s.pending.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(200);

    #[test]
    fn first_value_leaves_at_once_then_latest_wins() {
        let t0 = Instant::now();
        let mut t = Throttle::new(I);
        assert!(!t.offer("a", 1));
        assert_eq!(t.take_due(t0), vec![("a", 1)]);
        for v in 2..100 {
            assert_eq!(t.offer("a", v), v > 2, "coalesced when one is pending");
            assert!(t.take_due(t0 + Duration::from_millis(10)).is_empty());
        }
        assert_eq!(t.next_deadline(), Some(t0 + I));
        assert!(t.take_due(t0 + I - Duration::from_millis(1)).is_empty());
        assert_eq!(t.take_due(t0 + I), vec![("a", 99)]);
        assert_eq!(t.pending(), 0);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn keys_are_independent_and_idle_keys_are_forgotten() {
        let t0 = Instant::now();
        let mut t = Throttle::new(I);
        t.offer("a", 1);
        t.offer("b", 2);
        let mut got = t.take_due(t0);
        got.sort();
        assert_eq!(got, vec![("a", 1), ("b", 2)]);
        assert!(t.take_due(t0 + I * 2).is_empty());
        assert!(t.slots.is_empty(), "idle keys are dropped");
        t.offer("a", 3);
        assert_eq!(t.take_due(t0 + I * 2), vec![("a", 3)]);
    }

    #[test]
    fn a_flood_becomes_one_value_per_interval() {
        let t0 = Instant::now();
        let mut t = Throttle::new(I);
        let mut sent = Vec::new();
        // 1,000 offers per second for one second, polled every millisecond.
        for ms in 0..1000u64 {
            let now = t0 + Duration::from_millis(ms);
            t.offer("d", ms);
            sent.extend(t.take_due(now).into_iter().map(|(_, v)| v));
        }
        sent.extend(
            t.take_due(t0 + Duration::from_millis(1200))
                .into_iter()
                .map(|(_, v)| v),
        );
        assert!(sent.len() <= 6, "{} sends", sent.len());
        assert_eq!(sent.last(), Some(&999), "the last value always leaves");
    }

    #[test]
    fn retry_keeps_newer_values() {
        let t0 = Instant::now();
        let mut t = Throttle::new(I);
        t.offer("a", 1);
        let (k, v) = t.take_due(t0).remove(0);
        t.offer("a", 2);
        t.retry(k, v);
        assert_eq!(t.take_due(t0 + I), vec![("a", 2)]);
        t.retry("b", 7);
        assert_eq!(t.take_due(t0 + I), vec![("b", 7)]);
    }
}
