//! List response bodies streamed in chunks instead of built in one buffer.
//!
//! A list of 10,000 pods is ~60 MB of JSON. Built in one contiguous buffer it costs an
//! allocation the size of the response (above glibc's mmap threshold: fresh zeroed pages,
//! faulted in and unmapped again per list) and a copy of every object; it also delays the
//! first byte until the last object is copied. Here the body is a stream: the list's head,
//! then the items rendered into chunks of about [`CHUNK`] bytes as hyper asks for them, then
//! the tail. JSON items are the stored bytes spliced in as they are (no parse, no
//! serialisation); Table rows are rendered one at a time. Small bodies (one chunk) are
//! sent whole, with a `Content-Length`.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::handler::{Resp, json_resp};
use crate::store::Stored;

/// Target size of one chunk of a streamed body (64 KiB: four HTTP/2 frames at the default
/// frame size, well below glibc's mmap threshold so chunk buffers come from the heap).
pub const CHUNK: usize = 64 << 10;

/// Renders one item of a list into a body (the separators are written for it).
pub trait RenderItems: Send + Sync + 'static {
    /// Append `item` to `out`.
    fn render(&mut self, item: &Stored, out: &mut BytesMut);

    /// What goes between two items (a JSON array's comma; nothing between protobuf ones).
    fn separator(&self) -> &'static [u8] {
        b","
    }
}

/// JSON items: the stored bytes, spliced.
#[derive(Debug)]
pub struct RawItems;

impl RenderItems for RawItems {
    fn render(&mut self, item: &Stored, out: &mut BytesMut) {
        out.put_slice(&item.raw);
    }
}

/// The chunks of a list body: `head`, the items rendered by `R`, `tail`.
pub struct Chunks<R> {
    buf: BytesMut,
    items: Vec<Stored>,
    pos: usize,
    render: R,
    tail: Option<&'static [u8]>,
    /// Room left past [`CHUNK`] in each new buffer: the largest rendered item so far (plus
    /// its comma), so that the item that crosses [`CHUNK`] fits without the buffer growing —
    /// a growth is a reallocation and a copy of the whole chunk (a 6 KB pod crossed the old
    /// fixed 1 KiB slack in nearly every chunk: 3.4 % of the server's CPU per list).
    slack: usize,
}

impl<R: RenderItems> Chunks<R> {
    /// A body that starts with `head`, lists `items` and ends with `tail`.
    pub fn new(head: &[u8], items: Vec<Stored>, render: R, tail: &'static [u8]) -> Self {
        let mut buf = BytesMut::with_capacity(CHUNK.max(head.len()) + 1024);
        buf.put_slice(head);
        Self {
            buf,
            items,
            pos: 0,
            render,
            tail: Some(tail),
            slack: 1024,
        }
    }
}

impl<R: RenderItems> Iterator for Chunks<R> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.buf.len() >= CHUNK {
                let next = BytesMut::with_capacity(CHUNK + self.slack);
                return Some(std::mem::replace(&mut self.buf, next).freeze());
            }
            if self.pos < self.items.len() {
                let before = self.buf.len();
                if self.pos > 0 {
                    self.buf.put_slice(self.render.separator());
                }
                self.render.render(&self.items[self.pos], &mut self.buf);
                self.slack = self.slack.max(self.buf.len() - before);
                self.pos += 1;
                continue;
            }
            if let Some(t) = self.tail.take() {
                self.buf.put_slice(t);
            }
            if self.buf.is_empty() {
                // Release the items as soon as everything is sent.
                self.items = Vec::new();
                return None;
            }
            return Some(std::mem::take(&mut self.buf).freeze());
        }
    }
}

/// A 200 response with `content_type` whose body is `chunks`: whole when it fits in one
/// chunk, streamed otherwise.
pub fn chunked_resp<R: RenderItems>(mut chunks: Chunks<R>, content_type: &'static str) -> Resp {
    let first = chunks.next().unwrap_or_default();
    let second = chunks.next();
    let mut resp = match second {
        None => json_resp(200, first),
        Some(second) => {
            let stream = futures::stream::iter(
                [first, second]
                    .into_iter()
                    .chain(chunks)
                    .map(|b| Ok::<_, std::io::Error>(Frame::data(b))),
            );
            let mut r = Response::new(StreamBody::new(stream).boxed());
            *r.status_mut() = StatusCode::OK;
            r
        }
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items(n: usize, pad: usize) -> Vec<Stored> {
        (0..n)
            .map(|i| {
                Stored::detached(
                    json!({"metadata": {"name": format!("o{i}")}, "pad": "x".repeat(pad)}),
                    "core/configmaps/d/o",
                    i as u64 + 1,
                )
            })
            .collect()
    }

    fn body(head: &[u8], items: Vec<Stored>) -> (Vec<Bytes>, Vec<u8>) {
        let chunks: Vec<Bytes> = Chunks::new(head, items, RawItems, b"]}").collect();
        let all = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        (chunks, all)
    }

    /// Once an item is known, every new chunk buffer has room for CHUNK plus such an item, so
    /// the item crossing CHUNK never makes the buffer grow (a reallocation and a copy).
    #[test]
    fn chunk_buffers_have_room_for_the_largest_item() {
        let its = items(100, 6000);
        let item = its[0].raw.len() + 1;
        let mut chunks = Chunks::new(b"[", its, RawItems, b"]");
        for _ in 0..3 {
            let c = chunks.next().unwrap();
            assert!(c.len() >= CHUNK);
            assert!(
                chunks.buf.capacity() >= CHUNK + item,
                "a new buffer of {} bytes for items of {item}",
                chunks.buf.capacity()
            );
        }
    }

    #[test]
    fn chunks_join_to_the_whole_list() {
        for (n, pad) in [(0, 0), (1, 10), (3, 100), (500, 1000), (40, 200_000)] {
            let its = items(n, pad);
            let expected: Vec<serde_json::Value> = its.iter().map(|s| s.value()).collect();
            let (chunks, all) = body(br#"{"kind":"List","items":["#, its);
            let v: serde_json::Value = serde_json::from_slice(&all).unwrap();
            assert_eq!(v["items"], serde_json::Value::Array(expected), "{n} items");
            assert!(chunks.iter().all(|c| !c.is_empty()));
            if n * pad > 4 * CHUNK {
                assert!(chunks.len() > 2, "{n} items of {pad} bytes in one chunk");
                // No chunk but the last is much smaller than CHUNK, none much larger than
                // CHUNK plus one item.
                for c in &chunks[..chunks.len() - 1] {
                    assert!(
                        c.len() >= CHUNK && c.len() <= CHUNK + pad + 100,
                        "{}",
                        c.len()
                    );
                }
            }
        }
    }
}
