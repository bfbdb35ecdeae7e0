#![allow(clippy::unwrap_used)]

use proto::{Frame, ResourceKey};

use super::*;
use crate::store::StoreConfig;

fn key(name: &str) -> ResourceKey {
    ResourceKey::parse(&format!("default/configmap/{name}")).unwrap()
}

fn up(id: u64, name: &str, uid: &str, rv: &str) -> Frame {
    Frame::upsert(
        id,
        &key(name),
        uid,
        rv,
        format!(r#"{{"rv":"{rv}"}}"#).into_bytes(),
    )
}

fn open(dir: &std::path::Path) -> (MetaHandle, MetaReader) {
    let store = Store::open(dir, &StoreConfig::default()).unwrap();
    start(store, Metrics::new()).unwrap()
}

#[tokio::test]
async fn live_batches_publish_at_once_and_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    {
        let (meta, reader) = open(&dir);
        let applied = meta
            .apply(vec![
                up(1, "a", "u1", "5"),
                up(2, "b", "u2", "7"),
                up(3, "a", "u1", "4"),
            ])
            .await
            .unwrap();
        assert_eq!(
            applied,
            Applied {
                up_to: 3,
                changed: 2,
                ignored: 1,
                echoes: 0,
                synced: false
            }
        );
        let snap = reader.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(
            snap.get("default/configmap/a").unwrap().resource_version,
            "5"
        );
        assert_eq!(snap.prefix("default/configmap/").count(), 2);
    }
    // let the writer task drop its store handle
    tokio::task::yield_now().await;
    let (meta, reader) = reopen(&dir).await;
    assert_eq!(reader.snapshot().len(), 2);
    let inv = meta.begin_session().await.unwrap();
    let inv: Vec<_> = inv
        .iter()
        .map(|e| (e.key.as_str(), e.uid.as_str(), e.resource_version.as_str()))
        .collect();
    assert_eq!(
        inv,
        vec![
            ("default/configmap/a", "u1", "5"),
            ("default/configmap/b", "u2", "7")
        ]
    );
}

