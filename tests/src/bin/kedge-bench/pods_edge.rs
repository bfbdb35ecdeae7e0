//! `kedge-bench pods [--smoke] [--pods N]`: pods on one edge with the real stack —
//! cloudcore standalone, a joined edgecore, a private containerd (the tests' harness).
//!
//! Measures create -> Running as seen in the API, p50/p99 over N hostNetwork pods created
//! one after another (each once the one before runs; they are deleted again) and over N pods
//! created at once — each next to containerd's own time for the same starts made straight
//! through CRI (`pods_floor`) — edgecore's RSS with N pods, and an offline cold boot: cloud
//! stopped, edgecore killed -9, every container and sandbox removed (as a reboot would),
//! edgecore started alone -> time until all N pods run again in containerd. The embedded MQTT
//! broker is on (a free loopback port), as in a default install. Memory rows split RSS into
//! anonymous (heap, stacks) and file-backed (the binary's pages) and count threads; CPU rows
//! are edgecore's own user+system time, which a shared machine disturbs less than latency.
//!
//! `--hold SECS` keeps the edge up for SECS after the pods run (its pid is printed), for
//! `/proc/<pid>/smaps_rollup` and the like. `KEDGE_BENCH_EDGE_WRAPPER="heaptrack -o FILE"`
//! starts edgecore under that command (a profile from the first allocation; the memory rows
//! then measure the wrapper, not edgecore).

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::containerd::{Containerd, IMAGE};

use crate::report::{Mem, cpu_time};
use tests::{Standalone, bin};

const USAGE: &str = "usage: kedge-bench pods [--smoke] [--pods N] [--dir DIR] [--hold SECS]";

/// Entry point of the `pods` subcommand.
pub fn main(args: &[String]) -> ExitCode {
    let mut pods = if args.iter().any(|a| a == "--smoke") {
        3
    } else {
        20
    };
    let mut dir = None;
    let mut hold = Duration::ZERO;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => {}
            "--pods" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => pods = n,
                _ => return usage("--pods needs a positive count"),
            },
            "--dir" => match it.next() {
                Some(d) => dir = Some(d.clone()),
                None => return usage("--dir needs a value"),
            },
            "--hold" => match it.next().and_then(|v| v.parse().ok()) {
                Some(secs) => hold = Duration::from_secs(secs),
                None => return usage("--hold needs a number of seconds"),
            },
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    match run(pods, dir.as_deref().map(Path::new), hold) {
        Ok(table) => {
            println!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kedge-bench pods: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("kedge-bench pods: {msg}\n{USAGE}");
    ExitCode::from(2)
}

struct EdgeProc(Child);

impl Drop for EdgeProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_edge(root: &Path) -> Result<EdgeProc> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("edge.log"))?;
    let wrapper = std::env::var("KEDGE_BENCH_EDGE_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(bin("edgecore"));
            c
        }
        None => Command::new(bin("edgecore")),
    };
    Ok(EdgeProc(
        cmd.arg("run")
            .arg("--config")
            .arg(root.join("etc/kedge/edgecore.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting edgecore")?,
    ))
}

/// Memory of edgecore now (zeroes once it is gone).
fn mem(pid: u32) -> Mem {
    Mem::of(pid).unwrap_or_default()
}

