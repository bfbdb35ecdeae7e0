//! The edge's durable store: the only module that touches sled.
//!
//! Everything edgecore keeps across restarts (the objects the cloud sent, the
//! outbox of upstream writes, a little bookkeeping) lives in one sled database
//! under the data directory, split into named [`Tree`]s. The engine stays
//! behind this small surface (get / put / delete / prefix scan / atomic
//! [`Batch`] / [`Store::flush`]) so replacing sled is one file's concern.
//!
//! Start at [`Store::open_or_recover`]: it takes an exclusive lock file next to
//! the directory, opens sled with a capped cache, checks the schema version,
//! and if the database cannot be opened (corruption, a panic inside sled, an
//! unknown schema version) moves it aside to `<dir>.corrupt-<unix-ts>` and
//! starts empty, reporting a [`Recovery`] so edgecore can raise a node
//! condition while the inventory resync refills it. It never panics.
//!
//! Durability rule: a write is durable only after [`Store::flush`] returned
//! (fsync). Callers ack to the cloud only after that.
//!
//! The kill -9 torture that proves the rule lives in [`torture`].

pub mod torture;

use std::fs::{File, OpenOptions};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::histogram::Histogram;

/// Version of the on-disk layout this build writes and reads.
pub const SCHEMA_VERSION: &str = "1";
/// Key of the schema version in the default tree.
const SCHEMA_KEY: &[u8] = b"kedge/schema-version";
/// Default cap of sled's page cache (sled's own default is 1 GiB).
pub const DEFAULT_CACHE_CAPACITY: u64 = 16 * 1024 * 1024;

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Bytes of page cache sled may use.
    pub cache_capacity: u64,
    /// Observes the latency of every [`Store::flush`], if set.
    pub flush_seconds: Option<Histogram>,
    /// How long to wait for the store's lock when another process holds it. The daemon
    /// waits: a short-lived reader (`edgecore status` while the daemon is still starting)
    /// must not make it exit. Zero (the default) refuses at once.
    pub lock_wait: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            flush_seconds: None,
            lock_wait: Duration::ZERO,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store (the lock file is taken).
    #[error("store {dir} is in use by another process (lock {lock} is held)")]
    Locked {
        /// The store directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The directory or its lock file could not be created or opened.
    #[error("cannot prepare store directory {dir}")]
    Prepare {
        /// The store directory.
        dir: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// sled refused to open the database.
    #[error("cannot open store {dir}: {detail}")]
    Open {
        /// The store directory.
        dir: PathBuf,
        /// What went wrong (sled error or panic message).
        detail: String,
    },
    /// The database holds a schema version this build does not read.
    #[error("store {dir} has schema version {found:?}, this build reads {SCHEMA_VERSION:?}")]
    Schema {
        /// The store directory.
        dir: PathBuf,
        /// The version found.
        found: String,
    },
    /// Moving a broken store aside failed.
    #[error("cannot move broken store {dir} aside to {to}")]
    MoveAside {
        /// The store directory.
        dir: PathBuf,
        /// The intended new name.
        to: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A read, write or flush failed.
    #[error("store {op} failed")]
    Io {
        /// The operation (`get`, `put`, `batch`, `flush`, ...).
        op: &'static str,
        /// The sled error.
        #[source]
        source: sled::Error,
    },
}

impl StoreError {
    /// Whether the database itself looks broken, so moving it aside and
    /// starting empty is the right answer (as opposed to "locked" or "no
    /// permission", where moving it would lose good data).
    fn is_broken(&self) -> bool {
        matches!(self, StoreError::Open { .. } | StoreError::Schema { .. })
    }
}

/// What [`Store::open_or_recover`] did when the old store was unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where the broken store was moved.
    pub moved_to: PathBuf,
    /// Why it could not be used.
    pub reason: String,
    /// When (seconds since the Unix epoch).
    pub at_unix: u64,
}

/// A store opened by [`Store::open_or_recover`].
#[derive(Debug)]
pub struct Opened {
    /// The usable store.
    pub store: Store,
    /// Set when the previous store was moved aside and this one is new.
    pub recovered: Option<Recovery>,
}

/// The durable store: a cheap clonable handle to one sled database.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    dir: PathBuf,
    flush_seconds: Option<Histogram>,
    /// Held for the life of the store; the OS releases the lock on exit.
    _lock: File,
}