/// The writer task owns a store handle; reopening waits until it let go.
async fn reopen(dir: &std::path::Path) -> (MetaHandle, MetaReader) {
    for _ in 0..100 {
        match Store::open(dir, &StoreConfig::default()) {
            Ok(store) => return start(store, Metrics::new()).unwrap(),
            Err(StoreError::Locked { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("store still locked after 2 s: the MetaManager writer did not stop");
}

#[tokio::test]
async fn a_resync_is_swapped_in_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (meta, mut reader) = open(&tmp.path().join("s"));
    meta.apply(vec![up(1, "old", "u0", "1")]).await.unwrap();
    let before = reader.snapshot().generation;
    meta.begin_session().await.unwrap();
    meta.apply(vec![
        Frame::delete(1, &key("old"), "u0", "1"),
        up(2, "new", "u1", "3"),
    ])
    .await
    .unwrap();
    // durable, but readers still see the state before the resync
    let snap = reader.snapshot();
    assert!(snap.get("default/configmap/old").is_some());
    assert!(snap.get("default/configmap/new").is_none());
    let applied = meta.apply(vec![Frame::synced(3)]).await.unwrap();
    assert!(applied.synced);
    assert!(reader.changed().await);
    let snap = reader.snapshot();
    assert!(snap.get("default/configmap/old").is_none());
    assert!(snap.get("default/configmap/new").is_some());
    assert!(snap.generation > before);
}

#[tokio::test]
async fn delete_of_another_incarnation_keeps_the_object() {
    let tmp = tempfile::tempdir().unwrap();
    let (meta, reader) = open(&tmp.path().join("s"));
    meta.apply(vec![up(1, "a", "new-uid", "9")]).await.unwrap();
    let a = meta
        .apply(vec![Frame::delete(2, &key("a"), "old-uid", "3")])
        .await
        .unwrap();
    assert_eq!(a.ignored, 1);
    assert!(reader.snapshot().get("default/configmap/a").is_some());
    meta.apply(vec![Frame::delete(3, &key("a"), "new-uid", "9")])
        .await
        .unwrap();
    assert!(reader.snapshot().get("default/configmap/a").is_none());
}

#[tokio::test]
async fn tombstones_are_cleared_by_upserts_and_pruned_when_not_resent() {
    let tmp = tempfile::tempdir().unwrap();
    let (meta, reader) = open(&tmp.path().join("s"));
    meta.apply(vec![
        up(1, "a", "u1", "1"),
        Frame::tombstone(2, &key("a")),
        Frame::tombstone(3, &key("b")),
    ])
    .await
    .unwrap();
    let snap = reader.snapshot();
    assert!(snap.get("default/configmap/a").is_none());
    assert!(snap.is_tombstoned("default/configmap/a"));
    meta.apply(vec![up(4, "a", "u2", "2")]).await.unwrap();
    assert!(!reader.snapshot().is_tombstoned("default/configmap/a"));
    // next resync re-sends nothing for b: forgotten at SYNCED
    meta.begin_session().await.unwrap();
    meta.apply(vec![Frame::tombstone(1, &key("c")), Frame::synced(2)])
        .await
        .unwrap();
    let snap = reader.snapshot();
    assert!(!snap.is_tombstoned("default/configmap/b"));
    assert!(snap.is_tombstoned("default/configmap/c"));
}

fn device_up(id: u64, rv: &str, generation: u32, reported: u32) -> Frame {
    Frame::upsert(
        id,
        &ResourceKey::parse("default/device/d").unwrap(),
        "ud",
        rv,
        format!(
            r#"{{"metadata":{{"name":"d","uid":"ud","resourceVersion":"{rv}","generation":{generation}}},"spec":{{"v":{generation}}},"status":{{"twins":[{{"reported":{reported}}}]}}}}"#
        )
        .into_bytes(),
    )
}

/// The resourceVersion the cache holds for `key`.
fn held_version(reader: &MetaReader, key: &str) -> String {
    reader.snapshot().get(key).unwrap().resource_version.clone()
}

#[tokio::test]
async fn a_device_status_echo_is_held_in_memory_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let metrics = Metrics::new();
    {
        let store = Store::open(&dir, &StoreConfig::default()).unwrap();
        let (meta, reader) = start(store, metrics.clone()).unwrap();
        meta.apply(vec![device_up(1, "5", 1, 0)]).await.unwrap();
        // The edge's own status write comes back: current in memory, not written.
        let generation = reader.snapshot().generation;
        let applied = meta.apply(vec![device_up(2, "6", 1, 7)]).await.unwrap();
        assert_eq!((applied.changed, applied.echoes), (1, 1));
        assert_eq!(metrics.meta_status_echoes.get(), 1);
        // Not published on its own: no reader acts on a Device's status.
        assert_eq!(reader.snapshot().generation, generation);
        assert_eq!(held_version(&reader, "default/device/d"), "5");
        // A configmap at a new version is always written (only Devices are echoes), and its
        // snapshot carries the held echo with it.
        meta.apply(vec![up(3, "a", "u1", "8"), up(4, "a", "u1", "9")])
            .await
            .unwrap();
        assert_eq!(metrics.meta_status_echoes.get(), 1);
        let held = reader.snapshot().get("default/device/d").unwrap().clone();
        assert_eq!(held.resource_version, "6");
        assert!(
            std::str::from_utf8(&held.json)
                .unwrap()
                .contains(r#""reported":7"#)
        );
    }
    tokio::task::yield_now().await;
    let (meta, reader) = reopen(&dir).await;
    // After a restart the store has the last written version: the inventory asks for more.
    assert_eq!(held_version(&reader, "default/device/d"), "5");
    assert_eq!(held_version(&reader, "default/configmap/a"), "9");
    // A spec change is written whole.
    meta.apply(vec![device_up(5, "7", 2, 7)]).await.unwrap();
    drop(meta);
    drop(reader);
    tokio::task::yield_now().await;
    let (_meta, reader) = reopen(&dir).await;
    assert_eq!(held_version(&reader, "default/device/d"), "7");
}
