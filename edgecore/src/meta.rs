//! MetaManager: the edge's cache of everything the cloud sent, persisted in
//! the [`store`](crate::store) so edgecore cold-boots with no cloud.
//!
//! Shape (a reflector, like kube-runtime's): one writer task owns the state
//! and the store trees; readers hold a [`MetaReader`], a `watch` channel of
//! immutable [`MetaSnapshot`]s, so a read is an `Arc` clone and no reader
//! ever sees half an update. While a resync runs (from [`MetaHandle::begin_session`]
//! until the SYNCED frame), durable changes are staged and the new state is
//! swapped in whole when the resync completes (or the session ends).
//!
//! Group commit: the hub hands a batch of frames to [`MetaHandle::apply`]; the
//! writer decides each frame ([`apply::decide`]), writes the batch as one sled
//! batch, flushes, and only then answers — so the hub commits the frames to
//! its `AckTracker` and the ACK means "fsynced".
//!
//! Tombstones are not reported in the inventory; the cloud re-sends one for
//! every referenced-but-absent key on each resync, and on SYNCED the edge
//! forgets tombstones that were not re-sent.

pub mod apply;
mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use proto::{Frame, InventoryEntry};
use tokio::sync::{mpsc, oneshot, watch};

use crate::store::{Batch, Store, StoreError, Tree};
use crate::telemetry::Metrics;
use apply::Change;

/// Name of the store tree of objects (key -> record).
const OBJECTS: &str = "objects";
/// Name of the store tree of tombstones (key -> empty).
const TOMBSTONES: &str = "tombstones";
/// Name of the store tree of small bookkeeping values.
pub const SYSTEM: &str = "system";
/// System key: RFC 3339 time of the last completed resync.
pub const LAST_SYNC_KEY: &str = "last_sync";

/// One object as the cloud sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// The object's JSON, exactly as the API returned it.
    pub json: Bytes,
}

/// An immutable view of the cache.
#[derive(Debug, Clone, Default)]
pub struct MetaSnapshot {
    objects: BTreeMap<String, Arc<StoredObject>>,
    tombstones: BTreeSet<String>,
    /// Bumped on every published change.
    pub generation: u64,
}

impl MetaSnapshot {
    /// The object at `key` (`<namespace>/<kind>/<name>`).
    pub fn get(&self, key: &str) -> Option<&Arc<StoredObject>> {
        self.objects.get(key)
    }

    /// Whether the cloud said `key` does not exist.
    pub fn is_tombstoned(&self, key: &str) -> bool {
        self.tombstones.contains(key)
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub fn prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Arc<StoredObject>)> + 'a {
        self.objects
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when no object is held.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The inventory entries (key, uid, resourceVersion) in key order.
    pub fn inventory(&self) -> Vec<InventoryEntry> {
        self.objects
            .iter()
            .map(|(key, o)| InventoryEntry {
                key: key.clone(),
                uid: o.uid.clone(),
                resource_version: o.resource_version.clone(),
            })
            .collect()
    }
}

/// A cheap clonable reader of the cache.
#[derive(Debug, Clone)]
pub struct MetaReader {
    rx: watch::Receiver<Arc<MetaSnapshot>>,
}

impl MetaReader {
    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<MetaSnapshot> {
        self.rx.borrow().clone()
    }

    /// Waits until a newer snapshot is published; `false` once the writer
    /// is gone.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// Why MetaManager failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Loading, writing or flushing the store failed.
    #[error("MetaManager store access failed")]
    Store(#[from] StoreError),
    /// The writer task has stopped.
    #[error("MetaManager writer has stopped")]
    Stopped,
}

/// Result of one group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Highest frame id of the batch: everything up to it is durable.
    pub up_to: u64,
    /// Frames that changed something.
    pub changed: usize,
    /// Of `changed`, the cloud's echoes of this edge's own Device status writes: held in
    /// memory, neither written nor published on their own (no reader acts on a Device's
    /// status; the next other change publishes them with it).
    pub echoes: usize,
    /// Frames that changed nothing (older version, uid mismatch...).
    pub ignored: usize,
    /// The batch contained SYNCED: the resync is complete.
    pub synced: bool,
}

enum Command {
    Apply {
        frames: Vec<Frame>,
        reply: oneshot::Sender<Result<Applied, MetaError>>,
    },
    BeginSession {
        reply: oneshot::Sender<Vec<InventoryEntry>>,
    },
    EndSession,
}

/// Handle to the writer task (cheap to clone).
#[derive(Debug, Clone)]
pub struct MetaHandle {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Apply { frames, .. } => write!(f, "Apply({} frames)", frames.len()),
            Command::BeginSession { .. } => f.write_str("BeginSession"),
            Command::EndSession => f.write_str("EndSession"),
        }
    }
}

