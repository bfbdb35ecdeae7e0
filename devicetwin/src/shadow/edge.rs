//! Edge-originated transitions: `twin/update` (reported and desired) and `state/update`.

use std::collections::{BTreeMap, BTreeSet};

use super::view::same_value;
use super::{
    DesiredPatch, DesiredWrite, MAX_PROPERTIES, PropertyState, PropertyWrite, ReportedWrite,
    Section, SectionKind, Shadow, Stamp, StateReport, TwinAction, TwinError,
};
use crate::model::{DeviceState, rfc3339_from_millis};
use crate::payload::{MsgTwin, ResultMsg, StateInfo};
use crate::topic::DeviceTopic;

/// What a write does to one property of a section.
enum Change {
    /// Value set or changed.
    Set(PropertyWrite),
    /// Value removed.
    Remove,
    /// Same value: refresh timestamp (and type, if given) without a version bump. A
    /// reported value keeps the new spelling ("1.0" after "1"), so what readers see is
    /// what was last reported, yet spelling changes never bump versions or send deltas.
    Touch(PropertyWrite),
}

/// Sorts a write into value changes and touches; deletes of absent properties vanish.
fn plan(
    section: &Section,
    props: BTreeMap<String, Option<PropertyWrite>>,
) -> BTreeMap<String, Change> {
    props
        .into_iter()
        .filter_map(|(name, write)| {
            let current = section.props.get(&name);
            let change = match (write, current) {
                (None, None) => return None,
                (None, Some(_)) => Change::Remove,
                (Some(w), Some(c)) if same_value(w.ty.or(c.ty), &w.value, &c.value) => {
                    Change::Touch(w)
                }
                (Some(w), _) => Change::Set(w),
            };
            Some((name, change))
        })
        .collect()
}

fn changes_value(plan: &BTreeMap<String, Change>) -> bool {
    plan.values().any(|c| !matches!(c, Change::Touch(_)))
}

/// Property count after applying `plan`.
fn size_after(section: &Section, plan: &BTreeMap<String, Change>) -> usize {
    let mut n = section.props.len();
    for (name, c) in plan {
        match (c, section.props.contains_key(name)) {
            (Change::Set(_), false) => n += 1,
            (Change::Remove, true) => n = n.saturating_sub(1),
            _ => {}
        }
    }
    n
}

/// Applies a plan at `version` (the version changed values get).
fn commit(section: &mut Section, plan: BTreeMap<String, Change>, version: u64, now: i64) {
    for (name, change) in plan {
        match change {
            Change::Remove => {
                section.props.remove(&name);
            }
            Change::Set(w) => {
                let state = PropertyState {
                    value: w.value,
                    timestamp: w.timestamp.unwrap_or(now),
                    ty: w.ty,
                    version,
                };
                section.props.insert(name, state);
            }
            Change::Touch(w) => {
                if let Some(p) = section.props.get_mut(&name) {
                    p.value = w.value;
                    p.timestamp = w.timestamp.unwrap_or(now);
                    p.ty = w.ty.or(p.ty);
                }
            }
        }
    }
    section.version = version;
}

