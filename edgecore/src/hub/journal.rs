//! The delivery journal: one debug line per cloud frame once the group
//! commit holding it is durable (target `kedge_journal`, off by default).
//!
//! It is how the end-to-end tests see, while the edge runs, what it holds
//! and in which order versions arrived (no key may go back to an older
//! resourceVersion, no deleted incarnation may come back), and how an
//! operator can trace a key's history: `KEDGE_LOG=info,kedge_journal=debug`.

use proto::{Frame, Kind};

/// The tracing target of the journal.
pub const TARGET: &str = "kedge_journal";

/// One journaled frame.
#[derive(Debug, Clone)]
pub struct Entry {
    id: u64,
    kind: &'static str,
    op: String,
    key: String,
    uid: String,
    rv: String,
}

/// The entries of `frames` when the journal is enabled, else `None` (no cost).
pub fn entries(frames: &[Frame]) -> Option<Vec<Entry>> {
    if !tracing::enabled!(target: TARGET, tracing::Level::DEBUG) {
        return None;
    }
    Some(
        frames
            .iter()
            .map(|f| Entry {
                id: f.id,
                kind: Kind::try_from(f.kind).unwrap_or(Kind::Unspecified).label(),
                op: f.route.as_ref().map(|r| r.op.clone()).unwrap_or_default(),
                key: f
                    .route
                    .as_ref()
                    .map(|r| r.resource.clone())
                    .unwrap_or_default(),
                uid: f.uid.clone(),
                rv: f.resource_version.clone(),
            })
            .collect(),
    )
}

/// Logs `entries` (after their batch became durable).
pub fn log(entries: Option<Vec<Entry>>) {
    for e in entries.into_iter().flatten() {
        tracing::debug!(
            target: TARGET,
            id = e.id,
            kind = e.kind,
            op = %e.op,
            key = %e.key,
            uid = %e.uid,
            rv = %e.rv,
            "durable"
        );
    }
}
