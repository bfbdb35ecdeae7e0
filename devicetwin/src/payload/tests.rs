#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;
use crate::model::{AccessMode, DeviceState, ModelProperty, PropertyType};
use crate::shadow::{DesiredWrite, PropertyWrite, ReportedWrite, Stamp};

fn model() -> DeviceModelSpec {
    DeviceModelSpec {
        properties: vec![
            ModelProperty {
                minimum: Some("1".into()),
                maximum: Some("100".into()),
                ..ModelProperty::new("temp", PropertyType::Int)
            },
            ModelProperty {
                access_mode: Some(AccessMode::ReadOnly),
                ..ModelProperty::new("serial", PropertyType::String)
            },
            ModelProperty::new("on", PropertyType::Boolean),
            ModelProperty {
                minimum: Some("-0.5".into()),
                ..ModelProperty::new("ratio", PropertyType::Double)
            },
        ],
        ..DeviceModelSpec::default()
    }
}

fn update(
    v: serde_json::Value,
    model: Option<&DeviceModelSpec>,
) -> Result<TwinEvent, PayloadError> {
    request_event(
        DeviceTopic::TwinUpdate,
        v.to_string().as_bytes(),
        model,
        999,
    )
}

fn reason(r: Result<TwinEvent, PayloadError>) -> (u16, &'static str) {
    let e = r.unwrap_err();
    (e.code(), e.reason())
}

fn reported(
    props: &[(&str, Option<PropertyWrite>)],
    version: Option<u64>,
) -> Option<ReportedWrite> {
    Some(ReportedWrite {
        props: props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        version,
    })
}

fn w(value: &str, ts: Option<i64>, ty: Option<PropertyType>) -> Option<PropertyWrite> {
    Some(PropertyWrite {
        value: value.into(),
        timestamp: ts,
        ty,
    })
}

