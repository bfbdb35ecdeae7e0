//! `kedge-bench edges`: many simulated edges (`tests::edgesim`) against a real `cloudcore
//! run` (the hub and its caches, a process of its own so its memory is read from /proc
//! alone) in front of a `cloudcore standalone` serving the API (its own hub unused).
//!
//! - connected: N edges join through `/join` and connect; counted as Ready Nodes in the API;
//! - RSS per edge: cloudcore's resident memory after all are live minus before any joined,
//!   each edge holding one pod that references one ConfigMap shared by all (the fan-out
//!   object) — so the cache's per-edge pods are counted too;
//! - Lease renewals per second acked by the cloud (each one an API write) over a window;
//! - fan-out: one ConfigMap update → held by every edge (p50 / p99 / max);
//! - reconnect storm: kill -9 of `cloudcore run`, restart on the same hub port, the ConfigMap
//!   updated again; time from the kill until every edge is live in a new session and holds
//!   exactly the API's objects (a stale or missing one is a correctness failure).
//!
//! The soft RLIMIT_NOFILE is raised to the hard limit first (inherited by cloudcore): one
//! socket per edge on each side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tests::Standalone;
use tests::edgesim::{Fleet, Joined, SimConfig};

use crate::report::{Mem, Pcts, Report, count, ms};
use crate::support::{self, Proc};

const NS: &str = "bench";
const SHARED: &str = "fanout";

/// What `kedge-bench edges` runs.
#[derive(Debug, Clone)]
pub struct EdgesOpts {
    /// Simulated edges.
    pub edges: usize,
    /// Where the data and certificates go.
    pub dir: Option<PathBuf>,
    /// The ≤ 60 s variant (200 edges).
    pub smoke: bool,
}

pub const USAGE: &str = "usage: kedge-bench edges [--smoke] [--edges N] [--dir DIR]";

impl EdgesOpts {
    /// Parses the arguments after `edges`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let smoke = args.iter().any(|a| a == "--smoke");
        let mut o = EdgesOpts {
            edges: if smoke { 200 } else { 10_000 },
            dir: None,
            smoke,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--smoke" {
                continue;
            }
            let v = it.next().with_context(|| format!("{a} needs a value"))?;
            match a.as_str() {
                "--edges" => {
                    o.edges = v
                        .replace(['_', ','], "")
                        .parse::<usize>()
                        .with_context(|| format!("--edges: {v:?} is not a count"))?
                        .max(1);
                }
                "--dir" => o.dir = Some(PathBuf::from(v)),
                other => bail!("unknown argument {other:?}"),
            }
        }
        Ok(o)
    }
}

/// `kedge-bench edges ...`: parse, run, print the table.
pub fn main(args: &[String]) -> std::process::ExitCode {
    crate::support::main(
        "kedge-bench edges",
        USAGE,
        args,
        EdgesOpts::parse,
        |o| async move { run(&o).await },
    )
}

/// A `cloudcore run` child serving the hub against the standalone API; killed on drop.
/// `KEDGE_BENCH_WRAP` may wrap it in a profiler (see `support::wrapped`).
struct RunHub {
    proc: Proc,
    /// Its `/metrics` address.
    metrics: String,
}

