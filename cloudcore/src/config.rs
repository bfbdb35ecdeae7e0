//! cloudcore's configuration: one typed struct with defaults, read from TOML, overridden by
//! environment variables and flags (clap's `env`), validated before any port is bound.
//! `cloudcore config print-default` prints the defaults as a file to start from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Configuration errors; each names the file and, where it can, the key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The embedded API server (standalone only).
    pub api: ApiSection,
    /// CloudHub: the edge WebSocket and bootstrap port.
    pub hub: HubSection,
    /// Prometheus metrics and health.
    pub metrics: MetricsSection,
    /// Node lifecycle emulation (standalone).
    pub lifecycle: LifecycleSection,
    /// Edge autonomy: no eviction of edge pods while their node is offline.
    pub autonomy: AutonomySection,
}

/// `[autonomy]`: pods bound for edge nodes tolerate `node.kubernetes.io/not-ready` and
/// `unreachable` (NoExecute) without `tolerationSeconds`. Standalone applies it in its own
/// admission; `cloudcore run` serves it as a mutating admission webhook (HTTPS) when
/// `webhook_listen` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AutonomySection {
    /// Off: edge pods keep Kubernetes' timed tolerations and are evicted like any pod.
    pub enabled: bool,
    /// The node label that marks edge nodes (cloudcore puts it on every edge it joins).
    pub edge_label: String,
    /// Standalone's `DefaultTolerationSeconds` for `not-ready` (kube-apiserver's
    /// `--default-not-ready-toleration-seconds`); negative = plugin off for this taint.
    pub default_not_ready_toleration_seconds: i64,
    /// The same for `unreachable` (`--default-unreachable-toleration-seconds`).
    pub default_unreachable_toleration_seconds: i64,
    /// `cloudcore run`: where the webhook listens (HTTPS), e.g. "0.0.0.0:9443"; "" = not
    /// served.
    pub webhook_listen: String,
    /// PEM serving certificate (chain) of the webhook; re-read when the file changes.
    pub webhook_cert: PathBuf,
    /// PEM private key of the webhook.
    pub webhook_key: PathBuf,
}

impl Default for AutonomySection {
    fn default() -> Self {
        Self {
            enabled: true,
            edge_label: crate::lifecycle::EDGE_ROLE_LABEL.to_string(),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
            webhook_listen: String::new(),
            webhook_cert: PathBuf::from("/var/run/kedge/webhook/tls.crt"),
            webhook_key: PathBuf::from("/var/run/kedge/webhook/tls.key"),
        }
    }
}

impl AutonomySection {
    /// The webhook's listen address, `None` when not served (validated by
    /// [`Config::validate`]).
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_listen.parse().ok()
    }

    /// The embedded API's admission settings these values describe.
    pub fn admission(&self) -> apiserver::admission::AdmissionConfig {
        let secs = |s: i64| (s >= 0).then_some(s);
        apiserver::admission::AdmissionConfig {
            default_not_ready_toleration_seconds: secs(self.default_not_ready_toleration_seconds),
            default_unreachable_toleration_seconds: secs(
                self.default_unreachable_toleration_seconds,
            ),
            edge_autonomy: self.enabled.then(|| self.edge_label.clone()),
        }
    }
}

/// `[lifecycle]`: how standalone plays Kubernetes' node-lifecycle controller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSection {
    /// A node whose Lease is older than this becomes Ready=Unknown and tainted.
    pub grace_seconds: u64,
    /// Taint-based eviction of pods that do not tolerate the taints.
    pub eviction: bool,
}

