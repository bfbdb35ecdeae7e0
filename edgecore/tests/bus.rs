//! The device bus with real parts: the embedded rumqttd broker or a real Mosquitto,
//! `mosquitto_pub`/`mosquitto_sub` as mappers and apps, the simulated GPIO bank, and a real
//! Modbus RTU slave (pymodbus) behind a socat PTY pair.
//!
//! Needs `mosquitto` and `mosquitto-clients` (Debian); the Modbus test also needs `socat`,
//! `python3` and `pip install pymodbus==3.16.1 pyserial==3.5`, and is skipped (with the
//! reason printed) without them. Every wait has a timeout; ports are picked free.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use edgecore::bus::{self, BusConfig, BusError, DeviceSet, MemoryShadowStore, Upstream};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

const NODE: &str = "edge-1";
const SECS: Duration = Duration::from_secs(1);

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn have(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------- devices

fn thermo(generation: i64, desired: &str) -> Value {
    json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "thermo", "namespace": "ns", "generation": generation},
        "spec": {"deviceModelRef": {"name": "thermo-model"}, "nodeName": NODE,
            "properties": [{"name": "temp", "desired": {"value": desired}}, {"name": "humidity"}]}})
}

fn thermo_model() -> Value {
    json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "thermo-model", "namespace": "ns"},
        "spec": {"properties": [
            {"name": "temp", "type": "INT", "accessMode": "ReadWrite", "minimum": "1", "maximum": "100"},
            {"name": "humidity", "type": "INT", "accessMode": "ReadOnly"}]}})
}

fn device_set(devices: Vec<(Value, Option<Value>)>) -> DeviceSet {
    let mut s = DeviceSet::default();
    for (d, m) in devices {
        let id = format!(
            "{}/{}",
            d["metadata"]["namespace"].as_str().unwrap(),
            d["metadata"]["name"].as_str().unwrap()
        );
        s.devices.insert(id, (Arc::new(d), m.map(Arc::new)));
    }
    s
}

fn twin<'a>(status: &'a Value, prop: &str) -> &'a Value {
    status["twins"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["propertyName"] == prop))
        .unwrap_or(&Value::Null)
}

fn reported(status: &Value, prop: &str) -> Option<String> {
    twin(status, prop)["reported"]["value"]
        .as_str()
        .map(str::to_owned)
}

// ---------------------------------------------------------------- the bus

struct Bus {
    devices: watch::Sender<DeviceSet>,
    up: mpsc::Receiver<Upstream>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), BusError>>,
    _dir: tempfile::TempDir,
    sim_dir: PathBuf,
}

fn config(port: u16, dir: &Path) -> BusConfig {
    let mut cfg = BusConfig::new(NODE);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], port));
    cfg.gpio_sim_dir = dir.join("gpio");
    cfg
}

fn start(cfg: BusConfig, set: DeviceSet, dir: tempfile::TempDir) -> Bus {
    let (devices, rx) = watch::channel(set);
    let (up_tx, up) = mpsc::channel(1024);
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let sim_dir = cfg.gpio_sim_dir.clone();
    let task = tokio::spawn(async move {
        let mut registry = Registry::default();
        let metrics = edgecore::bus::metrics::BusMetrics::register(&mut registry);
        let store = Arc::new(MemoryShadowStore::new());
        bus::run(cfg, rx, up_tx, store, metrics, token).await
    });
    Bus {
        devices,
        up,
        shutdown,
        task,
        _dir: dir,
        sim_dir,
    }
}

impl Bus {
    async fn stop(self) {
        self.shutdown.cancel();
        let r = timeout(10 * SECS, self.task)
            .await
            .expect("bus did not stop within 10 s");
        r.unwrap().unwrap();
    }

