//! Cloud desired values checked against the DeviceModel
//! ([`TwinEvent::cloud_desired_checked`]): refused values never reach the delta, a driver or
//! the stored desired section, the last valid value stays in force, and fixing the spec
//! clears the refusal.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::model::{AccessMode, DesiredRefusal, DeviceModelSpec, PropertyType};

fn model() -> DeviceModelSpec {
    DeviceModelSpec {
        properties: vec![
            ModelProperty {
                minimum: Some("-40".into()),
                maximum: Some("100".into()),
                ..ModelProperty::new("temp", PropertyType::Int)
            },
            ModelProperty::new("led", PropertyType::Boolean),
            ModelProperty {
                access_mode: Some(AccessMode::ReadOnly),
                ..ModelProperty::new("serial", PropertyType::String)
            },
            ModelProperty::new("label", PropertyType::String),
        ],
        ..Default::default()
    }
}

fn spec(desired: &[(&str, &str)]) -> DeviceSpec {
    let props: Vec<serde_json::Value> = ["temp", "led", "serial", "label"]
        .iter()
        .map(|n| match desired.iter().find(|(k, _)| k == n) {
            Some((_, v)) => serde_json::json!({"name": n, "desired": {"value": v}}),
            None => serde_json::json!({"name": n}),
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "properties": props })).unwrap()
}

/// Applies generation `g` of a spec with `desired` values to `s`; the actions and refusals.
fn apply(
    s: &mut Shadow,
    g: u64,
    desired: &[(&str, &str)],
) -> (Vec<TwinAction>, Vec<DesiredRefusal>) {
    let m = model();
    let (ev, refusals) =
        TwinEvent::cloud_desired_checked(&spec(desired), g, Some(&m), s, at("c", 100 + g as i64));
    (s.apply(ev).unwrap(), refusals)
}

fn reasons(r: &[DesiredRefusal]) -> Vec<(&str, &str, &str)> {
    r.iter()
        .map(|r| {
            (
                r.property_name.as_str(),
                r.value.as_str(),
                r.reason.as_str(),
            )
        })
        .collect()
}

