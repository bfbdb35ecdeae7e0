//! The pod sync loop (IO): each pass lists the runtime's kedge-labelled sandboxes and
//! containers, asks [`decide`] what to do, does it (one task per pod, concurrently; stops
//! with a grace period run as their own tasks), refreshes content volumes, runs due probes
//! and writes PodStatus / Events / deletion confirmations into the outbox.
//!
//! A pass runs when the cache changes, when a stop or probe finishes, and every
//! `resync_secs`. When the runtime is unreachable the loop sets the runtime node condition,
//! logs once, and retries; pods come up as soon as the runtime answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::cri::{Cri, CriError, api};
use super::decide::{Action, Actual, CState, Ctr, Failure, Memory, Sandbox, decide};
use super::podconfig::{CONTAINER_NAME, MANAGED, POD_UID};
use super::probe::{Kind, Prober, Verdict};
use super::spec::Pod;
use super::start::Effect;
use super::status::Detail;
use super::{RUNTIME_CONDITION, RuntimeConfig, desired_pods};
use crate::meta::{MetaReader, MetaSnapshot};
use crate::node::Condition;
use crate::outbox::Outbox;

mod jobs;
mod report;

/// What the loop needs from edgecore.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The CRI client.
    pub cri: Cri,
    /// The cache.
    pub reader: MetaReader,
    /// Upstream writes.
    pub outbox: Outbox,
    /// The node's extra conditions (the runtime condition is upserted there).
    pub conditions: Arc<watch::Sender<Vec<Condition>>>,
    /// Metrics.
    pub metrics: crate::telemetry::Metrics,
    /// Projected ServiceAccount tokens of the node's pods.
    pub tokens: crate::satoken::SaTokens,
}

/// A background job that finished.
#[derive(Debug)]
enum Done {
    Stopped {
        uid: String,
    },
    /// A pod's start step finished with these effects.
    Started {
        pod: Arc<Pod>,
        effects: Vec<Effect>,
    },
    Killed,
    Probed {
        id: String,
        uid: String,
        name: String,
        kind: Kind,
        ok: bool,
    },
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Loop {
    cfg: Arc<RuntimeConfig>,
    deps: Deps,
    memory: Memory,
    details: BTreeMap<String, Detail>,
    final_ids: BTreeSet<String>,
    sandbox_ips: BTreeMap<String, String>,
    sent: BTreeMap<String, Value>,
    prober: Prober,
    not_ready: BTreeSet<String>,
    healthy: Option<bool>,
    generation: u64,
    /// [`crate::satoken::SaTokens::generation`] at the last volume refresh.
    tokens_generation: u64,
    /// Pods whose volume refresh was put off because their start step was in flight
    /// (the step writes the same volumes); refreshed once it reported.
    stale_volumes: BTreeSet<String>,
    done_tx: mpsc::Sender<Done>,
    /// Containers seen exited for the first time this pass: `(uid, name, exit code)`.
    exited: Vec<(String, String, i32)>,
    /// Events and PodStatuses for the outbox, put with one flush after each pass.
    upstream: Vec<(String, crate::outbox::Upstream)>,
    /// The statuses among `upstream`, by pod UID: `sent` once they are durable.
    upstream_statuses: Vec<(String, Value)>,
}

/// Runs the loop until `shutdown`. Running pods are left running on shutdown (an
/// edgecore restart or upgrade does not restart workloads).
pub async fn run(cfg: RuntimeConfig, deps: Deps, shutdown: CancellationToken) {
    let (done_tx, mut done_rx) = mpsc::channel(256);
    let mut reader = deps.reader.clone();
    let tokens = deps.tokens.clone();
    let resync = Duration::from_secs(cfg.settings.resync_secs);
    let mut l = Loop {
        cfg: Arc::new(cfg),
        deps,
        memory: Memory::default(),
        details: BTreeMap::new(),
        final_ids: BTreeSet::new(),
        sandbox_ips: BTreeMap::new(),
        sent: BTreeMap::new(),
        prober: Prober::default(),
        not_ready: BTreeSet::new(),
        healthy: None,
        generation: u64::MAX,
        tokens_generation: 0,
        stale_volumes: BTreeSet::new(),
        done_tx,
        exited: Vec::new(),
        upstream: Vec::new(),
        upstream_statuses: Vec::new(),
    };
    tracing::info!(endpoint = %l.cfg.endpoint, node = %l.cfg.node, "pod runtime started");
    let mut streak = 0u32;
    loop {
        // Finished jobs are folded in before every pass, busy or not, so a stream of
        // actions for one pod never starves another pod's stop or probe results.
        while let Ok(done) = done_rx.try_recv() {
            l.on_done(done).await;
        }
        let busy = l.pass().await;
        l.flush_upstream().await;
        streak = if busy { streak + 1 } else { 0 };
        if busy {
            // Something was done: look again at once — but an action the runtime keeps
            // refusing (a sandbox that cannot be removed...) must not spin the loop.
            if streak > 20 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            } else {
                tokio::task::yield_now().await;
            }
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = reader.changed() => if !changed { return },
            () = tokens.changed() => {}
            Some(done) = done_rx.recv() => l.on_done(done).await,
            () = tokio::time::sleep(resync) => {}
        }
    }
}

