//! The command line. Exit codes: 0 success, 1 runtime failure, 2 usage or configuration
//! error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogArgs;

/// kedge cloudcore: syncs pods and devices to edge nodes.
#[derive(Debug, Parser)]
#[command(name = "cloudcore", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an embedded Kubernetes-compatible API server and cloudcore on this machine.
    Standalone(StandaloneArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `cloudcore config ...`.
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

/// `cloudcore standalone`.
#[derive(Debug, Clone, clap::Args)]
pub struct StandaloneArgs {
    /// Configuration file (TOML); flags override it.
    #[arg(long, env = "KEDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (store, certificates, kubeconfig).
    #[arg(long, env = "KEDGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address of the embedded API (default 127.0.0.1:6443).
    #[arg(long, env = "KEDGE_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Where to write the admin kubeconfig (default DATA_DIR/kubeconfig.yaml).
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
    /// Listen address of /metrics, /healthz, /readyz (default 127.0.0.1:9100).
    #[arg(long, env = "KEDGE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Append an audit log line per API request to this file.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
}

impl StandaloneArgs {
    /// The configuration these flags describe (file, then flags).
    pub fn config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            cfg.api.data_dir = d.clone();
        }
        if let Some(a) = self.api_listen {
            cfg.api.listen = a;
        }
        if let Some(a) = self.metrics_listen {
            cfg.metrics.listen = a;
        }
        if let Some(a) = &self.audit_log {
            cfg.api.audit_log = a.display().to_string();
        }
        let origin = self
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "flags".into());
        cfg.validate(&origin)?;
        Ok(cfg)
    }
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Standalone(args) => {
            let cfg = match args.config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            crate::standalone::run(cfg, args).await
        }
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{}", Config::default_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => match Config::load(Some(&file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "cloudcore",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
