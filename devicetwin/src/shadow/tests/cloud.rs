//! Cloud desired transitions.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;

#[test]
fn first_cloud_desired_sets_generation_and_drives() {
    let mut s = Shadow::new();
    let actions = s
        .apply(cloud(3, &[("temp", "30"), ("mode", "auto")], 100))
        .unwrap();
    assert_eq!(
        kinds(&actions),
        ["document", "delta", "drive", "drive", "report_up"]
    );
    assert_eq!(s.desired().version(), 3);
    assert_eq!(s.observed_generation(), Some(3));
    assert_eq!(vals(s.desired()), [("mode", "auto"), ("temp", "30")]);
    assert_eq!(s.desired().get("temp").unwrap().timestamp, 100);
    assert_eq!(s.desired().get("temp").unwrap().version, 3);
    let delta = delta_of(&actions);
    assert_eq!(
        delta.delta,
        BTreeMap::from([("mode".into(), "auto".into()), ("temp".into(), "30".into())])
    );
    assert_eq!(delta.version, Some(3));
    assert_eq!(delta.event_id, "cloud");
    let doc = find(&actions, |a| match a {
        TwinAction::PublishDocument(d) => Some(d.clone()),
        _ => None,
    });
    assert!(doc.twin["temp"].last.is_none());
    let cur = doc.twin["temp"].current.clone().unwrap();
    assert_eq!(cur.expected.unwrap().unwrap().value.as_deref(), Some("30"));
    assert!(cur.actual.is_none());
    let up = find(&actions, |a| match a {
        TwinAction::ReportUp(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(up, s.report());
}

#[test]
fn duplicate_generation_is_a_no_op() {
    let mut s = seeded();
    let before = s.clone();
    assert_eq!(s.apply(cloud(2, &[("temp", "99")], 500)).unwrap(), []);
    assert_eq!(s, before);
}

#[test]
fn stale_generation_is_refused() {
    let mut s = seeded();
    let before = s.clone();
    let err = s.apply(cloud(1, &[("temp", "99")], 500)).unwrap_err();
    assert_eq!(err, TwinError::StaleGeneration { current: 2, got: 1 });
    assert_eq!((err.code(), err.reason()), (409, "stale_generation"));
    assert_eq!(s, before);
}

#[test]
fn newer_generation_replaces_desired_and_keeps_unchanged_metadata() {
    let mut s = seeded();
    // temp unchanged (numerically the same for an untyped value? no: untyped compares as text,
    // so keep the same text), mode removed, fan added.
    let actions = s
        .apply(cloud(5, &[("temp", "30"), ("fan", "on")], 500))
        .unwrap();
    assert_eq!(vals(s.desired()), [("fan", "on"), ("temp", "30")]);
    assert_eq!(s.desired().version(), 5);
    let temp = s.desired().get("temp").unwrap();
    assert_eq!(
        (temp.timestamp, temp.version),
        (100, 2),
        "unchanged value keeps its stamp"
    );
    assert_eq!(s.desired().get("fan").unwrap().version, 5);
    let doc = find(&actions, |a| match a {
        TwinAction::PublishDocument(d) => Some(d.clone()),
        _ => None,
    });
    assert_eq!(doc.twin.keys().collect::<Vec<_>>(), ["fan", "mode"]);
    assert!(doc.twin["mode"].current.is_none());
    assert_eq!(drives(&actions), [("fan".into(), "on".into())]);
}

#[test]
fn newer_generation_without_value_changes_only_reports_up() {
    let mut s = seeded();
    let actions = s
        .apply(cloud(4, &[("temp", "30"), ("mode", "auto")], 500))
        .unwrap();
    assert_eq!(kinds(&actions), ["report_up"]);
    assert_eq!(s.desired().version(), 4);
    assert_eq!(s.observed_generation(), Some(4));
}

#[test]
fn cloud_change_already_met_by_reported_neither_drives_nor_deltas() {
    let mut s = Shadow::new();
    s.apply(report(&[("temp", Some("25"))], None, 1)).unwrap();
    let actions = s.apply(cloud(1, &[("temp", "25")], 2)).unwrap();
    assert_eq!(kinds(&actions), ["document", "report_up"]);
    assert!(s.delta().is_empty());
}

#[test]
fn cloud_wins_over_unsynced_edge_writes_and_versions_never_decrease() {
    let mut s = seeded(); // desired v2 at generation 2
    s.apply(desire(&[("temp", Some("31"))], Some(2), 200))
        .unwrap();
    s.apply(desire(&[("mode", Some("eco"))], Some(3), 210))
        .unwrap();
    assert_eq!(s.desired().version(), 4);
    // The cloud applied only the first edge write so far.
    let actions = s
        .apply(cloud(3, &[("temp", "31"), ("mode", "auto")], 300))
        .unwrap();
    assert_eq!(vals(s.desired()), [("mode", "auto"), ("temp", "31")]);
    assert_eq!(s.desired().version(), 4, "version does not go back to 3");
    assert_eq!(drives(&actions), [("mode".into(), "auto".into())]);
    // Then the second one: same version, content as the cloud has it.
    s.apply(cloud(4, &[("temp", "31"), ("mode", "eco")], 400))
        .unwrap();
    assert_eq!(s.desired().version(), 4);
    assert_eq!(vals(s.desired()), [("mode", "eco"), ("temp", "31")]);
    // And the generation overtakes again.
    s.apply(cloud(5, &[("temp", "20")], 500)).unwrap();
    assert_eq!(s.desired().version(), 5);
}
