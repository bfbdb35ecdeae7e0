//! Lists of many realistic pods: create them (and set their status, as kubelets would),
//! list them whole and in pages of 500, and read the server's memory; then hand the server
//! to the watch benchmark.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use tests::Standalone;

use crate::client::{Conn, Endpoint, JSON, MERGE_PATCH, PROTOBUF_FIRST};
use crate::fixtures::{pod, pod_name, pod_status};
use crate::report::{CpuMeter, Mem, Pcts, Report, count, mib, ms, rate};
use crate::{Opts, load, watch, wire};

/// The namespace holding the pods.
pub const NS: &str = "bench";
/// Page size of the paged lists.
const PAGE: usize = 500;

/// Run the pod benchmarks (lists, memory, then watchers) in `dir`.
pub async fn run(opts: &Opts, dir: &Path, report: &mut Report) -> Result<()> {
    let server = Standalone::start(&dir.join("pods"), &[])?;
    let pid = server.child.id();
    let base = Mem::of(pid)?;
    let ep = Endpoint::of(&server)?;
    let conns = ep.connect_many(opts.connections).await?;
    conns[0].create_namespace(NS).await?;
    let n = opts.pods;

    eprintln!("pods: creating {n} pods and setting their status");
    let never = Arc::new(AtomicBool::new(false));
    let created = load::run(
        conns.clone(),
        opts.workers,
        n,
        never.clone(),
        |c: Conn, i| async move {
            let path = format!("/api/v1/namespaces/{NS}/pods");
            let (status, _) = c.post_json(&path, pod(i)).await?;
            Ok(status == StatusCode::CREATED)
        },
    )
    .await;
    let after_create = Mem::of(pid)?;
    let patched = load::run(conns, opts.workers, n, never, |c: Conn, i| async move {
        let path = format!("/api/v1/namespaces/{NS}/pods/{}/status", pod_name(i));
        let (status, _) = c
            .call(Method::PATCH, &path, Some(MERGE_PATCH), pod_status(i))
            .await?;
        Ok(status == StatusCode::OK)
    })
    .await;
    let after_status = Mem::of(pid)?;
    for (what, o) in [("pod creates", &created), ("pod status patches", &patched)] {
        let ok = o.acked().count();
        report.info(
            &format!("{what}/s (durable, {} clients)", opts.workers),
            format!("{:.0}/s", rate(ok, o.elapsed)),
        );
        if ok != n {
            report.broken(format!(
                "only {ok} of {n} {what} succeeded; errors: {:?}",
                o.errors
            ));
        }
    }

    let lc = ep.connect().await?;
    let path = format!("/api/v1/namespaces/{NS}/pods");
    let body = lc.get_ok(&path).await?;
    let items = wire::list(&body)?.items.len();
    if items != n {
        bail!("listed {items} pods, created {n}");
    }
    report.info(
        "pod object size (JSON, as stored and listed)",
        format!("{:.0} bytes avg", body.len() as f64 / n as f64),
    );

    eprintln!("pods: {} whole lists", opts.lists);
    // Same pods, same list: a body of another size or cut short is a broken list.
    let label = format!("list {} pods, one request, JSON", count(n));
    whole_list_rows(&ep, &path, JSON, pid, opts, report, &label, &body, b"]}").await?;

    protobuf_lists(&ep, &lc, &path, pid, n, opts, report).await?;

    eprintln!("pods: {} paged lists", opts.page_rounds);
    let mut rounds = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..opts.page_rounds {
        let t = Instant::now();
        let seen = page_through(&lc, &path, &mut pages).await?.len();
        rounds.push(t.elapsed());
        if seen != n {
            report.broken(format!("paging saw {seen} pods, expected {n}"));
        }
    }
    let rounds = Pcts::of(rounds);
    report.info(
        &format!(
            "list {} pods in pages of {PAGE}, whole walk: p50 / p99",
            count(n)
        ),
        format!("{} / {}", ms(rounds.p50), ms(rounds.p99)),
    );
    let pages = Pcts::of(pages);
    report.info(
        &format!("… one page of {PAGE}: p50 / p99 / max"),
        pages.show(),
    );

    let mem = Mem::of(pid)?;
    report.info(
        &format!("server RSS with {} pods: VmRSS / VmHWM", count(n)),
        format!(
            "{} / {} (≈ {:.1} KiB per pod)",
            mib(mem.rss_kib),
            mib(mem.hwm_kib),
            mem.rss_kib.saturating_sub(base.rss_kib) as f64 / n as f64
        ),
    );
    report.info(
        "… VmRSS empty / after creates / after status patches / after lists",
        format!(
            "{} / {} / {} / {}",
            mib(base.rss_kib),
            mib(after_create.rss_kib),
            mib(after_status.rss_kib),
            mib(mem.rss_kib)
        ),
    );

    watch::run(&ep, pid, opts, report).await
}

