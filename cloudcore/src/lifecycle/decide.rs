//! The node-lifecycle controller's decisions, with no IO: is a node's Lease stale, which
//! lifecycle taints it should carry, whether a pod tolerates a taint and when it must be
//! evicted. Times are Unix milliseconds.

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Taint key of a node whose status is unknown (Lease stale).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint key of a node that reports Ready=False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// `NoExecute` taint effect.
pub const NO_EXECUTE: &str = "NoExecute";
/// `NoSchedule` taint effect.
pub const NO_SCHEDULE: &str = "NoSchedule";

/// Whether a node's liveness has lapsed: its Lease (or, without one, the Node itself since
/// creation) is older than `grace_ms`.
pub fn lease_stale(renewed_ms: Option<i64>, created_ms: i64, now_ms: i64, grace_ms: i64) -> bool {
    now_ms - renewed_ms.unwrap_or(created_ms) > grace_ms
}

/// The lifecycle taints (key, effect) a node should carry, or `None` to leave them as they
/// are. `ready` is the Ready condition's status after this round's update.
///
/// - stale Lease: `unreachable` NoSchedule + NoExecute;
/// - fresh Lease and Ready=True: none;
/// - fresh Lease and Ready=False: `not-ready` NoSchedule + NoExecute;
/// - fresh Lease but Ready still Unknown/absent (the edge is back but has not posted status
///   yet): unchanged — taints go only once the node says it is Ready.
pub fn wanted_taints(
    stale: bool,
    ready: Option<&str>,
) -> Option<Vec<(&'static str, &'static str)>> {
    let pair = |key| vec![(key, NO_SCHEDULE), (key, NO_EXECUTE)];
    match (stale, ready) {
        (true, _) => Some(pair(TAINT_UNREACHABLE)),
        (false, Some("True")) => Some(Vec::new()),
        (false, Some("False")) => Some(pair(TAINT_NOT_READY)),
        (false, _) => None,
    }
}

fn is_lifecycle_key(key: &str) -> bool {
    key == TAINT_UNREACHABLE || key == TAINT_NOT_READY
}

/// The node's new taint list given the wanted lifecycle taints, or `None` if nothing
/// changes. Other taints are kept as they are; kept lifecycle taints keep their
/// `timeAdded`; new ones get `now`.
pub fn reconcile_taints(
    current: &[Taint],
    wanted: &[(&str, &str)],
    now: k8s_openapi::jiff::Timestamp,
) -> Option<Vec<Taint>> {
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !is_lifecycle_key(&t.key) || wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e)
        })
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: (*key).to_owned(),
                effect: (*effect).to_owned(),
                value: None,
                time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            });
        }
    }
    (out != current).then_some(out)
}

/// Whether `toleration` tolerates `taint` (Kubernetes' `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        // An empty key with Exists tolerates everything; with Equal nothing.
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// What taint-based eviction does with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Delete it now: a NoExecute taint is not tolerated, or a toleration ran out.
    Now,
    /// Delete it at this time (ms) unless the taints go away first.
    At(i64),
    /// Never: every NoExecute taint is tolerated without a time limit (or there are none).
    Never,
}

