//! Edge autonomy admission: pods bound for edge nodes tolerate the node-lifecycle taints
//! (`node.kubernetes.io/not-ready` and `unreachable`, NoExecute) without a time limit, so a
//! gateway that loses the cloud keeps its pods instead of having them evicted after
//! Kubernetes' default 300 s.
//!
//! One pure decision, [`decide`], used twice: by the embedded API's admission chain
//! (`cloudcore standalone`, after [`super::tolerations`] as kube-apiserver orders its
//! plugins) and by cloudcore's mutating admission webhook in a real cluster (which runs after
//! kube-apiserver's `DefaultTolerationSeconds`). The caller looks up the labels of the
//! pod's `spec.nodeName` (the only IO) and passes them in.
//!
//! A pod is bound for the edge when (first match wins, see [`EdgeReason`]):
//! - its `spec.nodeName` is a node carrying the edge label (any value); or
//! - its `spec.nodeSelector` has the edge label's key (only edge nodes carry it); or
//! - its required node affinity demands the label (`Exists`, or `In` some values) in
//!   *every* `nodeSelectorTerm` — terms are ORed, so one term without it could land the pod
//!   on a cloud node.
//!
//! Tolerating an edge taint is not enough: a toleration allows a node, it never requires
//! one, and a pod that may run in the cloud must keep the cloud's eviction. Pods labelled
//! `kedge.io/autonomy: "off"` are left alone (the chart's objectSelector skips them too).
//!
//! The mutation: exact-key tolerations of the two taints lose their `tolerationSeconds`
//! (in place, so everything else about them stays), and where the first toleration that
//! matches a taint is still timed (a wildcard `operator: Exists` with seconds), an untimed
//! one is put first — Kubernetes' taint manager uses the first matching toleration.
//! Other tolerations are kept as they are.

use std::fmt;

use serde_json::{Map, Value, json};

use super::tolerations::{LIFECYCLE_TAINTS, tolerates_taint, toleration};

/// The label cloudcore puts on every edge node.
pub const DEFAULT_EDGE_LABEL: &str = "node-role.kubernetes.io/edge";
/// A pod label that turns the mutation off for that pod (`"off"` or `"false"`).
pub const OPT_OUT_LABEL: &str = "kedge.io/autonomy";

/// Why a pod counts as bound for the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeReason {
    /// `spec.nodeName` is this edge node.
    NodeName(String),
    /// `spec.nodeSelector` selects the edge label.
    NodeSelector,
    /// Every required node-affinity term demands the edge label.
    NodeAffinity,
}

impl fmt::Display for EdgeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeName(n) => write!(f, "bound to edge node {n}"),
            Self::NodeSelector => f.write_str("nodeSelector selects edge nodes"),
            Self::NodeAffinity => f.write_str("required node affinity selects edge nodes"),
        }
    }
}

/// What the admission does with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not bound for the edge: Kubernetes' defaults stand.
    NotEdge,
    /// Labelled [`OPT_OUT_LABEL`]`: off`.
    OptedOut,
    /// Bound for the edge and already tolerating both taints without a time limit.
    Tolerated(EdgeReason),
    /// Bound for the edge: `spec.tolerations` becomes `tolerations`.
    Mutate {
        reason: EdgeReason,
        tolerations: Vec<Value>,
    },
}

/// `spec.nodeName` when set.
pub fn node_name(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

fn opted_out(pod: &Value) -> bool {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(OPT_OUT_LABEL))
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("false"))
}

fn term_requires(term: &Value, label: &str) -> bool {
    term.get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|e| {
            e.get("key").and_then(Value::as_str) == Some(label)
                && match e.get("operator").and_then(Value::as_str) {
                    Some("Exists") => true,
                    Some("In") => e
                        .get("values")
                        .and_then(Value::as_array)
                        .is_some_and(|v| !v.is_empty()),
                    _ => false,
                }
        })
}

/// Why `pod` is bound for the edge, if it is. `node_labels`: the labels of the node named
/// by `spec.nodeName`, when that node exists.
pub fn edge_reason(
    pod: &Value,
    edge_label: &str,
    node_labels: Option<&Map<String, Value>>,
) -> Option<EdgeReason> {
    if let (Some(node), Some(labels)) = (node_name(pod), node_labels)
        && labels.contains_key(edge_label)
    {
        return Some(EdgeReason::NodeName(node.to_string()));
    }
    if pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .is_some_and(|s| s.contains_key(edge_label))
    {
        return Some(EdgeReason::NodeSelector);
    }
    let terms = pod
        .pointer(
            "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
        )
        .and_then(Value::as_array);
    if let Some(terms) = terms
        && !terms.is_empty()
        && terms.iter().all(|t| term_requires(t, edge_label))
    {
        return Some(EdgeReason::NodeAffinity);
    }
    None
}

fn timed(t: &Value) -> bool {
    t.get("tolerationSeconds").is_some_and(|s| !s.is_null())
}

