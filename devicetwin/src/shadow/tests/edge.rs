//! Edge reported and desired transitions, and the delta.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;

#[test]
fn report_bumps_version_and_documents() {
    let mut s = seeded();
    let v = s.reported().version();
    let actions = s.apply(report(&[("temp", Some("27"))], None, 200)).unwrap();
    assert_eq!(kinds(&actions), ["result", "document", "report_up"]);
    assert_eq!(s.reported().version(), v + 1);
    let p = s.reported().get("temp").unwrap();
    assert_eq!(
        (p.value.as_str(), p.timestamp, p.version),
        ("27", 200, v + 1)
    );
    let TwinAction::PublishResult { topic, msg } = &actions[0] else {
        panic!("no result")
    };
    assert_eq!(*topic, DeviceTopic::TwinUpdateResult);
    assert_eq!((msg.code, msg.event_id.as_str()), (200, "rep"));
    assert_eq!(msg.reported_version, Some(v + 1));
    assert_eq!(msg.desired_version, Some(2));
    let twin = msg.twin.as_ref().unwrap();
    assert_eq!(twin.keys().collect::<Vec<_>>(), ["temp"]);
    assert_eq!(
        twin["temp"]
            .actual
            .clone()
            .unwrap()
            .unwrap()
            .value
            .as_deref(),
        Some("27")
    );
}

#[test]
fn same_value_report_refreshes_timestamp_without_bump() {
    let mut s = seeded();
    let v = s.reported().version();
    let actions = s.apply(report(&[("temp", Some("25"))], None, 300)).unwrap();
    assert_eq!(kinds(&actions), ["result", "report_up"]);
    assert_eq!(s.reported().version(), v);
    assert_eq!(s.reported().get("temp").unwrap().timestamp, 300);
}

#[test]
fn typed_values_compare_numerically() {
    let mut s = Shadow::new();
    let typed = |v: &str| PropertyWrite {
        value: v.into(),
        timestamp: None,
        ty: Some(crate::model::PropertyType::Double),
    };
    let props = BTreeMap::from([("t".to_owned(), typed("30"))]);
    s.apply(TwinEvent::CloudDesired {
        generation: 1,
        props,
        at: at("c", 1),
    })
    .unwrap();
    let props = BTreeMap::from([("t".to_owned(), Some(typed("30.0")))]);
    s.apply(TwinEvent::edge_reported(props, None, at("r", 2)))
        .unwrap();
    assert!(s.delta().is_empty());
    let v = s.reported().version();
    let props = BTreeMap::from([("t".to_owned(), Some(typed("3e1")))]);
    s.apply(TwinEvent::edge_reported(props, None, at("r", 3)))
        .unwrap();
    assert_eq!(s.reported().version(), v, "3e1 == 30.0: no change");
    // Booleans by meaning.
    assert!(view::same_value(
        Some(crate::model::PropertyType::Boolean),
        "1",
        "true"
    ));
    assert!(view::same_value(
        Some(crate::model::PropertyType::Int),
        "07",
        "7"
    ));
    assert!(!view::same_value(
        Some(crate::model::PropertyType::Int),
        "7",
        "x"
    ));
    assert!(!view::same_value(None, "1", "1.0"));
}

#[test]
fn a_new_spelling_of_a_reported_value_is_stored_without_a_bump() {
    let typed = |v: &str, ty| PropertyWrite {
        value: v.into(),
        timestamp: None,
        ty: Some(ty),
    };
    use crate::model::PropertyType::{Float, Int};
    let mut s = Shadow::new();
    let props = BTreeMap::from([("n".to_owned(), typed("1", Int))]);
    s.apply(TwinEvent::CloudDesired {
        generation: 1,
        props,
        at: at("c", 1),
    })
    .unwrap();
    for (i, (value, ty)) in [("1", Int), ("1.0", Int), ("1", Float), ("1.00", Float)]
        .into_iter()
        .enumerate()
    {
        let props = BTreeMap::from([("n".to_owned(), Some(typed(value, ty)))]);
        let ts = 10 + i64::try_from(i).unwrap();
        let actions = s
            .apply(TwinEvent::edge_reported(props, None, at("r", ts)))
            .unwrap();
        let version = s.reported().version();
        assert_eq!(version, 1, "{value}: only the first report bumps");
        assert!(s.delta().is_empty(), "{value}: no delta, so no write");
        assert!(
            !kinds(&actions).contains(&"drive") && !kinds(&actions).contains(&"delta"),
            "{value}: {actions:?}"
        );
        let stored = s.reported().get("n").unwrap();
        assert_eq!((stored.value.as_str(), stored.timestamp), (value, ts));
    }
    assert!(!view::same_value(Some(Int), "1", "1.5"));
    assert!(!view::same_value(Some(Float), "NaN", "nan"));
}

