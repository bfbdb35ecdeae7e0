//! The message structs, field for field as KubeEdge's Go types serialise them, plus kedge's
//! optional version fields (skipped when absent, so KubeEdge mappers see familiar JSON).

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::ErrorCode;

/// `twin/update` request: `{"event_id","timestamp","twin":{...},"version"?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinUpdateMsg {
    /// Echoed in the result.
    #[serde(default, deserialize_with = "lenient_id")]
    pub event_id: String,
    /// Milliseconds since the epoch; absent means "when received".
    #[serde(
        default,
        deserialize_with = "lenient_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<i64>,
    /// Property name to its update; `null` deletes the reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<BTreeMap<String, Option<MsgTwin>>>,
    /// kedge: expected desired version (desired writes) or reported version (reports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// One property in a twin map (KubeEdge's `MsgTwin`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MsgTwin {
    /// Desired value. `Some(None)` is an explicit `null` (delete).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub expected: Option<Option<TwinValueMsg>>,
    /// Reported value. `Some(None)` is an explicit `null` (delete).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub actual: Option<Option<TwinValueMsg>>,
    /// KubeEdge's optional flag; carried, not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Value type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
    /// KubeEdge's `{cloud, edge}` version pair; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<Value>,
    /// KubeEdge's `{cloud, edge}` version pair; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<Value>,
}

/// A value with its timestamp.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinValueMsg {
    /// The value; `None` (absent or `null`) deletes.
    #[serde(
        default,
        deserialize_with = "lenient_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<String>,
    /// When the value was read or set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ValueMetadata>,
}

impl TwinValueMsg {
    /// A value stamped with `timestamp`.
    pub fn new(value: impl Into<String>, timestamp: i64) -> Self {
        Self {
            value: Some(value.into()),
            metadata: Some(ValueMetadata {
                timestamp: Some(timestamp),
            }),
        }
    }

    /// The value's timestamp, if any.
    pub fn timestamp(&self) -> Option<i64> {
        self.metadata.as_ref().and_then(|m| m.timestamp)
    }
}

/// `{"timestamp": ms}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMetadata {
    /// Milliseconds since the epoch.
    #[serde(
        default,
        deserialize_with = "lenient_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<i64>,
}

/// `{"type": "int"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeMetadata {
    /// Lower-case type name; free text from old mappers.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
}

/// `{"event_id","timestamp"}`: the body of `twin/get` and `membership/get` requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseMsg {
    /// Echoed in the result.
    #[serde(default, deserialize_with = "lenient_id")]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(
        default,
        deserialize_with = "lenient_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<i64>,
}

/// `state/update` request: `{"event_id","timestamp","state":"online"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateUpdateMsg {
    /// Echoed in the result.
    #[serde(default, deserialize_with = "lenient_id")]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(
        default,
        deserialize_with = "lenient_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<i64>,
    /// State word (`online`, `offline`, `unknown`, or a mapper's own).
    #[serde(default)]
    pub state: Option<String>,
}

/// A result on `twin/update/result`, `twin/get/result` or `state/update/result`:
/// `{"event_id","timestamp","code","reason"?,"message"?,"twin"?,...}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultMsg {
    /// The request's event id.
    #[serde(default)]
    pub event_id: String,
    /// When the result was made.
    #[serde(default)]
    pub timestamp: i64,
    /// 200 on success, else the [`ErrorCode::code`].
    #[serde(default)]
    pub code: u16,
    /// Stable machine reason on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The written properties (update) or the whole twin (get), as they now are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<BTreeMap<String, MsgTwin>>,
    /// kedge: the desired version after the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_version: Option<u64>,
    /// kedge: the reported version after the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_version: Option<u64>,
    /// The device state (state updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<StateInfo>,
}

impl ResultMsg {
    /// A success (code 200) with nothing else filled in.
    pub fn ok(event_id: impl Into<String>, timestamp: i64) -> Self {
        Self {
            event_id: event_id.into(),
            timestamp,
            code: 200,
            ..Self::default()
        }
    }

    /// A failure carrying `err`'s code, reason and text.
    pub fn error(event_id: impl Into<String>, timestamp: i64, err: &dyn ErrorCode) -> Self {
        Self {
            event_id: event_id.into(),
            timestamp,
            code: err.code(),
            reason: Some(err.reason().to_owned()),
            message: Some(err.to_string()),
            ..Self::default()
        }
    }

    /// Whether this is a success.
    pub fn is_ok(&self) -> bool {
        self.code == 200
    }
}

/// The device part of a state result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateInfo {
    /// The state word.
    pub state: String,
    /// RFC 3339 time last seen online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_online: Option<String>,
}

/// `twin/update/delta`: the whole twin and the desired values that differ from reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeltaMsg {
    /// Event id (that of the change that caused it).
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The whole twin.
    #[serde(default)]
    pub twin: BTreeMap<String, MsgTwin>,
    /// Property to desired value, for every property whose desired differs from reported.
    #[serde(default)]
    pub delta: BTreeMap<String, String>,
    /// kedge: the desired version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `twin/update/document`: before and after of each property a change touched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocumentMsg {
    /// Event id of the change.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// Property to before/after.
    #[serde(default)]
    pub twin: BTreeMap<String, TwinDoc>,
    /// kedge: the desired version after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_version: Option<u64>,
    /// kedge: the reported version after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_version: Option<u64>,
}

/// One property's before (`last`) and after (`current`); `null` where it did not exist.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinDoc {
    /// Before the change.
    pub last: Option<MsgTwin>,
    /// After the change.
    pub current: Option<MsgTwin>,
}

/// A device as listed in membership payloads. `id` is `ns/name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MembershipDevice {
    /// `ns/name`.
    pub id: String,
    /// `metadata.name`.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// State word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Last seen online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_online: Option<String>,
    /// KubeEdge device attributes; kedge sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, Value>>,
    /// The twin, when the bus includes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<BTreeMap<String, MsgTwin>>,
}

/// `membership/get/result`: every device bound to the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MembershipResultMsg {
    /// The request's event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The devices.
    #[serde(default)]
    pub devices: Vec<MembershipDevice>,
}

/// `membership/updated`: devices bound to or unbound from the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MembershipUpdatedMsg {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// Newly bound devices.
    #[serde(default)]
    pub added_devices: Vec<MembershipDevice>,
    /// Unbound devices.
    #[serde(default)]
    pub removed_devices: Vec<MembershipDevice>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A wire value: a string, or a number/boolean stringified; `null` is `None`.
fn lenient_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(D::Error::custom(
            "a twin value must be a string, number, boolean or null",
        )),
    }
}

/// Milliseconds: an integer, a float (truncated) or a numeric string; `null` is `None`.
fn lenient_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let bad = || D::Error::custom("a timestamp must be milliseconds since the epoch");
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() && f.abs() < 9.0e18 => Ok(Some(f as i64)),
            _ => Err(bad()),
        },
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// An event id: a string, or a number stringified; `null` is empty.
fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(D::Error::custom("event_id must be a string")),
    }
}
