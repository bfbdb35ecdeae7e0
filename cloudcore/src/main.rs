//! `cloudcore`: kedge's cloud side. See the crate docs of `cloudcore` for the parts.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, not glibc's malloc: the API server's write path allocates and frees many small
/// JSON nodes per request, and glibc spent ~30 % of cloudcore's CPU on it under a Device
/// status write load (`unlink_chunk`/`malloc_consolidate`; docs/benchmarks.md, session 10).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cloudcore::cli::Cli::parse();
    // One rustls crypto provider (ring) for the whole process: kube, the hub and the API.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = cloudcore::telemetry::init(&cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cloudcore::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
