//! Which node certificates were issued and which are revoked.
//!
//! The record is one JSON document in the Secret `kedge-system/kedge-node-certs` (data
//! `certs.json`), so every replica sees the same revocations and a restart loses none.
//! Each issued certificate is recorded with the node's name **and UID** at issue time;
//! deleting that Node object (that UID) revokes its certificates. A node deleted while no
//! replica was running is caught at the next start: issued entries whose Node (name + UID)
//! no longer exists are revoked ([`CertRecord::reconcile`]). Entries are pruned once their
//! certificate has expired — TLS refuses those anyway — so the record stays small.
//!
//! The decisions are pure functions on [`CertRecord`]; [`update`] applies one to the
//! Secret with optimistic concurrency.

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

/// Name of the Secret holding the record.
pub const CERTS_SECRET: &str = "kedge-node-certs";
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

impl CertRecord {
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

/// Applies `change` to the stored record (creating the Secret if needed), retrying on
/// conflicts. `change` returns whether it changed anything; nothing is written otherwise.
pub async fn update(
    client: &Client,
    mut change: impl FnMut(&mut CertRecord) -> bool,
) -> Result<CertRecord, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = api.get_opt(CERTS_SECRET).await?;
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
                api.replace(CERTS_SECRET, &PostParams::default(), &secret)
                    .await
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(CERTS_SECRET.into()),
                        namespace: Some(NAMESPACE.into()),
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
                // Many joins at once (a fleet rollout) all rewrite this one Secret: spread
                // the retries out so each round has a winner instead of all colliding again.
                let cap = 5 * (1u64 << attempt.min(5));
                let ms = rand::random_range(1..=cap);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Keeps `revoked` equal to the stored record's revoked serials.
pub(super) async fn follow_record(
    client: Client,
    revoked: Arc<RwLock<HashSet<String>>>,
    stop: CancellationToken,
) {
    let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", CERTS_SECRET));
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let mut seen = None;
    let set = |serials: HashSet<String>| {
        if let Ok(mut guard) = revoked.write() {
            *guard = serials;
        }
    };
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = stream.next() => e,
        };
        match event {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "watching the certificate record"),
            Some(Ok(watcher::Event::Init)) => seen = Some(HashSet::new()),
            Some(Ok(watcher::Event::InitApply(s))) => {
                seen = Some(CertRecord::from_secret(&s).revoked_serials());
            }
            Some(Ok(watcher::Event::InitDone)) => set(seen.take().unwrap_or_default()),
            Some(Ok(watcher::Event::Apply(s))) => {
                set(CertRecord::from_secret(&s).revoked_serials());
            }
            Some(Ok(watcher::Event::Delete(_))) => set(HashSet::new()),
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
                update(&client, |r| r.reconcile(&existing, super::unix_now()))
                    .await
                    .map(drop)
            }
            Some(Ok(watcher::Event::Apply(_))) => Ok(()),
            Some(Ok(watcher::Event::Delete(n))) => {
                let (name, uid) = (n.name_any(), n.uid());
                let changed = update(&client, |r| {
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
    fn expired_entries_are_pruned() {
        let mut r = CertRecord::default();
        r.record_issue(entry("a", "u", "01", 0), 0);
        r.revoke_node("a", None, 0);
        r.prune(20_000);
        assert!(r.revoked.is_empty() && r.issued.is_empty());
    }
}
