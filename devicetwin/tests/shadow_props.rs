//! Property test: random event sequences never panic, versions never decrease, a refused
//! event leaves the shadow unchanged, and payload decoding never panics on random bytes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use devicetwin::model::{DeviceModelSpec, DeviceState, ModelProperty, PropertyType};
use devicetwin::payload;
use devicetwin::shadow::{
    DesiredWrite, PropertyWrite, ReportedWrite, Shadow, Stamp, TwinAction, TwinEvent,
};
use devicetwin::topic::DeviceTopic;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "temp"]).prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["1", "2", "1.0", "true", "x", ""]).prop_map(str::to_owned)
}

fn ty() -> impl Strategy<Value = Option<PropertyType>> {
    prop::option::of(prop::sample::select(vec![
        PropertyType::Int,
        PropertyType::Double,
        PropertyType::String,
    ]))
}

fn write() -> impl Strategy<Value = PropertyWrite> {
    (value(), prop::option::of(0i64..1000), ty()).prop_map(|(value, timestamp, ty)| PropertyWrite {
        value,
        timestamp,
        ty,
    })
}

fn writes() -> impl Strategy<Value = BTreeMap<String, Option<PropertyWrite>>> {
    prop::collection::btree_map(name(), prop::option::of(write()), 0..4)
}

fn event() -> impl Strategy<Value = TwinEvent> {
    let at = (0i64..10_000).prop_map(|t| Stamp::new("e", t));
    prop_oneof![
        (
            0u64..12,
            prop::collection::btree_map(name(), write(), 0..4),
            at.clone()
        )
            .prop_map(|(generation, props, at)| TwinEvent::CloudDesired {
                generation,
                props,
                at
            }),
        (
            prop::option::of((writes(), prop::option::of(0u64..12))),
            prop::option::of((writes(), prop::option::of(0u64..12))),
            at.clone()
        )
            .prop_map(|(r, d, at)| TwinEvent::EdgeUpdate {
                reported: r.map(|(props, version)| ReportedWrite { props, version }),
                desired: d.map(|(props, expected_version)| DesiredWrite {
                    props,
                    expected_version
                }),
                at,
            }),
        (
            prop::sample::select(vec!["online", "offline", "ok"]),
            at.clone()
        )
            .prop_map(|(s, at)| TwinEvent::EdgeState {
                state: DeviceState::parse(s),
                at
            }),
        at.prop_map(|at| TwinEvent::Get { at }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_sequences_keep_versions_monotonic(events in prop::collection::vec(event(), 1..40)) {
        let mut shadow = Shadow::new();
        for ev in events {
            let before = shadow.clone();
            match shadow.apply(ev) {
                Ok(actions) => {
                    prop_assert!(shadow.desired().version() >= before.desired().version());
                    prop_assert!(shadow.reported().version() >= before.reported().version());
                    prop_assert!(shadow.observed_generation() >= before.observed_generation());
                    for a in &actions {
                        if let TwinAction::DesiredUp(p) = a {
                            prop_assert_eq!(p.version, shadow.desired().version());
                        }
                        if let TwinAction::DriveDevice { property, value, .. } = a {
                            prop_assert_eq!(&shadow.desired().get(property).unwrap().value, value);
                        }
                    }
                    // The delta only names desired properties.
                    for k in shadow.delta().keys() {
                        prop_assert!(shadow.desired().get(k).is_some());
                    }
                }
                Err(_) => prop_assert_eq!(&shadow, &before),
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let model = DeviceModelSpec {
            properties: vec![ModelProperty::new("temp", PropertyType::Int)],
            ..DeviceModelSpec::default()
        };
        for kind in [DeviceTopic::TwinUpdate, DeviceTopic::StateUpdate, DeviceTopic::TwinGet] {
            let _ = payload::request_event(kind, &bytes, Some(&model), 0);
        }
        let _ = payload::peek_event_id(&bytes);
        let _ = devicetwin::topic::parse("kedge", &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_json_updates_never_panic(
        twin in prop::collection::btree_map("[a-z]{1,3}", prop_oneof![
            Just(serde_json::Value::Null),
            "[0-9a-z.]{0,4}".prop_map(|v| serde_json::json!({"actual": {"value": v}})),
            "[0-9a-z.]{0,4}".prop_map(|v| serde_json::json!({"expected": {"value": v}, "metadata": {"type": "int"}})),
            Just(serde_json::json!({"expected": null, "actual": {"value": null}})),
        ], 0..5),
        version in prop::option::of(0u64..5),
    ) {
        let msg = serde_json::json!({"event_id": "x", "twin": twin, "version": version});
        let mut shadow = Shadow::new();
        if let Ok(ev) = payload::request_event(DeviceTopic::TwinUpdate, msg.to_string().as_bytes(), None, 1) {
            let _ = shadow.apply(ev);
        }
    }
}
