//! A container's environment: `env` (literal values, `valueFrom` configMapKeyRef /
//! secretKeyRef / fieldRef) and `envFrom`, resolved once when the container is created —
//! like Kubernetes, a later ConfigMap change never changes a running container's env.
//!
//! [`Sources`] abstracts where ConfigMaps and Secrets come from (the MetaManager snapshot
//! in edgecore, a map in tests). A reference that cannot be resolved and is not optional is
//! a [`ConfigError`]: the container waits in `CreateContainerConfigError`.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use super::spec::{Container, Pod, TokenProjection};
use crate::meta::MetaSnapshot;
use crate::satoken::SaTokens;

/// The data of a ConfigMap or Secret: key -> bytes.
pub type Data = BTreeMap<String, Vec<u8>>;

/// Where ConfigMaps and Secrets are read from.
pub trait Sources {
    /// The ConfigMap `namespace/name` (data and binaryData).
    fn config_map(&self, namespace: &str, name: &str) -> Option<Data>;
    /// The Secret `namespace/name` (data decoded, stringData).
    fn secret(&self, namespace: &str, name: &str) -> Option<Data>;
    /// The ServiceAccount token for `projection` of `pod`, if one was issued.
    fn service_account_token(&self, pod: &Pod, projection: &TokenProjection) -> Option<String> {
        let _ = (pod, projection);
        None
    }
}

/// The node's sources: the cache, and the tokens issued for its pods.
#[derive(Debug, Clone, Copy)]
pub struct NodeSources<'a> {
    /// ConfigMaps and Secrets.
    pub meta: &'a MetaSnapshot,
    /// Projected ServiceAccount tokens.
    pub tokens: &'a SaTokens,
}

impl Sources for NodeSources<'_> {
    fn config_map(&self, namespace: &str, name: &str) -> Option<Data> {
        self.meta.config_map(namespace, name)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Data> {
        self.meta.secret(namespace, name)
    }

    fn service_account_token(&self, pod: &Pod, projection: &TokenProjection) -> Option<String> {
        self.tokens.get(pod, projection)
    }
}

fn decode_map(v: Option<&Value>, base64: bool) -> Data {
    let mut out = Data::new();
    if let Some(Value::Object(m)) = v {
        for (k, v) in m {
            let Some(s) = v.as_str() else { continue };
            let bytes = if base64 {
                match base64::engine::general_purpose::STANDARD.decode(s) {
                    Ok(b) => b,
                    Err(_) => continue,
                }
            } else {
                s.as_bytes().to_vec()
            };
            out.insert(k.clone(), bytes);
        }
    }
    out
}

impl Sources for MetaSnapshot {
    fn config_map(&self, namespace: &str, name: &str) -> Option<Data> {
        let o = self.get(&format!("{namespace}/configmap/{name}"))?;
        let v: Value = serde_json::from_slice(&o.json).ok()?;
        let mut data = decode_map(v.get("data"), false);
        data.extend(decode_map(v.get("binaryData"), true));
        Some(data)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Data> {
        let o = self.get(&format!("{namespace}/secret/{name}"))?;
        let v: Value = serde_json::from_slice(&o.json).ok()?;
        let mut data = decode_map(v.get("data"), true);
        data.extend(decode_map(v.get("stringData"), false));
        Some(data)
    }
}

/// Facts about the pod that `fieldRef` and the downward API read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodFacts {
    /// The pod IP (empty before the sandbox runs).
    pub pod_ip: String,
    /// The node's IP.
    pub host_ip: String,
}

/// A reference that cannot be resolved (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The value of `fieldRef.fieldPath` for `pod`.
pub fn field(pod: &Pod, facts: &PodFacts, path: &str) -> Result<String, ConfigError> {
    let m = &pod.metadata;
    if let Some(rest) = path.strip_prefix("metadata.labels['") {
        let key = rest.trim_end_matches("']");
        return Ok(m.labels.get(key).cloned().unwrap_or_default());
    }
    if let Some(rest) = path.strip_prefix("metadata.annotations['") {
        let key = rest.trim_end_matches("']");
        return Ok(m.annotations.get(key).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => pod.spec.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.service_account_name.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "metadata.labels" => kv_lines(&m.labels),
        "metadata.annotations" => kv_lines(&m.annotations),
        other => return Err(ConfigError(format!("unsupported fieldRef {other:?}"))),
    })
}

