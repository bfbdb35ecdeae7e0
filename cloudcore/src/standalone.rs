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
    let api_cfg = ApiConfig {
        data_dir: cfg.api.data_dir.join("apiserver"),
        listen: cfg.api.listen,
        extra_sans: cfg.api.extra_sans.clone(),
        max_body_bytes: cfg.api.max_body_bytes,
        watch_history: cfg.api.watch_history,
        audit_log: (!cfg.api.audit_log.is_empty()).then(|| cfg.api.audit_log.clone().into()),
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
    let api = server.api.clone();
    tokio::spawn(crate::telemetry::serve_metrics(
        metrics_listener,
        registry_with_api(registry, &server),
        Arc::new(move || api.is_ready()),
        shutdown.clone(),
    ));
    let path = std::fs::canonicalize(&kubeconfig).unwrap_or(kubeconfig);
    // Written with errors ignored: a closed stdout (a supervisor that stopped reading)
    // must not take the server down, as println! would.
    let banner = format!(
        "kedge standalone API server: {}\nkubeconfig: {}\nexport KUBECONFIG={}\nmetrics: http://{metrics_addr}/metrics\n",
        server.url(),
        path.display(),
        path.display()
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    tracing::info!(api = %server.url(), metrics = %metrics_addr, "cloudcore standalone ready");
    shutdown.cancelled().await;
    server.stopped().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
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
