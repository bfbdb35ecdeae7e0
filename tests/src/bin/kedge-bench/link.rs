//! `kedge-bench link`: the cloud-edge link with the real binaries — a `cloudcore
//! standalone` and real `edgecore run` processes joined with `edgecore join`.
//!
//! - cold resync: one edge with an empty store connects to a cluster holding N objects
//!   for it (pods bound to it and the ConfigMaps they reference); time from HELLO_ACK to
//!   the SYNCED frame being fsynced at the edge, and frames per second acked;
//! - warm resync: the same edge restarts holding the N objects while 1 % changed; time
//!   from HELLO_ACK to SYNCED (the inventory diff);
//! - live updates: every ConfigMap updated once through the API as fast as it accepts;
//!   updates per second from the first API write until the last one is fsynced at the edge;
//! - RSS per connected edge: cloudcore's resident memory (from /proc) before and after E
//!   more edges (each with one pod and two ConfigMaps) connect and sync.
//!
//! The edge's times come from its delivery journal (`KEDGE_LOG=kedge_journal=debug`,
//! JSON lines with timestamps), so process start-up and TLS are not counted in the
//! resyncs, and what the edge holds is checked against the API (a mismatch is a
//! correctness failure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tests::Standalone;

use crate::report::{Mem, Report, count, ms, rate};
use crate::support::{self, Proc};

const NS: &str = "bench";
/// ConfigMaps referenced by each pod.
const CMS_PER_POD: usize = 99;

/// What `kedge-bench link` runs.
#[derive(Debug, Clone)]
pub struct LinkOpts {
    /// Objects held by the resync edge.
    pub objects: usize,
    /// Edges connected for the RSS measurement.
    pub edges: usize,
    /// Where the data goes.
    pub dir: Option<PathBuf>,
    /// The ≤ 60 s variant.
    pub smoke: bool,
}

pub const USAGE: &str = "usage: kedge-bench link [--smoke] [--objects N] [--edges N] [--dir DIR]";

impl LinkOpts {
    /// Parses the arguments after `link`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let smoke = args.iter().any(|a| a == "--smoke");
        let mut o = LinkOpts {
            objects: if smoke { 500 } else { 5_000 },
            edges: if smoke { 3 } else { 20 },
            dir: None,
            smoke,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--smoke" {
                continue;
            }
            let v = it.next().with_context(|| format!("{a} needs a value"))?;
            let num = || -> Result<usize> {
                v.replace(['_', ','], "")
                    .parse()
                    .with_context(|| format!("{a}: {v:?} is not a count"))
            };
            match a.as_str() {
                "--objects" => o.objects = num()?.max(CMS_PER_POD + 1),
                "--edges" => o.edges = num()?.max(1),
                "--dir" => o.dir = Some(PathBuf::from(v)),
                other => bail!("unknown argument {other:?}"),
            }
        }
        Ok(o)
    }
}

/// An `edgecore run` process, killed on drop.
struct EdgeProc {
    root: PathBuf,
    proc: Option<Proc>,
}

impl EdgeProc {
    fn join(cloud: &Standalone, name: &str, root: &Path) -> Result<Self> {
        let token = Command::new(tests::bin("cloudcore"))
            .args(["token", "create", "--ttl", "1h", "--kubeconfig"])
            .arg(&cloud.kubeconfig)
            .output()?;
        if !token.status.success() {
            bail!("token create: {}", String::from_utf8_lossy(&token.stderr));
        }
        let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let out = Command::new(tests::bin("edgecore"))
            .args(["join", "--server", &cloud.hub, "--token", &token])
            .args(["--node-name", name, "--no-start"])
            .args(["--mqtt-listen", "127.0.0.1:0", "--metrics-listen"])
            .arg(metrics.to_string())
            .arg("--root")
            .arg(root)
            .output()?;
        if !out.status.success() {
            bail!("join {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(EdgeProc {
            root: root.to_path_buf(),
            proc: None,
        })
    }

    fn log(&self) -> PathBuf {
        self.root.join("edge.log")
    }

