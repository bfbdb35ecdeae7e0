//! Printers for pods, nodes and events: the columns users look at most, with
//! the status logic of Kubernetes' `printPod`, `printNode` and `printEvent`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::builtin::{AGE, Col, NAME, Printer, Row, col, wide};
use super::format::{age, arr, boolean, get, human_duration, int, parse_time, s, since};

/// `kubectl get pods`.
pub(crate) const POD: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Ready",
            "string",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        col(
            "Status",
            "string",
            "The aggregate status of the containers in this pod.",
        ),
        col(
            "Restarts",
            "string",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        AGE,
        wide(
            "IP",
            "string",
            "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
        ),
        wide(
            "Node",
            "string",
            "NodeName indicates in which node this pod is scheduled.",
        ),
        wide(
            "Nominated Node",
            "string",
            "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
        ),
        wide(
            "Readiness Gates",
            "string",
            "If specified, all readiness gates will be evaluated for pod readiness.",
        ),
    ],
    row: pod_row,
};

fn has_condition(pod: &Value, ty: &str) -> bool {
    arr(pod, &["status", "conditions"])
        .iter()
        .any(|c| s(c, &["type"]) == ty && s(c, &["status"]) == "True")
}

fn is_restartable(init: Option<&Value>) -> bool {
    init.is_some_and(|c| s(c, &["restartPolicy"]) == "Always")
}

/// `lastTerminationState.terminated.finishedAt` of a container status.
fn last_termination(status: &Value) -> Option<DateTime<Utc>> {
    get(status, &["lastState", "terminated"])
        .filter(|t| !t.is_null())
        .map(|t| parse_time(s(t, &["finishedAt"])).unwrap_or(DateTime::<Utc>::MIN_UTC))
}

fn terminated(status: &Value) -> Option<&Value> {
    get(status, &["state", "terminated"]).filter(|t| t.is_object())
}

fn waiting_reason(status: &Value) -> Option<&str> {
    get(status, &["state", "waiting"])
        .filter(|w| w.is_object())
        .map(|w| s(w, &["reason"]))
}