impl Shadow {
    pub(super) fn edge_update(
        &mut self,
        reported: Option<ReportedWrite>,
        desired: Option<DesiredWrite>,
        at: Stamp,
    ) -> Result<Vec<TwinAction>, TwinError> {
        let expected_version = desired.as_ref().and_then(|d| d.expected_version);
        let desired_plan = plan(&self.desired, desired.map(|d| d.props).unwrap_or_default());
        let reported_version = reported.as_ref().and_then(|r| r.version);
        let reported_plan = plan(
            &self.reported,
            reported.map(|r| r.props).unwrap_or_default(),
        );

        // Check everything before touching anything: the update is all or nothing.
        let desired_changed = changes_value(&desired_plan);
        if desired_changed {
            match expected_version {
                None => return Err(TwinError::VersionRequired),
                Some(v) if v != self.desired.version => {
                    return Err(TwinError::VersionConflict {
                        section: SectionKind::Desired,
                        current: self.desired.version,
                        got: v,
                    });
                }
                Some(_) => {}
            }
        }
        if let Some(v) = reported_version
            && v < self.reported.version
        {
            return Err(TwinError::VersionConflict {
                section: SectionKind::Reported,
                current: self.reported.version,
                got: v,
            });
        }
        if size_after(&self.desired, &desired_plan) > MAX_PROPERTIES
            || size_after(&self.reported, &reported_plan) > MAX_PROPERTIES
        {
            return Err(TwinError::TooManyProperties);
        }

        let touched: BTreeSet<String> = desired_plan
            .keys()
            .chain(reported_plan.keys())
            .cloned()
            .collect();
        let value_changed: BTreeSet<String> = desired_plan
            .iter()
            .chain(reported_plan.iter())
            .filter(|(_, c)| !matches!(c, Change::Touch(_)))
            .map(|(n, _)| n.clone())
            .collect();
        let before: BTreeMap<String, Option<MsgTwin>> = value_changed
            .iter()
            .map(|n| (n.clone(), self.msg_twin(n)))
            .collect();
        let desired_names: BTreeSet<String> = desired_plan
            .iter()
            .filter(|(_, c)| matches!(c, Change::Set(_)))
            .map(|(n, _)| n.clone())
            .collect();
        let patch_props: BTreeMap<String, Option<String>> = desired_plan
            .iter()
            .filter_map(|(n, c)| match c {
                Change::Set(w) => Some((n.clone(), Some(w.value.clone()))),
                Change::Remove => Some((n.clone(), None)),
                Change::Touch(_) => None,
            })
            .collect();
        let reported_written = !reported_plan.is_empty();

        // A desired write that restates the current value (a mapper echoing `expected`)
        // changes nothing, not even the timestamp the cloud set.
        let desired_plan = desired_plan
            .into_iter()
            .filter(|(_, c)| !matches!(c, Change::Touch(_)))
            .collect();
        let version = if desired_changed {
            self.desired.version.saturating_add(1)
        } else {
            self.desired.version
        };
        commit(&mut self.desired, desired_plan, version, at.timestamp);
        let mut version = self.reported.version;
        if changes_value(&reported_plan) {
            version = version.saturating_add(1).max(reported_version.unwrap_or(0));
        }
        commit(&mut self.reported, reported_plan, version, at.timestamp);

        let mut actions = vec![TwinAction::PublishResult {
            topic: DeviceTopic::TwinUpdateResult,
            msg: self.result(&at, &touched),
        }];
        if !before.is_empty() {
            actions.push(self.document(&at, before));
        }
        if desired_changed {
            actions.extend(self.delta_action(&at));
            actions.extend(self.drive_actions(&desired_names));
            actions.push(TwinAction::DesiredUp(DesiredPatch {
                version: self.desired.version,
                base_generation: self.observed_generation,
                props: patch_props,
            }));
        }
        if desired_changed || reported_written {
            actions.push(TwinAction::ReportUp(self.report()));
        }
        Ok(actions)
    }

    pub(super) fn edge_state(&mut self, state: DeviceState, at: Stamp) -> Vec<TwinAction> {
        let online = state == DeviceState::Online;
        if online {
            self.last_online = Some(at.timestamp);
        }
        self.state = Some(state.clone());
        let msg = ResultMsg {
            device: Some(StateInfo {
                state: state.to_string(),
                last_online: self.last_online.map(rfc3339_from_millis),
            }),
            ..ResultMsg::ok(at.event_id.clone(), at.timestamp)
        };
        vec![
            TwinAction::PublishResult {
                topic: DeviceTopic::StateUpdateResult,
                msg,
            },
            TwinAction::StateUp(StateReport {
                state,
                timestamp: at.timestamp,
                last_online: online.then_some(at.timestamp),
            }),
        ]
    }
}
