//! Shared harness of the device e2e tests: a `cloudcore standalone`, one edgecore joined to
//! it with its embedded MQTT broker and metrics on free ports, mosquitto clients, and readers
//! of `Device.status` (through kubectl) and of edgecore's `/metrics`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::{Standalone, bin};

/// The edge node of these tests.
pub const NODE: &str = "edge-dev";

/// A port that was free a moment ago (rumqttd refuses port 0).
pub use tests::edge::free_port;

/// Whether `cmd args` runs and succeeds (tool detection).
pub fn have(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A join token for the edge.
pub fn token(s: &Standalone) -> String {
    let out = Command::new(bin("cloudcore"))
        .args(["token", "create", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `edgecore join --no-start` under `root`.
pub fn join(s: &Standalone, root: &Path, mqtt_port: u16, metrics_port: u16) {
    join_as(s, NODE, root, mqtt_port, metrics_port);
}

/// `edgecore join --no-start` under `root` as node `node`.
pub fn join_as(s: &Standalone, node: &str, root: &Path, mqtt_port: u16, metrics_port: u16) {
    let out = Command::new(bin("edgecore"))
        .args(["join", "--server", &s.hub, "--token", &token(s)])
        .args(["--node-name", node, "--root"])
        .arg(root)
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .arg("--no-start")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "join: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `edgecore run` (killed on drop).
pub struct Edge {
    pub child: Child,
}

impl Edge {
    pub fn run(root: &Path) -> Edge {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("edge.log"))
            .unwrap();
        let child = Command::new(bin("edgecore"))
            .arg("run")
            .arg("--config")
            .arg(root.join("etc/kedge/edgecore.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Edge { child }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms until it holds; returns how long it took.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// `mosquitto_pub -q 1` of one message; whether it was delivered to the broker.
/// Large payloads go through stdin (`-s`): an argument is limited to 128 KiB.
pub fn publish(port: u16, topic: &str, payload: &str) -> bool {
    use std::io::Write;
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if payload.len() < 64 * 1024 {
        return cmd
            .args(["-m", payload])
            .status()
            .is_ok_and(|s| s.success());
    }
    let Ok(mut child) = cmd.arg("-s").stdin(Stdio::piped()).spawn() else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(payload.as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}

/// A `twin/update` of `device` in `default` with int values.
pub fn twin_msg(id: &str, props: &[(&str, &str)]) -> String {
    let twin: serde_json::Map<String, Value> = props
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                serde_json::json!({"actual": {"value": v}, "metadata": {"type": "int"}}),
            )
        })
        .collect();
    serde_json::json!({"event_id": id, "timestamp": now_ms(), "twin": twin}).to_string()
}

/// `kedge/events/device/default/{device}/{suffix}`.
pub fn device_topic(device: &str, suffix: &str) -> String {
    format!("kedge/events/device/default/{device}/{suffix}")
}

/// A `mosquitto_sub -v` on some topics; `ready` proves the subscription is live.
pub struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
    probe: String,
}

impl Sub {
    pub fn start(port: u16, topics: &[&str]) -> Sub {
        let probe = format!("probe/{}", now_ms());
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v", "-q", "1"]);
        for t in topics.iter().copied().chain([probe.as_str()]) {
            cmd.args(["-t", t]);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let sub = Sub {
            child,
            lines,
            port,
            probe,
        };
        sub.ready();
        sub
    }

    fn ready(&self) {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto_sub did not come up"
            );
            publish(self.port, &self.probe, "x");
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(300))
                && l.starts_with(&self.probe)
            {
                return;
            }
        }
    }

    /// The payload of the next message on `topic` (probes and other topics skipped).
    pub fn expect(&self, topic: &str, timeout: Duration) -> Value {
        self.expect_where(topic, timeout, |_| true)
    }

    /// Like [`Sub::expect`], but `None` on timeout.
    pub fn try_expect(&self, topic: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(payload) = line.strip_prefix(&format!("{topic} "))
                && let Ok(v) = serde_json::from_str::<Value>(payload)
            {
                return Some(v);
            }
        }
    }

    /// The payload of the next message on `topic` that satisfies `pred`.
    pub fn expect_where(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no matching message on {topic} within {timeout:?}"));
            if let Some(payload) = line.strip_prefix(&format!("{topic} "))
                && let Ok(v) = serde_json::from_str::<Value>(payload)
                && pred(&v)
            {
                return v;
            }
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole Device object.
pub fn device_json(s: &Standalone, name: &str) -> Value {
    let out = s.kubectl(&["get", "device", name, "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `propertyName` -> (reported value, reported metadata) in `Device.status.twins`.
pub fn reported(s: &Standalone, device: &str) -> BTreeMap<String, (String, Value)> {
    let out = s.kubectl(&["get", "device", device, "-o", "jsonpath={.status.twins}"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let twins: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    twins
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let name = t["propertyName"].as_str()?.to_owned();
            let value = t["reported"]["value"].as_str()?.to_owned();
            Some((name, (value, t["reported"]["metadata"].clone())))
        })
        .collect()
}

/// One reported value.
pub fn reported_value(s: &Standalone, device: &str, prop: &str) -> Option<String> {
    reported(s, device).get(prop).map(|(v, _)| v.clone())
}

/// Sets one desired value with `kubectl patch` (a merge patch of the properties list).
pub fn set_desired(s: &Standalone, device: &str, prop: &str, value: &str) {
    let dev = device_json(s, device);
    let mut props = dev["spec"]["properties"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for p in &mut props {
        if p["name"] == prop {
            p["desired"] = serde_json::json!({"value": value});
        }
    }
    let patch = serde_json::json!({"spec": {"properties": props}}).to_string();
    s.kubectl_ok(&["patch", "device", device, "--type", "merge", "-p", &patch]);
}

/// Polls Device `name` until `pred` holds; on timeout the failure shows the Device and the
/// tail of the edge's log.
pub fn wait_device(
    t: &Setup,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) {
    let start = Instant::now();
    loop {
        let d = device_json(&t.s, name);
        if pred(&d) {
            return;
        }
        if start.elapsed() > timeout {
            let log = t.edge_log();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| !l.contains("device set changed") && !l.contains("bus::link"))
                .take(30)
                .collect();
            panic!(
                "timed out after {timeout:?}: {what}\ndevice: {d:#}\nedge log (newest first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A reported value inside a Device object.
pub fn twin_of(d: &Value, prop: &str) -> Option<String> {
    d["status"]["twins"]
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == prop)?["reported"]["value"]
        .as_str()
        .map(str::to_owned)
}

/// edgecore's `/metrics` as `name{labels}` -> value.
pub fn metrics(port: u16) -> BTreeMap<String, f64> {
    let (code, body) = tests::curl(&[&format!("http://127.0.0.1:{port}/metrics")]);
    assert_eq!(code, 200, "GET /metrics: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// One sample of `metrics` (0 when absent).
pub fn metric(all: &BTreeMap<String, f64>, key: &str) -> f64 {
    all.get(key).copied().unwrap_or(0.0)
}

/// cloudcore standalone + one edge.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub s: Standalone,
    pub root: PathBuf,
    pub edge: Edge,
    /// The embedded broker's port.
    pub port: u16,
    /// edgecore's metrics port.
    pub metrics_port: u16,
}

impl Setup {
    pub fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let s = Standalone::start(&dir.path().join("cloud"), &[]).unwrap();
        let root = dir.path().join("edge");
        let (port, metrics_port) = (free_port(), free_port());
        join(&s, &root, port, metrics_port);
        let edge = Edge::run(&root);
        wait_for(
            "the embedded broker accepts",
            Duration::from_secs(20),
            || publish(port, "kedge/hello", "x"),
        );
        Setup {
            dir,
            s,
            root,
            edge,
            port,
            metrics_port,
        }
    }

    /// The simulated GPIO bank of the edge.
    pub fn gpio_dir(&self) -> PathBuf {
        self.root.join("var/lib/kedge/gpio")
    }

    /// The edge's log so far (for failure messages).
    pub fn edge_log(&self) -> String {
        std::fs::read_to_string(self.root.join("edge.log")).unwrap_or_default()
    }

    pub fn metrics(&self) -> BTreeMap<String, f64> {
        metrics(self.metrics_port)
    }
}
