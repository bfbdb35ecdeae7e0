//! Which node certificates were issued and which are revoked.
//!
//! The record is JSON documents in [`SHARDS`] Secrets `kedge-system/kedge-node-certs-NN`
//! (data `certs.json`, label [`SHARD_LABEL`]), a node's entries in the shard its name
//! hashes to ([`shard_of`]), so every replica sees the same revocations and a restart loses
//! none. One document for the whole fleet passed the API's 1 MiB object limit at about 7,000
//! nodes, and every join rewrote all of it; a shard holds 1/64 of the fleet and a join
//! rewrites only its own. Each issued certificate is recorded with the node's name **and
//! UID** at issue time; deleting that Node object (that UID) revokes its certificates. A
//! node deleted while no replica was running is caught at the next start: issued entries
//! whose Node (name + UID) no longer exists are revoked ([`CertRecord::reconcile`]).
//! Entries are pruned once their certificate has expired — TLS refuses those anyway — so the
//! record stays small. A record in the single Secret of earlier versions
//! (`kedge-node-certs`) is moved into the shards at start ([`migrate_legacy`]).
//!
//! The decisions are pure functions on [`CertRecord`]; [`update_shard`] applies one to a
//! shard with optimistic concurrency.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use crate::nodeca::{NAMESPACE, api_status};

/// Name of the single Secret earlier versions kept the record in; the shards are named
/// after it ([`shard_name`]).
pub const CERTS_SECRET: &str = "kedge-node-certs";
/// How many Secrets the record is spread over. Fixed: every replica must agree on where a
/// node's entries are.
pub const SHARDS: u32 = 64;
/// Label (value `"true"`) on every shard, for the watch.
pub const SHARD_LABEL: &str = "kedge.io/node-certs";
/// Data key of the JSON document.
const DATA_KEY: &str = "certs.json";
/// Issued entries younger than this are never revoked by [`CertRecord::reconcile`]: the
/// Node list it compares against may predate the join that wrote them.
pub const RECONCILE_MARGIN_SECS: i64 = 120;
/// Optimistic-concurrency retries before giving up.
const MAX_ATTEMPTS: usize = 64;

/// One certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertEntry {
    /// Node name.
    pub node: String,
    /// UID of the Node object at issue time (empty if it was unknown).
    #[serde(default)]
    pub node_uid: String,
    /// Serial, normalised hex.
    pub serial: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// Issue time, Unix seconds.
    #[serde(default)]
    pub issued_at: i64,
}

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// Certificates in force.
    #[serde(default)]
    pub issued: Vec<CertEntry>,
    /// Revoked certificates not yet expired.
    #[serde(default)]
    pub revoked: Vec<CertEntry>,
}

/// The label selector of every shard.
fn shards_selector() -> String {
    format!("{SHARD_LABEL}=true")
}

/// The Secret holding shard `i`.
pub fn shard_name(i: u32) -> String {
    format!("{CERTS_SECRET}-{i:02}")
}

/// The shard holding `node`'s entries: FNV-1a of the name, so every replica and every
/// version computes the same (std's hasher is not stable across releases).
pub fn shard_of(node: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in node.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % SHARDS
}

impl CertRecord {
    /// Adds `other`'s entries that this record does not hold yet (by serial); a serial
    /// revoked in either stays revoked. Returns whether anything changed.
    pub fn merge(&mut self, other: CertRecord) -> bool {
        let revoked: HashSet<String> = self.revoked_serials();
        let mut known: HashSet<String> = self.issued.iter().map(|e| e.serial.clone()).collect();
        known.extend(revoked.iter().cloned());
        let mut changed = false;
        for e in other.revoked {
            if !revoked.contains(&e.serial) {
                self.issued.retain(|i| i.serial != e.serial);
                known.insert(e.serial.clone());
                self.revoked.push(e);
                changed = true;
            }
        }
        for e in other.issued {
            if known.insert(e.serial.clone()) {
                self.issued.push(e);
                changed = true;
            }
        }
        changed
    }

    /// Records an issued certificate (and prunes expired entries).
    pub fn record_issue(&mut self, entry: CertEntry, now: i64) -> bool {
        self.prune(now);
        self.issued.push(entry);
        true
    }

