//! The command line. Exit codes: 0 success, 1 runtime failure, 2 usage or
//! configuration error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Layout};
use crate::telemetry::LogArgs;

/// kedge edgecore: runs pods and device twins on an edge gateway, synced with cloudcore.
#[derive(Debug, Parser)]
#[command(name = "edgecore", version, about, long_about = None)]
pub struct Cli {
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join this node to cloudcore, write its config and certificates, and start it.
    Join(JoinArgs),
    /// Remove this node's config, certificates and data.
    Reset {
        /// Root of the node's files.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Where `join --install-service` wrote the systemd unit.
        #[arg(long, default_value = crate::service::DEFAULT_UNIT_DIR)]
        systemd_dir: PathBuf,
    },
    /// Run edgecore.
    Run {
        /// Configuration file.
        #[arg(long, env = "KEDGE_CONFIG", default_value = "/etc/kedge/edgecore.toml")]
        config: PathBuf,
    },
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the link state, last sync, outbox depth and objects held.
    Status {
        /// Configuration file (default: ROOT/etc/kedge/edgecore.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Root of the node's files.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: crate::status::Format,
    },
    /// Container images in the node's runtime.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `edgecore images ...`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Import an image archive (OCI layout or `docker save` tar) into the runtime, for
    /// gateways without a registry; pods use it whatever their pull policy when offline.
    Import {
        /// The archive.
        file: PathBuf,
        /// CRI endpoint (default: the node's configured one, else containerd's).
        #[arg(long)]
        cri_endpoint: Option<String>,
        /// Root of the node's files (to find its config).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

/// `edgecore config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the default configuration (TOML).
    PrintDefault,
    /// Validate a configuration file.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// `edgecore join`.
#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// cloudcore's hub, `wss://HOST:PORT`.
    #[arg(long)]
    pub server: String,
    /// Join token from `cloudcore token create`.
    #[arg(long, env = "KEDGE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Node name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Node labels, `k=v,k2=v2`.
    #[arg(long, value_parser = crate::join::parse_labels)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Root of the node's files (config, certificates, data).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// CRI endpoint of the container runtime.
    #[arg(long)]
    pub cri_endpoint: Option<String>,
    /// Listen address of the embedded MQTT broker.
    #[arg(long)]
    pub mqtt_listen: Option<SocketAddr>,
    /// Listen address of /metrics, /healthz, /readyz, /status.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Only join; do not start `edgecore run`.
    #[arg(long)]
    pub no_start: bool,
    /// Join again even if already joined; replace a live node of the same name.
    #[arg(long)]
    pub force: bool,
    /// Install edgecore as a systemd service (and start it where systemd runs) instead of
    /// starting `edgecore run` in the foreground.
    #[arg(long, conflicts_with = "no_start")]
    pub install_service: bool,
    /// Directory of the systemd unit written by --install-service.
    #[arg(long, default_value = crate::service::DEFAULT_UNIT_DIR)]
    pub systemd_dir: PathBuf,
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(code)
}

/// The environment variable a supervising parent (`cloudcore standalone`, for its local edge)
/// sets to its process id: the edge then exits with that parent even when it is killed
/// with SIGKILL, instead of living on as an orphan that holds the MQTT port and the store.
pub const PARENT_PID_ENV: &str = "KEDGE_EXIT_WITH_PARENT";

/// Asks the kernel for SIGTERM when the parent named in [`PARENT_PID_ENV`] dies (the setting
/// survives `join`'s exec of `run`), and exits at once when it is already gone.
fn exit_with_parent() {
    let Some(parent) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        tracing::warn!(error = %e, "cannot ask to exit with the parent process");
        return;
    }
    if nix::unistd::getppid().as_raw() != parent {
        eprintln!("error: the parent process {parent} ({PARENT_PID_ENV}) is gone");
        std::process::exit(1);
    }
}

/// Runs the command.
pub async fn run(cli: Cli) -> ExitCode {
    exit_with_parent();
    match cli.command {
        Command::Join(args) => join(args, &cli.log).await,
        Command::Reset { root, systemd_dir } => match crate::join::reset_all(&root, &systemd_dir) {
            Ok(removed) if removed.is_empty() => {
                println!("nothing to remove under {}", root.display());
                ExitCode::SUCCESS
            }
            Ok(removed) => {
                for p in removed {
                    println!("removed {}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(2, e),
            };
            let shutdown = CancellationToken::new();
            tokio::spawn(signals(shutdown.clone()));
            match crate::run::run(cfg, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{}", Config::default().to_toml());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(2, e),
        },
        Command::Status {
            config,
            root,
            output,
        } => {
            let path = config.unwrap_or_else(|| Layout::new(&root).config);
            let cfg = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => return fail(2, format!("{e} (is this node joined?)")),
            };
            match crate::status::collect(&cfg).await {
                Ok(report) => match crate::status::render(&report, output) {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(1, e),
                },
                Err(e) => fail(1, e),
            }
        }
        Command::Images(ImagesCommand::Import {
            file,
            cri_endpoint,
            root,
        }) => {
            let endpoint = cri_endpoint.unwrap_or_else(|| {
                Config::load(&Layout::new(&root).config)
                    .map(|c| c.cri_endpoint)
                    .unwrap_or_else(|_| Config::default().cri_endpoint)
            });
            let mut err = std::io::stderr();
            match crate::runtime::images::import(&file, &endpoint, &mut err).await {
                Ok(names) => {
                    for n in names {
                        println!("{n}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, e),
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "edgecore",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

async fn join(args: JoinArgs, log: &LogArgs) -> ExitCode {
    let req = crate::join::JoinRequest {
        server: args.server,
        token: args.token,
        node_name: args.node_name,
        labels: args.labels.unwrap_or_default(),
        root: args.root,
        cri_endpoint: args.cri_endpoint,
        mqtt_listen: args.mqtt_listen,
        metrics_listen: args.metrics_listen,
        force: args.force,
    };
    let joined = match crate::join::join(&req, &mut std::io::stdout()).await {
        Ok(j) => j,
        Err(e) => return fail(e.exit_code(), e),
    };
    println!(
        "joined as node {}; config {}",
        joined.node_name,
        joined.config_path.display()
    );
    if args.install_service {
        return match crate::service::install_for_join(
            &req.root,
            &joined.config_path,
            &args.systemd_dir,
            &mut std::io::stdout(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        };
    }
    if args.no_start {
        println!(
            "start it with: edgecore run --config {}",
            joined.config_path.display()
        );
        return ExitCode::SUCCESS;
    }
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(1, format!("cannot find the edgecore binary to start: {e}")),
    };
    let format = match log.log_format {
        crate::telemetry::LogFormat::Text => "text",
        crate::telemetry::LogFormat::Json => "json",
    };
    println!(
        "starting: {} run --config {}",
        exe.display(),
        joined.config_path.display()
    );
    let err = std::process::Command::new(exe)
        .args([
            "--log-format",
            format,
            "--log-level",
            &log.log_level,
            "run",
            "--config",
        ])
        .arg(&joined.config_path)
        .exec();
    fail(1, format!("cannot start edgecore run: {err}"))
}

/// First SIGTERM/SIGINT: graceful drain. Second: exit at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down (send the signal again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("second signal: exiting without draining");
    std::process::exit(1);
}
