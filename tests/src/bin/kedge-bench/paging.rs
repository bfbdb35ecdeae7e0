//! Pagination of many objects (issue 3): create `paged` small ConfigMaps concurrently, then
//! walk them in pages of 500, checking that every object is listed exactly once; report the
//! walk's time and the server's memory before and during it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use http::StatusCode;
use tests::Standalone;

use crate::client::{Conn, Endpoint};
use crate::fixtures::{cm_name, configmap};
use crate::pods::page_through;
use crate::report::{Mem, Pcts, Report, count, mib, ms, rate, reset_peak};
use crate::{Opts, load};

const NS: &str = "paging";

/// Run the pagination benchmark in `dir`.
pub async fn run(opts: &Opts, dir: &Path, report: &mut Report) -> Result<()> {
    let n = opts.paged;
    eprintln!("paging: creating {n} ConfigMaps");
    let server = Standalone::start(&dir.join("paging"), &[])?;
    let pid = server.child.id();
    let ep = Endpoint::of(&server)?;
    let conns = ep.connect_many(opts.connections).await?;
    conns[0].create_namespace(NS).await?;
    let never = Arc::new(AtomicBool::new(false));
    let created = load::run(conns, opts.workers, n, never, |c: Conn, i| async move {
        let path = format!("/api/v1/namespaces/{NS}/configmaps");
        let (status, _) = c.post_json(&path, configmap(&cm_name("obj", i))).await?;
        Ok(status == StatusCode::CREATED)
    })
    .await;
    let ok = created.acked().count();
    report.info(
        &format!("durable creates/s while filling {} ConfigMaps", count(n)),
        format!("{:.0}/s", rate(ok, created.elapsed)),
    );
    if ok != n {
        report.broken(format!(
            "only {ok} of {n} ConfigMaps created; errors: {:?}",
            created.errors
        ));
    }

    let before = Mem::of(pid)?;
    let peak_reset = reset_peak(pid);
    eprintln!("paging: walking {n} ConfigMaps in pages of 500");
    let c = ep.connect().await?;
    let mut pages = Vec::new();
    let t = std::time::Instant::now();
    let names = page_through(
        &c,
        &format!("/api/v1/namespaces/{NS}/configmaps"),
        &mut pages,
    )
    .await?;
    let walk = t.elapsed();
    let after = Mem::of(pid)?;
    // Only ours: the namespace also holds what admission put there (kube-root-ca.crt).
    let ours: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with("obj-"))
        .collect();
    let listed = ours.len();
    let unique: HashSet<String> = ours.into_iter().collect();
    report.info(
        &format!(
            "page through {} ConfigMaps, limit=500 ({} pages): total",
            count(n),
            pages.len()
        ),
        ms(walk),
    );
    report.info("… one page: p50 / p99 / max", Pcts::of(pages).show());
    report.info(
        "… server memory: RSS before walk / peak RSS during walk / RSS after",
        format!(
            "{} / {} / {}{}",
            mib(before.rss_kib),
            mib(after.hwm_kib),
            mib(after.rss_kib),
            if peak_reset {
                ""
            } else {
                " (peak since start: clear_refs refused)"
            }
        ),
    );
    report.info(
        "… server peak RSS over the whole run (filling + walk)",
        mib(before.hwm_kib.max(after.hwm_kib)),
    );
    if listed != n || unique.len() != n {
        report.broken(format!(
            "paging listed {listed} items, {} distinct, expected {n}",
            unique.len()
        ));
    }
    Ok(())
}
