//! Durable creates: how many ConfigMap creates per second the server acknowledges — each
//! acknowledgement promising the write is on disk — and whether the promise holds when the
//! server is killed with SIGKILL while creates are still in flight.
//!
//! The timed run creates a fixed count. Then the same clients keep creating ("tail") and
//! the server is killed under them; after a restart on the same data directory, every
//! create acknowledged in either run must be listed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use http::StatusCode;
use tests::Standalone;

use crate::client::{Conn, Endpoint};
use crate::fixtures::{cm_name, configmap};
use crate::report::{Pcts, Report, count, ms, rate};
use crate::{Opts, load, wire};

const NS: &str = "durable";
/// How long the tail runs before the kill.
const TAIL: Duration = Duration::from_millis(300);

fn create(prefix: &'static str) -> impl Fn(Conn, usize) -> CreateFut + Send + Sync + 'static {
    move |c: Conn, i: usize| -> CreateFut {
        Box::pin(async move {
            let path = format!("/api/v1/namespaces/{NS}/configmaps");
            let (status, _) = c.post_json(&path, configmap(&cm_name(prefix, i))).await?;
            Ok(status == StatusCode::CREATED)
        })
    }
}

type CreateFut = std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send>>;

/// Run the durable-create benchmark in `dir`.
pub async fn run(opts: &Opts, dir: &Path, report: &mut Report) -> Result<()> {
    let data = dir.join("durable");
    eprintln!(
        "durable creates: {} ConfigMaps, {} clients",
        opts.creates, opts.workers
    );
    let mut server = Standalone::start(&data, &[])?;
    let ep = Endpoint::of(&server)?;
    let conns = ep.connect_many(opts.connections).await?;
    conns[0].create_namespace(NS).await?;

    let never = Arc::new(AtomicBool::new(false));
    let timed = load::run(
        conns.clone(),
        opts.workers,
        opts.creates,
        never,
        create("cm"),
    )
    .await;
    let acked: Vec<String> = timed.acked().map(|d| cm_name("cm", d.i)).collect();
    let r = rate(acked.len(), timed.elapsed);
    report.check(
        &format!(
            "durable creates/s ({} ConfigMaps, {} clients, {} HTTP/2 conns)",
            count(opts.creates),
            opts.workers,
            opts.connections
        ),
        format!("{r:.0}/s"),
        "≥ 2,000/s",
        r >= 2000.0,
    );
    let lat = Pcts::of(timed.acked().map(|d| d.latency).collect());
    report.info("create latency p50 / p99 / max", lat.show());
    if acked.len() != opts.creates {
        report.broken(format!(
            "only {} of {} creates acknowledged ({} refused; errors: {:?})",
            acked.len(),
            opts.creates,
            timed.refused(),
            timed.errors
        ));
    }

    // Keep creating and kill the server under the load.
    let stop = Arc::new(AtomicBool::new(false));
    let tail = tokio::spawn(load::run(
        conns,
        opts.workers,
        usize::MAX,
        stop.clone(),
        create("tail"),
    ));
    tokio::time::sleep(TAIL).await;
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let tail = tail.await?;
    let tail_acked: Vec<String> = tail.acked().map(|d| cm_name("tail", d.i)).collect();
    eprintln!(
        "killed with SIGKILL after {} more acknowledged creates",
        tail_acked.len()
    );

    let t = Instant::now();
    let server = Standalone::start(&data, &[])?;
    let restart = t.elapsed();
    let c = Endpoint::of(&server)?.connect().await?;
    let list = wire::list(
        &c.get_ok(&format!("/api/v1/namespaces/{NS}/configmaps"))
            .await?,
    )?;
    // Only ours: the namespace also holds what admission put there (kube-root-ca.crt).
    let present: HashSet<String> = list
        .items
        .into_iter()
        .map(|o| o.metadata.name)
        .filter(|n| n.starts_with("cm-") || n.starts_with("tail-"))
        .collect();
    let all: Vec<&String> = acked.iter().chain(&tail_acked).collect();
    let missing: Vec<&&String> = all.iter().filter(|n| !present.contains(**n)).collect();
    let kept = all.len() - missing.len();
    report.check(
        "acknowledged creates present after kill -9 under load and restart",
        format!(
            "{} of {} (+{} in flight at the kill, unacknowledged, also present)",
            count(kept),
            count(all.len()),
            present.len().saturating_sub(kept)
        ),
        "all",
        missing.is_empty(),
    );
    if !missing.is_empty() {
        report.broken(format!(
            "{} acknowledged creates are gone after kill -9, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    report.info(
        "restart on the same data dir after kill -9 (until kubeconfig written)",
        ms(restart),
    );
    Ok(())
}
