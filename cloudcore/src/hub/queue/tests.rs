#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use super::*;
use proto::Op;

fn key(s: &str) -> ResourceKey {
    ResourceKey::parse(s).unwrap()
}

fn upsert(k: &str, uid: &str, rv: &str) -> Change {
    Change::Upsert {
        key: key(k),
        uid: uid.into(),
        rv: rv.into(),
        json: Bytes::from(format!(r#"{{"rv":"{rv}"}}"#)),
    }
}

fn delete(k: &str, uid: &str, rv: &str) -> Change {
    Change::Delete {
        key: key(k),
        uid: uid.into(),
        rv: rv.into(),
    }
}

fn entry(k: &str, uid: &str, rv: &str) -> InventoryEntry {
    InventoryEntry {
        key: k.into(),
        uid: uid.into(),
        resource_version: rv.into(),
    }
}

fn queue(capacity: usize) -> Queue {
    Queue::new(
        WindowConfig {
            capacity,
            initial_timeout: Duration::from_secs(3),
            max_timeout: Duration::from_secs(30),
        },
        Limits::default(),
    )
}

/// A sent frame summarised as `(id, kind, op, key, uid, rv)`.
type Summary = (u64, Kind, String, String, String, String);

fn summary(sent: &Sent) -> Summary {
    let f = proto::decode(&sent.wire, Limits::default()).unwrap();
    let route = f.route.clone().unwrap_or_default();
    (
        f.id,
        f.checked_kind().unwrap(),
        route.op,
        route.resource,
        f.uid,
        f.resource_version,
    )
}

fn drain(q: &mut Queue, now: Instant) -> Vec<Summary> {
    let mut out = Vec::new();
    while let Some(p) = q.pop(now) {
        match p {
            Popped::Frame(s) => out.push(summary(&s)),
            Popped::Skipped { key, .. } => panic!("unexpected skip of {key}"),
        }
    }
    out
}

fn s(id: u64, kind: Kind, op: &str, res: &str, uid: &str, rv: &str) -> Summary {
    (id, kind, op.into(), res.into(), uid.into(), rv.into())
}

#[test]
fn newer_version_replaces_queued_one_in_place() {
    let mut q = queue(16);
    let now = Instant::now();
    assert!(q.offer(upsert("default/pod/a", "u1", "1")));
    assert!(q.offer(upsert("default/pod/b", "u2", "2")));
    assert!(q.offer(upsert("default/pod/a", "u1", "3")));
    assert_eq!(q.depth(), 2);
    assert_eq!(
        drain(&mut q, now),
        vec![
            s(1, Kind::Object, "upsert", "default/pod/a", "u1", "3"),
            s(2, Kind::Object, "upsert", "default/pod/b", "u2", "2"),
        ]
    );
}

#[test]
fn delete_after_unsent_upsert_cancels() {
    let now = Instant::now();
    // Never held by the edge: both vanish.
    let mut q = queue(16);
    q.offer(upsert("default/pod/a", "u1", "1"));
    q.offer(delete("default/pod/a", "u1", "2"));
    assert_eq!(q.depth(), 0);
    assert!(drain(&mut q, now).is_empty());

    // Held in an older version: the update cancels into the delete.
    let mut q = queue(16);
    q.start([entry("default/pod/a", "u1", "1")]);
    q.offer(upsert("default/pod/a", "u1", "2"));
    q.offer(delete("default/pod/a", "u1", "3"));
    assert_eq!(
        drain(&mut q, now),
        vec![s(1, Kind::Object, "delete", "default/pod/a", "u1", "3")]
    );
}

#[test]
fn recreated_object_replaces_the_old_incarnation() {
    let now = Instant::now();
    let mut q = queue(16);
    q.start([entry("default/pod/a", "old", "1")]);
    q.offer(delete("default/pod/a", "old", "5"));
    q.offer(upsert("default/pod/a", "new", "6"));
    assert_eq!(
        drain(&mut q, now),
        vec![s(1, Kind::Object, "upsert", "default/pod/a", "new", "6")]
    );
    // A late delete of the old incarnation must not remove the new one.
    assert!(!q.offer(delete("default/pod/a", "old", "5")));
    // A delete of what is held names the held uid.
    q.offer(delete("default/pod/a", "new", "7"));
    assert_eq!(
        drain(&mut q, now),
        vec![s(2, Kind::Object, "delete", "default/pod/a", "new", "7")]
    );
}

#[test]
fn stale_and_duplicate_changes_are_dropped() {
    let mut q = queue(16);
    q.start([entry("default/pod/a", "u1", "10")]);
    assert!(
        !q.offer(upsert("default/pod/a", "u1", "10")),
        "same version"
    );
    assert!(
        !q.offer(upsert("default/pod/a", "u1", "9")),
        "older version"
    );
    assert!(
        !q.offer(delete("default/pod/a", "other", "11")),
        "other uid"
    );
    assert!(!q.offer(delete("default/pod/b", "u9", "11")), "not held");
    assert_eq!(q.depth(), 0);
    // Going back to what the edge holds leaves the queue.
    assert!(q.offer(upsert("default/pod/a", "u1", "12")));
    assert!(!q.offer(upsert("default/pod/a", "u1", "11")));
    assert_eq!(q.depth(), 1);
}

#[test]
fn tombstones_are_sent_once() {
    let now = Instant::now();
    let mut q = queue(16);
    let t = Change::Tombstone {
        key: key("default/configmap/missing"),
    };
    assert!(q.offer(t.clone()));
    assert!(!q.offer(t.clone()));
    assert_eq!(
        drain(&mut q, now),
        vec![s(
            1,
            Kind::Tombstone,
            "",
            "default/configmap/missing",
            "",
            ""
        )]
    );
    assert!(!q.offer(t));
    assert_eq!(
        q.projected(&key("default/configmap/missing")),
        Some(&Held::Tombstone)
    );
    // The object appears: it replaces the tombstone.
    q.offer(upsert("default/configmap/missing", "u1", "3"));
    assert_eq!(drain(&mut q, now).len(), 1);
}

#[test]
fn window_bounds_in_flight_and_ack_releases() {
    let now = Instant::now();
    let mut q = queue(2);
    for i in 0..5 {
        q.offer(upsert(&format!("default/pod/p{i}"), "u", "1"));
    }
    assert_eq!(drain(&mut q, now).len(), 2);
    assert!(!q.can_send());
    assert_eq!(q.in_flight(), 2);
    assert_eq!(q.depth(), 5);
    assert_eq!(
        q.on_ack(1).unwrap(),
        Acked {
            released: 1,
            synced: false
        }
    );
    let next = drain(&mut q, now);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, 3);
    assert_eq!(q.on_ack(3).unwrap().released, 2);
    assert_eq!(drain(&mut q, now).len(), 2);
    assert!(q.on_ack(9).is_err(), "ack beyond sent is a protocol error");
    assert_eq!(q.on_ack(2).unwrap().released, 0, "stale ack");
}

#[test]
fn unacked_frames_are_retransmitted_with_backoff() {
    let t0 = Instant::now();
    let mut q = queue(8);
    q.offer(upsert("default/pod/a", "u", "1"));
    q.offer(upsert("default/pod/b", "u", "1"));
    assert_eq!(drain(&mut q, t0).len(), 2);
    assert!(q.due(t0 + Duration::from_secs(2)).is_empty());
    assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(3)));
    let again = q.due(t0 + Duration::from_secs(3));
    assert_eq!(
        again.iter().map(|s| summary(s).0).collect::<Vec<_>>(),
        [1, 2]
    );
    // The second timeout doubles.
    assert!(q.due(t0 + Duration::from_secs(8)).is_empty());
    assert_eq!(q.due(t0 + Duration::from_secs(9)).len(), 2);
    q.on_ack(1).unwrap();
    let left = q.due(t0 + Duration::from_secs(60));
    assert_eq!(left.iter().map(|s| summary(s).0).collect::<Vec<_>>(), [2]);
}