/// A named keyspace of the store.
#[derive(Debug, Clone)]
pub struct Tree {
    inner: sled::Tree,
}

/// An atomic group of writes to one [`Tree`].
#[derive(Debug, Default)]
pub struct Batch {
    inner: sled::Batch,
    len: usize,
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.inner.insert(key.as_ref(), value.as_ref());
        self.len += 1;
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.inner.remove(key.as_ref());
        self.len += 1;
    }

    /// Number of writes in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. Fails if it is locked by
    /// another process, unreadable, or of another schema version.
    pub fn open(dir: &Path, config: &StoreConfig) -> Result<Store, StoreError> {
        let lock = take_lock(dir, config.lock_wait)?;
        Self::open_locked(dir, config, lock)
    }

    /// Opens the store in `dir`; if it is broken, moves it aside to
    /// `<dir>.corrupt-<unix-ts>`, creates a fresh one and says so in
    /// [`Opened::recovered`]. Errors only when even that is impossible
    /// (locked, no permission, disk full).
    pub fn open_or_recover(dir: &Path, config: &StoreConfig) -> Result<Opened, StoreError> {
        let lock = take_lock(dir, config.lock_wait)?;
        let lock_again = lock.try_clone().map_err(|source| StoreError::Prepare {
            dir: dir.to_owned(),
            source,
        })?;
        match Self::open_locked(dir, config, lock) {
            Ok(store) => Ok(Opened {
                store,
                recovered: None,
            }),
            Err(e) if e.is_broken() => {
                let at_unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let moved_to = aside_path(dir, at_unix);
                tracing::error!(
                    dir = %dir.display(), moved_to = %moved_to.display(), error = %e,
                    "store is unusable; moving it aside and starting empty (the resync refills it)"
                );
                std::fs::rename(dir, &moved_to).map_err(|source| StoreError::MoveAside {
                    dir: dir.to_owned(),
                    to: moved_to.clone(),
                    source,
                })?;
                let store = Self::open_locked(dir, config, lock_again)?;
                Ok(Opened {
                    store,
                    recovered: Some(Recovery {
                        moved_to,
                        reason: e.to_string(),
                        at_unix,
                    }),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn open_locked(dir: &Path, config: &StoreConfig, lock: File) -> Result<Store, StoreError> {
        let sled_config = sled::Config::new()
            .path(dir)
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(Some(1000));
        // sled has known panics on some damaged files; a panic here must turn
        // into "broken store", never into a crashed edgecore.
        let opened = open_sled(&sled_config);
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(open_error(dir, e)),
            Err(panic) => {
                let detail = panic_message(panic.as_ref());
                return Err(StoreError::Open {
                    dir: dir.to_owned(),
                    detail: format!("sled panicked while opening: {detail}"),
                });
            }
        };
        check_schema(dir, &db)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_owned(),
                flush_seconds: config.flush_seconds.clone(),
                _lock: lock,
            }),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The named tree (created on first use).
    pub fn tree(&self, name: &str) -> Result<Tree, StoreError> {
        self.inner
            .db
            .open_tree(name)
            .map(|inner| Tree { inner })
            .map_err(|source| StoreError::Io {
                op: "open_tree",
                source,
            })
    }

    /// Makes every write so far durable (fsync). Blocking: call it from a
    /// blocking thread in async code. Returns the bytes written.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let start = Instant::now();
        let res = self.inner.db.flush().map_err(|source| StoreError::Io {
            op: "flush",
            source,
        });
        // The flush sealed sled's current IO buffer on this thread and left the old buffer
        // descriptor — which keeps its 512 KiB log segment buffer alive — in this thread's
        // crossbeam-epoch garbage bag (sled 0.34 `roll_iobuf`: `pin().defer(drop)`). A bag
        // goes to the collector only once 64 items are in it, and a thread that does little
        // else than flush fills it in seconds: at 1,000 twin reports/s ~16 buffers (8 MiB)
        // piled up and were freed together every ~6 s. Handing the bag over now frees them
        // as soon as no reader can still see them.
        crossbeam_epoch::pin().flush();
        if let Some(h) = &self.inner.flush_seconds {
            h.observe(start.elapsed().as_secs_f64());
        }
        res
    }

    /// [`Store::flush`] on tokio's blocking pool.
    pub async fn flush_blocking(&self) -> Result<usize, StoreError> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(res) => res,
            Err(join) => Err(StoreError::Open {
                dir: self.inner.dir.clone(),
                detail: format!("flush task failed: {join}"),
            }),
        }
    }

    /// Bytes the database occupies on disk (0 if unknown).
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }
}