/// `printPod` in printers.go, cell for cell.
fn pod_row(pod: &Value, now: DateTime<Utc>) -> Row {
    let spec_init = arr(pod, &["spec", "initContainers"]);
    let mut total = arr(pod, &["spec", "containers"]).len();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_restartable_restart: Option<DateTime<Utc>> = None;
    let later = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| a.max(b);

    let phase = s(pod, &["status", "phase"]);
    let mut reason = match s(pod, &["status", "reason"]) {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    if arr(pod, &["status", "conditions"])
        .iter()
        .any(|c| s(c, &["type"]) == "PodScheduled" && s(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_owned();
    }

    let conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    };

    let init_spec = |name: &str| spec_init.iter().find(|c| s(c, &["name"]) == name);
    total += spec_init.iter().filter(|c| is_restartable(Some(c))).count();

    let mut initializing = false;
    for (i, st) in arr(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let restartable = is_restartable(init_spec(s(st, &["name"])));
        restarts += int(st, &["restartCount"]);
        last_restart = later(last_restart, last_termination(st));
        if restartable {
            restartable_restarts += int(st, &["restartCount"]);
            last_restartable_restart = later(last_restartable_restart, last_termination(st));
        }
        let term = terminated(st);
        if term.is_some_and(|t| int(t, &["exitCode"]) == 0) {
            continue;
        }
        if restartable && boolean(st, &["started"]) {
            if boolean(st, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = term {
            reason = match s(t, &["reason"]) {
                "" if int(t, &["signal"]) != 0 => format!("Init:Signal:{}", int(t, &["signal"])),
                "" => format!("Init:ExitCode:{}", int(t, &["exitCode"])),
                r => format!("Init:{r}"),
            };
        } else if let Some(w) =
            waiting_reason(st).filter(|w| !w.is_empty() && *w != "PodInitializing")
        {
            reason = format!("Init:{w}");
        } else {
            reason = format!("Init:{i}/{}", spec_init.len());
        }
        initializing = true;
        break;
    }

    if !initializing || has_condition(pod, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for st in arr(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(st, &["restartCount"]);
            last_restart = later(last_restart, last_termination(st));
            if let Some(w) = waiting_reason(st).filter(|w| !w.is_empty()) {
                reason = w.to_owned();
            } else if let Some(t) = terminated(st) {
                reason = match s(t, &["reason"]) {
                    "" if int(t, &["signal"]) != 0 => format!("Signal:{}", int(t, &["signal"])),
                    "" => format!("ExitCode:{}", int(t, &["exitCode"])),
                    r => r.to_owned(),
                };
            } else if boolean(st, &["ready"])
                && get(st, &["state", "running"]).is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_owned();
        }
    }

    let deleting = get(pod, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null());
    if deleting && s(pod, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    // A zero finishedAt counts as "no restart time", like Go's IsZero().
    let restarts_cell = match last_restart.filter(|t| *t != DateTime::<Utc>::MIN_UTC) {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let pod_ip = match arr(pod, &["status", "podIPs"]).first() {
        Some(ip) => s(ip, &["ip"]),
        None => s(pod, &["status", "podIP"]),
    };
    let none = |v: &str| {
        if v.is_empty() {
            "<none>".to_owned()
        } else {
            v.to_owned()
        }
    };
    let gates = arr(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let conds = arr(pod, &["status", "conditions"]);
        let true_count = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .find(|c| s(c, &["type"]) == s(g, &["conditionType"]))
                    .is_some_and(|c| s(c, &["status"]) == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };

    Row {
        cells: vec![
            json!(s(pod, &["metadata", "name"])),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_cell),
            json!(age(pod, now)),
            json!(none(pod_ip)),
            json!(none(s(pod, &["spec", "nodeName"]))),
            json!(none(s(pod, &["status", "nominatedNodeName"]))),
            json!(readiness_gates),
        ],
        conditions,
    }
}

/// `kubectl get nodes`.
pub(crate) const NODE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The status of the node"),
        col("Roles", "string", "The roles of the node"),
        AGE,
        col("Version", "string", "Kubelet Version reported by the node."),
        wide(
            "Internal-IP",
            "string",
            "List of addresses reachable to the node.",
        ),
        wide(
            "External-IP",
            "string",
            "List of addresses reachable to the node.",
        ),
        wide(
            "OS-Image",
            "string",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        ),
        wide(
            "Kernel-Version",
            "string",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        ),
        wide(
            "Container-Runtime",
            "string",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        ),
    ],
    row: node_row,
};

/// `findNodeRoles`: `node-role.kubernetes.io/<role>` keys and the legacy
/// `kubernetes.io/role=<role>` label, sorted and de-duplicated.
fn node_roles(node: &Value) -> Vec<String> {
    let mut roles: Vec<String> = get(node, &["metadata", "labels"])
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| {
                    if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                        (!role.is_empty()).then(|| role.to_owned())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().filter(|v| !v.is_empty()).map(str::to_owned)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    roles
}

fn node_row(node: &Value, now: DateTime<Utc>) -> Row {
    let mut status: Vec<String> = Vec::new();
    // Only the Ready condition is shown; the last entry of a type wins.
    if let Some(c) = arr(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| s(c, &["type"]) == "Ready")
    {
        status.push(
            if s(c, &["status"]) == "True" {
                "Ready"
            } else {
                "NotReady"
            }
            .to_owned(),
        );
    }
    if status.is_empty() {
        status.push("Unknown".to_owned());
    }
    if boolean(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled".to_owned());
    }
    let roles = match node_roles(node).join(",") {
        r if r.is_empty() => "<none>".to_owned(),
        r => r,
    };
    let address = |ty: &str| {
        arr(node, &["status", "addresses"])
            .iter()
            .find(|a| s(a, &["type"]) == ty)
            .map_or("<none>", |a| s(a, &["address"]))
            .to_owned()
    };
    let info = |k: &str| match s(node, &["status", "nodeInfo", k]) {
        "" => "<unknown>".to_owned(),
        v => v.to_owned(),
    };
    vec![
        json!(s(node, &["metadata", "name"])),
        json!(status.join(",")),
        json!(roles),
        json!(age(node, now)),
        json!(s(node, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
    .into()
}

/// `kubectl get events` (core/v1 and events.k8s.io/v1 field names).
pub(crate) const EVENT: Printer = Printer {
    columns: &[
        col(
            "Last Seen",
            "string",
            "The time at which the most recent occurrence of this event was recorded.",
        ),
        col(
            "Type",
            "string",
            "Type of this event (Normal, Warning), new types could be added in the future",
        ),
        col(
            "Reason",
            "string",
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        ),
        col("Object", "string", "The object that this event is about."),
        wide(
            "Subobject",
            "string",
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
        ),
        wide(
            "Source",
            "string",
            "The component reporting this event. Should be a short machine understandable string.",
        ),
        col(
            "Message",
            "string",
            "A human-readable description of the status of this operation.",
        ),
        wide(
            "First Seen",
            "string",
            "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
        ),
        wide(
            "Count",
            "string",
            "The number of times this event has occurred.",
        ),
        NAME_WIDE,
    ],
    row: event_row,
};

/// The `Name` column of events, which is wide-only.
const NAME_WIDE: Col = Col {
    priority: 1,
    ..NAME
};

fn event_row(ev: &Value, now: DateTime<Utc>) -> Row {
    // events.k8s.io/v1 renames the core/v1 fields.
    let pick = |core: &str, new: &str| {
        get(ev, &[core])
            .filter(|v| !v.is_null())
            .or_else(|| get(ev, &[new]).filter(|v| !v.is_null()))
    };
    let time_set = |v: Option<&Value>| v.and_then(Value::as_str).and_then(parse_time).is_some();
    let involved = pick("involvedObject", "regarding").unwrap_or(&Value::Null);
    let first_ts = pick("firstTimestamp", "deprecatedFirstTimestamp");
    let first = if time_set(first_ts) {
        since(first_ts, now)
    } else {
        since(get(ev, &["eventTime"]), now)
    };
    let last_ts = pick("lastTimestamp", "deprecatedLastTimestamp");
    let mut last = if time_set(last_ts) {
        since(last_ts, now)
    } else {
        first.clone()
    };
    let mut count = pick("count", "deprecatedCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(series) = get(ev, &["series"]).filter(|v| v.is_object()) {
        last = since(get(series, &["lastObservedTime"]), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let kind = s(involved, &["kind"]).to_lowercase();
    let target = match s(involved, &["name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let source = pick("source", "deprecatedSource").unwrap_or(&Value::Null);
    let component = match s(source, &["component"]) {
        "" => s(ev, &["reportingController"]),
        c => c,
    };
    let host = match s(source, &["host"]) {
        "" => s(ev, &["reportingInstance"]),
        h => h,
    };
    let source = if host.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {host}")
    };
    let message = pick("message", "note")
        .and_then(Value::as_str)
        .unwrap_or("");
    vec![
        json!(last),
        json!(s(ev, &["type"])),
        json!(s(ev, &["reason"])),
        json!(target),
        json!(s(involved, &["fieldPath"])),
        json!(source),
        json!(message.trim()),
        json!(first),
        json!(count),
        json!(s(ev, &["metadata", "name"])),
    ]
    .into()
}
