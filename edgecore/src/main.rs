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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(edgecore::cli::run(cli))
}