/// CPU time edgecore has used so far (zero once it is gone).
fn cpu(pid: u32) -> Duration {
    cpu_time(Some(pid)).unwrap_or_default()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(n: usize, dir: Option<&Path>, hold: Duration) -> Result<String> {
    let tmp = tempfile::tempdir()?;
    let base = dir.unwrap_or(tmp.path()).to_path_buf();
    let ctd = Containerd::start()?;
    // containerd alone first, on the same fresh containerd: the floor of both latency rows.
    let floor_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let floor_logs = base.join("floor-logs");
    let single_floor = floor_rt.block_on(crate::pods_floor::measure_one_by_one(
        &ctd.endpoint,
        n,
        &floor_logs,
    ))?;
    let floor = floor_rt.block_on(crate::pods_floor::measure(&ctd.endpoint, n, &floor_logs))?;
    drop(floor_rt);
    let hub_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let hub = format!("127.0.0.1:{hub_port}");
    // The embedded MQTT broker is on, as in a default install (it is part of the RSS).
    let mqtt_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mqtt = format!("127.0.0.1:{mqtt_port}");
    let cloud_dir = base.join("cloud");
    let mut s = Standalone::start(&cloud_dir, &["--hub-listen", &hub])?;
    let out = Command::new(bin("cloudcore"))
        .args(["token", "create", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .output()?;
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let root = base.join("edge");
    let node = "bench-edge";
    let out = Command::new(bin("edgecore"))
        .args([
            "join",
            "--server",
            &s.hub,
            "--token",
            &token,
            "--node-name",
            node,
        ])
        .arg("--root")
        .arg(&root)
        .args(["--cri-endpoint", &ctd.endpoint, "--mqtt-listen", &mqtt])
        .args(["--metrics-listen", "127.0.0.1:0", "--no-start"])
        .output()?;
    if !out.status.success() {
        bail!("join: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut edge = start_edge(&root)?;
    wait("the edge Node Ready", Duration::from_secs(60), || {
        let out = s.kubectl(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
    })?;
    // Idle: once the start-up work (sync, first status reports) has settled.
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = mem(edge.0.id());

    // N pods one after another, each from its create to its Running phase arriving on a
    // watch; then deleted, and gone from containerd before the next phase.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut single = rt.block_on(one_by_one(&s, node, n))?;
    single.sort();
    wait(
        "the one-by-one pods gone from containerd",
        Duration::from_secs(60),
        || ctd.tasks().is_empty().then_some(()),
    )?;

    // N pods created at once through the API; each one's latency runs from the start of the
    // creates to its Running phase arriving on a watch.
    let cpu_before = cpu(edge.0.id());
    let seen = rt.block_on(create_and_watch(&s, node, n))?;
    let mut lat: Vec<Duration> = seen;
    lat.sort();
    std::thread::sleep(Duration::from_secs(2));
    let rss_pods = mem(edge.0.id());
    let cpu_pods = cpu(edge.0.id()).saturating_sub(cpu_before);
    if !hold.is_zero() {
        eprintln!(
            "kedge-bench pods: edgecore pid {} runs {n} pods; holding {hold:?}",
            edge.0.id()
        );
        std::thread::sleep(hold);
    }

    // Offline cold boot.
    s.stop()?;
    drop(edge);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cri = edgecore::runtime::cri::Cri::new(&ctd.endpoint)?;
        let managed = [edgecore::runtime::podconfig::MANAGED];
        for sb in cri.list_sandboxes(&managed).await? {
            cri.stop_sandbox(&sb.id).await?;
            cri.remove_sandbox(&sb.id).await?;
        }
        anyhow::Ok(())
    })?;
    let t = Instant::now();
    edge = start_edge(&root)?;
    wait(
        "all pods running again offline",
        Duration::from_secs(120),
        || (ctd.tasks().len() >= 2 * n).then_some(()),
    )?;
    let cold = t.elapsed();
    let cpu_cold = cpu(edge.0.id());
    std::thread::sleep(Duration::from_secs(2));
    let rss_cold = mem(edge.0.id());
    drop(edge);

    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let judge = |ok: bool| if ok { "pass" } else { "miss" };
    let p99 = pct(&lat, 0.99);
    let mut t = String::new();
    t.push_str(&format!(
        "kedge-bench pods: {n} hostNetwork pods on one edge, private containerd 1.6, {} cores\n\n",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    ));
    t.push_str("| metric | value | target | |\n| --- | --- | --- | --- |\n");
    let single_p99 = pct(&single, 0.99);
    t.push_str(&format!(
        "| one pod at a time ({n}): create -> Running in the API, p50 / p99 | {} / {} | p99 <= 1.5 s | {} |\n",
        ms(pct(&single, 0.5)),
        ms(single_p99),
        judge(single_p99 <= Duration::from_millis(1500))
    ));
    t.push_str(&format!(
        "| containerd alone, one pod at a time: container started p50 / p99 | {} / {} | | |\n",
        ms(pct(&single_floor.running, 0.5)),
        ms(pct(&single_floor.running, 0.99))
    ));
    t.push_str(&format!(
        "| {n} pods at once: create -> Running in the API, p50 / p99 | {} / {} | p99 <= 1.5 s | {} |\n",
        ms(pct(&lat, 0.5)),
        ms(p99),
        judge(p99 <= Duration::from_millis(1500))
    ));
    t.push_str(&format!(
        "| offline cold boot: edgecore start -> all {n} pods running | {} | <= 2 s | {} |\n",
        ms(cold),
        judge(cold <= Duration::from_secs(2))
    ));
    t.push_str(&format!(
        "| containerd alone (CRI, no edgecore), {n} pods at once: sandbox up p50 / p99 | {} / {} | | |\n",
        ms(pct(&floor.sandbox, 0.5)),
        ms(pct(&floor.sandbox, 0.99))
    ));
    t.push_str(&format!(
        "| containerd alone: container started p50 / p99 / all | {} / {} / {} | | |\n",
        ms(pct(&floor.running, 0.5)),
        ms(pct(&floor.running, 0.99)),
        ms(floor.running.last().copied().unwrap_or_default())
    ));
    t.push_str(&format!(
        "| edgecore CPU (user+sys) while the {n} pods start | {} | | |\n",
        ms(cpu_pods)
    ));
    t.push_str(&format!(
        "| edgecore CPU (user+sys) during the cold boot | {} | | |\n",
        ms(cpu_cold)
    ));
    t.push_str(&format!(
        "| edgecore under test (the RSS target is for the static gateway build) | {} | | |\n",
        crate::report::linkage(&bin("edgecore"))?
    ));
    t.push_str(&format!(
        "| edgecore RSS, no pods | {} | | |\n",
        rss_idle.split()
    ));
    t.push_str(&format!(
        "| edgecore RSS with {n} pods | {} | <= 15 MB | {} |\n",
        rss_pods.split(),
        judge(rss_pods.rss_kib * 1024 <= 15_000_000)
    ));
    t.push_str(&format!(
        "| edgecore RSS after the cold boot | {} | | |\n",
        rss_cold.split()
    ));
    Ok(t)
}

/// The benchmark's pod `name`: hostNetwork busybox sleeping, bound to `node`.
fn bench_pod(name: &str, node: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "hostNetwork": true,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE,
                "command": ["sleep", "100000"]}]}
    }))
    .unwrap_or_default()
}

