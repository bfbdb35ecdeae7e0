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
#[path = "kedge-bench/pods_floor.rs"]
mod pods_floor;
#[path = "kedge-bench/report.rs"]
mod report;
#[path = "kedge-bench/support.rs"]
mod support;
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
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("link") => link::main(rest),
        Some("edges") => edges::main(rest),
        Some("twin") => twin::main(rest),
        Some("pods") if !args.iter().any(|a| a == "--help" || a == "-h") => pods_edge::main(rest),
        Some("api") => support::main(
            "kedge-bench",
            opts::USAGE,
            rest,
            Opts::parse,
            |o| async move { run(&o).await },
        ),
        _ if args.iter().any(|a| a == "--help" || a == "-h") => {
            println!("{}", opts::USAGE);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("kedge-bench: expected the `api` benchmark\n{}", opts::USAGE);
            ExitCode::from(2)
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
    let tmp = support::scratch_dir(opts.dir.as_deref())?;
    eprintln!(
        "kedge-bench api{}: data under {} (cloudcore: {})",
        if opts.smoke { " --smoke" } else { "" },
        tmp.path().display(),
        cloudcore.display()
    );
    let (mut report, started) = support::start_report();
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
    support::finish_report(&mut report, started);
    Ok(report)
}
