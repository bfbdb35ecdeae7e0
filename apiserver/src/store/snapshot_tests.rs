use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::store::{Outcome, StoreOptions};

fn store(history: usize) -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        history,
        history_window: std::time::Duration::ZERO,
        ..Default::default()
    };
    let s = Store::open(dir.path(), opts).unwrap();
    (dir, s)
}

fn put(s: &Store, name: &str, v: i64) -> u64 {
    let key = format!("core/configmaps/ns/{name}");
    let obj = json!({"metadata": {"name": name}, "data": {"v": v.to_string()}});
    s.mutate(&key, |_, _| Ok(Outcome::Put(obj)))
        .unwrap()
        .unwrap()
        .rv
}

fn del(s: &Store, name: &str) -> u64 {
    let key = format!("core/configmaps/ns/{name}");
    s.mutate(&key, |_, _| Ok(Outcome::Delete))
        .unwrap()
        .unwrap()
        .rv
}

fn page(s: &Store, at: Snapshot, after: Option<&str>, limit: Option<usize>) -> ListPage {
    let req = ListRequest {
        prefix: "core/configmaps/",
        at,
        after,
        limit,
        count_remaining: true,
    };
    s.list_page(&req, &mut |_| true).unwrap()
}

/// (name, data.v) of a page.
fn names(p: &ListPage) -> Vec<(String, String)> {
    p.items
        .iter()
        .map(|o| {
            let o = o.value();
            let n = o["metadata"]["name"].as_str().unwrap().to_string();
            let v = o["data"]["v"].as_str().unwrap_or("").to_string();
            (n, v)
        })
        .collect()
}

fn all_pages(s: &Store, at: Snapshot, limit: usize) -> (Vec<(String, String)>, u64) {
    let first = page(s, at, None, Some(limit));
    let rv = first.rv;
    let mut out = names(&first);
    let mut next = first.next.clone();
    while let Some(after) = next {
        let p = page(s, Snapshot::At(rv), Some(&after), Some(limit));
        out.extend(names(&p));
        next = p.next.clone();
    }
    (out, rv)
}

#[test]
fn a_snapshot_ignores_later_creates_updates_and_deletes() {
    let (_d, s) = store(1000);
    for i in 0..10 {
        put(&s, &format!("c{i}"), 0);
    }
    let first = page(&s, Snapshot::Latest, None, Some(4));
    let snap = first.rv;
    assert_eq!(first.items.len(), 4);
    assert_eq!(first.remaining, Some(6));
    assert_eq!(first.next.as_deref(), Some("core/configmaps/ns/c3"));
    // Writes between pages: updates before and after the continue point, a delete, a
    // re-create and new keys on both sides.
    put(&s, "c1", 1);
    put(&s, "c5", 1);
    put(&s, "c5", 2);
    del(&s, "c6");
    del(&s, "c7");
    put(&s, "c7", 9);
    put(&s, "c35", 1);
    put(&s, "c99", 1);
    let mut got = names(&first);
    let mut next = first.next.clone();
    let mut remaining = first.remaining;
    while let Some(after) = next {
        let p = page(&s, Snapshot::At(snap), Some(&after), Some(4));
        assert_eq!(p.rv, snap);
        got.extend(names(&p));
        if let (Some(r), Some(now)) = (remaining, p.remaining) {
            assert_eq!(r - p.items.len(), now, "remaining counts down");
        }
        remaining = p.remaining;
        next = p.next.clone();
    }
    let want: Vec<(String, String)> = (0..10).map(|i| (format!("c{i}"), "0".into())).collect();
    assert_eq!(got, want);
    // The current state has every write.
    let (now, _) = all_pages(&s, Snapshot::Latest, 3);
    let now: Vec<&str> = now.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        now,
        [
            "c0", "c1", "c2", "c3", "c35", "c4", "c5", "c7", "c8", "c9", "c99"
        ]
    );
}

