use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::task::{Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::DuplexStream;

use super::*;

/// An in-memory transport that records every write and flush; it can refuse the next
/// write once (Pending), as a full socket does.
#[derive(Default)]
struct Sink {
    data: Vec<u8>,
    writes: usize,
    flushes: usize,
    shut: bool,
    refuse_next: bool,
}

impl AsyncWrite for Sink {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, d: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.refuse_next) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Take at most 64 KiB at a time, as a socket might.
        let n = d.len().min(64 * 1024);
        this.data.extend_from_slice(&d[..n]);
        this.writes += 1;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flushes += 1;
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().shut = true;
        Poll::Ready(Ok(()))
    }
}

#[derive(Default)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Woken {
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

fn frame(i: usize, len: usize) -> Vec<u8> {
    vec![(i % 251) as u8; len]
}

/// One "poll" of the connection: bump the epoch, then run `f` with a context.
fn poll_once<R>(epoch: &Epoch, waker: &Waker, f: impl FnOnce(&mut Context<'_>) -> R) -> R {
    epoch.0.fetch_add(1, Ordering::Relaxed);
    f(&mut Context::from_waker(waker))
}

fn write_all(b: &mut Batched<Sink>, cx: &mut Context<'_>, d: &[u8]) {
    match Pin::new(b).poll_write(cx, d) {
        Poll::Ready(Ok(n)) => assert_eq!(n, d.len(), "a buffered write takes everything"),
        other => panic!("write: {other:?}"),
    }
}

#[test]
fn flushes_within_one_poll_become_one_write() {
    let epoch = Epoch::default();
    let woken = Arc::new(Woken::default());
    let waker = Waker::from(woken.clone());
    let mut b = Batched::new(Sink::default(), epoch.clone());
    let mut want = Vec::new();
    poll_once(&epoch, &waker, |cx| {
        for i in 0..30 {
            let f = frame(i, 6 * 1024);
            write_all(&mut b, cx, &f);
            want.extend_from_slice(&f);
            assert!(Pin::new(&mut b).poll_flush(cx).is_ready());
        }
    });
    assert_eq!(b.get_ref().writes, 0, "nothing is written within the poll");
    assert!(woken.take(), "the put-off flush woke the task");
    poll_once(&epoch, &waker, |cx| {
        assert!(matches!(
            Pin::new(&mut b).poll_flush(cx),
            Poll::Ready(Ok(()))
        ));
    });
    let s = b.get_ref();
    assert_eq!(s.data, want, "every byte, in order");
    assert!(s.writes <= 3, "30 flushed frames took {} writes", s.writes);
    assert_eq!(s.flushes, 1);
    assert!(!woken.take(), "nothing left to flush: no wake");
}

#[test]
fn a_flush_with_nothing_buffered_goes_straight_through() {
    let epoch = Epoch::default();
    let waker = Waker::from(Arc::new(Woken::default()));
    let mut b = Batched::new(Sink::default(), epoch.clone());
    poll_once(&epoch, &waker, |cx| {
        assert!(Pin::new(&mut b).poll_flush(cx).is_ready());
    });
    assert_eq!(b.get_ref().flushes, 1);
}

#[test]
fn a_full_buffer_is_written_without_waiting_for_a_flush() {
    let epoch = Epoch::default();
    let waker = Waker::from(Arc::new(Woken::default()));
    let mut b = Batched::new(Sink::default(), epoch.clone());
    let mut want = Vec::new();
    poll_once(&epoch, &waker, |cx| {
        for i in 0..(LIMIT / 16_384 + 2) {
            let f = frame(i, 16_384);
            write_all(&mut b, cx, &f);
            want.extend_from_slice(&f);
        }
        // One write of LIMIT or more is passed through once the buffer is out.
        let big = frame(7, LIMIT);
        let n = match Pin::new(&mut b).poll_write(cx, &big) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("big write: {other:?}"),
        };
        want.extend_from_slice(&big[..n]);
    });
    let s = b.get_ref();
    assert!(s.writes > 0, "the buffer was not written out when full");
    assert_eq!(s.data, want);
}

#[test]
fn shutdown_writes_what_is_buffered_first() {
    let epoch = Epoch::default();
    let waker = Waker::from(Arc::new(Woken::default()));
    let mut b = Batched::new(Sink::default(), epoch.clone());
    poll_once(&epoch, &waker, |cx| {
        write_all(&mut b, cx, b"last words");
        assert!(Pin::new(&mut b).poll_flush(cx).is_ready());
        assert!(Pin::new(&mut b).poll_shutdown(cx).is_ready());
    });
    let s = b.get_ref();
    assert_eq!(s.data, b"last words");
    assert!(s.shut);
}

