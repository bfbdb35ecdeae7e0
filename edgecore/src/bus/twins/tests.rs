use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::bus::{DeviceSet, MemoryShadowStore};
use devicetwin::model::DeviceState;

const NODE: &str = "edge-1";
const UPDATE: &str = "kedge/events/device/ns/thermo/twin/update";

fn device(generation: i64, desired: &str) -> Value {
    json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "thermo", "namespace": "ns", "generation": generation},
        "spec": {"deviceModelRef": {"name": "m"}, "nodeName": NODE,
            "properties": [{"name": "temp", "desired": {"value": desired}}, {"name": "humidity"}]}})
}

fn model() -> Value {
    json!({"metadata": {"name": "m", "namespace": "ns"}, "spec": {"properties": [
        {"name": "temp", "type": "INT", "accessMode": "ReadWrite", "minimum": "1", "maximum": "100"},
        {"name": "humidity", "type": "INT", "accessMode": "ReadOnly"}]}})
}

fn set(devices: Vec<(Value, Option<Value>)>) -> DeviceSet {
    let mut s = DeviceSet::default();
    for (d, m) in devices {
        let id = format!(
            "{}/{}",
            d["metadata"]["namespace"].as_str().unwrap_or("default"),
            d["metadata"]["name"].as_str().unwrap_or("")
        );
        s.devices.insert(id, (Arc::new(d), m.map(Arc::new)));
    }
    s
}

fn twins(store: &MemoryShadowStore) -> Twins {
    Twins::new(
        "kedge",
        NODE,
        Arc::new(store.clone()),
        BusMetrics::default(),
    )
}

fn publishes(fx: &[Effect]) -> BTreeMap<String, Value> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Publish { topic, payload } => Some((
                topic.clone(),
                serde_json::from_slice(payload).unwrap_or(Value::Null),
            )),
            _ => None,
        })
        .collect()
}

/// The status announced in `fx`, built as it would leave for the cloud.
fn status(t: &mut Twins, fx: &[Effect]) -> Option<Value> {
    let key = fx.iter().rev().find_map(|e| match e {
        Effect::Status { device } => Some(device.clone()),
        _ => None,
    })?;
    t.status(&key)
}

fn twin<'a>(status: &'a Value, prop: &str) -> &'a Value {
    status["twins"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["propertyName"] == prop))
        .unwrap_or(&Value::Null)
}

fn ready() -> (MemoryShadowStore, Twins, Vec<Effect>) {
    let store = MemoryShadowStore::new();
    let mut t = twins(&store);
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(model()))]), 1_000);
    (store, t, fx)
}

#[test]
fn a_new_device_announces_membership_delta_and_status() {
    let (_, mut t, fx) = ready();
    let p = publishes(&fx);
    let m = &p["kedge/events/node/edge-1/membership/updated"];
    assert_eq!(m["added_devices"][0]["id"], "ns/thermo");
    assert_eq!(
        p["kedge/events/device/ns/thermo/twin/update/delta"]["delta"]["temp"],
        "30"
    );
    assert!(fx.contains(&Effect::Drive {
        device: DeviceKey::new("ns", "thermo"),
        property: "temp".into(),
        value: "30".into()
    }));
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(twin(&s, "temp")["observedDesired"]["value"], "30");
    assert_eq!(s["observedGeneration"], 1);
}

#[test]
fn a_report_answers_ok_and_updates_the_whole_status() {
    let (_, mut t, _) = ready();
    let body = br#"{"event_id":"e1","timestamp":5000,"twin":{"humidity":{"actual":{"value":"41"},"metadata":{"type":"int"}}}}"#;
    let fx = t.on_message(UPDATE, body, 6_000);
    let p = publishes(&fx);
    let r = &p["kedge/events/device/ns/thermo/twin/update/result"];
    assert_eq!(
        (r["code"].as_u64(), r["event_id"].as_str()),
        (Some(200), Some("e1"))
    );
    assert!(p.contains_key("kedge/events/device/ns/thermo/twin/update/document"));
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(twin(&s, "humidity")["reported"]["value"], "41");
    assert_eq!(
        twin(&s, "humidity")["reported"]["metadata"]["timestamp"],
        "5000"
    );
    assert_eq!(
        twin(&s, "temp")["observedDesired"]["value"],
        "30",
        "other properties untouched"
    );
}

