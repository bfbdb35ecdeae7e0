//! What every `kedge-bench` subcommand does around its measurements: the entry point
//! (parse, runtime, table, exit code), the scratch directory, the table's first and last
//! rows, polling until a condition holds, and child processes killed on drop (with the
//! pid to read `/proc` from even when a profiler wraps the process).
//!
//! Exit codes: 0 when the run completed and every correctness check held, 1 when a check
//! failed or the run could not complete, 2 on bad arguments.

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::report::{Report, load_average, ms};

/// Runs subcommand `name`: `--help` prints `usage`; `parse` reads `args` (an error exits
/// 2); `run` runs on a multi-threaded runtime; the table is printed on stdout.
pub fn main<O, F, Fut>(
    name: &str,
    usage: &str,
    args: &[String],
    parse: fn(&[String]) -> Result<O>,
    run: F,
) -> ExitCode
where
    F: FnOnce(O) -> Fut,
    Fut: Future<Output = Result<Report>>,
{
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        return ExitCode::SUCCESS;
    }
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{name}: {e:#}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(report) => {
            println!("{}", report.markdown());
            if report.broken.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("{name}: correctness failures: {:#?}", report.broken);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A fresh directory for the run's data, removed on drop: under `dir` when given, else
/// under /var/tmp (not /tmp, which may be a tmpfs where fsync costs nothing).
pub fn scratch_dir(dir: Option<&Path>) -> Result<TempDir> {
    Ok(match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir_in("/var/tmp").or_else(|_| tempfile::tempdir())?,
    })
}

/// A new table whose first row is the load average (other work on the machine skews
/// every timing), and the run's start.
pub fn start_report() -> (Report, Instant) {
    let mut report = Report::default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    report.info(
        &format!("load average (1 min) before the run, {cpus} CPUs"),
        load_average(),
    );
    (report, Instant::now())
}

/// The table's last rows: the load average after the run and the wall time.
pub fn finish_report(report: &mut Report, started: Instant) {
    report.info("load average (1 min) after the run", load_average());
    report.info("benchmark wall time", ms(started.elapsed()));
}

/// Polls `f` every `every` until it holds; how long that took, or an error naming `what`
/// after `timeout`.
pub async fn wait_for(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl AsyncFnMut() -> bool,
) -> Result<Duration> {
    let t0 = Instant::now();
    while !f().await {
        if t0.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
    Ok(t0.elapsed())
}

/// The environment variable naming a command that wraps a measured cloudcore process
/// (`KEDGE_BENCH_WRAP="heaptrack -o /var/tmp/hub"`): the process is then started as
/// `<wrapper…> cloudcore …`, and its memory is still read from cloudcore's own `/proc`.
pub const WRAP_ENV: &str = "KEDGE_BENCH_WRAP";

/// `program`, wrapped by the command in [`WRAP_ENV`] if set.
pub fn wrapped(program: &Path) -> Command {
    let wrap = std::env::var(WRAP_ENV).unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(first) => {
            let mut cmd = Command::new(first);
            cmd.args(words).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A child process, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// The measured process: the child itself, or the wrapped program under it.
    pid: u32,
}

impl Proc {
    /// Takes `child`; `program` names the measured process when a wrapper started it (the
    /// wrapped program is found among the child's descendants within a few seconds).
    pub fn new(child: Child, program: &Path) -> Proc {
        let pid = child.id();
        let comm = program
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(15).collect::<String>())
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if self::comm(pid).as_deref() == Some(comm.as_str()) {
                break pid;
            }
            if let Some(p) = descendant(pid, &comm) {
                break p;
            }
            if Instant::now() > deadline {
                break pid;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Proc { child, pid }
    }

    /// The measured process's pid (for `/proc`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child, e.g. to poll whether it exited.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// SIGKILL to the measured process (and the wrapper), then reap.
    pub fn kill9(&mut self) {
        if self.pid != self.child.id() {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            // Let the wrapper (a profiler) write out what it recorded.
            let _ = tests::wait_exit(&mut self.child, Duration::from_secs(60));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `/proc/<pid>/comm`.
fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

/// A descendant of `pid` whose comm is `comm`.
fn descendant(pid: u32, comm: &str) -> Option<u32> {
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if self::comm(c).as_deref() == Some(comm) {
                    return Some(c);
                }
                queue.push(c);
            }
        }
    }
    None
}
