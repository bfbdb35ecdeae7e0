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

#[test]
fn a_device_without_its_model_is_held_until_the_model_arrives() {
    let store = MemoryShadowStore::new();
    let mut t = twins(&store);
    let key = DeviceKey::new("ns", "thermo");
    // The Device reached the edge before its DeviceModel.
    let fx = t.sync_devices(&set(vec![(device(1, "30"), None)]), 1_000);
    assert_eq!(t.driver_inputs().count(), 0, "no driver without the model");
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Drive { .. })),
        "nothing driven: {fx:?}"
    );
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(s["state"], MODEL_MISSING, "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .contains("DeviceModel m")
    );
    assert_eq!(t.metrics.devices_held.get(), 1);
    // Twin updates are refused (retryable), reads still served.
    let body = br#"{"event_id":"e1","twin":{"temp":{"actual":{"value":"1"}}}}"#;
    assert_eq!(
        error_of(&mut t, UPDATE, body),
        (503, "model_missing".to_owned())
    );
    assert_eq!(
        t.metrics
            .rejected
            .get_or_create(&label("reason", "model_missing"))
            .get(),
        1
    );
    let p = publishes(&t.on_message("kedge/events/device/ns/thermo/twin/get", b"{}", 1_500));
    let got = &p["kedge/events/device/ns/thermo/twin/get/result"];
    assert!(got.is_object() && got["reason"].is_null(), "{p:?}");
    // A status-only resync does not repeat the status.
    let fx = t.sync_devices(&set(vec![(device(1, "30"), None)]), 1_600);
    assert!(status(&mut t, &fx).is_none(), "{fx:?}");
    // The model arrives: released, desired values applied and driven.
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(model()))]), 2_000);
    assert_eq!(t.driver_inputs().count(), 1);
    assert!(fx.contains(&Effect::Drive {
        device: key.clone(),
        property: "temp".into(),
        value: "30".into()
    }));
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_ne!(s["state"], MODEL_MISSING, "{s}");
    assert!(s["message"].is_null(), "{s}");
    assert_eq!(t.metrics.devices_held.get(), 0);
    let body = br#"{"event_id":"e2","twin":{"humidity":{"actual":{"value":"41"}}}}"#;
    let p = publishes(&t.on_message(UPDATE, body, 2_500));
    assert_eq!(
        p["kedge/events/device/ns/thermo/twin/update/result"]["code"],
        200
    );
}

#[test]
fn a_device_recreated_under_the_same_name_starts_a_new_shadow() {
    // Deleted and re-created (new uid) while the edge did not see the gap, e.g. offline:
    // both incarnations are at generation 1.
    let store = MemoryShadowStore::new();
    let mut t = twins(&store);
    let mut old = device(1, "30");
    old["metadata"]["uid"] = json!("uid-old");
    let fx = t.sync_devices(&set(vec![(old, Some(model()))]), 1_000);
    status(&mut t, &fx);
    let fx = t.on_message(
        UPDATE,
        br#"{"twin":{"humidity":{"actual":{"value":"12"}}}}"#,
        1_100,
    );
    status(&mut t, &fx);

    let mut new = device(1, "55");
    new["metadata"]["uid"] = json!("uid-new");
    let fx = t.sync_devices(&set(vec![(new, Some(model()))]), 2_000);
    assert_eq!(
        publishes(&fx)["kedge/events/device/ns/thermo/twin/update/delta"]["delta"]["temp"],
        "55",
        "the new Device's desired value is applied: {fx:?}"
    );
    assert!(fx.contains(&Effect::Drive {
        device: DeviceKey::new("ns", "thermo"),
        property: "temp".into(),
        value: "55".into()
    }));
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(twin(&s, "temp")["observedDesired"]["value"], "55", "{s}");
    assert!(
        twin(&s, "humidity")["reported"].is_null(),
        "the old incarnation's reports do not leak into the new Device: {s}"
    );
    // And across a restart the saved shadow is the new incarnation's.
    let mut again = twins(&store);
    let mut new = device(1, "55");
    new["metadata"]["uid"] = json!("uid-new");
    let fx = again.sync_devices(&set(vec![(new, Some(model()))]), 3_000);
    let shadow = again
        .shadow(&DeviceKey::new("ns", "thermo"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        shadow.desired().get("temp").map(|p| p.value.as_str()),
        Some("55")
    );
    assert!(shadow.reported().get("humidity").is_none(), "{fx:?}");
}

#[test]
fn edge_desired_writes_to_a_property_the_device_does_not_list_are_refused() {
    // The model has `setpoint`, the Device lists only temp and humidity: the cloud cannot
    // keep a desired value for it (and a merged patch carrying it would be refused whole).
    let mut m = model();
    m["spec"]["properties"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"}));
    let store = MemoryShadowStore::new();
    let mut t = twins(&store);
    t.sync_devices(&set(vec![(device(1, "30"), Some(m))]), 1_000);
    let body = br#"{"event_id":"w","twin":{"setpoint":{"expected":{"value":"5"}}},"version":1}"#;
    let fx = t.on_message(UPDATE, body, 1_100);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Desired { .. })),
        "nothing goes up: {fx:?}"
    );
    let r = &publishes(&fx)["kedge/events/device/ns/thermo/twin/update/result"];
    assert_eq!(
        (r["code"].as_u64(), r["reason"].as_str()),
        (Some(404), Some("unknown_property")),
        "{r}"
    );
    assert_eq!(
        t.shadow(&DeviceKey::new("ns", "thermo"))
            .map(|s| s.desired().version()),
        Some(1),
        "the shadow is unchanged"
    );
    // Reports of that property are still fine.
    let ok = br#"{"twin":{"setpoint":{"actual":{"value":"5"}}}}"#;
    let r = &publishes(&t.on_message(UPDATE, ok, 1_200))["kedge/events/device/ns/thermo/twin/update/result"];
    assert_eq!(r["code"], 200);
}