    fn start(&mut self) -> Result<()> {
        // A fresh log per run: the journal of this run only.
        let log = std::fs::File::create(self.log())?;
        let program = tests::bin("edgecore");
        let child = Command::new(&program)
            .arg("run")
            .arg("--config")
            .arg(self.root.join("etc/kedge/edgecore.toml"))
            .env("KEDGE_LOG_FORMAT", "json")
            .env("KEDGE_LOG", "info,kedge_journal=debug,rumqttd=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting edgecore")?;
        self.proc = Some(Proc::new(child, &program));
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            let pid = nix::unistd::Pid::from_raw(proc.pid() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            tests::wait_exit(proc.child(), Duration::from_secs(30))?;
        }
        Ok(())
    }

    fn journal(&self) -> Journal {
        Journal::parse(&std::fs::read_to_string(self.log()).unwrap_or_default())
    }
}

/// What one run's log says.
#[derive(Debug, Default)]
struct Journal {
    /// HELLO_ACK of the first session.
    session_at: Option<Timestamp>,
    /// The first SYNCED frame durable.
    synced_at: Option<Timestamp>,
    /// key -> rv of every durable upsert (last wins).
    held: BTreeMap<String, String>,
    /// When each key last became durable.
    last_at: BTreeMap<String, Timestamp>,
}

impl Journal {
    fn parse(log: &str) -> Journal {
        let mut j = Journal::default();
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let at = v["timestamp"].as_str().and_then(|t| t.parse().ok());
            if v["message"] == "session established" && j.session_at.is_none() {
                j.session_at = at;
            }
            if v["target"] != "kedge_journal" {
                continue;
            }
            match (v["kind"].as_str(), v["op"].as_str()) {
                (Some("synced"), _) if j.synced_at.is_none() => j.synced_at = at,
                (Some("object"), Some("upsert")) => {
                    let key = v["key"].as_str().unwrap_or_default().to_owned();
                    let rv = v["rv"].as_str().unwrap_or_default().to_owned();
                    if let Some(at) = at {
                        j.last_at.insert(key.clone(), at);
                    }
                    j.held.insert(key, rv);
                }
                _ => {}
            }
        }
        j
    }

    /// From HELLO_ACK until SYNCED and every key of `want` were durable.
    fn resync_complete(&self, want: &BTreeMap<String, String>) -> Option<Duration> {
        let last = want
            .keys()
            .filter_map(|k| self.last_at.get(k))
            .copied()
            .chain(self.synced_at)
            .max()?;
        Duration::try_from(last.duration_since(self.session_at?)).ok()
    }

    fn resync(&self) -> Option<Duration> {
        let (a, b) = (self.session_at?, self.synced_at?);
        Duration::try_from(b.duration_since(a)).ok()
    }
}

/// The API's key -> rv of every pod and ConfigMap in the bench namespace.
async fn api_state(client: &kube::Client) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    for cm in cms.list(&ListParams::default()).await? {
        let name = cm.metadata.name.unwrap_or_default();
        out.insert(
            format!("{NS}/configmap/{name}"),
            cm.metadata.resource_version.unwrap_or_default(),
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for p in pods.list(&ListParams::default()).await? {
        let name = p.metadata.name.unwrap_or_default();
        out.insert(
            format!("{NS}/pod/{name}"),
            p.metadata.resource_version.unwrap_or_default(),
        );
    }
    Ok(out)
}

/// Keys of `want` the edge does not hold at the same rv.
fn missing(edge: &Journal, want: &BTreeMap<String, String>, prefix: &str) -> usize {
    want.iter()
        .filter(|(k, _)| k.contains(prefix))
        .filter(|(k, rv)| edge.held.get(*k) != Some(rv))
        .count()
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    support::wait_for(what, timeout, Duration::from_millis(50), async || f()).await?;
    Ok(())
}

/// Creates pods `<app>-<p>` bound to `node`, each referencing `per_pod` ConfigMaps of
/// ~1 KiB, `total` objects in all.
async fn create_objects(
    client: &kube::Client,
    node: &str,
    app: &str,
    pods: usize,
    per_pod: usize,
) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let names: Vec<String> = (0..pods)
        .flat_map(|p| (0..per_pod).map(move |c| format!("{app}-{p}-{c}")))
        .collect();
    let results: Vec<Result<()>> = futures::stream::iter(names)
        .map(|name| {
            let cms = cms.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": NS},
                    "data": {"v": "x".repeat(1000)}
                }))?;
                cms.create(&PostParams::default(), &cm).await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    for p in 0..pods {
        let volumes: Vec<Value> = (0..per_pod)
            .map(|c| json!({"name": format!("v{c}"), "configMap": {"name": format!("{app}-{p}-{c}")}}))
            .collect();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{app}-{p}"), "namespace": NS},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}], "volumes": volumes}
        }))?;
        api.create(&PostParams::default(), &pod).await?;
    }
    Ok(())
}

