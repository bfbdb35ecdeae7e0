//! The pure core of the pod sync loop: desired pods + what the runtime reports + what the
//! loop remembers + the clock -> the next [`Action`]s. No IO; every transition has a test.
//!
//! It is level-triggered and takes one step per pod at a time (run the sandbox, then the
//! next init container, then the containers); the executor applies the actions, lists the
//! runtime again and calls [`decide`] again, so a crash of edgecore at any point resumes
//! from what the runtime shows. A pod's start step runs as its own task
//! ([`Memory::starting`]) and the pod is decided again as soon as that step reports, not
//! when the slowest other pod's step does.
//!
//! Crash back-off is derived from the runtime's own state — the exited container's attempt
//! and finish time — so it survives an edgecore restart: restart `n` waits
//! `base * 2^n`, at most `max` (Kubernetes' kubelet: 10 s doubling to 5 min), reset after a
//! container ran for ten minutes.

use std::collections::{BTreeMap, BTreeSet};

use super::spec::{Container, Pod, RestartPolicy};

/// A sandbox as the runtime lists it (kedge-labelled only).
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    /// Runtime id.
    pub id: String,
    /// Pod UID (label).
    pub uid: String,
    /// Attempt.
    pub attempt: u32,
    /// `SANDBOX_READY`.
    pub ready: bool,
    /// Creation time, unix ms.
    pub created_ms: i64,
}

/// A container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CState {
    /// Created, never started (a start that failed).
    Created,
    /// Running.
    Running,
    /// Exited with `code` at `finished_ms` after starting at `started_ms`.
    Exited {
        /// Exit code.
        code: i32,
        /// Start time, unix ms.
        started_ms: i64,
        /// Finish time, unix ms.
        finished_ms: i64,
    },
}

/// A container as the runtime lists it (kedge-labelled only).
#[derive(Debug, Clone, PartialEq)]
pub struct Ctr {
    /// Runtime id.
    pub id: String,
    /// Sandbox id.
    pub sandbox_id: String,
    /// Pod UID (label).
    pub uid: String,
    /// Container name (label).
    pub name: String,
    /// Attempt (restart count).
    pub attempt: u32,
    /// State.
    pub state: CState,
}

/// What the runtime holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actual {
    /// Sandboxes.
    pub sandboxes: Vec<Sandbox>,
    /// Containers.
    pub containers: Vec<Ctr>,
}

/// A failure the loop remembers to back off (image pull, config error, sandbox).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// `ErrImagePull`, `CreateContainerConfigError`, `CreatePodSandboxError`...
    pub reason: String,
    /// Human message.
    pub message: String,
    /// Consecutive failures.
    pub count: u32,
    /// Last failure, unix ms.
    pub at_ms: i64,
}

/// What the loop remembers between passes (not derivable from the runtime).
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Failures per `(pod uid, container name)`; the sandbox uses the name `""`.
    pub failures: BTreeMap<(String, String), Failure>,
    /// Pods whose stop is in flight.
    pub stopping: BTreeSet<String>,
    /// Pods whose start step (sandbox or containers) is in flight as its own task: they get
    /// no action (not even deletion or garbage collection) until the step reports, so a
    /// pod never has two steps racing in the runtime.
    pub starting: BTreeSet<String>,
    /// Containers a liveness probe declared dead.
    pub unhealthy: BTreeSet<String>,
    /// Pods whose deletion was confirmed upstream.
    pub confirmed: BTreeSet<String>,
}

/// Back-off settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay, ms.
    pub base_ms: i64,
    /// Cap, ms.
    pub max_ms: i64,
}