#[test]
fn a_device_whose_model_does_not_parse_says_so() {
    // The CRD admits a property without `type`; kedge cannot type its values.
    let mut bad = model();
    bad["spec"]["properties"][1]
        .as_object_mut()
        .unwrap()
        .remove("type");
    let store = MemoryShadowStore::new();
    let mut t = twins(&store);
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(bad))]), 1_000);
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(s["state"], MODEL_INVALID, "{s}");
    let msg = s["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("DeviceModel m is invalid") && msg.contains("type"),
        "the message names the model and the problem: {msg}"
    );
    let body = br#"{"event_id":"e1","twin":{"temp":{"actual":{"value":"1"}}}}"#;
    assert_eq!(
        error_of(&mut t, UPDATE, body),
        (422, "model_invalid".to_owned())
    );
    // Fixed: released.
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(model()))]), 2_000);
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_ne!(s["state"], MODEL_INVALID, "{s}");
    assert!(s["message"].is_null(), "{s}");
    assert_eq!(t.driver_inputs().count(), 1);
}

#[test]
fn invalid_cloud_desired_values_are_refused_in_the_status_and_not_forwarded() {
    let (_, mut t, _) = ready();
    let key = DeviceKey::new("ns", "thermo");
    let delta_topic = "kedge/events/device/ns/thermo/twin/update/delta";
    for (generation, value, reason) in [
        (2, "abc", "type_mismatch"),
        (3, "101", "above_maximum"),
        (4, "0", "below_minimum"),
    ] {
        let fx = t.sync_devices(
            &set(vec![(device(generation, value), Some(model()))]),
            2_000,
        );
        assert!(
            !publishes(&fx).contains_key(delta_topic),
            "{value}: a delta was published"
        );
        assert!(
            !fx.iter().any(|e| matches!(e, Effect::Drive { .. })),
            "{value}: driven"
        );
        let s = status(&mut t, &fx).unwrap_or_default();
        assert_eq!(
            twin(&s, "temp")["observedDesired"]["value"],
            "30",
            "{value}: the last valid value stays in force"
        );
        assert_eq!(s["observedGeneration"], generation);
        let r = &s["desiredRefusals"][0];
        assert_eq!(
            (&r["propertyName"], &r["value"], &r["reason"]),
            (&json!("temp"), &json!(value), &json!(reason))
        );
        assert_eq!(
            t.metrics
                .desired_refused
                .get_or_create(&label("reason", reason))
                .get(),
            1
        );
    }
    // A ReadOnly property's desired value is refused too.
    let mut d = device(5, "30");
    d["spec"]["properties"][1]["desired"] = json!({"value": "50"});
    let fx = t.sync_devices(&set(vec![(d, Some(model()))]), 3_000);
    assert!(!publishes(&fx).contains_key(delta_topic));
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(s["desiredRefusals"][0]["reason"], "read_only_property");
    assert!(twin(&s, "humidity")["observedDesired"].is_null());

    // Fixed: the refusal clears and the value flows.
    let fx = t.sync_devices(&set(vec![(device(6, "40"), Some(model()))]), 4_000);
    assert_eq!(publishes(&fx)[delta_topic]["delta"]["temp"], "40");
    assert!(fx.contains(&Effect::Drive {
        device: key.clone(),
        property: "temp".into(),
        value: "40".into()
    }));
    let s = status(&mut t, &fx).unwrap_or_default();
    assert!(s["desiredRefusals"].is_null());
    assert!(s.as_object().unwrap().contains_key("desiredRefusals"));
    assert_eq!(twin(&s, "temp")["observedDesired"]["value"], "40");
}

