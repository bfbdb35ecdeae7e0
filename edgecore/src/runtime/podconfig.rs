//! Pod spec -> CRI `PodSandboxConfig` / `ContainerConfig` (pure).
//!
//! Labels tie runtime objects to pods: the kubelet's `io.kubernetes.*` names plus
//! [`MANAGED`], which the loop filters on so it never touches containers it did not make.
//! Logs follow the kubelet's layout: `<logs>/<ns>_<name>_<uid>/<container>/<attempt>.log`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::cri::api;
use super::spec::{Container, Pod, SecurityContext, bytes, cpu_millis};

/// Label on every sandbox and container kedge creates.
pub const MANAGED: (&str, &str) = ("kedge.io/managed", "true");
/// Pod name label.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Pod namespace label.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Pod UID label.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Container name label.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// CFS period used for CPU limits (µs).
const CPU_PERIOD: i64 = 100_000;

/// `<logs>/<ns>_<name>_<uid>`.
pub fn log_directory(logs: &Path, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    logs.join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    let mut labels: HashMap<String, String> = m
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(MANAGED.0.to_owned(), MANAGED.1.to_owned());
    labels.insert(POD_NAME.to_owned(), m.name.clone());
    labels.insert(POD_NAMESPACE.to_owned(), m.namespace.clone());
    labels.insert(POD_UID.to_owned(), m.uid.clone());
    labels
}

fn namespaces(pod: &Pod) -> api::NamespaceOption {
    api::NamespaceOption {
        network: if pod.spec.host_network {
            api::NamespaceMode::Node as i32
        } else {
            api::NamespaceMode::Pod as i32
        },
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The sandbox of `pod` (attempt `attempt`).
pub fn sandbox_config(pod: &Pod, attempt: u32, logs: &Path) -> api::PodSandboxConfig {
    let m = &pod.metadata;
    let psc = pod.spec.security_context.clone().unwrap_or_default();
    let privileged = pod
        .spec
        .init_containers
        .iter()
        .chain(&pod.spec.containers)
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true));
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: m.name.clone(),
            uid: m.uid.clone(),
            namespace: m.namespace.clone(),
            attempt,
        }),
        // A hostNetwork sandbox shares the node's UTS namespace: setting a hostname fails.
        hostname: if pod.spec.host_network {
            String::new()
        } else {
            pod.spec.hostname.clone().unwrap_or_else(|| m.name.clone())
        },
        log_directory: log_directory(logs, pod).to_string_lossy().into_owned(),
        labels: pod_labels(pod),
        annotations: m
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(pod)),
                run_as_user: psc.run_as_user.map(|value| api::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| api::Int64Value { value }),
                privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cap(name: &str) -> String {
    if name.starts_with("CAP_") || name == "ALL" {
        name.to_owned()
    } else {
        format!("CAP_{name}")
    }
}

/// CPU and memory limits (and CPU shares from the request).
pub fn resources(c: &Container) -> api::LinuxContainerResources {
    let mut r = api::LinuxContainerResources::default();
    if let Some(millis) = c.resources.limits.get("cpu").and_then(cpu_millis) {
        r.cpu_period = CPU_PERIOD;
        r.cpu_quota = (millis * CPU_PERIOD / 1000).max(1000);
    }
    let shares_from = c
        .resources
        .requests
        .get("cpu")
        .or_else(|| c.resources.limits.get("cpu"));
    r.cpu_shares = shares_from
        .and_then(cpu_millis)
        .map_or(2, |m| (m * 1024 / 1000).max(2));
    if let Some(b) = c.resources.limits.get("memory").and_then(bytes) {
        r.memory_limit_in_bytes = b;
    }
    r
}

/// A resolved volume mount.
#[derive(Debug, Clone, PartialEq)]
pub struct MountSpec {
    /// In the container.
    pub container_path: String,
    /// On the host.
    pub host_path: PathBuf,
    /// Read only.
    pub read_only: bool,
}

