//! One update, many watchers: `watchers` watch streams on the pods' namespace (at most 100
//! per HTTP/2 connection; the server allows 200), then `updates` merge patches of one pod,
//! one at a time. A delivery's latency is the time from the patch's response reaching the
//! client to a watcher reading the MODIFIED event; it is also reported from the moment the
//! patch was sent, which includes the group commit's fsync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use crate::client::{Conn, Endpoint, MERGE_PATCH};
use crate::fixtures::pod_name;
use crate::pods::NS;
use crate::report::{CpuMeter, Pcts, Report, count, ms};
use crate::{Opts, wire};

/// Watch streams per connection.
const STREAMS_PER_CONN: usize = 100;
/// How long an update may take to reach every watcher before it counts as lost.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared by the watcher tasks.
#[derive(Default)]
struct Seen {
    ready: AtomicUsize,
    modified: AtomicUsize,
    log: Mutex<Vec<(u64, Instant)>>,
}

/// Run the watch fan-out benchmark against the pods server.
pub async fn run(ep: &Endpoint, pid: u32, opts: &Opts, report: &mut Report) -> Result<()> {
    let w = opts.watchers;
    eprintln!("watch: {w} watchers, {} updates", opts.updates);
    let ctl = ep.connect().await?;
    let head = wire::list(
        &ctl.get_ok(&format!("/api/v1/namespaces/{NS}/pods?limit=1"))
            .await?,
    )?;
    let from = head.metadata.resource_version;
    let conns = ep.connect_many(w.div_ceil(STREAMS_PER_CONN)).await?;
    let seen = Arc::new(Seen::default());
    let path =
        format!("/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion={from}&timeoutSeconds=1800");
    let mut tasks = Vec::with_capacity(w);
    for i in 0..w {
        let (conn, seen, path) = (conns[i % conns.len()].clone(), seen.clone(), path.clone());
        tasks.push(tokio::spawn(watcher(conn, path, seen)));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.ready.load(Ordering::Relaxed) < w {
        if let Some(pos) = tasks.iter().position(|t| t.is_finished()) {
            let err = match tasks.swap_remove(pos).await? {
                Err(e) => format!("{e:#}"),
                Ok(()) => "its stream ended".to_string(),
            };
            bail!("a watcher ended before all were ready: {err}");
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {w} watches started within 120 s",
                seen.ready.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let target = format!("/api/v1/namespaces/{NS}/pods/{}", pod_name(0));
    let mut sent: HashMap<u64, (Instant, Instant)> = HashMap::new();
    let mut late = 0;
    let cpu = CpuMeter::start(pid)?;
    for k in 0..opts.updates {
        let patch =
            serde_json::json!({"metadata": {"annotations": {"kedge-bench/seq": k.to_string()}}});
        let t_send = Instant::now();
        let (status, body) = ctl
            .call(
                Method::PATCH,
                &target,
                Some(MERGE_PATCH),
                serde_json::to_vec(&patch)?.into(),
            )
            .await?;
        let t_resp = Instant::now();
        if status != StatusCode::OK {
            bail!(
                "patching {target}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        sent.insert(wire::object_rv(&body)?, (t_send, t_resp));
        let want = w * (k + 1);
        let until = Instant::now() + DELIVERY_TIMEOUT;
        while seen.modified.load(Ordering::Relaxed) < want && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if seen.modified.load(Ordering::Relaxed) < want {
            late += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu.per_op(opts.updates)?;
    for t in &tasks {
        t.abort();
    }

    let log = std::mem::take(&mut *seen.log.lock().unwrap_or_else(|p| p.into_inner()));
    let (mut from_resp, mut from_send, mut early) = (Vec::new(), Vec::new(), 0);
    for (rv, at) in log {
        if let Some((t_send, t_resp)) = sent.get(&rv) {
            from_resp.push(at.saturating_duration_since(*t_resp));
            from_send.push(at.saturating_duration_since(*t_send));
            early += usize::from(at < *t_resp);
        }
    }
    let expected = w * opts.updates;
    let got = from_resp.len();
    let resp = Pcts::of(from_resp);
    let send = Pcts::of(from_send);
    report.check(
        &format!(
            "one update → {} watchers: p99 delivery after the update's response",
            count(w)
        ),
        ms(resp.p99),
        "≤ 20 ms",
        resp.p99 <= Duration::from_millis(20) && got == expected,
    );
    report.info("… after the response: p50 / p99 / max", resp.show());
    report.info(
        "… after the request was sent (includes fsync): p50 / p99 / max",
        send.show(),
    );
    report.info(
        "… deliveries",
        format!(
            "{} of {} ({} seen before the update's response arrived)",
            count(got),
            count(expected),
            count(early)
        ),
    );
    report.info(
        "… CPU per update and its fan-out: server / benchmark client",
        cpu,
    );
    if got != expected || late > 0 {
        report.broken(format!(
            "watchers received {got} of {expected} events ({late} updates not delivered to all within {DELIVERY_TIMEOUT:?})"
        ));
    }
    Ok(())
}

/// One watch stream: records the arrival time of every MODIFIED event.
async fn watcher(conn: Conn, path: String, seen: Arc<Seen>) -> Result<()> {
    let resp = conn
        .send(Method::GET, &path, None, Default::default())
        .await?;
    if resp.status() != StatusCode::OK {
        bail!("watch answered {}", resp.status());
    }
    seen.ready.fetch_add(1, Ordering::Relaxed);
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    // Bytes of `buf` already searched for a newline (a line may span frames).
    let mut scanned = 0;
    while let Some(frame) = body.frame().await {
        let at = Instant::now();
        let Ok(data) = frame.context("reading the watch stream")?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf[scanned..].iter().position(|b| *b == b'\n') {
            let line = buf.split_to(scanned + end + 1);
            scanned = 0;
            match wire::watch_event(&line) {
                Some(("MODIFIED", rv)) => {
                    seen.log
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((rv, at));
                    seen.modified.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
                None => bail!("unexpected watch line: {}", String::from_utf8_lossy(&line)),
            }
        }
        scanned = buf.len();
    }
    Ok(())
}