impl Default for LifecycleSection {
    fn default() -> Self {
        Self {
            grace_seconds: 40,
            eviction: true,
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Listen address of the embedded API.
    pub listen: SocketAddr,
    /// Where standalone keeps its data (store, certificates, kubeconfig).
    pub data_dir: PathBuf,
    /// Watch events kept for resumption before 410 Gone.
    pub watch_history: usize,
    /// Extra DNS names / IPs for the API's serving certificate.
    pub extra_sans: Vec<String>,
    /// Audit log path ("" = off).
    pub audit_log: String,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
}

/// `[hub]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// Listen address of the hub (WebSocket + join).
    pub listen: SocketAddr,
    /// Names and addresses edges reach the hub by (put into its certificate).
    pub advertise: Vec<String>,
    /// Largest frame accepted on the link, in bytes.
    pub max_frame_bytes: usize,
    /// Seconds between pings on the link.
    pub ping_seconds: u64,
    /// Seconds of silence after which a session is dropped.
    pub idle_seconds: u64,
    /// Lifetime of the node certificates the hub issues (join and renewal), in seconds.
    /// Edges renew over the link at about 80% of it. Between 10 s and 10 years.
    pub node_cert_validity_seconds: u64,
    /// The cluster's pod range (IPv4), from which a connecting node without
    /// `spec.podCIDR` gets a block (kube-controller-manager's `--cluster-cidr`).
    pub cluster_cidr: String,
    /// Prefix length of each node's block (`--node-cidr-mask-size`): the range holds
    /// 2^(mask − range prefix) nodes; past that, nodes register without a pod CIDR.
    pub node_cidr_mask_size: u8,
    /// MiB of edge requests the hub may hold queued for their API call, over all
    /// sessions (each session gets at most a sixteenth, and at least one frame). Past
    /// it, requests wait at the edge, which sends them again.
    pub queued_request_budget_mib: usize,
}

impl HubSection {
    /// The pod-CIDR allocator's settings.
    pub fn pod_cidrs(&self) -> crate::lifecycle::CidrConfig {
        crate::lifecycle::CidrConfig {
            cluster_cidr: self.cluster_cidr.clone(),
            node_prefix: self.node_cidr_mask_size,
        }
    }
}

/// Shortest accepted `hub.node_cert_validity_seconds` (tests use tens of seconds).
pub const MIN_NODE_CERT_VALIDITY_SECONDS: u64 = 10;
/// Longest accepted `hub.node_cert_validity_seconds`: the node CA's own lifetime.
pub const MAX_NODE_CERT_VALIDITY_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Listen address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            data_dir: PathBuf::from("/var/lib/kedge/cloudcore"),
            watch_history: 100_000,
            extra_sans: Vec::new(),
            audit_log: String::new(),
            max_body_bytes: 3 * 1024 * 1024,
        }
    }
}

impl Default for HubSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 10000)),
            advertise: Vec::new(),
            max_frame_bytes: 4 * 1024 * 1024,
            ping_seconds: 15,
            idle_seconds: 45,
            node_cert_validity_seconds: crate::nodeca::DEFAULT_NODE_CERT_VALIDITY.as_secs(),
            cluster_cidr: crate::lifecycle::CidrConfig::default().cluster_cidr,
            queued_request_budget_mib: crate::hub::DEFAULT_QUEUED_REQUEST_BUDGET / (1024 * 1024),
            node_cidr_mask_size: crate::lifecycle::CidrConfig::default().node_prefix,
        }
    }
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
        }
    }
}

