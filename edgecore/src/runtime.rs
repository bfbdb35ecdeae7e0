//! The pod runtime: runs the pods bound to this node through a CRI v1 runtime
//! (containerd), from the MetaManager cache alone — the cloud is never needed to start,
//! restart or stop a pod, so an edge that boots offline brings its pods up from sled.
//!
//! Where to start reading:
//! - [`decide`]: the pure sync step (desired pods + runtime state + memory + clock ->
//!   actions), with a unit test per transition;
//! - [`exec`]: the IO loop that lists the runtime, applies the actions, refreshes volumes
//!   and writes PodStatus, Events and deletion confirmations into the outbox;
//! - [`cri`]: the tonic client over the unix socket; [`podconfig`]: pod spec -> CRI
//!   configs; [`env`], [`volumes`], [`status`], [`probe`]: the pieces of a pod.
//!
//! Runtime health is the node condition [`RUNTIME_CONDITION`] (`True` = the runtime is
//! unreachable); it never touches `Ready`, so an edge without containerd is not tainted
//! and its devices keep working.

pub mod cri;
pub mod decide;
pub mod env;
pub mod exec;
pub mod images;
pub mod podconfig;
pub mod probe;
pub mod spec;
pub mod start;
pub mod status;
pub mod volumes;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::meta::MetaSnapshot;
use spec::Pod;

/// Node condition type of runtime health (`True` when the runtime is unreachable).
pub const RUNTIME_CONDITION: &str = "ContainerRuntimeUnhealthy";

/// The `[runtime]` section of the edgecore config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Run pods at all (off: the edge only caches them).
    pub enabled: bool,
    /// First crash / pull back-off, seconds (the kubelet's 10).
    pub backoff_base_secs: u64,
    /// Longest back-off, seconds (the kubelet's 300).
    pub backoff_max_secs: u64,
    /// Deadline of one image pull, seconds.
    pub pull_timeout_secs: u64,
    /// Seconds between two passes when nothing changed (probes have their own timers).
    pub resync_secs: u64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            enabled: true,
            backoff_base_secs: 10,
            backoff_max_secs: 300,
            pull_timeout_secs: 300,
            resync_secs: 1,
        }
    }
}

impl RuntimeSettings {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, v) in [
            ("runtime.backoff_base_secs", self.backoff_base_secs),
            ("runtime.backoff_max_secs", self.backoff_max_secs),
            ("runtime.pull_timeout_secs", self.pull_timeout_secs),
            ("runtime.resync_secs", self.resync_secs),
        ] {
            if v == 0 {
                return Err((field, "must be greater than 0".to_owned()));
            }
        }
        if self.backoff_max_secs < self.backoff_base_secs {
            return Err((
                "runtime.backoff_max_secs",
                "must not be less than runtime.backoff_base_secs".to_owned(),
            ));
        }
        Ok(())
    }

    /// The back-off as [`decide`] uses it.
    pub fn backoff(&self) -> decide::Backoff {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        decide::Backoff {
            base_ms: ms(self.backoff_base_secs),
            max_ms: ms(self.backoff_max_secs),
        }
    }
}

/// Where the runtime keeps its files and whom it runs for.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// This node.
    pub node: String,
    /// The node's IP (status.hostIP, probe target of hostNetwork pods).
    pub host_ip: String,
    /// CRI endpoint.
    pub endpoint: String,
    /// `<runtime root>/pods`: pod volumes ([`runtime_root`]).
    pub pods_dir: PathBuf,
    /// `<runtime root>/logs/pods`: container logs (the kubelet's `/var/log/pods` layout).
    pub logs_dir: PathBuf,
    /// Settings.
    pub settings: RuntimeSettings,
}

impl RuntimeConfig {
    /// The pull deadline.
    pub fn pull_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.pull_timeout_secs)
    }
}

/// Where pod volumes and logs live: next to the store (`/var/lib/kedge` ->
/// `/var/lib/kedge-runtime`), never inside it, so a store that is moved aside on recovery
/// does not take the volumes of running containers with it.
pub fn runtime_root(data_dir: &std::path::Path) -> PathBuf {
    match data_dir.file_name() {
        Some(name) => data_dir.with_file_name(format!("{}-runtime", name.to_string_lossy())),
        None => data_dir.join("kedge-runtime"),
    }
}

/// The pods of `node` in `snapshot` (pods that do not parse are skipped and logged).
pub fn desired_pods(snapshot: &MetaSnapshot, node: &str) -> Vec<Pod> {
    let mut out = Vec::new();
    for (key, object) in snapshot.prefix("") {
        let mut parts = key.splitn(3, '/');
        let (Some(_), Some("pod"), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        match serde_json::from_slice::<Pod>(&object.json) {
            Ok(pod) if pod.spec.node_name == node && !pod.metadata.uid.is_empty() => {
                out.push(pod);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "skipping a cached pod that does not parse")
            }
        }
    }
    out
}

/// The cached `status` of a pod (the status last known to the API).
pub fn cached_status(
    snapshot: &MetaSnapshot,
    namespace: &str,
    name: &str,
) -> Option<serde_json::Value> {
    let o = snapshot.get(&format!("{namespace}/pod/{name}"))?;
    let v: serde_json::Value = serde_json::from_slice(&o.json).ok()?;
    v.get("status").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn settings_are_validated_and_parsed_from_the_config() {
        assert!(RuntimeSettings::default().validate().is_ok());
        let zero = RuntimeSettings {
            backoff_base_secs: 0,
            ..RuntimeSettings::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "runtime.backoff_base_secs");
        let inverted = RuntimeSettings {
            backoff_max_secs: 5,
            ..RuntimeSettings::default()
        };
        assert_eq!(
            inverted.validate().unwrap_err().0,
            "runtime.backoff_max_secs"
        );
        let cfg = crate::config::Config::parse(
            "node_name = \"a\"\nserver = \"wss://x:1\"\n[runtime]\nbackoff_base_secs = 2\n",
        )
        .unwrap();
        assert_eq!(cfg.runtime.backoff().base_ms, 2_000);
        assert!(crate::config::Config::parse("[runtime]\nnope = 1\n").is_err());
    }

    #[test]
    fn runtime_root_is_next_to_the_store() {
        assert_eq!(
            runtime_root(Path::new("/var/lib/kedge")),
            Path::new("/var/lib/kedge-runtime")
        );
        assert_eq!(runtime_root(Path::new("/")), Path::new("/kedge-runtime"));
    }
}
