//! watch: a chunked stream of `{"type":..,"object":..}` lines.
//!
//! A watch first replays what the client missed — every current object (no or `0`
//! resourceVersion) or the flushed history after the given version — then follows the
//! store's broadcast. Selectors are applied to the old and the new object, so an object
//! that stops matching is sent as DELETED and one that starts matching as ADDED, as
//! Kubernetes does. A compacted version gives a 410 ERROR event inside the stream; a client
//! that falls too far behind the broadcast has its stream closed and resumes from the last
//! version it saw.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::read::{Selectors, columns, wants_table};
use super::{Ctx, Resp};
use crate::registry::Resource;
use crate::request::ResourcePath;
use crate::status::{ApiError, ApiResult};
use crate::store::{Event, EventType, Stored};
use crate::table::{self, IncludeObject, TableVersion};

struct Watcher {
    res: Arc<Resource>,
    prefix: String,
    sel: Selectors,
    /// Table rendering (kubectl get -w) and whether the column headers were sent.
    table: Option<(TableVersion, IncludeObject)>,
    headers_sent: bool,
}

impl Watcher {
    fn line(&mut self, kind: &'static str, obj: &Stored) -> Bytes {
        if let Some((version, include)) = self.table {
            let first = !self.headers_sent;
            self.headers_sent = true;
            let t = table::watch_table(columns(&self.res), &obj.value(), version, include, first);
            return event_line(kind, &serde_json::to_vec(&t).unwrap_or_default());
        }
        event_line(kind, &obj.raw)
    }

    /// What a watcher of this selection sees of a store event.
    fn translate(&mut self, ev: &Arc<Event>) -> Option<Bytes> {
        if !ev.key.starts_with(&self.prefix) {
            return None;
        }
        if self.sel.is_empty() {
            // Every watcher without selector or table sends the same line: encode it once.
            if self.table.is_none() {
                return Some(shared::line(ev, ev.kind.as_str()));
            }
            return Some(self.line(ev.kind.as_str(), &ev.obj));
        }
        let now = self.sel.matches_stored(&ev.obj);
        let before = ev.prev.as_ref().map(|p| self.sel.matches_stored(p));
        let kind = match (ev.kind, now, before) {
            (EventType::Added, true, _) => "ADDED",
            (EventType::Deleted, true, _) => "DELETED",
            (EventType::Modified, true, Some(false)) => "ADDED",
            (EventType::Modified, true, _) => "MODIFIED",
            (EventType::Modified, false, Some(true)) => "DELETED",
            _ => return None,
        };
        if self.table.is_none() {
            return Some(shared::line(ev, kind));
        }
        Some(self.line(kind, &ev.obj))
    }
}

/// Event lines shared by the watchers of one event: the first watcher to send an event
/// encodes it, the others clone the `Bytes` (1,000 watchers of a 6 KB pod would otherwise
/// copy it 1,000 times).
mod shared {
    use std::sync::{Arc, Mutex, Weak};

    use bytes::Bytes;

    use crate::store::Event;

    /// Lines of the last few events (watch tasks of different resources interleave).
    const SLOTS: usize = 8;

    struct Slot {
        /// The event (a weak reference: its allocation, hence its address, stays unique).
        ev: Weak<Event>,
        kind: &'static str,
        line: Bytes,
    }

    static CACHE: Mutex<Vec<Slot>> = Mutex::new(Vec::new());

    /// The `{"type":kind,"object":..}` line of `ev`'s object.
    pub(super) fn line(ev: &Arc<Event>, kind: &'static str) -> Bytes {
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let ptr = Arc::as_ptr(ev);
        if let Some(s) = cache
            .iter()
            .find(|s| s.kind == kind && std::ptr::eq(s.ev.as_ptr(), ptr))
        {
            return s.line.clone();
        }
        let line = super::event_line(kind, &ev.obj.raw);
        if cache.len() == SLOTS {
            cache.remove(0);
        }
        cache.push(Slot {
            ev: Arc::downgrade(ev),
            kind,
            line: line.clone(),
        });
        line
    }
}

