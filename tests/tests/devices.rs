//! Device twins end to end with the real binaries: cloudcore standalone + edgecore (its
//! embedded MQTT broker) + kubectl + mosquitto clients as sensors and mappers.
//!
//! Device CRDs via kubectl → membership on MQTT; `twin/update` from `mosquitto_pub` →
//! `Device.status.twins` (other properties untouched); `kubectl patch` of a desired value
//! → `twin/update/delta`; KubeEdge's samples apply unchanged; garbage gets an error result
//! and the bus keeps serving; reports made while cloudcore is down arrive after it restarts.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::{Standalone, bin};

const NODE: &str = "edge-dev";
const DEVICE: &str = "thermo-1";

/// A port that was free a moment ago (rumqttd refuses port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token(s: &Standalone) -> String {
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

fn join(s: &Standalone, root: &Path, mqtt_port: u16) {
    let out = Command::new(bin("edgecore"))
        .args(["join", "--server", &s.hub, "--token", &token(s)])
        .args(["--node-name", NODE, "--root"])
        .arg(root)
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}")])
        .args(["--metrics-listen", "127.0.0.1:0", "--no-start"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "join: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Edge {
    child: Child,
}

impl Edge {
    fn run(root: &Path) -> Edge {
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

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
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

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn publish(port: u16, topic: &str, payload: &str) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn twin_update(port: u16, id: &str, props: &[(&str, &str)]) {
    let twin: serde_json::Map<String, Value> = props
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                serde_json::json!({"actual": {"value": v}, "metadata": {"type": "int"}}),
            )
        })
        .collect();
    let msg = serde_json::json!({"event_id": id, "timestamp": now_ms(), "twin": twin});
    let topic = format!("kedge/events/device/default/{DEVICE}/twin/update");
    assert!(publish(port, &topic, &msg.to_string()), "publish {msg}");
}

/// A `mosquitto_sub -v` on some topics; `ready` proves the subscription is live.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
    probe: String,
}

