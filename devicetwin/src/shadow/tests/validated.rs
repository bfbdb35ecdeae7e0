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

/// Re-checks generation `g` of a spec with `desired` values against `m` (the model changed).
fn recheck(
    s: &mut Shadow,
    m: &DeviceModelSpec,
    g: u64,
    desired: &[(&str, &str)],
) -> (Vec<TwinAction>, Vec<DesiredRefusal>) {
    let (ev, refusals) =
        TwinEvent::cloud_desired_checked(&spec(desired), g, Some(m), s, at("m", 500));
    (s.apply(ev.into_recheck()).unwrap(), refusals)
}

#[test]
fn a_lowered_maximum_refuses_the_desired_value_in_force_at_the_same_generation() {
    let mut s = Shadow::new();
    apply(&mut s, 1, &[("temp", "80"), ("label", "a")]);
    s.apply(report(&[("temp", Some("20"))], None, 150)).unwrap();
    let mut m = model();
    m.properties[0].maximum = Some("50".into());

    let (actions, refusals) = recheck(&mut s, &m, 1, &[("temp", "80"), ("label", "a")]);
    assert_eq!(reasons(&refusals), [("temp", "80", "above_maximum")]);
    // 80 is no longer in force (it is not valid itself): nothing to keep.
    assert!(s.desired().get("temp").is_none());
    assert!(!refusals[0].message.contains("stays in force"));
    assert!(drives(&actions).is_empty());
    assert!(!s.delta().contains_key("temp"));
    assert!(
        actions.iter().any(|a| matches!(a, TwinAction::ReportUp(_))),
        "{actions:?}"
    );
    assert_eq!(s.observed_generation(), Some(1));

    // The same model again changes nothing and says nothing.
    let (actions, _) = recheck(&mut s, &m, 1, &[("temp", "80"), ("label", "a")]);
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn a_raised_maximum_lets_a_refused_value_through_at_the_same_generation() {
    let mut s = Shadow::new();
    let (_, refusals) = apply(&mut s, 1, &[("temp", "150")]);
    assert_eq!(refusals.len(), 1);
    let mut m = model();
    m.properties[0].maximum = Some("200".into());

    let (actions, refusals) = recheck(&mut s, &m, 1, &[("temp", "150")]);
    assert!(refusals.is_empty());
    assert_eq!(s.desired().get("temp").unwrap().value, "150");
    assert_eq!(drives(&actions), [("temp".into(), "150".into())]);
    assert_eq!(
        deltas(&actions),
        [BTreeMap::from([("temp".into(), "150".into())])]
    );
}

#[test]
fn a_property_turned_read_only_or_retyped_is_refused_on_recheck() {
    let mut s = Shadow::new();
    apply(&mut s, 1, &[("temp", "30"), ("label", "x")]);
    let mut m = model();
    m.properties[0].access_mode = Some(AccessMode::ReadOnly);
    m.properties[3].ty = PropertyType::Int;
    let (_, refusals) = recheck(&mut s, &m, 1, &[("temp", "30"), ("label", "x")]);
    assert_eq!(
        reasons(&refusals),
        [
            ("label", "x", "type_mismatch"),
            ("temp", "30", "read_only_property")
        ]
    );
    assert!(s.desired().props().is_empty());
}

#[test]
fn a_recheck_of_an_older_generation_is_stale() {
    let mut s = Shadow::new();
    apply(&mut s, 2, &[("temp", "30")]);
    let (ev, _) = TwinEvent::cloud_desired_checked(&spec(&[]), 1, Some(&model()), &s, at("m", 1));
    assert!(matches!(
        s.apply(ev.into_recheck()),
        Err(TwinError::StaleGeneration { .. })
    ));
}

#[test]
fn int_desired_spelt_as_an_integral_float_is_normalised() {
    let mut s = Shadow::new();
    let (actions, refusals) = apply(&mut s, 1, &[("temp", "23.0")]);
    assert!(refusals.is_empty(), "{refusals:?}");
    assert_eq!(s.desired().get("temp").unwrap().value, "23");
    assert_eq!(drives(&actions), [("temp".into(), "23".into())]);
    let (_, refusals) = apply(&mut s, 2, &[("temp", "23.5")]);
    assert_eq!(reasons(&refusals), [("temp", "23.5", "type_mismatch")]);
}

#[test]
fn over_long_value_is_refused_by_the_model_check_too() {
    let long = "x".repeat(crate::payload::MAX_VALUE_LEN + 1);
    let label = ModelProperty::new("label", PropertyType::String);
    assert_eq!(
        label.check_desired(&long).map_err(|e| e.reason()),
        Err("value_too_long")
    );
    // And without a model, by the same rule.
    let s = Shadow::new();
    let (_, refusals) =
        TwinEvent::cloud_desired_checked(&spec(&[("label", &long)]), 1, None, &s, at("c", 1));
    assert_eq!(
        reasons(&refusals),
        [("label", long.as_str(), "value_too_long")]
    );
}
