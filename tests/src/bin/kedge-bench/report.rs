//! The result table, percentiles, and the server's memory as `/proc` reports it.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};

/// Whether a row met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A measurement without a target (context for the others).
    Info,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub value: String,
    pub target: String,
    pub verdict: Verdict,
}

/// The table, plus correctness failures (lost writes, missing events) that make the
/// benchmark exit non-zero whatever the timings were.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub broken: Vec<String>,
}

impl Report {
    /// A measurement with a target.
    pub fn check(&mut self, metric: &str, value: String, target: &str, ok: bool) {
        let verdict = if ok { Verdict::Pass } else { Verdict::Fail };
        self.push(metric, value, target, verdict);
    }

    /// A measurement without a target.
    pub fn info(&mut self, metric: &str, value: String) {
        self.push(metric, value, "", Verdict::Info);
    }

    /// A correctness failure: reported in the table and in the exit code.
    pub fn broken(&mut self, what: String) {
        eprintln!("FAILURE: {what}");
        self.broken.push(what);
    }

    fn push(&mut self, metric: &str, value: String, target: &str, verdict: Verdict) {
        eprintln!("  {metric}: {value}");
        self.rows.push(Row {
            metric: metric.to_string(),
            value,
            target: target.to_string(),
            verdict,
        });
    }

    /// The table as markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| metric | value | target | result |\n|---|---:|---:|---|\n");
        for r in &self.rows {
            let v = match r.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "**FAIL**",
                Verdict::Info => "",
            };
            let _ = writeln!(out, "| {} | {} | {} | {v} |", r.metric, r.value, r.target);
        }
        out
    }
}

/// Nearest-rank percentiles of a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pcts {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Pcts {
    /// Summarise `v` (any order).
    pub fn of(mut v: Vec<Duration>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }

    /// `p50 / p99 / max`.
    pub fn show(&self) -> String {
        format!("{} / {} / {}", ms(self.p50), ms(self.p99), ms(self.max))
    }
}

/// A duration in milliseconds, with a precision that suits its size.
pub fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    if m < 10.0 {
        format!("{m:.2} ms")
    } else if m < 1000.0 {
        format!("{m:.1} ms")
    } else {
        format!("{:.2} s", m / 1e3)
    }
}

/// A count with thousands separators.
pub fn count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Memory of a process in KiB: resident now, and peak resident (VmHWM); the resident split
/// into anonymous and file-backed pages, and the thread count.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
    pub threads: u64,
}

impl Mem {
    /// Read `/proc/<pid>/status`.
    pub fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} missing from /proc/{pid}/status"))
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:")?,
            file_kib: field("RssFile:")?,
            threads: field("Threads:")?,
        })
    }

    /// `16.6 MiB (anon 2.6, file 14.0; 17 threads)`.
    pub fn split(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        format!(
            "{:.1} MiB (anon {:.1}, file {:.1}; {} threads)",
            mib(self.rss_kib),
            mib(self.anon_kib),
            mib(self.file_kib),
            self.threads
        )
    }
}

/// Reset a process's peak RSS to its current RSS (Linux ≥ 4.0); false when refused.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// KiB as MiB.
pub fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// CPU time (user + system) a process has used so far; `None` for this process.
pub fn cpu_time(pid: Option<u32>) -> Result<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command (which may hold spaces) start at state; utime and stime are
    // fields 14 and 15, in USER_HZ (always 100 in /proc).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path} has no command field"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: field {} missing", i + 3))
    };
    Ok(Duration::from_millis((tick(11)? + tick(12)?) * 10))
}

/// CPU used by the server and by this benchmark while `n` operations ran, per operation.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: u32,
    server: Duration,
    client: Duration,
}

impl CpuMeter {
    /// Start measuring the server `pid` and this process.
    pub fn start(pid: u32) -> Result<Self> {
        Ok(Self {
            pid,
            server: cpu_time(Some(pid))?,
            client: cpu_time(None)?,
        })
    }

    /// `server / client` CPU per operation since the start.
    pub fn per_op(&self, n: usize) -> Result<String> {
        let server = cpu_time(Some(self.pid))?.saturating_sub(self.server);
        let client = cpu_time(None)?.saturating_sub(self.client);
        let n = n.max(1) as u32;
        Ok(format!("{} / {}", ms(server / n), ms(client / n)))
    }
}

/// The 1-minute load average now (other work on the machine skews every timing).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// How the executable at `path` is linked, for the memory rows: `static` (no program
/// interpreter — the gateway build of `scripts/build-edgecore.sh`, which the edge memory
/// targets are for) or `dynamic` (e.g. `cargo build --release`), with its size.
pub fn linkage(path: &std::path::Path) -> Result<String> {
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let kind = match has_interpreter(&elf) {
        Some(false) => "static",
        Some(true) => "dynamic",
        None => "not a 64-bit little-endian ELF",
    };
    Ok(format!(
        "{kind}, {:.1} MiB ({})",
        elf.len() as f64 / (1024.0 * 1024.0),
        path.display()
    ))
}

/// Whether a 64-bit little-endian ELF has a `PT_INTERP` program header (is dynamically
/// linked); `None` when `elf` is not one.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let (size, count) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    let mut interp = false;
    for i in 0..count {
        let at = phoff.checked_add(i.checked_mul(size)?)?;
        interp |= u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?) == PT_INTERP;
    }
    Some(interp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod linkage_tests {
    use super::has_interpreter;

    /// A minimal ELF64 header with the given program header types (56-byte entries at 64).
    fn elf(types: &[u32]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56 * types.len()];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for (i, t) in types.iter().enumerate() {
            e[64 + 56 * i..68 + 56 * i].copy_from_slice(&t.to_le_bytes());
        }
        e
    }

    #[test]
    fn an_interpreter_header_means_dynamic() {
        assert_eq!(has_interpreter(&elf(&[6, 3, 1, 1, 2])), Some(true));
        assert_eq!(has_interpreter(&elf(&[6, 1, 1, 2])), Some(false));
        assert_eq!(has_interpreter(b"#!/bin/sh\n"), None);
        // Program headers said to lie past the end of the file.
        let mut cut = elf(&[1, 3]);
        cut.truncate(100);
        assert_eq!(has_interpreter(&cut), None);
        // This test binary is linked dynamically (debug builds are).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(has_interpreter(&me), Some(true));
    }
}