/// The container `c` of `pod`, attempt `attempt`, with its resolved env and mounts.
pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    image: &str,
    env: &[(String, String)],
    mounts: &[MountSpec],
) -> api::ContainerConfig {
    let sc = merged_security(pod, c);
    let mut labels = pod_labels(pod);
    labels.insert(CONTAINER_NAME.to_owned(), c.name.clone());
    let expand = |v: &String| super::env::expand(v, env);
    let caps = sc.capabilities.clone().unwrap_or_default();
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(api::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        command: c.command.iter().map(expand).collect(),
        args: c.args.iter().map(expand).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .iter()
            .map(|(key, value)| api::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: mounts
            .iter()
            .map(|m| api::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.to_string_lossy().into_owned(),
                readonly: m.read_only,
                ..Default::default()
            })
            .collect(),
        labels,
        log_path: format!("{}/{attempt}.log", c.name),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(resources(c)),
            security_context: Some(api::LinuxContainerSecurityContext {
                capabilities: Some(api::Capability {
                    add_capabilities: caps.add.iter().map(|s| cap(s)).collect(),
                    drop_capabilities: caps.drop.iter().map(|s| cap(s)).collect(),
                    ..Default::default()
                }),
                privileged: sc.privileged.unwrap_or(false),
                namespace_options: Some(namespaces(pod)),
                run_as_user: sc.run_as_user.map(|value| api::Int64Value { value }),
                run_as_group: sc.run_as_group.map(|value| api::Int64Value { value }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The container's security context over the pod's (container fields win).
fn merged_security(pod: &Pod, c: &Container) -> SecurityContext {
    let p = pod.spec.security_context.clone().unwrap_or_default();
    let s = c.security_context.clone().unwrap_or_default();
    SecurityContext {
        run_as_user: s.run_as_user.or(p.run_as_user),
        run_as_group: s.run_as_group.or(p.run_as_group),
        privileged: s.privileged,
        read_only_root_filesystem: s.read_only_root_filesystem,
        capabilities: s.capabilities,
    }
}

/// The mounts of `c` given volume name -> host path; an unknown volume is an error.
pub fn mounts(
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<MountSpec>, super::env::ConfigError> {
    c.volume_mounts
        .iter()
        .map(|vm| {
            let base = volumes.get(&vm.name).ok_or_else(|| {
                super::env::ConfigError(format!("volume {:?} is not defined in the pod", vm.name))
            })?;
            let host_path = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) if sub.starts_with('/') || sub.split('/').any(|p| p == "..") => {
                    return Err(super::env::ConfigError(format!("invalid subPath {sub:?}")));
                }
                Some(sub) => base.join(sub),
                None => base.clone(),
            };
            Ok(MountSpec {
                container_path: vm.mount_path.clone(),
                host_path,
                read_only: vm.read_only,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(host_network: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "labels": {"app": "x"}},
            "spec": {"hostNetwork": host_network,
                "securityContext": {"runAsUser": 1000},
                "containers": [{"name": "c", "image": "i",
                "command": ["sh", "-c", "echo $(A)"],
                "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}},
                "securityContext": {"runAsGroup": 7, "readOnlyRootFilesystem": true,
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}},
                "volumeMounts": [{"name": "v", "mountPath": "/etc/v", "readOnly": true, "subPath": "f"}]}]}
        }))
        .unwrap()
    }

    #[test]
    fn host_network_sandbox_sets_no_hostname() {
        let logs = Path::new("/logs");
        let s = sandbox_config(&pod(true), 2, logs);
        assert_eq!(s.hostname, "");
        assert_eq!(s.log_directory, "/logs/d_p_u");
        assert_eq!(s.metadata.as_ref().unwrap().attempt, 2);
        let ns = s
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, api::NamespaceMode::Node as i32);
        assert_eq!(s.labels[POD_UID], "u");
        assert_eq!(s.labels["app"], "x");
        let s = sandbox_config(&pod(false), 0, logs);
        assert_eq!(s.hostname, "p");
    }

    #[test]
    fn container_config_carries_limits_security_env_and_mounts() {
        let p = pod(false);
        let c = &p.spec.containers[0];
        let vols = BTreeMap::from([("v".to_owned(), PathBuf::from("/data/v"))]);
        let m = mounts(c, &vols).unwrap();
        assert_eq!(m[0].host_path, PathBuf::from("/data/v/f"));
        let env = vec![("A".to_owned(), "1".to_owned())];
        let cfg = container_config(&p, c, 3, "img", &env, &m);
        assert_eq!(cfg.command, vec!["sh", "-c", "echo 1"]);
        assert_eq!(cfg.log_path, "c/3.log");
        assert_eq!(cfg.labels[CONTAINER_NAME], "c");
        let linux = cfg.linux.unwrap();
        let r = linux.resources.unwrap();
        assert_eq!((r.cpu_quota, r.cpu_period), (25_000, 100_000));
        assert_eq!(r.memory_limit_in_bytes, 32 << 20);
        let sc = linux.security_context.unwrap();
        assert_eq!(sc.run_as_user.unwrap().value, 1000);
        assert_eq!(sc.run_as_group.unwrap().value, 7);
        assert!(sc.readonly_rootfs);
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.add_capabilities, vec!["CAP_NET_ADMIN"]);
        assert_eq!(caps.drop_capabilities, vec!["ALL"]);
        assert!(mounts(c, &BTreeMap::new()).is_err());
    }
}
