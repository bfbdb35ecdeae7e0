#![allow(clippy::unwrap_used)]

use proto::{Op, ResourceKey, Response};
use tokio::time::Instant;

use super::*;
use crate::store::StoreConfig;
use crate::telemetry::Metrics;

fn status(n: u32) -> Upstream {
    let key = ResourceKey::parse("null/node/edge-1").unwrap();
    Upstream::request(
        Op::PatchStatus,
        &key,
        &serde_json::json!({"status": {"n": n}}),
    )
}

fn open(dir: &std::path::Path) -> (Store, Outbox) {
    let store = Store::open(dir, &StoreConfig::default()).unwrap();
    let outbox = Outbox::open(store.clone(), Metrics::new()).unwrap();
    (store, outbox)
}

#[tokio::test]
async fn entries_survive_restart_and_leave_only_on_ack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    {
        let (_store, outbox) = open(&dir);
        outbox.put("node-status", status(1)).await.unwrap();
        outbox.put("node-status", status(2)).await.unwrap();
        outbox.put("lease", status(3)).await.unwrap();
        assert_eq!(outbox.depth(), 2);
        // taken but never acked
        let t = outbox.next_ready(Instant::now()).unwrap();
        assert_eq!(t.key, "node-status");
    }
    let (store, outbox) = open(&dir);
    assert_eq!(outbox.depth(), 2);
    let t = outbox.next_ready(Instant::now()).unwrap();
    assert_eq!(t.key, "node-status");
    assert!(
        t.item.body.contains("\"n\":2"),
        "latest wins: {}",
        t.item.body
    );
    outbox.on_acked(&t.key, t.seq).unwrap();
    assert_eq!(outbox.depth(), 1);
    store.flush().unwrap();
    drop(outbox);
    drop(store);
    let (_store, outbox) = open(&dir);
    assert_eq!(outbox.depth(), 1);
    assert_eq!(outbox.next_ready(Instant::now()).unwrap().key, "lease");
}

#[tokio::test]
async fn permanent_error_drops_and_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("s"), &StoreConfig::default()).unwrap();
    let metrics = Metrics::new();
    let outbox = Outbox::open(store, metrics.clone()).unwrap();
    outbox.put("pod/a", status(1)).await.unwrap();
    let t = outbox.next_ready(Instant::now()).unwrap();
    let resp = Response {
        code: 404,
        reason: "NotFound".into(),
        ..Response::default()
    };
    outbox
        .on_response(&t.key, t.seq, &resp, Instant::now())
        .unwrap();
    assert_eq!(outbox.depth(), 0);
    let text = metrics.encode();
    assert!(
        text.contains("edgecore_outbox_dropped_total{code=\"404\"} 1"),
        "{text}"
    );
}

#[test]
fn frames_carry_the_write() {
    let f = status(1)
        .with_content_type(proto::frame::MERGE_PATCH)
        .to_frame(5);
    assert_eq!(proto::validate(&f).unwrap(), proto::Kind::Request);
    assert_eq!(f.op().unwrap(), Op::PatchStatus);
    assert_eq!(f.id, 5);
}