impl Loop {
    async fn on_done(&mut self, done: Done) {
        match done {
            Done::Stopped { uid } => {
                self.memory.stopping.remove(&uid);
            }
            Done::Started { pod, effects } => {
                self.memory.starting.remove(&pod.metadata.uid);
                for e in effects {
                    self.fold(e, &pod);
                }
            }
            Done::Killed => {}
            Done::Probed {
                id,
                uid,
                name,
                kind,
                ok,
            } => {
                let snap = self.deps.reader.snapshot();
                let Some(pod) = desired_pods(&snap, &self.cfg.node)
                    .into_iter()
                    .find(|p| p.metadata.uid == uid)
                else {
                    return;
                };
                let Some(c) = pod.spec.containers.iter().find(|c| c.name == name) else {
                    return;
                };
                match self.prober.record(&id, c, kind, ok, now_ms()) {
                    Verdict::Kill => {
                        tracing::info!(pod = %pod.metadata.name, container = %name, ?kind, "probe failed; restarting the container");
                        self.memory.unhealthy.insert(id.clone());
                    }
                    Verdict::ReadinessChanged | Verdict::None => {}
                }
                if self.prober.ready(&id, c) {
                    self.not_ready.remove(&id);
                } else {
                    self.not_ready.insert(id);
                }
            }
        }
    }

    fn set_health(&mut self, result: Result<String, &CriError>) {
        let healthy = result.is_ok();
        if self.healthy == Some(healthy) {
            return;
        }
        self.healthy = Some(healthy);
        let (status, reason, message) = match &result {
            Ok(version) => {
                tracing::info!(endpoint = %self.cfg.endpoint, %version, "container runtime reachable");
                (
                    "False",
                    "RuntimeReady",
                    format!("{} answers: {version}", self.cfg.endpoint),
                )
            }
            Err(e) => {
                tracing::error!(endpoint = %self.cfg.endpoint, error = %e, "cannot reach the container runtime; pods start once it answers (devices are not affected)");
                (
                    "True",
                    "RuntimeUnreachable",
                    format!("{}: {e}", self.cfg.endpoint),
                )
            }
        };
        let cond = Condition {
            kind: RUNTIME_CONDITION.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            since: chrono::Utc::now(),
        };
        self.deps.conditions.send_modify(|cs| {
            cs.retain(|c| c.kind != RUNTIME_CONDITION);
            cs.push(cond);
        });
    }

