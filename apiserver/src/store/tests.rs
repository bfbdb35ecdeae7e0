use super::*;
use serde_json::json;

/// A store in `dir` with its committer running until `token` is cancelled.
fn started(
    dir: &Path,
    token: &tokio_util::sync::CancellationToken,
) -> (Arc<Store>, tokio::task::JoinHandle<()>) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let task = tokio::spawn(store.clone().run_committer(token.clone()));
    (store, task)
}

fn put(store: &Store, key: &str, v: Value) -> Arc<Event> {
    store
        .mutate(key, |_, _| Ok(Outcome::Put(v)))
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn writes_are_durable_and_replayable_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    {
        let (store, task) = started(dir.path(), &token);
        let a = put(
            &store,
            "core/pods/default/a",
            json!({"metadata":{"name":"a"}}),
        );
        let b = put(
            &store,
            "core/pods/default/b",
            json!({"metadata":{"name":"b"}}),
        );
        assert_eq!(b.rv, a.rv + 1);
        store.durable(b.rv).await.unwrap();
        store
            .mutate("core/pods/default/a", |_, _| Ok(Outcome::Delete))
            .unwrap();
        store.durable(3).await.unwrap();
        token.cancel();
        task.await.unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.current_rv(), 3);
    assert!(store.get("core/pods/default/a").is_none());
    assert_eq!(
        store.get("core/pods/default/b").unwrap().value()["metadata"]["resourceVersion"],
        "2"
    );
    let (replay, _) = store.watch_from(1).unwrap();
    let kinds: Vec<_> = replay.iter().map(|e| (e.rv, e.kind)).collect();
    assert_eq!(kinds, vec![(2, EventType::Added), (3, EventType::Deleted)]);
}

/// A write nobody waits for (its client went away before `durable`) still counts as
/// flushed, so the committer idles and stops on shutdown instead of flushing the same
/// version forever (what made `cloudcore standalone` hang on SIGTERM now and then).
#[tokio::test]
async fn an_unawaited_write_is_flushed_once_and_shutdown_still_stops_the_committer() {
    let dir = tempfile::tempdir().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let (store, task) = started(dir.path(), &token);
    let a = put(
        &store,
        "core/pods/default/a",
        json!({"metadata":{"name":"a"}}),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while *store.flushed.borrow() < a.rv {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flushed version never reached {} with nobody subscribed",
            a.rv
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the committer did not stop on shutdown")
        .unwrap();
}

#[tokio::test]
async fn watchers_see_only_flushed_events_and_compaction_gives_gone() {
    let dir = tempfile::tempdir().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            history: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let (mut rx, _) = store.subscribe();
    tokio::spawn(store.clone().run_committer(token.clone()));
    for i in 0..10 {
        put(
            &store,
            &format!("core/configmaps/default/c{i}"),
            json!({"metadata":{}}),
        );
    }
    store.durable(10).await.unwrap();
    let mut seen = vec![];
    while seen.len() < 10 {
        seen.push(rx.recv().await.unwrap().rv);
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    assert!(store.watch_from(2).is_err());
    assert_eq!(store.watch_from(8).unwrap().0.len(), 2);
    token.cancel();
}