fn error_of(t: &mut Twins, topic: &str, body: &[u8]) -> (u64, String) {
    let fx = t.on_message(topic, body, 1);
    let p = publishes(&fx);
    let (_, r) = p.iter().next().unwrap_or((&String::new(), &Value::Null));
    assert!(
        status(t, &fx).is_none(),
        "a refused request changes nothing"
    );
    (
        r["code"].as_u64().unwrap_or(0),
        r["reason"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn bad_requests_get_error_results_with_code_and_reason() {
    let (_, mut t, _) = ready();
    let long_key = format!(
        r#"{{"twin":{{"{}":{{"actual":{{"value":"1"}}}}}}}}"#,
        "k".repeat(129)
    );
    let long_value = format!(
        r#"{{"twin":{{"temp":{{"actual":{{"value":"{}"}}}}}}}}"#,
        "1".repeat(513)
    );
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        (UPDATE, b"{not json".to_vec(), 400, "malformed_json"),
        (UPDATE, b"{}".to_vec(), 400, "missing_twin"),
        (
            "kedge/events/device/ns/ghost/twin/update",
            br#"{"twin":{}}"#.to_vec(),
            404,
            "unknown_device",
        ),
        (UPDATE, long_key.into_bytes(), 413, "key_too_long"),
        (UPDATE, long_value.into_bytes(), 413, "value_too_long"),
        (
            UPDATE,
            br#"{"twin":{"temp":{"actual":{"value":"warm"}}}}"#.to_vec(),
            422,
            "type_mismatch",
        ),
        (
            UPDATE,
            br#"{"twin":{"temp":{"expected":{"value":"101"}}},"version":1}"#.to_vec(),
            422,
            "above_maximum",
        ),
        (
            UPDATE,
            br#"{"twin":{"nope":{"actual":{"value":"1"}}}}"#.to_vec(),
            404,
            "unknown_property",
        ),
        (
            UPDATE,
            br#"{"twin":{"humidity":{"expected":{"value":"5"}}},"version":1}"#.to_vec(),
            422,
            "read_only_property",
        ),
        (
            UPDATE,
            br#"{"twin":{"temp":{"expected":{"value":"50"}}},"version":7}"#.to_vec(),
            409,
            "version_conflict",
        ),
        (
            UPDATE,
            br#"{"twin":{"temp":{"expected":{"value":"50"}}}}"#.to_vec(),
            428,
            "version_required",
        ),
    ];
    for (topic, body, code, reason) in cases {
        assert_eq!(
            error_of(&mut t, topic, &body),
            (code, reason.to_owned()),
            "{reason}"
        );
    }
    // A stale reported version: bump the reported version, then report below it.
    let ok = br#"{"twin":{"humidity":{"actual":{"value":"1"}}},"version":5}"#;
    assert_eq!(publishes(&t.on_message(UPDATE, ok, 1)).len(), 2);
    let stale = br#"{"twin":{"humidity":{"actual":{"value":"2"}}},"version":1}"#;
    assert_eq!(
        error_of(&mut t, UPDATE, stale),
        (409, "version_conflict".to_owned())
    );
    let rejected = t
        .metrics
        .rejected
        .get_or_create(&label("reason", "malformed_json"))
        .get();
    assert_eq!(rejected, 1);
}

#[test]
fn edge_desired_writes_go_up_as_patches_and_drive_the_device() {
    let (_, mut t, _) = ready();
    let body = br#"{"event_id":"w","twin":{"temp":{"expected":{"value":"55"}}},"version":1}"#;
    let fx = t.on_message(UPDATE, body, 10);
    let patch = fx.iter().find_map(|e| match e {
        Effect::Desired { patch, .. } => Some(patch.clone()),
        _ => None,
    });
    assert_eq!(
        patch.map(|p| p.props),
        Some(BTreeMap::from([("temp".to_owned(), Some("55".to_owned()))]))
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Drive { value, .. } if value == "55"))
    );
}

#[test]
fn get_state_and_membership_requests() {
    let (_, mut t, _) = ready();
    let p = publishes(&t.on_message("kedge/events/device/ns/thermo/twin/get", b"", 1));
    assert!(p["kedge/events/device/ns/thermo/twin/get/result"]["twin"]["temp"].is_object());
    let fx = t.on_message(
        "kedge/events/device/ns/thermo/state/update",
        br#"{"state":"online"}"#,
        2_000,
    );
    assert_eq!(status(&mut t, &fx).unwrap_or_default()["state"], "online");
    assert!(publishes(&fx).contains_key("kedge/events/device/ns/thermo/state/update/result"));
    let p = publishes(&t.on_message(
        "kedge/events/node/edge-1/membership/get",
        br#"{"event_id":"m"}"#,
        3,
    ));
    let r = &p["kedge/events/node/edge-1/membership/get/result"];
    assert_eq!(
        (r["event_id"].as_str(), r["devices"][0]["id"].as_str()),
        (Some("m"), Some("ns/thermo"))
    );
    assert!(
        t.on_message("kedge/events/node/other/membership/get", b"", 3)
            .is_empty()
    );
    assert!(t.on_message("elsewhere/x", b"", 3).is_empty());
}