/// Merge-patches every ConfigMap whose name starts with `app` (32 at a time).
async fn update_all(client: &kube::Client, names: Vec<String>, tag: &str) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let results: Vec<Result<()>> = futures::stream::iter(names)
        .map(|name| {
            let cms = cms.clone();
            async move {
                let patch = json!({"data": {"v": format!("{tag}{}", "y".repeat(1000))}});
                cms.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>().map(drop)
}

/// `kedge-bench link ...`: parse, run, print the table; the exit code says whether the
/// run completed and every correctness check held.
pub fn main(args: &[String]) -> std::process::ExitCode {
    crate::support::main(
        "kedge-bench link",
        USAGE,
        args,
        LinkOpts::parse,
        |o| async move { run(&o).await },
    )
}

/// Runs the link benchmark.
pub async fn run(opts: &LinkOpts) -> Result<Report> {
    tests::init_crypto();
    let tmp = support::scratch_dir(opts.dir.as_deref())?;
    let (mut report, started) = support::start_report();
    let cloud = Standalone::start(&tmp.path().join("cloud"), &[])?;
    let client = cloud.client().await?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;

    let pods = opts.objects.div_ceil(CMS_PER_POD + 1);
    let objects = pods * (CMS_PER_POD + 1);
    eprintln!(
        "kedge-bench link{}: {objects} objects for one edge, then {} edges for RSS; data under {}",
        if opts.smoke { " --smoke" } else { "" },
        opts.edges,
        tmp.path().display()
    );
    let mut edge = EdgeProc::join(&cloud, "bench-edge", &tmp.path().join("bench-edge"))?;
    create_objects(&client, "bench-edge", "app", pods, CMS_PER_POD).await?;
    let want = api_state(&client).await?;

    // Cold resync: empty store, every object sent and acked.
    edge.start()?;
    let cold = wait_until("the cold resync", Duration::from_secs(300), || {
        let j = edge.journal();
        j.synced_at.is_some() && missing(&j, &want, "/") == 0
    })
    .await;
    let j = edge.journal();
    if cold.is_err() {
        let miss = missing(&j, &want, "/");
        report.broken(format!(
            "cold resync: {miss} objects missing or stale at the edge after 300 s"
        ));
    }
    let held_at_synced = j
        .last_at
        .iter()
        .filter(|(k, at)| want.contains_key(*k) && j.synced_at.is_some_and(|s| **at <= s))
        .count();
    report.info(
        "cold resync: objects fsynced at the edge when SYNCED arrived",
        format!("{} of {}", count(held_at_synced), count(want.len())),
    );
    if let Some(d) = j.resync_complete(&want) {
        report.info(
            &format!(
                "cold resync of {} objects (HELLO_ACK → all fsynced at the edge)",
                count(objects)
            ),
            ms(d),
        );
        report.info(
            "ack throughput of one session (cold resync)",
            format!("{:.0} objects/s", rate(objects, d)),
        );
    }

    // Live updates: every ConfigMap once, API write → fsynced at the edge.
    let names: Vec<String> = want
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{NS}/configmap/")))
        .filter(|n| n.starts_with("app-"))
        .map(str::to_owned)
        .collect();
    let t0 = Instant::now();
    let wall0 = Timestamp::now();
    update_all(&client, names.clone(), "live").await?;
    let api_time = t0.elapsed();
    let want = api_state(&client).await?;
    wait_until(
        "the live updates at the edge",
        Duration::from_secs(300),
        || missing(&edge.journal(), &want, "/configmap/") == 0,
    )
    .await?;
    let j = edge.journal();
    let last = j.last_at.values().max().copied().unwrap_or(wall0);
    let delivered = Duration::try_from(last.duration_since(wall0)).unwrap_or(t0.elapsed());
    report.info(
        &format!("live: {} updates accepted by the API", count(names.len())),
        format!("{:.0} updates/s", rate(names.len(), api_time)),
    );
    report.info(
        "live: same updates fsynced at the edge (first API write → last durable)",
        format!(
            "{:.0} updates/s ({})",
            rate(names.len(), delivered),
            ms(delivered)
        ),
    );

    // Warm resync: restart holding everything while 1 % changed.
    edge.stop()?;
    let changed: Vec<String> = names.iter().step_by(100).cloned().collect();
    update_all(&client, changed.clone(), "warm").await?;
    let want = api_state(&client).await?;
    edge.start()?;
    wait_until("the warm resync", Duration::from_secs(300), || {
        edge.journal().synced_at.is_some()
    })
    .await?;
    // This run's journal holds only what the diff sent: the changed ones.
    let j = edge.journal();
    let changed_want: BTreeMap<String, String> = changed
        .iter()
        .filter_map(|n| {
            let k = format!("{NS}/configmap/{n}");
            want.get(&k).map(|rv| (k, rv.clone()))
        })
        .collect();
    let miss = missing(&j, &changed_want, "/configmap/");
    if miss > 0 {
        report.broken(format!(
            "warm resync: {miss} changed ConfigMaps stale at the edge"
        ));
    }
    report.info(
        "warm resync: objects sent (only the differences)",
        count(j.held.len()),
    );
    if let Some(d) = j.resync() {
        report.info(
            &format!(
                "warm resync holding {} objects, {} changed (HELLO_ACK → SYNCED fsynced)",
                count(objects),
                count(changed.len())
            ),
            ms(d),
        );
    }
    edge.stop()?;

    rss_per_edge(opts, &cloud, &client, tmp.path(), &mut report).await?;
    support::finish_report(&mut report, started);
    Ok(report)
}

/// cloudcore's RSS before and after `opts.edges` edges connected and synced.
async fn rss_per_edge(
    opts: &LinkOpts,
    cloud: &Standalone,
    client: &kube::Client,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let pid = cloud.child.id();
    let mut edges = Vec::new();
    for i in 0..opts.edges {
        let name = format!("rss-{i}");
        edges.push(EdgeProc::join(cloud, &name, &dir.join(&name))?);
        create_objects(client, &name, &format!("r{i}"), 1, 2).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = Mem::of(pid)?.rss_kib;
    for e in &mut edges {
        e.start()?;
    }
    for e in &edges {
        wait_until("an RSS edge synced", Duration::from_secs(120), || {
            e.journal().synced_at.is_some()
        })
        .await?;
    }
    // Let a heartbeat round and the allocator settle.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = Mem::of(pid)?.rss_kib;
    let per = after.saturating_sub(before) as f64 / opts.edges as f64;
    report.info(
        &format!(
            "cloudcore RSS before / after {} edges connected",
            opts.edges
        ),
        format!("{} / {} KiB", count(before as usize), count(after as usize)),
    );
    report.check(
        "cloudcore RSS per connected edge (1 pod, 2 ConfigMaps each)",
        format!("{per:.0} KiB"),
        "≤ 100 KiB (issue 5)",
        per <= 100.0,
    );
    for mut e in edges {
        e.stop()?;
    }
    Ok(())
}