/// The same list as client-go's typed clients and informers ask for it: protobuf first. The
/// first answer is read whole and decoded with `k8s-pb` (Kubernetes' own messages); the
/// timed ones are read as the JSON lists are (length and end, not decoded).
async fn protobuf_lists(
    ep: &Endpoint,
    lc: &Conn,
    path: &str,
    pid: u32,
    n: usize,
    opts: &Opts,
    report: &mut Report,
) -> Result<()> {
    use prost::Message;
    eprintln!("pods: {} whole lists in protobuf", opts.lists);
    let t = Instant::now();
    let (status, ct, body) = lc.get_as(path, PROTOBUF_FIRST).await?;
    let first = t.elapsed();
    if status != StatusCode::OK || ct != "application/vnd.kubernetes.protobuf" {
        report.broken(format!("a protobuf list answered {status} {ct}"));
        return Ok(());
    }
    let Some(raw) = body.strip_prefix(b"k8s\0") else {
        bail!("a protobuf list without the k8s envelope");
    };
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(raw)?;
    let list = k8s_pb::api::core::v1::PodList::decode(unknown.raw())?;
    let names: Vec<&str> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.as_ref().map(|m| m.name()))
        .collect();
    if names.len() != n || names.first() != Some(&pod_name(0).as_str()) {
        report.broken(format!(
            "the protobuf list held {} pods (first {:?}), created {n}",
            names.len(),
            names.first()
        ));
        return Ok(());
    }
    report.info(
        "pod object size (protobuf, as listed)",
        format!("{:.0} bytes avg", body.len() as f64 / n as f64),
    );
    report.info("… first protobuf list (encodes each pod once)", ms(first));

    let label = format!(
        "list {} pods, one request, protobuf as client-go asks",
        count(n)
    );
    whole_list_rows(
        ep,
        path,
        PROTOBUF_FIRST,
        pid,
        opts,
        report,
        &label,
        &body,
        b"",
    )
    .await?;
    Ok(())
}

/// Time `opts.lists` whole lists of `path` accepting `accept` and report them as `label`:
/// p50 (the target), p99 / max, CPU per list. Each must be as long as `first` and end with
/// `tail` (the same objects listed again), else the list is broken.
#[allow(clippy::too_many_arguments)]
async fn whole_list_rows(
    ep: &Endpoint,
    path: &str,
    accept: &'static str,
    pid: u32,
    opts: &Opts,
    report: &mut Report,
    label: &str,
    first: &[u8],
    tail: &[u8],
) -> Result<()> {
    let mut whole = Vec::with_capacity(opts.lists);
    let cpu = CpuMeter::start(pid)?;
    for (took, len, last) in timed_lists(ep, path, accept, opts.lists).await? {
        whole.push(took);
        if len != first.len() || !last.ends_with(tail) {
            report.broken(format!(
                "{label}: a list of the same objects was {len} bytes, the first {}",
                first.len()
            ));
            break;
        }
    }
    let whole = Pcts::of(whole);
    report.check(
        &format!("{label} ({:.1} MB): p50", first.len() as f64 / 1e6),
        ms(whole.p50),
        "≤ 50 ms",
        whole.p50 <= Duration::from_millis(50),
    );
    report.info(
        "… same list: p99 / max",
        format!("{} / {}", ms(whole.p99), ms(whole.max)),
    );
    report.info(
        "… CPU per list: server / benchmark client",
        cpu.per_op(opts.lists)?,
    );
    Ok(())
}

/// `lists` timed GETs of `path` accepting `accept`, one after another on a connection of
/// their own, each as (latency, body length, last bytes). They run on a current-thread
/// runtime on a thread of its own: the connection's task and the reader of the body then
/// share one thread, where on the benchmark's multi-thread runtime every frame crossed
/// threads (a wake-up and a task switch per frame: ~1/4 of the client's CPU per list in
/// `perf`, on the two cores the server needs too).
async fn timed_lists(
    ep: &Endpoint,
    path: &str,
    accept: &'static str,
    lists: usize,
) -> Result<Vec<(Duration, usize, Bytes)>> {
    let (ep, path) = (ep.clone(), path.to_string());
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let c = ep.connect().await?;
            let mut out = Vec::with_capacity(lists);
            for _ in 0..lists {
                let t = Instant::now();
                let (len, last) = c.get_len(&path, accept).await?;
                out.push((t.elapsed(), len, last));
            }
            Ok(out)
        })
    })
    .await?
}

/// Walk a collection in pages of [`PAGE`]; returns the names listed and adds each page's
/// latency to `pages`.
pub async fn page_through(c: &Conn, path: &str, pages: &mut Vec<Duration>) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let url = match &next {
            Some(t) => format!("{path}?limit={PAGE}&continue={t}"),
            None => format!("{path}?limit={PAGE}"),
        };
        let t = Instant::now();
        let body: Bytes = c.get_ok(&url).await?;
        pages.push(t.elapsed());
        let list = wire::list(&body)?;
        next = list.next().map(str::to_string);
        seen.extend(list.items.into_iter().map(|o| o.metadata.name));
        if next.is_none() {
            return Ok(seen);
        }
    }
}
