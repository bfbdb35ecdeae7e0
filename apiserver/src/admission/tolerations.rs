//! Kubernetes' `DefaultTolerationSeconds` admission plugin: a pod that does not already
//! tolerate `node.kubernetes.io/not-ready:NoExecute` / `node.kubernetes.io/unreachable:NoExecute`
//! gets a toleration of each with `tolerationSeconds` (kube-apiserver's
//! `--default-not-ready-toleration-seconds` / `--default-unreachable-toleration-seconds`,
//! 300 by default), on create and on update of the pod itself (not its subresources).
//!
//! "Already tolerates" is the plugin's own test, which is looser than `ToleratesTaint`: the
//! key is the taint's or empty, the effect `NoExecute` or empty; operator and value are not
//! looked at.

use serde_json::{Value, json};

/// The taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown (no heartbeat).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The two taints the node-lifecycle controller evicts with, in the plugin's order.
pub const LIFECYCLE_TAINTS: [&str; 2] = [TAINT_NOT_READY, TAINT_UNREACHABLE];
/// Kubernetes' default for both flags.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

fn str_field<'a>(t: &'a Value, k: &str) -> &'a str {
    t.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The plugin's test: does `toleration` count as tolerating `key:NoExecute`?
pub fn plugin_tolerates(toleration: &Value, key: &str) -> bool {
    let k = str_field(toleration, "key");
    let effect = str_field(toleration, "effect");
    (k == key || k.is_empty()) && (effect == "NoExecute" || effect.is_empty())
}

/// Kubernetes' `ToleratesTaint` for the taint `key:NoExecute` without a value (what the
/// node-lifecycle controller puts on a node).
pub fn tolerates_taint(toleration: &Value, key: &str) -> bool {
    let effect = str_field(toleration, "effect");
    if !effect.is_empty() && effect != "NoExecute" {
        return false;
    }
    let k = str_field(toleration, "key");
    let op = match str_field(toleration, "operator") {
        "" => "Equal",
        op => op,
    };
    if k.is_empty() {
        return op == "Exists";
    }
    k == key && (op == "Exists" || (op == "Equal" && str_field(toleration, "value").is_empty()))
}

/// `{key, operator: Exists, effect: NoExecute}` with `tolerationSeconds` when given.
pub fn toleration(key: &str, seconds: Option<i64>) -> Value {
    let mut t = json!({"key": key, "operator": "Exists", "effect": "NoExecute"});
    if let Some(s) = seconds {
        t["tolerationSeconds"] = json!(s);
    }
    t
}

/// Apply the plugin to a pod's JSON: append the missing tolerations. Returns whether the
/// pod changed. `not_ready`/`unreachable` are the flags' values; `None` adds nothing for
/// that taint.
pub fn default_toleration_seconds(
    pod: &mut Value,
    not_ready: Option<i64>,
    unreachable: Option<i64>,
) -> bool {
    let current = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut added = Vec::new();
    for (key, secs) in [
        (TAINT_NOT_READY, not_ready),
        (TAINT_UNREACHABLE, unreachable),
    ] {
        let Some(secs) = secs else { continue };
        if !current.iter().any(|t| plugin_tolerates(t, key)) {
            added.push(toleration(key, Some(secs)));
        }
    }
    if added.is_empty() {
        return false;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return false;
    };
    let mut all = current;
    all.extend(added);
    spec.insert("tolerations".into(), Value::Array(all));
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(tolerations: Value) -> Value {
        json!({"spec": {"containers": [], "tolerations": tolerations}})
    }

    #[test]
    fn adds_both_with_the_configured_seconds() {
        let mut p = json!({"spec": {"containers": []}});
        assert!(default_toleration_seconds(&mut p, Some(300), Some(120)));
        assert_eq!(
            p["spec"]["tolerations"],
            json!([
                toleration(TAINT_NOT_READY, Some(300)),
                toleration(TAINT_UNREACHABLE, Some(120))
            ])
        );
        // Idempotent: a second pass (an update) adds nothing.
        assert!(!default_toleration_seconds(&mut p, Some(300), Some(120)));
    }

    #[test]
    fn keeps_what_the_pod_says_and_adds_only_the_missing_one() {
        let own = json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 6000});
        let other = json!({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"});
        let mut p = pod(json!([other.clone(), own.clone()]));
        assert!(default_toleration_seconds(&mut p, Some(300), Some(300)));
        assert_eq!(
            p["spec"]["tolerations"],
            json!([other, own, toleration(TAINT_NOT_READY, Some(300))])
        );
    }

    #[test]
    fn empty_key_or_empty_effect_counts_as_tolerating() {
        for t in [
            json!({"operator": "Exists"}),
            json!({"operator": "Exists", "effect": "NoExecute"}),
            json!({"key": TAINT_NOT_READY}),
        ] {
            let mut p = pod(json!([t.clone()]));
            let changed = default_toleration_seconds(&mut p, Some(300), Some(300));
            let n = p["spec"]["tolerations"].as_array().unwrap().len();
            if str_field(&t, "key").is_empty() {
                assert!(!changed, "{t}");
                assert_eq!(n, 1);
            } else {
                assert!(changed, "{t}");
                assert_eq!(n, 2, "only unreachable added for {t}");
            }
        }
        // A NoSchedule toleration of the key does not count.
        let mut p =
            pod(json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}]));
        assert!(default_toleration_seconds(&mut p, Some(300), Some(300)));
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn tolerates_taint_follows_kubernetes() {
        let k = TAINT_UNREACHABLE;
        assert!(tolerates_taint(&json!({"operator": "Exists"}), k));
        assert!(!tolerates_taint(&json!({"operator": "Equal"}), k));
        assert!(tolerates_taint(&json!({"key": k, "operator": "Exists"}), k));
        assert!(tolerates_taint(&json!({"key": k}), k));
        assert!(!tolerates_taint(&json!({"key": k, "value": "x"}), k));
        assert!(!tolerates_taint(
            &json!({"key": k, "effect": "NoSchedule", "operator": "Exists"}),
            k
        ));
        assert!(!tolerates_taint(
            &json!({"key": TAINT_NOT_READY, "operator": "Exists"}),
            k
        ));
        assert!(!tolerates_taint(&json!({"key": k, "operator": "Lt"}), k));
    }

    #[test]
    fn a_taint_whose_default_is_off_gets_nothing() {
        let mut p = json!({"spec": {"containers": []}});
        assert!(default_toleration_seconds(&mut p, None, Some(60)));
        assert_eq!(
            p["spec"]["tolerations"],
            json!([toleration(TAINT_UNREACHABLE, Some(60))])
        );
        let mut p = json!({"spec": {"containers": []}});
        assert!(!default_toleration_seconds(&mut p, None, None));
    }

    #[test]
    fn a_pod_without_spec_is_left_alone() {
        let mut p = json!({"metadata": {}});
        assert!(!default_toleration_seconds(&mut p, Some(300), Some(300)));
        assert_eq!(p, json!({"metadata": {}}));
    }
}
