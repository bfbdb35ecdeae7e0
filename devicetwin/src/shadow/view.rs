//! Read-side helpers: comparing values, and rendering the shadow into payload messages.

use std::collections::{BTreeMap, BTreeSet};

use super::{PropertyState, Shadow, Stamp, TwinAction};
use crate::model::{PropertyType, parse_bool};
use crate::payload::{
    DeltaMsg, DocumentMsg, MsgTwin, ResultMsg, TwinDoc, TwinValueMsg, TypeMetadata,
};
use crate::topic::DeviceTopic;

/// Whether a desired value is met by a reported one.
pub(super) fn agrees(desired: &PropertyState, reported: Option<&PropertyState>) -> bool {
    reported.is_some_and(|r| same_value(desired.ty.or(r.ty), &desired.value, &r.value))
}

/// Value equality that knows types: numbers compare numerically, booleans by meaning,
/// everything else (and anything that does not parse) as strings.
pub(super) fn same_value(ty: Option<PropertyType>, a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match ty {
        // "1" and "1.0" are one integer: a driver or mapper may spell it either way.
        Some(PropertyType::Int) => match (a.parse::<i64>(), b.parse::<i64>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => same_number(a, b),
        },
        // FLOAT is single precision (a float32 register, KubeEdge's `float`): "25.7" written
        // reads back as 25.700000762939453, reported "25.700001"; both are one f32.
        Some(PropertyType::Float) => same_f32(a, b),
        Some(PropertyType::Double) => same_number(a, b),
        Some(PropertyType::Boolean) => match (parse_bool(a), parse_bool(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        _ => false,
    }
}

/// Both parse as finite numbers that round to the same `f32`.
fn same_f32(a: &str, b: &str) -> bool {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.is_finite() && y.is_finite() && (x as f32) == (y as f32),
        _ => false,
    }
}

/// Both parse as the same finite number.
fn same_number(a: &str, b: &str) -> bool {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.is_finite() && x == y,
        _ => false,
    }
}

fn value_msg(p: &PropertyState) -> Option<TwinValueMsg> {
    Some(TwinValueMsg::new(p.value.clone(), p.timestamp))
}

impl Shadow {
    /// One property in payload shape; `None` if neither section has it.
    pub(super) fn msg_twin(&self, name: &str) -> Option<MsgTwin> {
        let d = self.desired.props.get(name);
        let r = self.reported.props.get(name);
        if d.is_none() && r.is_none() {
            return None;
        }
        let ty = d.and_then(|p| p.ty).or_else(|| r.and_then(|p| p.ty));
        Some(MsgTwin {
            expected: d.map(value_msg),
            actual: r.map(value_msg),
            metadata: ty.map(|t| TypeMetadata {
                ty: Some(t.wire_name().to_owned()),
            }),
            ..MsgTwin::default()
        })
    }

    /// `msg_twin` for a set of names.
    pub(super) fn twins_for(&self, names: &BTreeSet<String>) -> BTreeMap<String, MsgTwin> {
        names
            .iter()
            .filter_map(|n| Some((n.clone(), self.msg_twin(n)?)))
            .collect()
    }

    /// A success result with the given properties and both versions.
    pub(super) fn result(&self, at: &Stamp, names: &BTreeSet<String>) -> ResultMsg {
        ResultMsg {
            twin: Some(self.twins_for(names)),
            desired_version: Some(self.desired.version),
            reported_version: Some(self.reported.version),
            ..ResultMsg::ok(at.event_id.clone(), at.timestamp)
        }
    }

    /// The document for `before` (property to its prior payload shape) against now.
    pub(super) fn document(
        &self,
        at: &Stamp,
        before: BTreeMap<String, Option<MsgTwin>>,
    ) -> TwinAction {
        let twin = before
            .into_iter()
            .map(|(name, last)| {
                let current = self.msg_twin(&name);
                (name, TwinDoc { last, current })
            })
            .collect();
        TwinAction::PublishDocument(DocumentMsg {
            event_id: at.event_id.clone(),
            timestamp: at.timestamp,
            twin,
            desired_version: Some(self.desired.version),
            reported_version: Some(self.reported.version),
        })
    }

    /// The delta message, if anything differs.
    pub(super) fn delta_action(&self, at: &Stamp) -> Option<TwinAction> {
        let delta = self.delta();
        if delta.is_empty() {
            return None;
        }
        Some(TwinAction::PublishDelta(DeltaMsg {
            event_id: at.event_id.clone(),
            timestamp: at.timestamp,
            twin: self.twin_view(),
            delta,
            version: Some(self.desired.version),
        }))
    }

    /// Drive actions for the named desired properties that differ from reported.
    pub(super) fn drive_actions(&self, names: &BTreeSet<String>) -> Vec<TwinAction> {
        names
            .iter()
            .filter_map(|n| {
                let d = self.desired.props.get(n)?;
                if agrees(d, self.reported.props.get(n)) {
                    return None;
                }
                Some(TwinAction::DriveDevice {
                    property: n.clone(),
                    value: d.value.clone(),
                    ty: d.ty,
                })
            })
            .collect()
    }

    /// `twin/get` answer: the whole twin.
    pub(super) fn get(&self, at: Stamp) -> TwinAction {
        let names = self
            .desired
            .props
            .keys()
            .chain(self.reported.props.keys())
            .cloned()
            .collect();
        TwinAction::PublishResult {
            topic: DeviceTopic::TwinGetResult,
            msg: self.result(&at, &names),
        }
    }
}
