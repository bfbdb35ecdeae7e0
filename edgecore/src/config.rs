//! edgecore's configuration: the typed [`Config`] written by `edgecore join`
//! to `<root>/etc/kedge/edgecore.toml` and read by `edgecore run --config`.
//!
//! Every field has a default (`edgecore config print-default` shows them),
//! unknown fields are errors, and [`Config::validate`] runs before anything
//! binds a port, so bad config prints what is wrong and where.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default port of cloudcore's hub (WebSocket + bootstrap).
pub const DEFAULT_HUB_PORT: u16 = 10000;
/// Path of the WebSocket route on the hub port.
pub const CONNECT_PATH: &str = "/v1/connect";

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (with line and column).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid config: {field}: {message}")]
    Invalid {
        /// Dotted field name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The full edgecore configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this node (its Node object, the CN of its certificate).
    pub node_name: String,
    /// cloudcore's hub: `wss://HOST:PORT`.
    pub server: String,
    /// Labels the edge asks for on its Node.
    pub labels: BTreeMap<String, String>,
    /// Directory of the edge store.
    pub data_dir: PathBuf,
    /// Certificates and key.
    pub pki: PkiConfig,
    /// CRI endpoint of the container runtime.
    pub cri_endpoint: String,
    /// Listen address of the embedded MQTT broker (`--mqtt-listen` at join). Port 0
    /// disables the embedded broker (and so the device bus, unless `mqtt.external` is set).
    pub mqtt_listen: SocketAddr,
    /// Listen address of `/metrics`, `/healthz`, `/readyz`, `/status`.
    pub metrics_listen: SocketAddr,
    /// The link to cloudcore.
    pub hub: HubConfig,
    /// The edge store.
    pub store: StoreSettings,
    /// Node status and Lease reporting.
    pub status: StatusConfig,
    /// The device bus (MQTT broker, topic prefix, simulated GPIO).
    pub mqtt: MqttConfig,
    /// The pod runtime (CRI endpoint is `cri_endpoint`).
    pub runtime: crate::runtime::RuntimeSettings,
    /// Seconds to drain (flush the store, close the link) on SIGTERM.
    pub shutdown_grace_secs: u64,
    /// edgecore's own memory.
    pub memory: MemorySettings,
}

/// edgecore's own memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    /// Once the link is first live (or a minute into an offline start), page out the
    /// binary's code and read-only data so that only what keeps running comes back
    /// ([`crate::memory`]).
    pub release_startup_code: bool,
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            release_startup_code: true,
        }
    }
}

/// Paths of the node's PKI files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkiConfig {
    /// The node CA (the only CA trusted for the hub).
    pub ca: PathBuf,
    /// The node certificate (chain), PEM.
    pub cert: PathBuf,
    /// The node private key, PEM (mode 0600).
    pub key: PathBuf,
}

/// Tuning of the link to cloudcore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Seconds between pings (the cloud's HELLO_ACK may override it).
    pub ping_interval_secs: u64,
    /// Seconds of silence after which the session is dropped (HELLO_ACK may override).
    pub idle_timeout_secs: u64,
    /// Largest reconnect back-off, seconds.
    pub backoff_max_secs: u64,
    /// Seconds allowed for TCP + TLS + WebSocket handshake.
    pub connect_timeout_secs: u64,
    /// Largest frame sent or accepted, bytes.
    pub max_frame_bytes: usize,
    /// Upstream frames in flight at once.
    pub window: usize,
}

/// The edge store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// sled page cache cap, MiB.
    pub cache_capacity_mib: u64,
}

/// Node status and Lease reporting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Seconds between Lease renewals, and between checks of the Node status (posted when
    /// it changed).
    pub interval_secs: u64,
    /// `spec.leaseDurationSeconds` of the node Lease.
    pub lease_duration_secs: u64,
    /// Seconds after which an unchanged Node status is posted anyway (the kubelet's
    /// `nodeStatusReportFrequency`). A change, a new session or a changed condition posts
    /// it at once.
    pub report_secs: u64,
}

/// The device bus. The embedded broker listens on the top-level `mqtt_listen`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// An external broker (`mqtt://host:port`, e.g. Mosquitto) instead of the embedded one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
    /// Topic prefix. Default: `kedge` with the embedded broker (rumqttd cannot route `$`
    /// topics), `$hw` (KubeEdge's, for unmodified mappers) with an external one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// MQTT username (the embedded broker then requires it too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// MQTT password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Directory of the simulated GPIO pin bank; default `<data_dir>/gpio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpio_sim_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config::for_root(Path::new("/"))
    }
}

impl Default for PkiConfig {
    fn default() -> Self {
        PkiConfig::under(Path::new("/etc/kedge/pki"))
    }
}

