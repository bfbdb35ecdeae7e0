//! Background jobs of the loop: graceful pod stops, probes, and in-place volume refreshes.

use std::time::Duration;

use futures::future::join_all;

use super::super::env::{NodeSources, PodFacts};
use super::super::spec::Pod;
use super::super::{probe, volumes};
use super::{Actual, CState, Ctr, Done, Loop, MetaSnapshot};

impl Loop {
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

    pub(super) async fn refresh_volumes(
        &mut self,
        desired: &[Pod],
        actual: &Actual,
        snap: &MetaSnapshot,
    ) {
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