impl Tree {
    /// The value of `key`, if present.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|source| StoreError::Io { op: "get", source })
    }

    /// Sets `key` to `value` (durable after the next flush).
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.inner
            .insert(key.as_ref(), value.as_ref())
            .map(drop)
            .map_err(|source| StoreError::Io { op: "put", source })
    }

    /// Removes `key` (durable after the next flush).
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.inner
            .remove(key)
            .map(drop)
            .map_err(|source| StoreError::Io {
                op: "delete",
                source,
            })
    }

    /// Applies every write of `batch` atomically (durable after the next flush).
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.inner
            .apply_batch(batch.inner)
            .map_err(|source| StoreError::Io {
                op: "batch",
                source,
            })
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + use<> {
        self.inner.scan_prefix(prefix).map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|source| StoreError::Io { op: "scan", source })
        })
    }

    /// Number of keys (walks the tree).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True when the tree holds no key.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// The lock file sits next to the store directory (`<dir>.lock`) so that
/// moving a broken store aside keeps the lock.
fn take_lock(dir: &Path, wait: Duration) -> Result<File, StoreError> {
    let prepare = |source| StoreError::Prepare {
        dir: dir.to_owned(),
        source,
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(prepare)?;
    }
    let lock = sibling(dir, ".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(prepare)?;
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                if !told {
                    told = true;
                    tracing::warn!(
                        lock = %lock.display(), wait_seconds = wait.as_secs_f64(),
                        "the store is locked by another process; waiting for it"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: dir.to_owned(),
                    lock,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(prepare(e)),
        }
    }
}

/// Opens sled, catching its panics. We already hold the store's own lock, so no other
/// process uses these files; if sled still finds its file lock taken, the holder is a
/// background IO thread of a store this process just dropped, which lets go within
/// milliseconds. Retry for up to two seconds instead of failing a restart-in-place.
fn open_sled(config: &sled::Config) -> std::thread::Result<sled::Result<sled::Db>> {
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let opened = catch_unwind(AssertUnwindSafe(|| config.open()));
        match &opened {
            Ok(Err(sled::Error::Io(io)))
                if io.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => return opened,
        }
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn aside_path(dir: &Path, at_unix: u64) -> PathBuf {
    let mut n = 0u32;
    loop {
        let suffix = if n == 0 {
            format!(".corrupt-{at_unix}")
        } else {
            format!(".corrupt-{at_unix}-{n}")
        };
        let candidate = sibling(dir, &suffix);
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Classifies a sled open error: environment problems (permissions, missing
/// device, disk full) are returned as plain IO errors so the store is not
/// moved aside for them; everything else means the files are unusable.
fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    use std::io::ErrorKind;
    if let sled::Error::Io(io) = &e
        && matches!(
            io.kind(),
            ErrorKind::PermissionDenied
                | ErrorKind::ReadOnlyFilesystem
                | ErrorKind::StorageFull
                | ErrorKind::QuotaExceeded
                | ErrorKind::NotFound
        )
    {
        return StoreError::Io {
            op: "open",
            source: e,
        };
    }
    StoreError::Open {
        dir: dir.to_owned(),
        detail: e.to_string(),
    }
}

fn check_schema(dir: &Path, db: &sled::Db) -> Result<(), StoreError> {
    let found = db
        .get(SCHEMA_KEY)
        .map_err(|e| open_error(dir, e))?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    match found {
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(found) => Err(StoreError::Schema {
            dir: dir.to_owned(),
            found,
        }),
        None => {
            // A database with trees or keys but no version is not ours.
            let foreign = db.tree_names().len() > 1 || !db.is_empty();
            if foreign {
                return Err(StoreError::Schema {
                    dir: dir.to_owned(),
                    found: String::new(),
                });
            }
            db.insert(SCHEMA_KEY, SCHEMA_VERSION.as_bytes())
                .map_err(|e| open_error(dir, e))?;
            db.flush().map_err(|e| open_error(dir, e))?;
            Ok(())
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests;
