//! The object store: every object in memory, durable in sled, with one monotonic
//! resourceVersion and a replayable event history for watches.
//!
//! Start at [`Store::mutate`]: a read-modify-write of one key runs under the store lock, gets
//! the next resourceVersion, is written to sled (objects and the event in one atomic batch)
//! and returns at once; the caller then awaits [`Store::durable`], which resolves when the
//! committer task has flushed sled past that version (group commit: one fsync serves every
//! write that arrived while the previous one ran). Only flushed events reach watchers, in
//! resourceVersion order, so a watcher never sees a version a crash could take back.
//!
//! Keys are `<group>/<plural>/<namespace>/<name>` (`core` for the core group, an empty
//! namespace for cluster-scoped objects), so a namespace or a resource is a key prefix.
//! In sled: `o/<key>` holds an object, `e/<rv as 16 hex digits>` an event (type, key,
//! object), `m/compacted` the highest compacted version.
//!
//! Lists can be served *as of* an earlier resourceVersion (consistent pagination,
//! `resourceVersionMatch=Exact`): besides the current objects the store keeps, per key, the
//! versions that later writes superseded, for as long as their events stay in the history
//! (see `snapshot`). Two horizons, as in Kubernetes (watch cache vs. etcd compaction):
//!
//! - a watch resumes only from within the last [`StoreOptions::history`] events (410 Gone
//!   beyond);
//! - history (events and superseded versions) is compacted when it holds more than
//!   [`StoreOptions::history`] events *and* the oldest is older than
//!   [`StoreOptions::history_window`] — whichever keeps more wins — so a continue token
//!   stays good for at least the window (410 Expired after).
//!
//! Superseded versions are only kept in memory, so after a restart snapshots start at the
//! version the store was opened at (older continue tokens get 410 Expired).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{Notify, broadcast, watch};

use crate::status::ApiError;

mod snapshot;
mod stored;

pub use snapshot::{ListPage, ListRequest, Snapshot, SnapshotError};
pub use stored::{SelectorFields, Stored, StoredObj};

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not be opened.
    #[error("opening the store at {path}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    /// A write or flush failed.
    #[error("writing to the store")]
    Write(#[source] sled::Error),
    /// A stored record could not be decoded.
    #[error("stored record {key} is corrupt: {why}")]
    Corrupt { key: String, why: String },
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(format!("storage error: {e}"))
    }
}

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The Kubernetes name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "ADDED" => Some(Self::Added),
            "MODIFIED" => Some(Self::Modified),
            "DELETED" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// One change, as watchers receive it.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Storage key of the object.
    pub key: String,
    /// The object after the change (for deletes: its last state, at `rv`).
    pub obj: Stored,
    /// The object before the change, for watchers whose selector it no longer matches.
    pub prev: Option<Stored>,
}

/// What a mutation decided.
#[derive(Debug)]
pub enum Outcome {
    /// Store this value (the store sets `metadata.resourceVersion`).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Change nothing.
    Unchanged,
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Events a watch can resume from (410 Gone beyond); history is compacted past this
    /// count once it is also older than `history_window`.
    pub history: usize,
    /// History (and so snapshot lists) younger than this is kept whatever its size.
    pub history_window: Duration,
    /// sled cache capacity in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            history: 100_000,
            history_window: Duration::from_secs(300),
            cache_bytes: 64 << 20,
        }
    }
}

