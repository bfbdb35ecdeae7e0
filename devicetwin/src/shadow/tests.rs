#![allow(clippy::unwrap_used)]

//! Shared fixtures; the transition tests are in `cloud`, `edge` and `misc`.

mod cloud;
mod edge;
mod misc;
mod validated;

use std::collections::BTreeMap;

use super::*;
use crate::model::{DeviceSpec, ModelProperty};
use crate::payload::DeltaMsg;

pub(super) fn at(id: &str, ts: i64) -> Stamp {
    Stamp::new(id, ts)
}

pub(super) fn cloud(generation: u64, props: &[(&str, &str)], ts: i64) -> TwinEvent {
    TwinEvent::CloudDesired {
        generation,
        props: props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), PropertyWrite::new(*v)))
            .collect(),
        at: at("cloud", ts),
    }
}

pub(super) fn writes(props: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<PropertyWrite>> {
    props
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.map(PropertyWrite::new)))
        .collect()
}

pub(super) fn report(props: &[(&str, Option<&str>)], version: Option<u64>, ts: i64) -> TwinEvent {
    TwinEvent::edge_reported(writes(props), version, at("rep", ts))
}

pub(super) fn desire(props: &[(&str, Option<&str>)], expected: Option<u64>, ts: i64) -> TwinEvent {
    TwinEvent::EdgeUpdate {
        reported: None,
        desired: Some(DesiredWrite {
            props: writes(props),
            expected_version: expected,
        }),
        at: at("des", ts),
    }
}

pub(super) fn kinds(actions: &[TwinAction]) -> Vec<&'static str> {
    actions
        .iter()
        .map(|a| match a {
            TwinAction::PublishResult { .. } => "result",
            TwinAction::PublishDelta(_) => "delta",
            TwinAction::PublishDocument(_) => "document",
            TwinAction::DriveDevice { .. } => "drive",
            TwinAction::ReportUp(_) => "report_up",
            TwinAction::DesiredUp(_) => "desired_up",
            TwinAction::StateUp(_) => "state_up",
        })
        .collect()
}

pub(super) fn find<T>(actions: &[TwinAction], f: impl Fn(&TwinAction) -> Option<T>) -> T {
    actions.iter().find_map(f).unwrap()
}

pub(super) fn delta_of(actions: &[TwinAction]) -> DeltaMsg {
    find(actions, |a| match a {
        TwinAction::PublishDelta(d) => Some(d.clone()),
        _ => None,
    })
}

pub(super) fn drives(actions: &[TwinAction]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            TwinAction::DriveDevice {
                property, value, ..
            } => Some((property.clone(), value.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn vals(section: &Section) -> Vec<(&str, &str)> {
    section
        .props()
        .iter()
        .map(|(k, v)| (k.as_str(), v.value.as_str()))
        .collect()
}

/// A shadow with desired {temp: 30, mode: auto} at generation 2 and reported {temp: 25}.
pub(super) fn seeded() -> Shadow {
    let mut s = Shadow::new();
    s.apply(cloud(2, &[("temp", "30"), ("mode", "auto")], 100))
        .unwrap();
    s.apply(report(&[("temp", Some("25"))], None, 110)).unwrap();
    s
}