fn kv_lines(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The environment of `container`, in Kubernetes' order (`envFrom` first, then `env`, later
/// wins) with `$(VAR)` references to earlier variables expanded.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    sources: &dyn Sources,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = &pod.metadata.namespace;
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = env.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for from in &container.env_from {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, r, data) = if let Some(r) = &from.config_map_ref {
            ("ConfigMap", r, sources.config_map(ns, &r.name))
        } else if let Some(r) = &from.secret_ref {
            ("Secret", r, sources.secret(ns, &r.name))
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(
                        &mut env,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if r.optional == Some(true) => {}
            None => return Err(ConfigError(format!("{kind} {:?} not found", r.name))),
        }
    }
    for var in &container.env {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                let (kind, r, data) = if let Some(r) = &from.config_map_key_ref {
                    ("configmap", r, sources.config_map(ns, &r.name))
                } else if let Some(r) = &from.secret_key_ref {
                    ("secret", r, sources.secret(ns, &r.name))
                } else if let Some(f) = &from.field_ref {
                    set(
                        &mut env,
                        var.name.clone(),
                        field(pod, facts, &f.field_path)?,
                    );
                    continue;
                } else {
                    continue;
                };
                match data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None if data.is_none() => {
                        return Err(ConfigError(format!("{kind} {:?} not found", r.name)));
                    }
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in {kind} {ns}/{}",
                            r.key, r.name
                        )));
                    }
                }
            }
            (Some(v), None) => expand(v, &env),
            (None, None) => String::new(),
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// Expands `$(NAME)` from `env`; `$$` escapes; unknown references stay as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fake;
    impl Sources for Fake {
        fn config_map(&self, ns: &str, name: &str) -> Option<Data> {
            (ns == "d" && name == "cm").then(|| {
                Data::from([
                    ("greeting".into(), b"hello".to_vec()),
                    ("mode".into(), b"fast".to_vec()),
                ])
            })
        }
        fn secret(&self, ns: &str, name: &str) -> Option<Data> {
            (ns == "d" && name == "s").then(|| Data::from([("pw".into(), b"hunter2".to_vec())]))
        }
    }

    fn pod(env: Value, env_from: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "labels": {"app": "x"}},
            "spec": {"nodeName": "edge", "containers": [
                {"name": "c", "image": "i", "env": env, "envFrom": env_from}]}
        }))
        .unwrap()
    }

    fn run(p: &Pod) -> Result<Vec<(String, String)>, ConfigError> {
        let facts = PodFacts {
            pod_ip: "10.0.0.2".into(),
            host_ip: "192.0.2.1".into(),
        };
        resolve(p, &p.spec.containers[0], &Fake, &facts)
    }

    #[test]
    fn values_refs_fields_and_expansion() {
        let p = pod(
            json!([
                {"name": "A", "value": "1"},
                {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "greeting"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "B", "value": "$(A)-$(G)-$$(A)-$(NOPE)"}
            ]),
            json!([{"configMapRef": {"name": "cm"}, "prefix": "CM_"}]),
        );
        let env = run(&p).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CM_mode"), Some("fast"));
        assert_eq!(get("G"), Some("hello"));
        assert_eq!(get("PW"), Some("hunter2"));
        assert_eq!(get("NODE"), Some("edge"));
        assert_eq!(get("IP"), Some("10.0.0.2"));
        assert_eq!(get("APP"), Some("x"));
        assert_eq!(get("B"), Some("1-hello-$(A)-$(NOPE)"));
    }

    #[test]
    fn missing_refs_are_config_errors_unless_optional() {
        let missing = pod(
            json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]),
            json!([]),
        );
        assert_eq!(run(&missing).unwrap_err().0, "configmap \"nope\" not found");
        let key = pod(
            json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]),
            json!([]),
        );
        assert!(run(&key).unwrap_err().0.contains("couldn't find key k"));
        let optional = pod(
            json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}}]),
            json!([{"secretRef": {"name": "nope2", "optional": true}}]),
        );
        assert_eq!(run(&optional).unwrap(), vec![]);
        let from = pod(json!([]), json!([{"secretRef": {"name": "nope2"}}]));
        assert!(run(&from).is_err());
    }
}