#[test]
fn exact_versions_in_between_are_served() {
    let (_d, s) = store(1000);
    let a = put(&s, "a", 1);
    let b = put(&s, "b", 1);
    let a2 = put(&s, "a", 2);
    let gone = del(&s, "b");
    let at = |rv| names(&page(&s, Snapshot::At(rv), None, None));
    assert_eq!(at(a), [("a".into(), "1".into())]);
    assert_eq!(at(b), [("a".into(), "1".into()), ("b".into(), "1".into())]);
    assert_eq!(at(a2), [("a".into(), "2".into()), ("b".into(), "1".into())]);
    assert_eq!(at(gone), [("a".into(), "2".into())]);
    assert_eq!(at(0), Vec::<(String, String)>::new());
    let req = ListRequest {
        prefix: "core/configmaps/",
        at: Snapshot::At(gone + 1),
        after: None,
        limit: None,
        count_remaining: false,
    };
    assert_eq!(
        s.list_page(&req, &mut |_| true).unwrap_err(),
        SnapshotError::TooNew {
            requested: gone + 1,
            current: gone
        }
    );
}

#[tokio::test]
async fn compaction_expires_old_snapshots_and_drops_their_versions() {
    let (_d, s) = store(3);
    let token = tokio_util::sync::CancellationToken::new();
    tokio::spawn(s.clone().run_committer(token.clone()));
    let early = put(&s, "a", 1);
    for i in 2..10 {
        put(&s, "a", i);
    }
    let last = put(&s, "b", 1);
    s.durable(last).await.unwrap();
    let req = ListRequest {
        prefix: "core/configmaps/",
        at: Snapshot::At(early),
        after: None,
        limit: None,
        count_remaining: false,
    };
    assert!(matches!(
        s.list_page(&req, &mut |_| true),
        Err(SnapshotError::Compacted { .. })
    ));
    assert!(s.oldest_snapshot() > early);
    // Only the versions superseded within the last three events are still kept.
    assert!(s.lock().past.get("core/configmaps/ns/a").unwrap().len() <= 3);
    token.cancel();
}

#[test]
fn the_time_window_keeps_history_beyond_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        history: 1,
        history_window: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let s = Store::open(dir.path(), opts).unwrap();
    let first = put(&s, "a", 1);
    for i in 2..20 {
        put(&s, "a", i);
    }
    s.release(s.current_rv());
    assert_eq!(s.oldest_snapshot(), 0);
    assert_eq!(names(&page(&s, Snapshot::At(first), None, None))[0].1, "1");
}

#[tokio::test]
async fn after_a_restart_snapshots_start_at_the_opening_version() {
    let dir = tempfile::tempdir().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let before = {
        let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let task = tokio::spawn(s.clone().run_committer(token.clone()));
        put(&s, "a", 1);
        let rv = put(&s, "a", 2);
        s.durable(rv).await.unwrap();
        token.cancel();
        task.await.unwrap();
        rv
    };
    let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(s.oldest_snapshot(), before);
    assert_eq!(names(&page(&s, Snapshot::At(before), None, None)).len(), 1);
    let req = ListRequest {
        prefix: "core/configmaps/",
        at: Snapshot::At(before - 1),
        after: None,
        limit: None,
        count_remaining: false,
    };
    assert!(s.list_page(&req, &mut |_| true).is_err());
}

#[test]
fn long_scans_resume_across_lock_batches_and_filters_fill_pages() {
    let (_d, s) = store(100_000);
    for i in 0..(BATCH * 2 + 10) {
        put(&s, &format!("k{i:06}"), (i % 7) as i64);
    }
    let snap = s.current_rv();
    // A write the snapshot must not see, placed beyond the first batch.
    put(&s, "k999999", 0);
    let mut only_sixes = |o: &Stored| o.value()["data"]["v"] == "6";
    let req = ListRequest {
        prefix: "core/configmaps/",
        at: Snapshot::At(snap),
        after: None,
        limit: Some(500),
        count_remaining: false,
    };
    let p = s.list_page(&req, &mut only_sixes).unwrap();
    assert_eq!(p.items.len(), 500);
    assert!(p.next.is_some());
    let req = ListRequest {
        after: p.next.as_deref(),
        ..req
    };
    let rest = s.list_page(&req, &mut only_sixes).unwrap();
    let total = (0..(BATCH * 2 + 10)).filter(|i| i % 7 == 6).count();
    assert_eq!(rest.items.len(), total - 500);
    assert!(rest.next.is_none());
    let (all, _) = all_pages(&s, Snapshot::At(snap), 1000);
    assert_eq!(all.len(), BATCH * 2 + 10);
}
