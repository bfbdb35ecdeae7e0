//! Device twins when the DeviceModel or the Device's property list changes under a running
//! edge (cloudcore standalone + edgecore + kubectl + mosquitto): a model change re-checks
//! the desired values in force, a refused value is a `Warning InvalidDesired` Event once,
//! an invalid model holds the device, and a removed property leaves `status.twins`.

#![allow(clippy::unwrap_used)]

mod devices_common;

use std::time::Duration;

use devices_common::{NODE, Setup, Sub, device_topic, publish, twin_msg, wait_device};
use serde_json::Value;
use tests::Standalone;

const DEVICE: &str = "boiler-1";

fn manifests(maximum: &str) -> String {
    format!(
        r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{name: boiler, namespace: default}}
spec:
  protocol: virtual
  properties:
  - {{name: temperature, type: INT, accessMode: ReadWrite, minimum: "0", maximum: "{maximum}"}}
  - {{name: pressure, type: INT, accessMode: ReadOnly}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: {DEVICE}, namespace: default}}
spec:
  deviceModelRef: {{name: boiler}}
  nodeName: {NODE}
  protocol: {{protocolName: virtual}}
  properties:
  - {{name: temperature, desired: {{value: "80"}}}}
  - {{name: pressure}}
"#
    )
}

fn patch_model(s: &Standalone, patch: &str) {
    s.kubectl_ok(&[
        "patch",
        "devicemodel",
        "boiler",
        "--type",
        "json",
        "-p",
        patch,
    ]);
}

fn refusals(d: &Value) -> Vec<(String, String, String)> {
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

fn observed_desired(d: &Value, prop: &str) -> Option<String> {
    d["status"]["twins"]
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == prop)?["observedDesired"]["value"]
        .as_str()
        .map(str::to_owned)
}

fn refusal(prop: &str, value: &str, reason: &str) -> Vec<(String, String, String)> {
    vec![(prop.to_owned(), value.to_owned(), reason.to_owned())]
}

/// The `InvalidDesired` Events about the device: `(type, message)`.
fn invalid_desired_events(s: &Standalone) -> Vec<(String, String)> {
    let out = s.kubectl_ok(&["get", "events", "-n", "default", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["reason"] == "InvalidDesired"
                && e["involvedObject"]["kind"] == "Device"
                && e["involvedObject"]["name"] == DEVICE
        })
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (f("type"), f("message"))
        })
        .collect()
}