#[test]
fn inventory_diff_sends_only_differences_then_synced() {
    let now = Instant::now();
    let mut q = queue(64);
    let invalid = q.start([
        entry("default/pod/same", "u1", "5"),
        entry("default/pod/old", "u2", "5"),
        entry("default/pod/gone", "u3", "5"),
        entry("default/pod/recreated", "u4", "5"),
        entry("default/configmap/tomb", "", ""),
        entry("not a key", "x", "1"),
    ]);
    assert_eq!(invalid, ["not a key"]);
    q.resync([
        upsert("default/pod/same", "u1", "5"),
        upsert("default/pod/old", "u2", "7"),
        upsert("default/pod/recreated", "u9", "8"),
        upsert("default/pod/new", "u5", "9"),
        Change::Tombstone {
            key: key("default/configmap/tomb"),
        },
        Change::Tombstone {
            key: key("default/secret/missing"),
        },
    ]);
    q.push_synced();
    let frames = drain(&mut q, now);
    assert_eq!(
        frames,
        vec![
            s(1, Kind::Object, "delete", "default/pod/gone", "u3", "5"),
            s(2, Kind::Object, "upsert", "default/pod/old", "u2", "7"),
            s(
                3,
                Kind::Object,
                "upsert",
                "default/pod/recreated",
                "u9",
                "8"
            ),
            s(4, Kind::Object, "upsert", "default/pod/new", "u5", "9"),
            s(5, Kind::Tombstone, "", "default/secret/missing", "", ""),
            s(6, Kind::Synced, "", "", "", ""),
        ]
    );
    assert!(!q.on_ack(5).unwrap().synced);
    assert!(q.on_ack(6).unwrap().synced);
}