#[test]
fn reported_versions() {
    let mut s = seeded();
    let v = s.reported().version(); // 1
    let err = s
        .apply(report(&[("temp", Some("1"))], Some(v - 1), 1))
        .unwrap_err();
    assert_eq!(
        err,
        TwinError::VersionConflict {
            section: SectionKind::Reported,
            current: v,
            got: v - 1
        }
    );
    assert_eq!((err.code(), err.reason()), (409, "version_conflict"));
    s.apply(report(&[("temp", Some("2"))], Some(v), 2)).unwrap();
    assert_eq!(
        s.reported().version(),
        v + 1,
        "equal version: accepted, bumped"
    );
    s.apply(report(&[("temp", Some("3"))], Some(10), 3))
        .unwrap();
    assert_eq!(
        s.reported().version(),
        10,
        "a writer's higher version is adopted"
    );
    s.apply(report(&[("temp", Some("4"))], None, 4)).unwrap();
    assert_eq!(s.reported().version(), 11);
    assert!(s.apply(report(&[("temp", Some("5"))], Some(9), 5)).is_err());
    assert_eq!(s.reported().get("temp").unwrap().value, "4");
}

#[test]
fn null_deletes_reported() {
    let mut s = seeded();
    let v = s.reported().version();
    let actions = s.apply(report(&[("temp", None)], None, 5)).unwrap();
    assert!(s.reported().get("temp").is_none());
    assert_eq!(s.reported().version(), v + 1);
    let doc = find(&actions, |a| match a {
        TwinAction::PublishDocument(d) => Some(d.clone()),
        _ => None,
    });
    assert!(doc.twin["temp"].last.clone().unwrap().actual.is_some());
    assert!(doc.twin["temp"].current.clone().unwrap().actual.is_none());
    // Deleting what is not there changes nothing.
    let actions = s.apply(report(&[("ghost", None)], None, 6)).unwrap();
    assert_eq!(kinds(&actions), ["result"]);
    assert_eq!(s.reported().version(), v + 1);
}

// ---- delta ----

#[test]
fn delta_rules() {
    let mut s = seeded();
    assert_eq!(
        s.delta(),
        BTreeMap::from([("mode".into(), "auto".into()), ("temp".into(), "30".into())])
    );
    s.apply(report(
        &[("temp", Some("30")), ("extra", Some("1"))],
        None,
        5,
    ))
    .unwrap();
    assert_eq!(
        s.delta(),
        BTreeMap::from([("mode".into(), "auto".into())]),
        "reported-only props are not in the delta"
    );
    s.apply(report(&[("mode", Some("auto"))], None, 6)).unwrap();
    assert!(s.delta().is_empty());
    s.apply(report(&[("mode", Some("off"))], None, 7)).unwrap();
    assert_eq!(s.delta().len(), 1);
}

// ---- edge desired ----

#[test]
fn edge_desired_requires_matching_version() {
    let mut s = seeded();
    let before = s.clone();
    let err = s
        .apply(desire(&[("temp", Some("31"))], None, 1))
        .unwrap_err();
    assert_eq!((err.code(), err.reason()), (428, "version_required"));
    let err = s
        .apply(desire(&[("temp", Some("31"))], Some(1), 1))
        .unwrap_err();
    assert_eq!(
        err,
        TwinError::VersionConflict {
            section: SectionKind::Desired,
            current: 2,
            got: 1
        }
    );
    let err = s
        .apply(desire(&[("temp", Some("31"))], Some(3), 1))
        .unwrap_err();
    assert_eq!(err.code(), 409);
    assert_eq!(s, before);
}

