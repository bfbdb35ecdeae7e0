//! `kedge-bench twin [--smoke] [--devices N] [--rate R] [--seconds S] [--dir DIR]`: device
//! twins through one edge (issue 7) with the real stack — `cloudcore standalone`, a joined
//! `edgecore` with its embedded MQTT broker, rumqttc clients as mappers publishing
//! KubeEdge-format `kedge/events/device/{ns}/{name}/twin/update` reports, and a watch on
//! Devices in the API.
//!
//! Phases, on one edge holding N Devices (3 INT properties each):
//! 1. **idle**: edgecore's RSS with its broker and no devices;
//! 2. **steady**: every device publishes R reports/s (one property each, round robin) for
//!    S seconds; end-to-end latency and edgecore's RSS under that load;
//! 3. **saturation**: 4 connections keep 256 reports in flight (a new one as soon as a
//!    `twin/update/result` answers one) for S seconds; accepted reports/s, CPU per report.
//!
//! End to end is measured per publish: from sending it until the Device's status, as a
//! watch delivers it, shows *that value or a newer one* of the property (the edge writes at
//! most one status per device per 200 ms, latest wins, so most values are replaced before
//! they are written; their wait until the newer value is visible is what a reader of the API
//! sees). After each phase every property's last published value, with its timestamp, must
//! be in the status (else exit 1).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::tests::Standalone;
use ::tests::edge::{Edge, free_addr};
use anyhow::{Context, Result, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::report::{self, Mem, Pcts, Report};
use crate::twin_track::{PhaseLatency, Track};

const USAGE: &str =
    "usage: kedge-bench twin [--smoke] [--devices N] [--rate R] [--seconds S] [--dir DIR]

  --devices N   Devices bound to the edge (default 100; --smoke 20)
  --rate R      reports per second of each device in the steady phase (default 10)
  --seconds S   length of the steady and the saturation phase (default 20; --smoke 4)
  --dir DIR     data directories go under DIR (default /var/tmp)
Exit code: 0 done (targets met or not), 1 a correctness check failed, 2 bad arguments.";

const NODE: &str = "bench-twin";
const NS: &str = "default";
const PROPS: [&str; 3] = ["temperature", "humidity", "pressure"];
/// Publisher connections (devices are spread over them; one device, one connection, so its
/// reports arrive in order).
const CONNECTIONS: usize = 4;
/// Reports in flight during the saturation phase (the broker allows 100 per connection).
const WINDOW: usize = 256;
/// How long the last values may take to be visible before it is a failure.
const SETTLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Opts {
    devices: usize,
    rate: f64,
    seconds: u64,
    dir: Option<PathBuf>,
    smoke: bool,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let smoke = args.iter().any(|a| a == "--smoke");
        let mut o = Opts {
            devices: if smoke { 20 } else { 100 },
            rate: 10.0,
            seconds: if smoke { 4 } else { 20 },
            dir: None,
            smoke,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--smoke" => {}
                "--devices" => o.devices = positive(a, value()?)?,
                "--seconds" => o.seconds = positive(a, value()?)? as u64,
                "--rate" => {
                    let v = value()?;
                    o.rate = v
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1000.0)
                        .with_context(|| format!("--rate: {v:?} is not a rate in (0, 1000]"))?;
                }
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                other => bail!("unknown argument {other:?}"),
            }
        }
        Ok(o)
    }
}

fn positive(flag: &str, v: &str) -> Result<usize> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
        .with_context(|| format!("{flag}: {v:?} is not a count in 1..=100000"))
}

