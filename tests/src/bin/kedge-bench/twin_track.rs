//! Bookkeeping of `kedge-bench twin`: what the mappers published and what the watch on
//! Devices saw, per device property, and the latencies derived from them. Pure: callers
//! pass the instants, so the definitions below have plain unit tests.
//!
//! Values are sequence numbers, increasing per device (one counter for all its properties),
//! so "this value or a newer one" is a comparison.

use std::time::{Duration, Instant};

/// One property of one device.
#[derive(Debug, Default)]
struct Cell {
    /// Publishes of the current phase, in order: (value, when).
    sent: Vec<(u64, Instant)>,
    /// The last value published (any phase): (value, its timestamp in ms).
    last_sent: Option<(u64, i64)>,
    /// Values that became visible in this phase, increasing: (value, when seen).
    seen: Vec<(u64, Instant)>,
    /// The newest value seen in `Device.status` (any phase): (value, its timestamp in ms).
    last_seen: Option<(u64, i64)>,
}

/// The latencies of one phase.
#[derive(Debug, Default, Clone)]
pub struct PhaseLatency {
    /// For every publish: until that value or a newer one of the property was visible.
    pub every: Vec<Duration>,
    /// Publishes of which neither that value nor a newer one became visible.
    pub unseen: usize,
    /// For every property published in the phase: from its last publish until visible.
    pub last: Vec<Duration>,
}

/// Published and seen values of `devices` × `props` cells.
#[derive(Debug)]
pub struct Track {
    props: usize,
    cells: Vec<Cell>,
    next: Vec<u64>,
}

impl Track {
    /// Nothing published yet.
    pub fn new(devices: usize, props: usize) -> Self {
        Self {
            props,
            cells: (0..devices * props).map(|_| Cell::default()).collect(),
            next: vec![1; devices],
        }
    }

    fn cell(&mut self, dev: usize, prop: usize) -> Option<&mut Cell> {
        let i = dev.checked_mul(self.props)?.checked_add(prop)?;
        (prop < self.props).then_some(())?;
        self.cells.get_mut(i)
    }

    /// Records one publish of `dev` setting `props` to its next value, stamped `ts_ms`;
    /// returns the value (`None` for a device out of range).
    pub fn publish(
        &mut self,
        dev: usize,
        props: &[usize],
        ts_ms: i64,
        now: Instant,
    ) -> Option<u64> {
        let seq = *self.next.get(dev)?;
        self.next[dev] += 1;
        for &p in props {
            if let Some(c) = self.cell(dev, p) {
                c.sent.push((seq, now));
                c.last_sent = Some((seq, ts_ms));
            }
        }
        Some(seq)
    }

    /// A `Device.status` seen at `now` shows `value` (stamped `ts_ms`) for `dev`'s `prop`.
    /// Older or repeated values are ignored (every write carries the whole twin list).
    pub fn saw(&mut self, dev: usize, prop: usize, value: u64, ts_ms: i64, now: Instant) {
        let Some(c) = self.cell(dev, prop) else {
            return;
        };
        if c.last_seen.is_some_and(|(v, _)| v >= value) {
            return;
        }
        c.last_seen = Some((value, ts_ms));
        c.seen.push((value, now));
    }

    /// Cells whose last published value (with its timestamp) is not visible yet, as
    /// `(device, property)`.
    pub fn behind(&self) -> Vec<(usize, usize)> {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.last_sent.is_some() && c.last_sent != c.last_seen)
            .map(|(i, _)| (i / self.props, i % self.props))
            .collect()
    }

    /// Ends a phase: the latencies of its publishes (see [`PhaseLatency`]); forgets them.
    pub fn finish_phase(&mut self) -> PhaseLatency {
        let mut out = PhaseLatency::default();
        for c in &mut self.cells {
            let sent = std::mem::take(&mut c.sent);
            let seen = std::mem::take(&mut c.seen);
            let mut j = 0;
            let mut last = None;
            for (value, at) in sent {
                while j < seen.len() && seen[j].0 < value {
                    j += 1;
                }
                last = seen
                    .get(j)
                    .map(|(_, when)| when.saturating_duration_since(at));
                match last {
                    Some(d) => out.every.push(d),
                    None => out.unseen += 1,
                }
            }
            out.last.extend(last);
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn coalesced_values_count_until_a_newer_one_is_visible() {
        let t0 = Instant::now();
        let mut t = Track::new(1, 2);
        let a = t.publish(0, &[0], 1, t0).unwrap();
        let b = t.publish(0, &[0], 2, t0 + ms(10)).unwrap();
        let c = t.publish(0, &[1], 3, t0 + ms(20)).unwrap();
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(t.behind(), vec![(0, 0), (0, 1)]);
        // The status skips value 1 (coalesced) and shows 2, then 3 for the other property.
        t.saw(0, 0, b, 2, t0 + ms(200));
        t.saw(0, 0, a, 1, t0 + ms(250));
        assert_eq!(t.behind(), vec![(0, 1)]);
        t.saw(0, 1, c, 3, t0 + ms(400));
        assert!(t.behind().is_empty());
        let lat = t.finish_phase();
        let mut every = lat.every.clone();
        every.sort();
        assert_eq!(every, vec![ms(190), ms(200), ms(380)]);
        assert_eq!(lat.unseen, 0);
        let mut last = lat.last.clone();
        last.sort();
        assert_eq!(last, vec![ms(190), ms(380)]);
        // The next phase starts empty.
        assert!(t.finish_phase().every.is_empty());
    }

    #[test]
    fn a_wrong_timestamp_or_missing_value_is_behind() {
        let t0 = Instant::now();
        let mut t = Track::new(2, 1);
        t.publish(1, &[0], 7, t0);
        t.saw(1, 0, 1, 6, t0);
        assert_eq!(t.behind(), vec![(1, 0)], "value right, timestamp wrong");
        t.publish(0, &[0], 9, t0);
        let lat = t.finish_phase();
        assert_eq!(lat.unseen, 1);
        assert_eq!(lat.every, vec![Duration::ZERO]);
    }

    #[test]
    fn out_of_range_input_is_ignored() {
        let mut t = Track::new(1, 1);
        let now = Instant::now();
        assert_eq!(t.publish(5, &[0], 0, now), None);
        assert_eq!(t.publish(0, &[3], 0, now), Some(1));
        t.saw(9, 9, 1, 0, now);
        t.saw(0, 1, 1, 0, now);
        assert!(t.behind().is_empty());
    }
}