    /// Revokes the certificates issued to `node` while its Node object had `uid`
    /// (`None`: whatever the UID). Returns whether anything changed.
    pub fn revoke_node(&mut self, node: &str, uid: Option<&str>, now: i64) -> bool {
        let before = (self.issued.len(), self.revoked.len());
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.issued).into_iter().partition(|e| {
                e.node == node && uid.is_none_or(|u| e.node_uid.is_empty() || e.node_uid == u)
            });
        self.issued = kept;
        self.revoked.extend(gone);
        self.prune(now);
        before != (self.issued.len(), self.revoked.len())
    }

    /// Revokes issued entries older than the margin whose Node (name + UID) is not in
    /// `existing` (name → UID). Returns whether anything changed.
    pub fn reconcile(&mut self, existing: &BTreeMap<String, String>, now: i64) -> bool {
        let before = (self.issued.len(), self.revoked.len());
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.issued).into_iter().partition(|e| {
                let alive = existing
                    .get(&e.node)
                    .is_some_and(|uid| e.node_uid.is_empty() || *uid == e.node_uid);
                !alive && e.issued_at < now - RECONCILE_MARGIN_SECS
            });
        self.issued = kept;
        self.revoked.extend(gone);
        self.prune(now);
        before != (self.issued.len(), self.revoked.len())
    }

    /// Drops entries whose certificate has expired.
    pub fn prune(&mut self, now: i64) {
        self.issued.retain(|e| e.not_after > now);
        self.revoked.retain(|e| e.not_after > now);
    }

    /// The revoked serials.
    pub fn revoked_serials(&self) -> HashSet<String> {
        self.revoked.iter().map(|e| e.serial.clone()).collect()
    }

    /// Reads the record from its Secret (an unreadable document counts as empty, logged).
    pub fn from_secret(secret: &Secret) -> Self {
        let Some(raw) = secret.data.as_ref().and_then(|d| d.get(DATA_KEY)) else {
            return Self::default();
        };
        serde_json::from_slice(&raw.0).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the certificate record is unreadable; treating it as empty");
            Self::default()
        })
    }

    fn to_data(&self) -> BTreeMap<String, ByteString> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        BTreeMap::from([(DATA_KEY.to_owned(), ByteString(json))])
    }
}

/// Applies `change` to the record of `node`'s shard ([`update_shard`]).
pub async fn update_node(
    client: &Client,
    node: &str,
    change: impl FnMut(&mut CertRecord) -> bool,
) -> Result<CertRecord, kube::Error> {
    update_shard(client, shard_of(node), change).await
}

/// Applies `change` to every shard in turn; `true` when any changed.
pub async fn update_all(
    client: &Client,
    mut change: impl FnMut(&mut CertRecord) -> bool,
) -> Result<bool, kube::Error> {
    let mut any = false;
    for i in 0..SHARDS {
        let mut changed = false;
        update_shard(client, i, |r| {
            changed = change(r);
            changed
        })
        .await?;
        any |= changed;
    }
    Ok(any)
}

