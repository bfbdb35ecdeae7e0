//! Kill -9 torture of the [`Store`](super::Store): proves that every write
//! [`Store::flush`](super::Store::flush) returned for survives an abrupt
//! stop, and that the store always reopens.
//!
//! A child process ([`child`]) writes numbered batches — each one atomic:
//! a log key `log/<n>` plus a rotating set of 8 data keys holding `n` — flushes
//! after each, and prints `n` once the flush returned. The parent ([`run`])
//! kills it with SIGKILL at a random moment, reopens the store and checks:
//! every printed number is present, the log has no hole, and the newest
//! batch is whole (atomic). Then it starts the next child where the store
//! left off. Disk usage is sampled after each cycle to show growth.
//!
//! Used by the `edgecore-torture` binary (hundreds of cycles in the
//! benchmark) and by a short CI test.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{Batch, Store, StoreConfig, StoreError};

/// Data keys rewritten round-robin (so sled has garbage to reclaim).
const DATA_SLOTS: u64 = 64;
/// Data keys per batch.
const KEYS_PER_BATCH: u64 = 8;
/// Size of each data value.
const VALUE_BYTES: usize = 512;

/// What a torture run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Kill/reopen cycles done.
    pub cycles: u32,
    /// Batches in the store at the end.
    pub batches: u64,
    /// Flushed batches the children reported (all verified present).
    pub flushed: u64,
    /// Disk usage after the first cycle, bytes.
    pub bytes_first: u64,
    /// Disk usage at the end, bytes.
    pub bytes_last: u64,
    /// Largest disk usage seen, bytes.
    pub bytes_max: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cycles, {} batches ({} flushed and verified), disk {} KiB after cycle 1 -> {} KiB at the end (max {} KiB), {:.1} s",
            self.cycles,
            self.batches,
            self.flushed,
            self.bytes_first / 1024,
            self.bytes_last / 1024,
            self.bytes_max / 1024,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why a torture run failed.
#[derive(Debug, thiserror::Error)]
pub enum TortureError {
    /// The child process could not be started or awaited.
    #[error("cannot run the child {exe}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The store did not reopen after a kill.
    #[error("cycle {cycle}: the store did not reopen")]
    Reopen {
        /// The cycle.
        cycle: u32,
        /// The store error.
        #[source]
        source: StoreError,
    },
    /// A flushed write is missing or a batch is torn.
    #[error("cycle {cycle}: {detail}")]
    Lost {
        /// The cycle.
        cycle: u32,
        /// What is wrong.
        detail: String,
    },
}

fn log_key(n: u64) -> String {
    format!("log/{n:020}")
}

fn data_key(slot: u64, j: u64) -> String {
    format!("data/{slot:04}/{j}")
}

fn data_value(n: u64) -> Vec<u8> {
    let mut v = format!("{n:020}").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    v
}

/// The child: writes and flushes batches `start, start+1, ...` forever,
/// printing each number on stdout after its flush returned. Returns only on
/// error (the parent kills it).
pub fn child(dir: &Path, start: u64) -> Result<(), StoreError> {
    let store = Store::open(dir, &small_cache())?;
    let tree = store.tree("torture")?;
    let stdout = std::io::stdout();
    for n in start.. {
        let mut batch = Batch::default();
        batch.put(log_key(n), n.to_string());
        for j in 0..KEYS_PER_BATCH {
            batch.put(data_key(n % DATA_SLOTS, j), data_value(n));
        }
        tree.apply(batch)?;
        store.flush()?;
        let mut out = stdout.lock();
        // A closed stdout means the parent is gone: stop.
        if writeln!(out, "{n}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn small_cache() -> StoreConfig {
    StoreConfig {
        cache_capacity: 4 * 1024 * 1024,
        ..StoreConfig::default()
    }
}

/// The parent: `cycles` times, starts `exe child_args... --dir DIR --start N`,
/// kills it after a random 5..`max_run_ms` ms, reopens and verifies.
/// `child_args` are the arguments that make `exe` call [`child`].
pub fn run(
    exe: &Path,
    child_args: &[&str],
    dir: &Path,
    cycles: u32,
    max_run_ms: u64,
) -> Result<Report, TortureError> {
    let started = Instant::now();
    let mut rng = rand::rng();
    let mut next = 0u64;
    let mut flushed = 0u64;
    let (mut bytes_first, mut bytes_last, mut bytes_max) = (0, 0, 0);
    for cycle in 1..=cycles {
        let spawn_err = |source| TortureError::Spawn {
            exe: exe.to_owned(),
            source,
        };
        let mut proc = Command::new(exe)
            .args(child_args)
            .arg("--dir")
            .arg(dir)
            .arg("--start")
            .arg(next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(spawn_err)?;
        std::thread::sleep(Duration::from_millis(
            rng.random_range(5..max_run_ms.max(6)),
        ));
        proc.kill().map_err(spawn_err)?; // SIGKILL
        proc.wait().map_err(spawn_err)?;
        let mut printed = String::new();
        if let Some(mut out) = proc.stdout.take() {
            out.read_to_string(&mut printed).map_err(spawn_err)?;
        }
        // Only whole lines are flushed numbers; a torn last line is not.
        let numbers: Vec<u64> = printed
            .as_bytes()
            .split_inclusive(|b| *b == b'\n')
            .filter(|l| l.ends_with(b"\n"))
            .filter_map(|l| std::str::from_utf8(l).ok()?.trim().parse().ok())
            .collect();
        flushed += numbers.len() as u64;
        next = verify(dir, cycle, &numbers)?;
        let bytes = dir_size(dir);
        if cycle == 1 {
            bytes_first = bytes;
        }
        bytes_last = bytes;
        bytes_max = bytes_max.max(bytes);
    }
    Ok(Report {
        cycles,
        batches: next,
        flushed,
        bytes_first,
        bytes_last,
        bytes_max,
        elapsed: started.elapsed(),
    })
}

/// Reopens the store and checks it; returns the next batch number.
fn verify(dir: &Path, cycle: u32, printed: &[u64]) -> Result<u64, TortureError> {
    let lost = |detail: String| TortureError::Lost { cycle, detail };
    let store = Store::open(dir, &small_cache())
        .map_err(|source| TortureError::Reopen { cycle, source })?;
    let tree = store
        .tree("torture")
        .map_err(|source| TortureError::Reopen { cycle, source })?;
    for n in printed {
        let present = tree
            .get(log_key(*n))
            .map_err(|source| TortureError::Reopen { cycle, source })?;
        if present.is_none() {
            return Err(lost(format!("batch {n} was flushed but is missing")));
        }
    }
    let mut count = 0u64;
    for entry in tree.scan_prefix(b"log/") {
        let (key, _) = entry.map_err(|source| TortureError::Reopen { cycle, source })?;
        if key != log_key(count).as_bytes() {
            let key = String::from_utf8_lossy(&key).into_owned();
            return Err(lost(format!(
                "log has a hole: expected batch {count}, found {key}"
            )));
        }
        count += 1;
    }
    if let Some(newest) = count.checked_sub(1) {
        for j in 0..KEYS_PER_BATCH {
            let value = tree
                .get(data_key(newest % DATA_SLOTS, j))
                .map_err(|source| TortureError::Reopen { cycle, source })?;
            if value.as_deref() != Some(data_value(newest).as_slice()) {
                return Err(lost(format!("batch {newest} is torn at data key {j}")));
            }
        }
    }
    Ok(count)
}

/// Bytes used by the files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
