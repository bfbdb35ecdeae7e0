//! Write batching under HTTP: the frames a connection writes within one scheduling round
//! go to TLS as one write.
//!
//! h2 flushes its transport after every DATA frame bigger than 256 bytes, and hyper's
//! HTTP/1 after every chunk, so one event fanned out to 100 watch streams on a connection was
//! 100 TLS records and 100 `writev` calls. [`Batched`] keeps what is written in a buffer.
//! Asked to flush, it flushes for real only at the connection task's *next* poll: it wakes
//! the task and reports the flush done, so what the other streams queue meanwhile — they
//! run before the woken connection task does — goes out in the same write. The next poll is
//! told by [`Epoch`], a counter the connection's future bumps on every poll ([`Epoch::run`]).
//!
//! A flush is late by one trip through the scheduler, never lost: both h2 and hyper's HTTP/1
//! flush their transport on every poll of the connection, the task was woken, the buffer is
//! written out before a shutdown and whenever it would exceed [`LIMIT`], and a write error
//! surfaces on that later flush (the connection is closed for it, as it would have been).

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before they are written out whatever the flushes say; also the size above
/// which one write goes through without a copy.
pub const LIMIT: usize = 256 * 1024;

/// Counts the polls of one connection's future.
#[derive(Clone, Default)]
pub struct Epoch(Arc<AtomicU64>);

impl Epoch {
    /// Drive `fut`, counting each poll.
    pub async fn run<F: Future>(self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            self.0.fetch_add(1, Ordering::Relaxed);
            fut.as_mut().poll(cx)
        })
        .await
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A transport whose flushes are batched per poll of its connection (see the module docs).
pub struct Batched<T> {
    inner: T,
    epoch: Epoch,
    buf: Vec<u8>,
    /// How much of `buf` is already written to `inner`.
    sent: usize,
    /// The poll in which a flush was put off (and the task woken), if one is pending.
    deferred: Option<u64>,
}

impl<T> Batched<T> {
    pub fn new(inner: T, epoch: Epoch) -> Self {
        Batched {
            inner,
            epoch,
            buf: Vec::new(),
            sent: 0,
            deferred: None,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Batched<T> {
    /// Write out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        if self.buf.capacity() > LIMIT {
            self.buf.shrink_to(LIMIT);
        }
        Poll::Ready(Ok(()))
    }

    /// Make room for `len` more bytes: write out the buffer if they would not fit.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() && self.buf.len() + len > LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Batched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx, data.len()))?;
        if data.len() >= LIMIT {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        ready!(this.poll_room(cx, len))?;
        if len >= LIMIT {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            this.deferred = None;
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        let now = this.epoch.now();
        match this.deferred {
            None => {
                this.deferred = Some(now);
                cx.waker().wake_by_ref();
                Poll::Ready(Ok(()))
            }
            Some(at) if at == now => Poll::Ready(Ok(())),
            Some(_) => {
                ready!(this.poll_drain(cx))?;
                this.deferred = None;
                Pin::new(&mut this.inner).poll_flush(cx)
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.deferred = None;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Batched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