/// Creates pods `s0`..`s{n-1}` one after another, each once the one before is Running;
/// returns each one's create -> Running, then deletes them all and waits until the API has
/// none of them left.
async fn one_by_one(s: &Standalone, node: &str, n: usize) -> Result<Vec<Duration>> {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
    let api: Api<Pod> = Api::namespaced(s.client().await?, "default");
    let mut events = api.watch(&WatchParams::default(), "0").await?.boxed();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("s{i}");
        let t0 = Instant::now();
        api.create(&PostParams::default(), &bench_pod(&name, node))
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ev = tokio::time::timeout_at(deadline, events.try_next())
                .await
                .with_context(|| format!("timed out waiting for {name} Running"))??;
            let Some(ev) = ev else {
                bail!("the watch ended")
            };
            if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev
                && p.metadata.name.as_deref() == Some(name.as_str())
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                lat.push(t0.elapsed());
                break;
            }
        }
    }
    for i in 0..n {
        api.delete(&format!("s{i}"), &DeleteParams::default())
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|name| name.starts_with('s'))
            })
            .count();
        if left == 0 {
            return Ok(lat);
        }
        if Instant::now() > deadline {
            bail!("{left} one-by-one pods still in the API after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_and_watch(s: &Standalone, node: &str, n: usize) -> Result<Vec<Duration>> {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};
    let api: Api<Pod> = Api::namespaced(s.client().await?, "default");
    let mut events = api.watch(&WatchParams::default(), "0").await?.boxed();
    let t0 = Instant::now();
    let creator = {
        let api = api.clone();
        let node = node.to_owned();
        tokio::spawn(async move {
            let creates = (0..n).map(|i| {
                let pod = bench_pod(&format!("p{i}"), &node);
                let api = api.clone();
                async move { api.create(&PostParams::default(), &pod).await }
            });
            futures::future::join_all(creates).await
        })
    };
    let mut seen: Vec<Option<Duration>> = vec![None; n];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.iter().any(Option::is_none) {
        let ev = tokio::time::timeout_at(deadline, events.try_next())
            .await
            .context("timed out waiting for all pods Running")??;
        let Some(ev) = ev else {
            bail!("the watch ended")
        };
        let (WatchEvent::Added(p) | WatchEvent::Modified(p)) = ev else {
            continue;
        };
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let i: Option<usize> = p
            .metadata
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix('p'))
            .and_then(|n| n.parse().ok());
        if let Some(i) = i.filter(|i| *i < n)
            && running
            && seen[i].is_none()
        {
            seen[i] = Some(t0.elapsed());
        }
    }
    for r in creator.await? {
        r?;
    }
    Ok(seen.into_iter().flatten().collect())
}