/// Applies `change` to shard `shard` (creating its Secret if needed), retrying on
/// conflicts. `change` returns whether it changed anything; nothing is written otherwise.
pub async fn update_shard(
    client: &Client,
    shard: u32,
    mut change: impl FnMut(&mut CertRecord) -> bool,
) -> Result<CertRecord, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let name = shard_name(shard);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = api.get_opt(&name).await?;
        let mut record = current
            .as_ref()
            .map(CertRecord::from_secret)
            .unwrap_or_default();
        if !change(&mut record) {
            return Ok(record);
        }
        let result = match current {
            Some(mut secret) => {
                secret.data = Some(record.to_data());
                api.replace(&name, &PostParams::default(), &secret).await
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(NAMESPACE.into()),
                        labels: Some(BTreeMap::from([(
                            SHARD_LABEL.to_owned(),
                            "true".to_owned(),
                        )])),
                        ..Default::default()
                    },
                    type_: Some("kedge.io/node-certs".into()),
                    data: Some(record.to_data()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &secret).await
            }
        };
        match result {
            Ok(_) => return Ok(record),
            Err(e) if api_status(&e) == Some(409) && attempt < MAX_ATTEMPTS => {
                // Many joins at once (a fleet rollout) rewrite the same shards: spread
                // the retries out so each round has a winner instead of all colliding again.
                let cap = 5 * (1u64 << attempt.min(5));
                let ms = rand::random_range(1..=cap);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Moves a record kept by an earlier version in the single Secret [`CERTS_SECRET`] into
/// the shards, then deletes it. Safe to run on several replicas at once: merging is by
/// serial, and a revocation is never undone.
pub async fn migrate_legacy(client: &Client) -> Result<(), kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let Some(legacy) = api.get_opt(CERTS_SECRET).await? else {
        return Ok(());
    };
    let record = CertRecord::from_secret(&legacy);
    let moved = record.issued.len() + record.revoked.len();
    let mut by_shard: BTreeMap<u32, CertRecord> = BTreeMap::new();
    fn part<'a>(parts: &'a mut BTreeMap<u32, CertRecord>, node: &str) -> &'a mut CertRecord {
        parts.entry(shard_of(node)).or_default()
    }
    for e in record.issued {
        part(&mut by_shard, &e.node).issued.push(e);
    }
    for e in record.revoked {
        part(&mut by_shard, &e.node).revoked.push(e);
    }
    for (shard, part) in by_shard {
        update_shard(client, shard, |r| r.merge(part.clone())).await?;
    }
    match api.delete(CERTS_SECRET, &Default::default()).await {
        Ok(_) => {}
        Err(e) if api_status(&e) == Some(404) => {}
        Err(e) => return Err(e),
    }
    tracing::info!(
        entries = moved,
        "moved the certificate record into its shards"
    );
    Ok(())
}

/// The revoked serials of every shard, read once (start-up, before the watch runs).
pub async fn revoked_now(client: &Client) -> Result<HashSet<String>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let list = api
        .list(&kube::api::ListParams::default().labels(&shards_selector()))
        .await?;
    Ok(list
        .items
        .iter()
        .flat_map(|s| CertRecord::from_secret(s).revoked_serials())
        .collect())
}

/// Keeps `revoked` equal to the union of the shards' revoked serials.
pub(super) async fn follow_record(
    client: Client,
    revoked: Arc<RwLock<HashSet<String>>>,
    stop: CancellationToken,
) {
    let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
    let cfg = watcher::Config::default().labels(&shards_selector());
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    // Shard name → its revoked serials; `listing` collects a relist before it replaces.
    let mut shards: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, HashSet<String>>> = None;
    let publish = |shards: &BTreeMap<String, HashSet<String>>| {
        let union: HashSet<String> = shards.values().flatten().cloned().collect();
        if let Ok(mut guard) = revoked.write() {
            *guard = union;
        }
    };
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            e = stream.next() => e,
        };
        match event {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "watching the certificate record"),
            Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
            Some(Ok(watcher::Event::InitApply(s))) => {
                let serials = CertRecord::from_secret(&s).revoked_serials();
                listing
                    .get_or_insert_default()
                    .insert(s.name_any(), serials);
            }
            Some(Ok(watcher::Event::InitDone)) => {
                shards = listing.take().unwrap_or_default();
                publish(&shards);
            }
            Some(Ok(watcher::Event::Apply(s))) => {
                shards.insert(s.name_any(), CertRecord::from_secret(&s).revoked_serials());
                publish(&shards);
            }
            Some(Ok(watcher::Event::Delete(s))) => {
                shards.remove(&s.name_any());
                publish(&shards);
            }
        }
    }
}

