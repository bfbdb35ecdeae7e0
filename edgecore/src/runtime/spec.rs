//! The part of the Pod API the runtime reads, as small serde types over the cached JSON
//! (edgecore does not link k8s-openapi: a gateway binary stays small). Unknown fields are
//! ignored; a pod whose JSON does not fit is skipped with a warning and a metric.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A Pod as cached.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    /// Metadata.
    pub metadata: Meta,
    /// Spec.
    pub spec: PodSpec,
}

/// Object metadata.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Meta {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
    /// Set once the pod is being deleted.
    pub deletion_timestamp: Option<String>,
    /// The grace period of the deletion.
    pub deletion_grace_period_seconds: Option<i64>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Pod spec.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// The node the pod is bound to.
    pub node_name: String,
    /// Share the node's network namespace.
    pub host_network: bool,
    /// `Always` (default), `OnFailure`, `Never`.
    pub restart_policy: Option<String>,
    /// Seconds between SIGTERM and SIGKILL.
    pub termination_grace_period_seconds: Option<i64>,
    /// Run to completion, in order, before the containers.
    pub init_containers: Vec<Container>,
    /// The containers.
    pub containers: Vec<Container>,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// ServiceAccount.
    pub service_account_name: Option<String>,
    /// Hostname (default: the pod name).
    pub hostname: Option<String>,
    /// Pod-level security context.
    pub security_context: Option<SecurityContext>,
}

impl PodSpec {
    /// The restart policy, `Always` when unset.
    pub fn restart_policy(&self) -> RestartPolicy {
        match self.restart_policy.as_deref() {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// The grace period (30 s when unset).
    pub fn grace_seconds(&self) -> i64 {
        self.termination_grace_period_seconds.unwrap_or(30).max(0)
    }
}

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever the exit code.
    Always,
    /// Restart on a non-zero exit code.
    OnFailure,
    /// Never restart.
    Never,
}

/// A container.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `Always`, `IfNotPresent`, `Never`.
    pub image_pull_policy: Option<String>,
    /// Entrypoint override.
    pub command: Vec<String>,
    /// Arguments.
    pub args: Vec<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Environment.
    pub env: Vec<EnvVar>,
    /// Environment from whole ConfigMaps / Secrets.
    pub env_from: Vec<EnvFrom>,
    /// Resources.
    pub resources: Resources,
    /// Volume mounts.
    pub volume_mounts: Vec<VolumeMount>,
    /// Liveness probe.
    pub liveness_probe: Option<Probe>,
    /// Readiness probe.
    pub readiness_probe: Option<Probe>,
    /// Startup probe.
    pub startup_probe: Option<Probe>,
    /// Security context.
    pub security_context: Option<SecurityContext>,
}

/// One environment variable.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Literal value.
    pub value: Option<String>,
    /// Value from elsewhere.
    pub value_from: Option<EnvSource>,
}

/// `valueFrom`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvSource {
    /// A ConfigMap key.
    pub config_map_key_ref: Option<KeyRef>,
    /// A Secret key.
    pub secret_key_ref: Option<KeyRef>,
    /// A field of the pod.
    pub field_ref: Option<FieldRef>,
}

/// A key of a ConfigMap or Secret.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyRef {
    /// Object name.
    pub name: String,
    /// Key.
    pub key: String,
    /// Missing is not an error.
    pub optional: Option<bool>,
}

/// `fieldRef`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FieldRef {
    /// `metadata.name`, `spec.nodeName`, `status.podIP`...
    pub field_path: String,
}

/// `envFrom`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvFrom {
    /// Prefix of every name.
    pub prefix: Option<String>,
    /// A whole ConfigMap.
    pub config_map_ref: Option<NameRef>,
    /// A whole Secret.
    pub secret_ref: Option<NameRef>,
}

/// A named object, maybe optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct NameRef {
    /// Name.
    pub name: String,
    /// Missing is not an error.
    pub optional: Option<bool>,
}

/// Resources.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Resources {
    /// Limits (`cpu`, `memory`).
    pub limits: BTreeMap<String, Value>,
    /// Requests (`cpu` sets the CPU shares).
    pub requests: BTreeMap<String, Value>,
}

/// A volume mount.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    /// Volume name.
    pub name: String,
    /// Path in the container.
    pub mount_path: String,
    /// Read only.
    pub read_only: bool,
    /// A path inside the volume.
    pub sub_path: Option<String>,
}

/// Container / pod security context (the fields the runtime applies).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SecurityContext {
    /// UID.
    pub run_as_user: Option<i64>,
    /// GID.
    pub run_as_group: Option<i64>,
    /// Privileged.
    pub privileged: Option<bool>,
    /// Read-only root filesystem.
    pub read_only_root_filesystem: Option<bool>,
    /// Capabilities.
    pub capabilities: Option<Capabilities>,
}

/// Capabilities to add / drop.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Capabilities {
    /// Added.
    pub add: Vec<String>,
    /// Dropped.
    pub drop: Vec<String>,
}