fn event_line(kind: &str, obj: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(obj.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(obj);
    b.put_slice(b"}\n");
    b.freeze()
}

fn error_line(e: &ApiError) -> Bytes {
    event_line(
        "ERROR",
        &serde_json::to_vec(&e.to_status()).unwrap_or_default(),
    )
}

fn bookmark(res: &Resource, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta});
    event_line("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())
}

/// Start a watch.
pub async fn watch(ctx: &Ctx, res: &Arc<Resource>, rp: &ResourcePath) -> ApiResult<Resp> {
    let sel = Selectors::from_ctx(ctx, res)?;
    let mut prefix = res.prefix();
    if let Some(ns) = &rp.namespace {
        prefix.push_str(ns);
        prefix.push('/');
    }
    let table = match table::parse_table_accept(&ctx.accept) {
        Some(v) => Some((
            v,
            table::parse_include_object(ctx.query.get("includeObject"))
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        )),
        None => None,
    };
    let mut w = Watcher {
        res: res.clone(),
        prefix,
        sel,
        table,
        headers_sent: false,
    };
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let timeout = ctx
        .query
        .int("timeoutSeconds")
        .map_err(ApiError::bad_request)?
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64))
        .unwrap_or(Duration::from_secs(1800));
    let send_initial = ctx.query.flag("sendInitialEvents");
    let rv_param = ctx.query.get("resourceVersion").unwrap_or("").to_string();
    let store = ctx.api.store.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(256);

    // Decide what to replay, and subscribe, before answering.
    let mut first: Vec<Bytes> = Vec::new();
    let (mut events_rx, mut last_rv): (Option<broadcast::Receiver<Arc<Event>>>, u64);
    if rv_param.is_empty() || rv_param == "0" || send_initial {
        let (rx, rv) = store.subscribe();
        let (items, _) = store.list(&w.prefix, None);
        for (_, obj) in items {
            if obj.rv <= rv && w.sel.matches_stored(&obj) {
                first.push(w.line("ADDED", &obj));
            }
        }
        if send_initial {
            first.push(bookmark(res, rv, true));
        }
        events_rx = Some(rx);
        last_rv = rv;
    } else {
        match rv_param.parse::<u64>() {
            Ok(from) if from <= store.current_rv() => match store.watch_from(from) {
                Ok((replay, rx)) => {
                    for ev in &replay {
                        if let Some(l) = w.translate(ev) {
                            first.push(l);
                        }
                    }
                    last_rv = replay.last().map(|e| e.rv).unwrap_or(from);
                    events_rx = Some(rx);
                }
                Err(compacted) => {
                    first.push(error_line(&ApiError::gone(format!(
                        "too old resource version: {from} ({compacted})"
                    ))));
                    events_rx = None;
                    last_rv = 0;
                }
            },
            _ => {
                first.push(error_line(&ApiError::gone(format!(
                    "too old resource version: {rv_param} ({})",
                    store.current_rv()
                ))));
                events_rx = None;
                last_rv = 0;
            }
        }
    }
    let api = ctx.api.clone();
    let interval = api.cfg.bookmark_interval;
    tokio::spawn(async move {
        api.metrics.watchers.inc();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        'out: {
            for l in first {
                if tx.send(l).await.is_err() {
                    break 'out;
                }
            }
            let Some(rx) = events_rx.as_mut() else {
                break 'out;
            };
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Ok(ev) => {
                            if ev.rv <= last_rv { continue; }
                            last_rv = ev.rv;
                            if let Some(l) = w.translate(&ev)
                                && tx.send(l).await.is_err() { break; }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!(missed = n, "watcher fell behind; closing its stream");
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(bookmark(&w.res, last_rv, false)).await.is_err() { break; }
                    }
                    _ = &mut deadline => break,
                    _ = tx.closed() => break,
                    _ = api.shutdown.cancelled() => break,
                }
            }
        }
        api.metrics.watchers.dec();
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    let ct = if wants_table(ctx) {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(resp)
}
