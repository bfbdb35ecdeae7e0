//! Pagination of 100,000 objects in pages of 500 through the real HTTP stack: total time
//! and peak RSS. Ignored by default (it takes a while in debug builds); run with
//! `cargo test -p apiserver --release --test paging_perf -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)]

#[path = "support/server.rs"]
mod support;

use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use serde_json::json;

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "performance measurement"]
async fn page_100k_configmaps_in_pages_of_500() {
    const N: usize = 100_000;
    let s = support::start(|_| {}).await;
    let store = s.server.api.store.clone();
    let t = Instant::now();
    let mut last: u64 = 0;
    for i in 0..N {
        let name = format!("cm-{i:06}");
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{i}"),
                "labels": {"app": "perf", "shard": (i % 10).to_string()}},
            "data": {"key": "x".repeat(100)}});
        let ev = store
            .mutate(&format!("core/configmaps/default/{name}"), |_, _| {
                Ok(apiserver::store::Outcome::Put(obj))
            })
            .unwrap()
            .unwrap();
        last = ev.rv;
    }
    store.durable(last).await.unwrap();
    let filled = t.elapsed();
    let rss_before = rss_kib("VmRSS:");
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let t = Instant::now();
    let mut seen = 0;
    let mut pages = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        seen += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = ListParams::default().limit(500).continue_token(&c),
            None => break,
        }
    }
    let paged = t.elapsed();
    assert_eq!(seen, N + 1, "every configmap and kube-root-ca.crt");
    let t = Instant::now();
    let filtered = cms
        .list(&ListParams::default().labels("shard=3").limit(500))
        .await
        .unwrap();
    let first_filtered = t.elapsed();
    assert_eq!(filtered.items.len(), 500);
    // Again, with 20,000 objects rewritten after the first page: the rest of the pages
    // come from the superseded versions.
    let first = cms.list(&ListParams::default().limit(500)).await.unwrap();
    let snapshot = first.metadata.resource_version.clone().unwrap();
    for i in (0..N).step_by(5) {
        let name = format!("cm-{i:06}");
        let key = format!("core/configmaps/default/{name}");
        last = store
            .mutate(&key, |cur, _| {
                let mut v = cur.unwrap().value();
                v["data"]["key"] = json!("changed");
                Ok(apiserver::store::Outcome::Put(v))
            })
            .unwrap()
            .unwrap()
            .rv;
    }
    store.durable(last).await.unwrap();
    let t = Instant::now();
    let mut seen_again = first.items.len();
    let mut token = first.metadata.continue_.clone();
    while let Some(c) = token.filter(|c| !c.is_empty()) {
        let page = cms
            .list(&ListParams::default().limit(500).continue_token(&c))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(&*snapshot));
        assert!(page.items.iter().all(|c| c.data.as_ref().unwrap().get("key").map(String::as_str) != Some("changed")));
        seen_again += page.items.len();
        token = page.metadata.continue_;
    }
    let paged_history = t.elapsed();
    assert_eq!(seen_again, N + 1);
    println!("with 20000 objects rewritten after page 1: the other 200 pages in {paged_history:?}");
    println!(
        "filled {N} objects in {filled:?}; paged {seen} objects in {pages} pages of 500 in {paged:?} ({:.2} ms/page); first filtered page in {first_filtered:?}; RSS before paging {} MiB, peak RSS {} MiB",
        paged.as_secs_f64() * 1000.0 / f64::from(pages),
        rss_before / 1024,
        rss_kib("VmHWM:") / 1024
    );
}