#[test]
fn a_device_model_change_rechecks_devices_and_refusals_raise_one_warning_event() {
    let t = Setup::start();
    let s = &t.s;
    let delta = device_topic(DEVICE, "twin/update/delta");
    let sub = Sub::start(t.port, &[&delta]);
    s.apply(&manifests("100"));
    let d = sub.expect(&delta, Duration::from_secs(15));
    assert_eq!(d["delta"]["temperature"], "80", "delta: {d}");
    wait_device(&t, DEVICE, "80 in force", Duration::from_secs(10), |d| {
        observed_desired(d, "temperature").as_deref() == Some("80")
    });

    // Only the model changes: the maximum drops below the desired 80.
    patch_model(
        s,
        r#"[{"op":"replace","path":"/spec/properties/0/maximum","value":"50"}]"#,
    );
    wait_device(
        &t,
        DEVICE,
        "80 refused after the model change",
        Duration::from_secs(10),
        |d| {
            refusals(d) == refusal("temperature", "80", "above_maximum")
                && observed_desired(d, "temperature").is_none()
        },
    );
    // One Warning Event, naming property, value and reason.
    devices_common::wait_for("the InvalidDesired Event", Duration::from_secs(10), || {
        !invalid_desired_events(s).is_empty()
    });
    let events = invalid_desired_events(s);
    assert_eq!(events.len(), 1, "{events:?}");
    let (kind, message) = &events[0];
    assert_eq!(kind, "Warning");
    assert!(
        message.contains("temperature")
            && message.contains("80")
            && message.contains("above_maximum"),
        "{message}"
    );
    let described = s.kubectl_ok(&["describe", "device", DEVICE]);
    assert!(described.contains("InvalidDesired"), "{described}");

    // More status writes (reports) do not repeat the Event.
    for (i, p) in ["11", "12", "13"].iter().enumerate() {
        let msg = twin_msg(&format!("r{i}"), &[("pressure", p)]);
        assert!(publish(t.port, &device_topic(DEVICE, "twin/update"), &msg));
    }
    wait_device(
        &t,
        DEVICE,
        "pressure 13 reported",
        Duration::from_secs(10),
        |d| devices_common::twin_of(d, "pressure").as_deref() == Some("13"),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(invalid_desired_events(s).len(), 1);

    // The model is relaxed again: the refusal clears and 80 flows to the mappers.
    patch_model(
        s,
        r#"[{"op":"replace","path":"/spec/properties/0/maximum","value":"100"}]"#,
    );
    let d = sub.expect(&delta, Duration::from_secs(10));
    assert_eq!(d["delta"]["temperature"], "80", "delta: {d}");
    wait_device(
        &t,
        DEVICE,
        "the refusal cleared",
        Duration::from_secs(10),
        |d| refusals(d).is_empty() && observed_desired(d, "temperature").as_deref() == Some("80"),
    );

    // The property becomes ReadOnly: refused with that reason.
    patch_model(
        s,
        r#"[{"op":"replace","path":"/spec/properties/0/accessMode","value":"ReadOnly"}]"#,
    );
    wait_device(
        &t,
        DEVICE,
        "read_only_property",
        Duration::from_secs(10),
        |d| refusals(d) == refusal("temperature", "80", "read_only_property"),
    );
    devices_common::wait_for("a second Event", Duration::from_secs(10), || {
        invalid_desired_events(s).len() == 2
    });
}

#[test]
fn an_invalid_model_holds_the_device_and_a_removed_property_leaves_status() {
    let t = Setup::start();
    let s = &t.s;
    s.apply(&manifests("100"));
    let msg = twin_msg("r1", &[("pressure", "7")]);
    devices_common::wait_for("pressure reported", Duration::from_secs(15), || {
        publish(t.port, &device_topic(DEVICE, "twin/update"), &msg);
        devices_common::reported_value(s, DEVICE, "pressure").as_deref() == Some("7")
    });

    // The property leaves the Device: its entry leaves status.twins.
    s.kubectl_ok(&[
        "patch",
        "device",
        DEVICE,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"properties":[{"name":"temperature","desired":{"value":"80"}}]}}"#,
    ]);
    wait_device(
        &t,
        DEVICE,
        "pressure gone from status.twins",
        Duration::from_secs(10),
        |d| {
            let names: Vec<&str> = d["status"]["twins"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["propertyName"].as_str())
                .collect();
            names == ["temperature"]
        },
    );

    // minimum > maximum: the model is invalid, the device is held and says why.
    patch_model(
        s,
        r#"[{"op":"replace","path":"/spec/properties/0/minimum","value":"500"}]"#,
    );
    wait_device(
        &t,
        DEVICE,
        "state model-invalid",
        Duration::from_secs(10),
        |d| {
            d["status"]["state"] == "model-invalid"
                && d["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("minimum is greater than maximum")
        },
    );
    // Fixed: released.
    patch_model(
        s,
        r#"[{"op":"replace","path":"/spec/properties/0/minimum","value":"0"}]"#,
    );
    wait_device(&t, DEVICE, "released", Duration::from_secs(10), |d| {
        d["status"]["state"] != "model-invalid" && d["status"]["message"].is_null()
    });
}

#[test]
fn an_int_spelt_as_an_integral_float_is_accepted_as_the_integer() {
    let t = Setup::start();
    let s = &t.s;
    let result = device_topic(DEVICE, "twin/update/result");
    let delta = device_topic(DEVICE, "twin/update/delta");
    let sub = Sub::start(t.port, &[&result, &delta]);
    s.apply(&manifests("100"));
    sub.expect(&delta, Duration::from_secs(15));

    // A mapper reports an INT as "23.0": accepted, stored as 23.
    // (the delta above means the device is bound at the edge)
    assert!(publish(
        t.port,
        &device_topic(DEVICE, "twin/update"),
        &twin_msg("f1", &[("pressure", "23.0")])
    ));
    let r = sub.expect_where(&result, Duration::from_secs(10), |r| r["event_id"] == "f1");
    assert_eq!(r["code"], 200, "{r}");
    wait_device(&t, DEVICE, "pressure 23", Duration::from_secs(10), |d| {
        devices_common::twin_of(d, "pressure").as_deref() == Some("23")
    });
    // "23.5" is no INT.
    assert!(publish(
        t.port,
        &device_topic(DEVICE, "twin/update"),
        &twin_msg("f2", &[("pressure", "23.5")])
    ));
    let r = sub.expect_where(&result, Duration::from_secs(10), |r| r["event_id"] == "f2");
    assert_eq!(
        (&r["code"], &r["reason"]),
        (&serde_json::json!(422), &serde_json::json!("type_mismatch")),
        "{r}"
    );

    // A desired "60.0" from kubectl is 60 for the mappers, with no refusal.
    devices_common::set_desired(s, DEVICE, "temperature", "60.0");
    let d = sub.expect_where(&delta, Duration::from_secs(10), |d| {
        d["delta"]["temperature"] != "80"
    });
    assert_eq!(d["delta"]["temperature"], "60", "{d}");
    wait_device(&t, DEVICE, "60 in force", Duration::from_secs(10), |d| {
        refusals(d).is_empty() && observed_desired(d, "temperature").as_deref() == Some("60")
    });
}
