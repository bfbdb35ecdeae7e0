//! What an object references, as pure functions: the ConfigMaps and Secrets a Pod needs
//! (volumes, projected sources, env, envFrom, imagePullSecrets — of every container kind)
//! and the node and DeviceModel of a Device.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, Pod, PodSpec};
use proto::ResourceKey;
use serde_json::Value;

/// Kind segment of ConfigMap keys.
pub const CONFIGMAP: &str = "configmap";
/// Kind segment of Secret keys.
pub const SECRET: &str = "secret";
/// Kind segment of DeviceModel keys.
pub const DEVICEMODEL: &str = "devicemodel";

/// The ConfigMaps and Secrets (keys in the pod's namespace) a pod references. Names that
/// cannot form a key are skipped; optional references count (an absent optional object is
/// still worth a tombstone).
pub fn pod_refs(pod: &Pod) -> BTreeSet<ResourceKey> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut names: Vec<(&'static str, &str)> = Vec::new();
    if let Some(spec) = &pod.spec {
        spec_refs(spec, &mut names);
    }
    names
        .into_iter()
        .filter(|(_, name)| !name.is_empty())
        .filter_map(|(kind, name)| ResourceKey::namespaced(ns, kind, name).ok())
        .collect()
}

fn spec_refs<'a>(spec: &'a PodSpec, out: &mut Vec<(&'static str, &'a str)>) {
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            out.push((CONFIGMAP, cm.name.as_str()));
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            out.push((SECRET, name));
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                out.push((CONFIGMAP, cm.name.as_str()));
            }
            if let Some(s) = &src.secret {
                out.push((SECRET, s.name.as_str()));
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        out.push((SECRET, s.name.as_str()));
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        container_refs(c.env.as_deref(), c.env_from.as_deref(), out);
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        container_refs(c.env.as_deref(), c.env_from.as_deref(), out);
    }
}

fn container_refs<'a>(
    env: Option<&'a [EnvVar]>,
    env_from: Option<&'a [EnvFromSource]>,
    out: &mut Vec<(&'static str, &'a str)>,
) {
    for e in env.into_iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            out.push((CONFIGMAP, r.name.as_str()));
        }
        if let Some(r) = &from.secret_key_ref {
            out.push((SECRET, r.name.as_str()));
        }
    }
    for e in env_from.into_iter().flatten() {
        if let Some(r) = &e.config_map_ref {
            out.push((CONFIGMAP, r.name.as_str()));
        }
        if let Some(r) = &e.secret_ref {
            out.push((SECRET, r.name.as_str()));
        }
    }
}

/// `spec.nodeName` of a pod (empty = unbound).
pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// A Device's node (`spec.nodeName`) and DeviceModel key (`spec.deviceModelRef.name`, in
/// the device's namespace), from its JSON.
pub fn device_refs(namespace: &str, device: &Value) -> (Option<String>, Option<ResourceKey>) {
    let spec = device.get("spec");
    let node = spec
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let model = spec
        .and_then(|s| s.pointer("/deviceModelRef/name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .and_then(|n| ResourceKey::namespaced(namespace, DEVICEMODEL, n).ok());
    (node, model)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(set: &BTreeSet<ResourceKey>) -> Vec<String> {
        set.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_reference_kind_is_found() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "apps"},
            "spec": {
                "nodeName": "edge-1",
                "imagePullSecrets": [{"name": "regcred"}],
                "volumes": [
                    {"name": "a", "configMap": {"name": "cm-vol"}},
                    {"name": "b", "secret": {"secretName": "sec-vol"}},
                    {"name": "c", "projected": {"sources": [
                        {"configMap": {"name": "cm-proj"}},
                        {"secret": {"name": "sec-proj"}},
                        {"serviceAccountToken": {"path": "token"}}
                    ]}},
                    {"name": "d", "emptyDir": {}}
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "sec-init"}}]}],
                "containers": [{
                    "name": "c",
                    "env": [
                        {"name": "A", "value": "x"},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                        {"name": "C", "valueFrom": {"secretKeyRef": {"name": "sec-env", "key": "k", "optional": true}}},
                        {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                    ],
                    "envFrom": [{"configMapRef": {"name": "cm-from"}}]
                }],
                "ephemeralContainers": [{"name": "e", "envFrom": [{"configMapRef": {"name": "cm-eph"}}]}]
            }
        }))
        .unwrap();
        assert_eq!(
            keys(&pod_refs(&pod)),
            vec![
                "apps/configmap/cm-env",
                "apps/configmap/cm-eph",
                "apps/configmap/cm-from",
                "apps/configmap/cm-proj",
                "apps/configmap/cm-vol",
                "apps/secret/regcred",
                "apps/secret/sec-env",
                "apps/secret/sec-init",
                "apps/secret/sec-proj",
                "apps/secret/sec-vol",
            ]
        );
        assert_eq!(pod_node(&pod), Some("edge-1"));
    }

    #[test]
    fn a_pod_without_references_has_none() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        assert!(pod_refs(&pod).is_empty());
        assert_eq!(pod_node(&pod), None);
    }

    #[test]
    fn device_node_and_model() {
        let d = json!({"spec": {"nodeName": "edge-1", "deviceModelRef": {"name": "thermo"}}});
        let (node, model) = device_refs("default", &d);
        assert_eq!(node.as_deref(), Some("edge-1"));
        assert_eq!(
            model.map(|m| m.to_string()).as_deref(),
            Some("default/devicemodel/thermo")
        );
        assert_eq!(device_refs("default", &json!({"spec": {}})), (None, None));
    }
}
