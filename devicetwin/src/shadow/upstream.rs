//! What the edge sends up to cloudcore through its outbox, and how cloudcore applies it.
//! These types are serialisable so they can ride in the outbox and on the wire as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::PropertyState;
use crate::model::DeviceState;

/// A snapshot of the shadow for `Device.status` (see
/// [`crate::model::DeviceStatus::apply_report`]). Snapshots coalesce by replacement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinReport {
    /// The generation whose desired values the edge applied.
    pub observed_generation: Option<u64>,
    /// Desired section version.
    pub desired_version: u64,
    /// Reported section version.
    pub reported_version: u64,
    /// Desired values as the edge holds them.
    pub desired: BTreeMap<String, PropertyState>,
    /// Reported values.
    pub reported: BTreeMap<String, PropertyState>,
}

/// The device's connection state for `Device.status` (see
/// [`crate::model::DeviceStatus::apply_state`]). Latest wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReport {
    /// The state.
    pub state: DeviceState,
    /// When it was reported (ms).
    pub timestamp: i64,
    /// Set when the state is `online`: the new last-online time (ms).
    pub last_online: Option<i64>,
}

/// Desired values written at the edge, for cloudcore to put into the Device spec (which
/// bumps `metadata.generation`; the edge's desired version predicted that bump).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredPatch {
    /// The edge's desired version after the write(s).
    pub version: u64,
    /// The cloud generation the edge had applied when it wrote (for conflict diagnostics).
    pub base_generation: Option<u64>,
    /// Only the properties the write(s) changed; `None` removes the desired value.
    pub props: BTreeMap<String, Option<String>>,
}

/// Why a patch could not be applied to a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The spec is not a JSON object.
    #[error("the Device spec is not an object")]
    SpecNotObject,
    /// `spec.properties` exists but is not a list of objects.
    #[error("spec.properties is not a list of objects")]
    PropertiesNotList,
}

impl DesiredPatch {
    /// Folds a later patch into this one (later values win per property), for outbox
    /// coalescing. Replacing instead would lose the earlier patch's properties.
    pub fn merge(&mut self, later: DesiredPatch) {
        self.version = self.version.max(later.version);
        self.base_generation = match (self.base_generation, later.base_generation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.props.extend(later.props);
    }

    /// Applies the patch to a Device's raw JSON `spec` in place, keeping every field kedge
    /// does not model. Sets `properties[name].desired.value` (keeping its `metadata`) or
    /// removes `desired`. Returns the names the spec has no property for; those are skipped,
    /// since a Device property also carries visitors only the user can supply.
    pub fn apply_to_spec(&self, spec: &mut Value) -> Result<Vec<String>, PatchError> {
        let spec = spec.as_object_mut().ok_or(PatchError::SpecNotObject)?;
        let mut missing = Vec::new();
        let Some(list) = spec.get_mut("properties") else {
            missing.extend(self.props.keys().cloned());
            return Ok(missing);
        };
        let list = list.as_array_mut().ok_or(PatchError::PropertiesNotList)?;
        if list.iter().any(|p| !p.is_object()) {
            return Err(PatchError::PropertiesNotList);
        }
        for (name, value) in &self.props {
            let entry = list
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name));
            let Some(entry) = entry else {
                missing.push(name.clone());
                continue;
            };
            match value {
                None => {
                    entry.remove("desired");
                }
                Some(v) => {
                    let desired = entry
                        .entry("desired")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !desired.is_object() {
                        *desired = Value::Object(Map::new());
                    }
                    if let Some(obj) = desired.as_object_mut() {
                        obj.insert("value".to_owned(), Value::String(v.clone()));
                    }
                }
            }
        }
        Ok(missing)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn patch(version: u64, base: Option<u64>, props: &[(&str, Option<&str>)]) -> DesiredPatch {
        DesiredPatch {
            version,
            base_generation: base,
            props: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn merge_keeps_earlier_properties() {
        let mut a = patch(3, Some(2), &[("a", Some("1")), ("b", Some("2"))]);
        a.merge(patch(4, Some(3), &[("b", None), ("c", Some("3"))]));
        assert_eq!(
            a,
            patch(
                4,
                Some(2),
                &[("a", Some("1")), ("b", None), ("c", Some("3"))]
            )
        );
        let mut n = patch(1, None, &[]);
        n.merge(patch(2, Some(5), &[]));
        assert_eq!(n.base_generation, Some(5));
    }

    #[test]
    fn apply_to_spec_preserves_unknown_fields() {
        let mut spec = json!({
            "nodeName": "n", "future": {"x": 1},
            "properties": [
                {"name": "a", "desired": {"value": "1", "metadata": {"type": "int"}}, "visitors": {"protocolName": "gpio"}},
                {"name": "b"},
                {"name": "c", "desired": {"value": "x"}},
                {"name": "d", "desired": "garbage"}
            ]
        });
        let missing = patch(
            2,
            Some(1),
            &[
                ("a", Some("5")),
                ("b", Some("7")),
                ("c", None),
                ("d", Some("1")),
                ("zz", Some("0")),
            ],
        )
        .apply_to_spec(&mut spec)
        .unwrap();
        assert_eq!(missing, ["zz"]);
        assert_eq!(spec["future"]["x"], 1);
        assert_eq!(
            spec["properties"][0]["desired"],
            json!({"value": "5", "metadata": {"type": "int"}})
        );
        assert_eq!(spec["properties"][0]["visitors"]["protocolName"], "gpio");
        assert_eq!(spec["properties"][1]["desired"], json!({"value": "7"}));
        assert!(spec["properties"][2].get("desired").is_none());
        assert_eq!(spec["properties"][3]["desired"], json!({"value": "1"}));
    }

    #[test]
    fn apply_to_odd_specs() {
        let p = patch(1, None, &[("a", Some("1"))]);
        assert_eq!(
            p.apply_to_spec(&mut json!([])),
            Err(PatchError::SpecNotObject)
        );
        assert_eq!(
            p.apply_to_spec(&mut json!({"properties": {}})),
            Err(PatchError::PropertiesNotList)
        );
        assert_eq!(
            p.apply_to_spec(&mut json!({"properties": [1]})),
            Err(PatchError::PropertiesNotList)
        );
        assert_eq!(p.apply_to_spec(&mut json!({})).unwrap(), ["a"]);
    }
}
