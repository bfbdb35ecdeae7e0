//! Device status: the twin as cloudcore last wrote it from the edge's reports.
//!
//! cloudcore owns these writes (through the status subresource): it receives
//! [`TwinReport`]s and [`StateReport`]s from the edge's outbox and folds them in with
//! [`DeviceStatus::apply_report`] / [`DeviceStatus::apply_state`].

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::shadow::{PropertyState, StateReport, TwinReport};

/// `Device.status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceStatus {
    /// One entry per property the edge reported or holds a desired value for, by name.
    pub twins: Vec<Twin>,
    /// Connection state last reported by the edge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<DeviceState>,
    /// RFC 3339 time the device was last seen online.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_online_time: Option<String>,
    /// The `metadata.generation` whose desired values the edge has applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The edge's reported-section version at the last write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_version: Option<i64>,
    /// Why the edge cannot serve the device (for example invalid protocol settings), with
    /// `state: config-error`. Always serialised, as `null` when there is nothing to say, so
    /// the merge patch the edge sends clears an old message.
    pub message: Option<String>,
    /// The node whose edge wrote this status. When a Device is moved to another node, the
    /// new edge sees another node's name here and takes the status over instead of
    /// carrying on from the old edge's state and reported values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Desired values in the Device's spec that the edge refused (wrong type, out of the
    /// DeviceModel's range, a ReadOnly property): not applied, not sent to the device; the
    /// last valid desired value stays in force. Always serialised, as `null` when nothing
    /// is refused, so the merge patch the edge sends clears old refusals.
    pub desired_refusals: Option<Vec<DesiredRefusal>>,
}

/// A desired value of `Device.spec.properties[]` that the edge refused
/// (`status.desiredRefusals[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DesiredRefusal {
    /// Property name.
    pub property_name: String,
    /// The refused value, as written in the spec.
    pub value: String,
    /// Stable reason: `type_mismatch`, `below_minimum`, `above_maximum`,
    /// `read_only_property` or `value_too_long` (the edge's MQTT result reasons).
    pub reason: String,
    /// Human-readable explanation.
    pub message: String,
    /// The `metadata.generation` whose spec carried the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

impl DeviceStatus {
    /// Replaces the twins, `observedGeneration` and `reportedVersion` with what the edge's
    /// shadow held when it made `report`. Reports are snapshots, so the latest one delivered
    /// wins; the edge's outbox delivers one device's reports in order.
    pub fn apply_report(&mut self, report: &TwinReport) {
        let names: BTreeSet<&String> = report
            .reported
            .keys()
            .chain(report.desired.keys())
            .collect();
        self.twins = names
            .into_iter()
            .map(|name| Twin {
                property_name: name.clone(),
                reported: report.reported.get(name).map(TwinValue::from_state),
                observed_desired: report.desired.get(name).map(TwinValue::from_state),
            })
            .collect();
        self.observed_generation = report.observed_generation.map(saturating_i64);
        self.reported_version = Some(saturating_i64(report.reported_version));
    }

    /// Sets `state` and, when the report carries one, `lastOnlineTime`.
    pub fn apply_state(&mut self, report: &StateReport) {
        self.state = Some(report.state.clone());
        if let Some(ms) = report.last_online {
            self.last_online_time = Some(rfc3339_from_millis(ms));
        }
    }

    /// The twin entry for `property`.
    pub fn twin(&self, property: &str) -> Option<&Twin> {
        self.twins.iter().find(|t| t.property_name == property)
    }
}