    /// Lists the runtime; returns `None` when it is unreachable.
    async fn list(&mut self) -> Result<Actual, CriError> {
        let cri = &self.deps.cri;
        let sandboxes = cri.list_sandboxes(&[MANAGED]).await?;
        let containers = cri.list_containers(&[MANAGED]).await?;
        let mut actual = Actual::default();
        for s in sandboxes {
            let meta = s.metadata.unwrap_or_default();
            actual.sandboxes.push(Sandbox {
                id: s.id,
                uid: meta.uid,
                attempt: meta.attempt,
                ready: s.state == api::PodSandboxState::SandboxReady as i32,
                created_ms: s.created_at / 1_000_000,
            });
        }
        let exited_state = |state: i32| {
            state == api::ContainerState::ContainerExited as i32
                || state == api::ContainerState::ContainerUnknown as i32
        };
        // The details of new running and newly exited containers, asked for all at once: a
        // burst of pod starts shows many at one pass.
        let wanted = containers.iter().filter(|c| {
            (exited_state(c.state) && !self.final_ids.contains(&c.id))
                || (c.state == api::ContainerState::ContainerRunning as i32
                    && !self.details.contains_key(&c.id))
        });
        let mut statuses: BTreeMap<String, api::ContainerStatus> = futures::future::join_all(
            wanted.map(|c| async move { (c.id.clone(), cri.container_status(&c.id).await) }),
        )
        .await
        .into_iter()
        .filter_map(|(id, st)| Some((id, st.ok()?)))
        .collect();
        for c in containers {
            let meta = c.metadata.clone().unwrap_or_default();
            let uid = c.labels.get(POD_UID).cloned().unwrap_or_default();
            let name = c.labels.get(CONTAINER_NAME).cloned().unwrap_or(meta.name);
            let running = c.state == api::ContainerState::ContainerRunning as i32;
            let exited = exited_state(c.state);
            if let Some(st) = statuses.remove(&c.id) {
                self.details.insert(
                    c.id.clone(),
                    Detail {
                        image: st.image.map(|i| i.image).unwrap_or_default(),
                        image_ref: st.image_ref,
                        started_ms: st.started_at / 1_000_000,
                        finished_ms: st.finished_at / 1_000_000,
                        exit_code: st.exit_code,
                        reason: st.reason,
                        message: st.message,
                    },
                );
                if exited {
                    self.final_ids.insert(c.id.clone());
                    let name = c.labels.get(CONTAINER_NAME).cloned().unwrap_or_default();
                    self.exited.push((uid.clone(), name, st.exit_code));
                }
            }
            let d = self.details.get(&c.id).cloned().unwrap_or_default();
            let state = if running {
                CState::Running
            } else if exited {
                CState::Exited {
                    code: d.exit_code,
                    started_ms: d.started_ms,
                    finished_ms: d.finished_ms.max(d.started_ms),
                }
            } else {
                CState::Created
            };
            actual.containers.push(Ctr {
                id: c.id,
                sandbox_id: c.pod_sandbox_id,
                uid,
                name,
                attempt: meta.attempt,
                state,
            });
        }
        let live: BTreeSet<&str> = actual.containers.iter().map(|c| c.id.as_str()).collect();
        self.details.retain(|id, _| live.contains(id.as_str()));
        self.final_ids.retain(|id| live.contains(id.as_str()));
        self.not_ready.retain(|id| live.contains(id.as_str()));
        self.memory
            .unhealthy
            .retain(|id| live.contains(id.as_str()));
        self.prober.retain(|id| live.contains(id));
        let sandbox_ids: BTreeSet<&str> = actual.sandboxes.iter().map(|s| s.id.as_str()).collect();
        self.sandbox_ips
            .retain(|id, _| sandbox_ids.contains(id.as_str()));
        Ok(actual)
    }

    async fn pod_ip(&mut self, pod: &Pod, sandbox: &Sandbox) -> String {
        if pod.spec.host_network {
            return self.cfg.host_ip.clone();
        }
        if let Some(ip) = self.sandbox_ips.get(&sandbox.id) {
            return ip.clone();
        }
        let ip = match self.deps.cri.sandbox_status(&sandbox.id).await {
            Ok(st) => st.network.map(|n| n.ip).unwrap_or_default(),
            Err(_) => String::new(),
        };
        if !ip.is_empty() {
            self.sandbox_ips.insert(sandbox.id.clone(), ip.clone());
        }
        ip
    }