fn deltas(actions: &[TwinAction]) -> Vec<BTreeMap<String, String>> {
    actions
        .iter()
        .filter_map(|a| match a {
            TwinAction::PublishDelta(d) => Some(d.delta.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn valid_values_pass_unchanged() {
    let mut s = Shadow::new();
    let (actions, refusals) = apply(&mut s, 1, &[("temp", "30"), ("label", "x")]);
    assert!(refusals.is_empty());
    assert_eq!(vals(s.desired()), [("label", "x"), ("temp", "30")]);
    assert_eq!(
        drives(&actions),
        [("label".into(), "x".into()), ("temp".into(), "30".into())]
    );
}

#[test]
fn each_invalid_value_is_refused_with_its_reason_and_not_forwarded() {
    for (prop, value, reason) in [
        ("temp", "abc", "type_mismatch"),
        ("temp", "2.5", "type_mismatch"),
        ("temp", "101", "above_maximum"),
        ("temp", "-41", "below_minimum"),
        ("led", "maybe", "type_mismatch"),
        ("serial", "X-1", "read_only_property"),
    ] {
        let mut s = Shadow::new();
        let (actions, refusals) = apply(&mut s, 1, &[(prop, value)]);
        assert_eq!(
            reasons(&refusals),
            [(prop, value, reason)],
            "{prop}={value}"
        );
        assert_eq!(refusals[0].generation, Some(1));
        assert!(
            refusals[0].message.contains(value),
            "{}",
            refusals[0].message
        );
        assert!(s.desired().get(prop).is_none(), "{prop}={value} stored");
        assert!(deltas(&actions).is_empty(), "{prop}={value} in a delta");
        assert!(drives(&actions).is_empty(), "{prop}={value} driven");
        assert!(s.report().desired.is_empty(), "{prop}={value} observed");
        // The generation is still applied: the edge did see this spec.
        assert_eq!(s.observed_generation(), Some(1));
    }
}

#[test]
fn over_long_value_is_refused() {
    let mut s = Shadow::new();
    let long = "x".repeat(crate::payload::MAX_VALUE_LEN + 1);
    let (_, refusals) = apply(&mut s, 1, &[("label", &long)]);
    assert_eq!(refusals[0].reason, "value_too_long");
    assert!(s.desired().get("label").is_none());
}

#[test]
fn the_last_valid_value_stays_in_force_and_a_fix_clears_the_refusal() {
    let mut s = Shadow::new();
    apply(&mut s, 1, &[("temp", "30"), ("label", "a")]);
    s.apply(report(&[("temp", Some("30"))], None, 150)).unwrap();
    let before = s.desired().get("temp").unwrap().clone();

    // Out of range, and another property changes in the same generation.
    let (actions, refusals) = apply(&mut s, 2, &[("temp", "150"), ("label", "b")]);
    assert_eq!(reasons(&refusals), [("temp", "150", "above_maximum")]);
    assert!(refusals[0].message.contains("\"30\" stays in force"));
    assert_eq!(s.desired().get("temp"), Some(&before));
    assert_eq!(drives(&actions), [("label".into(), "b".into())]);
    assert_eq!(
        deltas(&actions),
        [BTreeMap::from([("label".into(), "b".into())])]
    );
    assert_eq!(s.report().desired["temp"].value, "30");

    // Still invalid in the next generation: still refused, still 30.
    let (actions, refusals) = apply(&mut s, 3, &[("temp", "abc"), ("label", "b")]);
    assert_eq!(reasons(&refusals), [("temp", "abc", "type_mismatch")]);
    assert_eq!(s.desired().get("temp"), Some(&before));
    assert!(drives(&actions).is_empty());

    // Fixed: flows like any change.
    let (actions, refusals) = apply(&mut s, 4, &[("temp", "40"), ("label", "b")]);
    assert!(refusals.is_empty());
    assert_eq!(s.desired().get("temp").unwrap().value, "40");
    assert_eq!(drives(&actions), [("temp".into(), "40".into())]);
    assert_eq!(
        deltas(&actions),
        [BTreeMap::from([
            ("label".into(), "b".into()),
            ("temp".into(), "40".into())
        ])]
    );
}

#[test]
fn boolean_synonyms_are_stored_as_true_false_and_met_by_a_true_reading() {
    let mut s = Shadow::new();
    let (actions, refusals) = apply(&mut s, 1, &[("led", "ON")]);
    assert!(refusals.is_empty());
    assert_eq!(s.desired().get("led").unwrap().value, "true");
    assert_eq!(drives(&actions), [("led".into(), "true".into())]);
    assert_eq!(
        deltas(&actions),
        [BTreeMap::from([("led".into(), "true".into())])]
    );
    // The gpio driver reads a BOOLEAN pin as true/false: the delta clears.
    s.apply(report(&[("led", Some("true"))], None, 200))
        .unwrap();
    assert!(s.delta().is_empty());
    // "on" again (another generation) is the same value: nothing to drive.
    let (actions, _) = apply(&mut s, 2, &[("led", "on")]);
    assert!(drives(&actions).is_empty());
    assert!(deltas(&actions).is_empty());
    let (actions, _) = apply(&mut s, 3, &[("led", "off")]);
    assert_eq!(drives(&actions), [("led".into(), "false".into())]);
}

#[test]
fn without_a_model_nothing_is_checked() {
    let mut s = Shadow::new();
    let (ev, refusals) =
        TwinEvent::cloud_desired_checked(&spec(&[("temp", "abc")]), 1, None, &s, at("c", 1));
    assert!(refusals.is_empty());
    s.apply(ev).unwrap();
    assert_eq!(s.desired().get("temp").unwrap().value, "abc");
}

#[test]
fn refusals_serialise_in_the_status_and_clear_as_null() {
    let mut st = crate::model::DeviceStatus::default();
    let v = serde_json::to_value(&st).unwrap();
    assert!(v["desiredRefusals"].is_null());
    assert!(v.as_object().unwrap().contains_key("desiredRefusals"));
    let mut s = Shadow::new();
    let (_, refusals) = apply(&mut s, 7, &[("temp", "101")]);
    st.desired_refusals = Some(refusals);
    let v = serde_json::to_value(&st).unwrap();
    assert_eq!(v["desiredRefusals"][0]["propertyName"], "temp");
    assert_eq!(v["desiredRefusals"][0]["value"], "101");
    assert_eq!(v["desiredRefusals"][0]["reason"], "above_maximum");
    assert_eq!(v["desiredRefusals"][0]["generation"], 7);
    let back: crate::model::DeviceStatus = serde_json::from_value(v).unwrap();
    assert_eq!(back, st);
}
