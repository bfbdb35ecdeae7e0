//! PodStatus from what the runtime reports (pure): phase, conditions, containerStatuses
//! (state running / waiting(reason) / terminated(exitCode, reason), lastState,
//! restartCount, containerID, imageID), podIP(s), hostIP, startTime; and the Events the
//! runtime reports. The executor writes the status upstream (a merge patch of the `status`
//! subresource through the outbox) only when it differs from the last one written.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::decide::{Backoff, CState, Ctr, Failure, Sandbox};
use super::spec::{Container, Pod, RestartPolicy};

/// Runtime details of a container (from `ContainerStatus`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail {
    /// Image as requested.
    pub image: String,
    /// Resolved image reference (digest).
    pub image_ref: String,
    /// Started, unix ms.
    pub started_ms: i64,
    /// Finished, unix ms.
    pub finished_ms: i64,
    /// Exit code.
    pub exit_code: i32,
    /// Runtime reason (`OOMKilled`, `Completed`, `Error`).
    pub reason: String,
    /// Runtime message.
    pub message: String,
}

/// Everything the status of one pod is computed from.
#[derive(Debug)]
pub struct View<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its current sandbox.
    pub sandbox: Option<&'a Sandbox>,
    /// Its containers (any sandbox).
    pub containers: Vec<&'a Ctr>,
    /// Container details by id.
    pub details: &'a BTreeMap<String, Detail>,
    /// Failures by `(uid, container name)`.
    pub failures: &'a BTreeMap<(String, String), Failure>,
    /// Containers whose readiness probe failed (or has not succeeded yet).
    pub not_ready: &'a BTreeSet<String>,
    /// Pod IP.
    pub pod_ip: String,
    /// Node IP.
    pub host_ip: String,
    /// The status last written (conditions keep their transition times).
    pub previous: Option<&'a Value>,
    /// Back-off settings (for the CrashLoopBackOff message).
    pub backoff: Backoff,
    /// Now, unix ms.
    pub now_ms: i64,
}

/// RFC 3339 (seconds) of unix ms.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct One {
    json: Value,
    ready: bool,
    /// Started at least once and not failed for good.
    running: bool,
    /// Terminated for good: Some(exit code).
    done: Option<i32>,
}

fn container_status(v: &View<'_>, c: &Container, init: bool) -> One {
    let uid = &v.pod.metadata.uid;
    let mut insts: Vec<&&Ctr> = v.containers.iter().filter(|x| x.name == c.name).collect();
    insts.sort_by_key(|x| std::cmp::Reverse(x.attempt));
    let latest = insts.first();
    let policy = v.pod.spec.restart_policy();
    let terminated = |x: &Ctr| {
        let d = v.details.get(&x.id).cloned().unwrap_or_default();
        let (code, started, finished) = match x.state {
            CState::Exited {
                code,
                started_ms,
                finished_ms,
            } => (code, started_ms, finished_ms),
            _ => (d.exit_code, d.started_ms, d.finished_ms),
        };
        let reason = if !d.reason.is_empty() {
            d.reason.clone()
        } else if code == 0 {
            "Completed".to_owned()
        } else {
            "Error".to_owned()
        };
        json!({"terminated": {"exitCode": code, "reason": reason,
            "startedAt": rfc3339(started), "finishedAt": rfc3339(finished),
            "containerID": format!("containerd://{}", x.id)}})
    };
    let waiting = |reason: &str, message: &str| {
        let mut w = json!({"reason": reason});
        if !message.is_empty() {
            w["message"] = json!(message);
        }
        json!({ "waiting": w })
    };
    let failure = v.failures.get(&(uid.clone(), c.name.clone()));
    let mut last_state = json!({});
    let mut ready = false;
    let mut running = false;
    let mut done = None;
    let state = match latest {
        None => match failure {
            Some(f) if f.reason == "ErrImagePull" && f.count > 1 => {
                waiting("ImagePullBackOff", &f.message)
            }
            Some(f) => waiting(&f.reason, &f.message),
            None if init => waiting("PodInitializing", ""),
            None => waiting("ContainerCreating", ""),
        },
        Some(x) => {
            if let Some(prev) = insts.get(1) {
                last_state = terminated(prev);
            }
            match x.state {
                CState::Running => {
                    running = true;
                    ready = !v.not_ready.contains(&x.id);
                    let started = v.details.get(&x.id).map_or(0, |d| d.started_ms);
                    json!({"running": {"startedAt": rfc3339(started)}})
                }
                CState::Created => waiting("ContainerCreating", ""),
                CState::Exited { code, .. } => {
                    let restart = match (init, policy) {
                        (_, RestartPolicy::Never) => false,
                        (true, _) | (false, RestartPolicy::OnFailure) => code != 0,
                        (false, RestartPolicy::Always) => true,
                    };
                    if restart {
                        running = true;
                        last_state = terminated(x);
                        let delay = v.backoff.delay(x.attempt) / 1000;
                        waiting(
                            "CrashLoopBackOff",
                            &format!(
                                "back-off {delay}s restarting failed container={} pod={}_{}({uid})",
                                c.name, v.pod.metadata.name, v.pod.metadata.namespace
                            ),
                        )
                    } else {
                        done = Some(code);
                        ready = init && code == 0;
                        terminated(x)
                    }
                }
            }
        }
    };
    let mut json = json!({
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": ready,
        "restartCount": latest.map_or(0, |x| x.attempt),
        "started": running && state.get("running").is_some(),
        "state": state,
        "lastState": last_state,
    });
    if let Some(x) = latest {
        json["containerID"] = json!(format!("containerd://{}", x.id));
        if let Some(d) = v.details.get(&x.id) {
            json["imageID"] = json!(d.image_ref);
        }
    }
    One {
        json,
        ready,
        running,
        done,
    }
}