/// A flushed event in the history, with when it was flushed (for the time window).
struct Kept {
    ev: Arc<Event>,
    at: Instant,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<String, Stored>,
    history: VecDeque<Kept>,
    pending: Vec<Arc<Event>>,
    compacted: u64,
    /// Per key, the versions later writes superseded: `(superseding rv, version)`, oldest
    /// first, for writes after `floor` whose events are not compacted yet.
    past: BTreeMap<String, VecDeque<(u64, Stored)>>,
    /// Snapshots before this version cannot be rebuilt (the store's version when opened:
    /// superseded versions are not persisted).
    floor: u64,
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    db: sled::Db,
    inner: Mutex<Inner>,
    opts: StoreOptions,
    wake: Notify,
    flushed: watch::Sender<u64>,
    events: broadcast::Sender<Arc<Event>>,
    failed: watch::Sender<bool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn object_key(key: &str) -> Vec<u8> {
    format!("o/{key}").into_bytes()
}

fn event_key(rv: u64) -> Vec<u8> {
    format!("e/{rv:016x}").into_bytes()
}

/// Opens sled. If its file lock is still taken, the holder is a background thread of a store
/// this process just dropped (a restart in place), which lets go within milliseconds: retry
/// for up to two seconds instead of failing (as edgecore's store does).
fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            Err(sled::Error::Io(io))
                if io.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

impl Store {
    /// Open (or create) the store in `dir` and load it into memory.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Arc<Self>, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes);
        let db = open_sled(&config).map_err(|source| StoreError::Open {
            path: dir.display().to_string(),
            source,
        })?;
        let mut objects = BTreeMap::new();
        let mut rv = 0u64;
        for item in db.scan_prefix(b"o/") {
            let (k, v) = item.map_err(StoreError::Write)?;
            let key = String::from_utf8_lossy(&k[2..]).to_string();
            let value: Value = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                why: e.to_string(),
            })?;
            let orv = rv_of(&value);
            rv = rv.max(orv);
            let stored = Stored::new(&value, &key, orv);
            objects.insert(key, stored);
        }
        let compacted = match db.get(b"m/compacted").map_err(StoreError::Write)? {
            Some(v) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
            None => 0,
        };
        let mut history = VecDeque::new();
        for item in db.scan_prefix(b"e/") {
            let (k, v) = item.map_err(StoreError::Write)?;
            let key = String::from_utf8_lossy(&k).to_string();
            let ev = decode_event(&v).ok_or_else(|| StoreError::Corrupt {
                key: key.clone(),
                why: "bad event record".into(),
            })?;
            rv = rv.max(ev.rv);
            history.push_back(Kept {
                ev: Arc::new(ev),
                at: Instant::now(),
            });
        }
        if let Some(v) = db.get(b"m/rv").map_err(StoreError::Write)? {
            rv = rv.max(String::from_utf8_lossy(&v).parse().unwrap_or(0));
        }
        let (events, _) = broadcast::channel(16_384);
        let store = Arc::new(Self {
            db,
            inner: Mutex::new(Inner {
                rv,
                objects,
                history,
                pending: Vec::new(),
                compacted,
                past: BTreeMap::new(),
                floor: rv,
            }),
            opts,
            wake: Notify::new(),
            flushed: watch::Sender::new(rv),
            events,
            failed: watch::Sender::new(false),
        });
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run the committer: flushes sled after writes and releases their events to watchers.
    /// Spawn it once; it ends when `shutdown` fires (after a last flush).
    pub async fn run_committer(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let target = self.lock().rv;
            if *self.flushed.borrow() >= target {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = shutdown.cancelled() => {
                        let _ = self.db.flush();
                        return;
                    }
                }
            }
            let db = self.db.clone();
            let res = tokio::task::spawn_blocking(move || db.flush()).await;
            if !matches!(res, Ok(Ok(_))) {
                tracing::error!("sled flush failed; writes are no longer acknowledged");
                self.failed.send_replace(true);
                return;
            }
            self.release(target);
        }
    }

    fn release(&self, upto: u64) {
        let mut inner = self.lock();
        let pending = std::mem::take(&mut inner.pending);
        let (done, keep): (Vec<_>, Vec<_>) = pending.into_iter().partition(|e| e.rv <= upto);
        inner.pending = keep;
        let now = Instant::now();
        for ev in done {
            let _ = self.events.send(ev.clone());
            inner.history.push_back(Kept { ev, at: now });
        }
        let mut compact_to = None;
        while inner.history.len() > self.opts.history
            && inner
                .history
                .front()
                .is_some_and(|k| now.duration_since(k.at) >= self.opts.history_window)
        {
            if let Some(old) = inner.history.pop_front() {
                compact_to = Some(old.ev.rv);
                snapshot::forget(&mut inner.past, &old.ev);
            }
        }
        if let Some(c) = compact_to {
            inner.compacted = c;
            let first = inner.history.front().map(|k| k.ev.rv).unwrap_or(c + 1);
            drop(inner);
            let mut batch = sled::Batch::default();
            for (k, _) in self.db.range(event_key(0)..event_key(first)).flatten() {
                batch.remove(k);
            }
            batch.insert(b"m/compacted".as_slice(), c.to_string().as_bytes());
            if let Err(e) = self.db.apply_batch(batch) {
                tracing::warn!(error = %e, "compacting event history failed");
            }
        } else {
            drop(inner);
        }
        // `send_replace`, not `send`: `send` keeps the old value when nobody is
        // subscribed (a write whose client went away), and the committer would then
        // flush the same version forever and never see shutdown.
        self.flushed.send_replace(upto);
    }

    /// Wait until everything up to `rv` is on disk.
    pub async fn durable(&self, rv: u64) -> Result<(), ApiError> {
        let mut rx = self.flushed.subscribe();
        let mut failed = self.failed.subscribe();
        loop {
            if *rx.borrow_and_update() >= rv {
                return Ok(());
            }
            if *failed.borrow_and_update() {
                return Err(ApiError::internal("the store failed to persist the write"));
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(ApiError::unavailable("store closed")) },
                _ = failed.changed() => {}
            }
        }
    }

    /// Read-modify-write `key`. `f` sees the current object (if any) and decides; it runs
    /// under the store lock, so it must be quick and do no IO. Returns the event it caused.
    pub fn mutate<F>(&self, key: &str, f: F) -> Result<Option<Arc<Event>>, ApiError>
    where
        F: FnOnce(Option<&Stored>, u64) -> Result<Outcome, ApiError>,
    {
        let mut inner = self.lock();
        let current = inner.objects.get(key).cloned();
        let next_rv = inner.rv + 1;
        let outcome = f(current.as_ref(), next_rv)?;
        let (kind, obj) = match outcome {
            Outcome::Unchanged => return Ok(None),
            Outcome::Put(mut value) => {
                set_rv(&mut value, next_rv);
                let kind = if current.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (kind, Stored::new(&value, key, next_rv))
            }
            Outcome::Delete => {
                let Some(cur) = &current else {
                    return Ok(None);
                };
                let mut value = cur.value();
                set_rv(&mut value, next_rv);
                (EventType::Deleted, Stored::new(&value, key, next_rv))
            }
        };
        // The superseded version: for snapshot lists and the event's `prev`.
        let superseded = current.clone();
        let ev = Arc::new(Event {
            rv: next_rv,
            kind,
            key: key.to_string(),
            obj,
            prev: superseded.clone(),
        });
        let mut batch = sled::Batch::default();
        match kind {
            EventType::Deleted => batch.remove(object_key(key)),
            _ => batch.insert(object_key(key), ev.obj.raw.to_vec()),
        }
        batch.insert(event_key(next_rv), encode_event(&ev));
        batch.insert(b"m/rv".as_slice(), next_rv.to_string().as_bytes());
        self.db
            .apply_batch(batch)
            .map_err(|e| ApiError::from(StoreError::Write(e)))?;
        inner.rv = next_rv;
        if let Some(old) = superseded {
            inner
                .past
                .entry(key.to_string())
                .or_default()
                .push_back((next_rv, old));
        }
        match kind {
            EventType::Deleted => {
                inner.objects.remove(key);
            }
            _ => {
                inner.objects.insert(key.to_string(), ev.obj.clone());
            }
        }
        inner.pending.push(ev.clone());
        drop(inner);
        self.wake.notify_one();
        Ok(Some(ev))
    }

    /// The current object at `key`.
    pub fn get(&self, key: &str) -> Option<Stored> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object whose key starts with `prefix` (in key order) starting after `after`,
    /// and the store's resourceVersion at that moment.
    pub fn list(&self, prefix: &str, after: Option<&str>) -> (Vec<(String, Stored)>, u64) {
        let inner = self.lock();
        let start = match after {
            Some(a) if a.starts_with(prefix) => std::ops::Bound::Excluded(a.to_string()),
            _ => std::ops::Bound::Included(prefix.to_string()),
        };
        let items = inner
            .objects
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (items, inner.rv)
    }

    /// Keys under `prefix` (cheap: no values cloned).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The current resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Start watching: the flushed events after `from` that are still in history, and a
    /// receiver for every later one, without gap or duplicate. `Err` = compacted (410).
    #[allow(clippy::type_complexity)]
    pub fn watch_from(
        &self,
        from: u64,
    ) -> Result<(Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>), u64> {
        let inner = self.lock();
        let floor = self.watch_floor(&inner);
        if from < floor {
            return Err(floor);
        }
        let rx = self.events.subscribe();
        let replay = inner
            .history
            .iter()
            .filter(|k| k.ev.rv > from)
            .map(|k| k.ev.clone())
            .collect();
        Ok((replay, rx))
    }

    /// A receiver of every flushed event from now on, plus the store's version now.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Event>>, u64) {
        let inner = self.lock();
        (self.events.subscribe(), inner.rv)
    }

    /// Events currently kept for resumption (first, last).
    pub fn history_bounds(&self) -> (u64, u64) {
        let inner = self.lock();
        (self.watch_floor(&inner), inner.rv)
    }

    /// The oldest version a watch can resume from: the last `history` events only, like
    /// Kubernetes' watch cache, even when the time window keeps more.
    fn watch_floor(&self, inner: &Inner) -> u64 {
        let len = inner.history.len();
        let by_count = match len.checked_sub(self.opts.history.saturating_add(1)) {
            Some(i) => inner.history.get(i).map_or(0, |k| k.ev.rv),
            None => 0,
        };
        inner.compacted.max(by_count)
    }

    /// The oldest version a snapshot list can be served at.
    pub fn oldest_snapshot(&self) -> u64 {
        let inner = self.lock();
        inner.compacted.max(inner.floor)
    }

    /// Number of objects stored.
    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `metadata.resourceVersion` parsed as ours (0 when absent or foreign).
pub fn rv_of(value: &Value) -> u64 {
    value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn set_rv(value: &mut Value, rv: u64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn encode_event(ev: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(ev.obj.raw.len() + ev.key.len() + 32);
    out.extend_from_slice(ev.kind.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(ev.key.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&ev.obj.raw);
    out
}

fn decode_event(v: &[u8]) -> Option<Event> {
    let mut parts = v.splitn(3, |b| *b == b'\n');
    let kind = EventType::parse(std::str::from_utf8(parts.next()?).ok()?)?;
    let key = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let raw = parts.next()?;
    // Only the version is read now (no tree is built).
    let head: RvOnly = serde_json::from_slice(raw).ok()?;
    let rv = head
        .metadata
        .resource_version
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let obj = Stored::from_bytes(Bytes::copy_from_slice(raw), &key, rv);
    Some(Event {
        rv,
        kind,
        key,
        obj,
        prev: None,
    })
}

/// The part of a stored object [`decode_event`] reads.
#[derive(serde::Deserialize)]
struct RvOnly {
    #[serde(default)]
    metadata: RvMeta,
}

#[derive(Default, serde::Deserialize)]
struct RvMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "store/tests.rs"]
mod tests;
