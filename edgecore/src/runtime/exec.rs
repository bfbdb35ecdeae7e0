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

use futures::future::join_all;
use proto::{Op, ResourceKey};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::cri::{Cri, CriError, api};
use super::decide::{Action, Actual, CState, Ctr, Failure, Memory, Sandbox, decide};
use super::env::PodFacts;
use super::podconfig::{CONTAINER_NAME, MANAGED, POD_UID};
use super::probe::{Kind, Prober, Verdict};
use super::spec::Pod;
use super::start::{Effect, StartRequest};
use super::status::{Detail, View, event, pod_status};
use super::{RUNTIME_CONDITION, RuntimeConfig, desired_pods, probe, start, volumes};
use crate::meta::{MetaReader, MetaSnapshot};
use crate::node::Condition;
use crate::outbox::{Outbox, Upstream};

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
}

/// A background job that finished.
#[derive(Debug)]
enum Done {
    Stopped {
        uid: String,
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
    cfg: RuntimeConfig,
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
    done_tx: mpsc::Sender<Done>,
}

/// Runs the loop until `shutdown`. Running pods are left running on shutdown (an
/// edgecore restart or upgrade does not restart workloads).
pub async fn run(cfg: RuntimeConfig, deps: Deps, shutdown: CancellationToken) {
    let (done_tx, mut done_rx) = mpsc::channel(256);
    let mut reader = deps.reader.clone();
    let resync = Duration::from_secs(cfg.settings.resync_secs);
    let mut l = Loop {
        cfg,
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
        done_tx,
    };
    tracing::info!(endpoint = %l.cfg.endpoint, node = %l.cfg.node, "pod runtime started");
    loop {
        let busy = l.pass().await;
        if busy {
            // Something was done: look again at once (bounded by the runtime's own pace).
            tokio::task::yield_now().await;
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = reader.changed() => if !changed { return },
            Some(done) = done_rx.recv() => l.on_done(done),
            () = tokio::time::sleep(resync) => {}
        }
        while let Ok(done) = done_rx.try_recv() {
            l.on_done(done);
        }
    }
}

impl Loop {
    fn on_done(&mut self, done: Done) {
        match done {
            Done::Stopped { uid } => {
                self.memory.stopping.remove(&uid);
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
        for c in containers {
            let meta = c.metadata.clone().unwrap_or_default();
            let uid = c.labels.get(POD_UID).cloned().unwrap_or_default();
            let name = c.labels.get(CONTAINER_NAME).cloned().unwrap_or(meta.name);
            let running = c.state == api::ContainerState::ContainerRunning as i32;
            let exited = c.state == api::ContainerState::ContainerExited as i32
                || c.state == api::ContainerState::ContainerUnknown as i32;
            let want = (exited && !self.final_ids.contains(&c.id))
                || (running && !self.details.contains_key(&c.id));
            if want && let Ok(st) = cri.container_status(&c.id).await {
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
        let busy = !actions.is_empty();
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
                        )
                        .await;
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
        // Pod IPs of the sandboxes containers start in.
        let mut facts: BTreeMap<String, PodFacts> = BTreeMap::new();
        for uid in groups.keys() {
            let Some(pod) = pods.get(uid.as_str()) else {
                continue;
            };
            let sb = actual
                .sandboxes
                .iter()
                .filter(|s| &s.uid == uid && s.ready)
                .max_by_key(|s| s.attempt);
            let pod_ip = match sb {
                Some(sb) => self.pod_ip(pod, sb).await,
                None => String::new(),
            };
            facts.insert(
                uid.clone(),
                PodFacts {
                    pod_ip,
                    host_ip: self.cfg.host_ip.clone(),
                },
            );
        }
        let effects: Vec<Effect> = {
            let (cri, cfg, snap_ref) = (&self.deps.cri, &self.cfg, &*snap);
            let jobs = groups.iter().filter_map(|(uid, acts)| {
                let pod = *pods.get(uid.as_str())?;
                let facts = facts.get(uid).cloned().unwrap_or_default();
                let actual = &actual;
                Some(async move {
                    let mut out = Vec::new();
                    for a in acts {
                        out.extend(match a {
                            Action::RunSandbox { attempt, .. } => {
                                start::sandbox(cri, cfg, pod, *attempt).await
                            }
                            Action::StartContainer {
                                sandbox_id,
                                name,
                                attempt,
                                ..
                            } => {
                                let Some(c) = pod
                                    .spec
                                    .init_containers
                                    .iter()
                                    .chain(&pod.spec.containers)
                                    .find(|c| &c.name == name)
                                else {
                                    continue;
                                };
                                let sandbox_attempt = actual
                                    .sandboxes
                                    .iter()
                                    .find(|s| &s.id == sandbox_id)
                                    .map_or(0, |s| s.attempt);
                                let req = StartRequest {
                                    pod,
                                    container: c,
                                    sandbox_id,
                                    sandbox_attempt,
                                    attempt: *attempt,
                                    facts: facts.clone(),
                                };
                                start::container(cri, cfg, snap_ref, req).await
                            }
                            _ => Vec::new(),
                        });
                    }
                    out
                })
            });
            join_all(jobs).await.into_iter().flatten().collect()
        };
        for e in effects {
            self.fold(e, &pods).await;
        }
        if snap.generation != self.generation {
            self.generation = snap.generation;
            self.refresh_volumes(&desired, &actual, &snap).await;
        }
        self.run_probes(&desired, &actual, now);
        self.write_statuses(&desired, &actual, &snap, now).await;
        busy
    }

    async fn fold(&mut self, e: Effect, pods: &BTreeMap<&str, &Pod>) {
        match e {
            Effect::Fail {
                uid,
                name,
                reason,
                message,
            } => {
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
                uid,
                kind,
                reason,
                message,
            } => {
                if let Some(pod) = pods.get(uid.as_str()) {
                    self.emit(pod, kind, reason, &message).await;
                }
            }
        }
    }

    async fn emit(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        let e = event(pod, &self.cfg.node, kind, reason, message, now_ms());
        let name = e["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Ok(key) = ResourceKey::namespaced(&pod.metadata.namespace, "event", name.clone())
        else {
            return;
        };
        let item = Upstream::event(Op::Create, &key, &e);
        if let Err(e) = self
            .deps
            .outbox
            .put(&format!("event/{}/{name}", pod.metadata.namespace), item)
            .await
        {
            tracing::warn!(error = %e, "cannot queue a pod event");
        }
    }

    async fn kill_pod(&mut self, actual: &Actual, pod: Option<&Pod>, uid: &str, grace: i64) {
        self.memory.stopping.insert(uid.to_owned());
        let running: Vec<Ctr> = actual
            .containers
            .iter()
            .filter(|c| c.uid == uid && c.state == CState::Running)
            .cloned()
            .collect();
        if let Some(pod) = pod {
            for c in &running {
                self.emit(
                    pod,
                    "Normal",
                    "Killing",
                    &format!("Stopping container {}", c.name),
                )
                .await;
            }
        }
        let sandboxes: Vec<String> = actual
            .sandboxes
            .iter()
            .filter(|s| s.uid == uid)
            .map(|s| s.id.clone())
            .collect();
        let rest: Vec<String> = actual
            .containers
            .iter()
            .filter(|c| c.uid == uid)
            .map(|c| c.id.clone())
            .collect();
        let (cri, tx, uid) = (self.deps.cri.clone(), self.done_tx.clone(), uid.to_owned());
        let dir = pod
            .is_none()
            .then(|| volumes::pod_dir(&self.cfg.pods_dir, &uid));
        let grace = Duration::from_secs(grace.unsigned_abs());
        tracing::info!(pod_uid = %uid, containers = running.len(), ?grace, "stopping pod");
        tokio::spawn(async move {
            join_all(running.iter().map(|c| cri.stop_container(&c.id, grace))).await;
            for id in &rest {
                let _ = cri.remove_container(id).await;
            }
            for id in &sandboxes {
                let _ = cri.stop_sandbox(id).await;
                if let Err(e) = cri.remove_sandbox(id).await {
                    tracing::warn!(sandbox = %id, error = %e, "removing a sandbox failed");
                }
            }
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir_all(dir);
            }
            let _ = tx.send(Done::Stopped { uid }).await;
        });
    }

    async fn confirm_deletion(&mut self, uid: &str, namespace: &str, name: &str) {
        let Ok(key) = ResourceKey::namespaced(namespace, "pod", name.to_owned()) else {
            return;
        };
        let body = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid}});
        let item = Upstream::request(Op::Delete, &key, &body);
        match self
            .deps
            .outbox
            .put(&format!("pod-delete/{namespace}/{name}"), item)
            .await
        {
            Ok(()) => {
                tracing::info!(pod = %name, %namespace, "pod stopped; confirming its deletion");
                self.memory.confirmed.insert(uid.to_owned());
                self.sent.remove(uid);
                let _ = std::fs::remove_dir_all(volumes::pod_dir(&self.cfg.pods_dir, uid));
            }
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "cannot queue the deletion confirmation")
            }
        }
    }

    async fn refresh_volumes(&mut self, desired: &[Pod], actual: &Actual, snap: &MetaSnapshot) {
        for pod in desired {
            let Some(sb) = actual
                .sandboxes
                .iter()
                .find(|s| s.uid == pod.metadata.uid && s.ready)
            else {
                continue;
            };
            let facts = PodFacts {
                pod_ip: self.pod_ip(pod, sb).await,
                host_ip: self.cfg.host_ip.clone(),
            };
            let n = volumes::refresh(&self.cfg.pods_dir, pod, snap, &facts);
            if n > 0 {
                tracing::info!(pod = %pod.metadata.name, volumes = n, "updated mounted volumes in place");
            }
        }
    }

    fn run_probes(&mut self, desired: &[Pod], actual: &Actual, now: i64) {
        for pod in desired {
            for c in &pod.spec.containers {
                let Some(inst) = actual
                    .containers
                    .iter()
                    .filter(|x| {
                        x.uid == pod.metadata.uid && x.name == c.name && x.state == CState::Running
                    })
                    .max_by_key(|x| x.attempt)
                else {
                    continue;
                };
                if !self.prober.ready(&inst.id, c) {
                    self.not_ready.insert(inst.id.clone());
                }
                let started = self.details.get(&inst.id).map_or(now, |d| d.started_ms);
                let ip = if pod.spec.host_network {
                    "127.0.0.1".to_owned()
                } else {
                    self.sandbox_ips
                        .get(&inst.sandbox_id)
                        .cloned()
                        .unwrap_or_default()
                };
                for (kind, p) in self.prober.due(&inst.id, c, started, now) {
                    let (cri, tx, id) =
                        (self.deps.cri.clone(), self.done_tx.clone(), inst.id.clone());
                    let (uid, name, ip) = (pod.metadata.uid.clone(), c.name.clone(), ip.clone());
                    tokio::spawn(async move {
                        let ok = probe::check(&cri, &id, &p, &ip).await;
                        let _ = tx
                            .send(Done::Probed {
                                id,
                                uid,
                                name,
                                kind,
                                ok,
                            })
                            .await;
                    });
                }
            }
        }
    }

    async fn write_statuses(
        &mut self,
        desired: &[Pod],
        actual: &Actual,
        snap: &MetaSnapshot,
        now: i64,
    ) {
        for pod in desired {
            let m = &pod.metadata;
            if m.deletion_timestamp.is_some() || self.memory.stopping.contains(&m.uid) {
                continue;
            }
            let sandbox = actual
                .sandboxes
                .iter()
                .filter(|s| s.uid == m.uid)
                .max_by_key(|s| (s.attempt, s.created_ms));
            let pod_ip = match sandbox.filter(|s| s.ready) {
                Some(sb) => self.pod_ip(pod, sb).await,
                None => String::new(),
            };
            let cached = super::cached_status(snap, &m.namespace, &m.name);
            let previous = self.sent.get(&m.uid).cloned().or(cached);
            let status = pod_status(&View {
                pod,
                sandbox,
                containers: actual
                    .containers
                    .iter()
                    .filter(|c| c.uid == m.uid && sandbox.is_some_and(|s| s.id == c.sandbox_id))
                    .collect(),
                details: &self.details,
                failures: &self.memory.failures,
                not_ready: &self.not_ready,
                pod_ip,
                host_ip: self.cfg.host_ip.clone(),
                previous: previous.as_ref(),
                backoff: self.cfg.settings.backoff(),
                now_ms: now,
            });
            if previous.as_ref() == Some(&status) {
                continue;
            }
            let Ok(key) = ResourceKey::namespaced(&m.namespace, "pod", m.name.clone()) else {
                continue;
            };
            let item = Upstream::request(Op::PatchStatus, &key, &json!({ "status": status }))
                .with_content_type(proto::frame::MERGE_PATCH);
            match self
                .deps
                .outbox
                .put(&format!("pod-status/{}/{}", m.namespace, m.name), item)
                .await
            {
                Ok(()) => {
                    self.sent.insert(m.uid.clone(), status);
                }
                Err(e) => tracing::warn!(pod = %m.name, error = %e, "cannot queue the pod status"),
            }
        }
        let live: BTreeSet<&str> = desired.iter().map(|p| p.metadata.uid.as_str()).collect();
        self.sent.retain(|uid, _| live.contains(uid.as_str()));
        self.memory
            .failures
            .retain(|(uid, _), _| live.contains(uid.as_str()));
        self.memory
            .confirmed
            .retain(|uid| live.contains(uid.as_str()));
    }
}