/// The tolerations that make both lifecycle taints tolerated forever, or `None` when
/// `current` already does.
pub fn untimed_tolerations(current: &[Value]) -> Option<Vec<Value>> {
    let mut out = current.to_vec();
    let mut changed = false;
    for t in &mut out {
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        if LIFECYCLE_TAINTS.contains(&key)
            && (effect.is_empty() || effect == "NoExecute")
            && timed(t)
            && let Some(m) = t.as_object_mut()
        {
            m.remove("tolerationSeconds");
            changed = true;
        }
    }
    let first: Vec<Value> = LIFECYCLE_TAINTS
        .iter()
        .filter(|key| {
            out.iter()
                .find(|t| tolerates_taint(t, key))
                .is_none_or(timed)
        })
        .map(|key| toleration(key, None))
        .collect();
    if !first.is_empty() {
        changed = true;
        out.splice(0..0, first);
    }
    changed.then_some(out)
}

/// The decision for `pod` (see the module doc).
pub fn decide(pod: &Value, edge_label: &str, node_labels: Option<&Map<String, Value>>) -> Decision {
    let Some(reason) = edge_reason(pod, edge_label, node_labels) else {
        return Decision::NotEdge;
    };
    if opted_out(pod) {
        return Decision::OptedOut;
    }
    let current = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    match untimed_tolerations(current) {
        Some(tolerations) => Decision::Mutate {
            reason,
            tolerations,
        },
        None => Decision::Tolerated(reason),
    }
}

/// Apply a [`Decision::Mutate`] to the pod JSON (no-op for the other decisions).
pub fn apply(pod: &mut Value, decision: &Decision) {
    if let Decision::Mutate { tolerations, .. } = decision
        && let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("tolerations".into(), Value::Array(tolerations.clone()));
    }
}