impl Backoff {
    /// Delay before restart number `n + 1` (after `n` restarts).
    pub fn delay(&self, n: u32) -> i64 {
        let shift = n.min(20);
        self.base_ms.saturating_mul(1 << shift).min(self.max_ms)
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the pod's sandbox (first, or again after it died).
    RunSandbox {
        /// Pod UID.
        uid: String,
        /// Attempt.
        attempt: u32,
    },
    /// Ensure the image, create and start a container.
    StartContainer {
        /// Pod UID.
        uid: String,
        /// Sandbox.
        sandbox_id: String,
        /// Container name.
        name: String,
        /// An init container.
        init: bool,
        /// Attempt (= restart count).
        attempt: u32,
    },
    /// Stop one container (failed liveness); it is restarted per the restart policy.
    KillContainer {
        /// Pod UID.
        uid: String,
        /// Container id.
        id: String,
        /// Container name.
        name: String,
        /// Grace, seconds.
        grace: i64,
    },
    /// Remove a container that is no longer needed (older attempts, unknown names).
    RemoveContainer {
        /// Container id.
        id: String,
    },
    /// Stop and remove a sandbox that is no longer the pod's (and its containers).
    RemoveSandbox {
        /// Sandbox id.
        id: String,
    },
    /// Stop every container of a pod (grace), then its sandboxes, and remove them.
    KillPod {
        /// Pod UID.
        uid: String,
        /// Grace, seconds.
        grace: i64,
    },
    /// The pod's deletion is done at the edge: tell the API (DELETE grace 0 + uid).
    ConfirmDeletion {
        /// Pod UID.
        uid: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

/// Grace of a pod that vanished from the cache (force-deleted, rebound): seconds.
pub const GONE_GRACE: i64 = 2;
/// A container that ran this long restarts with the base delay again (ms).
const BACKOFF_RESET_MS: i64 = 600_000;

/// The next actions for every pod.
pub fn decide(
    desired: &[Pod],
    actual: &Actual,
    memory: &Memory,
    backoff: Backoff,
    now_ms: i64,
) -> Vec<Action> {
    let mut out = Vec::new();
    let mut wanted = BTreeSet::new();
    for pod in desired {
        let uid = &pod.metadata.uid;
        wanted.insert(uid.clone());
        if memory.stopping.contains(uid) || memory.starting.contains(uid) {
            continue;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or_else(|| pod.spec.grace_seconds());
            terminate(actual, uid, grace, &mut out);
            let left = actual.sandboxes.iter().any(|s| &s.uid == uid)
                || actual.containers.iter().any(|c| &c.uid == uid);
            if !left && !memory.confirmed.contains(uid) {
                out.push(Action::ConfirmDeletion {
                    uid: uid.clone(),
                    namespace: pod.metadata.namespace.clone(),
                    name: pod.metadata.name.clone(),
                });
            }
            continue;
        }
        sync_pod(pod, actual, memory, backoff, now_ms, &mut out);
    }
    // Garbage: kedge pods nobody wants any more.
    let orphans: BTreeSet<&String> = actual
        .sandboxes
        .iter()
        .map(|s| &s.uid)
        .chain(actual.containers.iter().map(|c| &c.uid))
        .filter(|u| {
            !wanted.contains(*u) && !memory.stopping.contains(*u) && !memory.starting.contains(*u)
        })
        .collect();
    for uid in orphans {
        out.push(Action::KillPod {
            uid: uid.clone(),
            grace: GONE_GRACE,
        });
    }
    out
}

fn terminate(actual: &Actual, uid: &str, grace: i64, out: &mut Vec<Action>) {
    let any = actual.sandboxes.iter().any(|s| s.uid == uid)
        || actual.containers.iter().any(|c| c.uid == uid);
    if any {
        out.push(Action::KillPod {
            uid: uid.to_owned(),
            grace,
        });
    }
}

fn gated(memory: &Memory, uid: &str, name: &str, backoff: Backoff, now_ms: i64) -> bool {
    memory
        .failures
        .get(&(uid.to_owned(), name.to_owned()))
        .is_some_and(|f| now_ms < f.at_ms + backoff.delay(f.count.saturating_sub(1)))
}

fn sync_pod(
    pod: &Pod,
    actual: &Actual,
    memory: &Memory,
    backoff: Backoff,
    now_ms: i64,
    out: &mut Vec<Action>,
) {
    let uid = &pod.metadata.uid;
    let mut sandboxes: Vec<&Sandbox> = actual.sandboxes.iter().filter(|s| &s.uid == uid).collect();
    sandboxes.sort_by_key(|s| std::cmp::Reverse((s.attempt, s.created_ms)));
    let policy = pod.spec.restart_policy();
    let Some(current) = sandboxes.first().filter(|s| s.ready) else {
        // No live sandbox: (re)create it, unless a pod that must not restart already ran.
        let ran = actual.containers.iter().any(|c| &c.uid == uid);
        let finished = ran && policy == RestartPolicy::Never;
        if !finished && !gated(memory, uid, "", backoff, now_ms) {
            let attempt = sandboxes.first().map_or(0, |s| s.attempt + 1);
            out.push(Action::RunSandbox {
                uid: uid.clone(),
                attempt,
            });
        }
        return;
    };
    // Older sandboxes go.
    for old in sandboxes.iter().skip(1) {
        out.push(Action::RemoveSandbox { id: old.id.clone() });
    }
    let in_sandbox: Vec<&Ctr> = actual
        .containers
        .iter()
        .filter(|c| &c.uid == uid && c.sandbox_id == current.id)
        .collect();
    let known: BTreeSet<&str> = pod
        .spec
        .init_containers
        .iter()
        .chain(&pod.spec.containers)
        .map(|c| c.name.as_str())
        .collect();
    // GC: instances older than the previous one per name; names not in the spec.
    for c in &in_sandbox {
        // The previous instance stays (status.lastState), older ones go.
        let newer = in_sandbox
            .iter()
            .filter(|o| o.name == c.name && o.attempt > c.attempt)
            .count()
            >= 2;
        if (newer && c.state != CState::Running) || !known.contains(c.name.as_str()) {
            out.push(Action::RemoveContainer { id: c.id.clone() });
        }
    }
    let latest = |name: &str| -> Option<&Ctr> {
        in_sandbox
            .iter()
            .filter(|c| c.name == name)
            .max_by_key(|c| c.attempt)
            .copied()
    };
    let step = |c: &Container, init: bool, out: &mut Vec<Action>| -> Step {
        let start = |attempt| Action::StartContainer {
            uid: uid.clone(),
            sandbox_id: current.id.clone(),
            name: c.name.clone(),
            init,
            attempt,
        };
        match latest(&c.name) {
            None => {
                if !gated(memory, uid, &c.name, backoff, now_ms) {
                    out.push(start(0));
                }
                Step::Waiting
            }
            Some(inst) => match inst.state {
                CState::Created => {
                    out.push(Action::RemoveContainer {
                        id: inst.id.clone(),
                    });
                    Step::Waiting
                }
                CState::Running => {
                    if memory.unhealthy.contains(&inst.id) {
                        out.push(Action::KillContainer {
                            uid: uid.clone(),
                            id: inst.id.clone(),
                            name: c.name.clone(),
                            grace: pod.spec.grace_seconds(),
                        });
                    }
                    Step::Waiting
                }
                CState::Exited {
                    code,
                    started_ms,
                    finished_ms,
                } => {
                    let restart = match (init, policy) {
                        (_, RestartPolicy::Never) => false,
                        (true, _) | (false, RestartPolicy::OnFailure) => code != 0,
                        (false, RestartPolicy::Always) => true,
                    };
                    if init && code == 0 {
                        return Step::Done;
                    }
                    if !restart {
                        return if code == 0 { Step::Done } else { Step::Failed };
                    }
                    let delay = if finished_ms - started_ms >= BACKOFF_RESET_MS {
                        backoff.base_ms
                    } else {
                        backoff.delay(inst.attempt)
                    };
                    if now_ms >= finished_ms + delay
                        && !gated(memory, uid, &c.name, backoff, now_ms)
                    {
                        out.push(start(inst.attempt + 1));
                    }
                    Step::Waiting
                }
            },
        }
    };
    for c in &pod.spec.init_containers {
        match step(c, true, out) {
            Step::Done => continue,
            Step::Waiting | Step::Failed => return,
        }
    }
    for c in &pod.spec.containers {
        step(c, false, out);
    }
}

enum Step {
    Done,
    Waiting,
    Failed,
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
