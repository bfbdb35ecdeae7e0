//! Closed-loop load: `workers` tasks take the next index from a shared counter and run one
//! operation each, spread round-robin over a few multiplexed connections.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::client::Conn;

/// One finished operation.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    /// Its index.
    pub i: usize,
    /// Request sent to response read.
    pub latency: Duration,
    /// The server acknowledged it (the operation's own notion of success).
    pub ok: bool,
}

/// What a load run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub done: Vec<Done>,
    pub elapsed: Duration,
    /// Transport errors (each one ended its worker), the first few kept.
    pub errors: Vec<String>,
    /// How many workers ended on a transport error.
    pub error_count: usize,
}

impl Outcome {
    /// The acknowledged operations.
    pub fn acked(&self) -> impl Iterator<Item = &Done> {
        self.done.iter().filter(|d| d.ok)
    }

    /// Operations answered with something else than success.
    pub fn refused(&self) -> usize {
        self.done.iter().filter(|d| !d.ok).count()
    }
}

/// Run `op(conn, i)` for `i` in `0..n` with `workers` concurrent tasks until done or `stop`
/// is set. `op` returns whether the server acknowledged; an `Err` (connection lost, timeout)
/// ends that worker, and the others carry on with the remaining indices.
pub async fn run<F, Fut>(
    conns: Vec<Conn>,
    workers: usize,
    n: usize,
    stop: Arc<AtomicBool>,
    op: F,
) -> Outcome
where
    F: Fn(Conn, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<bool>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers.max(1) {
        let conn = conns[w % conns.len()].clone();
        let (op, next, stop) = (op.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut error = None;
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                match op(conn.clone(), i).await {
                    Ok(ok) => done.push(Done {
                        i,
                        latency: t.elapsed(),
                        ok,
                    }),
                    Err(e) => {
                        error = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            (done, error)
        }));
    }
    let mut out = Outcome::default();
    for t in tasks {
        match t.await {
            Ok((done, error)) => {
                out.done.extend(done);
                if let Some(e) = error {
                    out.error_count += 1;
                    if out.errors.len() < 5 {
                        out.errors.push(e);
                    }
                }
            }
            Err(e) => {
                out.error_count += 1;
                out.errors.push(format!("worker panicked: {e}"));
            }
        }
    }
    out.elapsed = start.elapsed();
    out
}
