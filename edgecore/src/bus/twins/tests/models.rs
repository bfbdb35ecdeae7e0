//! Devices and their DeviceModels: a model arriving late, failing validation or changing,
//! refused desired values, moved and recreated devices.

use super::*;

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