/// Decides a pod's fate. `taints` are the node's taints with the time each was added (ms);
/// only NoExecute ones matter. For each, the tolerations that match it are considered: none
/// → evict now; the smallest `tolerationSeconds` among them bounds the stay, counted from
/// the taint's `timeAdded` (`<= 0` → now); none with seconds → that taint never evicts.
pub fn eviction(tolerations: &[Toleration], taints: &[(&Taint, i64)], now_ms: i64) -> Eviction {
    let mut deadline: Option<i64> = None;
    for (taint, added_ms) in taints.iter().filter(|(t, _)| t.effect == NO_EXECUTE) {
        // Kubernetes (GetMatchingTolerations) uses the first toleration that
        // matches each taint, not the shortest of all that match: an untimed
        // toleration listed first wins over a later timed wildcard.
        let Some(used) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        let Some(secs) = used.toleration_seconds else {
            continue;
        };
        if secs <= 0 {
            return Eviction::Now;
        }
        let at = added_ms.saturating_add(secs.saturating_mul(1000));
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    match deadline {
        Some(at) if at <= now_ms => Eviction::Now,
        Some(at) => Eviction::At(at),
        None => Eviction::Never,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: None,
        }
    }

    fn tol(
        key: Option<&str>,
        op: Option<&str>,
        effect: Option<&str>,
        secs: Option<i64>,
    ) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn lease_age_decides_staleness() {
        assert!(!lease_stale(Some(1_000), 0, 40_000, 40_000));
        assert!(lease_stale(Some(1_000), 0, 41_001, 40_000));
        assert!(lease_stale(None, 0, 40_001, 40_000));
        assert!(!lease_stale(None, 10_000, 40_001, 40_000));
    }

    #[test]
    fn wanted_taints_follow_lease_and_ready() {
        let unreachable = Some(vec![
            (TAINT_UNREACHABLE, NO_SCHEDULE),
            (TAINT_UNREACHABLE, NO_EXECUTE),
        ]);
        assert_eq!(wanted_taints(true, Some("True")), unreachable);
        assert_eq!(wanted_taints(true, Some("Unknown")), unreachable);
        assert_eq!(wanted_taints(false, Some("True")), Some(vec![]));
        assert_eq!(
            wanted_taints(false, Some("False")),
            Some(vec![
                (TAINT_NOT_READY, NO_SCHEDULE),
                (TAINT_NOT_READY, NO_EXECUTE)
            ])
        );
        assert_eq!(wanted_taints(false, Some("Unknown")), None);
        assert_eq!(wanted_taints(false, None), None);
    }

    #[test]
    fn taints_are_added_kept_and_removed() {
        let now = k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap();
        let custom = taint("dedicated", NO_SCHEDULE);
        let added = reconcile_taints(
            std::slice::from_ref(&custom),
            &[(TAINT_UNREACHABLE, NO_EXECUTE)],
            now,
        )
        .unwrap();
        assert_eq!(added.len(), 2);
        assert_eq!(added[1].time_added.as_ref().map(|t| t.0), Some(now));
        let later = k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap();
        assert_eq!(
            reconcile_taints(&added, &[(TAINT_UNREACHABLE, NO_EXECUTE)], later),
            None
        );
        assert_eq!(reconcile_taints(&added, &[], later), Some(vec![custom]));
    }

    #[test]
    fn toleration_matching() {
        let t = Taint {
            value: Some("v".into()),
            ..taint(TAINT_UNREACHABLE, NO_EXECUTE)
        };
        assert!(tolerates(
            &tol(
                Some(TAINT_UNREACHABLE),
                Some("Exists"),
                Some(NO_EXECUTE),
                None
            ),
            &t
        ));
        assert!(tolerates(
            &tol(Some(TAINT_UNREACHABLE), Some("Exists"), None, None),
            &t
        ));
        assert!(tolerates(&tol(None, Some("Exists"), None, None), &t));
        assert!(!tolerates(&tol(None, None, None, None), &t));
        assert!(!tolerates(
            &tol(
                Some(TAINT_UNREACHABLE),
                Some("Exists"),
                Some(NO_SCHEDULE),
                None
            ),
            &t
        ));
        assert!(!tolerates(
            &tol(Some(TAINT_NOT_READY), Some("Exists"), None, None),
            &t
        ));
        let mut equal = tol(Some(TAINT_UNREACHABLE), Some("Equal"), None, None);
        assert!(!tolerates(&equal, &t));
        equal.value = Some("v".into());
        assert!(tolerates(&equal, &t));
    }

    #[test]
    fn eviction_honours_toleration_seconds() {
        let t = taint(TAINT_UNREACHABLE, NO_EXECUTE);
        let ns = taint(TAINT_UNREACHABLE, NO_SCHEDULE);
        let taints = [(&t, 10_000), (&ns, 10_000)];
        let forever = tol(
            Some(TAINT_UNREACHABLE),
            Some("Exists"),
            Some(NO_EXECUTE),
            None,
        );
        let one = tol(
            Some(TAINT_UNREACHABLE),
            Some("Exists"),
            Some(NO_EXECUTE),
            Some(1),
        );
        let three_hundred = tol(Some(TAINT_UNREACHABLE), Some("Exists"), None, Some(300));
        assert_eq!(eviction(&[], &taints, 10_000), Eviction::Now);
        assert_eq!(
            eviction(std::slice::from_ref(&forever), &taints, 99_999_999),
            Eviction::Never
        );
        assert_eq!(
            eviction(std::slice::from_ref(&one), &taints, 10_500),
            Eviction::At(11_000)
        );
        assert_eq!(
            eviction(std::slice::from_ref(&one), &taints, 11_000),
            Eviction::Now
        );
        // The first matching toleration decides, as in Kubernetes.
        assert_eq!(
            eviction(&[forever.clone(), three_hundred.clone()], &taints, 10_000),
            Eviction::Never
        );
        assert_eq!(
            eviction(&[three_hundred, forever.clone()], &taints, 10_000),
            Eviction::At(310_000)
        );
        let zero = tol(None, Some("Exists"), None, Some(0));
        assert_eq!(eviction(&[zero], &taints, 0), Eviction::Now);
        // NoSchedule taints never evict.
        assert_eq!(eviction(&[], &[(&ns, 0)], 0), Eviction::Never);
        // Every NoExecute taint must be tolerated.
        let other = taint(TAINT_NOT_READY, NO_EXECUTE);
        assert_eq!(
            eviction(&[forever], &[(&t, 0), (&other, 0)], 0),
            Eviction::Now
        );
    }
}
