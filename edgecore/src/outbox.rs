//! The outbox: a durable, coalescing queue of upstream writes (Node status,
//! Lease renewals, pod status, Events, later twin reports).
//!
//! Writers call [`Outbox::put`] from any task, connected or not; the entry is
//! in the store (flushed) when `put` returns, so nothing reported offline is
//! lost, also across restarts. The hub drains it while connected: it takes
//! [`Outbox::next_ready`] entries into its send window as REQUEST/EVENT
//! frames and reports ACKs and RESPONSEs back ([`Outbox::on_acked`],
//! [`Outbox::on_response`]). An entry leaves the store only when the cloud's
//! cumulative ACK covers it (or a permanent API error drops it, counted in
//! `edgecore_outbox_dropped_total{code}`).
//!
//! Coalescing is by key, latest wins ([`queue`] has the rules): a key must
//! carry a complete body (a full status), never a delta that depends on an
//! earlier queued one.

pub mod event;
pub mod queue;

use std::sync::{Arc, Mutex, MutexGuard};

use proto::{Frame, Op, ResourceKey, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::store::{Store, StoreError, Tree};
use crate::telemetry::Metrics;
pub use event::Dropped;
use queue::{Outcome, Queue};

/// Store tree of outbox entries: key -> [`Stored`] JSON.
const TREE: &str = "outbox";
/// Most entries queued at once. Keys are coalesced (one per pod status,
/// one Node status, one Lease...), so only Events can approach it.
pub const MAX_ENTRIES: usize = 10_000;

/// Which sequenced upstream kind an entry travels as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpKind {
    /// A REQUEST (API write through the cloud).
    Request,
    /// An EVENT (a Kubernetes Event; the cloud may aggregate it).
    Event,
}

/// One upstream write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// REQUEST or EVENT.
    pub kind: UpKind,
    /// Wire op (`patch_status`, `patch`, `create`...).
    pub op: String,
    /// Resource key the write is about.
    pub resource: String,
    /// Patch media type (empty = merge patch).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_type: String,
    /// JSON body.
    pub body: String,
}

impl Upstream {
    /// A REQUEST `op` on `key` with a JSON body.
    pub fn request(op: Op, key: &ResourceKey, body: &serde_json::Value) -> Upstream {
        Upstream {
            kind: UpKind::Request,
            op: op.as_str().to_owned(),
            resource: key.to_string(),
            content_type: String::new(),
            body: body.to_string(),
        }
    }

    /// An EVENT carrying a Kubernetes Event object (`json`) at `key`.
    pub fn event(op: Op, key: &ResourceKey, json: &serde_json::Value) -> Upstream {
        Upstream {
            kind: UpKind::Event,
            ..Upstream::request(op, key, json)
        }
    }

    /// Sets the patch media type.
    pub fn with_content_type(mut self, content_type: &str) -> Upstream {
        content_type.clone_into(&mut self.content_type);
        self
    }

