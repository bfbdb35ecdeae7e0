//! Validation of request payloads and their conversion into shadow events.

use std::collections::BTreeMap;

use super::{
    BaseMsg, MAX_KEY_LEN, MAX_VALUE_LEN, MsgTwin, PayloadError, StateUpdateMsg, TwinUpdateMsg,
    TwinValueMsg,
};
use crate::model::{DeviceModelSpec, DeviceState, ModelProperty, check_value_len};
use crate::shadow::{DesiredWrite, PropertyWrite, ReportedWrite, Stamp, TwinEvent};

fn key_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.,:/@#".contains(c)
}

/// Checks a twin key: KubeEdge's character set, at most [`MAX_KEY_LEN`] characters.
pub(super) fn check_key(key: &str) -> Result<(), PayloadError> {
    let len = key.chars().count();
    if len > MAX_KEY_LEN {
        return Err(PayloadError::KeyTooLong { len });
    }
    if key.is_empty() || !key.chars().all(key_char_ok) {
        return Err(PayloadError::InvalidKey(key.to_owned()));
    }
    Ok(())
}

/// The model-independent value check ([`check_value_len`], the rule cloud desired values
/// follow too), as a payload error.
fn check_len(property: &str, value: &str) -> Result<(), PayloadError> {
    check_value_len(value).map_err(|e| PayloadError::from_value_error(property, value, e))
}

/// Model-independent checks: a `twin` object, valid keys, value lengths.
pub(super) fn check_shape(msg: &TwinUpdateMsg) -> Result<(), PayloadError> {
    let twin = msg.twin.as_ref().ok_or(PayloadError::MissingTwin)?;
    for (key, entry) in twin {
        check_key(key)?;
        let Some(entry) = entry else { continue };
        for side in [&entry.expected, &entry.actual] {
            if let Some(Some(TwinValueMsg { value: Some(v), .. })) = side {
                check_len(key, v)?;
            }
        }
    }
    Ok(())
}

/// The value a side writes: `None` if the side is absent, `Some(None)` for a delete.
fn side_value(side: &Option<Option<TwinValueMsg>>) -> Option<Option<&TwinValueMsg>> {
    match side {
        None => None,
        Some(None) => Some(None),
        Some(Some(v)) if v.value.is_none() => Some(None),
        Some(Some(v)) => Some(Some(v)),
    }
}

struct Checker<'a> {
    model: Option<&'a DeviceModelSpec>,
}

impl Checker<'_> {
    /// The model property (`None` without a model); 404 if the model lacks it.
    fn property(&self, key: &str) -> Result<Option<&ModelProperty>, PayloadError> {
        match self.model {
            None => Ok(None),
            Some(m) => m
                .property(key)
                .map(Some)
                .ok_or_else(|| PayloadError::UnknownProperty(key.to_owned())),
        }
    }

    fn write(
        &self,
        key: &str,
        entry: &MsgTwin,
        v: &TwinValueMsg,
        desired: bool,
    ) -> Result<PropertyWrite, PayloadError> {
        let mut value = v.value.clone().unwrap_or_default();
        check_len(key, &value)?;
        let prop = self.property(key)?;
        if let Some(p) = prop {
            // `on` for a BOOLEAN desired value is stored (and compared, and sent on) as
            // `true`; `23.0` for an INT, reported or desired, as `23`.
            value = if desired {
                p.normalize_desired(&value)
            } else {
                p.normalize_value(&value)
            };
            p.check_value(&value)
                .map_err(|e| PayloadError::from_value_error(key, &value, e))?;
        }
        let payload_ty = entry
            .metadata
            .as_ref()
            .and_then(|m| m.ty.as_deref())
            .and_then(|t| t.parse().ok());
        Ok(PropertyWrite {
            value,
            timestamp: v.timestamp(),
            ty: prop.map(|p| p.ty).or(payload_ty),
        })
    }
}

impl TwinUpdateMsg {
    /// Validates against `model` (when given) and builds the `EdgeUpdate` event. Run
    /// [`super::decode_twin_update`] first, or build the message yourself; both are checked.
    pub fn to_event(
        &self,
        model: Option<&DeviceModelSpec>,
        now_ms: i64,
    ) -> Result<TwinEvent, PayloadError> {
        check_shape(self)?;
        let checker = Checker { model };
        let mut reported = BTreeMap::new();
        let mut desired = BTreeMap::new();
        for (key, entry) in self.twin.iter().flatten() {
            let Some(entry) = entry else {
                reported.insert(key.clone(), None);
                continue;
            };
            match side_value(&entry.actual) {
                None => {}
                Some(None) => {
                    reported.insert(key.clone(), None);
                }
                Some(Some(v)) => {
                    reported.insert(key.clone(), Some(checker.write(key, entry, v, false)?));
                }
            }
            if let Some(side) = side_value(&entry.expected) {
                if let Some(p) = checker.property(key)?
                    && !p.is_writable()
                {
                    return Err(PayloadError::ReadOnly(key.clone()));
                }
                let write = side
                    .map(|v| checker.write(key, entry, v, true))
                    .transpose()?;
                desired.insert(key.clone(), write);
            }
        }
        let at = Stamp::new(self.event_id.clone(), self.timestamp.unwrap_or(now_ms));
        let writes_desired = !desired.is_empty();
        Ok(TwinEvent::EdgeUpdate {
            reported: (!reported.is_empty()).then_some(ReportedWrite {
                props: reported,
                version: if writes_desired { None } else { self.version },
            }),
            desired: writes_desired.then_some(DesiredWrite {
                props: desired,
                expected_version: self.version,
            }),
            at,
        })
    }
}

impl StateUpdateMsg {
    /// Builds the `EdgeState` event; the state must be a non-empty word of at most
    /// [`MAX_VALUE_LEN`] characters.
    pub fn to_event(&self, now_ms: i64) -> Result<TwinEvent, PayloadError> {
        let state = self
            .state
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.chars().count() <= MAX_VALUE_LEN)
            .ok_or(PayloadError::InvalidState)?;
        Ok(TwinEvent::EdgeState {
            state: DeviceState::parse(state),
            at: Stamp::new(self.event_id.clone(), self.timestamp.unwrap_or(now_ms)),
        })
    }
}

impl BaseMsg {
    /// Builds the `Get` event for a `twin/get` request.
    pub fn to_get_event(&self, now_ms: i64) -> TwinEvent {
        TwinEvent::Get {
            at: self.stamp(now_ms),
        }
    }

    /// The request's id and time (`now_ms` when it has none).
    pub fn stamp(&self, now_ms: i64) -> Stamp {
        Stamp::new(self.event_id.clone(), self.timestamp.unwrap_or(now_ms))
    }
}