impl Config {
    /// The defaults as TOML.
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).unwrap_or_default()
    }

    /// Read `path` (or the defaults when `None`) and validate.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parse TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0),
            message: e.message().replace('\n', " "),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Check values serde cannot.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError::Invalid {
            path: origin.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if self.api.watch_history == 0 {
            return Err(bad("api.watch_history", "must be at least 1"));
        }
        if self.api.max_body_bytes < 1024 {
            return Err(bad("api.max_body_bytes", "must be at least 1024"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.hub.max_frame_bytes) {
            return Err(bad(
                "hub.max_frame_bytes",
                "must be between 1 KiB and 64 MiB",
            ));
        }
        if !(1..=64 * 1024).contains(&self.hub.queued_request_budget_mib)
            || self.hub.queued_request_budget_mib * 1024 * 1024 < self.hub.max_frame_bytes
        {
            return Err(bad(
                "hub.queued_request_budget_mib",
                "must be between 1 and 65536, and hold at least one frame of hub.max_frame_bytes",
            ));
        }
        if self.hub.ping_seconds == 0 || self.hub.idle_seconds <= self.hub.ping_seconds {
            return Err(bad(
                "hub.idle_seconds",
                "must be greater than hub.ping_seconds (> 0)",
            ));
        }
        if !(MIN_NODE_CERT_VALIDITY_SECONDS..=MAX_NODE_CERT_VALIDITY_SECONDS)
            .contains(&self.hub.node_cert_validity_seconds)
        {
            return Err(bad(
                "hub.node_cert_validity_seconds",
                &format!(
                    "must be between {MIN_NODE_CERT_VALIDITY_SECONDS} (10 s) and {MAX_NODE_CERT_VALIDITY_SECONDS} (10 years), got {}",
                    self.hub.node_cert_validity_seconds
                ),
            ));
        }
        if let Err(e) = self.hub.pod_cidrs().check() {
            return Err(bad("hub.cluster_cidr", &e.to_string()));
        }
        if self.lifecycle.grace_seconds == 0 {
            return Err(bad("lifecycle.grace_seconds", "must be at least 1"));
        }
        if self.autonomy.edge_label.is_empty() {
            return Err(bad("autonomy.edge_label", "must not be empty"));
        }
        if !self.autonomy.webhook_listen.is_empty() {
            if self.autonomy.webhook_addr().is_none() {
                return Err(bad(
                    "autonomy.webhook_listen",
                    "must be an address like 0.0.0.0:9443 (or \"\" for no webhook)",
                ));
            }
            if self.autonomy.webhook_cert.as_os_str().is_empty()
                || self.autonomy.webhook_key.as_os_str().is_empty()
            {
                return Err(bad(
                    "autonomy.webhook_cert",
                    "webhook_cert and webhook_key are needed to serve the webhook",
                ));
            }
        }
        if self.api.data_dir.as_os_str().is_empty() {
            return Err(bad("api.data_dir", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip() {
        let text = Config::default_toml();
        assert_eq!(Config::parse(&text, "d.toml").unwrap(), Config::default());
    }

    #[test]
    fn misspelt_key_names_file_line_and_key() {
        let err = Config::parse("[api]\nlisen = \"127.0.0.1:1\"\n", "f.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("f.toml:2:"), "{msg}");
        assert!(msg.contains("lisen"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn pod_cidr_range_is_configurable_and_checked_at_load() {
        let cfg = Config::parse(
            "[hub]\ncluster_cidr = \"10.42.0.0/15\"\nnode_cidr_mask_size = 26\n",
            "f.toml",
        )
        .unwrap();
        let pods = cfg.hub.pod_cidrs();
        assert_eq!(pods.cluster_cidr, "10.42.0.0/15");
        assert_eq!(pods.blocks(), 2048);
        assert_eq!(Config::default().hub.pod_cidrs().blocks(), 256);
        for (text, why) in [
            ("cluster_cidr = \"10.42.0.0\"", "not an IPv4 CIDR"),
            ("cluster_cidr = \"fd00::/64\"", "not an IPv4 CIDR"),
            (
                "node_cidr_mask_size = 12",
                "between the range's prefix and 32",
            ),
            (
                "node_cidr_mask_size = 33",
                "between the range's prefix and 32",
            ),
        ] {
            let err = Config::parse(&format!("[hub]\n{text}\n"), "f.toml").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("hub.cluster_cidr") && msg.contains(why),
                "{text}: {msg}"
            );
        }
    }

    #[test]
    fn queued_request_budget_must_hold_a_frame() {
        let cfg = Config::parse("[hub]\nqueued_request_budget_mib = 8\n", "f.toml").unwrap();
        assert_eq!(cfg.hub.queued_request_budget_mib, 8);
        for text in [
            "queued_request_budget_mib = 0",
            "queued_request_budget_mib = 70000",
            "queued_request_budget_mib = 2\nmax_frame_bytes = 4194304",
        ] {
            let err = Config::parse(&format!("[hub]\n{text}\n"), "f.toml").unwrap_err();
            assert!(
                err.to_string().contains("hub.queued_request_budget_mib"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn autonomy_section_maps_to_the_admission() {
        let cfg = Config::parse(
            "[autonomy]\nenabled = false\ndefault_unreachable_toleration_seconds = 20\ndefault_not_ready_toleration_seconds = -1\n",
            "f.toml",
        )
        .unwrap();
        let a = cfg.autonomy.admission();
        assert_eq!(a.edge_autonomy, None);
        assert_eq!(a.default_unreachable_toleration_seconds, Some(20));
        assert_eq!(a.default_not_ready_toleration_seconds, None);
        let on = Config::default().autonomy.admission();
        assert_eq!(
            on.edge_autonomy.as_deref(),
            Some("node-role.kubernetes.io/edge")
        );
        assert_eq!(Config::default().autonomy.webhook_addr(), None);
        let err = Config::parse("[autonomy]\nwebhook_listen = \"nope\"\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("autonomy.webhook_listen"), "{err}");
    }

    #[test]
    fn node_cert_validity_is_bounded() {
        assert_eq!(
            Config::default().hub.node_cert_validity_seconds,
            365 * 24 * 3600
        );
        let ok = Config::parse("[hub]\nnode_cert_validity_seconds = 10\n", "f.toml").unwrap();
        assert_eq!(ok.hub.node_cert_validity_seconds, 10);
        for bad in ["9", "0", "315360001"] {
            let err = Config::parse(
                &format!("[hub]\nnode_cert_validity_seconds = {bad}\n"),
                "f.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("f.toml: hub.node_cert_validity_seconds: must be between 10"),
                "{err}"
            );
        }
        let err = Config::parse("[hub]\nnode_cert_validity_seconds = \"1y\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node_cert_validity_seconds") || err.starts_with("f.toml:2:"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        let err = Config::parse("[api]\nwatch_history = 0\n", "f.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.toml: api.watch_history: must be at least 1"
        );
    }
}
