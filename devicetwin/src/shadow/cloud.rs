//! Cloud-originated transition: the Device's desired values (cloud wins).

use std::collections::{BTreeMap, BTreeSet};

use super::view::same_value;
use super::{
    MAX_PROPERTIES, PropertyState, PropertyWrite, Shadow, Stamp, TwinAction, TwinError, TwinEvent,
};
use crate::model::check_value_len;
use crate::model::{DesiredRefusal, DeviceModelSpec, DeviceSpec, saturating_i64};
use crate::payload::MsgTwin;

impl TwinEvent {
    /// The `CloudDesired` event for a Device spec at `generation`: every property with a
    /// `desired` value, typed from the DeviceModel when given (else from the desired
    /// `metadata.type`), timestamped from `metadata.timestamp` (ms) when present.
    pub fn cloud_desired_from_spec(
        spec: &DeviceSpec,
        generation: u64,
        model: Option<&DeviceModelSpec>,
        at: Stamp,
    ) -> Self {
        let props = spec
            .properties
            .iter()
            .filter_map(|p| {
                let desired = p.desired.as_ref()?;
                let ty = model
                    .and_then(|m| m.property(&p.name))
                    .map(|mp| mp.ty)
                    .or_else(|| desired.metadata.get("type").and_then(|t| t.parse().ok()));
                let timestamp = desired
                    .metadata
                    .get("timestamp")
                    .and_then(|t| t.parse().ok());
                let write = PropertyWrite {
                    value: desired.value.clone(),
                    timestamp,
                    ty,
                };
                Some((p.name.clone(), write))
            })
            .collect();
        Self::CloudDesired {
            generation,
            props,
            at,
        }
    }

    /// Like [`TwinEvent::cloud_desired_from_spec`], but every desired value is first checked
    /// against the DeviceModel by the rules edge-originated writes follow (type, `minimum`,
    /// `maximum`, `ReadOnly`, value length) and normalised (`on` for a BOOLEAN is `true`).
    /// A refused value is left out of the event, and the property keeps the desired value
    /// `current` holds for it (the last valid one, if any): it is neither stored nor sent
    /// on in a delta or to a driver. The refusals are returned for `status.desiredRefusals`.
    /// Properties the model does not list are not checked (as without a model).
    pub fn cloud_desired_checked(
        spec: &DeviceSpec,
        generation: u64,
        model: Option<&DeviceModelSpec>,
        current: &Shadow,
        at: Stamp,
    ) -> (Self, Vec<DesiredRefusal>) {
        let mut event = Self::cloud_desired_from_spec(spec, generation, model, at);
        let mut refusals = Vec::new();
        let Self::CloudDesired { props, .. } = &mut event else {
            return (event, refusals);
        };
        // The same rules as edge-originated writes: `check_desired` with a model property,
        // the model-independent length limit without one.
        let check = |name: &str, value: &str| match model.and_then(|m| m.property(name)) {
            None => check_value_len(value).map(|()| value.to_owned()),
            Some(mp) => mp.check_desired(value),
        };
        let names: Vec<String> = props.keys().cloned().collect();
        for name in names {
            let Some(write) = props.get_mut(&name) else {
                continue;
            };
            let reason = match check(&name, &write.value) {
                Ok(value) => {
                    write.value = value;
                    continue;
                }
                Err(e) => e,
            };
            // The value in force stays only while it passes the model itself: after a
            // DeviceModel change it may not (see `TwinEvent::CloudRecheck`).
            let kept = current
                .desired
                .props
                .get(&name)
                .and_then(|k| Some((k, check(&name, &k.value).ok()?)));
            let message = match &kept {
                Some((_, v)) => format!(
                    "desired value {:?} of {name:?} refused: {reason}; {v:?} stays in force",
                    write.value
                ),
                None => format!(
                    "desired value {:?} of {name:?} refused: {reason}",
                    write.value
                ),
            };
            refusals.push(DesiredRefusal {
                property_name: name.clone(),
                value: write.value.clone(),
                reason: reason.reason().to_owned(),
                message,
                generation: Some(saturating_i64(generation)),
            });
            match kept {
                Some((k, value)) => {
                    *write = PropertyWrite {
                        value,
                        timestamp: Some(k.timestamp),
                        ty: write.ty.or(k.ty),
                    };
                }
                None => {
                    props.remove(&name);
                }
            }
        }
        (event, refusals)
    }

    /// A `CloudDesired` event as a `CloudRecheck` (the DeviceModel changed, the generation
    /// did not); any other event is returned unchanged.
    pub fn into_recheck(self) -> Self {
        match self {
            Self::CloudDesired {
                generation,
                props,
                at,
            } => Self::CloudRecheck {
                generation,
                props,
                at,
            },
            other => other,
        }
    }
}

impl Shadow {
    /// `recheck`: the same generation again under a changed DeviceModel (see
    /// [`TwinEvent::CloudRecheck`]).
    pub(super) fn cloud_desired(
        &mut self,
        generation: u64,
        props: BTreeMap<String, PropertyWrite>,
        at: Stamp,
        recheck: bool,
    ) -> Result<Vec<TwinAction>, TwinError> {
        if let Some(current) = self.observed_generation {
            if generation < current {
                return Err(TwinError::StaleGeneration {
                    current,
                    got: generation,
                });
            }
            if generation == current && !recheck {
                // Redelivery of what is already applied (edge writes may be on top of it).
                return Ok(Vec::new());
            }
        }
        if props.len() > MAX_PROPERTIES {
            return Err(TwinError::TooManyProperties);
        }

        let removed = self
            .desired
            .props
            .keys()
            .filter(|n| !props.contains_key(*n));
        let changed_values = props.iter().filter(|(n, w)| {
            self.desired
                .props
                .get(*n)
                .is_none_or(|c| !same_value(w.ty.or(c.ty), &w.value, &c.value))
        });
        let changed: BTreeSet<String> = removed
            .chain(changed_values.map(|(n, _)| n))
            .cloned()
            .collect();
        if recheck && changed.is_empty() && self.observed_generation == Some(generation) {
            return Ok(Vec::new());
        }
        let before: BTreeMap<String, Option<MsgTwin>> = changed
            .iter()
            .map(|n| (n.clone(), self.msg_twin(n)))
            .collect();

        let version = self.desired.version.max(generation);
        let mut next = BTreeMap::new();
        for (name, w) in props {
            let state = match self.desired.props.remove(&name) {
                Some(mut kept) if !changed.contains(&name) => {
                    kept.ty = w.ty.or(kept.ty);
                    kept
                }
                _ => PropertyState {
                    value: w.value,
                    timestamp: w.timestamp.unwrap_or(at.timestamp),
                    ty: w.ty,
                    version,
                },
            };
            next.insert(name, state);
        }
        self.desired.props = next;
        self.desired.version = version;
        self.observed_generation = Some(generation);

        let mut actions = Vec::new();
        if !changed.is_empty() {
            actions.push(self.document(&at, before));
            actions.extend(self.delta_action(&at));
            actions.extend(self.drive_actions(&changed));
        }
        actions.push(TwinAction::ReportUp(self.report()));
        Ok(actions)
    }
}
