//! `cloudcore standalone`: the embedded API server (kubectl works against it), kedge's CRDs
//! installed, an admin kubeconfig written, metrics served — one machine, no cluster.
//! Stops cleanly on SIGTERM/SIGINT (a second signal exits at once).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use apiserver::{ApiConfig, ApiServer};
use tokio_util::sync::CancellationToken;

use crate::cli::StandaloneArgs;
use crate::config::Config;

/// Cancel `token` on the first SIGTERM/SIGINT; exit the process on the second.
pub fn stop_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            seen += 1;
            if seen == 1 {
                tracing::info!("stopping (send the signal again to exit at once)");
                token.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
}

/// Run standalone until a signal.
pub async fn run(cfg: Config, args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    stop_on_signals(shutdown.clone());
    let edge_mqtt = if args.with_local_edge {
        Some(local_edge_mqtt(&args)?)
    } else {
        None
    };
    let api_cfg = ApiConfig {
        data_dir: cfg.api.data_dir.join("apiserver"),
        listen: cfg.api.listen,
        extra_sans: cfg.api.extra_sans.clone(),
        max_body_bytes: cfg.api.max_body_bytes,
        watch_history: cfg.api.watch_history,
        audit_log: (!cfg.api.audit_log.is_empty()).then(|| cfg.api.audit_log.clone().into()),
        admission: cfg.autonomy.admission(),
        ..ApiConfig::default()
    };
    let metrics_listener = crate::telemetry::bind(cfg.metrics.listen).await?;
    let metrics_addr = metrics_listener.local_addr()?;
    let server = ApiServer::start(api_cfg, shutdown.clone())
        .await
        .context("starting the embedded API server")?;
    let kubeconfig = args
        .kubeconfig_out
        .clone()
        .unwrap_or_else(|| cfg.api.data_dir.join("kubeconfig.yaml"));
    server
        .write_kubeconfig(&kubeconfig)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    for crd in crate::crds::objects().map_err(anyhow::Error::msg)? {
        apiserver::bootstrap::ensure(&server.api, crd)
            .await
            .map_err(|e| anyhow::anyhow!("installing kedge's CRDs: {e}"))?;
    }
    let registry = Arc::new(Mutex::new(prometheus_client::registry::Registry::default()));
    let registry = registry_with_api(registry, &server);
    let client = identity_client(&server, CLOUDCORE_IDENTITY).await?;
    let lifecycle = identity_client(&server, NODE_CONTROLLER_IDENTITY).await?;
    let control = crate::control::start(
        client.clone(),
        &cfg,
        &registry,
        Some(lifecycle),
        shutdown.clone(),
    )
    .await
    .context("starting CloudHub")?;
    let api = server.api.clone();
    let hub = control.hub.clone();
    tokio::spawn(crate::telemetry::serve_metrics(
        metrics_listener,
        registry,
        Arc::new(move || api.is_ready() && hub.ready()),
        shutdown.clone(),
    ));
    let path = std::fs::canonicalize(&kubeconfig).unwrap_or(kubeconfig);
    // Written with errors ignored: a closed stdout (a supervisor that stopped reading)
    // must not take the server down, as println! would.
    let banner = format!(
        "kedge standalone API server: {}\nkubeconfig: {}\nexport KUBECONFIG={}\nhub: {}\nmetrics: http://{metrics_addr}/metrics\n",
        server.url(),
        path.display(),
        path.display(),
        control.local_hub_url(),
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    tracing::info!(api = %server.url(), metrics = %metrics_addr, "cloudcore standalone ready");
    let mut edge = None;
    if let Some(mqtt) = edge_mqtt {
        edge = Some(
            start_local_edge(&client, &cfg, &args, &control, mqtt)
                .await
                .context("joining the local edge")?,
        );
    }
    shutdown.cancelled().await;
    if let Some(mut child) = edge {
        stop_child(&mut child).await;
    }
    server.stopped().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// (user, groups) cloudcore authenticates as to its embedded API: the identity the Helm
/// chart's ServiceAccount has in a cluster, so its requests stand out in the audit log and can
/// be checked against the chart's RBAC (tests/tests/helm_chart.rs).
const CLOUDCORE_IDENTITY: (&str, &[&str]) = (
    "system:serviceaccount:kedge-system:cloudcore",
    &[
        "system:serviceaccounts",
        "system:serviceaccounts:kedge-system",
    ],
);
/// The node-lifecycle emulation's identity: Kubernetes' node-lifecycle controller runs as
/// this ServiceAccount in kube-controller-manager, not as cloudcore (the chart does not
/// grant its taint and eviction writes).
const NODE_CONTROLLER_IDENTITY: (&str, &[&str]) = (
    "system:serviceaccount:kube-system:node-controller",
    &[
        "system:serviceaccounts",
        "system:serviceaccounts:kube-system",
    ],
);

/// A client of the embedded API authenticated by a fresh client certificate (not stored;
/// a restart issues a new one) for `identity`.
async fn identity_client(
    server: &ApiServer,
    identity: (&str, &[&str]),
) -> anyhow::Result<kube::Client> {
    use base64::Engine;
    let (cert, key) = server
        .pki
        .issue_client_cert(
            identity.0,
            identity.1,
            std::time::Duration::from_secs(365 * 86_400),
        )
        .with_context(|| format!("issuing a client certificate for {}", identity.0))?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kedge\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: cloudcore\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: kedge\n  context:\n    cluster: kedge\n    user: cloudcore\ncurrent-context: kedge\n",
        server.url(),
        b64(server.pki.ca_cert_pem()),
        b64(&cert),
        b64(&key),
    );
    let kc =
        kube::config::Kubeconfig::from_yaml(&yaml).context("building cloudcore's kubeconfig")?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("using cloudcore's kubeconfig")?;
    kube::Client::try_from(cfg).context("building the Kubernetes client")
}

fn registry_with_api(
    own: Arc<Mutex<prometheus_client::registry::Registry>>,
    server: &ApiServer,
) -> Arc<Mutex<prometheus_client::registry::Registry>> {
    if let Ok(mut reg) = own.lock() {
        server.api.metrics.register(&mut reg);
    }
    own
}

/// `cloudcore run`: the control plane against a real cluster.
pub async fn run_cluster(
    cfg: Config,
    kubeconfig: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    stop_on_signals(shutdown.clone());
    let metrics_listener = crate::telemetry::bind(cfg.metrics.listen).await?;
    let metrics_addr = metrics_listener.local_addr()?;
    let registry = Arc::new(Mutex::new(prometheus_client::registry::Registry::default()));
    let client = crate::control::client(kubeconfig.as_deref()).await?;
    crate::webhook::start(&cfg.autonomy, client.clone(), &registry, shutdown.clone()).await?;
    let control = crate::control::start(client, &cfg, &registry, None, shutdown.clone()).await?;
    let hub = control.hub.clone();
    tokio::spawn(crate::telemetry::serve_metrics(
        metrics_listener,
        registry,
        Arc::new(move || hub.ready()),
        shutdown.clone(),
    ));
    // The bound addresses, so a supervisor (or a test) that asked for port 0 learns them;
    // written with errors ignored, like standalone's banner.
    let banner = format!(
        "hub: {}\nmetrics: http://{metrics_addr}/metrics\n",
        control.local_hub_url()
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    tracing::info!(hub = %control.hub_addr, metrics = %metrics_addr, "cloudcore running");
    shutdown.cancelled().await;
    // Give sessions a moment to close.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(ExitCode::SUCCESS)
}

/// Create a token bound to the local node and run `edgecore join` as a child process whose
/// state lives under `<data>/edge`.
async fn start_local_edge(
    client: &kube::Client,
    cfg: &Config,
    args: &StandaloneArgs,
    control: &crate::control::Control,
    mqtt: EdgeMqtt,
) -> anyhow::Result<tokio::process::Child> {
    let node = match &args.edge_node_name {
        Some(n) => n.clone(),
        None => local_hostname(),
    };
    let token = crate::token::cli_create(
        client.clone(),
        std::time::Duration::from_secs(3600),
        Some(node.clone()),
        Some("local edge of cloudcore standalone".into()),
    )
    .await?;
    let root = cfg.api.data_dir.join("edge");
    std::fs::create_dir_all(&root)?;
    // Absolute in the banner (as the kubeconfig's path is) and in the edge's own config.
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let exe = edgecore_binary();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("edgecore.log"))?;
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("join")
        .args(["--server", &control.local_hub_url()])
        .args(["--token", &token])
        .args(["--node-name", &node])
        .arg("--root")
        .arg(&root)
        .args(&args.edge_args)
        .args(mqtt.join_args())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Killed with the standalone (drop) and, when that is killed with SIGKILL, by the
        // kernel (edgecore sets PR_SET_PDEATHSIG when it sees this variable).
        .env("KEDGE_EXIT_WITH_PARENT", std::process::id().to_string())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    let _ = writeln!(
        out,
        "local edge: node {node}, state {}, log {}",
        root.display(),
        root.join("edgecore.log").display()
    );
    let _ = writeln!(
        out,
        "mqtt: mqtt://{} (the local edge's broker; device topics kedge/events/device/...)",
        mqtt.addr
    );
    let _ = out.flush();
    Ok(child)
}

/// The local edge's MQTT listen address and whether `--edge-arg` already sets it.
#[derive(Debug, Clone, Copy)]
struct EdgeMqtt {
    addr: std::net::SocketAddr,
    from_edge_args: bool,
}

impl EdgeMqtt {
    /// The `edgecore join` flags for it (none when `--edge-arg` sets them).
    fn join_args(&self) -> Vec<String> {
        if self.from_edge_args {
            Vec::new()
        } else {
            vec!["--mqtt-listen".to_owned(), self.addr.to_string()]
        }
    }
}

/// Decides the local edge's MQTT address before anything starts: an `--edge-arg
/// --mqtt-listen=ADDR` wins; otherwise `--edge-mqtt-listen`, port 0 meaning a free port
/// chosen now; an address already taken is a clear error.
fn local_edge_mqtt(args: &StandaloneArgs) -> anyhow::Result<EdgeMqtt> {
    if let Some(addr) = mqtt_in_edge_args(&args.edge_args) {
        let addr = addr
            .parse()
            .with_context(|| format!("--edge-arg --mqtt-listen {addr:?} is not host:port"))?;
        return Ok(EdgeMqtt {
            addr,
            from_edge_args: true,
        });
    }
    let want = args.edge_mqtt_listen;
    match std::net::TcpListener::bind(want) {
        Ok(l) => Ok(EdgeMqtt {
            addr: l.local_addr().unwrap_or(want),
            from_edge_args: false,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "the local edge's MQTT address {want} is already in use (a system Mosquitto?); \
             choose another with --edge-mqtt-listen, e.g. 127.0.0.1:0 for a free port"
        ),
        Err(e) => Err(e).with_context(|| format!("checking --edge-mqtt-listen {want}")),
    }
}

/// The value of `--mqtt-listen` (`--mqtt-listen X` or `--mqtt-listen=X`) in `edge_args`.
fn mqtt_in_edge_args(edge_args: &[String]) -> Option<&str> {
    let mut it = edge_args.iter();
    while let Some(a) = it.next() {
        if a == "--mqtt-listen" {
            return it.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix("--mqtt-listen=") {
            return Some(v);
        }
    }
    None
}

fn edgecore_binary() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("edgecore")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| std::path::PathBuf::from("edgecore"))
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local-edge".into())
}

async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_args_may_set_the_mqtt_address() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            mqtt_in_edge_args(&v(&["--mqtt-listen", "1.2.3.4:5"])),
            Some("1.2.3.4:5")
        );
        assert_eq!(
            mqtt_in_edge_args(&v(&["--x", "--mqtt-listen=h:1"])),
            Some("h:1")
        );
        assert_eq!(mqtt_in_edge_args(&v(&["--metrics-listen", "h:1"])), None);
    }
}