impl Sub {
    fn start(port: u16, topics: &[&str]) -> Sub {
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
    fn expect(&self, topic: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no message on {topic} within {timeout:?}"));
            if let Some(payload) = line.strip_prefix(&format!("{topic} ")) {
                return serde_json::from_str(payload)
                    .unwrap_or_else(|e| panic!("{topic}: {e}: {payload}"));
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

fn manifests() -> String {
    format!(
        r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{name: thermo, namespace: default}}
spec:
  protocol: virtual
  properties:
  - {{name: temperature, type: INT, accessMode: ReadWrite, minimum: "-40", maximum: "100"}}
  - {{name: humidity, type: INT, accessMode: ReadOnly}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: {DEVICE}, namespace: default}}
spec:
  deviceModelRef: {{name: thermo}}
  nodeName: {NODE}
  protocol: {{protocolName: virtual}}
  properties:
  - {{name: temperature}}
  - {{name: humidity}}
"#
    )
}

/// `propertyName` → reported value in `Device.status.twins`.
fn reported(s: &Standalone) -> std::collections::BTreeMap<String, (String, Value)> {
    let out = s.kubectl(&["get", "device", DEVICE, "-o", "jsonpath={.status.twins}"]);
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

fn reported_value(s: &Standalone, prop: &str) -> Option<String> {
    reported(s).get(prop).map(|(v, _)| v.clone())
}

struct Setup {
    _dir: tempfile::TempDir,
    cloud_dir: std::path::PathBuf,
    cloud_flags: Vec<String>,
    s: Standalone,
    root: std::path::PathBuf,
    edge: Edge,
    port: u16,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cloud_dir = dir.path().join("cloud");
    // A fixed hub port for this run, so a restarted cloudcore is where the edge looks.
    let cloud_flags = vec![
        "--hub-listen".to_owned(),
        format!("127.0.0.1:{}", free_port()),
    ];
    let flags: Vec<&str> = cloud_flags.iter().map(String::as_str).collect();
    let s = Standalone::start(&cloud_dir, &flags).unwrap();
    let root = dir.path().join("edge");
    let port = free_port();
    join(&s, &root, port);
    let edge = Edge::run(&root);
    wait_for(
        "the embedded broker accepts",
        Duration::from_secs(10),
        || publish(port, "kedge/hello", "x"),
    );
    Setup {
        _dir: dir,
        cloud_dir,
        cloud_flags,
        s,
        root,
        edge,
        port,
    }
}

#[test]
fn twin_reports_reach_device_status_and_desired_reaches_mqtt() {
    let t = setup();
    let (s, port) = (&t.s, t.port);
    let membership = format!("kedge/events/node/{NODE}/membership/updated");
    let dev = format!("kedge/events/device/default/{DEVICE}");
    let delta = format!("{dev}/twin/update/delta");
    let result = format!("{dev}/twin/update/result");
    let sub = Sub::start(port, &[&membership, &delta, &result]);

    s.apply(&manifests());
    let m = sub.expect(&membership, Duration::from_secs(10));
    assert!(m.to_string().contains(DEVICE), "membership: {m}");

    // A report reaches Device.status within 2 s.
    twin_update(port, "1", &[("humidity", "50")]);
    let r = sub.expect(&result, Duration::from_secs(5));
    assert!(r.get("code").is_none_or(|c| c == 200), "result: {r}");
    twin_update(port, "2", &[("temperature", "23")]);
    let took = wait_for(
        "temperature 23 in Device status",
        Duration::from_secs(2),
        || reported_value(s, "temperature").as_deref() == Some("23"),
    );
    eprintln!("report -> Device.status in {took:?}");
    let twins = reported(s);
    assert_eq!(twins["humidity"].0, "50", "{twins:?}");
    assert!(
        twins["temperature"].1.get("timestamp").is_some(),
        "timestamp: {twins:?}"
    );

    // A later update of one property leaves the other's reported value alone.
    twin_update(port, "3", &[("temperature", "24")]);
    wait_for("temperature 24", Duration::from_secs(2), || {
        reported_value(s, "temperature").as_deref() == Some("24")
    });
    assert_eq!(reported_value(s, "humidity").as_deref(), Some("50"));

    // A desired value set with kubectl reaches the mapper as a delta.
    s.kubectl_ok(&[
        "patch",
        "device",
        DEVICE,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"properties":[{"name":"temperature","desired":{"value":"30"}},{"name":"humidity"}]}}"#,
    ]);
    let d = sub.expect(&delta, Duration::from_secs(5));
    assert!(d.to_string().contains("30"), "delta: {d}");

    // Garbage gets an error result; the bus keeps serving.
    assert!(publish(port, &format!("{dev}/twin/update"), "not json {"));
    let r = sub.expect(&result, Duration::from_secs(5));
    assert!(r.get("code").is_some_and(|c| c != 200), "error result: {r}");
    twin_update(port, "4", &[("temperature", "25")]);
    wait_for(
        "temperature 25 after garbage",
        Duration::from_secs(2),
        || reported_value(s, "temperature").as_deref() == Some("25"),
    );
    assert_eq!(reported_value(s, "humidity").as_deref(), Some("50"));
}

#[test]
fn kubeedge_samples_apply_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let hub = format!("127.0.0.1:{}", free_port());
    let s = Standalone::start(&dir.path().join("cloud"), &["--hub-listen", &hub]).unwrap();
    let compat = Path::new("/work/shared/compat/kubeedge");
    for f in [
        "website-devicemodel-sample.yaml",
        "website-device-sample.yaml",
    ] {
        let text = std::fs::read_to_string(compat.join(f)).unwrap();
        s.apply(&text);
    }
    let out = s.kubectl_ok(&["get", "device", "beta1-device", "-o", "json"]);
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["spec"]["nodeName"], "worker-node1");
    assert_eq!(d["spec"]["properties"][0]["desired"]["value"], "30");
    let table = s.kubectl_ok(&["get", "devices"]);
    assert!(table.contains("beta1-device"), "{table}");
}

#[test]
fn reports_made_while_cloud_is_down_arrive_after_restart() {
    let mut t = setup();
    let port = t.port;
    let membership = format!("kedge/events/node/{NODE}/membership/updated");
    let sub = Sub::start(port, &[&membership]);
    t.s.apply(&manifests());
    sub.expect(&membership, Duration::from_secs(10));
    twin_update(port, "1", &[("temperature", "1"), ("humidity", "1")]);
    wait_for("first report", Duration::from_secs(3), || {
        reported_value(&t.s, "temperature").as_deref() == Some("1")
    });

    t.s.stop().unwrap();
    for i in 2..=50 {
        let v = i.to_string();
        let prop = if i % 2 == 0 {
            "temperature"
        } else {
            "humidity"
        };
        twin_update(port, &v, &[(prop, &v)]);
    }
    // Let the throttled last report reach the outbox, then restart the edge too.
    std::thread::sleep(Duration::from_millis(600));
    drop(t.edge);
    t.edge = Edge::run(&t.root);

    let flags: Vec<&str> = t.cloud_flags.iter().map(String::as_str).collect();
    t.s = Standalone::start(&t.cloud_dir, &flags).unwrap();
    wait_for(
        "offline reports in Device status",
        Duration::from_secs(20),
        || {
            reported_value(&t.s, "temperature").as_deref() == Some("50")
                && reported_value(&t.s, "humidity").as_deref() == Some("49")
        },
    );
}
