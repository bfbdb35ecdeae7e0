//! `kedge-bench`: the performance benchmark of kedge's embedded API server. It starts the
//! real `cloudcore standalone` (built next to this binary) on loopback ports the OS picks,
//! drives it over HTTP/2 and prints a markdown table — metric, value, target, pass/fail.
//!
//! ```text
//! kedge-bench api [--smoke] [--creates N] [--pods N] [--watchers N] [--paged N] ...
//! kedge-bench pods [--smoke] [--pods N]   (pods on one edge through containerd)
//! kedge-bench link [--smoke] [--objects N] [--edges N]   (see kedge-bench/link.rs)
//! kedge-bench edges [--smoke] [--edges N]   (simulated edges, see kedge-bench/edges.rs)
//! kedge-bench twin [--smoke] [--devices N] [--rate R] [--seconds S]   (device twins, twin.rs)
//! ```
//!
//! Phases (each on a fresh server and data directory): `durable` (creates/s, then kill -9
//! under load and a recount), `pods` (lists of realistic pods, RSS, then `watch` fan-out),
//! `paging` (many objects in pages of 500). Targets are judged here, never in timed tests.
//! Exits 0 when the run completed, 1 when a correctness check failed (a lost acknowledged
//! write, a missed watch event), 2 on bad arguments.

// A binary's root resolves `mod` next to itself; the modules live in `kedge-bench/`.
#[path = "kedge-bench/client.rs"]
mod client;
#[path = "kedge-bench/durable.rs"]
mod durable;
#[path = "kedge-bench/edges.rs"]
mod edges;
#[path = "kedge-bench/fixtures.rs"]
mod fixtures;
#[path = "kedge-bench/link.rs"]
mod link;
#[path = "kedge-bench/load.rs"]
mod load;
#[path = "kedge-bench/opts.rs"]
mod opts;
#[path = "kedge-bench/paging.rs"]
mod paging;
#[path = "kedge-bench/pods.rs"]
mod pods;
#[path = "kedge-bench/pods_edge.rs"]
mod pods_edge;
#[path = "kedge-bench/report.rs"]
mod report;
#[path = "kedge-bench/twin.rs"]
mod twin;
#[path = "kedge-bench/twin_track.rs"]
mod twin_track;
#[path = "kedge-bench/watch.rs"]
mod watch;
#[path = "kedge-bench/wire.rs"]
mod wire;

use std::process::ExitCode;

use anyhow::{Result, bail};

pub use opts::Opts;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "link") {
        return link::main(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "edges") {
        return edges::main(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "twin") {
        return twin::main(&args[1..]);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", opts::USAGE);
        return ExitCode::SUCCESS;
    }
    if args.first().is_some_and(|a| a == "pods") {
        return pods_edge::main(&args[1..]);
    }
    let opts = match args.split_first() {
        Some((cmd, rest)) if cmd == "api" => Opts::parse(rest),
        _ => Err(anyhow::anyhow!("expected the `api` benchmark")),
    };
    let opts = match opts {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kedge-bench: {e:#}\n{}", opts::USAGE);
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kedge-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&opts)) {
        Ok(report) => {
            println!("{}", report.markdown());
            if report.broken.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("kedge-bench: correctness failures: {:#?}", report.broken);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("kedge-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(opts: &Opts) -> Result<report::Report> {
    let cloudcore = tests::bin_dir().join("cloudcore");
    if !cloudcore.exists() {
        bail!(
            "{} is missing: build it next to kedge-bench (cargo build --release -p cloudcore -p tests)",
            cloudcore.display()
        );
    }
    let tmp = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        // /var/tmp rather than /tmp, which may be a tmpfs where fsync costs nothing.
        None => tempfile::tempdir_in("/var/tmp").or_else(|_| tempfile::tempdir())?,
    };
    eprintln!(
        "kedge-bench api{}: data under {} (cloudcore: {})",
        if opts.smoke { " --smoke" } else { "" },
        tmp.path().display(),
        cloudcore.display()
    );
    let started = std::time::Instant::now();
    let mut report = report::Report::default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    report.info(
        &format!("load average (1 min) before the run, {cpus} CPUs"),
        report::load_average(),
    );
    // A failed phase is reported and the others still run, so the table is never lost.
    for phase in opts::PHASES.into_iter().filter(|p| opts.runs(p)) {
        let result = match phase {
            "durable" => durable::run(opts, tmp.path(), &mut report).await,
            "pods" => pods::run(opts, tmp.path(), &mut report).await,
            _ => paging::run(opts, tmp.path(), &mut report).await,
        };
        if let Err(e) = result {
            report.broken(format!("phase {phase} failed: {e:#}"));
        }
    }
    report.info("load average (1 min) after the run", report::load_average());
    report.info("benchmark wall time", report::ms(started.elapsed()));
    Ok(report)
}