#[test]
fn empty_inventory_and_nothing_desired_still_syncs() {
    let mut q = queue(4);
    q.start([]);
    q.resync([]);
    q.push_synced();
    assert_eq!(
        drain(&mut q, Instant::now()),
        vec![s(1, Kind::Synced, "", "", "", "")]
    );
}

#[test]
fn lag_resync_recovers_missed_changes_without_resending() {
    let now = Instant::now();
    let mut q = queue(64);
    q.start([]);
    q.resync([
        upsert("default/pod/a", "ua", "1"),
        upsert("default/pod/b", "ub", "1"),
    ]);
    q.push_synced();
    assert_eq!(drain(&mut q, now).len(), 3);
    q.on_ack(3).unwrap();
    // A change is queued, then the feed lags: pod a changed twice, b was
    // deleted, c appeared, and the queued change is obsolete.
    q.offer(upsert("default/pod/x", "ux", "2"));
    q.resync([
        upsert("default/pod/a", "ua", "4"),
        upsert("default/pod/c", "uc", "5"),
    ]);
    assert_eq!(
        drain(&mut q, now),
        vec![
            s(4, Kind::Object, "delete", "default/pod/b", "ub", "1"),
            s(5, Kind::Object, "upsert", "default/pod/a", "ua", "4"),
            s(6, Kind::Object, "upsert", "default/pod/c", "uc", "5"),
        ]
    );
    // Replayed older events after the resync change nothing.
    assert!(!q.offer(upsert("default/pod/a", "ua", "3")));
    assert!(!q.offer(delete("default/pod/b", "ub", "2")));
    assert_eq!(q.depth(), 3, "only the three in flight");
}

#[test]
fn oversized_object_is_skipped_and_edge_keeps_its_version() {
    let now = Instant::now();
    let mut q: Queue = Queue::new(WindowConfig::default(), Limits::with_max_frame(256));
    q.start([entry("default/pod/big", "u", "1")]);
    q.offer(Change::Upsert {
        key: key("default/pod/big"),
        uid: "u".into(),
        rv: "2".into(),
        json: Bytes::from(vec![b'x'; 1024]),
    });
    q.offer(upsert("default/pod/small", "v", "1"));
    match q.pop(now) {
        Some(Popped::Skipped { key: k, error }) => {
            assert_eq!(k, key("default/pod/big"));
            assert_eq!(error.reason(), "oversized");
        }
        other => panic!("expected a skip, got {other:?}"),
    }
    assert_eq!(
        q.projected(&key("default/pod/big")),
        Some(&Held::Object {
            uid: "u".into(),
            rv: "1".into()
        })
    );
    let next = drain(&mut q, now);
    assert_eq!(
        next,
        vec![s(1, Kind::Object, "upsert", "default/pod/small", "v", "1")]
    );
    // Still deletable by the uid the edge holds.
    q.offer(delete("default/pod/big", "u", "3"));
    assert_eq!(drain(&mut q, now)[0].2, Op::Delete.as_str());
}

#[test]
fn flip_flopping_keys_do_not_grow_the_order() {
    let mut q = queue(1);
    q.start([entry("default/pod/a", "u", "1")]);
    for i in 0..10_000u64 {
        let rv = |n: u64| (4 * i + n).to_string();
        q.offer(upsert("default/pod/b", "ub", &rv(2)));
        q.offer(delete("default/pod/b", "ub", &rv(3)));
        q.offer(upsert("default/pod/a", "u", &rv(4)));
        q.offer(delete("default/pod/a", "u", &rv(5)));
    }
    assert!(q.order.len() <= 200, "order grew to {}", q.order.len());
    assert_eq!(q.depth(), 1, "only the delete of a");
}

#[test]
fn resync_keeps_keys_the_cache_has_not_resolved() {
    let now = Instant::now();
    let mut q = queue(64);
    q.start([
        entry("default/pod/a", "ua", "1"),
        entry("default/configmap/fetching", "uc", "3"),
        entry("default/configmap/gone", "ug", "3"),
    ]);
    let keep: std::collections::HashSet<ResourceKey> =
        [key("default/configmap/fetching")].into_iter().collect();
    q.resync_keeping([upsert("default/pod/a", "ua", "1")], &keep);
    q.push_synced();
    assert_eq!(
        drain(&mut q, now),
        vec![
            s(
                1,
                Kind::Object,
                "delete",
                "default/configmap/gone",
                "ug",
                "3"
            ),
            s(2, Kind::Synced, "", "", "", ""),
        ]
    );
    // Once resolved it arrives as an ordinary change.
    assert!(q.offer(upsert("default/configmap/fetching", "uc", "4")));
}
