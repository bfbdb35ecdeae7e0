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
    pub(super) async fn emit(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
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

    pub(super) async fn write_statuses(
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
