//! `edgecore`: kedge's edge agent. See the `edgecore` crate docs for the parts.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = edgecore::cli::Cli::parse();
    // One rustls crypto provider (ring) for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = edgecore::telemetry::init(&cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // One thread runs every task: a gateway has few cores, and each worker thread costs a
    // stack and a malloc arena (one thread instead of two workers: ~0.5 MiB less anonymous
    // memory idle, ~1 MiB with 20 pods; docs/benchmarks.md, "edgecore memory, session 7").
    // The broker and sled keep their own threads; `spawn_blocking` has its pool. Nothing may
    // call `block_in_place` (it panics on this runtime).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // On the heap: `block_on` pins its future on the main thread's stack, and the pages a
    // large future (and its moves) once touched there stay resident for the process's life.
    rt.block_on(Box::pin(edgecore::cli::run(cli)))
}
