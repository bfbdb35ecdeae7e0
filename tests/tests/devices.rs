//! Device twins end to end with the real binaries: cloudcore standalone + edgecore (its
//! embedded MQTT broker) + kubectl + mosquitto clients as sensors and mappers.
//!
//! Device CRDs via kubectl → membership on MQTT; `twin/update` from `mosquitto_pub` →
//! `Device.status.twins` (other properties untouched); `kubectl patch` of a desired value
//! → `twin/update/delta`; KubeEdge's samples apply unchanged; garbage gets an error result
//! and the bus keeps serving; reports made while cloudcore is down arrive after it restarts.

#![allow(clippy::unwrap_used)]

mod devices_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use devices_common::{
    Edge, NODE, Sub, device_json, device_topic, free_port, join, publish, twin_msg, wait_for,
};
use serde_json::Value;
use tests::Standalone;

const DEVICE: &str = "thermo-1";

fn twin_update(port: u16, id: &str, props: &[(&str, &str)]) {
    let msg = twin_msg(id, props);
    assert!(
        publish(port, &device_topic(DEVICE, "twin/update"), &msg),
        "publish {msg}"
    );
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
    devices_common::reported(s, DEVICE)
}

fn reported_value(s: &Standalone, prop: &str) -> Option<String> {
    devices_common::reported_value(s, DEVICE, prop)
}

