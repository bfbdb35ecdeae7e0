//! Bad input end to end, each with its metric on edgecore's `/metrics`: garbage and
//! oversized MQTT payloads, an unknown device, wrong type / out-of-range values against the
//! DeviceModel, over-long keys and values, a stale version, a Device with invalid protocol
//! settings (a clear `status.state`/`message`, other devices unaffected), and one client
//! flooding the broker while another is still served. Nothing crashes and nothing already
//! accepted is lost.

#![allow(clippy::unwrap_used)]

mod devices_common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devices_common::*;
use serde_json::{Value, json};

const SECS: Duration = Duration::from_secs(1);

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
  - {{name: counter, type: INT, accessMode: ReadOnly}}
  - {{name: label, type: STRING, accessMode: ReadWrite}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: thermo-1, namespace: default}}
spec:
  deviceModelRef: {{name: thermo}}
  nodeName: {NODE}
  protocol: {{protocolName: virtual}}
  properties: [{{name: temperature}}, {{name: humidity}}, {{name: counter}}, {{name: label}}]
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: thermo-2, namespace: default}}
spec:
  deviceModelRef: {{name: thermo}}
  nodeName: {NODE}
  protocol: {{protocolName: virtual}}
  properties: [{{name: temperature}}]
---
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{name: plc-model, namespace: default}}
spec:
  protocol: modbus
  properties:
  - {{name: level, type: INT, accessMode: ReadOnly}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: broken, namespace: default}}
spec:
  deviceModelRef: {{name: plc-model}}
  nodeName: {NODE}
  protocol:
    protocolName: modbus
    configData: {{serialPort: /dev/ttyKEDGE-TEST, baudRate: fast}}
  properties:
  - name: level
    visitors: {{protocolName: modbus, configData: {{register: HoldingRegister, offset: 0}}}}
"#
    )
}

/// Publishes `payload` on thermo-1's `twin/update` and returns the first result message
/// with event id `id` (any id when empty: the payload has none to echo) and, for an empty
/// id, the given `reason`.
fn request(t: &Setup, sub: &Sub, id: &str, payload: &str, reason: &str) -> Value {
    let topic = device_topic("thermo-1", "twin/update");
    assert!(publish(t.port, &topic, payload), "publish {id}");
    let result = device_topic("thermo-1", "twin/update/result");
    sub.expect_where(&result, 10 * SECS, |v| {
        if id.is_empty() {
            v["reason"] == reason
        } else {
            v["event_id"] == id
        }
    })
}

fn rejected(t: &Setup, reason: &str) -> f64 {
    metric(
        &t.metrics(),
        &format!("edgecore_twin_rejected_total{{reason=\"{reason}\"}}"),
    )
}

