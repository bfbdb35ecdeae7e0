//! A Device moved to another node, end to end with two real edges (cloudcore standalone +
//! two edgecores with their embedded brokers and simulated GPIO banks + kubectl +
//! mosquitto): the new edge takes the device and its status over (its own state and
//! readings, `status.nodeName`), drives it, and the old edge lets go (no driver, no shadow,
//! mapper requests refused). Also: a gpio pin written as a string, as KubeEdge YAML often
//! has it, is accepted; a non-numeric one is a `config-error` that says why.

#![allow(clippy::unwrap_used)]

mod devices_common;

use std::path::Path;
use std::time::Duration;

use devices_common::{
    Edge, NODE, Setup, Sub, device_json, device_topic, free_port, join_as, metric, metrics,
    publish, set_desired, twin_msg, twin_of, wait_device, wait_for,
};

const SECS: Duration = Duration::from_secs(1);
const NODE2: &str = "edge-dev-2";

fn manifests() -> String {
    format!(
        r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{name: lamp-model, namespace: default}}
spec:
  protocol: gpio
  properties:
  - {{name: led, type: BOOLEAN, accessMode: ReadWrite}}
  - {{name: note, type: STRING, accessMode: ReadWrite}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: lamp, namespace: default}}
spec:
  deviceModelRef: {{name: lamp-model}}
  nodeName: {NODE}
  protocol: {{protocolName: gpio}}
  properties:
  - name: led
    collectCycle: 100
    desired: {{value: "true"}}
    visitors: {{protocolName: gpio, configData: {{pin: "17", direction: out}}}}
  - name: note
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: broken-lamp, namespace: default}}
spec:
  deviceModelRef: {{name: lamp-model}}
  nodeName: {NODE}
  protocol: {{protocolName: gpio}}
  properties:
  - name: led
    visitors: {{protocolName: gpio, configData: {{pin: "GPIO18", direction: out}}}}
"#
    )
}

fn pin(dir: &Path, pin: u8) -> String {
    std::fs::read_to_string(dir.join(format!("pin-{pin}")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn gpio_reads(metrics_port: u16) -> f64 {
    metric(
        &metrics(metrics_port),
        "edgecore_driver_reads_total{protocol=\"gpio\",result=\"ok\"}",
    )
}

#[test]
fn a_device_moved_to_another_node_is_taken_over_by_the_new_edge() {
    let t = Setup::start();
    let s = &t.s;
    let root2 = t.dir.path().join("edge2");
    let (port2, metrics2) = (free_port(), free_port());
    join_as(s, NODE2, &root2, port2, metrics2);
    let _edge2 = Edge::run(&root2);
    wait_for("the second broker accepts", 20 * SECS, || {
        publish(port2, "kedge/hello", "x")
    });
    let (gpio1, gpio2) = (t.gpio_dir(), root2.join("var/lib/kedge/gpio"));

    s.apply(&manifests());
    // The pin written "17" drives pin 17; "GPIO18" is a config error that says why.
    wait_for("pin 17 driven high on the first edge", 30 * SECS, || {
        pin(&gpio1, 17) == "1"
    });
    wait_device(
        &t,
        "lamp",
        "led reported on the first edge",
        10 * SECS,
        |d| twin_of(d, "led").as_deref() == Some("true") && d["status"]["nodeName"] == NODE,
    );
    wait_device(&t, "broken-lamp", "config-error", 10 * SECS, |d| {
        d["status"]["state"] == "config-error"
            && d["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("\"GPIO18\" is not a pin number")
    });
    // A mapper-side reading on the first edge, to see it does not follow the device.
    let msg = twin_msg("n1", &[("note", "from-edge-1")]);
    assert!(publish(t.port, &device_topic("lamp", "twin/update"), &msg));
    wait_device(&t, "lamp", "note reported", 10 * SECS, |d| {
        twin_of(d, "note").as_deref() == Some("from-edge-1")
    });

    // Moved.
    let results1 = Sub::start(t.port, &[&device_topic("lamp", "twin/update/result")]);
    s.kubectl_ok(&[
        "patch",
        "device",
        "lamp",
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"nodeName":"{NODE2}"}}}}"#),
    ]);
    wait_for("pin 17 driven high on the second edge", 30 * SECS, || {
        pin(&gpio2, 17) == "1"
    });
    wait_device(&t, "lamp", "the second edge's status", 15 * SECS, |d| {
        d["status"]["nodeName"] == NODE2
            && twin_of(d, "note").is_none()
            && twin_of(d, "led").as_deref() == Some("true")
    });
    // The first edge stopped its driver and forgot the device.
    let before = gpio_reads(t.metrics_port);
    std::thread::sleep(2 * SECS);
    assert_eq!(
        gpio_reads(t.metrics_port),
        before,
        "the first edge still reads the pin"
    );
    assert!(gpio_reads(metrics2) > 0.0);
    assert!(publish(
        t.port,
        &device_topic("lamp", "twin/update"),
        &twin_msg("n2", &[("note", "late")])
    ));
    let r = results1.expect(&device_topic("lamp", "twin/update/result"), 10 * SECS);
    assert_eq!(r["reason"], "unknown_device", "{r}");

    // Desired values now reach the second edge's pin only.
    set_desired(s, "lamp", "led", "false");
    wait_for("pin 17 driven low on the second edge", 15 * SECS, || {
        pin(&gpio2, 17) == "0"
    });
    assert_eq!(
        pin(&gpio1, 17),
        "1",
        "the first edge drove a device it lost"
    );
    let d = device_json(s, "lamp");
    assert_eq!(d["status"]["nodeName"], NODE2, "{d}");
}