#[test]
fn legacy_topics_are_answered_on_legacy_topics() {
    let store = MemoryShadowStore::new();
    let mut t = twins(&store);
    let mut d = device(1, "30");
    d["metadata"]["namespace"] = json!("default");
    let _ = t.sync_devices(&set(vec![(d, None)]), 1);
    let fx = t.on_message(
        "kedge/events/device/thermo/twin/update",
        br#"{"twin":{"temp":{"actual":{"value":"3"}}}}"#,
        2,
    );
    assert!(publishes(&fx).contains_key("kedge/events/device/thermo/twin/update/result"));
}

#[test]
fn new_generation_brings_delta_and_drive() {
    let (_, mut t, _) = ready();
    assert!(
        t.sync_devices(&set(vec![(device(1, "30"), Some(model()))]), 2)
            .is_empty(),
        "same generation: nothing"
    );
    let fx = t.sync_devices(&set(vec![(device(2, "45"), Some(model()))]), 3);
    assert_eq!(
        publishes(&fx)["kedge/events/device/ns/thermo/twin/update/delta"]["delta"]["temp"],
        "45"
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Drive { value, .. } if value == "45"))
    );
}

#[test]
fn driver_readings_report_without_results() {
    let (_, mut t, _) = ready();
    let ev = DriverEvent::Readings {
        device: DeviceKey::new("ns", "thermo"),
        values: BTreeMap::from([("temp".to_owned(), "30".to_owned())]),
        timestamp: 77,
    };
    let fx = t.on_driver(ev, 80);
    assert!(!publishes(&fx).keys().any(|k| k.ends_with("/result")));
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(twin(&s, "temp")["reported"]["value"], "30");
    assert_eq!(twin(&s, "temp")["reported"]["metadata"]["type"], "int");
    let ev = DriverEvent::State {
        device: DeviceKey::new("ns", "thermo"),
        state: DeviceState::Offline,
    };
    assert_eq!(
        {
            let fx = t.on_driver(ev, 90);
            status(&mut t, &fx).unwrap_or_default()["state"].clone()
        },
        "offline"
    );
}

#[test]
fn shadows_survive_a_restart_and_devices_leave() {
    let (store, mut t, _) = ready();
    let fx = t.on_message(
        UPDATE,
        br#"{"twin":{"humidity":{"actual":{"value":"12"}}}}"#,
        5,
    );
    // The status leaves (and the shadow is saved) before the outbox could commit it.
    assert!(status(&mut t, &fx).is_some());
    let mut again = twins(&store);
    let fx = again.sync_devices(&set(vec![(device(1, "30"), Some(model()))]), 6);
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(
        twin(&s, "humidity")["reported"]["value"],
        "12",
        "the saved shadow is ahead of the cached status"
    );
    assert!(
        !publishes(&fx).keys().any(|k| k.ends_with("/delta")),
        "generation 1 is not re-applied"
    );

    let fx = again.sync_devices(&DeviceSet::default(), 7);
    let p = publishes(&fx);
    assert_eq!(
        p["kedge/events/node/edge-1/membership/updated"]["removed_devices"][0]["id"],
        "ns/thermo"
    );
    assert!(store.load("ns/thermo").is_none());
}

#[test]
fn the_shadow_is_saved_once_when_its_status_leaves_not_per_report() {
    let (store, mut t, fx) = ready();
    assert!(status(&mut t, &fx).is_some(), "the first status leaves");
    let saved = |store: &MemoryShadowStore| -> Value {
        let s: Shadow = store
            .load("ns/thermo")
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        serde_json::to_value(s.report()).unwrap_or_default()
    };
    let before = saved(&store);
    let mut last = Vec::new();
    for v in 1..=3 {
        let body = format!(r#"{{"twin":{{"humidity":{{"actual":{{"value":"{v}"}}}}}}}}"#);
        last = t.on_message(UPDATE, body.as_bytes(), 10 + v);
    }
    assert_eq!(
        saved(&store),
        before,
        "reports held by the throttle are not written one by one"
    );
    let s = status(&mut t, &last).unwrap_or_default();
    assert_eq!(twin(&s, "humidity")["reported"]["value"], "3");
    let after = saved(&store);
    assert_eq!(
        after["reported"]["humidity"]["value"], "3",
        "saved as the status left: {after}"
    );
    assert!(t.status(&DeviceKey::new("ns", "gone")).is_none());
}

#[test]
fn devices_of_other_nodes_are_ignored() {
    let store = MemoryShadowStore::new();
    let mut t = twins(&store);
    let mut d = device(1, "30");
    d["spec"]["nodeName"] = json!("worker-node1");
    assert!(t.sync_devices(&set(vec![(d, None)]), 1).is_empty());
    assert!(t.shadow(&DeviceKey::new("ns", "thermo")).is_none());
}

mod models;