struct Setup {
    _dir: tempfile::TempDir,
    cloud_dir: PathBuf,
    cloud_flags: Vec<String>,
    s: Standalone,
    root: PathBuf,
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
    join(&s, &root, port, 0);
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

/// `kubectl patch --type merge` of the Device's desired values (`None`: no desired).
fn patch_desired(s: &Standalone, device: &str, props: &[(&str, Option<&str>)]) {
    let props: Vec<Value> = props
        .iter()
        .map(|(name, v)| match v {
            Some(v) => serde_json::json!({"name": name, "desired": {"value": v}}),
            None => serde_json::json!({"name": name}),
        })
        .collect();
    let patch = serde_json::json!({"spec": {"properties": props}}).to_string();
    s.kubectl_ok(&["patch", "device", device, "--type", "merge", "-p", &patch]);
}

/// `(propertyName, value, reason)` of each `status.desiredRefusals[]` entry.
fn refusals(s: &Standalone, device: &str) -> Vec<(String, String, String)> {
    let d = device_json(s, device);
    d["status"]["desiredRefusals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let f = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                    (f("propertyName"), f("value"), f("reason"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn observed_desired(s: &Standalone, device: &str, prop: &str) -> Option<String> {
    let d = device_json(s, device);
    d["status"]["twins"]
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == prop)?["observedDesired"]["value"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn invalid_desired_values_from_kubectl_are_refused_visibly_and_never_reach_mqtt() {
    let t = setup();
    let (s, port) = (&t.s, t.port);
    let device = "valve-1";
    let membership = format!("kedge/events/node/{NODE}/membership/updated");
    let delta = format!("kedge/events/device/default/{device}/twin/update/delta");
    let sub = Sub::start(port, &[&membership, &delta]);
    s.apply(&format!(
        r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{name: valve, namespace: default}}
spec:
  protocol: virtual
  properties:
  - {{name: temperature, type: INT, accessMode: ReadWrite, minimum: "-40", maximum: "100"}}
  - {{name: humidity, type: INT, accessMode: ReadOnly}}
  - {{name: open, type: BOOLEAN, accessMode: ReadWrite}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: {device}, namespace: default}}
spec:
  deviceModelRef: {{name: valve}}
  nodeName: {NODE}
  protocol: {{protocolName: virtual}}
  properties:
  - {{name: temperature}}
  - {{name: humidity}}
  - {{name: open}}
"#
    ));
    sub.expect_where(&membership, Duration::from_secs(10), |m| {
        m.to_string().contains(device)
    });

    // A valid value flows, and becomes the one in force.
    patch_desired(
        s,
        device,
        &[
            ("temperature", Some("30")),
            ("humidity", None),
            ("open", None),
        ],
    );
    let d = sub.expect(&delta, Duration::from_secs(5));
    assert_eq!(d["delta"]["temperature"], "30", "delta: {d}");
    wait_for("observedDesired 30", Duration::from_secs(5), || {
        observed_desired(s, device, "temperature").as_deref() == Some("30")
    });

    // Not an INT, and a desired value for a ReadOnly property: refused, visible in the
    // Device status, not sent to mappers; 30 stays in force.
    patch_desired(
        s,
        device,
        &[
            ("temperature", Some("abc")),
            ("humidity", Some("5")),
            ("open", None),
        ],
    );
    let want = vec![
        (
            "humidity".to_owned(),
            "5".to_owned(),
            "read_only_property".to_owned(),
        ),
        (
            "temperature".to_owned(),
            "abc".to_owned(),
            "type_mismatch".to_owned(),
        ),
    ];
    wait_for(
        "the refusals in the Device status",
        Duration::from_secs(5),
        || {
            let mut got = refusals(s, device);
            got.sort();
            got == want
        },
    );
    assert_eq!(sub.try_expect(&delta, Duration::from_secs(2)), None);
    assert_eq!(
        observed_desired(s, device, "temperature").as_deref(),
        Some("30")
    );
    assert_eq!(observed_desired(s, device, "humidity"), None);
    let yaml = s.kubectl_ok(&["get", "device", device, "-o", "yaml"]);
    assert!(yaml.contains("desiredRefusals:"), "{yaml}");
    assert!(yaml.contains("type_mismatch"), "{yaml}");
    let described = s.kubectl_ok(&["describe", "device", device]);
    assert!(described.contains("Desired Refusals"), "{described}");
    assert!(described.contains("read_only_property"), "{described}");

    // Above the maximum.
    patch_desired(
        s,
        device,
        &[
            ("temperature", Some("150")),
            ("humidity", None),
            ("open", None),
        ],
    );
    wait_for(
        "above_maximum in the Device status",
        Duration::from_secs(5),
        || {
            refusals(s, device)
                == [(
                    "temperature".to_owned(),
                    "150".to_owned(),
                    "above_maximum".to_owned(),
                )]
        },
    );
    assert_eq!(sub.try_expect(&delta, Duration::from_secs(2)), None);
    assert_eq!(
        observed_desired(s, device, "temperature").as_deref(),
        Some("30")
    );

    // Fixed: the delta arrives and the refusal is gone. A BOOLEAN written `ON` is `true`.
    patch_desired(
        s,
        device,
        &[
            ("temperature", Some("40")),
            ("humidity", None),
            ("open", Some("ON")),
        ],
    );
    let d = sub.expect(&delta, Duration::from_secs(5));
    assert_eq!(d["delta"]["temperature"], "40", "delta: {d}");
    assert_eq!(d["delta"]["open"], "true", "delta: {d}");
    wait_for("the refusal cleared", Duration::from_secs(5), || {
        refusals(s, device).is_empty()
            && observed_desired(s, device, "temperature").as_deref() == Some("40")
    });
    let d = device_json(s, device);
    assert!(d["status"].get("desiredRefusals").is_none(), "{d}");
    assert_eq!(observed_desired(s, device, "open").as_deref(), Some("true"));
}

#[test]
fn kubeedge_samples_apply_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let hub = format!("127.0.0.1:{}", free_port());
    let s = Standalone::start(&dir.path().join("cloud"), &["--hub-listen", &hub]).unwrap();
    let compat = tests::kubeedge_fixtures();
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
    let _sub = apply_and_await_membership(&t);
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

/// Apply the manifests and wait until the edge announces the Device (its membership
/// event); the returned subscription stays connected while the caller keeps it.
fn apply_and_await_membership(t: &Setup) -> Sub {
    let membership = format!("kedge/events/node/{NODE}/membership/updated");
    let sub = Sub::start(t.port, &[&membership]);
    t.s.apply(&manifests());
    sub.expect(&membership, Duration::from_secs(10));
    sub
}

/// Starts the edge again on `root` and waits until its broker accepts on `port`.
fn restart_edge(root: &Path, port: u16) -> Edge {
    let edge = Edge::run(root);
    wait_for(
        "the edge serves the broker again",
        Duration::from_secs(20),
        || publish(port, "kedge/hello", "x"),
    );
    edge
}

/// Asks the edge for the device's twin (`twin/get`) until `ready` holds for its answer on
/// `twin/get/result`, and returns that answer.
fn twin_at_edge(port: u16, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let get = format!("kedge/events/device/default/{DEVICE}/twin/get");
    let got = format!("{get}/result");
    let results = Sub::start(port, &[&got]);
    let mut twin = Value::Null;
    wait_for(what, Duration::from_secs(20), || {
        publish(port, &get, "{}");
        twin = results
            .try_expect(&got, Duration::from_secs(1))
            .unwrap_or(Value::Null);
        ready(&twin)
    });
    twin
}

/// A Device deleted and re-created under the same name while its edge is down is a new
/// device: its own desired values reach the mapper, and the old one's reported values do
/// not reappear in its status (both incarnations are at generation 1).
#[test]
fn a_device_recreated_while_the_edge_is_down_starts_afresh() {
    let mut t = setup();
    let port = t.port;
    let sub = apply_and_await_membership(&t);
    twin_update(port, "1", &[("humidity", "41")]);
    wait_for("the first report", Duration::from_secs(5), || {
        reported_value(&t.s, "humidity").as_deref() == Some("41")
    });
    // Let the throttled status leave before the edge goes down.
    std::thread::sleep(Duration::from_millis(600));
    drop(sub);
    drop(t.edge);

    t.s.kubectl_ok(&["delete", "device", DEVICE]);
    let again = manifests().replace(
        "  - {name: temperature}\n",
        "  - {name: temperature, desired: {value: \"21\"}}\n",
    );
    t.s.apply(&again);

    t.edge = restart_edge(&t.root, port);
    // Asking for the twin shows what the edge holds for the new Device.
    let twin = twin_at_edge(
        port,
        "the re-created Device's desired value at the edge",
        |twin| twin["twin"]["temperature"]["expected"]["value"] == "21",
    );
    assert!(
        twin["twin"]["humidity"]["actual"].is_null(),
        "the old Device's report is gone: {twin}"
    );
    twin_update(port, "2", &[("temperature", "20")]);
    wait_for("a report of the new Device", Duration::from_secs(5), || {
        reported_value(&t.s, "temperature").as_deref() == Some("20")
    });
    let twins = reported(&t.s);
    assert!(
        !twins.contains_key("humidity"),
        "the old incarnation's value leaked into the new Device: {twins:?}"
    );
}

/// An edge whose store is lost (a new disk, a wiped data directory) gets its Devices again
/// from the cloud and rebuilds each shadow from the Device's status: the reported values are
/// the edge's own again (`twin/get`), the cloud's status is not overwritten with an empty
/// twin, and later reports merge with what was reported before.
#[test]
fn an_edge_that_lost_its_store_rebuilds_the_shadow_from_the_device_status() {
    let mut t = setup();
    let port = t.port;
    let sub = apply_and_await_membership(&t);
    twin_update(port, "1", &[("temperature", "33"), ("humidity", "44")]);
    wait_for(
        "the reports in Device status",
        Duration::from_secs(5),
        || {
            reported_value(&t.s, "temperature").as_deref() == Some("33")
                && reported_value(&t.s, "humidity").as_deref() == Some("44")
        },
    );
    std::thread::sleep(Duration::from_millis(600));
    drop(sub);
    drop(t.edge);
    let data = t.root.join("var/lib/kedge");
    assert!(data.is_dir(), "{}", data.display());
    std::fs::remove_dir_all(&data).unwrap();

    t.edge = restart_edge(&t.root, port);
    let twin = twin_at_edge(port, "the shadow rebuilt from the Device status", |twin| {
        twin["twin"]["temperature"]["actual"]["value"] == "33"
    });
    assert_eq!(twin["twin"]["humidity"]["actual"]["value"], "44", "{twin}");
    // The rebuilt edge did not overwrite the cloud's status with an empty twin.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(reported_value(&t.s, "humidity").as_deref(), Some("44"));

    twin_update(port, "2", &[("temperature", "35")]);
    wait_for("a later report", Duration::from_secs(5), || {
        reported_value(&t.s, "temperature").as_deref() == Some("35")
    });
    assert_eq!(
        reported_value(&t.s, "humidity").as_deref(),
        Some("44"),
        "a later report kept the other property: {:?}",
        reported(&t.s)
    );
}
