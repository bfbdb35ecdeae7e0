//! The Kubernetes Event an edge reports when the cloud refused one of its
//! upstream writes for good (404, 403, 422...), so the loss is visible with
//! `kubectl get events` / `kubectl describe node`, not only as a metric.
//!
//! The Event is about the node itself (always the node's to write, whatever
//! the refused write was about) and is never raised for a refused Event, so a
//! refusal cannot feed itself.

use chrono::{DateTime, SecondsFormat, Utc};
use proto::{Op, ResourceKey};
use serde_json::json;

use super::{UpKind, Upstream};

/// `reason` of the Event.
pub const REASON: &str = "UpstreamWriteDropped";

/// A write the cloud refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The outbox key.
    pub key: String,
    /// The write, when it was still queued (`None` if its ACK removed it first).
    pub item: Option<Upstream>,
    /// HTTP-style code.
    pub code: u32,
    /// The API's reason.
    pub reason: String,
    /// The API's message.
    pub message: String,
}

/// The outbox key and entry of the Event reporting `dropped`, or `None` when
/// the refused write was itself an Event. Drops about the same resource
/// coalesce into one queued Event (the latest).
pub fn event_for(node: &str, dropped: &Dropped, now: DateTime<Utc>) -> Option<(String, Upstream)> {
    if dropped
        .item
        .as_ref()
        .is_some_and(|i| i.kind == UpKind::Event)
    {
        return None;
    }
    let what = match &dropped.item {
        Some(i) => format!("{} {}", i.op, i.resource),
        None => format!("write {}", dropped.key),
    };
    let name = format!(
        "{node}.{:x}",
        now.timestamp_nanos_opt().unwrap_or_default().max(0)
    );
    let key = ResourceKey::namespaced("default", "event", name.clone()).ok()?;
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut message = format!(
        "the cloud refused {what} for good ({} {}): {}; edgecore dropped it",
        dropped.code, dropped.reason, dropped.message
    );
    if message.len() > 1000 {
        let mut end = 1000;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
        "reason": REASON,
        "message": message,
        "type": "Warning",
        "source": {"component": "edgecore", "host": node},
        "reportingComponent": "edgecore",
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    });
    let resource = dropped
        .item
        .as_ref()
        .map_or(dropped.key.as_str(), |i| i.resource.as_str());
    Some((
        format!("event/dropped/{resource}"),
        Upstream::event(Op::Create, &key, &body),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dropped(item: Option<Upstream>) -> Dropped {
        Dropped {
            key: "pod-status/default/a".into(),
            item,
            code: 404,
            reason: "NotFound".into(),
            message: "pods \"a\" not found".into(),
        }
    }

    #[test]
    fn a_dropped_request_becomes_a_warning_about_the_node() {
        let key = ResourceKey::namespaced("default", "pod", "a").unwrap();
        let item = Upstream::request(Op::PatchStatus, &key, &json!({"status": {}}));
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let (okey, ev) = event_for("edge-1", &dropped(Some(item)), now).unwrap();
        assert_eq!(okey, "event/dropped/default/pod/a");
        assert_eq!(ev.kind, UpKind::Event);
        assert_eq!(ev.op, "create");
        let body: serde_json::Value = serde_json::from_str(&ev.body).unwrap();
        assert_eq!(body["involvedObject"]["kind"], "Node");
        assert_eq!(body["involvedObject"]["name"], "edge-1");
        assert_eq!(body["reason"], REASON);
        assert_eq!(body["type"], "Warning");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.contains("patch_status default/pod/a") && msg.contains("404"),
            "{msg}"
        );
        // The Event's key names its own namespace and name (the cloud checks).
        let name = body["metadata"]["name"].as_str().unwrap();
        assert_eq!(ev.resource, format!("default/event/{name}"));
        assert!(name.starts_with("edge-1."));
        let f = ev.to_frame(1);
        assert_eq!(proto::validate(&f).unwrap(), proto::Kind::Event);
    }

    #[test]
    fn a_dropped_event_raises_nothing_and_an_acked_one_still_reports() {
        let key = ResourceKey::namespaced("default", "event", "x").unwrap();
        let ev = Upstream::event(Op::Create, &key, &json!({}));
        assert!(event_for("n", &dropped(Some(ev)), Utc::now()).is_none());
        let (okey, _) = event_for("n", &dropped(None), Utc::now()).unwrap();
        assert_eq!(okey, "event/dropped/pod-status/default/a");
    }
}