impl PkiConfig {
    /// `ca.crt`, `node.crt`, `node.key` in `dir`.
    pub fn under(dir: &Path) -> Self {
        PkiConfig {
            ca: dir.join("ca.crt"),
            cert: dir.join("node.crt"),
            key: dir.join("node.key"),
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            ping_interval_secs: 15,
            idle_timeout_secs: 45,
            backoff_max_secs: 30,
            connect_timeout_secs: 10,
            max_frame_bytes: proto::DEFAULT_MAX_FRAME,
            window: 64,
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            cache_capacity_mib: 16,
        }
    }
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            interval_secs: 10,
            lease_duration_secs: 40,
            report_secs: 300,
        }
    }
}

/// Paths of a node's state under a root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `<root>/etc/kedge`.
    pub etc: PathBuf,
    /// `<root>/etc/kedge/edgecore.toml`.
    pub config: PathBuf,
    /// `<root>/etc/kedge/pki`.
    pub pki: PathBuf,
    /// `<root>/var/lib/kedge`.
    pub data: PathBuf,
}

impl Layout {
    /// The layout under `root` (`/` in production, a temp dir in tests).
    pub fn new(root: &Path) -> Self {
        let etc = root.join("etc/kedge");
        Layout {
            config: etc.join("edgecore.toml"),
            pki: etc.join("pki"),
            data: root.join("var/lib/kedge"),
            etc,
        }
    }
}

impl Config {
    /// Defaults with paths under `root`.
    pub fn for_root(root: &Path) -> Self {
        let layout = Layout::new(root);
        Config {
            node_name: String::new(),
            server: String::new(),
            labels: BTreeMap::new(),
            data_dir: layout.data,
            pki: PkiConfig::under(&layout.pki),
            cri_endpoint: "unix:///run/containerd/containerd.sock".to_owned(),
            mqtt_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            hub: HubConfig::default(),
            store: StoreSettings::default(),
            status: StatusConfig::default(),
            mqtt: MqttConfig::default(),
            runtime: crate::runtime::RuntimeSettings::default(),
            shutdown_grace_secs: 10,
            memory: MemorySettings::default(),
        }
    }

    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (no validation).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| ConfigError::Invalid {
            field,
            message: message.to_owned(),
        };
        validate_node_name(&self.node_name).map_err(|m| invalid("node_name", &m))?;
        ServerUrl::parse(&self.server).map_err(|m| invalid("server", &m))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        for (field, v) in [
            ("hub.ping_interval_secs", self.hub.ping_interval_secs),
            ("hub.idle_timeout_secs", self.hub.idle_timeout_secs),
            ("hub.backoff_max_secs", self.hub.backoff_max_secs),
            ("hub.connect_timeout_secs", self.hub.connect_timeout_secs),
            ("status.interval_secs", self.status.interval_secs),
            (
                "status.lease_duration_secs",
                self.status.lease_duration_secs,
            ),
            ("status.report_secs", self.status.report_secs),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if self.hub.idle_timeout_secs <= self.hub.ping_interval_secs {
            return Err(invalid(
                "hub.idle_timeout_secs",
                "must be greater than hub.ping_interval_secs",
            ));
        }
        if self.hub.max_frame_bytes < 64 * 1024 {
            return Err(invalid("hub.max_frame_bytes", "must be at least 65536"));
        }
        if self.hub.window == 0 {
            return Err(invalid("hub.window", "must be greater than 0"));
        }
        crate::runtime::cri::socket_path(&self.cri_endpoint)
            .map_err(|e| invalid("cri_endpoint", &e.to_string()))?;
        self.runtime
            .validate()
            .map_err(|(field, m)| invalid(field, &m))?;
        if let Some(url) = &self.mqtt.external {
            crate::bus::link::parse_broker_url(url)
                .map_err(|e| invalid("mqtt.external", &e.to_string()))?;
        }
        if let Some(bus) = self.bus_config() {
            devicetwin::topic::edge_subscriptions(&bus.prefix, &bus.node_name)
                .map_err(|e| invalid("mqtt.prefix", &e.to_string()))?;
            if bus.external.is_none() && bus.prefix.starts_with('$') {
                return Err(invalid(
                    "mqtt.prefix",
                    "the embedded broker cannot route topics starting with '$'; use \"kedge\" \
                     or set mqtt.external",
                ));
            }
        }
        Ok(())
    }

