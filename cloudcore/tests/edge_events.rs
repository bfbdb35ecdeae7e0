//! Events written by an edge, end to end through the link: CloudHub in process against the
//! embedded API server, a minimal edge (proto + tokio-tungstenite, certificate from
//! `/join`) that sends EVENT frames. An Event about its own pod is stored and `kubectl
//! describe pod` shows it; an Event about another node's pod is refused (ERROR 403, a
//! refusal metric) and never reaches the API.

#![allow(clippy::unwrap_used)]

mod common;

use anyhow::Context;
use common::{Cloud, Edge, pod, within};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use proto::{ErrorInfo, Frame, Kind, Op, ResourceKey};
use serde_json::json;
use std::time::Duration;

/// Sends an EVENT; returns `Ok(None)` once the cloud acked it, `Ok(Some(error))` when it
/// answered with an ERROR instead.
async fn send_event(
    edge: &mut Edge,
    id: u64,
    key: &str,
    body: &serde_json::Value,
) -> anyhow::Result<Option<ErrorInfo>> {
    let key = ResourceKey::parse(key)?;
    edge.send(&Frame::event(
        id,
        Op::Create,
        &key,
        body.to_string().into_bytes(),
    ))
    .await?;
    let mut error = None;
    loop {
        let f = edge.recv_acking().await?;
        match f.checked_kind()? {
            Kind::Error if f.ack_of == Some(id) => error = Some(f.control::<ErrorInfo>()?),
            Kind::Ack if f.control::<proto::Ack>()?.up_to >= id => return Ok(error),
            _ => {}
        }
    }
}

/// An Event as the edge runtime writes one (kubelet's shape).
fn event(name: &str, pod: &Pod, node: &str, reason: &str, message: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "default",
            "name": pod.metadata.name, "uid": pod.metadata.uid, "fieldPath": "spec.containers{c}"},
        "reason": reason, "message": message, "type": "Normal", "count": 1,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet", "reportingInstance": node,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_events_reach_describe_and_only_for_own_pods() -> anyhow::Result<()> {
    let cloud = Cloud::start().await?;
    let _stop = cloud.shutdown.clone().drop_guard();
    let mut a = cloud.edge("edge-a").await?;
    let _b = cloud.edge("edge-b").await?;
    let pods: Api<Pod> = Api::namespaced(cloud.client.clone(), "default");
    let pa = pods
        .create(&PostParams::default(), &pod("pa", "edge-a"))
        .await?;
    let pb = pods
        .create(&PostParams::default(), &pod("pb", "edge-b"))
        .await?;
    within("the cache knows both pods", async {
        while cloud.cache.pod_node("default", "pa").is_none()
            || cloud.cache.pod_node("default", "pb").is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;

    // Its own pod: stored, and kubectl describe shows it.
    let ok = event(
        "pa.pulled",
        &pa,
        "edge-a",
        "Pulled",
        "Container image \"busybox\" already present on machine",
    );
    assert!(
        send_event(&mut a, 1, "default/event/pa.pulled", &ok)
            .await?
            .is_none()
    );
    let events: Api<Event> = Api::namespaced(cloud.client.clone(), "default");
    let stored = within("the Event in the API", async {
        loop {
            if let Ok(Some(e)) = events.get_opt("pa.pulled").await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    assert_eq!(stored.involved_object.name.as_deref(), Some("pa"));
    let kubeconfig = cloud.kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--request-timeout",
                "20s",
                "describe",
                "pod",
                "pa",
                "-n",
                "default",
            ])
            .env_remove("KUBECONFIG")
            .output()
    })
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events_part = text.split("Events:").nth(1).unwrap_or("");
    assert!(
        events_part.contains("Pulled") && events_part.contains("already present on machine"),
        "kubectl describe pod pa:\n{text}"
    );

    // Another node's pod: refused with 403, counted, never stored.
    let forged = event(
        "pb.killing",
        &pb,
        "edge-b",
        "Killing",
        "Stopping container c",
    );
    let err = send_event(&mut a, 2, "default/event/pb.killing", &forged)
        .await?
        .context("an ERROR for an Event about another node's pod")?;
    assert_eq!(err.code, 403, "{err:?}");
    assert!(events.get_opt("pb.killing").await?.is_none());
    let about_pb = events
        .list(&ListParams::default().fields("involvedObject.name=pb"))
        .await?;
    assert!(about_pb.items.is_empty());
    let metrics = cloud.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l == "cloudcore_hub_refused_total{reason=\"forbidden_create\"} 1"),
        "{metrics}"
    );
    // The session is still up: another event of its own goes through.
    let again = event(
        "pa.started",
        &pa,
        "edge-a",
        "Started",
        "Started container c",
    );
    assert!(
        send_event(&mut a, 3, "default/event/pa.started", &again)
            .await?
            .is_none()
    );
    Ok(())
}