pub(crate) fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One property in `status.twins[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Twin {
    /// Property name.
    pub property_name: String,
    /// Last value the device reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<TwinValue>,
    /// Desired value as the edge holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_desired: Option<TwinValue>,
}

/// A value with its metadata and the section version at which it was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TwinValue {
    /// The value as a string.
    pub value: String,
    /// Timestamp and type.
    pub metadata: TwinMetadata,
    /// Section version at which the value last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

impl TwinValue {
    fn from_state(s: &PropertyState) -> Self {
        Self {
            value: s.value.clone(),
            metadata: TwinMetadata {
                timestamp: Some(s.timestamp.to_string()),
                ty: s.ty.map(|t| t.wire_name().to_owned()),
            },
            version: Some(saturating_i64(s.version)),
        }
    }
}

/// Value metadata. `timestamp` is milliseconds since the Unix epoch as a decimal string, the
/// way KubeEdge writes its string-map twin metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TwinMetadata {
    /// Milliseconds since the epoch, decimal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Lower-case type name (`int`, `float`, ...).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
}

impl TwinMetadata {
    /// The timestamp as milliseconds, if it parses.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp.as_deref()?.parse().ok()
    }
}

/// Connection state of a device. Mappers use more words than these three (`ok`,
/// `disconnected`, `unhealthy`...); those are kept verbatim in [`DeviceState::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// Reachable; refreshes `lastOnlineTime`.
    Online,
    /// Known to be unreachable.
    Offline,
    /// Not known (for example the edge node itself is offline).
    Unknown,
    /// Any other word a mapper reports.
    Other(String),
}

impl DeviceState {
    /// Parses a state word; `online`/`offline`/`unknown` case-insensitively.
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "online" => Self::Online,
            "offline" => Self::Offline,
            "unknown" => Self::Unknown,
            _ => Self::Other(s.to_owned()),
        }
    }

    /// The word as written to status and payloads.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Unknown => "unknown",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DeviceState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeviceState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// Formats milliseconds since the Unix epoch as an RFC 3339 UTC time with second precision
/// (`2024-05-01T12:00:00Z`), the form Kubernetes uses for timestamps.
pub fn rfc3339_from_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::PropertyType;

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_from_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_millis(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_from_millis(1_700_000_000_999),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(rfc3339_from_millis(-1), "1969-12-31T23:59:59Z");
        // Extremes do not panic.
        let _ = rfc3339_from_millis(i64::MIN);
        let _ = rfc3339_from_millis(i64::MAX);
    }

    #[test]
    fn state_words() {
        assert_eq!(DeviceState::parse("ONLINE"), DeviceState::Online);
        assert_eq!(DeviceState::parse("ok"), DeviceState::Other("ok".into()));
        let s: DeviceState = serde_json::from_str("\"offline\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"offline\"");
        assert_eq!(DeviceState::Other("x".into()).to_string(), "x");
    }

    #[test]
    fn apply_report_and_state() {
        let prop = |v: &str, ver| PropertyState {
            value: v.into(),
            timestamp: 1_000,
            ty: Some(PropertyType::Int),
            version: ver,
        };
        let report = TwinReport {
            observed_generation: Some(3),
            desired_version: 3,
            reported_version: 9,
            desired: [("a".to_owned(), prop("1", 3))].into(),
            reported: [
                ("a".to_owned(), prop("2", 9)),
                ("b".to_owned(), prop("5", 4)),
            ]
            .into(),
        };
        let mut status = DeviceStatus::default();
        status.apply_report(&report);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.reported_version, Some(9));
        assert_eq!(status.twins.len(), 2);
        let a = status.twin("a").unwrap();
        assert_eq!(a.reported.as_ref().unwrap().value, "2");
        assert_eq!(a.observed_desired.as_ref().unwrap().version, Some(3));
        assert_eq!(
            a.reported.as_ref().unwrap().metadata.ty.as_deref(),
            Some("int")
        );
        assert_eq!(
            a.reported.as_ref().unwrap().metadata.timestamp_ms(),
            Some(1_000)
        );
        assert!(status.twin("b").unwrap().observed_desired.is_none());

        status.apply_state(&StateReport {
            state: DeviceState::Online,
            timestamp: 5,
            last_online: Some(0),
        });
        assert_eq!(status.state, Some(DeviceState::Online));
        assert_eq!(
            status.last_online_time.as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        status.apply_state(&StateReport {
            state: DeviceState::Offline,
            timestamp: 6,
            last_online: None,
        });
        assert_eq!(
            status.last_online_time.as_deref(),
            Some("1970-01-01T00:00:00Z")
        );

        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["twins"][0]["observedDesired"]["metadata"]["timestamp"],
            "1000"
        );
        assert_eq!(json["state"], "offline");
        assert!(
            json.get("message").is_some_and(serde_json::Value::is_null),
            "an absent message is sent as null, clearing an old one: {json}"
        );
    }
}