fn events(fx: &[Effect]) -> Vec<&Value> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Event { event, .. } => Some(event),
            _ => None,
        })
        .collect()
}

fn drives(fx: &[Effect]) -> Vec<(String, String)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Drive {
                property, value, ..
            } => Some((property.clone(), value.clone())),
            _ => None,
        })
        .collect()
}

fn model_with(f: impl FnOnce(&mut Value)) -> Value {
    let mut m = model();
    f(&mut m["spec"]["properties"][0]);
    m
}

#[test]
fn a_device_model_change_rechecks_the_desired_values_in_force() {
    let (_, mut t, _) = ready();
    let delta_topic = "kedge/events/device/ns/thermo/twin/update/delta";
    // The maximum drops below the desired 30 (same Device generation).
    let lowered = model_with(|p| p["maximum"] = json!("20"));
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(lowered.clone()))]), 2_000);
    assert!(drives(&fx).is_empty(), "{fx:?}");
    let s = status(&mut t, &fx).expect("a status goes up");
    let r = &s["desiredRefusals"][0];
    assert_eq!(
        (&r["propertyName"], &r["value"], &r["reason"]),
        (&json!("temp"), &json!("30"), &json!("above_maximum"))
    );
    assert!(
        twin(&s, "temp")["observedDesired"].is_null(),
        "30 is no longer in force: {s}"
    );
    assert_eq!(events(&fx).len(), 1);
    assert!(
        t.shadow(&DeviceKey::new("ns", "thermo"))
            .unwrap()
            .delta()
            .is_empty()
    );
    // The same model again: nothing new.
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(lowered))]), 2_500);
    assert!(fx.is_empty(), "{fx:?}");

    // Raised again: the refusal clears, the value is in force, delta and drive follow.
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(model()))]), 3_000);
    assert_eq!(publishes(&fx)[delta_topic]["delta"]["temp"], "30");
    assert_eq!(drives(&fx), [("temp".to_owned(), "30".to_owned())]);
    let s = status(&mut t, &fx).expect("a status goes up");
    assert!(s["desiredRefusals"].is_null(), "{s}");
    assert_eq!(twin(&s, "temp")["observedDesired"]["value"], "30");
    assert!(events(&fx).is_empty());

    // Made ReadOnly: refused with that reason.
    let ro = model_with(|p| p["accessMode"] = json!("ReadOnly"));
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(ro))]), 4_000);
    let s = status(&mut t, &fx).expect("a status goes up");
    assert_eq!(s["desiredRefusals"][0]["reason"], "read_only_property");
}

#[test]
fn a_refused_cloud_desired_value_raises_one_warning_event_per_distinct_refusal() {
    let (store, mut t, _) = ready();
    let fx = t.sync_devices(&set(vec![(device(2, "abc"), Some(model()))]), 2_000);
    let ev = events(&fx);
    assert_eq!(ev.len(), 1, "{fx:?}");
    let e = ev[0];
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "InvalidDesired");
    assert_eq!(e["involvedObject"]["kind"], "Device");
    assert_eq!(e["involvedObject"]["name"], "thermo");
    assert_eq!(e["involvedObject"]["namespace"], "ns");
    assert_eq!(e["metadata"]["namespace"], "ns");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("\"temp\"") && msg.contains("\"abc\"") && msg.contains("type_mismatch"),
        "{msg}"
    );
    assert!(status(&mut t, &fx).is_some());

    // A later generation refusing the same value again: no second Event.
    let fx = t.sync_devices(&set(vec![(device(3, "abc"), Some(model()))]), 3_000);
    assert!(events(&fx).is_empty(), "{fx:?}");
    // Another value: a new Event.
    let fx = t.sync_devices(&set(vec![(device(4, "500"), Some(model()))]), 4_000);
    assert_eq!(events(&fx).len(), 1);
    let s4 = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(
        t.metrics
            .desired_refused
            .get_or_create(&label("reason", "type_mismatch"))
            .get(),
        1
    );

    // After a restart, the Device comes back with the status the cloud holds: no Event.
    let mut d = device(4, "500");
    d["status"] = s4;
    let mut t2 = twins(&store);
    let fx = t2.sync_devices(&set(vec![(d, Some(model()))]), 5_000);
    assert!(events(&fx).is_empty(), "{fx:?}");
}

