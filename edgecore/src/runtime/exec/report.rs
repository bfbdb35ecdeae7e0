//! What the loop writes upstream: Events, PodStatus (only when it changed) and deletion
//! confirmations, all through the outbox so they survive an offline edge and a restart.

use std::collections::BTreeSet;

use proto::{Op, ResourceKey};
use serde_json::json;

use super::super::spec::Pod;
use super::super::status::{View, event, pod_status};
use super::super::volumes;
use super::{Actual, Loop, MetaSnapshot, now_ms};
use crate::outbox::Upstream;

impl Loop {
    /// Queues an Event about `pod` for the next [`Loop::flush_upstream`].
    pub(super) fn emit(&mut self, pod: &Pod, kind: &str, reason: &str, message: &str) {
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
        self.upstream
            .push((format!("event/{}/{name}", pod.metadata.namespace), item));
    }

    /// Puts the Events and PodStatuses gathered since the last call into the outbox, with
    /// one flush: an fsync per write, one after the other in this loop, was most of a
    /// 20-pod start burst's time at the edge.
    pub(super) async fn flush_upstream(&mut self) {
        if self.upstream.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.upstream);
        let statuses = std::mem::take(&mut self.upstream_statuses);
        let (writes, began) = (items.len(), std::time::Instant::now());
        match self.deps.outbox.put_many(items).await {
            Ok(()) => {
                tracing::debug!(
                    writes,
                    ms = began.elapsed().as_millis(),
                    "pod statuses and events queued upstream"
                );
                // Only a status that is durable counts as sent; the others are built and
                // queued again by the next pass.
                self.sent.extend(statuses);
            }
            Err(e) => {
                tracing::warn!(writes, error = %e, "cannot queue pod statuses and events upstream")
            }
        }
    }

    pub(super) async fn confirm_deletion(&mut self, uid: &str, namespace: &str, name: &str) {
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

    /// Gathers the PodStatus of every pod whose status changed for
    /// [`Loop::flush_upstream`]; returns how many.
    pub(super) async fn write_statuses(
        &mut self,
        desired: &[Pod],
        actual: &Actual,
        snap: &MetaSnapshot,
        now: i64,
    ) -> usize {
        let mut queued = 0;
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
            let cached = super::super::cached_status(snap, &m.namespace, &m.name);
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
            tracing::debug!(pod = %m.name, phase = %status["phase"].as_str().unwrap_or_default(), "pod status changed");
            self.upstream
                .push((format!("pod-status/{}/{}", m.namespace, m.name), item));
            self.upstream_statuses.push((m.uid.clone(), status));
            queued += 1;
        }
        let live: BTreeSet<&str> = desired.iter().map(|p| p.metadata.uid.as_str()).collect();
        self.sent.retain(|uid, _| live.contains(uid.as_str()));
        self.memory
            .failures
            .retain(|(uid, _), _| live.contains(uid.as_str()));
        self.memory
            .confirmed
            .retain(|uid| live.contains(uid.as_str()));
        queued
    }
}
