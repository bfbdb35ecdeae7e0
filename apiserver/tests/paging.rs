//! Consistent pagination through the real HTTP stack: snapshots across writes,
//! `remainingItemCount`, `resourceVersionMatch`, and 410 Expired with an inconsistent
//! continue token once the snapshot is compacted.

#![allow(clippy::unwrap_used)]

#[path = "support/server.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::within;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": "0"}})).unwrap()
}

async fn create_many(api: &Api<ConfigMap>, names: impl Iterator<Item = String>) {
    futures::stream::iter(names)
        .for_each_concurrent(32, |n| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &cm(&n)).await.unwrap();
            }
        })
        .await;
}

#[tokio::test]
async fn pages_are_one_snapshot_while_writes_happen_in_between() {
    let s = support::start(|_| {}).await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    within(
        "creating 1200 configmaps",
        create_many(&cms, (0..1200).map(|i| format!("cm-{i:04}"))),
    )
    .await;
    let first = cms.list(&ListParams::default().limit(500)).await.unwrap();
    let snapshot = first.metadata.resource_version.clone().unwrap();
    assert_eq!(first.items.len(), 500);
    // 700 more of ours, and the namespace's kube-root-ca.crt.
    assert_eq!(first.metadata.remaining_item_count, Some(701));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut record = |items: Vec<ConfigMap>| {
        for c in items {
            let name = c.metadata.name.unwrap();
            if name == "kube-root-ca.crt" {
                continue;
            }
            let rv = c.metadata.resource_version.unwrap();
            assert!(seen.insert(name.clone(), rv).is_none(), "{name} twice");
        }
    };
    record(first.items);
    let mut token = first.metadata.continue_;
    let mut round = 0;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        // Writes between pages: deletes, updates and creates on both sides of the cursor.
        for i in [round * 7 + 3, 600 + round, 1100 + round] {
            let name = format!("cm-{i:04}");
            cms.delete(&name, &DeleteParams::default()).await.unwrap();
        }
        for i in [10 + round, 700 + round, 1199 - round] {
            let patch = Patch::Merge(json!({"data": {"v": "changed"}}));
            cms.patch(&format!("cm-{i:04}"), &PatchParams::default(), &patch)
                .await
                .unwrap();
        }
        create_many(
            &cms,
            (0..5).map(|j| format!("cm-{:04}-new{j}", 300 * round + 450)),
        )
        .await;
        let page = cms
            .list(&ListParams::default().limit(500).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(&*snapshot));
        record(page.items);
        token = page.metadata.continue_;
        round += 1;
    }
    assert_eq!(round, 2);
    let want: Vec<String> = (0..1200).map(|i| format!("cm-{i:04}")).collect();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), want);
    assert!(
        seen.values()
            .all(|rv| rv.parse::<u64>().unwrap() <= snapshot.parse().unwrap()),
        "every object as of the snapshot"
    );
    // The same snapshot, exactly, later.
    let exact = cms
        .list(
            &ListParams::default()
                .at(&snapshot)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 1201);
    assert_eq!(exact.metadata.resource_version.as_deref(), Some(&*snapshot));
    // The current state differs.
    let now = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(now.items.len(), 1201 - 6 + 10);
}

#[tokio::test]
async fn list_options_are_checked_as_kubernetes_does() {
    let s = support::start(|_| {}).await;
    let base = "/api/v1/namespaces/default/configmaps";
    let rv: u64 = s.get(base).await.1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let cases = [
        (format!("{base}?resourceVersionMatch=Exact"), 422),
        (
            format!("{base}?resourceVersionMatch=Exact&resourceVersion=0"),
            422,
        ),
        (
            format!("{base}?resourceVersionMatch=Newest&resourceVersion=1"),
            422,
        ),
        (format!("{base}?resourceVersion=1&continue=abc"), 400),
        (format!("{base}?continue=not-a-token"), 400),
        (format!("{base}?resourceVersion={}", rv + 1000), 504),
        (
            format!(
                "{base}?resourceVersion={}&resourceVersionMatch=Exact",
                rv + 1000
            ),
            504,
        ),
        (
            format!("{base}?resourceVersion={rv}&resourceVersionMatch=NotOlderThan"),
            200,
        ),
        (
            format!("{base}?resourceVersion={rv}&resourceVersionMatch=Exact"),
            200,
        ),
        (format!("{base}?resourceVersion=0&limit=1"), 200),
    ];
    for (uri, want) in cases {
        let (code, body) = s.get(&uri).await;
        assert_eq!(code, want, "{uri}: {body}");
    }
    let (_, body) = s
        .get(&format!("{base}?resourceVersion={}", rv + 1000))
        .await;
    assert_eq!(body["reason"], "Timeout");
    assert_eq!(
        body["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
}

#[tokio::test]
async fn a_compacted_snapshot_is_410_expired_with_an_inconsistent_token() {
    let s = support::start(|c| {
        c.watch_history = 5;
        c.history_window = Duration::ZERO;
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    create_many(&cms, (0..10).map(|i| format!("c{i}"))).await;
    let first = cms.list(&ListParams::default().limit(4)).await.unwrap();
    let token = first.metadata.continue_.unwrap();
    for i in 0..10 {
        let patch = Patch::Merge(json!({"data": {"v": i.to_string()}}));
        cms.patch(&format!("c{i}"), &PatchParams::default(), &patch)
            .await
            .unwrap();
    }
    let snapshot = first.metadata.resource_version.unwrap();
    let exact = format!(
        "/api/v1/namespaces/default/configmaps?resourceVersion={snapshot}&resourceVersionMatch=Exact"
    );
    let (code, body) = s.get(&exact).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (410, Some("Expired")),
        "{body}"
    );
    let uri = format!("/api/v1/namespaces/default/configmaps?limit=4&continue={token}");
    let (code, body) = s.get(&uri).await;
    assert_eq!(code, 410, "{body}");
    assert_eq!(body["reason"], "Expired");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("The provided continue parameter is too old")
    );
    // The inconsistent token goes on from the current state after the same key.
    let again = body["metadata"]["continue"].as_str().unwrap();
    let rest = cms
        .list(&ListParams::default().limit(100).continue_token(again))
        .await
        .unwrap();
    let names: Vec<String> = rest
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        ["c4", "c5", "c6", "c7", "c8", "c9", "kube-root-ca.crt"]
    );
    assert!(
        rest.items[..6]
            .iter()
            .all(|c| c.data.as_ref().unwrap()["v"] != "0")
    );
}