#[test]
fn a_transport_that_is_not_ready_loses_and_repeats_nothing() {
    let epoch = Epoch::default();
    let waker = Waker::from(Arc::new(Woken::default()));
    let mut b = Batched::new(Sink::default(), epoch.clone());
    let want = frame(3, 100_000);
    poll_once(&epoch, &waker, |cx| {
        write_all(&mut b, cx, &want);
        assert!(Pin::new(&mut b).poll_flush(cx).is_ready());
    });
    b.inner.refuse_next = true;
    let first = poll_once(&epoch, &waker, |cx| Pin::new(&mut b).poll_flush(cx));
    assert!(first.is_pending(), "a refused write makes the flush wait");
    let second = poll_once(&epoch, &waker, |cx| Pin::new(&mut b).poll_flush(cx));
    assert!(matches!(second, Poll::Ready(Ok(()))));
    assert_eq!(b.get_ref().data, want);
}

/// A duplex end that counts the writes reaching it.
struct Counted {
    io: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, d: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, d);
        if r.is_ready() {
            this.writes.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The real thing: an HTTP/2 server on `Batched` sends one 6 KB event to each of 100
/// streaming responses at once, as a watch fan-out does. Every stream gets its event
/// (a flush put off and never done would hang here), in far fewer writes than frames
/// (unbatched, each stream's DATA frame is a write of its own: 100 or more).
#[tokio::test(flavor = "current_thread")]
async fn an_h2_fan_out_arrives_whole_in_few_writes() {
    let writes = h2_fan_out().await;
    assert!(
        writes < STREAMS / 4,
        "{writes} writes for {STREAMS} streams' events: not batched"
    );
}

/// The same on two worker threads, where the connection task may run beside the streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_fan_out_arrives_whole_on_two_threads() {
    let writes = h2_fan_out().await;
    assert!(
        writes < STREAMS,
        "{writes} writes for {STREAMS} streams' events: not batched"
    );
}

const STREAMS: usize = 100;

/// Run the fan-out; the number of transport writes it took.
async fn h2_fan_out() -> usize {
    let (client_io, server_io) = tokio::io::duplex(8 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let event = tokio::sync::broadcast::channel::<Bytes>(4).0;
    let server = {
        let (writes, event) = (writes.clone(), event.clone());
        tokio::spawn(async move {
            let epoch = Epoch::default();
            let io = Batched::new(
                Counted {
                    io: server_io,
                    writes,
                },
                epoch.clone(),
            );
            let svc = hyper::service::service_fn(move |_req| {
                let mut rx = event.subscribe();
                let body = futures::stream::once(async move {
                    let b = rx.recv().await.unwrap_or_default();
                    Ok::<_, Infallible>(Frame::data(b))
                });
                async move { Ok::<_, Infallible>(hyper::Response::new(StreamBody::new(body))) }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), svc);
            epoch.run(conn).await
        })
    };
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(client_io))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let mut responses = Vec::new();
    for _ in 0..STREAMS {
        let mut send = send.clone();
        let req = hyper::Request::new(http_body_util::Empty::new());
        responses.push(tokio::spawn(async move { send.send_request(req).await }));
    }
    let mut bodies = Vec::new();
    for r in responses {
        bodies.push(r.await.expect("join").expect("response").into_body());
    }
    // Headers are out; wait for every stream's subscriber, then send one event.
    let settle = tokio::time::Instant::now() + Duration::from_secs(10);
    while event.receiver_count() < STREAMS {
        assert!(
            tokio::time::Instant::now() < settle,
            "streams did not subscribe"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = writes.load(Ordering::Relaxed);
    let payload = Bytes::from(vec![b'x'; 6_000]);
    event.send(payload.clone()).expect("subscribers");
    let got = Mutex::new(0usize);
    tokio::time::timeout(Duration::from_secs(10), async {
        for body in bodies {
            let bytes = body.collect().await.expect("body").to_bytes();
            assert_eq!(bytes, payload);
            *got.lock().unwrap() += 1;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "a put-off flush was never done: {} of {STREAMS} events arrived",
            got.lock().unwrap()
        )
    });
    server.abort();
    writes.load(Ordering::Relaxed) - before
}