#[test]
fn a_device_model_that_fails_validation_holds_the_device() {
    let store = MemoryShadowStore::new();
    let mut t = twins(&store);
    let bad = model_with(|p| p["minimum"] = json!("200"));
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(bad))]), 1_000);
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(s["state"], MODEL_INVALID, "{s}");
    let msg = s["message"].as_str().unwrap_or("");
    assert!(msg.contains("minimum is greater than maximum"), "{msg}");
    assert!(drives(&fx).is_empty());
    assert_eq!(t.driver_inputs().count(), 0);
    let dup = model_with(|p| p["name"] = json!("humidity"));
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(dup))]), 2_000);
    let s = status(&mut t, &fx).unwrap_or_default();
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .contains("defined twice"),
        "{s}"
    );
    // Fixed: released, and the desired value flows.
    let fx = t.sync_devices(&set(vec![(device(1, "30"), Some(model()))]), 3_000);
    assert_eq!(drives(&fx), [("temp".to_owned(), "30".to_owned())]);
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_ne!(s["state"], MODEL_INVALID, "{s}");
}

#[test]
fn a_property_removed_from_the_device_leaves_status_twins() {
    let (_, mut t, _) = ready();
    let body = br#"{"event_id":"e1","twin":{"humidity":{"actual":{"value":"41"}}}}"#;
    let fx = t.on_message(UPDATE, body, 2_000);
    let s = status(&mut t, &fx).unwrap_or_default();
    assert_eq!(twin(&s, "humidity")["reported"]["value"], "41");

    let mut d = device(2, "30");
    d["spec"]["properties"] = json!([{"name": "temp", "desired": {"value": "30"}}]);
    let fx = t.sync_devices(&set(vec![(d, Some(model()))]), 3_000);
    let s = status(&mut t, &fx).expect("a status goes up");
    assert!(twin(&s, "humidity").is_null(), "{s}");
    assert_eq!(twin(&s, "temp")["observedDesired"]["value"], "30");
}

#[test]
fn a_device_moved_here_from_another_node_takes_its_status_over() {
    let store = MemoryShadowStore::new();
    let mut t = twins(&store);
    let mut d = device(3, "30");
    d["status"] = json!({
        "nodeName": "edge-0", "state": "online", "observedGeneration": 3, "reportedVersion": 9,
        "twins": [{"propertyName": "humidity", "reported": {"value": "41", "version": 9}},
                  {"propertyName": "temp", "observedDesired": {"value": "30", "version": 3}}],
        "desiredRefusals": [{"propertyName": "temp", "value": "x", "reason": "type_mismatch", "message": "m"}]});
    let fx = t.sync_devices(&set(vec![(d, Some(model()))]), 1_000);
    // Driven here: the old edge's observed generation does not make it a duplicate.
    assert_eq!(drives(&fx), [("temp".to_owned(), "30".to_owned())]);
    let s = status(&mut t, &fx).expect("the status is taken over at once");
    assert_eq!(s["nodeName"], NODE);
    assert_eq!(s["state"], "unknown", "{s}");
    assert!(twin(&s, "humidity").is_null(), "{s}");
    assert_eq!(twin(&s, "temp")["observedDesired"]["value"], "30");
    assert!(s["desiredRefusals"].is_null(), "{s}");
    assert!(s.as_object().unwrap().contains_key("desiredRefusals"));

    // A status this node wrote is carried on as before (a wiped store, a restart).
    let mut d = device(3, "30");
    d["status"] = json!({"nodeName": NODE, "state": "online", "observedGeneration": 3,
        "twins": [{"propertyName": "humidity", "reported": {"value": "41", "version": 9}},
                  {"propertyName": "temp", "observedDesired": {"value": "30", "version": 3}}]});
    let mut t = twins(&MemoryShadowStore::new());
    let fx = t.sync_devices(&set(vec![(d, Some(model()))]), 1_000);
    // (nothing to drive, publish or report: the recheck against the model finds no change)
    assert!(
        fx.iter()
            .all(|e| matches!(e, Effect::Publish { topic, .. } if topic.contains("membership"))),
        "{fx:?}"
    );
    let key = DeviceKey::new("ns", "thermo");
    assert_eq!(
        t.shadow(&key)
            .unwrap()
            .reported()
            .get("humidity")
            .unwrap()
            .value,
        "41"
    );
}

#[test]
fn a_device_model_changed_while_the_edge_was_down_is_checked_at_start() {
    let (store, mut t, fx) = ready();
    let s = status(&mut t, &fx).unwrap_or_default();
    let mut d = device(1, "30");
    d["status"] = s;
    // Restarted with the same generation, but the model's maximum is now below 30.
    let mut t = twins(&store);
    let lowered = model_with(|p| p["maximum"] = json!("20"));
    let fx = t.sync_devices(&set(vec![(d, Some(lowered))]), 2_000);
    let s = status(&mut t, &fx).expect("a status goes up");
    assert_eq!(s["desiredRefusals"][0]["reason"], "above_maximum", "{s}");
    assert_eq!(events(&fx).len(), 1);
    assert!(drives(&fx).is_empty());
}