#[test]
fn kubeedge_mapper_report_converts() {
    let ev = update(
        json!({"event_id": "e1", "timestamp": 1700,
               "twin": {"temp": {"actual": {"value": "23", "metadata": {"timestamp": 1690}}, "metadata": {"type": "int"}}}}),
        Some(&model()),
    )
    .unwrap();
    assert_eq!(
        ev,
        TwinEvent::EdgeUpdate {
            reported: reported(
                &[("temp", w("23", Some(1690), Some(PropertyType::Int)))],
                None
            ),
            desired: None,
            at: Stamp::new("e1", 1700),
        }
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let deep = "[".repeat(100_000);
    let inputs: Vec<&[u8]> = vec![
        b"{",
        b"null",
        b"[]",
        b"[\"e\", 1, {}]",
        b"42",
        b"\"twin\"",
        b"\xff\xfe\x00",
        b"{\"twin\": 5}",
        b"{\"twin\": {\"a\": 5}}",
        b"{\"twin\": {\"a\": {\"actual\": {\"value\": [1]}}}}",
        b"{\"twin\": {\"a\": {\"actual\": {\"value\": {}}}}}",
        b"{\"twin\": {\"a\": {\"actual\": 3}}}",
        b"{\"timestamp\": \"soon\", \"twin\": {}}",
        b"{\"timestamp\": 1e300, \"twin\": {}}",
        b"{\"event_id\": {}, \"twin\": {}}",
        b"{\"version\": -1, \"twin\": {}}",
        deep.as_bytes(),
    ];
    for bytes in inputs {
        let e = request_event(DeviceTopic::TwinUpdate, bytes, Some(&model()), 0).unwrap_err();
        assert_eq!(
            (e.code(), e.reason()),
            (400, "malformed_json"),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    for kind in [DeviceTopic::StateUpdate, DeviceTopic::TwinGet] {
        for bytes in [&b"{"[..], b"[1]", deep.as_bytes()] {
            assert_eq!(request_event(kind, bytes, None, 0).unwrap_err().code(), 400);
        }
    }
}

#[test]
fn size_limits() {
    let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    let e = request_event(DeviceTopic::TwinUpdate, &big, None, 0).unwrap_err();
    assert_eq!((e.code(), e.reason()), (413, "payload_too_large"));

    let key128 = "k".repeat(MAX_KEY_LEN);
    assert!(update(json!({"twin": {key128: {"actual": {"value": "1"}}}}), None).is_ok());
    let key129 = "k".repeat(MAX_KEY_LEN + 1);
    assert_eq!(
        reason(update(json!({"twin": {key129: null}}), None)),
        (413, "key_too_long")
    );

    let v512 = "é".repeat(MAX_VALUE_LEN);
    assert!(update(json!({"twin": {"s": {"actual": {"value": v512}}}}), None).is_ok());
    let v513 = "é".repeat(MAX_VALUE_LEN + 1);
    assert_eq!(
        reason(update(
            json!({"twin": {"s": {"actual": {"value": v513}}}}),
            None
        )),
        (413, "value_too_long")
    );
    let v513 = "x".repeat(MAX_VALUE_LEN + 1);
    assert_eq!(
        reason(update(
            json!({"twin": {"s": {"expected": {"value": v513}}}}),
            None
        )),
        (413, "value_too_long")
    );
}

#[test]
fn key_rules() {
    for ok in ["temp", "a-b_c.d,e:f/g@h#i", "T9"] {
        assert!(update(json!({"twin": {ok: null}}), None).is_ok(), "{ok}");
    }
    for bad in ["", "has space", "ünï", "a+b", "a$b", "quote\""] {
        assert_eq!(
            reason(update(json!({"twin": {bad: null}}), None)),
            (400, "invalid_key"),
            "{bad}"
        );
    }
}

#[test]
fn missing_twin() {
    assert_eq!(
        reason(update(json!({"event_id": "x"}), None)),
        (400, "missing_twin")
    );
    assert_eq!(
        reason(request_event(DeviceTopic::TwinUpdate, b"", None, 0)),
        (400, "missing_twin")
    );
    assert_eq!(
        reason(update(json!({"twin": null}), None)),
        (400, "missing_twin")
    );
}

#[test]
fn model_checks() {
    let m = model();
    let actual = |k: &str, v: serde_json::Value| {
        update(json!({"twin": {k: {"actual": {"value": v}}}}), Some(&m))
    };
    assert_eq!(
        reason(actual("humidity", json!("3"))),
        (404, "unknown_property")
    );
    assert_eq!(
        reason(actual("temp", json!("warm"))),
        (422, "type_mismatch")
    );
    assert_eq!(reason(actual("temp", json!("0"))), (422, "below_minimum"));
    assert_eq!(reason(actual("temp", json!("101"))), (422, "above_maximum"));
    assert_eq!(reason(actual("ratio", json!("-1"))), (422, "below_minimum"));
    assert_eq!(reason(actual("on", json!("maybe"))), (422, "type_mismatch"));
    assert!(actual("temp", json!(42)).is_ok());
    assert!(actual("on", json!(true)).is_ok());
    assert!(actual("ratio", json!(0.25)).is_ok());
    // Reported values of ReadOnly properties are fine; desired ones are not.
    assert!(actual("serial", json!("SN1")).is_ok());
    let e = update(
        json!({"version": 0, "twin": {"serial": {"expected": {"value": "x"}}}}),
        Some(&m),
    );
    assert_eq!(reason(e), (422, "read_only_property"));
    let e = update(
        json!({"version": 0, "twin": {"serial": {"expected": null}}}),
        Some(&m),
    );
    assert_eq!(reason(e), (422, "read_only_property"));
    // Desired values are checked too.
    let e = update(
        json!({"version": 0, "twin": {"temp": {"expected": {"value": "1000"}}}}),
        Some(&m),
    );
    assert_eq!(reason(e), (422, "above_maximum"));
    // Without a model anything goes, and deletes of unknown properties are harmless.
    assert!(
        update(
            json!({"twin": {"anything": {"actual": {"value": "x"}}}}),
            None
        )
        .is_ok()
    );
    assert!(update(json!({"twin": {"humidity": null}}), Some(&m)).is_ok());
}

#[test]
fn nulls_delete() {
    let ev = update(
        json!({"twin": {
            "a": null,
            "b": {"actual": null},
            "c": {"actual": {"value": null}},
            "d": {"actual": {}},
            "e": {"expected": null},
            "f": {"expected": {"value": null, "metadata": {"timestamp": 5}}},
            "g": {"metadata": {"type": "int"}},
            "h": {"optional": true}
        }, "version": 3}),
        None,
    )
    .unwrap();
    let TwinEvent::EdgeUpdate {
        reported, desired, ..
    } = ev
    else {
        panic!("not an edge update")
    };
    let reported = reported.unwrap();
    assert_eq!(
        reported.version, None,
        "version belongs to the desired part"
    );
    assert_eq!(
        reported.props.keys().collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
    assert!(reported.props.values().all(Option::is_none));
    let desired = desired.unwrap();
    assert_eq!(desired.expected_version, Some(3));
    assert_eq!(
        desired.props,
        [("e".to_owned(), None), ("f".to_owned(), None)].into()
    );
}

#[test]
fn version_goes_to_reported_when_no_desired() {
    let ev = update(
        json!({"version": 7, "twin": {"a": {"actual": {"value": "1"}}}}),
        None,
    )
    .unwrap();
    let TwinEvent::EdgeUpdate {
        reported, desired, ..
    } = ev
    else {
        panic!("not an edge update")
    };
    assert_eq!(reported.unwrap().version, Some(7));
    assert!(desired.is_none());
    let ev = update(json!({"twin": {"a": {"expected": {"value": "1"}}}}), None).unwrap();
    let TwinEvent::EdgeUpdate { desired, .. } = ev else {
        panic!("not an edge update")
    };
    assert_eq!(
        desired,
        Some(DesiredWrite {
            props: [("a".to_owned(), w("1", None, None))].into(),
            expected_version: None
        })
    );
}

#[test]
fn types_and_timestamps() {
    // Payload type used without a model; unknown words ("Updated") ignored.
    let ev = update(
        json!({"timestamp": 50, "twin": {
            "a": {"actual": {"value": "1"}, "metadata": {"type": "FLOAT"}},
            "b": {"actual": {"value": "1", "metadata": {"timestamp": "60"}}, "metadata": {"type": "Updated"}}
        }}),
        None,
    )
    .unwrap();
    let TwinEvent::EdgeUpdate { reported, at, .. } = ev else {
        panic!("not an edge update")
    };
    assert_eq!(at, Stamp::new("", 50));
    let r = reported.unwrap();
    assert_eq!(r.props["a"], w("1", None, Some(PropertyType::Float)));
    assert_eq!(r.props["b"], w("1", Some(60), None));
    // With a model, the model's type wins over the payload's.
    let ev = update(
        json!({"twin": {"temp": {"actual": {"value": "5"}, "metadata": {"type": "string"}}}}),
        Some(&model()),
    )
    .unwrap();
    let TwinEvent::EdgeUpdate { reported, at, .. } = ev else {
        panic!("not an edge update")
    };
    assert_eq!(at.timestamp, 999, "no timestamp: now");
    assert_eq!(
        reported.unwrap().props["temp"].as_ref().unwrap().ty,
        Some(PropertyType::Int)
    );
}

#[test]
fn state_updates() {
    let ev = request_event(
        DeviceTopic::StateUpdate,
        br#"{"event_id":"s","timestamp":3,"state":"ONLINE"}"#,
        None,
        0,
    )
    .unwrap();
    assert_eq!(
        ev,
        TwinEvent::EdgeState {
            state: DeviceState::Online,
            at: Stamp::new("s", 3)
        }
    );
    let ev = request_event(DeviceTopic::StateUpdate, br#"{"state":"ok"}"#, None, 4).unwrap();
    assert_eq!(
        ev,
        TwinEvent::EdgeState {
            state: DeviceState::Other("ok".into()),
            at: Stamp::new("", 4)
        }
    );
    for bad in [&br#"{"state":""}"#[..], br#"{"state":"  "}"#, b"{}", b""] {
        let e = request_event(DeviceTopic::StateUpdate, bad, None, 0).unwrap_err();
        assert_eq!((e.code(), e.reason()), (400, "invalid_state"));
    }
    let long = format!(r#"{{"state":"{}"}}"#, "x".repeat(MAX_VALUE_LEN + 1));
    assert!(request_event(DeviceTopic::StateUpdate, long.as_bytes(), None, 0).is_err());
}

#[test]
fn gets_and_non_requests() {
    assert_eq!(
        request_event(DeviceTopic::TwinGet, b"", None, 7).unwrap(),
        TwinEvent::Get {
            at: Stamp::new("", 7)
        }
    );
    assert_eq!(
        request_event(
            DeviceTopic::TwinGet,
            br#"{"event_id":"g","timestamp":1}"#,
            None,
            7
        )
        .unwrap(),
        TwinEvent::Get {
            at: Stamp::new("g", 1)
        }
    );
    assert_eq!(
        request_event(DeviceTopic::TwinGet, br#"{"event_id":12}"#, None, 7).unwrap(),
        TwinEvent::Get {
            at: Stamp::new("12", 7)
        }
    );
    let e = request_event(DeviceTopic::TwinUpdateDelta, b"{}", None, 0).unwrap_err();
    assert_eq!((e.code(), e.reason()), (400, "not_a_request"));
}

#[test]
fn peek_event_id_is_best_effort() {
    assert_eq!(peek_event_id(br#"{"event_id":"abc","twin":5}"#), "abc");
    assert_eq!(peek_event_id(b"{garbage"), "");
    assert_eq!(peek_event_id(br#"{"event_id":5}"#), "");
}

#[test]
fn result_messages_serialise_like_kubeedge() {
    let err = PayloadError::UnknownProperty("x".into());
    let json = serde_json::to_value(ResultMsg::error("e", 1, &err)).unwrap();
    assert_eq!(
        json,
        json!({"event_id": "e", "timestamp": 1, "code": 404, "reason": "unknown_property",
               "message": "the device model has no property \"x\""})
    );
    let twin = MsgTwin {
        actual: Some(Some(TwinValueMsg::new("23", 5))),
        metadata: Some(TypeMetadata {
            ty: Some("int".into()),
        }),
        ..MsgTwin::default()
    };
    assert_eq!(
        serde_json::to_value(&twin).unwrap(),
        json!({"actual": {"value": "23", "metadata": {"timestamp": 5}}, "metadata": {"type": "int"}})
    );
    let doc = TwinDoc {
        last: None,
        current: Some(twin.clone()),
    };
    assert_eq!(
        serde_json::to_value(&doc).unwrap()["last"],
        serde_json::Value::Null
    );
    let back: MsgTwin = serde_json::from_value(serde_json::to_value(&twin).unwrap()).unwrap();
    assert_eq!(back, twin);
    assert!(ResultMsg::ok("a", 1).is_ok());
}

#[test]
fn kubeedge_version_pairs_are_accepted_and_ignored() {
    let ev = update(
        json!({"twin": {"a": {"actual": {"value": "1"}, "actual_version": {"cloud": 1, "edge": 2}, "expected_version": {"cloud": 0, "edge": 0}}}}),
        None,
    );
    assert!(ev.is_ok());
}

#[test]
fn edge_desired_booleans_are_normalised_like_cloud_ones() {
    let m = model();
    let desired_value = |v: &str| {
        let ev = update(
            json!({"version": 0, "twin": {"on": {"expected": {"value": v}}}}),
            Some(&m),
        )
        .unwrap();
        let TwinEvent::EdgeUpdate {
            desired: Some(d), ..
        } = ev
        else {
            panic!("no desired part")
        };
        d.props["on"].clone().unwrap().value
    };
    assert_eq!(desired_value("ON"), "true");
    assert_eq!(desired_value("off"), "false");
    assert_eq!(desired_value("1"), "true");
    assert_eq!(desired_value("False"), "false");
    let e = update(
        json!({"version": 0, "twin": {"on": {"expected": {"value": "maybe"}}}}),
        Some(&m),
    );
    assert_eq!(reason(e), (422, "type_mismatch"));
    // Reported values are kept as the device spelled them (compared by meaning).
    let ev = update(
        json!({"twin": {"on": {"actual": {"value": "1"}}}}),
        Some(&m),
    )
    .unwrap();
    let TwinEvent::EdgeUpdate {
        reported: Some(r), ..
    } = ev
    else {
        panic!("no reported part")
    };
    assert_eq!(r.props["on"].clone().unwrap().value, "1");
}

#[test]
fn int_spelt_as_an_integral_float_is_accepted_as_the_integer() {
    let m = model();
    let value = |ev: TwinEvent, desired: bool| match ev {
        TwinEvent::EdgeUpdate {
            reported,
            desired: d,
            ..
        } => {
            let props = if desired {
                d.unwrap().props
            } else {
                reported.unwrap().props
            };
            props["temp"].clone().unwrap().value
        }
        other => panic!("{other:?}"),
    };
    let ev = update(
        json!({"twin": {"temp": {"actual": {"value": "23.0"}}}}),
        Some(&m),
    );
    assert_eq!(value(ev.unwrap(), false), "23");
    let ev = update(
        json!({"version": 0, "twin": {"temp": {"expected": {"value": "42.00"}}}}),
        Some(&m),
    );
    assert_eq!(value(ev.unwrap(), true), "42");
    let e = update(
        json!({"twin": {"temp": {"actual": {"value": "23.5"}}}}),
        Some(&m),
    );
    assert_eq!(reason(e), (422, "type_mismatch"));
    let e = update(
        json!({"twin": {"temp": {"actual": {"value": "500.0"}}}}),
        Some(&m),
    );
    assert_eq!(reason(e), (422, "above_maximum"));
}