    /// One pass; `true` when it did something (pass again at once).
    async fn pass(&mut self) -> bool {
        let began = std::time::Instant::now();
        let snap = self.deps.reader.snapshot();
        let desired = desired_pods(&snap, &self.cfg.node);
        let actual = match self.list().await {
            Ok(a) => {
                if self.healthy != Some(true) {
                    let version = self.deps.cri.version().await.map(|v| {
                        format!(
                            "{} {} (CRI {})",
                            v.runtime_name, v.runtime_version, v.runtime_api_version
                        )
                    });
                    self.set_health(Ok(version.unwrap_or_default()));
                }
                a
            }
            Err(e) => {
                self.set_health(Err(&e));
                return false;
            }
        };
        let now = now_ms();
        let actions = decide(
            &desired,
            &actual,
            &self.memory,
            self.cfg.settings.backoff(),
            now,
        );
        let action_count = actions.len();
        // Start steps report through `Done::Started`, which wakes the loop; anything else
        // done inline may change what the runtime shows, so look again at once.
        let busy = actions
            .iter()
            .any(|a| !matches!(a, Action::RunSandbox { .. } | Action::StartContainer { .. }));
        self.deps.metrics.pods.set(desired.len() as i64);
        for a in &actions {
            let name = match a {
                Action::RunSandbox { .. } => "run_sandbox",
                Action::StartContainer { .. } => "start_container",
                Action::KillContainer { .. } => "kill_container",
                Action::RemoveContainer { .. } => "remove_container",
                Action::RemoveSandbox { .. } => "remove_sandbox",
                Action::KillPod { .. } => "kill_pod",
                Action::ConfirmDeletion { .. } => "confirm_deletion",
            };
            self.deps
                .metrics
                .runtime_actions
                .get_or_create(&vec![("action".to_owned(), name.to_owned())])
                .inc();
        }
        let listed_ms = began.elapsed().as_millis();
        let pods: BTreeMap<&str, &Pod> = desired
            .iter()
            .map(|p| (p.metadata.uid.as_str(), p))
            .collect();
        let mut groups: BTreeMap<String, Vec<Action>> = BTreeMap::new();
        for a in actions {
            match a {
                Action::KillPod { uid, grace } => {
                    self.kill_pod(&actual, pods.get(uid.as_str()).copied(), &uid, grace)
                        .await
                }
                Action::KillContainer {
                    uid,
                    id,
                    name,
                    grace,
                } => {
                    self.memory.unhealthy.remove(&id);
                    if let Some(pod) = pods.get(uid.as_str()) {
                        self.emit(
                            pod,
                            "Normal",
                            "Killing",
                            &format!("Container {name} failed its probe, will be restarted"),
                        );
                    }
                    let (cri, tx) = (self.deps.cri.clone(), self.done_tx.clone());
                    let grace = Duration::from_secs(grace.unsigned_abs());
                    tokio::spawn(async move {
                        if let Err(e) = cri.stop_container(&id, grace).await {
                            tracing::warn!(container = %id, error = %e, "stopping an unhealthy container failed");
                        }
                        let _ = tx.send(Done::Killed).await;
                    });
                }
                Action::ConfirmDeletion {
                    uid,
                    namespace,
                    name,
                } => {
                    self.confirm_deletion(&uid, &namespace, &name).await;
                }
                Action::RemoveContainer { ref id } => {
                    if let Err(e) = self.deps.cri.remove_container(id).await {
                        tracing::warn!(container = %id, error = %e, "removing a container failed");
                    }
                }
                Action::RemoveSandbox { ref id } => {
                    let _ = self.deps.cri.stop_sandbox(id).await;
                    if let Err(e) = self.deps.cri.remove_sandbox(id).await {
                        tracing::warn!(sandbox = %id, error = %e, "removing an old sandbox failed");
                    }
                }
                Action::RunSandbox { ref uid, .. } | Action::StartContainer { ref uid, .. } => {
                    groups.entry(uid.clone()).or_default().push(a);
                }
            }
        }
        for (uid, name, code) in std::mem::take(&mut self.exited) {
            let Some(pod) = pods.get(uid.as_str()) else {
                continue;
            };
            let init = pod.spec.init_containers.iter().any(|c| c.name == name);
            let restarts = match pod.spec.restart_policy() {
                super::spec::RestartPolicy::Always if init => code != 0,
                super::spec::RestartPolicy::Always => true,
                super::spec::RestartPolicy::OnFailure => code != 0,
                super::spec::RestartPolicy::Never => false,
            };
            if restarts && pod.metadata.deletion_timestamp.is_none() {
                let msg = format!("Back-off restarting failed container {name} (exit code {code})");
                self.emit(pod, "Warning", "BackOff", &msg);
            }
        }
        // Each pod's start step runs as its own task; the pod is decided again as soon as
        // it reports (`Done::Started`), whatever the other pods' steps are doing.
        for (uid, acts) in groups {
            let Some(pod) = pods.get(uid.as_str()).copied() else {
                continue;
            };
            self.spawn_start(pod, acts, &actual, &snap).await;
        }
        let tokens = self.deps.tokens.generation();
        let all = snap.generation != self.generation || tokens != self.tokens_generation;
        if all {
            self.generation = snap.generation;
            self.tokens_generation = tokens;
        }
        if all || !self.stale_volumes.is_empty() {
            self.refresh_volumes(&desired, &actual, &snap, all).await;
        }
        self.run_probes(&desired, &actual, now);
        let statuses = self.write_statuses(&desired, &actual, &snap, now).await;
        tracing::debug!(
            generation = snap.generation,
            pods = desired.len(),
            sandboxes = actual.sandboxes.len(),
            containers = actual.containers.len(),
            actions = action_count,
            starting = self.memory.starting.len(),
            statuses,
            listed_ms,
            total_ms = began.elapsed().as_millis(),
            "runtime pass"
        );
        busy
    }

    fn fold(&mut self, e: Effect, pod: &Pod) {
        match e {
            Effect::Fail {
                uid,
                name,
                reason,
                message,
            } => {
                self.deps
                    .metrics
                    .runtime_actions
                    .get_or_create(&vec![
                        ("action".to_owned(), "failed".to_owned()),
                        ("reason".to_owned(), reason.clone()),
                    ])
                    .inc();
                let key = (uid, name);
                let count = self.memory.failures.get(&key).map_or(0, |f| f.count) + 1;
                self.memory.failures.insert(
                    key,
                    Failure {
                        reason,
                        message,
                        count,
                        at_ms: now_ms(),
                    },
                );
            }
            Effect::Clear { uid, name } => {
                self.memory.failures.remove(&(uid, name));
            }
            Effect::Event {
                kind,
                reason,
                message,
                ..
            } => self.emit(pod, kind, reason, &message),
        }
    }
}
