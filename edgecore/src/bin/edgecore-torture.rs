//! `edgecore-torture`: kill -9 torture of the edge store (see
//! `edgecore::store::torture`).
//!
//! `edgecore-torture --cycles 300 [--dir DIR] [--max-run-ms 150]` runs the
//! parent; it re-executes itself as `edgecore-torture child --dir DIR --start N`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgecore::store::torture;

#[derive(Debug, Parser)]
#[command(
    name = "edgecore-torture",
    about = "kill -9 torture of the edgecore store"
)]
struct Cli {
    /// Kill/reopen/verify cycles.
    #[arg(long, default_value_t = 30)]
    cycles: u32,
    /// Store directory (default: a new temporary directory, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Longest a child runs before it is killed, in ms.
    #[arg(long, default_value_t = 150)]
    max_run_ms: u64,
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Debug, Subcommand)]
enum Child {
    /// Internal: write and flush batches until killed.
    Child {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        start: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Child::Child { dir, start }) = cli.child {
        return match torture::child(&dir, start) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("child: {e}");
                ExitCode::from(1)
            }
        };
    }
    let result = (|| -> anyhow::Result<torture::Report> {
        let exe = std::env::current_exe()?;
        let tmp = tempfile::tempdir()?;
        let dir = cli.dir.clone().unwrap_or_else(|| tmp.path().join("store"));
        Ok(torture::run(
            &exe,
            &["child"],
            &dir,
            cli.cycles,
            cli.max_run_ms,
        )?)
    })();
    match result {
        Ok(report) => {
            println!("ok: {report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {e:#}");
            ExitCode::from(1)
        }
    }
}