/// Entry point of the `twin` subcommand.
pub fn main(args: &[String]) -> ExitCode {
    crate::support::main(
        "kedge-bench twin",
        USAGE,
        args,
        Opts::parse,
        |opts| async move {
            let (mut report, started) = crate::support::start_report();
            // A failed run is reported with the rows it got, so the table is never lost.
            if let Err(e) = run(&opts, &mut report).await {
                report.broken(format!("the benchmark could not run: {e:#}"));
            }
            crate::support::finish_report(&mut report, started);
            Ok(report)
        },
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn device_name(i: usize) -> String {
    format!("bench-{i:05}")
}

fn device_index(name: &str) -> Option<usize> {
    name.strip_prefix("bench-")?.parse().ok()
}

/// The DeviceModel and `n` Devices bound to the edge.
fn manifests(n: usize) -> String {
    let props: String = PROPS
        .iter()
        .map(|p| format!("  - {{name: {p}, type: INT, accessMode: ReadOnly}}\n"))
        .collect();
    let mut y = format!(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\n\
         metadata: {{name: bench-sensor, namespace: {NS}}}\n\
         spec:\n  protocol: virtual\n  properties:\n{props}"
    );
    let dprops: String = PROPS
        .iter()
        .map(|p| format!("  - {{name: {p}}}\n"))
        .collect();
    for i in 0..n {
        y.push_str(&format!(
            "---\napiVersion: devices.kubeedge.io/v1beta1\nkind: Device\n\
             metadata: {{name: {}, namespace: {NS}}}\n\
             spec:\n  deviceModelRef: {{name: bench-sensor}}\n  nodeName: {NODE}\n\
             \x20 protocol: {{protocolName: virtual}}\n  properties:\n{dprops}",
            device_name(i)
        ));
    }
    y
}

/// A `twin/update` setting `props` of a device to `seq`, every value stamped `ts`.
fn twin_update(event_id: &str, props: &[usize], seq: u64, ts: i64) -> Vec<u8> {
    let twin: serde_json::Map<String, Value> = props
        .iter()
        .filter_map(|&p| PROPS.get(p))
        .map(|p| {
            let v = json!({"actual": {"value": seq.to_string(), "metadata": {"timestamp": ts}},
                "metadata": {"type": "int"}});
            ((*p).to_owned(), v)
        })
        .collect();
    json!({"event_id": event_id, "timestamp": ts, "twin": twin})
        .to_string()
        .into_bytes()
}

/// State shared by the MQTT tasks and the watch.
struct Shared {
    track: Mutex<Track>,
    /// `twin/update/result` answers with code 200 (benchmark phases only).
    ok: AtomicU64,
    /// Answers with another code in a benchmark phase, and the first of them.
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
    /// Devices whose warm-up report was accepted.
    ready: Vec<AtomicBool>,
    /// Saturation: one permit per report that may be sent.
    window: Semaphore,
    /// Device status writes delivered by the watch.
    status_events: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `twin/update/result`. Event ids are `<phase letter><device>-<value>`: `w` warm-up
    /// (refusals expected until the device reached the edge), `r` steady, `s` saturation.
    fn on_result(&self, payload: &[u8]) {
        let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let id = v["event_id"].as_str().unwrap_or("");
        let code = v["code"].as_u64().unwrap_or(0);
        let phase = id.chars().next();
        let dev = id
            .get(1..)
            .and_then(|r| r.split_once('-'))
            .and_then(|(d, _)| d.parse::<usize>().ok());
        if phase == Some('w') {
            if code == 200
                && let Some(r) = dev.and_then(|d| self.ready.get(d))
            {
                r.store(true, Ordering::Relaxed);
            }
            return;
        }
        if code == 200 {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| String::from_utf8_lossy(payload).into_owned());
        }
        if phase == Some('s') {
            self.window.add_permits(1);
        }
    }

    /// A Device as the watch delivered it.
    fn on_device(&self, d: &Value, now: Instant) {
        let Some(dev) = d["metadata"]["name"].as_str().and_then(device_index) else {
            return;
        };
        self.status_events.fetch_add(1, Ordering::Relaxed);
        let mut track = self.lock();
        for t in d["status"]["twins"].as_array().into_iter().flatten() {
            let Some(p) = PROPS.iter().position(|p| t["propertyName"] == *p) else {
                continue;
            };
            let reported = &t["reported"];
            let value = reported["value"].as_str().and_then(|v| v.parse().ok());
            let ts = &reported["metadata"]["timestamp"];
            let ts = ts
                .as_i64()
                .or_else(|| ts.as_str().and_then(|s| s.parse().ok()));
            if let (Some(value), Some(ts)) = (value, ts) {
                track.saw(dev, p, value, ts, now);
            }
        }
    }
}

fn mqtt_options(port: u16, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(100);
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    o
}

/// Polls an event loop until aborted; answers go to `shared`; `subacked` fires once.
async fn drive(
    mut el: EventLoop,
    shared: Arc<Shared>,
    subacked: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut subacked = subacked;
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => shared.on_result(&p.payload),
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(tx) = subacked.take() {
                    let _ = tx.send(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("kedge-bench twin: MQTT connection: {e}; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The mappers: publisher connections and one subscriber of every result.
struct Mappers {
    clients: Vec<AsyncClient>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Mappers {
    async fn connect(port: u16, shared: &Arc<Shared>) -> Result<Self> {
        let mut tasks = Vec::new();
        let (sub, el) = AsyncClient::new(mqtt_options(port, "kedge-bench-results"), 1024);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.push(tokio::spawn(drive(el, shared.clone(), Some(tx))));
        let filter = format!("kedge/events/device/{NS}/+/twin/update/result");
        sub.subscribe(filter, QoS::AtLeastOnce).await?;
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .context("no SUBACK for the result subscription within 10 s")??;
        let mut clients = vec![sub];
        for i in 0..CONNECTIONS {
            let (c, el) = AsyncClient::new(mqtt_options(port, &format!("kedge-bench-{i}")), 1024);
            tasks.push(tokio::spawn(drive(el, shared.clone(), None)));
            clients.push(c);
        }
        Ok(Self { clients, tasks })
    }

    /// The client publishing for device `dev`.
    fn client(&self, dev: usize) -> &AsyncClient {
        &self.clients[1 + dev % CONNECTIONS]
    }
}

impl Drop for Mappers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Publishes one report of `dev` setting `props` (recorded in the track first).
async fn report_once(
    shared: &Shared,
    client: &AsyncClient,
    phase: char,
    dev: usize,
    props: &[usize],
) -> Result<()> {
    let ts = now_ms();
    let seq = shared
        .lock()
        .publish(dev, props, ts, Instant::now())
        .context("device out of range")?;
    let payload = twin_update(&format!("{phase}{dev}-{seq}"), props, seq, ts);
    let topic = format!("kedge/events/device/{NS}/{}/twin/update", device_name(dev));
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await?;
    Ok(())
}

async fn run(o: &Opts, report: &mut Report) -> Result<()> {
    let tmp = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir_in("/var/tmp").or_else(|_| tempfile::tempdir())?,
    };
    eprintln!(
        "kedge-bench twin{}: {} devices, {} reports/s each, {} s phases; data under {}",
        if o.smoke { " --smoke" } else { "" },
        o.devices,
        o.rate,
        o.seconds,
        tmp.path().display()
    );
    let s = Standalone::start(&tmp.path().join("cloud"), &[])?;
    let (mut edge, port) = start_edge(&s, &tmp.path().join("edge"))?;
    let pid = edge.pid().context("edgecore is not running")?;
    let cloud_pid = s.child.id();

    report.info(
        "edgecore under test (the memory targets are for the static gateway build)",
        report::linkage(&::tests::bin("edgecore"))?,
    );
    // Idle: broker up, node Ready, no devices.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = Mem::of(pid)?;
    report.check(
        "edgecore RSS idle (broker, no devices)",
        idle.split(),
        "≤ 10 MB",
        idle.rss_kib * 1024 <= 10_000_000,
    );

    apply_devices(&s, o.devices)?;
    let shared = Arc::new(Shared {
        track: Mutex::new(Track::new(o.devices, PROPS.len())),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_failure: Mutex::new(None),
        ready: (0..o.devices).map(|_| AtomicBool::new(false)).collect(),
        window: Semaphore::new(0),
        status_events: AtomicU64::new(0),
    });
    let watch = tokio::spawn(watch_devices(s.client().await?, shared.clone()));
    let mappers = Mappers::connect(port, &shared).await?;
    let t = Instant::now();
    warm_up(&shared, &mappers, o.devices).await?;
    report.info(
        &format!("{} Devices applied → all accepted at the edge", o.devices),
        report::ms(t.elapsed()),
    );
    settle(&shared, report, "warm-up").await;
    shared.lock().finish_phase();
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.info(
        &format!("edgecore RSS with {} idle devices", o.devices),
        Mem::of(pid)?.split(),
    );

    steady(o, &shared, &mappers, pid, cloud_pid, report).await?;
    saturate(o, &shared, &mappers, pid, cloud_pid, report).await?;

    let failed = shared.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = shared
            .first_failure
            .lock()
            .map(|f| f.clone().unwrap_or_default())
            .unwrap_or_default();
        report.broken(format!("{failed} reports were refused; the first: {first}"));
    }
    watch.abort();
    drop(mappers);
    if !edge.log().contains("device bus running") {
        report.broken("edgecore's log does not show the device bus running".to_owned());
    }
    edge.kill9();
    Ok(())
}

/// Joins the edge with its broker on a free port and starts it; waits for Ready.
fn start_edge(s: &Standalone, root: &Path) -> Result<(Edge, u16)> {
    let mut edge = Edge::join(s, NODE, root, &[]);
    // `join` gave the broker port 0 (the bus off); the benchmark needs it on.
    let addr = free_addr();
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .context("free port")?;
    let config = std::fs::read_to_string(edge.config())?;
    let mut found = false;
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("mqtt_listen") {
                found = true;
                format!("mqtt_listen = \"{addr}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    if !found {
        bail!("no mqtt_listen line in {}", edge.config().display());
    }
    std::fs::write(edge.config(), config)?;
    edge.start();
    let t = Instant::now();
    while s.node_ready(NODE) != "True" || std::net::TcpStream::connect(&addr).is_err() {
        if t.elapsed() > Duration::from_secs(60) {
            bail!(
                "the edge was not Ready with its broker up within 60 s:\n{}",
                edge.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((edge, port))
}

/// The repo's CRDs (cloudcore serves them already; applying them again must work) and the
/// devices.
fn apply_devices(s: &Standalone, n: usize) -> Result<()> {
    let crds = ::tests::workspace_root().join("deploy/crds");
    let out = s.kubectl(&["apply", "-f", &crds.to_string_lossy()]);
    if !out.status.success() {
        bail!(
            "kubectl apply -f deploy/crds: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some(&manifests(n)));
    if !out.status.success() {
        bail!(
            "kubectl apply (devices): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Reports every property of every device until the edge accepts each device (it answers
/// 404/503 until the Device and its model arrived).
async fn warm_up(shared: &Arc<Shared>, m: &Mappers, n: usize) -> Result<()> {
    let all: Vec<usize> = (0..PROPS.len()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: Vec<usize> = (0..n)
            .filter(|&d| !shared.ready[d].load(Ordering::Relaxed))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} devices never accepted a report within 60 s",
                waiting.len()
            );
        }
        for d in waiting {
            report_once(shared, m.client(d), 'w', d, &all).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until every property's last value is visible; a failure otherwise.
async fn settle(shared: &Shared, report: &mut Report, phase: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let behind = shared.lock().behind();
        if behind.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let some: Vec<String> = behind
                .iter()
                .take(5)
                .map(|(d, p)| format!("{}/{}", device_name(*d), PROPS[*p]))
                .collect();
            report.broken(format!(
                "{phase}: {} properties do not show their last published value (and timestamp) \
                 in Device status {} s later, e.g. {}",
                behind.len(),
                SETTLE.as_secs(),
                some.join(", ")
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn latency_rows(report: &mut Report, what: &str, lat: &PhaseLatency, judge: bool) {
    let every = Pcts::of(lat.every.clone());
    let metric = format!(
        "{what}: publish → that value or a newer one visible in Device status (watch), \
         p50 / p99 / max over {} publishes",
        report::count(lat.every.len() + lat.unseen)
    );
    if judge {
        report.check(
            &metric,
            every.show(),
            "p99 ≤ 1 s",
            every.p99 <= Duration::from_secs(1) && lat.unseen == 0,
        );
    } else {
        report.info(&metric, every.show());
    }
    report.info(
        &format!(
            "{what}: last publish of each property → visible, p50 / p99 / max ({} properties)",
            report::count(lat.last.len())
        ),
        Pcts::of(lat.last.clone()).show(),
    );
}

/// Every device publishes `rate` reports/s for `seconds`.
async fn steady(
    o: &Opts,
    shared: &Arc<Shared>,
    m: &Mappers,
    pid: u32,
    cloud_pid: u32,
    report: &mut Report,
) -> Result<()> {
    let what = format!("steady, {} devices × {} Hz", o.devices, o.rate);
    eprintln!("kedge-bench twin: {what} for {} s", o.seconds);
    report::reset_peak(pid);
    let (ok0, ev0) = counters(shared);
    let cpu0 = cpu_of(pid, cloud_pid)?;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(o.seconds);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let devs: Vec<usize> = (c..o.devices).step_by(CONNECTIONS).collect();
        let client = m.clients[1 + c].clone();
        let shared = shared.clone();
        let period = Duration::from_secs_f64(1.0 / o.rate);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut round = 0usize;
            while Instant::now() < end {
                tick.tick().await;
                for &d in &devs {
                    let p = (round + d) % PROPS.len();
                    report_once(&shared, &client, 'r', d, &[p]).await?;
                }
                round += 1;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mem = Mem::of(pid)?;
    let sent = t0.elapsed();
    settle(shared, report, &what).await;
    let (ok1, ev1) = counters(shared);
    let cpu1 = cpu_of(pid, cloud_pid)?;
    let lat = shared.lock().finish_phase();
    let n = usize::try_from(ok1 - ok0).unwrap_or(usize::MAX);
    report.info(
        &format!("{what}: reports accepted (200 results) / offered rate"),
        format!(
            "{} / {:.0}/s",
            report::count(n),
            report::rate(lat.every.len() + lat.unseen, sent)
        ),
    );
    latency_rows(report, &what, &lat, true);
    report.info(
        &format!("{what}: Device status writes seen by the watch"),
        format!("{:.0}/s", report::rate((ev1 - ev0) as usize, sent)),
    );
    report.info(
        &format!("{what}: CPU per report, edgecore / cloudcore standalone"),
        per(cpu1.0 - cpu0.0, cpu1.1 - cpu0.1, n),
    );
    report.check(
        &format!("edgecore RSS with {what} (at the end / peak)"),
        format!("{} / peak {}", mem.split(), mib(mem.hwm_kib)),
        "≤ 20 MB",
        mem.rss_kib * 1024 <= 20_000_000,
    );
    Ok(())
}

/// Keeps [`WINDOW`] reports in flight for `seconds`.
async fn saturate(
    o: &Opts,
    shared: &Arc<Shared>,
    m: &Mappers,
    pid: u32,
    cloud_pid: u32,
    report: &mut Report,
) -> Result<()> {
    let what = format!("saturation, {WINDOW} in flight over {} devices", o.devices);
    eprintln!("kedge-bench twin: {what} for {} s", o.seconds);
    let (ok0, ev0) = counters(shared);
    let cpu0 = cpu_of(pid, cloud_pid)?;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(o.seconds);
    shared.window.add_permits(WINDOW);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let devs: Vec<usize> = (c..o.devices).step_by(CONNECTIONS).collect();
        let client = m.clients[1 + c].clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < end {
                let Ok(Ok(permit)) =
                    tokio::time::timeout(Duration::from_millis(100), shared.window.acquire()).await
                else {
                    continue;
                };
                permit.forget();
                let Some(&d) = devs.get(i % devs.len().max(1)) else {
                    break;
                };
                let p = (i / devs.len()) % PROPS.len();
                report_once(&shared, &client, 's', d, &[p]).await?;
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Every report in flight must be answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.window.available_permits() < WINDOW && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = t0.elapsed();
    let unanswered = WINDOW.saturating_sub(shared.window.available_permits());
    if unanswered > 0 {
        report.broken(format!(
            "{what}: {unanswered} reports got no twin/update/result"
        ));
    }
    let (ok1, _) = counters(shared);
    let cpu1 = cpu_of(pid, cloud_pid)?;
    let mem = Mem::of(pid)?;
    settle(shared, report, &what).await;
    let (_, ev1) = counters(shared);
    let lat = shared.lock().finish_phase();
    let n = usize::try_from(ok1 - ok0).unwrap_or(usize::MAX);
    let rate = report::rate(n, took);
    report.check(
        "twin updates accepted at the edge (200 results) per second, saturated",
        format!("{rate:.0}/s ({} in {})", report::count(n), report::ms(took)),
        "≥ 5,000/s",
        rate >= 5000.0,
    );
    report.info(
        &format!("{what}: CPU per report, edgecore / cloudcore standalone"),
        per(cpu1.0 - cpu0.0, cpu1.1 - cpu0.1, n),
    );
    latency_rows(report, &what, &lat, false);
    report.info(
        &format!("{what}: Device status writes seen by the watch"),
        format!("{:.0}/s", report::rate((ev1 - ev0) as usize, took)),
    );
    report.info(
        &format!("edgecore RSS after {what} (VmRSS / peak since the steady phase)"),
        format!("{} / peak {}", mem.split(), mib(mem.hwm_kib)),
    );
    Ok(())
}

/// CPU time used so far by edgecore (`pid`) and by cloudcore (`cloud_pid`).
fn cpu_of(pid: u32, cloud_pid: u32) -> Result<(Duration, Duration)> {
    Ok((
        report::cpu_time(Some(pid))?,
        report::cpu_time(Some(cloud_pid))?,
    ))
}

fn counters(shared: &Shared) -> (u64, u64) {
    (
        shared.ok.load(Ordering::Relaxed),
        shared.status_events.load(Ordering::Relaxed),
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn per(edge: Duration, cloud: Duration, n: usize) -> String {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    format!("{} / {}", us(edge / n), us(cloud / n))
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Watches the Devices of [`NS`] (from a list's resourceVersion, re-watching when the
/// stream ends) and hands every one to `shared`.
async fn watch_devices(client: kube::Client, shared: Arc<Shared>) -> Result<()> {
    use futures::StreamExt;
    use kube::api::WatchParams;
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchEvent};
    let gvk = GroupVersionKind::gvk("devices.kubeedge.io", "v1beta1", "Device");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "devices");
    let api: Api<DynamicObject> = Api::namespaced_with(client, NS, &ar);
    let mut rv = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    loop {
        let mut events = api
            .watch(&WatchParams::default().timeout(290), &rv)
            .await?
            .boxed();
        while let Some(ev) = events.next().await {
            let obj = match ev? {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
                WatchEvent::Bookmark(b) => {
                    rv = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Deleted(_) => continue,
                WatchEvent::Error(e) => bail!("watch error: {e:?}"),
            };
            let now = Instant::now();
            if let Some(r) = &obj.metadata.resource_version {
                rv.clone_from(r);
            }
            let d = serde_json::to_value(&obj).unwrap_or(Value::Null);
            shared.on_device(&d, now);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments() {
        let o = Opts::parse(&args(&["--smoke"])).unwrap();
        assert_eq!((o.devices, o.seconds), (20, 4));
        let o = Opts::parse(&args(&[
            "--devices",
            "7",
            "--rate",
            "2.5",
            "--seconds",
            "3",
        ]))
        .unwrap();
        assert_eq!((o.devices, o.rate, o.seconds), (7, 2.5, 3));
        for bad in [
            &["--devices"][..],
            &["--devices", "0"],
            &["--rate", "-1"],
            &["--rate", "NaN"],
            &["--seconds", "x"],
            &["--bogus"],
        ] {
            assert!(Opts::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reports_and_results_round_trip() {
        let msg: Value = serde_json::from_slice(&twin_update("s3-9", &[0, 2, 7], 9, 5)).unwrap();
        assert_eq!(msg["twin"]["temperature"]["actual"]["value"], "9");
        assert_eq!(
            msg["twin"]["pressure"]["actual"]["metadata"]["timestamp"],
            5
        );
        assert!(msg["twin"].get("humidity").is_none());
        assert_eq!(device_index(&device_name(42)), Some(42));
        assert_eq!(device_index("other"), None);
        let y = manifests(2);
        assert_eq!(y.matches("kind: Device\n").count(), 2);
    }
}
