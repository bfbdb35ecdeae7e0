//! The one jittered exponential back-off of edgecore: reconnects and outbox
//! retries both use [`Backoff`], so "how long until we try again" is decided
//! in one place.
//!
//! Delay of attempt `n` (from 0): `d = min(initial * 2^n, max)`, then "equal
//! jitter": a uniformly random value in `[d/2, d]`, so a fleet of edges that
//! lost the cloud together does not come back in lock-step, and no delay is
//! ever shorter than half the nominal one.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Jittered exponential back-off state (attempt counter plus its own RNG, so
/// tests can seed it and get reproducible delays).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// A back-off from `initial` doubling up to `max`, seeded from the OS.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::with_rng(initial, max, StdRng::from_os_rng())
    }

    /// Same as [`Backoff::new`] with a fixed seed (tests).
    pub fn seeded(initial: Duration, max: Duration, seed: u64) -> Self {
        Self::with_rng(initial, max, StdRng::seed_from_u64(seed))
    }

    fn with_rng(initial: Duration, max: Duration, rng: StdRng) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng,
        }
    }

    /// The nominal (unjittered) delay of attempt `attempt`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.jittered(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// A jittered delay for attempt `attempt` without touching the counter
    /// (for callers that keep one attempt count per item, like the outbox).
    pub fn jittered(&mut self, attempt: u32) -> Duration {
        let d = self.nominal(attempt);
        let half = d / 2;
        let spread = u64::try_from((d - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(self.rng.random_range(0..=spread))
    }

    /// Attempts made since the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Success: the next delay starts from `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_upper_half() {
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 7);
        let mut nominal = Vec::new();
        for n in 0..8 {
            let expected = b.nominal(n);
            nominal.push(expected.as_secs());
            let d = b.next_delay();
            assert!(d >= expected / 2 && d <= expected, "{d:?} vs {expected:?}");
        }
        assert_eq!(nominal, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.attempt(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 1);
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(30));
    }
}