/// The pod's status object.
pub fn pod_status(v: &View<'_>) -> Value {
    let spec = &v.pod.spec;
    let inits: Vec<One> = spec
        .init_containers
        .iter()
        .map(|c| container_status(v, c, true))
        .collect();
    let mains: Vec<One> = spec
        .containers
        .iter()
        .map(|c| container_status(v, c, false))
        .collect();
    let initialized = inits.iter().all(|i| i.done == Some(0));
    let init_failed = inits.iter().any(|i| i.done.is_some_and(|c| c != 0));
    let all_ready = initialized && !mains.is_empty() && mains.iter().all(|m| m.ready);
    let all_done = !mains.is_empty() && mains.iter().all(|m| m.done.is_some());
    let phase = if init_failed {
        "Failed"
    } else if all_done {
        if mains.iter().all(|m| m.done == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if initialized
        && v.sandbox.is_some_and(|s| s.ready)
        && mains.iter().any(|m| m.running)
        && mains.iter().all(|m| m.running || m.done.is_some())
    {
        "Running"
    } else {
        "Pending"
    };
    let prev_conditions = v
        .previous
        .and_then(|p| p.get("conditions"))
        .and_then(Value::as_array);
    let now = rfc3339(v.now_ms);
    let cond = |kind: &str, ok: bool, reason: &str| {
        let status = if ok { "True" } else { "False" };
        let since = prev_conditions
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == kind && c["status"] == status)
            })
            .and_then(|c| c.get("lastTransitionTime"))
            .cloned()
            .unwrap_or_else(|| json!(now));
        let mut c = json!({"type": kind, "status": status, "lastProbeTime": null,
            "lastTransitionTime": since});
        if !ok && !reason.is_empty() {
            c["reason"] = json!(reason);
        }
        c
    };
    let finished = matches!(phase, "Succeeded" | "Failed");
    let reason = if finished {
        "PodCompleted"
    } else if initialized {
        "ContainersNotReady"
    } else {
        "ContainersNotInitialized"
    };
    let conditions = vec![
        cond(
            "PodReadyToStartContainers",
            v.sandbox.is_some_and(|s| s.ready),
            "",
        ),
        cond("Initialized", initialized, "ContainersNotInitialized"),
        cond("Ready", all_ready && !finished, reason),
        cond("ContainersReady", all_ready && !finished, reason),
        cond("PodScheduled", true, ""),
    ];
    let start_time = v
        .previous
        .and_then(|p| p.get("startTime"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| v.sandbox.map(|s| rfc3339(s.created_ms)));
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": v.host_ip,
        "hostIPs": [{"ip": v.host_ip}],
        "containerStatuses": mains.into_iter().map(|m| m.json).collect::<Vec<_>>(),
        "qosClass": "BestEffort",
    });
    if !spec.init_containers.is_empty() {
        status["initContainerStatuses"] =
            json!(inits.into_iter().map(|i| i.json).collect::<Vec<_>>());
    }
    if !v.pod_ip.is_empty() {
        status["podIP"] = json!(v.pod_ip);
        status["podIPs"] = json!([{"ip": v.pod_ip}]);
    }
    if let Some(t) = start_time {
        status["startTime"] = json!(t);
    }
    status
}

/// A core/v1 Event about `pod` (`type` Normal or Warning), named like the kubelet's.
pub fn event(pod: &Pod, node: &str, kind: &str, reason: &str, message: &str, now_ms: i64) -> Value {
    let m = &pod.metadata;
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{}.{:x}", m.name, now_ms.unsigned_abs() * 1000 + u64::from(rand::random::<u16>())),
            "namespace": m.namespace,
        },
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": m.name,
            "namespace": m.namespace, "uid": m.uid},
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kedge-edgecore",
        "reportingInstance": node,
        "firstTimestamp": rfc3339(now_ms),
        "lastTimestamp": rfc3339(now_ms),
        "count": 1,
    })
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