/// A probe.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Probe {
    /// Run a command in the container.
    pub exec: Option<ExecAction>,
    /// HTTP GET.
    pub http_get: Option<HttpGet>,
    /// TCP connect.
    pub tcp_socket: Option<TcpSocket>,
    /// Delay before the first probe.
    pub initial_delay_seconds: Option<i64>,
    /// Period (10 s).
    pub period_seconds: Option<i64>,
    /// Timeout (1 s).
    pub timeout_seconds: Option<i64>,
    /// Consecutive failures to fail (3).
    pub failure_threshold: Option<i64>,
    /// Consecutive successes to succeed (1).
    pub success_threshold: Option<i64>,
}

/// `exec`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecAction {
    /// The command.
    pub command: Vec<String>,
}

/// `httpGet`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpGet {
    /// Path.
    pub path: Option<String>,
    /// Port (a number; named ports are not resolved).
    pub port: Value,
    /// Host (default: the pod IP).
    pub host: Option<String>,
}

/// `tcpSocket`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSocket {
    /// Port.
    pub port: Value,
    /// Host (default: the pod IP).
    pub host: Option<String>,
}

/// A volume.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    /// Name.
    pub name: String,
    /// A ConfigMap's keys as files.
    pub config_map: Option<ObjectVolume>,
    /// A Secret's keys as files.
    pub secret: Option<ObjectVolume>,
    /// Several sources in one directory.
    pub projected: Option<Projected>,
    /// Pod fields as files.
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApi>,
    /// A scratch directory.
    pub empty_dir: Option<Value>,
    /// A host directory or file.
    pub host_path: Option<HostPath>,
}

/// configMap / secret volume (and projection) source.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectVolume {
    /// ConfigMap name.
    pub name: Option<String>,
    /// Secret name.
    pub secret_name: Option<String>,
    /// Selected keys (all when empty).
    pub items: Vec<KeyToPath>,
    /// Missing is not an error.
    pub optional: Option<bool>,
    /// File mode.
    pub default_mode: Option<u32>,
}

impl ObjectVolume {
    /// The referenced object's name.
    pub fn object_name(&self) -> &str {
        self.secret_name
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or_default()
    }
}

/// A key mapped to a path.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyToPath {
    /// Key.
    pub key: String,
    /// Relative path.
    pub path: String,
    /// File mode.
    pub mode: Option<u32>,
}

/// `projected`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Projected {
    /// Sources.
    pub sources: Vec<ProjectionSource>,
    /// File mode.
    pub default_mode: Option<u32>,
}

/// One projected source.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectionSource {
    /// A ConfigMap.
    pub config_map: Option<ObjectVolume>,
    /// A Secret.
    pub secret: Option<ObjectVolume>,
    /// Pod fields.
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApi>,
    /// A ServiceAccount token.
    pub service_account_token: Option<TokenProjection>,
}

/// `downwardAPI`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardApi {
    /// Files.
    pub items: Vec<DownwardItem>,
}

/// One downward API file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardItem {
    /// Relative path.
    pub path: String,
    /// The field.
    pub field_ref: Option<FieldRef>,
}

/// `serviceAccountToken`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenProjection {
    /// Relative path.
    pub path: String,
    /// Intended audience ("" = the API server's).
    pub audience: String,
    /// Requested lifetime (default 3600, at least 600).
    pub expiration_seconds: Option<i64>,
}

/// `hostPath`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HostPath {
    /// Host path.
    pub path: String,
    /// `DirectoryOrCreate`, `Directory`, `FileOrCreate`, `File`, `` ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A CPU quantity in millicores (`"500m"`, `"1"`, `0.5`).
pub fn cpu_millis(q: &Value) -> Option<i64> {
    let s = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if let Some(m) = s.strip_suffix('m') {
        return m.parse().ok();
    }
    let f: f64 = s.parse().ok()?;
    Some((f * 1000.0).round() as i64)
}

/// A memory quantity in bytes (`"64Mi"`, `"1G"`, `"1e6"`, `1048576`).
pub fn bytes(q: &Value) -> Option<i64> {
    let s = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    const UNITS: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = s.strip_suffix(suffix) {
            let f: f64 = n.parse().ok()?;
            return Some((f * mult) as i64);
        }
    }
    let f: f64 = s.parse().ok()?;
    Some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis(&json!("500m")), Some(500));
        assert_eq!(cpu_millis(&json!("2")), Some(2000));
        assert_eq!(cpu_millis(&json!(0.25)), Some(250));
        assert_eq!(bytes(&json!("64Mi")), Some(64 << 20));
        assert_eq!(bytes(&json!("1G")), Some(1_000_000_000));
        assert_eq!(bytes(&json!(1024)), Some(1024));
        assert_eq!(bytes(&json!("x")), None);
    }

    #[test]
    fn pod_defaults_and_names() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}],
                     "volumes": [{"name": "s", "secret": {"secretName": "x"}},
                                 {"name": "d", "downwardAPI": {"items": []}}]}
        }))
        .unwrap();
        assert_eq!(pod.spec.restart_policy(), RestartPolicy::Always);
        assert_eq!(pod.spec.grace_seconds(), 30);
        assert_eq!(
            pod.spec.volumes[0]
                .secret
                .as_ref()
                .map(ObjectVolume::object_name),
            Some("x")
        );
        assert!(pod.spec.volumes[1].downward_api.is_some());
    }
}