impl MetaHandle {
    /// Applies `frames` (delivered in order) as one durable group commit.
    pub async fn apply(&self, frames: Vec<Frame>) -> Result<Applied, MetaError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Apply { frames, reply })
            .await
            .map_err(|_| MetaError::Stopped)?;
        rx.await.map_err(|_| MetaError::Stopped)?
    }

    /// A new session starts a resync: returns the inventory of what is held
    /// (after every earlier batch) and stages changes until SYNCED.
    pub async fn begin_session(&self) -> Result<Vec<InventoryEntry>, MetaError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::BeginSession { reply })
            .await
            .map_err(|_| MetaError::Stopped)?;
        rx.await.map_err(|_| MetaError::Stopped)
    }

    /// The session ended: publish whatever is durable, even mid-resync.
    pub async fn end_session(&self) {
        let _ = self.tx.send(Command::EndSession).await;
    }
}

/// Loads the cache from `store` and starts the writer task. The task ends
/// when every [`MetaHandle`] is dropped.
pub fn start(store: Store, metrics: Metrics) -> Result<(MetaHandle, MetaReader), MetaError> {
    let mut writer = Writer::load(store, metrics)?;
    let (snap_tx, snap_rx) = watch::channel(Arc::new(writer.snapshot()));
    let (tx, mut rx) = mpsc::channel::<Command>(16);
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            writer.handle(cmd, &snap_tx).await;
        }
    });
    Ok((MetaHandle { tx }, MetaReader { rx: snap_rx }))
}

/// The writer's state: the working (durable) view plus resync staging.
struct Writer {
    store: Store,
    objects_tree: Tree,
    tombstones_tree: Tree,
    system: Tree,
    objects: BTreeMap<String, Arc<StoredObject>>,
    tombstones: BTreeSet<String>,
    /// A resync is running: do not publish until SYNCED or session end.
    syncing: bool,
    /// Tombstones (re-)sent during the current resync.
    session_tombstones: BTreeSet<String>,
    /// Progress of the running resync, for its log lines.
    progress: Option<ResyncProgress>,
    generation: u64,
    metrics: Metrics,
}

/// A resync's progress: frames received, and when/at what count it was last logged.
#[derive(Debug, Clone, Copy)]
struct ResyncProgress {
    started: std::time::Instant,
    frames: u64,
    logged_at: std::time::Instant,
    logged_frames: u64,
}

/// Log a progress line every this many frames ...
const PROGRESS_FRAMES: u64 = 1_000;
/// ... or this often, whichever comes first (a slow link still shows it is moving).
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a resync progress line is due: enough frames or enough time since the last one
/// (and something new arrived).
fn progress_due(frames: u64, logged_frames: u64, since_logged: std::time::Duration) -> bool {
    frames > logged_frames
        && (frames - logged_frames >= PROGRESS_FRAMES || since_logged >= PROGRESS_EVERY)
}

impl Writer {
    fn load(store: Store, metrics: Metrics) -> Result<Writer, MetaError> {
        let objects_tree = store.tree(OBJECTS)?;
        let tombstones_tree = store.tree(TOMBSTONES)?;
        let system = store.tree(SYSTEM)?;
        let mut objects = BTreeMap::new();
        for entry in objects_tree.scan_prefix(b"") {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            match record::decode(&value) {
                Some(obj) => {
                    objects.insert(key, Arc::new(obj));
                }
                // Not reported in the inventory, so the resync sends it again.
                None => tracing::warn!(%key, "skipping an unreadable stored object"),
            }
        }
        let mut tombstones = BTreeSet::new();
        for entry in tombstones_tree.scan_prefix(b"") {
            let (key, _) = entry?;
            tombstones.insert(String::from_utf8_lossy(&key).into_owned());
        }
        metrics.objects.set(objects.len() as i64);
        tracing::info!(
            objects = objects.len(),
            tombstones = tombstones.len(),
            "loaded the edge cache"
        );
        Ok(Writer {
            store,
            objects_tree,
            tombstones_tree,
            system,
            objects,
            tombstones,
            syncing: false,
            session_tombstones: BTreeSet::new(),
            progress: None,
            generation: 0,
            metrics,
        })
    }

    fn snapshot(&self) -> MetaSnapshot {
        MetaSnapshot {
            objects: self.objects.clone(),
            tombstones: self.tombstones.clone(),
            generation: self.generation,
        }
    }

    fn publish(&mut self, tx: &watch::Sender<Arc<MetaSnapshot>>) {
        self.generation += 1;
        self.metrics.objects.set(self.objects.len() as i64);
        tx.send_replace(Arc::new(self.snapshot()));
    }

