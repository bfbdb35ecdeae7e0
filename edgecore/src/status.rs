//! `edgecore status`: what the node is doing, from the running process's
//! `/status` endpoint, or — when edgecore is not running — from the store.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::{Store, StoreConfig};

/// The status document (also served as JSON at `/status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Node name.
    pub node: String,
    /// cloudcore's hub.
    pub server: String,
    /// Whether edgecore is running (the answer came from the live process).
    pub running: bool,
    /// Link state: connecting, syncing, live, backoff — or stopped.
    pub link: String,
    /// When the link entered that state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The cloud's session id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_id: String,
    /// When the last resync completed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<String>,
    /// Objects held in the edge cache.
    pub objects: usize,
    /// Upstream writes queued.
    pub outbox_depth: usize,
    /// Sessions started since edgecore started.
    pub sessions: u64,
    /// Set when the store was moved aside and recreated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_recovered: Option<String>,
}

/// Output format of `edgecore status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned key/value lines.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Neither the live process nor the store answered.
    #[error("edgecore is not running and its store cannot be read: {0}")]
    Unavailable(String),
    /// Output encoding failed.
    #[error("cannot format the status: {0}")]
    Format(String),
}

/// Asks the running edgecore, or falls back to reading the store.
pub async fn collect(cfg: &Config) -> Result<StatusReport, StatusError> {
    match fetch_live(cfg).await {
        Ok(report) => Ok(report),
        Err(live_err) => from_store(cfg)
            .map_err(|store_err| StatusError::Unavailable(format!("{live_err}; {store_err}"))),
    }
}

async fn fetch_live(cfg: &Config) -> Result<StatusReport, String> {
    let addr = cfg.metrics_listen;
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("no edgecore at {addr}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get("/status")
            .header(http::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice::<StatusReport>(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), fetch)
        .await
        .map_err(|_| format!("edgecore at {addr} did not answer"))?
}

fn from_store(cfg: &Config) -> Result<StatusReport, String> {
    if !cfg.data_dir.exists() {
        return Err(format!("no store at {}", cfg.data_dir.display()));
    }
    // Never waits for the lock: a daemon that is starting holds it, and reading the store
    // must not delay it (the daemon, in turn, waits out the few milliseconds we hold it).
    let store = Store::open(&cfg.data_dir, &StoreConfig::default()).map_err(|e| match e {
        crate::store::StoreError::Locked { .. } => format!(
            "{e}: edgecore is starting (not serving /status yet) or another edgecore command holds it"
        ),
        e => e.to_string(),
    })?;
    let objects = store
        .tree("objects")
        .map(|t| t.len())
        .map_err(|e| e.to_string())?;
    let system = store.tree(crate::meta::SYSTEM).map_err(|e| e.to_string())?;
    let last_sync = system
        .get(crate::meta::LAST_SYNC_KEY)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let store_recovered = system
        .get(crate::run::RECOVERY_KEY)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(StatusReport {
        node: cfg.node_name.clone(),
        server: cfg.server.clone(),
        running: false,
        link: "stopped".to_owned(),
        last_sync,
        objects,
        outbox_depth: crate::outbox::stored_depth(&store).map_err(|e| e.to_string())?,
        store_recovered,
        ..StatusReport::default()
    })
}

/// Renders `report` in `format`.
pub fn render(report: &StatusReport, format: Format) -> Result<String, StatusError> {
    match format {
        Format::Json => serde_json::to_string_pretty(report)
            .map(|s| s + "\n")
            .map_err(|e| StatusError::Format(e.to_string())),
        Format::Yaml => {
            serde_saphyr::to_string(report).map_err(|e| StatusError::Format(e.to_string()))
        }
        Format::Table => {
            let rows = [
                ("NODE", report.node.clone()),
                ("SERVER", report.server.clone()),
                ("RUNNING", report.running.to_string()),
                ("LINK", report.link.clone()),
                ("SINCE", report.since.clone().unwrap_or_else(|| "-".into())),
                (
                    "LAST SYNC",
                    report.last_sync.clone().unwrap_or_else(|| "never".into()),
                ),
                ("OBJECTS", report.objects.to_string()),
                ("OUTBOX", report.outbox_depth.to_string()),
                ("SESSIONS", report.sessions.to_string()),
                (
                    "STORE RECOVERED",
                    report
                        .store_recovered
                        .clone()
                        .unwrap_or_else(|| "no".into()),
                ),
            ];
            Ok(rows.iter().map(|(k, v)| format!("{k:<16} {v}\n")).collect())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_format() {
        let r = StatusReport {
            node: "edge-1".into(),
            link: "live".into(),
            objects: 3,
            ..StatusReport::default()
        };
        assert!(
            render(&r, Format::Table)
                .unwrap()
                .contains("LINK             live")
        );
        let json = render(&r, Format::Json).unwrap();
        assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), r);
        assert!(render(&r, Format::Yaml).unwrap().contains("node: edge-1"));
    }
}