    /// The device bus settings, or `None` when the bus is off (embedded broker on port 0
    /// and no external broker).
    pub fn bus_config(&self) -> Option<crate::bus::BusConfig> {
        if self.mqtt.external.is_none() && self.mqtt_listen.port() == 0 {
            return None;
        }
        let default_prefix = if self.mqtt.external.is_some() {
            devicetwin::topic::KUBEEDGE_PREFIX
        } else {
            devicetwin::topic::EMBEDDED_PREFIX
        };
        Some(crate::bus::BusConfig {
            listen: self.mqtt_listen,
            external: self.mqtt.external.clone(),
            prefix: self
                .mqtt
                .prefix
                .clone()
                .unwrap_or_else(|| default_prefix.to_owned()),
            username: self.mqtt.username.clone(),
            password: self.mqtt.password.clone(),
            node_name: self.node_name.clone(),
            gpio_sim_dir: self
                .mqtt
                .gpio_sim_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("gpio")),
        })
    }
}

/// A node name: a DNS subdomain (lower-case alphanumerics, `-`, `.`), at
/// most 253 characters — the Kubernetes rule for Node names.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = name
        .chars()
        .next()
        .zip(name.chars().last())
        .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
    if !ok_chars || !ok_ends {
        return Err(format!(
            "{name:?} is not a valid node name (lower-case letters, digits, '-' and '.', starting and ending alphanumeric)"
        ));
    }
    Ok(())
}

/// cloudcore's hub address, parsed from `wss://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Host name or IP (without brackets).
    pub host: String,
    /// Port (default 10000).
    pub port: u16,
}

impl ServerUrl {
    /// Parses `wss://HOST[:PORT][/]`.
    pub fn parse(s: &str) -> Result<ServerUrl, String> {
        let hint = "expected wss://HOST:PORT, e.g. wss://cloud.example.com:10000";
        let uri: http::Uri = s
            .parse()
            .map_err(|e| format!("{s:?} is not a URL ({e}); {hint}"))?;
        if uri.scheme_str() != Some("wss") {
            return Err(format!("{s:?} must use the wss:// scheme; {hint}"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("{s:?} must not have a path; {hint}"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{s:?} has no host; {hint}"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?} has no host; {hint}"));
        }
        Ok(ServerUrl {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(DEFAULT_HUB_PORT),
        })
    }

    /// `host:port` with IPv6 brackets, for URLs and Host headers.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The WebSocket URL of the link.
    pub fn connect_url(&self) -> String {
        format!("wss://{}{CONNECT_PATH}", self.authority())
    }

    /// `https://host:port` plus `path` (bootstrap endpoints).
    pub fn https(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority())
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "wss://{}", self.authority())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            node_name: "edge-1".into(),
            server: "wss://127.0.0.1:10000".into(),
            ..Config::default()
        }
    }

    #[test]
    fn default_round_trips_through_toml() {
        let cfg = valid();
        let text = cfg.to_toml();
        assert_eq!(Config::parse(&text).unwrap(), cfg);
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let err = Config::parse("node_name = \"a\"\nbogus = 1\n").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        let mut cfg = valid();
        cfg.node_name = "Edge_1".into();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("node_name")
        );
        let mut cfg = valid();
        cfg.hub.idle_timeout_secs = 10;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("idle_timeout")
        );
    }

    #[test]
    fn mqtt_section_defaults_and_errors() {
        let mut cfg = valid();
        let bus = cfg.bus_config().unwrap();
        assert_eq!((bus.prefix.as_str(), bus.listen.port()), ("kedge", 1883));
        assert_eq!(bus.gpio_sim_dir, cfg.data_dir.join("gpio"));
        cfg.mqtt_listen.set_port(0);
        assert!(cfg.bus_config().is_none(), "port 0 turns the bus off");
        cfg.validate().unwrap();
        cfg.mqtt.external = Some("mqtt://127.0.0.1:1884".into());
        assert_eq!(cfg.bus_config().unwrap().prefix, "$hw");
        cfg.validate().unwrap();
        cfg.mqtt.external = Some("mqtts://x".into());
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("mqtt.external")
        );
        let mut cfg = valid();
        cfg.mqtt.prefix = Some("$hw".into());
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("mqtt.prefix")
        );
        let parsed = Config::parse("[mqtt]\nprefix = \"p\"\nbogus = 1\n").unwrap_err();
        assert!(parsed.contains("bogus"), "{parsed}");
    }

    #[test]
    fn server_urls() {
        let s = ServerUrl::parse("wss://cloud.example.com").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("cloud.example.com", 10000));
        let s = ServerUrl::parse("wss://[::1]:1234/").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 1234));
        assert_eq!(s.connect_url(), "wss://[::1]:1234/v1/connect");
        assert_eq!(s.https("/ca.crt"), "https://[::1]:1234/ca.crt");
        assert!(
            ServerUrl::parse("https://x:1")
                .unwrap_err()
                .contains("wss://")
        );
        assert!(ServerUrl::parse("wss://x:1/path").is_err());
        assert!(ServerUrl::parse("not a url").is_err());
    }
}
