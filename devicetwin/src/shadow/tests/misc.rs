//! State, get, limits, persistence and event builders.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn state_updates() {
    let mut s = Shadow::new();
    let actions = s
        .apply(TwinEvent::EdgeState {
            state: DeviceState::Online,
            at: at("s", 1_000),
        })
        .unwrap();
    assert_eq!(kinds(&actions), ["result", "state_up"]);
    assert_eq!(s.last_online(), Some(1_000));
    let TwinAction::PublishResult { topic, msg } = &actions[0] else {
        panic!("no result")
    };
    assert_eq!(*topic, DeviceTopic::StateUpdateResult);
    let device = msg.device.clone().unwrap();
    assert_eq!(
        (device.state.as_str(), device.last_online.as_deref()),
        ("online", Some("1970-01-01T00:00:01Z"))
    );
    assert_eq!(
        actions[1],
        TwinAction::StateUp(StateReport {
            state: DeviceState::Online,
            timestamp: 1_000,
            last_online: Some(1_000)
        })
    );
    let actions = s
        .apply(TwinEvent::EdgeState {
            state: DeviceState::Offline,
            at: at("s", 2_000),
        })
        .unwrap();
    assert_eq!(s.state(), Some(&DeviceState::Offline));
    assert_eq!(s.last_online(), Some(1_000));
    assert_eq!(
        actions[1],
        TwinAction::StateUp(StateReport {
            state: DeviceState::Offline,
            timestamp: 2_000,
            last_online: None
        })
    );
}

#[test]
fn get_returns_whole_twin() {
    let mut s = seeded();
    let before = s.clone();
    let actions = s.apply(TwinEvent::Get { at: at("g", 9) }).unwrap();
    assert_eq!(s, before);
    let [TwinAction::PublishResult { topic, msg }] = actions.as_slice() else {
        panic!("one result")
    };
    assert_eq!(*topic, DeviceTopic::TwinGetResult);
    assert_eq!(msg.twin.as_ref().unwrap(), &s.twin_view());
    assert_eq!(
        msg.twin.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["mode", "temp"]
    );
    assert_eq!(
        (msg.desired_version, msg.reported_version),
        (Some(2), Some(1))
    );
    let empty = Shadow::new()
        .apply(TwinEvent::Get { at: at("g", 1) })
        .unwrap();
    let TwinAction::PublishResult { msg, .. } = &empty[0] else {
        panic!("no result")
    };
    assert!(msg.twin.as_ref().unwrap().is_empty());
}

// ---- limits, persistence, helpers ----

#[test]
fn too_many_properties() {
    let names: Vec<String> = (0..=MAX_PROPERTIES).map(|i| format!("p{i}")).collect();
    let mut s = Shadow::new();
    let props = names
        .iter()
        .map(|n| (n.clone(), Some(PropertyWrite::new("1"))))
        .collect();
    let err = s
        .apply(TwinEvent::edge_reported(props, None, at("r", 1)))
        .unwrap_err();
    assert_eq!((err.code(), err.reason()), (413, "too_many_properties"));
    let props = names
        .iter()
        .map(|n| (n.clone(), PropertyWrite::new("1")))
        .collect();
    assert!(
        s.apply(TwinEvent::CloudDesired {
            generation: 1,
            props,
            at: at("c", 1)
        })
        .is_err()
    );
    let props = names[..MAX_PROPERTIES]
        .iter()
        .map(|n| (n.clone(), Some(PropertyWrite::new("1"))))
        .collect();
    assert!(
        s.apply(TwinEvent::edge_reported(props, None, at("r", 1)))
            .is_ok()
    );
    assert!(
        s.apply(report(&[("one-more", Some("1"))], None, 2))
            .is_err()
    );
    assert!(
        s.apply(report(&[("p0", None), ("one-more", Some("1"))], None, 2))
            .is_ok()
    );
}

#[test]
fn status_round_trip_rebuilds_the_shadow() {
    let mut s = seeded();
    s.apply(report(&[("temp", Some("26"))], Some(5), 120))
        .unwrap();
    let mut status = DeviceStatus::default();
    status.apply_report(&s.report());
    let rebuilt = Shadow::from_status(&status);
    assert_eq!(rebuilt.desired(), s.desired());
    assert_eq!(rebuilt.reported(), s.reported());
    assert_eq!(rebuilt.observed_generation(), Some(2));
    let mut rebuilt = rebuilt;
    assert_eq!(
        rebuilt.apply(cloud(2, &[("temp", "1")], 1)).unwrap(),
        [],
        "same generation is a duplicate"
    );
}

#[test]
fn shadow_persists_as_json() {
    let s = seeded();
    let json = serde_json::to_string(&s).unwrap();
    let back: Shadow = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn action_topics() {
    let mut s = Shadow::new();
    let actions = s.apply(desire(&[("a", Some("1"))], Some(0), 1)).unwrap();
    let topics: Vec<_> = actions.iter().map(TwinAction::topic).collect();
    assert_eq!(
        topics,
        [
            Some(DeviceTopic::TwinUpdateResult),
            Some(DeviceTopic::TwinUpdateDocument),
            Some(DeviceTopic::TwinUpdateDelta),
            None,
            None,
            None
        ]
    );
    assert_eq!(TwinEvent::Get { at: at("x", 1) }.stamp(), &at("x", 1));
}

#[test]
fn cloud_event_from_spec() {
    let spec: DeviceSpec = serde_json::from_value(serde_json::json!({
        "properties": [
            {"name": "temp", "desired": {"value": "30", "metadata": {"timestamp": "77"}}},
            {"name": "label", "desired": {"value": "x", "metadata": {"type": "string"}}},
            {"name": "bare"}
        ]
    }))
    .unwrap();
    let model = crate::model::DeviceModelSpec {
        properties: vec![ModelProperty::new("temp", crate::model::PropertyType::Int)],
        ..Default::default()
    };
    let ev = TwinEvent::cloud_desired_from_spec(&spec, 4, Some(&model), at("c", 1));
    let TwinEvent::CloudDesired {
        generation, props, ..
    } = ev
    else {
        panic!("not cloud desired")
    };
    assert_eq!(generation, 4);
    assert_eq!(props.len(), 2);
    assert_eq!(
        props["temp"],
        PropertyWrite {
            value: "30".into(),
            timestamp: Some(77),
            ty: Some(crate::model::PropertyType::Int)
        }
    );
    assert_eq!(props["label"].ty, Some(crate::model::PropertyType::String));
}
