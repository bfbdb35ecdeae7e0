//! The settings of the toleration admission plugins and their application to a pod:
//! Kubernetes' `DefaultTolerationSeconds` ([`super::tolerations`]) first, then kedge's
//! edge autonomy ([`super::autonomy`]), in kube-apiserver's order (built-in plugins before
//! webhooks).

use serde_json::{Map, Value};

use super::{autonomy, tolerations};
use crate::api::Api;

/// Which admission plugins run, with their settings (part of [`crate::ApiConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// `--default-not-ready-toleration-seconds` of `DefaultTolerationSeconds`; `None` turns
    /// the plugin off for this taint.
    pub default_not_ready_toleration_seconds: Option<i64>,
    /// `--default-unreachable-toleration-seconds`; `None` turns it off for this taint.
    pub default_unreachable_toleration_seconds: Option<i64>,
    /// Edge autonomy: the label that marks edge nodes, or `None` for off.
    pub edge_autonomy: Option<String>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            default_not_ready_toleration_seconds: Some(tolerations::DEFAULT_TOLERATION_SECONDS),
            default_unreachable_toleration_seconds: Some(tolerations::DEFAULT_TOLERATION_SECONDS),
            edge_autonomy: None,
        }
    }
}

/// The toleration plugins on a pod being created or updated (not its subresources).
/// `node_labels`: the labels of the pod's `spec.nodeName`, when known.
pub(super) fn admit_pod_tolerations(
    api: &Api,
    pod: &mut Value,
    node_labels: Option<&Map<String, Value>>,
) {
    let cfg = &api.cfg.admission;
    tolerations::default_toleration_seconds(
        pod,
        cfg.default_not_ready_toleration_seconds,
        cfg.default_unreachable_toleration_seconds,
    );
    let Some(label) = cfg.edge_autonomy.as_deref() else {
        return;
    };
    let decision = autonomy::decide(pod, label, node_labels);
    if let autonomy::Decision::Mutate { reason, .. } = &decision {
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        tracing::debug!(
            pod = name,
            %reason,
            "edge autonomy: tolerating not-ready/unreachable without a time limit"
        );
    }
    autonomy::apply(pod, &decision);
}

/// The labels of the pod's node, read from the store. Only outside the store's lock (on
/// create): the store's mutex is not reentrant.
pub(super) fn pod_node_labels(api: &Api, pod: &Value) -> Option<Map<String, Value>> {
    let node = api
        .store
        .get(&format!("core/nodes//{}", autonomy::node_name(pod)?))?;
    Some(
        node.fields()
            .labels()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}
