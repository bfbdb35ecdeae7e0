//! Giving back the memory of code edgecore ran once.
//!
//! Start-up — the configuration, TLS set-up, the store's recovery, the broker's start, the
//! first resync — runs code spread over most of the binary's text, and the kernel maps the
//! binary in 64 KiB runs around each fault (fault-around), so on a gateway nearly all of the
//! text and much of the read-only data stays resident (6.8 of 6.8 MiB of text in the static
//! gateway build; docs/benchmarks.md, "edgecore memory, session 9") although the steady state
//! runs a fraction of it.
//!
//! Once the link is first live (or after [`OFFLINE_DELAY`] without a cloud), edgecore asks
//! the kernel to page out its own read-only, file-backed mappings (`madvise(MADV_PAGEOUT)`,
//! Linux ≥ 5.4). They are clean pages of the binary's file: the kernel drops them instead
//! of writing them anywhere, and each comes back from the file on its next use, so what the
//! steady state runs is faulted in again within moments and the rest stays out of memory.
//! Nothing can be lost: `MADV_PAGEOUT` never discards data (writable mappings are not even
//! asked). A kernel without it answers `EINVAL` and the pages stay; a binary the process may
//! not write (not root, not its owner) is left in memory by the kernel. `[memory]
//! release_startup_code = false` turns it off.

use std::io;
use std::ops::Range;
use std::time::Duration;

/// How long an edge that cannot reach the cloud waits before releasing its start-up code:
/// an offline cold boot starts its pods and bus meanwhile.
pub const OFFLINE_DELAY: Duration = Duration::from_secs(60);

/// What [`release_startup_code`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Mappings of the binary asked to be paged out.
    pub mappings: usize,
    /// Their total size, bytes.
    pub bytes: usize,
    /// The process's file-backed resident memory before and after, KiB (`RssFile` of
    /// `/proc/self/status`; `None` where it cannot be read).
    pub file_kib_before: Option<u64>,
    /// See `file_kib_before`.
    pub file_kib_after: Option<u64>,
}

/// Pages out the running binary's read-only mappings (text, read-only data, unwind tables).
/// Errors: `/proc/self` unreadable, or the kernel refusing the advice (`EINVAL` before
/// Linux 5.4).
pub fn release_startup_code() -> io::Result<Released> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let ranges = code_ranges(&maps, &exe.to_string_lossy());
    let file_kib_before = resident_file_kib();
    let mut bytes = 0;
    for r in &ranges {
        page_out(r)?;
        bytes += r.len();
    }
    Ok(Released {
        mappings: ranges.len(),
        bytes,
        file_kib_before,
        file_kib_after: resident_file_kib(),
    })
}

/// The address ranges of `maps` (the text of `/proc/<pid>/maps`) that map `exe` read-only.
/// The kernel appends " (deleted)" to the path of a binary replaced on disk (an upgrade
/// while running); such mappings are the same file and count too.
pub fn code_ranges(maps: &str, exe: &str) -> Vec<Range<usize>> {
    let deleted = format!("{exe} (deleted)");
    maps.lines()
        .filter_map(|line| {
            // start-end perms offset dev inode [path]; the path may hold spaces.
            let mut fields = line.splitn(6, ' ');
            let span = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?.trim_start();
            if (path != exe && path != deleted) || perms.as_bytes().get(1) != Some(&b'-') {
                return None;
            }
            let (start, end) = span.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (start < end).then_some(start..end)
        })
        .collect()
}

/// `RssFile` of `/proc/self/status`, KiB.
pub fn resident_file_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssFile:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `madvise(MADV_RANDOM)`, then `madvise(MADV_PAGEOUT)`, over `range`.
#[allow(unsafe_code)]
fn page_out(range: &Range<usize>) -> io::Result<()> {
    let addr = range.start as *mut nix::libc::c_void;
    // MADV_RANDOM first: a page faulted back in is then read alone, with no read-around of
    // its neighbours, so what comes back is the code that runs, page by page.
    for advice in [nix::libc::MADV_RANDOM, nix::libc::MADV_PAGEOUT] {
        // SAFETY: `range` is a whole mapping of this process's own binary, read-only, taken
        // from /proc/self/maps (page-aligned by the kernel). MADV_RANDOM is a hint about the
        // access pattern; MADV_PAGEOUT asks the kernel to reclaim the pages. Neither changes
        // their contents (clean file pages are read back from the file on the next access),
        // so no Rust reference into them can observe a change, and a range no longer mapped
        // makes the call fail with ENOMEM, not misbehave.
        let rc = unsafe { nix::libc::madvise(addr, range.len(), advice) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 123 /usr/bin/edgecore
55d0a0100000-55d0a0800000 r-xp 00100000 fd:01 123 /usr/bin/edgecore
55d0a0800000-55d0a0a00000 r--p 00800000 fd:01 123 /usr/bin/edgecore
55d0a0a00000-55d0a0a40000 rw-p 00a00000 fd:01 123 /usr/bin/edgecore
55d0a0a40000-55d0a0a80000 rw-p 00000000 00:00 0 
55d0a1000000-55d0a1200000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000010000 r-xp 00000000 fd:01 456 /usr/bin/edgecore-helper
7f0000010000-7f0000020000 r--p 00000000 fd:01 789 /opt/my dir/edgecore
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn only_the_binarys_read_only_mappings_are_taken() {
        assert_eq!(
            code_ranges(MAPS, "/usr/bin/edgecore"),
            vec![
                0x55d0_a000_0000..0x55d0_a010_0000,
                0x55d0_a010_0000..0x55d0_a080_0000,
                0x55d0_a080_0000..0x55d0_a0a0_0000,
            ]
        );
    }

    #[test]
    fn a_path_with_spaces_and_a_replaced_binary_are_matched() {
        assert_eq!(
            code_ranges(MAPS, "/opt/my dir/edgecore"),
            vec![0x7f00_0001_0000..0x7f00_0002_0000]
        );
        let replaced = "5000-6000 r-xp 00000000 fd:01 1 /usr/bin/edgecore (deleted)\n";
        assert_eq!(
            code_ranges(replaced, "/usr/bin/edgecore"),
            vec![0x5000..0x6000]
        );
        assert!(code_ranges("garbage\n\n1-0 r-xp 0 0 0 /x\n", "/x").is_empty());
    }

    /// The real thing on this process: the test binary's code is paged out and its file-backed
    /// resident memory falls, then the code keeps running (it is read back as needed).
    #[test]
    fn the_test_binarys_code_leaves_memory_and_keeps_working() {
        let r = match release_startup_code() {
            Ok(r) => r,
            // A kernel older than 5.4 has no MADV_PAGEOUT: nothing to measure.
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => return,
            Err(e) => panic!("{e}"),
        };
        assert!(r.mappings >= 2, "{r:?}");
        assert!(r.bytes > 1024 * 1024, "{r:?}");
        let (before, after) = (r.file_kib_before.unwrap(), r.file_kib_after.unwrap());
        // Root (or the binary's owner) may page out the file's pages; the test runs as both.
        assert!(after < before, "RssFile {before} -> {after} KiB");
    }
}
