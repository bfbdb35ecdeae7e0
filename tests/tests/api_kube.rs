//! The embedded API server driven by kube-rs: field-selector watchers, watch resumption
//! across a server restart, 410 after compaction (kube-rs relists), the status subresource
//! and optimistic concurrency.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tests::Standalone;

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "x"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

async fn timeout<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn watcher_with_node_field_selector_sees_add_modify_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("d"), &[]).unwrap();
    let client = s.client().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let cfg = watcher::Config::default().fields("spec.nodeName=edge-a");
    let mut stream = watcher(pods.clone(), cfg).boxed();
    // Initial (empty) list.
    loop {
        match timeout("init", stream.try_next()).await.unwrap().unwrap() {
            watcher::Event::InitDone => break,
            _ => continue,
        }
    }
    pods.create(&PostParams::default(), &pod("other", "edge-b"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("mine", "edge-a"))
        .await
        .unwrap();
    match timeout("apply", stream.try_next()).await.unwrap().unwrap() {
        watcher::Event::Apply(p) => assert_eq!(p.metadata.name.as_deref(), Some("mine")),
        e => panic!("unexpected {e:?}"),
    }
    pods.patch(
        "mine",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata":{"labels":{"v":"2"}}})),
    )
    .await
    .unwrap();
    match timeout("modify", stream.try_next()).await.unwrap().unwrap() {
        watcher::Event::Apply(p) => assert_eq!(p.metadata.labels.unwrap()["v"], "2"),
        e => panic!("unexpected {e:?}"),
    }
    pods.delete(
        "mine",
        &kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    match timeout("delete", stream.try_next()).await.unwrap().unwrap() {
        watcher::Event::Delete(p) => assert_eq!(p.metadata.name.as_deref(), Some("mine")),
        e => panic!("unexpected {e:?}"),
    }
}

#[tokio::test]
async fn raw_watch_resumes_across_restart_without_gone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut s = Standalone::start(&data, &[]).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(s.client().await.unwrap());
    let mk = |n: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata":{"name":n},"data":{"k":n}})).unwrap()
    };
    cms.create(&PostParams::default(), &mk("before"))
        .await
        .unwrap();
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    cms.create(&PostParams::default(), &mk("after-1"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &mk("after-2"))
        .await
        .unwrap();
    cms.delete("before", &Default::default()).await.unwrap();
    let st = s.stop().unwrap();
    assert!(st.success(), "clean stop on SIGTERM: {st:?}\n{}", s.log());
    let s2 = Standalone::start(&data, &[]).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(s2.client().await.unwrap());
    let mut w = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut got = Vec::new();
    while got.len() < 3 {
        match timeout("replayed events", w.try_next()).await.unwrap() {
            Some(WatchEvent::Added(c)) => got.push(format!("ADDED {}", c.metadata.name.unwrap())),
            Some(WatchEvent::Deleted(c)) => {
                got.push(format!("DELETED {}", c.metadata.name.unwrap()))
            }
            Some(WatchEvent::Error(e)) => panic!("error event {e:?}"),
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(
        got,
        vec!["ADDED after-1", "ADDED after-2", "DELETED before"]
    );
}

#[tokio::test]
async fn compaction_gives_gone_and_kube_relists() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = data.join("c.toml");
    std::fs::write(&cfg, "[api]\nwatch_history = 5\n").unwrap();
    let s = Standalone::start(&data, &["--config", cfg.to_str().unwrap()]).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(s.client().await.unwrap());
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..20 {
        let c: ConfigMap =
            serde_json::from_value(json!({"metadata":{"name":format!("c{i}")}})).unwrap();
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let mut w = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match timeout("gone", w.try_next()).await {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    // A kube-rs watcher recovers by relisting and sees all 20 (besides the namespace's
    // kube-root-ca.crt).
    let store = kube::runtime::reflector::store::Writer::<ConfigMap>::default();
    let reader = store.as_reader();
    let stream = kube::runtime::reflector(store, watcher(cms.clone(), Default::default()));
    tokio::spawn(stream.for_each(|_| async {}));
    tests::eventually(
        "reflector to hold 20 configmaps",
        Duration::from_secs(20),
        || {
            let n = reader
                .state()
                .iter()
                .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
                .count();
            async move { (n == 20).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn status_subresource_and_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("d"), &[]).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(s.client().await.unwrap());
    let created = pods
        .create(&PostParams::default(), &pod("p", "edge-a"))
        .await
        .unwrap();
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    // Status patch changes status only.
    let patched = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status":{"phase":"Running"},"spec":{"nodeName":"elsewhere"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(patched.spec.unwrap().node_name.as_deref(), Some("edge-a"));
    // The main resource ignores status.
    let mut p = pods.get("p").await.unwrap();
    p.status.as_mut().unwrap().phase = Some("Failed".into());
    p.metadata
        .labels
        .get_or_insert_default()
        .insert("x".into(), "y".into());
    let upd = pods.replace("p", &PostParams::default(), &p).await.unwrap();
    assert_eq!(upd.status.unwrap().phase.as_deref(), Some("Running"));
    // Stale resourceVersion: 409.
    let err = pods
        .replace("p", &PostParams::default(), &p)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 409);
            assert_eq!(e.reason, "Conflict");
        }
        e => panic!("{e:?}"),
    }
    let err = pods
        .create(&PostParams::default(), &pod("p", "edge-a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409 && e.reason == "AlreadyExists"),
        "{err:?}"
    );
    // Delete with a UID precondition of another incarnation: 409.
    let dp = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let err = pods.delete("p", &dp).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409),
        "{err:?}"
    );
}