impl RunHub {
    /// Starts it and waits (≤ `timeout`) until its `/readyz` answers 200.
    async fn start(
        kubeconfig: &Path,
        hub_listen: &str,
        log: &Path,
        timeout: Duration,
    ) -> Result<RunHub> {
        let metrics = tests::edge::free_addr();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let program = tests::bin("cloudcore");
        let child = support::wrapped(&program)
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--hub-listen", hub_listen, "--metrics-listen", &metrics])
            .env("KEDGE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting cloudcore run")?;
        let mut hub = RunHub {
            proc: Proc::new(child, &program),
            metrics: metrics.clone(),
        };
        let url = format!("http://{metrics}/readyz");
        let t0 = Instant::now();
        while tests::curl(&[&url]).0 != 200 {
            if let Ok(Some(status)) = hub.proc.child().try_wait() {
                bail!("cloudcore run exited at start: {status}");
            }
            if t0.elapsed() > timeout {
                bail!("cloudcore run not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(hub)
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `cloudcore_hub_heartbeats_total` by result (empty when the scrape fails).
    fn heartbeats(&self) -> BTreeMap<String, f64> {
        let url = format!("http://{}/metrics", self.metrics);
        let (_, body) = tests::curl(&[&url]);
        body.lines()
            .filter_map(|l| l.strip_prefix("cloudcore_hub_heartbeats_total{result=\""))
            .filter_map(|l| {
                let (result, rest) = l.split_once('"')?;
                let value = rest.rsplit(' ').next()?.parse().ok()?;
                Some((result.to_owned(), value))
            })
            .collect()
    }

    fn kill9(&mut self) {
        self.proc.kill9();
    }
}

async fn ready_nodes(client: &kube::Client, prefix: &str) -> Result<usize> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(nodes
        .items
        .iter()
        .filter(|n| {
            n.metadata
                .name
                .as_deref()
                .is_some_and(|m| m.starts_with(prefix))
        })
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count())
}

async fn wait(what: &str, timeout: Duration, f: impl AsyncFnMut() -> bool) -> Result<Duration> {
    support::wait_for(what, timeout, Duration::from_millis(200), f).await
}

/// The resourceVersion of the shared ConfigMap and of each edge's pod.
async fn api_rvs(client: &kube::Client) -> Result<(String, BTreeMap<String, String>)> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get(SHARED)
        .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await?;
    let pods = pods
        .items
        .into_iter()
        .map(|p| {
            (
                format!("{NS}/pod/{}", p.metadata.name.unwrap_or_default()),
                p.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect();
    Ok((cm.metadata.resource_version.unwrap_or_default(), pods))
}

/// Edges not holding the shared ConfigMap at `cm_rv` or their own pod at its API rv.
fn stale(fleet: &Fleet, cm_rv: &str, pods: &BTreeMap<String, String>) -> usize {
    let cm_key = format!("{NS}/configmap/{SHARED}");
    fleet
        .edges
        .iter()
        .filter(|e| {
            let pod_key = format!("{NS}/pod/p-{}", e.name);
            e.get(&cm_key).is_none_or(|h| h.rv != cm_rv)
                || e.get(&pod_key).map(|h| h.rv) != pods.get(&pod_key).cloned()
        })
        .count()
}

async fn patch_shared(client: &kube::Client, v: &str) -> Result<()> {
    Api::<ConfigMap>::namespaced(client.clone(), NS)
        .patch(
            SHARED,
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"v": v}})),
        )
        .await?;
    Ok(())
}

async fn setup(client: &kube::Client, cfg: &SimConfig) -> Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": SHARED, "namespace": NS}, "data": {"v": "0"}
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cm)
        .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let results: Vec<Result<()>> = futures::stream::iter(0..cfg.edges)
        .map(|i| {
            let pods = pods.clone();
            let node = cfg.node_name(i);
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p-{node}"), "namespace": NS},
                    "spec": {"nodeName": node,
                             "containers": [{"name": "c", "image": "busybox"}],
                             "volumes": [{"name": "v", "configMap": {"name": SHARED}}]}
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>().map(drop)
}

/// Runs the edges benchmark.
pub async fn run(opts: &EdgesOpts) -> Result<Report> {
    tests::init_crypto();
    let nofile = tests::edgesim::raise_nofile().context("raising RLIMIT_NOFILE")?;
    // One socket per edge in this process (the fleet) and one in `cloudcore run` (its own
    // process, its own limit), plus room for the API clients and files.
    if nofile < opts.edges as u64 + 1000 {
        bail!(
            "RLIMIT_NOFILE hard limit {nofile} is too low for {} edges",
            opts.edges
        );
    }
    let tmp = support::scratch_dir(opts.dir.as_deref())?;
    let (mut report, started) = support::start_report();
    report.info(
        "RLIMIT_NOFILE (raised to the hard limit)",
        nofile.to_string(),
    );
    let cloud = Standalone::start(&tmp.path().join("cloud"), &[])?;
    let client = cloud.client().await?;
    let hub_listen = tests::edge::free_addr();
    let hub_log = tmp.path().join("cloudcore-run.log");
    let mut hub = RunHub::start(
        &cloud.kubeconfig,
        &hub_listen,
        &hub_log,
        Duration::from_secs(60),
    )
    .await?;
    let server = format!("wss://{hub_listen}");
    let mut cfg = SimConfig::new(
        &server,
        &cloud.token(),
        opts.edges,
        tmp.path().join("edges"),
    );
    cfg.join_parallel = 16;
    eprintln!(
        "kedge-bench edges{}: {} edges; data under {}",
        if opts.smoke { " --smoke" } else { "" },
        opts.edges,
        tmp.path().display()
    );
    setup(&client, &cfg).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let fresh = Mem::of(hub.pid())?.rss_kib;
    let joined_edges = Joined::join(&cfg).await?;
    let joined = t0.elapsed();
    // Per-connection memory: measured after the joins (their cost is reported apart).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = Mem::of(hub.pid())?.rss_kib;
    let api_before = Mem::of(cloud.child.id())?.rss_kib;
    report.info(
        &format!(
            "cloudcore run RSS before / after {} joins",
            count(opts.edges)
        ),
        format!("{} / {} KiB", count(fresh as usize), count(before as usize)),
    );

    // Connect.
    let t0 = Instant::now();
    let fleet = Fleet::connect(&cfg, joined_edges).await?;
    let budget = Duration::from_secs(120 + opts.edges as u64 / 10);
    let live = wait("every edge live", budget, async || {
        fleet.live() == opts.edges
    })
    .await;
    let connected = t0.elapsed();
    if let Err(e) = live {
        report.broken(format!("{e}: {:?}", fleet.summary()));
    }
    let ready = wait("every Node Ready in the API", budget, async || {
        ready_nodes(&client, &cfg.prefix).await.unwrap_or(0) == opts.edges
    })
    .await;
    let ready_n = ready_nodes(&client, &cfg.prefix).await.unwrap_or(0);
    report.info(
        "join (/join bootstrap, 16 in parallel) of all edges; retried joins",
        format!("{}; {}", ms(joined), fleet.join_retries),
    );
    report.info("all edges connected → all live (in sync)", ms(connected));
    report.check(
        "connected edges, counted as Ready Nodes in the API",
        count(ready_n),
        "10,000 (issue 5)",
        ready_n >= 10_000,
    );
    if ready.is_err() {
        report.broken(format!("only {ready_n} of {} Nodes Ready", opts.edges));
    }

    // Memory, after a renewal round.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = Mem::of(hub.pid())?.rss_kib;
    let api_after = Mem::of(cloud.child.id())?.rss_kib;
    // From the fresh hub, joins included: memory the joins touched is reused by the
    // sessions, so a difference from after the joins would read low.
    let per = after.saturating_sub(fresh) as f64 / opts.edges as f64;
    report.info(
        &format!(
            "cloudcore run RSS before / after {} edges",
            count(opts.edges)
        ),
        format!("{} / {} KiB", count(before as usize), count(after as usize)),
    );
    report.info(
        "API server (cloudcore standalone, not the hub) RSS before / after",
        format!(
            "{} / {} KiB",
            count(api_before as usize),
            count(api_after as usize)
        ),
    );
    report.check(
        "cloudcore RSS per connected edge, from the fresh hub, joins included (1 pod each, 1 shared ConfigMap)",
        format!("{per:.1} KiB"),
        "≤ 100 KB (issue 5)",
        per <= 100.0,
    );

    // Sustained Lease renewals.
    let window = if opts.smoke { 10 } else { 30 };
    let r0 = fleet.summary().lease_renewals;
    let h0 = hub.heartbeats();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let renewals = fleet.summary().lease_renewals - r0;
    let h1 = hub.heartbeats();
    report.info(
        &format!("Lease renewals written per second ({window} s window, ~10 s interval)"),
        format!("{:.0}/s", renewals as f64 / window as f64),
    );
    let rate = |result: &str| {
        let d = h1.get(result).copied().unwrap_or(0.0) - h0.get(result).copied().unwrap_or(0.0);
        d / window as f64
    };
    report.info(
        "hub heartbeats per second: left to the edge / Lease only / Node checked / failed / no API permit / timed out",
        format!(
            "{:.0} / {:.0} / {:.0} / {:.1} / {:.1} / {:.1}",
            rate("edge"),
            rate("lease"),
            rate("checked"),
            rate("failed"),
            rate("busy"),
            rate("timeout")
        ),
    );

    // Fan-out of one update to every edge.
    let wall0 = SystemTime::now();
    patch_shared(&client, "1").await?;
    let (cm_rv, pods) = api_rvs(&client).await?;
    let fan = wait("the fan-out", Duration::from_secs(120), async || {
        stale(&fleet, &cm_rv, &pods) == 0
    })
    .await;
    if let Err(e) = fan {
        report.broken(format!("{e}: {} edges stale", stale(&fleet, &cm_rv, &pods)));
    }
    let key = format!("{NS}/configmap/{SHARED}");
    let lat: Vec<Duration> = fleet
        .edges
        .iter()
        .filter_map(|e| e.get(&key))
        .filter(|h| h.rv == cm_rv)
        .filter_map(|h| h.at.duration_since(wall0).ok())
        .collect();
    report.info(
        &format!(
            "fan-out of one ConfigMap update to {} edges: p50 / p99 / max",
            count(lat.len())
        ),
        Pcts::of(lat).show(),
    );

    // Reconnect storm: kill -9, restart on the same hub port, one more update.
    let sessions0 = fleet.summary().sessions;
    let t0 = Instant::now();
    hub.kill9();
    patch_shared(&client, "1b").await?;
    // Readiness waits for the caches, which compete with every edge reconnecting.
    let restart = Duration::from_secs(60 + opts.edges as u64 / 10);
    let hub = match RunHub::start(&cloud.kubeconfig, &hub_listen, &hub_log, restart).await {
        Ok(h) => h,
        Err(e) => {
            // Keep the table: what was measured so far is reported.
            report.broken(format!("storm: restarting cloudcore run: {e:#}"));
            fleet.stop().await;
            return Ok(report);
        }
    };
    patch_shared(&client, "2").await?;
    let (cm_rv, pods) = api_rvs(&client).await?;
    let budget = Duration::from_secs(60 + opts.edges as u64 / 20);
    let storm = wait("the storm resync", budget, async || {
        fleet.live_after(2) == opts.edges && stale(&fleet, &cm_rv, &pods) == 0
    })
    .await;
    let storm_time = t0.elapsed();
    let lost = stale(&fleet, &cm_rv, &pods);
    if storm.is_err() {
        report.broken(format!(
            "storm: {lost} edges stale, {} of {} live again after {budget:?}",
            fleet.live_after(2),
            opts.edges
        ));
    }
    report.check(
        &format!(
            "reconnect storm (cloudcore run kill -9 + restart) until all {} edges resynced",
            count(opts.edges)
        ),
        ms(storm_time),
        "≤ 60 s, zero loss (issue 5)",
        storm.is_ok() && storm_time <= Duration::from_secs(60),
    );
    report.info(
        "storm: sessions opened / edges stale at the end",
        format!("{} / {lost}", fleet.summary().sessions - sessions0),
    );
    let s = fleet.summary();
    report.info(
        "edgesim: failed dials / upstream errors / Lease 404 before registration",
        format!(
            "{} / {} / {}",
            s.dial_failures, s.upstream_errors, s.lease_not_found
        ),
    );
    fleet.stop().await;
    drop(hub);
    let mut cloud = cloud;
    let _ = cloud.stop();
    support::finish_report(&mut report, started);
    Ok(report)
}