/// The RFC 6902 JSON Patch of a [`Decision::Mutate`] against `pod` (what a webhook
/// answers), or `None` for the other decisions.
pub fn json_patch(pod: &Value, decision: &Decision) -> Option<Value> {
    let Decision::Mutate { tolerations, .. } = decision else {
        return None;
    };
    let op = if pod.pointer("/spec/tolerations").is_some() {
        "replace"
    } else {
        "add"
    };
    Some(json!([{"op": op, "path": "/spec/tolerations", "value": tolerations}]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tolerations::{TAINT_NOT_READY, TAINT_UNREACHABLE};
    use super::*;

    const EDGE: &str = DEFAULT_EDGE_LABEL;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn timed(key: &str, s: i64) -> Value {
        toleration(key, Some(s))
    }

    fn untimed(key: &str) -> Value {
        toleration(key, None)
    }

    /// A pod on node `n` as kube-apiserver hands it to the webhook: with the 300 s defaults.
    fn pod_on(n: &str) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": n, "containers": [],
            "tolerations": [timed(TAINT_NOT_READY, 300), timed(TAINT_UNREACHABLE, 300)]}})
    }

    #[test]
    fn a_pod_on_an_edge_node_gets_untimed_tolerations_in_place() {
        let edge = labels(json!({EDGE: "", "kubernetes.io/hostname": "gw"}));
        let d = decide(&pod_on("gw"), EDGE, Some(&edge));
        assert_eq!(
            d,
            Decision::Mutate {
                reason: EdgeReason::NodeName("gw".into()),
                tolerations: vec![untimed(TAINT_NOT_READY), untimed(TAINT_UNREACHABLE)],
            }
        );
        let mut p = pod_on("gw");
        apply(&mut p, &d);
        assert_eq!(
            decide(&p, EDGE, Some(&edge)),
            Decision::Tolerated(EdgeReason::NodeName("gw".into()))
        );
    }

    #[test]
    fn cloud_nodes_unknown_nodes_and_unbound_pods_are_not_edge() {
        let cloud = labels(json!({"kubernetes.io/hostname": "c1"}));
        assert_eq!(decide(&pod_on("c1"), EDGE, Some(&cloud)), Decision::NotEdge);
        assert_eq!(decide(&pod_on("ghost"), EDGE, None), Decision::NotEdge);
        let unbound = json!({"spec": {"containers": []}});
        assert_eq!(decide(&unbound, EDGE, None), Decision::NotEdge);
        // A toleration of an edge taint allows the edge, it does not require it.
        let tolerating = json!({"spec": {"containers": [],
            "tolerations": [{"key": EDGE, "operator": "Exists"}]}});
        assert_eq!(decide(&tolerating, EDGE, None), Decision::NotEdge);
    }

    #[test]
    fn the_edge_label_is_configurable() {
        let gw = labels(json!({"example.com/gateway": "true"}));
        assert_eq!(decide(&pod_on("gw"), EDGE, Some(&gw)), Decision::NotEdge);
        assert!(matches!(
            decide(&pod_on("gw"), "example.com/gateway", Some(&gw)),
            Decision::Mutate { .. }
        ));
    }

    #[test]
    fn node_selector_with_the_edge_label_counts() {
        let p = json!({"spec": {"containers": [], "nodeSelector": {EDGE: ""}}});
        let d = decide(&p, EDGE, None);
        assert_eq!(
            d,
            Decision::Mutate {
                reason: EdgeReason::NodeSelector,
                tolerations: vec![untimed(TAINT_NOT_READY), untimed(TAINT_UNREACHABLE)],
            }
        );
        let other = json!({"spec": {"containers": [], "nodeSelector": {"disk": "ssd"}}});
        assert_eq!(decide(&other, EDGE, None), Decision::NotEdge);
    }

    #[test]
    fn required_affinity_counts_only_when_every_term_demands_the_label() {
        let affinity = |terms: Value| {
            json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}})
        };
        let exists = json!({"matchExpressions": [{"key": EDGE, "operator": "Exists"}]});
        let in_ = json!({"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]},
            {"key": EDGE, "operator": "In", "values": [""]}]});
        let cloud =
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]});
        let not_in = json!({"matchExpressions": [{"key": EDGE, "operator": "DoesNotExist"}]});
        let empty_in = json!({"matchExpressions": [{"key": EDGE, "operator": "In", "values": []}]});
        assert_eq!(
            edge_reason(&affinity(json!([exists.clone(), in_.clone()])), EDGE, None),
            Some(EdgeReason::NodeAffinity)
        );
        assert_eq!(
            edge_reason(&affinity(json!([exists, cloud])), EDGE, None),
            None
        );
        assert_eq!(edge_reason(&affinity(json!([not_in])), EDGE, None), None);
        assert_eq!(edge_reason(&affinity(json!([empty_in])), EDGE, None), None);
        assert_eq!(edge_reason(&affinity(json!([])), EDGE, None), None);
        // Preferred affinity is a wish, not a binding.
        let preferred = json!({"spec": {"affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                "preference": {"matchExpressions": [{"key": EDGE, "operator": "Exists"}]}}]}}}});
        assert_eq!(edge_reason(&preferred, EDGE, None), None);
    }

    #[test]
    fn opted_out_pods_are_left_alone() {
        let edge = labels(json!({EDGE: ""}));
        for v in ["off", "false", "OFF"] {
            let mut p = pod_on("gw");
            p["metadata"]["labels"] = json!({OPT_OUT_LABEL: v});
            assert_eq!(decide(&p, EDGE, Some(&edge)), Decision::OptedOut);
        }
        let mut p = pod_on("gw");
        p["metadata"]["labels"] = json!({OPT_OUT_LABEL: "on"});
        assert!(matches!(
            decide(&p, EDGE, Some(&edge)),
            Decision::Mutate { .. }
        ));
    }

    #[test]
    fn other_tolerations_are_kept_and_timed_ones_lose_only_their_seconds() {
        let other =
            json!({"key": "dedicated", "operator": "Equal", "value": "gw", "effect": "NoSchedule"});
        let any_effect =
            json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "tolerationSeconds": 60});
        let no_schedule =
            json!({"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoSchedule"});
        let out = untimed_tolerations(&[
            other.clone(),
            any_effect,
            no_schedule.clone(),
            timed(TAINT_NOT_READY, 300),
        ])
        .unwrap();
        assert_eq!(
            out,
            vec![
                other,
                json!({"key": TAINT_UNREACHABLE, "operator": "Exists"}),
                no_schedule,
                untimed(TAINT_NOT_READY),
            ]
        );
    }

    #[test]
    fn a_timed_wildcard_first_gets_untimed_tolerations_put_before_it() {
        let wildcard =
            json!({"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30});
        let out = untimed_tolerations(std::slice::from_ref(&wildcard)).unwrap();
        assert_eq!(
            out,
            vec![
                untimed(TAINT_NOT_READY),
                untimed(TAINT_UNREACHABLE),
                wildcard
            ]
        );
        // An untimed wildcard already tolerates both forever.
        assert_eq!(untimed_tolerations(&[json!({"operator": "Exists"})]), None);
        // Nothing at all: both added.
        assert_eq!(
            untimed_tolerations(&[]).unwrap(),
            vec![untimed(TAINT_NOT_READY), untimed(TAINT_UNREACHABLE)]
        );
        // `tolerationSeconds: null` is no limit.
        let null = json!({"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": null});
        assert_eq!(
            untimed_tolerations(&[null.clone(), untimed(TAINT_UNREACHABLE)]),
            None
        );
    }

    #[test]
    fn json_patch_adds_or_replaces_the_list() {
        let edge = labels(json!({EDGE: ""}));
        let p = pod_on("gw");
        let d = decide(&p, EDGE, Some(&edge));
        let patch = json_patch(&p, &d).unwrap();
        assert_eq!(patch[0]["op"], "replace");
        assert_eq!(patch[0]["path"], "/spec/tolerations");
        let bare = json!({"spec": {"nodeName": "gw", "containers": []}});
        let d = decide(&bare, EDGE, Some(&edge));
        assert_eq!(json_patch(&bare, &d).unwrap()[0]["op"], "add");
        assert_eq!(json_patch(&bare, &Decision::NotEdge), None);
        let mut unchanged = bare.clone();
        apply(&mut unchanged, &Decision::OptedOut);
        assert_eq!(unchanged, bare);
    }
}
