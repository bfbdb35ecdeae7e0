//! Lists as of a resourceVersion: the store's consistent snapshots.
//!
//! The state of a key at version `s` is its current object when that is not newer than
//! `s`; otherwise the version a later write superseded (`Inner::past`, one entry per
//! modification or deletion, kept as long as the write's event is in the history) that was
//! current at `s`; otherwise the key did not exist at `s`. A list at `s` walks the current
//! keys and the keys with superseded versions together, in key order, so a page costs the
//! keys it examines (plus a log-time seek), whatever the size of the store.
//!
//! Because a snapshot never changes, a long scan releases the store lock every
//! [`BATCH`] keys and carries on where it stopped: writers are never held up for long.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::iter::Peekable;
use std::ops::Bound;

use super::{Event, Inner, Store, Stored};

/// Keys examined per hold of the store lock.
const BATCH: usize = 2048;

/// Which state of the data a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshot {
    /// The current state; the list's resourceVersion is the store's version now.
    Latest,
    /// The state right after version `rv` was written.
    At(u64),
}

/// Why a snapshot cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The version was compacted (or predates the store's opening).
    #[error("version {requested} is compacted (oldest kept: {oldest})")]
    Compacted { requested: u64, oldest: u64 },
    /// The version was never written.
    #[error("version {requested} is newer than the store's {current}")]
    TooNew { requested: u64, current: u64 },
}

/// One page of a list.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest<'a> {
    /// Key prefix of the list (a resource, or a resource in a namespace).
    pub prefix: &'a str,
    /// The state to read.
    pub at: Snapshot,
    /// Start after this key (a continue point).
    pub after: Option<&'a str>,
    /// At most this many items.
    pub limit: Option<usize>,
    /// Count the objects after a full page (`remainingItemCount`); costs a scan of them.
    pub count_remaining: bool,
}

/// What a page holds.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The matching objects, in key order.
    pub items: Vec<Stored>,
    /// The version the page was read at.
    pub rv: u64,
    /// When more objects follow: the key of the last item returned (the continue point).
    pub next: Option<String>,
    /// Objects (matching or not) after the page, when asked for and more follow.
    pub remaining: Option<usize>,
}

impl Store {
    /// Read a page of the objects under `req.prefix` as of `req.at` that pass `filter`.
    pub fn list_page(
        &self,
        req: &ListRequest<'_>,
        filter: &mut dyn FnMut(&Stored) -> bool,
    ) -> Result<ListPage, SnapshotError> {
        let mut inner = self.lock();
        let rv = match req.at {
            Snapshot::Latest => inner.rv,
            Snapshot::At(s) => s,
        };
        check(&inner, rv)?;
        let mut items = Vec::new();
        let mut resume = start_after(req.prefix, req.after);
        let mut last_item: Option<String> = None;
        let limit = req.limit.unwrap_or(usize::MAX);
        loop {
            let mut stopped = None;
            let mut full = false;
            let scan = at_version(&inner, req.prefix, resume.clone(), rv);
            for (examined, (key, obj)) in scan.enumerate() {
                if examined == BATCH {
                    stopped = Some(key.to_string());
                    break;
                }
                let Some(obj) = obj else { continue };
                if items.len() == limit {
                    full = true;
                    break;
                }
                if filter(obj) {
                    items.push(obj.clone());
                    if items.len() == limit {
                        last_item = Some(key.to_string());
                    }
                }
            }
            if full {
                let next = last_item;
                let remaining = match (&next, req.count_remaining) {
                    (Some(after), true) => Some(count(&inner, req.prefix, after, rv)),
                    _ => None,
                };
                return Ok(ListPage {
                    items,
                    rv,
                    next,
                    remaining,
                });
            }
            let Some(stop) = stopped else {
                return Ok(ListPage {
                    items,
                    rv,
                    next: None,
                    remaining: None,
                });
            };
            // `stop` was not examined yet: resume at it.
            resume = Bound::Included(stop);
            drop(inner);
            inner = self.lock();
            check(&inner, rv)?;
        }
    }
}