/// Sends `payload`, expects an error result with `code` and `reason`, and the reason's
/// counter to move.
fn refused(t: &Setup, sub: &Sub, id: &str, payload: &str, code: u64, reason: &str) {
    let before = rejected(t, reason);
    let r = request(t, sub, id, payload, reason);
    assert_eq!(r["code"], code, "{reason}: {r}");
    assert_eq!(r["reason"], reason, "{r}");
    assert!(
        r["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a human-readable message: {r}"
    );
    wait_for(
        &format!("rejected_total{{reason={reason}}} moves"),
        5 * SECS,
        || rejected(t, reason) >= before + 1.0,
    );
}

fn report(id: &str, props: Value) -> String {
    json!({"event_id": id, "timestamp": now_ms(), "twin": props}).to_string()
}

fn actual(v: &str) -> Value {
    json!({"actual": {"value": v}})
}

#[test]
fn bad_input_gets_error_results_and_metrics_and_loses_nothing() {
    let t = Setup::start();
    let s = &t.s;
    let result = device_topic("thermo-1", "twin/update/result");
    let ghost_result = device_topic("ghost", "twin/update/result");
    let delta = device_topic("thermo-1", "twin/update/delta");
    let sub = Sub::start(t.port, &[&result, &ghost_result, &delta]);
    s.apply(&manifests());

    // Accepted data first: it must survive everything below.
    wait_for("thermo-1 bound to the edge", 30 * SECS, || {
        let r = report(
            "ok-1",
            json!({"humidity": actual("50"), "temperature": actual("20")}),
        );
        publish(t.port, &device_topic("thermo-1", "twin/update"), &r)
            && reported_value(s, "thermo-1", "humidity").as_deref() == Some("50")
    });

    // Garbage and oversized payloads.
    refused(&t, &sub, "", "not json {", 400, "malformed_json");
    let big = format!(
        r#"{{"event_id":"big","twin":{{"label":{{"actual":{{"value":"{}"}}}}}}}}"#,
        "x".repeat(300 * 1024)
    );
    refused(&t, &sub, "", &big, 413, "payload_too_large");
    // Beyond the broker's own limit (512 KiB) the publisher is disconnected; nothing else.
    let huge = "y".repeat(600 * 1024);
    let _ = publish(t.port, &device_topic("thermo-1", "twin/update"), &huge);

    // Over-long key and value.
    let long_key = "k".repeat(129);
    refused(
        &t,
        &sub,
        "key",
        &report(
            "key",
            Value::Object([(long_key, actual("1"))].into_iter().collect()),
        ),
        413,
        "key_too_long",
    );
    refused(
        &t,
        &sub,
        "value",
        &report("value", json!({"label": actual(&"v".repeat(513))})),
        413,
        "value_too_long",
    );

    // Wrong type and out of range, against the DeviceModel.
    refused(
        &t,
        &sub,
        "type",
        &report("type", json!({"temperature": actual("warm")})),
        422,
        "type_mismatch",
    );
    refused(
        &t,
        &sub,
        "range",
        &report("range", json!({"temperature": actual("500")})),
        422,
        "above_maximum",
    );

    // A stale reported version.
    let ok = request(
        &t,
        &sub,
        "ok-2",
        &report("ok-2", json!({"temperature": actual("21")})),
        "",
    );
    assert_eq!(ok["code"], 200, "{ok}");
    let current = ok["reported_version"].as_u64().unwrap();
    let mut stale: Value =
        serde_json::from_str(&report("stale", json!({"temperature": actual("5")}))).unwrap();
    stale["version"] = json!(current - 1);
    refused(
        &t,
        &sub,
        "stale",
        &stale.to_string(),
        409,
        "version_conflict",
    );

    // An unknown device.
    let before = rejected(&t, "unknown_device");
    assert!(publish(
        t.port,
        &device_topic("ghost", "twin/update"),
        &report("ghost", json!({"temperature": actual("1")}))
    ));
    let r = sub.expect(&ghost_result, 10 * SECS);
    assert_eq!(
        (r["code"].clone(), r["reason"].clone()),
        (json!(404), json!("unknown_device"))
    );
    wait_for("unknown_device counted", 5 * SECS, || {
        rejected(&t, "unknown_device") > before
    });

    // A Device with unusable protocol settings: a clear status, a metric, no driver.
    wait_for("broken device shows config-error", 20 * SECS, || {
        let d = device_json(s, "broken");
        d["status"]["state"] == "config-error"
            && d["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("baudRate"))
    });
    assert_eq!(metric(&t.metrics(), "edgecore_driver_config_errors"), 1.0);
    // Fixed settings clear it (the port does not exist, so the device goes offline).
    s.kubectl_ok(&[
        "patch", "device", "broken", "--type", "merge", "-p",
        r#"{"spec":{"protocol":{"configData":{"serialPort":"/dev/ttyKEDGE-TEST","baudRate":9600}}}}"#,
    ]);
    wait_for("broken device's message cleared", 20 * SECS, || {
        let d = device_json(s, "broken");
        d["status"]["state"] == "offline" && d["status"].get("message").is_none()
    });
    assert_eq!(metric(&t.metrics(), "edgecore_driver_config_errors"), 0.0);

    // Nothing accepted was lost, and the bus still serves.
    let twins = reported(s, "thermo-1");
    assert_eq!(twins["humidity"].0, "50", "{twins:?}");
    wait_for("temperature 21 kept", 5 * SECS, || {
        reported_value(s, "thermo-1", "temperature").as_deref() == Some("21")
    });
    set_desired(s, "thermo-1", "temperature", "30");
    let d = sub.expect(&delta, 10 * SECS);
    assert!(d.to_string().contains("30"), "delta: {d}");

    // One client floods; another is still served while the flood goes on.
    let n = 5_000;
    let mut flood = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &t.port.to_string(),
            "-q",
            "1",
            "-l",
        ])
        .args(["-t", &device_topic("thermo-1", "twin/update")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = flood.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 1..=n {
            let line = report(&format!("f{i}"), json!({"counter": actual(&i.to_string())}));
            if writeln!(stdin, "{line}").is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let other = device_topic("thermo-2", "twin/update");
    assert!(publish(
        t.port,
        &other,
        &report("o1", json!({"temperature": actual("42")}))
    ));
    wait_for("thermo-2 served during the flood", 15 * SECS, || {
        reported_value(s, "thermo-2", "temperature").as_deref() == Some("42")
    });
    eprintln!(
        "thermo-2 reached Device status {:?} after its publish; flood still running: {}",
        start.elapsed(),
        flood.try_wait().unwrap().is_none()
    );
    writer.join().unwrap();
    let status = tests::wait_exit(&mut flood, Duration::from_secs(120)).unwrap();
    assert!(
        status.success(),
        "the flooding client was served to the end"
    );
    wait_for("the flood's last value wins", 20 * SECS, || {
        reported_value(s, "thermo-1", "counter").as_deref() == Some(&n.to_string())
    });
    assert_eq!(
        reported_value(s, "thermo-1", "humidity").as_deref(),
        Some("50")
    );

    // The bus's counters moved.
    let m = t.metrics();
    let accepted = metric(&m, "edgecore_twin_accepted_total{kind=\"twin_update\"}");
    assert!(accepted >= f64::from(n), "accepted {accepted}: {m:?}");
    assert!(
        metric(&m, "edgecore_device_reports_coalesced_total") > 100.0,
        "{m:?}"
    );
    assert!(
        metric(&m, "edgecore_twin_deltas_sent_total") >= 1.0,
        "{m:?}"
    );
    assert!(
        metric(&m, "edgecore_broker_publishes_total") >= f64::from(n),
        "{m:?}"
    );
    assert!(metric(&m, "edgecore_broker_connections") >= 2.0, "{m:?}");
    assert_eq!(metric(&m, "edgecore_bus_connected"), 1.0, "{m:?}");
    assert!(
        t.edge_log().lines().all(|l| !l.contains("panicked")),
        "edgecore panicked"
    );
}