#[test]
fn edge_desired_write_syncs_up_and_drives() {
    let mut s = seeded();
    let actions = s
        .apply(desire(&[("temp", Some("31")), ("mode", None)], Some(2), 50))
        .unwrap();
    assert_eq!(
        kinds(&actions),
        [
            "result",
            "document",
            "delta",
            "drive",
            "desired_up",
            "report_up"
        ]
    );
    assert_eq!(s.desired().version(), 3);
    assert_eq!(vals(s.desired()), [("temp", "31")]);
    assert_eq!(
        s.observed_generation(),
        Some(2),
        "only the cloud moves the generation"
    );
    let up = find(&actions, |a| match a {
        TwinAction::DesiredUp(p) => Some(p.clone()),
        _ => None,
    });
    assert_eq!(
        up,
        DesiredPatch {
            version: 3,
            base_generation: Some(2),
            props: BTreeMap::from([("mode".into(), None), ("temp".into(), Some("31".into()))]),
        }
    );
    assert_eq!(drives(&actions), [("temp".into(), "31".into())]);
    assert_eq!(
        delta_of(&actions).delta,
        BTreeMap::from([("temp".into(), "31".into())])
    );
    // The cloud echoes the patch as generation 3: nothing more to do.
    let actions = s.apply(cloud(3, &[("temp", "31")], 60)).unwrap();
    assert_eq!(kinds(&actions), ["report_up"]);
    assert_eq!(s.desired().version(), 3);
}

#[test]
fn echoed_desired_needs_no_version() {
    let mut s = seeded();
    let before = s.desired().clone();
    let actions = s
        .apply(desire(&[("temp", Some("30")), ("ghost", None)], None, 999))
        .unwrap();
    assert_eq!(kinds(&actions), ["result"]);
    assert_eq!(s.desired(), &before, "not even the timestamp moves");
}

#[test]
fn mixed_update_is_atomic() {
    let mut s = seeded();
    let before = s.clone();
    let bad = TwinEvent::EdgeUpdate {
        reported: Some(ReportedWrite {
            props: writes(&[("temp", Some("29"))]),
            version: None,
        }),
        desired: Some(DesiredWrite {
            props: writes(&[("temp", Some("31"))]),
            expected_version: Some(7),
        }),
        at: at("m", 1),
    };
    assert!(s.apply(bad).is_err());
    assert_eq!(s, before, "the reported half was not applied");
    let good = TwinEvent::EdgeUpdate {
        reported: Some(ReportedWrite {
            props: writes(&[("temp", Some("31"))]),
            version: None,
        }),
        desired: Some(DesiredWrite {
            props: writes(&[("temp", Some("31"))]),
            expected_version: Some(2),
        }),
        at: at("m", 2),
    };
    let actions = s.apply(good).unwrap();
    // temp is met at once, so it is not driven; the delta still lists mode.
    assert_eq!(
        kinds(&actions),
        ["result", "document", "delta", "desired_up", "report_up"]
    );
    assert_eq!(
        delta_of(&actions).delta,
        BTreeMap::from([("mode".into(), "auto".into())])
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, TwinAction::PublishResult { .. }))
            .count(),
        1
    );
}

#[test]
fn a_float_desired_value_is_met_by_its_single_precision_read_back() {
    use crate::model::PropertyType::{Double, Float};
    // A Modbus float32 register written with "25.7" reads back as 25.700000762939453,
    // which a driver (or KubeEdge's mapper, six decimals) reports as "25.700001".
    assert!(view::same_value(Some(Float), "25.7", "25.700001"));
    assert!(view::same_value(Some(Float), "0.1", "0.100000"));
    assert!(!view::same_value(Some(Float), "25.7", "25.71"));
    assert!(!view::same_value(Some(Float), "25.7", "x"));
    // DOUBLE stays exact.
    assert!(!view::same_value(Some(Double), "25.7", "25.700001"));
    let mut s = Shadow::new();
    let mut desired = BTreeMap::new();
    desired.insert(
        "sp".to_owned(),
        PropertyWrite {
            value: "25.7".into(),
            timestamp: None,
            ty: Some(Float),
        },
    );
    s.apply(TwinEvent::CloudDesired {
        generation: 1,
        props: desired,
        at: Stamp::new("c", 1),
    })
    .unwrap();
    let read_back = PropertyWrite {
        value: "25.700001".into(),
        timestamp: None,
        ty: Some(Float),
    };
    s.apply(TwinEvent::edge_reported(
        BTreeMap::from([("sp".to_owned(), Some(read_back))]),
        None,
        Stamp::new("r", 2),
    ))
    .unwrap();
    assert!(s.delta().is_empty(), "{:?}", s.delta());
}