    /// The frame carrying this write with sequence id `id`.
    pub fn to_frame(&self, id: u64) -> Frame {
        let kind = match self.kind {
            UpKind::Request => proto::Kind::Request,
            UpKind::Event => proto::Kind::Event,
        };
        Frame {
            id,
            kind: kind as i32,
            route: Some(proto::Route {
                op: self.op.clone(),
                resource: self.resource.clone(),
                content_type: self.content_type.clone(),
            }),
            payload: self.body.clone().into_bytes(),
            ..Frame::default()
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    seq: u64,
    item: Upstream,
}

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The store failed.
    #[error("outbox store access failed")]
    Store(#[from] StoreError),
    /// The outbox holds [`MAX_ENTRIES`] and none of them may be evicted.
    #[error("outbox is full ({max} entries)")]
    Full {
        /// The cap.
        max: usize,
    },
    /// The entry could not be encoded.
    #[error("cannot encode an outbox entry")]
    Encode(#[source] serde_json::Error),
}

/// An entry taken for sending: identifies it in ACK/RESPONSE callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Coalescing key.
    pub key: String,
    /// Sequence number of this version of the entry.
    pub seq: u64,
    /// The write.
    pub item: Arc<Upstream>,
}

/// Cheap clonable handle to the outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

/// A key prefix and where its RESPONSEs go.
type Listener = (String, mpsc::UnboundedSender<(String, Response)>);

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    store: Store,
    notify: Notify,
    metrics: Metrics,
    /// Who wants the RESPONSEs of which key prefix ([`Outbox::subscribe_responses`]).
    listeners: Mutex<Vec<Listener>>,
}

#[derive(Debug)]
struct State {
    queue: Queue<Upstream, Instant>,
    tree: Tree,
    backoff: Backoff,
}

impl Outbox {
    /// Opens the outbox in `store`, restoring queued entries.
    pub fn open(store: Store, metrics: Metrics) -> Result<Outbox, OutboxError> {
        let tree = store.tree(TREE)?;
        let mut queue = Queue::default();
        for entry in tree.scan_prefix(b"") {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            match serde_json::from_slice::<Stored>(&value) {
                Ok(s) => queue.restore(key, s.seq, s.item),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "dropping an unreadable outbox entry");
                    tree.delete(&key)?;
                }
            }
        }
        metrics.outbox_depth.set(queue.len() as i64);
        if !queue.is_empty() {
            tracing::info!(entries = queue.len(), "outbox restored");
        }
        let backoff = Backoff::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        );
        Ok(Outbox {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue,
                    tree,
                    backoff,
                }),
                store,
                notify: Notify::new(),
                metrics,
                listeners: Mutex::new(Vec::new()),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-updated
        // in a way worse than a restart would; keep going.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `item` under `key` (replacing an older queued one) and makes
    /// it durable before returning.
    pub async fn put(&self, key: &str, item: Upstream) -> Result<(), OutboxError> {
        self.put_many(vec![(key.to_owned(), item)]).await
    }

    /// Queues several entries with one flush. At [`MAX_ENTRIES`] the oldest
    /// queued EVENT makes room (Events are lossy by design, counted as
    /// dropped with code `evicted`); with no Event to evict a new key is
    /// refused with [`OutboxError::Full`] (a newer version of a queued key
    /// is always accepted).
    pub async fn put_many(&self, items: Vec<(String, Upstream)>) -> Result<(), OutboxError> {
        {
            let mut state = self.lock();
            for (key, item) in items {
                if state.queue.len() >= MAX_ENTRIES && !state.queue.contains(&key) {
                    let evicted = state.queue.evict_oldest(|i| i.kind == UpKind::Event);
                    let Some(evicted) = evicted else {
                        return Err(OutboxError::Full { max: MAX_ENTRIES });
                    };
                    state.tree.delete(&evicted)?;
                    self.inner
                        .metrics
                        .outbox_dropped
                        .get_or_create(&vec![("code".to_owned(), "evicted".to_owned())])
                        .inc();
                }
                let (seq, _) = state.queue.put(key.clone(), item.clone());
                let value =
                    serde_json::to_vec(&Stored { seq, item }).map_err(OutboxError::Encode)?;
                state.tree.put(&key, value)?;
            }
            self.inner
                .metrics
                .outbox_depth
                .set(state.queue.len() as i64);
        }
        self.inner.store.flush_blocking().await?;
        // One waiter (the hub); a stored permit covers "put while not waiting".
        self.inner.notify.notify_one();
        Ok(())
    }

    /// Queues `item` under `key`, folding it into the entry still queued there with
    /// `merge(queued, item)` instead of replacing it (for deltas that must accumulate,
    /// such as edge-written desired values). An in-flight entry is folded in too: the
    /// merged entry re-sends its values, which is harmless for idempotent patches.
    pub async fn put_merged(
        &self,
        key: &str,
        item: Upstream,
        merge: impl FnOnce(&Upstream, Upstream) -> Upstream,
    ) -> Result<(), OutboxError> {
        let queued = self.lock().queue.peek(key);
        let item = match queued {
            Some(q) => merge(&q, item),
            None => item,
        };
        self.put(key, item).await
    }

    /// Takes the oldest entry that is ready to send, if any.
    pub fn next_ready(&self, now: Instant) -> Option<Taken> {
        let mut state = self.lock();
        state
            .queue
            .next_ready(now)
            .map(|(key, seq, item)| Taken { key, seq, item })
    }

    /// The cloud's ACK covered the frame that carried `taken`.
    pub fn on_acked(&self, key: &str, seq: u64) -> Result<(), OutboxError> {
        let mut state = self.lock();
        if state.queue.on_acked(key, seq) == Outcome::Done {
            state.tree.delete(key)?;
        }
        self.inner
            .metrics
            .outbox_depth
            .set(state.queue.len() as i64);
        Ok(())
    }

    /// A RESPONSE came for the frame that carried `(key, seq)`. Returns the
    /// write when the cloud refused it for good (so the caller can report
    /// it, see [`event::event_for`]).
    pub fn on_response(
        &self,
        key: &str,
        seq: u64,
        response: &Response,
        now: Instant,
    ) -> Result<Option<Dropped>, OutboxError> {
        self.forward_response(key, response);
        let mut state = self.lock();
        let State {
            queue,
            backoff,
            tree,
            ..
        } = &mut *state;
        let item = queue.peek(key).map(|i| (*i).clone());
        let outcome = queue.on_response(key, seq, response.code, now, |n| backoff.jittered(n));
        if queue::classify(response.code) == queue::Verdict::Permanent {
            // Counted whether the entry was still queued or its ACK came
            // first and already removed it: either way the write is lost.
            if outcome == Outcome::Dropped(response.code) {
                tree.delete(key)?;
            }
            self.inner
                .metrics
                .outbox_dropped
                .get_or_create(&vec![("code".to_owned(), response.code.to_string())])
                .inc();
            tracing::warn!(
                %key, code = response.code, reason = %response.reason, message = %response.message,
                "the cloud refused an upstream write for good; dropped it"
            );
            self.inner.metrics.outbox_depth.set(queue.len() as i64);
            return Ok(Some(Dropped {
                key: key.to_owned(),
                item,
                code: response.code,
                reason: response.reason.clone(),
                message: response.message.clone(),
            }));
        } else if outcome == Outcome::Retry {
            tracing::info!(
                %key, code = response.code, reason = %response.reason,
                "upstream write failed for now; will retry"
            );
        }
        self.inner.metrics.outbox_depth.set(queue.len() as i64);
        Ok(None)
    }

    /// RESPONSEs to entries whose key starts with `prefix`, as `(key, response)`, for a
    /// writer that needs the answer (a TokenRequest's token) and not only the outcome.
    pub fn subscribe_responses(&self, prefix: &str) -> mpsc::UnboundedReceiver<(String, Response)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((prefix.to_owned(), tx));
        rx
    }

    fn forward_response(&self, key: &str, response: &Response) {
        let mut listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        listeners.retain(|(prefix, tx)| {
            !key.starts_with(prefix.as_str()) || tx.send((key.to_owned(), response.clone())).is_ok()
        });
    }

    /// Queues the Event reporting a dropped write as `node` (see
    /// [`event::event_for`]). Called from the hub's loop, so it does not
    /// wait for the flush: the next flush (any put, or the store's own
    /// timer) makes it durable; an Event is best effort anyway.
    pub fn report_dropped(&self, node: &str, dropped: &Dropped) -> Result<(), OutboxError> {
        let Some((key, item)) = event::event_for(node, dropped, chrono::Utc::now()) else {
            return Ok(());
        };
        {
            let mut state = self.lock();
            if state.queue.len() >= MAX_ENTRIES && !state.queue.contains(&key) {
                return Err(OutboxError::Full { max: MAX_ENTRIES });
            }
            let (seq, _) = state.queue.put(key.clone(), item.clone());
            let value = serde_json::to_vec(&Stored { seq, item }).map_err(OutboxError::Encode)?;
            state.tree.put(&key, value)?;
            self.inner
                .metrics
                .outbox_depth
                .set(state.queue.len() as i64);
        }
        self.inner.notify.notify_one();
        Ok(())
    }

    /// The session ended: in-flight entries are sent again next session.
    pub fn restart(&self) {
        self.lock().queue.restart();
    }

    /// Entries queued.
    pub fn depth(&self) -> usize {
        self.lock().queue.len()
    }

    /// When a backed-off entry becomes ready.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.lock().queue.next_wakeup()
    }

    /// Resolves when something was put since the last call.
    pub async fn notified(&self) {
        self.inner.notify.notified().await;
    }
}

/// Number of entries queued in `store` (for `edgecore status` while stopped).
pub fn stored_depth(store: &Store) -> Result<usize, StoreError> {
    Ok(store.tree(TREE)?.len())
}

#[cfg(test)]
mod tests;