    /// The next status of `name` that satisfies `pred`.
    async fn status_until(
        &mut self,
        name: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = timeout(left, self.up.recv()).await;
            match got {
                Ok(Some(Upstream::DeviceStatus {
                    name: n, status, ..
                })) if n == name && pred(&status) => {
                    return status;
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("upstream closed"),
                Err(_) => panic!("no matching status of {name} within {within:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------- mosquitto clients

type Creds<'a> = Option<(&'a str, &'a str)>;

fn client_args(cmd: &mut Command, port: u16, creds: Creds<'_>) {
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"]);
    if let Some((u, p)) = creds {
        cmd.args(["-u", u, "-P", p]);
    }
}

struct Sub {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

/// `mosquitto_sub -v` on `topics`, returned once it receives messages (checked with a probe
/// topic: mosquitto_sub's own debug output is not flushed into a pipe).
async fn sub(port: u16, topics: &[&str], creds: Creds<'_>) -> Sub {
    wait_listening(port).await;
    let probe = format!("probe/{}", free_port());
    let mut cmd = Command::new("mosquitto_sub");
    client_args(&mut cmd, port, creds);
    for t in topics.iter().copied().chain([probe.as_str()]) {
        cmd.args(["-t", t]);
    }
    cmd.arg("-v")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .expect("mosquitto_sub missing: install mosquitto-clients");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut sub = Sub {
        _child: child,
        lines,
    };
    let deadline = Instant::now() + 10 * SECS;
    loop {
        let mut pubcmd = Command::new("mosquitto_pub");
        client_args(&mut pubcmd, port, creds);
        pubcmd
            .args(["-t", &probe, "-m", "{}"])
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let _ = timeout(5 * SECS, pubcmd.status()).await;
        let seen = timeout(
            Duration::from_millis(300),
            sub.until(3600 * SECS, |t, _| t == probe),
        )
        .await;
        if seen.is_ok() {
            return sub;
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto_sub could not subscribe on port {port}"
        );
    }
}

async fn wait_listening(port: u16) {
    let deadline = Instant::now() + 10 * SECS;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Sub {
    /// The next message (topic, JSON) satisfying `pred`.
    async fn until(
        &mut self,
        within: Duration,
        pred: impl Fn(&str, &Value) -> bool,
    ) -> (String, Value) {
        let found = timeout(within, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                let Some((topic, body)) = line.split_once(' ') else {
                    continue;
                };
                let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                if pred(topic, &v) {
                    return Some((topic.to_owned(), v));
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(m)) => m,
            _ => panic!("no matching message within {within:?}"),
        }
    }
}

async fn publish(port: u16, topic: &str, payload: &str, creds: Creds<'_>) {
    let mut cmd = Command::new("mosquitto_pub");
    client_args(&mut cmd, port, creds);
    cmd.args(["-t", topic, "-m", payload]).kill_on_drop(true);
    let status = timeout(10 * SECS, cmd.status())
        .await
        .expect("mosquitto_pub hung")
        .expect("mosquitto_pub missing: install mosquitto-clients");
    assert!(status.success(), "mosquitto_pub to {topic} failed");
}

/// Publishes `payload` every 300 ms until `sub` sees a matching message (the bus may still
/// be (re)subscribing).
async fn publish_until(
    port: u16,
    topic: &str,
    payload: &str,
    sub: &mut Sub,
    within: Duration,
    pred: impl Fn(&str, &Value) -> bool + Copy,
) -> (String, Value) {
    let deadline = Instant::now() + within;
    loop {
        let _ = timeout(5 * SECS, async {
            let mut cmd = Command::new("mosquitto_pub");
            client_args(&mut cmd, port, None);
            cmd.args(["-t", topic, "-m", payload])
                .stderr(Stdio::null())
                .kill_on_drop(true);
            cmd.status().await
        })
        .await;
        let got = timeout(Duration::from_millis(300), sub.until(SECS * 3600, pred)).await;
        if let Ok(m) = got {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no answer on {topic} within {within:?}"
        );
    }
}

const RESULT: &str = "kedge/events/device/ns/thermo/twin/update/result";
const UPDATE: &str = "kedge/events/device/ns/thermo/twin/update";

fn event(id: &'static str) -> impl Fn(&str, &Value) -> bool + Copy {
    move |_, v| v["event_id"] == id
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_twin_updates_results_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let set = device_set(vec![(thermo(1, "30"), Some(thermo_model()))]);
    let mut b = start(config(port, dir.path()), set, dir);
    let mut results = sub(port, &["kedge/events/device/+/+/twin/update/result"], None).await;

    // A mapper reports temp; then humidity with its own timestamp.
    let temp = r#"{"event_id":"t1","timestamp":1700000000000,"twin":{"temp":{"actual":{"value":"25"},"metadata":{"type":"int"}}}}"#;
    let (topic, r) = publish_until(port, UPDATE, temp, &mut results, 10 * SECS, event("t1")).await;
    assert_eq!((topic.as_str(), r["code"].as_u64()), (RESULT, Some(200)));
    let hum = r#"{"event_id":"h1","timestamp":1700000001234,"twin":{"humidity":{"actual":{"value":"41","metadata":{"timestamp":1700000001000}}}}}"#;
    publish(port, UPDATE, hum, None).await;
    let (_, r) = results.until(5 * SECS, event("h1")).await;
    assert_eq!(r["code"], 200);
    assert_eq!(r["twin"]["humidity"]["actual"]["value"], "41");

    let s = b
        .status_until("thermo", 5 * SECS, |s| reported(s, "humidity").is_some())
        .await;
    assert_eq!(
        twin(&s, "humidity")["reported"]["metadata"]["timestamp"],
        "1700000001000"
    );
    assert_eq!(
        reported(&s, "temp").as_deref(),
        Some("25"),
        "other properties untouched"
    );
    assert_eq!(
        twin(&s, "temp")["reported"]["metadata"]["timestamp"],
        "1700000000000"
    );
    assert_eq!(twin(&s, "temp")["observedDesired"]["value"], "30");

    // Bad input: every case gets an error result with code and reason; nothing crashes.
    let long_key = format!(
        r#"{{"event_id":"k","twin":{{"{}":{{"actual":{{"value":"1"}}}}}}}}"#,
        "k".repeat(129)
    );
    let long_value = format!(
        r#"{{"event_id":"v","twin":{{"temp":{{"actual":{{"value":"{}"}}}}}}}}"#,
        "9".repeat(513)
    );
    let cases: Vec<(&str, String, &str, u64, &str)> = vec![
        (
            UPDATE,
            "{this is not json".into(),
            "",
            400,
            "malformed_json",
        ),
        (
            "kedge/events/device/ns/ghost/twin/update",
            r#"{"event_id":"g","twin":{}}"#.into(),
            "g",
            404,
            "unknown_device",
        ),
        (UPDATE, long_key, "k", 413, "key_too_long"),
        (UPDATE, long_value, "v", 413, "value_too_long"),
        (
            UPDATE,
            r#"{"event_id":"w","twin":{"temp":{"actual":{"value":"warm"}}}}"#.into(),
            "w",
            422,
            "type_mismatch",
        ),
        (
            UPDATE,
            r#"{"event_id":"o","twin":{"temp":{"expected":{"value":"500"}}},"version":1}"#.into(),
            "o",
            422,
            "above_maximum",
        ),
        (
            UPDATE,
            r#"{"event_id":"s","twin":{"temp":{"expected":{"value":"50"}}},"version":0}"#.into(),
            "s",
            409,
            "version_conflict",
        ),
        (
            UPDATE,
            r#"{"event_id":"r","twin":{"temp":{"actual":{"value":"26"}}},"version":0}"#.into(),
            "r",
            409,
            "version_conflict",
        ),
    ];
    for (topic, body, id, code, reason) in cases {
        publish(port, topic, &body, None).await;
        let (_, r) = results
            .until(5 * SECS, |_, v| v["event_id"] == id && v["code"] != 200)
            .await;
        assert_eq!(
            (r["code"].as_u64(), r["reason"].as_str()),
            (Some(code), Some(reason)),
            "{body}"
        );
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Still serving.
    let ok = r#"{"event_id":"after","twin":{"temp":{"actual":{"value":"27"}}}}"#;
    publish(port, UPDATE, ok, None).await;
    assert_eq!(results.until(5 * SECS, event("after")).await.1["code"], 200);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_set_changes_publish_membership_and_delta_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = config(port, dir.path());
    cfg.username = Some("mapper".into());
    cfg.password = Some("s3cret".into());
    let creds = Some(("mapper", "s3cret"));
    let b = start(cfg, DeviceSet::default(), dir);
    let mut s = sub(
        port,
        &[
            "kedge/events/node/edge-1/membership/updated",
            "kedge/events/device/ns/thermo/twin/update/delta",
        ],
        creds,
    )
    .await;

    b.devices
        .send_replace(device_set(vec![(thermo(1, "30"), Some(thermo_model()))]));
    let (_, m) = s
        .until(10 * SECS, |t, _| t.ends_with("membership/updated"))
        .await;
    assert_eq!(m["added_devices"][0]["id"], "ns/thermo");
    let (_, d) = s.until(5 * SECS, |t, _| t.ends_with("/delta")).await;
    assert_eq!(d["delta"]["temp"], "30");

    // kubectl patch of the desired value: a new generation.
    b.devices
        .send_replace(device_set(vec![(thermo(2, "45"), Some(thermo_model()))]));
    let (_, d) = s
        .until(5 * SECS, |t, v| {
            t.ends_with("/delta") && v["delta"]["temp"] == "45"
        })
        .await;
    assert_eq!(d["version"], 2);

    let mut other = thermo(1, "1");
    other["metadata"]["name"] = json!("pump");
    b.devices.send_replace(device_set(vec![(other, None)]));
    let (_, m) = s
        .until(5 * SECS, |t, _| t.ends_with("membership/updated"))
        .await;
    assert_eq!(m["added_devices"][0]["id"], "ns/pump");
    assert_eq!(m["removed_devices"][0]["id"], "ns/thermo");

    // Without credentials the embedded broker refuses the client.
    let mut cmd = Command::new("mosquitto_pub");
    client_args(&mut cmd, port, None);
    cmd.args(["-t", UPDATE, "-m", "{}"])
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let anon = timeout(10 * SECS, cmd.status()).await.unwrap().unwrap();
    assert!(!anon.success(), "anonymous publish must fail");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let b = start(config(port, dir.path()), DeviceSet::default(), dir);
    let r = timeout(10 * SECS, b.task).await.unwrap().unwrap();
    let e = r.expect_err("the port is taken");
    assert!(matches!(e, BusError::PortInUse { .. }), "{e}");
    assert!(e.to_string().contains("already in use"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reports_becomes_few_status_writes_and_the_last_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let set = device_set(vec![(thermo(1, "30"), Some(thermo_model()))]);
    let mut b = start(config(port, dir.path()), set, dir);
    let mut results = sub(port, &[RESULT], None).await;
    let first = r#"{"event_id":"ready","twin":{"humidity":{"actual":{"value":"0"}}}}"#;
    publish_until(port, UPDATE, first, &mut results, 10 * SECS, event("ready")).await;
    // Drain what the start produced.
    while timeout(Duration::from_millis(400), b.up.recv())
        .await
        .is_ok()
    {}

    let lines: String = (1..=1000)
        .map(|i| format!("{{\"event_id\":\"f{i}\",\"twin\":{{\"humidity\":{{\"actual\":{{\"value\":\"{i}\"}}}}}}}}\n"))
        .collect();
    let started = Instant::now();
    let mut cmd = Command::new("mosquitto_pub");
    client_args(&mut cmd, port, None);
    cmd.args(["-t", UPDATE, "-l"])
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, lines.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    timeout(30 * SECS, child.wait())
        .await
        .expect("mosquitto_pub -l hung")
        .unwrap();

    let mut writes = 0u32;
    let last = loop {
        let s = b.status_until("thermo", 20 * SECS, |_| true).await;
        writes += 1;
        if reported(&s, "humidity").as_deref() == Some("1000") {
            break s;
        }
    };
    let elapsed = started.elapsed();
    let allowed = u32::try_from(elapsed.as_millis() / 200).unwrap() + 3;
    assert!(
        writes <= allowed,
        "{writes} status writes in {elapsed:?} (at most {allowed})"
    );
    assert_eq!(reported(&last, "humidity").as_deref(), Some("1000"));
    // Nothing newer arrives: the last status was the final one.
    assert!(
        timeout(Duration::from_millis(600), b.up.recv())
            .await
            .is_err()
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_simulated_pins_follow_desired_and_report_flips() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let device = |generation: i64, led: &str| {
        json!({"metadata": {"name": "board", "namespace": "ns", "generation": generation},
            "spec": {"nodeName": NODE, "deviceModelRef": {"name": "board-model"},
                "protocol": {"protocolName": "gpio"},
                "properties": [
                    {"name": "led", "collectCycle": 100, "desired": {"value": led},
                     "visitors": {"protocolName": "gpio", "configData": {"pin": 17, "direction": "out"}}},
                    {"name": "button", "collectCycle": 100, "reportCycle": 60000,
                     "visitors": {"protocolName": "gpio", "configData": {"pin": 4, "direction": "in"}}}]}})
    };
    let model = json!({"metadata": {"name": "board-model", "namespace": "ns"}, "spec": {"properties": [
        {"name": "led", "type": "BOOLEAN", "accessMode": "ReadWrite"},
        {"name": "button", "type": "BOOLEAN", "accessMode": "ReadOnly"}]}});
    let set = device_set(vec![(device(1, "true"), Some(model.clone()))]);
    let mut b = start(config(port, dir.path()), set, dir);
    let led = bus_pin(&b, 17);
    let button = bus_pin(&b, 4);

    wait_file(&led, "1", 10 * SECS).await;
    let s = b
        .status_until("board", 5 * SECS, |s| {
            reported(s, "led").as_deref() == Some("true")
        })
        .await;
    let _ = s;
    let s = b
        .status_until("board", 5 * SECS, |s| s["state"].is_string())
        .await;
    assert_eq!(
        s["state"], "simulated",
        "a simulated bank is labelled in status"
    );

    // kubectl patch desired false -> the pin file changes.
    b.devices
        .send_replace(device_set(vec![(device(2, "false"), Some(model))]));
    wait_file(&led, "0", 5 * SECS).await;
    b.status_until("board", 5 * SECS, |s| {
        reported(s, "led").as_deref() == Some("false")
    })
    .await;

    // Flipping the input pin's file changes the reported value.
    b.status_until("board", 5 * SECS, |s| {
        reported(s, "button").as_deref() == Some("false")
    })
    .await;
    std::fs::write(&button, "1\n").unwrap();
    b.status_until("board", 5 * SECS, |s| {
        reported(s, "button").as_deref() == Some("true")
    })
    .await;
    b.stop().await;
}

fn bus_pin(b: &Bus, pin: u8) -> PathBuf {
    b.sim_dir.join(format!("pin-{pin}"))
}

async fn wait_file(path: &Path, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} is {:?}, not {want:?}",
            path.display(),
            got.trim()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- modbus RTU

struct Slave {
    child: Child,
    state: PathBuf,
}

fn slave_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modbus_slave.py")
}

async fn start_slave(port: &Path, state: &Path) -> Slave {
    let _ = std::fs::remove_file(state);
    let child = Command::new("python3")
        .arg(slave_script())
        .args([
            "--port",
            port.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + 15 * SECS;
    while !state.exists() {
        assert!(Instant::now() < deadline, "the Modbus slave did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Slave {
        child,
        state: state.to_owned(),
    }
}

impl Slave {
    fn read(&self) -> Value {
        std::fs::read_to_string(&self.state)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    }

    async fn until(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.read();
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the slave never showed the expected state: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_rtu_against_a_real_slave_over_a_pty() {
    if !have("socat", &["-V"]) {
        println!("SKIP modbus_rtu_against_a_real_slave_over_a_pty: socat is not installed");
        return;
    }
    if !have("python3", &["-c", "import pymodbus, serial"]) {
        println!(
            "SKIP modbus_rtu_against_a_real_slave_over_a_pty: python3 with pymodbus==3.16.1 and pyserial is not installed"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, bside) = (dir.path().join("a"), dir.path().join("b"));
    let _socat = Command::new("socat")
        .args([
            &format!("pty,raw,echo=0,link={}", a.display()),
            &format!("pty,raw,echo=0,link={}", bside.display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + 10 * SECS;
    while !(a.exists() && bside.exists()) {
        assert!(Instant::now() < deadline, "socat made no PTY pair");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = dir.path().join("slave.json");
    let mut slave = start_slave(&bside, &state).await;

    let device = |generation: i64, setpoint: &str| {
        json!({"metadata": {"name": "plc", "namespace": "ns", "generation": generation},
            "spec": {"nodeName": NODE, "deviceModelRef": {"name": "plc-model"},
                "protocol": {"protocolName": "modbus", "configData": {
                    "serialPort": a.to_str().unwrap(), "baudRate": 19200, "dataBits": 8,
                    "parity": "none", "stopBits": 1, "slaveID": 1, "timeout": 500}},
                "properties": [
                    {"name": "counter", "collectCycle": 100,
                     "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": 0, "limit": 1}}},
                    {"name": "setpoint", "collectCycle": 200, "desired": {"value": setpoint},
                     "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": 1, "limit": 1, "scale": 1}}},
                    {"name": "relay", "collectCycle": 200, "desired": {"value": "true"},
                     "visitors": {"protocolName": "modbus", "configData": {"register": "CoilRegister", "offset": 0}}}]}})
    };
    let model = json!({"metadata": {"name": "plc-model", "namespace": "ns"}, "spec": {"properties": [
        {"name": "counter", "type": "INT", "accessMode": "ReadOnly"},
        {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "1000"},
        {"name": "relay", "type": "BOOLEAN", "accessMode": "ReadWrite"}]}});
    let port = free_port();
    let set = device_set(vec![(device(1, "42"), Some(model.clone()))]);
    let mut b = start(config(port, dir.path()), set, tempfile::tempdir().unwrap());

    // Desired values reach the slave.
    slave
        .until(10 * SECS, |v| {
            v["holding"][1] == 42 && v["coils"][0] == true
        })
        .await;
    b.status_until("plc", 5 * SECS, |s| s["state"] == "online")
        .await;
    b.status_until("plc", 5 * SECS, |s| {
        reported(s, "setpoint").as_deref() == Some("42")
    })
    .await;

    // The slave's own counter: reported values follow it.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let s = b
            .status_until("plc", 5 * SECS, |s| reported(s, "counter").is_some())
            .await;
        let c: i64 = reported(&s, "counter").unwrap().parse().unwrap();
        let slave_now = slave.read()["counter"].as_i64().unwrap();
        assert!(
            c <= slave_now && c + 20 >= slave_now,
            "reported {c}, slave at {slave_now}"
        );
        seen.insert(c);
    }

    // kubectl patch: a new setpoint is written and read back.
    b.devices
        .send_replace(device_set(vec![(device(2, "77"), Some(model))]));
    slave.until(5 * SECS, |v| v["holding"][1] == 77).await;
    b.status_until("plc", 5 * SECS, |s| {
        reported(s, "setpoint").as_deref() == Some("77")
    })
    .await;

    // The slave goes away: offline (quietly); it comes back: online.
    slave.child.kill().await.unwrap();
    b.status_until("plc", 10 * SECS, |s| s["state"] == "offline")
        .await;
    slave = start_slave(&bside, &state).await;
    b.status_until("plc", 40 * SECS, |s| s["state"] == "online")
        .await;
    drop(slave);
    b.stop().await;
}

// ---------------------------------------------------------------- external Mosquitto

struct Mosquitto {
    child: Child,
}

async fn mosquitto(port: u16, dir: &Path) -> Mosquitto {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto missing: install the mosquitto package");
    let deadline = Instant::now() + 10 * SECS;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Mosquitto { child }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mosquitto_with_kubeedge_prefix_survives_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = mosquitto(port, dir.path()).await;
    let mut cfg = config(free_port(), dir.path());
    cfg.external = Some(format!("mqtt://127.0.0.1:{port}"));
    cfg.prefix = "$hw".into();
    let set = device_set(vec![(thermo(1, "30"), Some(thermo_model()))]);
    let mut b = start(cfg, set, tempfile::tempdir().unwrap());
    let update = "$hw/events/device/ns/thermo/twin/update";
    let result = "$hw/events/device/ns/thermo/twin/update/result";

    let mut results = sub(port, &[result], None).await;
    let body = r#"{"event_id":"x1","timestamp":1700000000000,"twin":{"humidity":{"actual":{"value":"10"},"metadata":{"type":"int"}}}}"#;
    let (_, r) = publish_until(port, update, body, &mut results, 15 * SECS, event("x1")).await;
    assert_eq!(r["code"], 200);
    b.status_until("thermo", 5 * SECS, |s| {
        reported(s, "humidity").as_deref() == Some("10")
    })
    .await;

    // Restart the broker on the same port: the bus reconnects and re-subscribes.
    broker.child.kill().await.unwrap();
    drop(results);
    broker = mosquitto(port, dir.path()).await;
    let mut results = sub(port, &[result], None).await;
    let body = r#"{"event_id":"x2","twin":{"humidity":{"actual":{"value":"11"}}}}"#;
    let (_, r) = publish_until(port, update, body, &mut results, 40 * SECS, event("x2")).await;
    assert_eq!(r["code"], 200);
    b.status_until("thermo", 5 * SECS, |s| {
        reported(s, "humidity").as_deref() == Some("11")
    })
    .await;
    b.stop().await;
    drop(broker);
}