/// Revokes the certificates of deleted Nodes (by UID), and at every (re)list those of
/// Nodes that vanished while nobody watched.
pub(super) async fn revoke_deleted_nodes(client: Client, stop: CancellationToken) {
    let nodes: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
    let mut stream = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            e = stream.next() => e,
        };
        let result = match event {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching Nodes for revocation");
                Ok(())
            }
            Some(Ok(watcher::Event::Init)) => {
                listed.clear();
                Ok(())
            }
            Some(Ok(watcher::Event::InitApply(n))) => {
                listed.insert(n.name_any(), n.uid().unwrap_or_default());
                Ok(())
            }
            Some(Ok(watcher::Event::InitDone)) => {
                let existing = std::mem::take(&mut listed);
                update_all(&client, |r| r.reconcile(&existing, super::unix_now()))
                    .await
                    .map(drop)
            }
            Some(Ok(watcher::Event::Apply(_))) => Ok(()),
            Some(Ok(watcher::Event::Delete(n))) => {
                let (name, uid) = (n.name_any(), n.uid());
                let changed = update_node(&client, &name, |r| {
                    r.revoke_node(&name, uid.as_deref(), super::unix_now())
                })
                .await;
                if changed.is_ok() {
                    tracing::info!(node = %name, "node deleted; its certificates are revoked");
                }
                changed.map(drop)
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "updating the certificate record failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(node: &str, uid: &str, serial: &str, issued_at: i64) -> CertEntry {
        CertEntry {
            node: node.into(),
            node_uid: uid.into(),
            serial: serial.into(),
            not_after: 10_000,
            issued_at,
        }
    }

    #[test]
    fn deleting_a_node_revokes_only_that_incarnation() {
        let mut r = CertRecord::default();
        r.record_issue(entry("a", "u1", "01", 0), 0);
        r.record_issue(entry("a", "u2", "02", 0), 0);
        r.record_issue(entry("b", "u3", "03", 0), 0);
        assert!(r.revoke_node("a", Some("u1"), 1));
        assert_eq!(r.revoked_serials(), HashSet::from(["01".to_owned()]));
        assert!(!r.revoke_node("a", Some("u1"), 1));
        assert!(r.revoke_node("a", None, 1));
        assert_eq!(r.revoked_serials().len(), 2);
        assert_eq!(r.issued.len(), 1);
    }

    #[test]
    fn reconcile_revokes_vanished_nodes_but_not_fresh_joins() {
        let now = 1_000;
        let mut r = CertRecord::default();
        r.record_issue(entry("gone", "u1", "01", 0), 0);
        r.record_issue(entry("recreated", "old", "02", 0), 0);
        r.record_issue(entry("alive", "u3", "03", 0), 0);
        r.record_issue(entry("just-joined", "u4", "04", now - 5), 0);
        let existing = BTreeMap::from([
            ("recreated".to_owned(), "new".to_owned()),
            ("alive".to_owned(), "u3".to_owned()),
        ]);
        assert!(r.reconcile(&existing, now));
        assert_eq!(
            r.revoked_serials(),
            HashSet::from(["01".to_owned(), "02".to_owned()])
        );
        assert!(!r.reconcile(&existing, now));
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed values: replicas and versions must agree on a node's shard.
        assert_eq!(shard_of(""), 0x811c_9dc5 % SHARDS);
        assert_eq!(shard_of("a"), 0xe40c_292c % SHARDS);
        assert_eq!(shard_name(7), "kedge-node-certs-07");
        let mut counts = vec![0u32; SHARDS as usize];
        for i in 0..10_000 {
            counts[shard_of(&format!("edge-{i}")) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 100 && *max < 220, "uneven: {min}..{max}");
    }

    #[test]
    fn merge_adds_by_serial_and_never_unrevokes() {
        let mut r = CertRecord::default();
        r.record_issue(entry("a", "u", "01", 0), 0);
        r.record_issue(entry("b", "u", "02", 0), 0);
        r.revoke_node("b", None, 0);
        let mut other = CertRecord::default();
        other.record_issue(entry("a", "u", "01", 0), 0);
        other.record_issue(entry("b", "u", "02", 0), 0);
        other.record_issue(entry("c", "u", "03", 0), 0);
        other.revoke_node("a", None, 0);
        assert!(r.merge(other.clone()));
        assert_eq!(
            r.revoked_serials(),
            HashSet::from(["01".to_owned(), "02".to_owned()])
        );
        assert_eq!(
            r.issued
                .iter()
                .map(|e| e.serial.as_str())
                .collect::<Vec<_>>(),
            ["03"]
        );
        assert!(!r.merge(other), "merging again changes nothing");
    }

    #[test]
    fn expired_entries_are_pruned() {
        let mut r = CertRecord::default();
        r.record_issue(entry("a", "u", "01", 0), 0);
        r.revoke_node("a", None, 0);
        r.prune(20_000);
        assert!(r.revoked.is_empty() && r.issued.is_empty());
    }
}