/// Where a scan of `prefix` starts: after `after` when it is under the prefix, else at the
/// prefix itself.
fn start_after(prefix: &str, after: Option<&str>) -> Bound<String> {
    match after {
        Some(a) if a.starts_with(prefix) => Bound::Excluded(a.to_string()),
        _ => Bound::Included(prefix.to_string()),
    }
}

fn check(inner: &Inner, rv: u64) -> Result<(), SnapshotError> {
    if rv > inner.rv {
        return Err(SnapshotError::TooNew {
            requested: rv,
            current: inner.rv,
        });
    }
    let oldest = inner.compacted.max(inner.floor);
    if rv < oldest {
        return Err(SnapshotError::Compacted {
            requested: rv,
            oldest,
        });
    }
    Ok(())
}

/// The objects after `after` that existed at `rv`.
fn count(inner: &Inner, prefix: &str, after: &str, rv: u64) -> usize {
    at_version(inner, prefix, start_after(prefix, Some(after)), rv)
        .filter(|(_, o)| o.is_some())
        .count()
}

type Chain = VecDeque<(u64, Stored)>;

/// The state at `rv` of a key whose current object is `cur` and superseded versions `chain`.
fn state<'a>(cur: Option<&'a Stored>, chain: Option<&'a Chain>, rv: u64) -> Option<&'a Stored> {
    if let Some(c) = cur
        && c.rv <= rv
    {
        return Some(c);
    }
    let chain = chain?;
    let i = chain.partition_point(|(superseded, _)| *superseded <= rv);
    chain.get(i).map(|(_, v)| v).filter(|v| v.rv <= rv)
}

/// Every key under `prefix` from `lower` on that exists now or has superseded versions, in
/// order, with its state at `rv` (`None`: absent then).
fn at_version<'a>(
    inner: &'a Inner,
    prefix: &'a str,
    lower: Bound<String>,
    rv: u64,
) -> impl Iterator<Item = (&'a str, Option<&'a Stored>)> + 'a {
    let current = inner
        .objects
        .range::<String, _>((lower.clone(), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix));
    // Nothing was superseded after the current version: the current objects are the state.
    let past = (rv < inner.rv)
        .then(|| inner.past.range::<String, _>((lower, Bound::Unbounded)))
        .into_iter()
        .flatten()
        .take_while(move |(k, _)| k.starts_with(prefix));
    Merge {
        a: current.peekable(),
        b: past.peekable(),
    }
    .map(move |(k, cur, chain)| (k, state(cur, chain, rv)))
}

/// Two key-ordered iterators (current objects, superseded chains) joined on the key.
struct Merge<A: Iterator, B: Iterator> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<'a, A, B> Iterator for Merge<A, B>
where
    A: Iterator<Item = (&'a String, &'a Stored)>,
    B: Iterator<Item = (&'a String, &'a Chain)>,
{
    type Item = (&'a str, Option<&'a Stored>, Option<&'a Chain>);

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            Ordering::Less => self.a.next().map(|(k, v)| (k.as_str(), Some(v), None)),
            Ordering::Greater => self.b.next().map(|(k, c)| (k.as_str(), None, Some(c))),
            Ordering::Equal => {
                let (k, v) = self.a.next()?;
                let c = self.b.next().map(|(_, c)| c);
                Some((k.as_str(), Some(v), c))
            }
        }
    }
}

/// Drop the superseded versions an event being compacted made (they are no longer needed:
/// no snapshot that old can be asked for).
pub(super) fn forget(past: &mut BTreeMap<String, Chain>, ev: &Event) {
    if let Some(chain) = past.get_mut(&ev.key) {
        while chain.front().is_some_and(|(sup, _)| *sup <= ev.rv) {
            chain.pop_front();
        }
        if chain.is_empty() {
            past.remove(&ev.key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "snapshot_tests.rs"]
mod tests;