    async fn handle(&mut self, cmd: Command, tx: &watch::Sender<Arc<MetaSnapshot>>) {
        match cmd {
            Command::Apply { frames, reply } => {
                let count = frames.len() as u64;
                let res = self.apply(frames).await;
                self.log_progress(count, matches!(res, Ok(a) if a.synced));
                if matches!(res, Ok(a) if a.changed > a.echoes || a.synced) && !self.syncing {
                    self.publish(tx);
                }
                let _ = reply.send(res);
            }
            Command::BeginSession { reply } => {
                self.syncing = true;
                self.session_tombstones.clear();
                let now = std::time::Instant::now();
                self.progress = Some(ResyncProgress {
                    started: now,
                    frames: 0,
                    logged_at: now,
                    logged_frames: 0,
                });
                tracing::info!(held = self.objects.len(), "resync started");
                let entries = self
                    .objects
                    .iter()
                    .map(|(key, o)| InventoryEntry {
                        key: key.clone(),
                        uid: o.uid.clone(),
                        resource_version: o.resource_version.clone(),
                    })
                    .collect();
                let _ = reply.send(entries);
            }
            Command::EndSession => {
                if let Some(p) = self.progress.take() {
                    tracing::info!(frames = p.frames, "resync interrupted (session ended)");
                }
                if self.syncing {
                    self.syncing = false;
                    self.publish(tx);
                }
            }
        }
    }

    /// Counts `frames` into the running resync and logs a progress line when one is due,
    /// and a summary when it completed.
    fn log_progress(&mut self, frames: u64, synced: bool) {
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        p.frames += frames;
        let now = std::time::Instant::now();
        if synced {
            tracing::info!(
                frames = p.frames,
                objects = self.objects.len(),
                tombstones = self.tombstones.len(),
                elapsed_ms = now.duration_since(p.started).as_millis() as u64,
                "resync complete"
            );
            self.progress = None;
        } else if progress_due(p.frames, p.logged_frames, now.duration_since(p.logged_at)) {
            tracing::info!(
                frames = p.frames,
                objects = self.objects.len(),
                elapsed_ms = now.duration_since(p.started).as_millis() as u64,
                "resync in progress"
            );
            p.logged_at = now;
            p.logged_frames = p.frames;
        }
    }

    /// Decides every frame against the working state, writes the batch,
    /// flushes. Memory follows sled's own view (both change before the
    /// flush); only the answer — and so the ACK — waits for the flush.
    async fn apply(&mut self, frames: Vec<Frame>) -> Result<Applied, MetaError> {
        let mut out = Applied::default();
        let mut objects_batch = Batch::default();
        let mut tomb_batch = Batch::default();
        for frame in &frames {
            out.up_to = out.up_to.max(frame.id);
            let change = match apply::decide(&self.objects, frame) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a frame MetaManager does not handle");
                    out.ignored += 1;
                    continue;
                }
            };
            match change {
                Change::Put { key, object, write } => {
                    // A Device whose status alone changed is held in memory (so the
                    // inventory and the journal see the current version) but not written,
                    // and a batch of nothing else is not published: every twin report used
                    // to cost a synced write here, and a snapshot that woke every reader.
                    if write {
                        objects_batch.put(&key, record::encode(&object));
                    } else {
                        out.echoes += 1;
                    }
                    if self.tombstones.remove(&key) {
                        tomb_batch.delete(&key);
                    }
                    self.objects.insert(key, object);
                    out.changed += 1;
                }
                Change::Remove { key } => {
                    objects_batch.delete(&key);
                    self.objects.remove(&key);
                    out.changed += 1;
                }
                Change::Tombstone { key } => {
                    if self.objects.remove(&key).is_some() {
                        objects_batch.delete(&key);
                    }
                    tomb_batch.put(&key, []);
                    self.session_tombstones.insert(key.clone());
                    self.tombstones.insert(key);
                    out.changed += 1;
                }
                Change::Synced => {
                    let stale: Vec<String> = self
                        .tombstones
                        .difference(&self.session_tombstones)
                        .cloned()
                        .collect();
                    for key in stale {
                        tomb_batch.delete(&key);
                        self.tombstones.remove(&key);
                    }
                    self.syncing = false;
                    out.synced = true;
                }
                Change::Ignore { reason } => {
                    self.metrics
                        .meta_ignored
                        .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
                        .inc();
                    out.ignored += 1;
                }
            }
        }
        let wrote = !objects_batch.is_empty() || !tomb_batch.is_empty() || out.synced;
        if !objects_batch.is_empty() {
            self.objects_tree.apply(objects_batch)?;
        }
        if !tomb_batch.is_empty() {
            self.tombstones_tree.apply(tomb_batch)?;
        }
        if out.synced {
            self.system
                .put(LAST_SYNC_KEY, chrono::Utc::now().to_rfc3339())?;
        }
        if out.echoes > 0 {
            self.metrics.meta_status_echoes.inc_by(out.echoes as u64);
        }
        if wrote {
            self.store.flush_blocking().await?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod progress_tests {
    use super::{PROGRESS_EVERY, PROGRESS_FRAMES, progress_due};
    use std::time::Duration;

    #[test]
    fn progress_is_logged_per_thousand_frames_or_five_seconds() {
        assert!(!progress_due(999, 0, Duration::from_secs(1)));
        assert!(progress_due(PROGRESS_FRAMES, 0, Duration::ZERO));
        assert!(progress_due(1_500, 1_000, PROGRESS_EVERY));
        assert!(
            !progress_due(1_000, 1_000, Duration::from_secs(60)),
            "nothing new"
        );
    }
}
