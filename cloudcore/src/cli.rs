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
    /// Run cloudcore against a Kubernetes cluster.
    Run(RunArgs),
    /// Manage join tokens for edge nodes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List edge nodes: Ready or not, connected to a hub or not, last heartbeat, versions.
    Nodes {
        #[command(flatten)]
        kube: KubeArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
        /// All nodes, not only edge nodes (label node-role.kubernetes.io/edge).
        #[arg(long)]
        all: bool,
    },
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `cloudcore run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Configuration file (TOML); flags override it.
    #[arg(long, env = "KEDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// kubeconfig of the cluster (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Listen address of the hub (edge WebSocket + join), default 0.0.0.0:10000.
    #[arg(long, env = "KEDGE_HUB_LISTEN")]
    pub hub_listen: Option<SocketAddr>,
    /// Listen address of /metrics, /healthz, /readyz (default 127.0.0.1:9100).
    #[arg(long, env = "KEDGE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Lifetime of issued node certificates (e.g. 90s, 30m, 24h, 365d; 10 s … 10 years);
    /// edges renew at about 80% of it. Overrides `hub.node_cert_validity_seconds`.
    #[arg(long, env = "KEDGE_NODE_CERT_VALIDITY", value_parser = parse_duration)]
    pub node_cert_validity: Option<std::time::Duration>,
    /// Only validate the configuration, then exit.
    #[arg(long)]
    pub check: bool,
}

/// `cloudcore token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print it.
    Create {
        #[command(flatten)]
        kube: KubeArgs,
        /// Lifetime (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: std::time::Duration,
        /// Bind the token to one node name.
        #[arg(long)]
        node_name: Option<String>,
        /// Free text shown by `token list`.
        #[arg(long)]
        description: Option<String>,
    },
    /// List join tokens.
    List {
        #[command(flatten)]
        kube: KubeArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete a join token by id.
    Delete {
        #[command(flatten)]
        kube: KubeArgs,
        /// The token id (the part before the dot).
        id: String,
    },
}

/// Where the Kubernetes API is.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// kubeconfig (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// `-o` of listing commands.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// Parse `90s`, `30m`, `24h`, `7d` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30m, 24h, 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    if secs == 0 {
        return Err("the duration must be positive".into());
    }
    Ok(std::time::Duration::from_secs(secs))
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
    /// Listen address of the hub (edge WebSocket + join), default 0.0.0.0:10000.
    #[arg(long, env = "KEDGE_HUB_LISTEN")]
    pub hub_listen: Option<SocketAddr>,
    /// Lifetime of issued node certificates (e.g. 90s, 30m, 24h, 365d; 10 s … 10 years);
    /// edges renew at about 80% of it. Overrides `hub.node_cert_validity_seconds`.
    #[arg(long, env = "KEDGE_NODE_CERT_VALIDITY", value_parser = parse_duration)]
    pub node_cert_validity: Option<std::time::Duration>,
    /// Also join a local edgecore (own process, state under DATA_DIR/edge).
    #[arg(long)]
    pub with_local_edge: bool,
    /// Node name of the local edge (default: this host's name).
    #[arg(long)]
    pub edge_node_name: Option<String>,
    /// Extra flags passed to the local edge's `edgecore join` (repeatable).
    #[arg(long = "edge-arg", allow_hyphen_values = true)]
    pub edge_args: Vec<String>,
    /// Listen address of the local edge's embedded MQTT broker. Port 0 picks a free port;
    /// a taken address (a system Mosquitto on 1883) is refused before anything starts.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub edge_mqtt_listen: SocketAddr,
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
        if let Some(a) = self.hub_listen {
            cfg.hub.listen = a;
        }
        if let Some(v) = self.node_cert_validity {
            cfg.hub.node_cert_validity_seconds = v.as_secs();
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
        Command::Run(args) => {
            let mut cfg = match Config::load(args.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if let Some(a) = args.hub_listen {
                cfg.hub.listen = a;
            }
            if let Some(a) = args.metrics_listen {
                cfg.metrics.listen = a;
            }
            if let Some(v) = args.node_cert_validity {
                cfg.hub.node_cert_validity_seconds = v.as_secs();
            }
            let origin = args
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "flags".into());
            if let Err(e) = cfg.validate(&origin) {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
            if args.check {
                println!("configuration ok");
                return Ok(ExitCode::SUCCESS);
            }
            crate::standalone::run_cluster(cfg, args.kubeconfig).await
        }
        Command::Token(cmd) => token(cmd).await,
        Command::Nodes { kube, output, all } => {
            let client = crate::control::client(kube.kubeconfig.as_deref()).await?;
            let rows = crate::nodes::list(client, all).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Yaml => print!("{}", serde_saphyr::to_string(&rows)?),
                Output::Table => {
                    let table: Vec<_> = rows.iter().map(crate::nodes::table_row).collect();
                    print_table(&table);
                }
            }
            Ok(ExitCode::SUCCESS)
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

async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            kube,
            ttl,
            node_name,
            description,
        } => {
            let client = crate::control::client(kube.kubeconfig.as_deref()).await?;
            let token = crate::token::cli_create(client, ttl, node_name, description).await?;
            println!("{token}");
        }
        TokenCommand::List { kube, output } => {
            let client = crate::control::client(kube.kubeconfig.as_deref()).await?;
            let tokens = crate::token::cli_list(client).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&tokens)?),
                Output::Yaml => print!("{}", serde_saphyr::to_string(&tokens)?),
                Output::Table => {
                    let rows: Vec<serde_json::Value> = tokens
                        .iter()
                        .map(|t| {
                            serde_json::json!({
                                "id": t.id,
                                "expires": t.expires,
                                "expired": t.expired,
                                "nodeName": t.node_name,
                                "description": t.description,
                                "created": t.created,
                            })
                        })
                        .collect();
                    print_table(&rows);
                }
            }
        }
        TokenCommand::Delete { kube, id } => {
            let client = crate::control::client(kube.kubeconfig.as_deref()).await?;
            crate::token::cli_delete(client, &id).await?;
            println!("token {id} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print objects as an aligned table with upper-case headers (their keys, in order).
pub fn print_table(rows: &[serde_json::Value]) {
    let Some(first) = rows.first().and_then(|r| r.as_object()) else {
        println!("No resources found.");
        return;
    };
    let keys: Vec<&String> = first.keys().collect();
    let cell = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => "<none>".to_string(),
        Some(serde_json::Value::String(s)) if s.is_empty() => "<none>".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let mut table: Vec<Vec<String>> = vec![keys.iter().map(|k| header(k)).collect()];
    for r in rows {
        table.push(keys.iter().map(|k| cell(r.get(k.as_str()))).collect());
    }
    let widths: Vec<usize> = (0..keys.len())
        .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn header(key: &str) -> String {
    let mut out = String::new();
    for (i, ch) in key.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}
