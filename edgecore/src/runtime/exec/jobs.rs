//! Background jobs of the loop: pod start steps, graceful pod stops, probes, and in-place
//! volume refreshes.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use super::super::env::{NodeSources, PodFacts};
use super::super::spec::Pod;
use super::super::start::{self, Effect, StartRequest};
use super::super::{probe, volumes};
use super::{Action, Actual, CState, Ctr, Done, Loop, MetaSnapshot};

impl Loop {
    /// Runs `acts` (the pod's `RunSandbox`, or its `StartContainer`s) as one task of its
    /// own, in order, marking the pod [`starting`](super::super::decide::Memory::starting)
    /// until the task reports its effects with `Done::Started`.
    pub(super) async fn spawn_start(
        &mut self,
        pod: &Pod,
        acts: Vec<Action>,
        actual: &Actual,
        snap: &Arc<MetaSnapshot>,
    ) {
        let uid = &pod.metadata.uid;
        // The pod IP of the sandbox its containers start in (env, downward API).
        let sandbox = actual
            .sandboxes
            .iter()
            .filter(|s| &s.uid == uid && s.ready)
            .max_by_key(|s| s.attempt);
        let pod_ip = match sandbox {
            Some(sb) => self.pod_ip(pod, sb).await,
            None => String::new(),
        };
        let facts = PodFacts {
            pod_ip,
            host_ip: self.cfg.host_ip.clone(),
        };
        // Sandbox attempt of each StartContainer (CreateContainer wants its config again).
        let steps: Vec<(Action, u32)> = acts
            .into_iter()
            .map(|a| {
                let attempt = match &a {
                    Action::StartContainer { sandbox_id, .. } => actual
                        .sandboxes
                        .iter()
                        .find(|s| &s.id == sandbox_id)
                        .map_or(0, |s| s.attempt),
                    _ => 0,
                };
                (a, attempt)
            })
            .collect();
        // What a step that panicked backs off: its sandbox or its containers.
        let names: Vec<String> = steps
            .iter()
            .map(|(a, _)| match a {
                Action::StartContainer { name, .. } => name.clone(),
                _ => String::new(),
            })
            .collect();
        self.memory.starting.insert(uid.clone());
        let (cri, cfg, tx) = (
            self.deps.cri.clone(),
            Arc::clone(&self.cfg),
            self.done_tx.clone(),
        );
        let pod = Arc::new(pod.clone());
        let (snap, tokens, job_pod) =
            (Arc::clone(snap), self.deps.tokens.clone(), Arc::clone(&pod));
        let job = tokio::spawn(async move {
            let pod = &*job_pod;
            let sources = NodeSources {
                meta: &snap,
                tokens: &tokens,
            };
            let mut effects = Vec::new();
            for (a, sandbox_attempt) in &steps {
                effects.extend(match a {
                    Action::RunSandbox { attempt, .. } => {
                        start::sandbox(&cri, &cfg, pod, *attempt).await
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
                        let req = StartRequest {
                            pod,
                            container: c,
                            sandbox_id,
                            sandbox_attempt: *sandbox_attempt,
                            attempt: *attempt,
                            facts: facts.clone(),
                        };
                        start::container(&cri, &cfg, &sources, req).await
                    }
                    _ => Vec::new(),
                });
            }
            effects
        });
        // The report is sent whatever happened to the step, so the pod is never left
        // `starting` for good: a step that panicked backs off like a failed start.
        tokio::spawn(async move {
            let effects = match job.await {
                Ok(effects) => effects,
                Err(e) => {
                    tracing::error!(pod = %pod.metadata.name, error = %e, "a pod start step failed");
                    names
                        .into_iter()
                        .map(|name| Effect::Fail {
                            uid: pod.metadata.uid.clone(),
                            reason: if name.is_empty() {
                                "CreatePodSandboxError"
                            } else {
                                "RunContainerError"
                            }
                            .to_owned(),
                            name,
                            message: format!("the start step failed: {e}"),
                        })
                        .collect()
                }
            };
            let _ = tx.send(Done::Started { pod, effects }).await;
        });
    }

    pub(super) async fn kill_pod(
        &mut self,
        actual: &Actual,
        pod: Option<&Pod>,
        uid: &str,
        grace: i64,
    ) {
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
                );
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

    /// Refreshes the content volumes of every pod (`all`) or of the pods whose refresh was
    /// put off; a pod whose start step is in flight is put off again.
    pub(super) async fn refresh_volumes(
        &mut self,
        desired: &[Pod],
        actual: &Actual,
        snap: &MetaSnapshot,
        all: bool,
    ) {
        let live: std::collections::BTreeSet<&str> =
            desired.iter().map(|p| p.metadata.uid.as_str()).collect();
        self.stale_volumes.retain(|uid| live.contains(uid.as_str()));
        for pod in desired {
            let uid = &pod.metadata.uid;
            if !all && !self.stale_volumes.contains(uid) {
                continue;
            }
            if self.memory.starting.contains(uid) {
                self.stale_volumes.insert(uid.clone());
                continue;
            }
            self.stale_volumes.remove(uid);
            let Some(sb) = actual.sandboxes.iter().find(|s| &s.uid == uid && s.ready) else {
                continue;
            };
            let facts = PodFacts {
                pod_ip: self.pod_ip(pod, sb).await,
                host_ip: self.cfg.host_ip.clone(),
            };
            let sources = NodeSources {
                meta: snap,
                tokens: &self.deps.tokens,
            };
            let n = volumes::refresh(&self.cfg.pods_dir, pod, &sources, &facts);
            if n > 0 {
                tracing::info!(pod = %pod.metadata.name, volumes = n, "updated mounted volumes in place");
            }
        }
    }

    pub(super) fn run_probes(&mut self, desired: &[Pod], actual: &Actual, now: i64) {
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
}
