//! The built-in drivers through the whole system: `kubectl apply` of a DeviceModel + Device
//! with protocol settings → cloudcore → edgecore → the driver reads the device → the reported
//! twin in `kubectl get device -o json`; `kubectl patch` of a desired value → the driver
//! writes the pin / register (checked on the peer's side) → the reported value follows.
//!
//! Peers: the simulated GPIO pin bank (files — rppal only runs on a Raspberry Pi; the device
//! says `state: simulated`), a real pymodbus RTU slave behind a socat PTY pair, and a real
//! pymodbus Modbus TCP slave driven by KubeEdge's own Device/DeviceModel sample (only its
//! address and node rewritten, as the fixture's README asks).
//!
//! The Devices are applied before their DeviceModels: the edge holds them (no driver, twin
//! updates answered 503 `model_missing`, `state: model-missing`) until the models arrive.

#![allow(clippy::unwrap_used)]

mod devices_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devices_common::*;
use serde_json::Value;

const SECS: Duration = Duration::from_secs(1);

/// A pymodbus slave (RTU on a PTY, or TCP) and the JSON file showing its registers.
struct Slave {
    child: Child,
    state: PathBuf,
}

impl Slave {
    fn start(args: &[&str], state: &Path) -> Slave {
        let script = tests::workspace_root().join("edgecore/tests/modbus_slave.py");
        let child = Command::new("python3")
            .arg(script)
            .args(args)
            .arg("--state")
            .arg(state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let slave = Slave {
            child,
            state: state.to_owned(),
        };
        wait_for("the Modbus slave starts", 20 * SECS, || state.exists());
        slave
    }

    fn read(&self) -> Value {
        std::fs::read_to_string(&self.state)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    }

    fn until(&self, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let start = Instant::now();
        while start.elapsed() < within {
            last = self.read();
            if pred(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log =
            std::fs::read_to_string(self.state.with_file_name("edge/edge.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("driver") || l.contains("model") || l.contains("beta1"))
            .collect();
        panic!(
            "the slave never showed {what}: {last}\nedge log (drivers, models):\n{}",
            lines.join("\n")
        );
    }
}

impl Drop for Slave {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `socat` making a PTY pair `a` <-> `b`, killed on drop.
struct Pty(Child);

impl Pty {
    fn start(a: &Path, b: &Path) -> Pty {
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pty = Pty(child);
        wait_for("socat makes a PTY pair", 10 * SECS, || {
            a.exists() && b.exists()
        });
        pty
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GPIO board (led out, button in) and a Modbus RTU PLC, KubeEdge v1beta1 shapes.
fn manifests(serial: &Path) -> String {
    format!(
        r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{name: board-model, namespace: default}}
spec:
  protocol: gpio
  properties:
  - {{name: led, type: BOOLEAN, accessMode: ReadWrite}}
  - {{name: button, type: BOOLEAN, accessMode: ReadOnly}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: board, namespace: default}}
spec:
  deviceModelRef: {{name: board-model}}
  nodeName: {NODE}
  protocol: {{protocolName: gpio}}
  properties:
  - name: led
    collectCycle: 100
    desired: {{value: "true"}}
    visitors: {{protocolName: gpio, configData: {{pin: 17, direction: out}}}}
  - name: button
    collectCycle: 100
    reportCycle: 60000
    visitors: {{protocolName: gpio, configData: {{pin: 4, direction: in}}}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{name: plc-model, namespace: default}}
spec:
  protocol: modbus
  properties:
  - {{name: counter, type: INT, accessMode: ReadOnly}}
  - {{name: setpoint, type: INT, accessMode: ReadWrite, minimum: "0", maximum: "1000"}}
  - {{name: relay, type: BOOLEAN, accessMode: ReadWrite}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: plc, namespace: default}}
spec:
  deviceModelRef: {{name: plc-model}}
  nodeName: {NODE}
  protocol:
    protocolName: modbus
    configData: {{serialPort: "{serial}", baudRate: 19200, dataBits: 8, parity: none, stopBits: 1, slaveID: 1, timeout: 1000}}
  properties:
  - name: counter
    collectCycle: 200
    visitors: {{protocolName: modbus, configData: {{register: HoldingRegister, offset: 0, limit: 1}}}}
  - name: setpoint
    collectCycle: 500
    desired: {{value: "42"}}
    visitors: {{protocolName: modbus, configData: {{register: HoldingRegister, offset: 1, limit: 1, scale: 1}}}}
  - name: relay
    collectCycle: 500
    desired: {{value: "true"}}
    visitors: {{protocolName: modbus, configData: {{register: CoilRegister, offset: 0, limit: 1}}}}
"#,
        serial = serial.display()
    )
}

/// KubeEdge's documentation sample (Modbus TCP, `isSwap` + `isRegisterSwap`), bound to this
/// edge and pointed at the local slave.
fn kubeedge_sample(tcp_port: u16) -> String {
    let compat = tests::kubeedge_fixtures();
    let model = std::fs::read_to_string(compat.join("website-devicemodel-sample.yaml")).unwrap();
    let device = std::fs::read_to_string(compat.join("website-device-sample.yaml")).unwrap();
    assert!(device.contains("ip: 172.17.0.3") && device.contains("port: 1502"));
    let device = device
        .replace("ip: 172.17.0.3", "ip: 127.0.0.1")
        .replace("port: 1502", &format!("port: {tcp_port}"))
        .replace("nodeName: worker-node1", &format!("nodeName: {NODE}"));
    format!("{model}\n---\n{device}")
}

/// Writes a simulated pin the way a wire would change: atomically.
fn flip_pin(dir: &Path, pin: u8, level: &str) {
    let tmp = dir.join(format!("test-pin-{pin}.tmp"));
    std::fs::write(&tmp, format!("{level}\n")).unwrap();
    std::fs::rename(&tmp, dir.join(format!("pin-{pin}"))).unwrap();
}

fn pin(dir: &Path, pin: u8) -> String {
    std::fs::read_to_string(dir.join(format!("pin-{pin}")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn gpio_and_modbus_devices_through_the_whole_system() {
    let modbus = have("socat", &["-V"]) && have("python3", &["-c", "import pymodbus, serial"]);
    if !modbus {
        println!(
            "SKIP gpio_and_modbus_devices_through_the_whole_system: needs socat and python3 with pymodbus==3.16.1 + pyserial"
        );
        return;
    }
    let t = Setup::start();
    let s = &t.s;
    let (a, b) = (
        t.dir.path().join("tty-edge"),
        t.dir.path().join("tty-slave"),
    );
    let _pty = Pty::start(&a, &b);
    let rtu = Slave::start(
        &["--port", b.to_str().unwrap()],
        &t.dir.path().join("rtu.json"),
    );
    let tcp_port = free_port();
    let tcp = Slave::start(
        &["--tcp", &tcp_port.to_string()],
        &t.dir.path().join("tcp.json"),
    );

    // Devices before their DeviceModels (the order `kubectl apply -f dir/` often gives):
    // the edge holds them — no driver, twin updates refused, `state: model-missing`.
    let all = format!("{}\n---\n{}", manifests(&a), kubeedge_sample(tcp_port));
    let (models, devices): (Vec<&str>, Vec<&str>) = all
        .split("\n---\n")
        .partition(|doc| doc.contains("kind: DeviceModel"));
    s.apply(&devices.join("\n---\n"));
    for name in ["board", "plc", "beta1-device"] {
        wait_device(&t, name, "held: state model-missing", 30 * SECS, |d| {
            d["status"]["state"] == "model-missing"
        });
    }
    let m = t.metrics();
    assert_eq!(metric(&m, "edgecore_devices_held"), 3.0, "{m:?}");
    assert_eq!(metric(&m, "edgecore_devices"), 3.0, "{m:?}");
    let sub = Sub::start(t.port, &[&device_topic("board", "twin/update/result")]);
    publish(
        t.port,
        &device_topic("board", "twin/update"),
        &twin_msg("held-1", &[("button", "true")]),
    );
    let r = sub.expect(&device_topic("board", "twin/update/result"), 10 * SECS);
    assert_eq!(
        (r["code"].as_u64(), r["reason"].as_str()),
        (Some(503), Some("model_missing")),
        "{r}"
    );
    let gpio = t.gpio_dir();
    assert_ne!(pin(&gpio, 17), "1", "no driver runs while held");
    let m = t.metrics();
    let started = |p: &str| {
        metric(
            &m,
            &format!("edgecore_driver_reads_total{{protocol=\"{p}\",result=\"ok\"}}"),
        )
    };
    assert_eq!(
        started("gpio") + started("modbus"),
        0.0,
        "no driver runs while held: {m:?}"
    );

    // The models arrive: the devices are released and converge.
    s.apply(&models.join("\n---\n"));

    // GPIO: the desired level reaches the pin; the device is labelled simulated.
    wait_for("led pin driven high", 30 * SECS, || pin(&gpio, 17) == "1");
    wait_device(
        &t,
        "board",
        "led reported true in Device status",
        10 * SECS,
        |d| twin_of(d, "led").as_deref() == Some("true"),
    );
    let board = device_json(s, "board");
    assert_eq!(
        board["status"]["state"], "simulated",
        "a simulated pin bank is labelled: {board}"
    );
    // kubectl sets a desired value -> the pin file changes -> reported follows.
    set_desired(s, "board", "led", "false");
    wait_for("led pin driven low", 10 * SECS, || pin(&gpio, 17) == "0");
    wait_device(&t, "board", "led reported false", 10 * SECS, |d| {
        twin_of(d, "led").as_deref() == Some("false")
    });
    // The wire changes (the test flips the input pin) -> reported follows.
    wait_device(&t, "board", "button reported false", 10 * SECS, |d| {
        twin_of(d, "button").as_deref() == Some("false")
    });
    flip_pin(&gpio, 4, "1");
    wait_device(
        &t,
        "board",
        "button reported true after the flip",
        10 * SECS,
        |d| twin_of(d, "button").as_deref() == Some("true"),
    );

    // Modbus RTU: desired values land in the slave's registers and are read back.
    rtu.until("setpoint 42 and relay on", 30 * SECS, |v| {
        v["holding"][1] == 42 && v["coils"][0] == true
    });
    wait_for("plc online with setpoint 42", 10 * SECS, || {
        let d = device_json(s, "plc");
        d["status"]["state"] == "online"
            && reported_value(s, "plc", "setpoint").as_deref() == Some("42")
    });
    // The slave counts on its own: reported values follow it.
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        "three distinct counter values in Device status",
        20 * SECS,
        || {
            if let Some(c) = reported_value(s, "plc", "counter") {
                let c: i64 = c.parse().unwrap();
                let slave_now = rtu.read()["counter"].as_i64().unwrap_or(i64::MAX);
                assert!(
                    c <= slave_now,
                    "reported {c} ahead of the slave's {slave_now}"
                );
                seen.insert(c);
            }
            seen.len() >= 3
        },
    );
    set_desired(s, "plc", "setpoint", "77");
    rtu.until("setpoint 77", 15 * SECS, |v| v["holding"][1] == 77);
    wait_device(&t, "plc", "setpoint 77 reported", 10 * SECS, |d| {
        twin_of(d, "setpoint").as_deref() == Some("77")
    });
    set_desired(s, "plc", "relay", "false");
    rtu.until("relay off", 15 * SECS, |v| v["coils"][0] == false);

    // Modbus TCP with KubeEdge's sample: temp desired "30", isSwap -> 0x1E00 in register 2.
    tcp.until("temp 30 byte-swapped in register 2", 30 * SECS, |v| {
        v["holding"][2] == 0x1E00
    });
    wait_device(
        &t,
        "beta1-device",
        "sample device reports temp 30",
        10 * SECS,
        |d| twin_of(d, "temp").as_deref() == Some("30"),
    );
    set_desired(s, "beta1-device", "temp", "55");
    tcp.until("temp 55 byte-swapped", 15 * SECS, |v| {
        v["holding"][2] == 0x3700
    });
    wait_device(&t, "beta1-device", "temp 55 reported", 10 * SECS, |d| {
        twin_of(d, "temp").as_deref() == Some("55")
    });
    assert_eq!(device_json(s, "beta1-device")["status"]["state"], "online");

    // The drivers' work shows on edgecore's /metrics.
    let m = t.metrics();
    let reads = |p: &str| {
        metric(
            &m,
            &format!("edgecore_driver_reads_total{{protocol=\"{p}\",result=\"ok\"}}"),
        )
    };
    let writes = |p: &str| {
        metric(
            &m,
            &format!("edgecore_driver_writes_total{{protocol=\"{p}\",result=\"ok\"}}"),
        )
    };
    assert!(reads("gpio") >= 10.0 && reads("modbus") >= 10.0, "{m:?}");
    assert!(writes("gpio") >= 2.0, "led written twice: {m:?}");
    assert!(
        writes("modbus") >= 5.0,
        "setpoint, relay, temp written: {m:?}"
    );
    assert_eq!(metric(&m, "edgecore_devices_held"), 0.0, "{m:?}");
    assert_eq!(metric(&m, "edgecore_devices"), 3.0, "{m:?}");
    assert!(
        metric(&m, "edgecore_device_status_sent_total") >= 6.0,
        "{m:?}"
    );
}
