//! The device shadow: one [`Shadow`] per device, a pure state machine (no IO) in the style of
//! AWS/Azure device shadows, fed by [`TwinEvent`]s and answering with [`TwinAction`]s that
//! the caller carries out (MQTT publishes, outbox entries, driver writes).
//!
//! Start with [`Shadow::apply`]. The state is two [`Section`]s:
//!
//! - **desired** — what the cloud (or an edge app, with a version check) wants. Its version
//!   follows the Device's `metadata.generation`: a cloud update sets it to
//!   `max(current, generation)`; an accepted edge write adds one (and goes up as a
//!   [`DesiredPatch`], which makes cloudcore bump the generation to match).
//! - **reported** — what the device last reported. Edge wins: every report is accepted unless
//!   it carries a version lower than the current one.
//!
//! Each section's version only ever grows; it grows when a value changes (a report that only
//! refreshes timestamps leaves it alone). Every property keeps its value, timestamp, type and
//! the section version at which its value last changed. The **delta** is every desired
//! property whose value differs from the reported one (numerically for numeric types, so
//! `"30"` and `"30.0"` agree for a double).
//!
//! Transitions (each returns actions in the order: result, document, delta, drive, up):
//!
//! | event | accepted when | effect |
//! | --- | --- | --- |
//! | `CloudDesired{generation}` | `generation > observed` (equal: duplicate, no-op) | desired := cloud's set; document, delta, drive for changed values; `ReportUp` |
//! | `CloudRecheck{generation}` | `generation >= observed` | as `CloudDesired`; nothing at all when no value changes |
//! | `EdgeUpdate{desired}` | no effective change, or `expected_version == desired.version` | desired changes applied, version + 1; result, document, delta, drive, `DesiredUp`, `ReportUp` |
//! | `EdgeUpdate{reported}` | no `version`, or `version >= reported.version` | values/timestamps stored; version bumped if a value changed; result, document, `ReportUp` |
//! | `EdgeState` | always | state stored (online refreshes last-online); result, `StateUp` |
//! | `Get` | always | result with the whole twin |
//!
//! A refused event changes nothing and returns a [`TwinError`] (409 for stale or mismatched
//! versions, 428 for a desired change without a version, 413 past [`MAX_PROPERTIES`]).
//!
//! Cloud-wins corner: if edge writes are still on their way up when a newer generation
//! arrives without them, the cloud's values replace them (the device is driven back) and the
//! desired version stays at the higher local value until the cloud's generation passes it;
//! once cloudcore applies the edge's patch the next generation brings the values back. A
//! generation lower than one already applied is refused as stale.

mod cloud;
mod edge;
mod upstream;
mod view;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{DeviceState, DeviceStatus, PropertyType};
use crate::payload::{DeltaMsg, DocumentMsg, ErrorCode, MsgTwin, ResultMsg};
use crate::topic::DeviceTopic;

pub use upstream::{DesiredPatch, PatchError, StateReport, TwinReport};

/// Most properties one section of a shadow may hold.
pub const MAX_PROPERTIES: usize = 1024;

/// Who asked and when: echoed into results, and the default timestamp of written values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Request event id (the trigger's id for cloud events).
    pub event_id: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl Stamp {
    /// A stamp.
    pub fn new(event_id: impl Into<String>, timestamp: i64) -> Self {
        Self {
            event_id: event_id.into(),
            timestamp,
        }
    }
}

/// A value to write into a section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyWrite {
    /// The value as a string.
    pub value: String,
    /// When it was read or set; `None` uses the event's stamp.
    pub timestamp: Option<i64>,
    /// Its type, when known (from the DeviceModel, or the payload without one).
    pub ty: Option<PropertyType>,
}

impl PropertyWrite {
    /// A value with no own timestamp or type.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            timestamp: None,
            ty: None,
        }
    }
}

/// Reported values from the edge; `None` deletes a property.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedWrite {
    /// Property to value (or delete).
    pub props: BTreeMap<String, Option<PropertyWrite>>,
    /// Optional writer version; refused if lower than the reported version.
    pub version: Option<u64>,
}

/// Desired values from an edge app; `None` deletes a property.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredWrite {
    /// Property to value (or delete).
    pub props: BTreeMap<String, Option<PropertyWrite>>,
    /// Must equal the desired version for a write that changes anything.
    pub expected_version: Option<u64>,
}

/// An input to [`Shadow::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwinEvent {
    /// The Device's desired values arrived from the cloud (the full set: properties missing
    /// from `props` are removed). Build it with [`TwinEvent::cloud_desired_from_spec`].
    CloudDesired {
        /// The Device's `metadata.generation`.
        generation: u64,
        /// Every desired value in the spec.
        props: BTreeMap<String, PropertyWrite>,
        /// Trigger id and receive time.
        at: Stamp,
    },
    /// The Device's DeviceModel changed: the desired values of the applied generation,
    /// checked again against the new model (build it with
    /// [`TwinEvent::cloud_desired_checked`] and [`TwinEvent::into_recheck`]). Applied like
    /// `CloudDesired`, except that a generation equal to the applied one is not a
    /// duplicate, and a recheck that changes no value does nothing at all.
    CloudRecheck {
        /// The Device's `metadata.generation`.
        generation: u64,
        /// Every desired value in force under the new model.
        props: BTreeMap<String, PropertyWrite>,
        /// Trigger id and receive time.
        at: Stamp,
    },
    /// A `twin/update` from a mapper or app (reported and/or desired, applied atomically).
    EdgeUpdate {
        /// Reported part.
        reported: Option<ReportedWrite>,
        /// Desired part.
        desired: Option<DesiredWrite>,
        /// Request id and time.
        at: Stamp,
    },
    /// A `state/update` from a mapper.
    EdgeState {
        /// New state.
        state: DeviceState,
        /// Request id and time.
        at: Stamp,
    },
    /// A `twin/get`.
    Get {
        /// Request id and time.
        at: Stamp,
    },
}

impl TwinEvent {
    /// A reports-only edge update.
    pub fn edge_reported(
        props: BTreeMap<String, Option<PropertyWrite>>,
        version: Option<u64>,
        at: Stamp,
    ) -> Self {
        Self::EdgeUpdate {
            reported: Some(ReportedWrite { props, version }),
            desired: None,
            at,
        }
    }

    /// A desired-only edge update expecting `expected_version`.
    pub fn edge_desired(
        props: BTreeMap<String, Option<PropertyWrite>>,
        expected_version: u64,
        at: Stamp,
    ) -> Self {
        Self::EdgeUpdate {
            reported: None,
            desired: Some(DesiredWrite {
                props,
                expected_version: Some(expected_version),
            }),
            at,
        }
    }

    /// The stamp of any event.
    pub fn stamp(&self) -> &Stamp {
        match self {
            Self::CloudDesired { at, .. }
            | Self::CloudRecheck { at, .. }
            | Self::EdgeUpdate { at, .. }
            | Self::EdgeState { at, .. }
            | Self::Get { at } => at,
        }
    }
}

/// An output of [`Shadow::apply`], for the caller to carry out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TwinAction {
    /// Publish on the request's reply topic (`topic` says which).
    PublishResult {
        /// `TwinUpdateResult`, `TwinGetResult` or `StateUpdateResult`.
        topic: DeviceTopic,
        /// The result.
        msg: ResultMsg,
    },
    /// Publish on `twin/update/delta` (desired changed and still differs from reported).
    PublishDelta(DeltaMsg),
    /// Publish on `twin/update/document` (some value changed).
    PublishDocument(DocumentMsg),
    /// Write a changed desired value to the device (built-in drivers; external mappers act on
    /// the delta instead). Emitted only when the value differs from the reported one.
    DriveDevice {
        /// Property.
        property: String,
        /// Desired value.
        value: String,
        /// Its type, if known.
        ty: Option<PropertyType>,
    },
    /// Queue the twin snapshot in the outbox for `Device.status` (coalesce by device: the
    /// latest snapshot replaces older ones).
    ReportUp(TwinReport),
    /// Queue an edge-originated desired change for `Device.spec` (coalesce by
    /// [`DesiredPatch::merge`], never by replacement).
    DesiredUp(DesiredPatch),
    /// Queue the state for `Device.status.state` (latest wins).
    StateUp(StateReport),
}

impl TwinAction {
    /// The device topic this action publishes on, if it is a publish.
    pub fn topic(&self) -> Option<DeviceTopic> {
        match self {
            Self::PublishResult { topic, .. } => Some(*topic),
            Self::PublishDelta(_) => Some(DeviceTopic::TwinUpdateDelta),
            Self::PublishDocument(_) => Some(DeviceTopic::TwinUpdateDocument),
            Self::DriveDevice { .. }
            | Self::ReportUp(_)
            | Self::DesiredUp(_)
            | Self::StateUp(_) => None,
        }
    }
}

/// Which section of the shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SectionKind {
    /// Desired values.
    Desired,
    /// Reported values.
    Reported,
}

/// Why an event was refused. The shadow is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    /// A cloud update older than one already applied.
    #[error("generation {got} is older than the applied generation {current}")]
    StaleGeneration {
        /// Applied generation.
        current: u64,
        /// Offered generation.
        got: u64,
    },
    /// A versioned write whose version does not fit.
    #[error("{section:?} version {got} does not match the current version {current}")]
    VersionConflict {
        /// Which section.
        section: SectionKind,
        /// Current version.
        current: u64,
        /// Offered version.
        got: u64,
    },
    /// An edge desired change without an expected version.
    #[error("desired changes from the edge must carry the current desired version")]
    VersionRequired,
    /// A section would exceed [`MAX_PROPERTIES`].
    #[error("a twin section may hold at most {MAX_PROPERTIES} properties")]
    TooManyProperties,
}

impl ErrorCode for TwinError {
    fn code(&self) -> u16 {
        match self {
            Self::StaleGeneration { .. } | Self::VersionConflict { .. } => 409,
            Self::VersionRequired => 428,
            Self::TooManyProperties => 413,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::StaleGeneration { .. } => "stale_generation",
            Self::VersionConflict { .. } => "version_conflict",
            Self::VersionRequired => "version_required",
            Self::TooManyProperties => "too_many_properties",
        }
    }
}

/// One property in a section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyState {
    /// The value as a string.
    pub value: String,
    /// When it was read or set (ms since the epoch).
    pub timestamp: i64,
    /// Its type, if known.
    pub ty: Option<PropertyType>,
    /// Section version at which the value last changed.
    pub version: u64,
}

/// Desired or reported values with the section's version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    version: u64,
    props: BTreeMap<String, PropertyState>,
}

impl Section {
    /// The section version (never decreases).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every property.
    pub fn props(&self) -> &BTreeMap<String, PropertyState> {
        &self.props
    }

    /// One property.
    pub fn get(&self, name: &str) -> Option<&PropertyState> {
        self.props.get(name)
    }
}

/// The shadow of one device. Serialisable, so edgecore can persist it as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shadow {
    desired: Section,
    reported: Section,
    observed_generation: Option<u64>,
    state: Option<DeviceState>,
    last_online: Option<i64>,
}

impl Shadow {
    /// An empty shadow: versions 0, no generation applied yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a shadow from a Device's status (an edge whose store was wiped): reported and
    /// observed-desired values with their versions, and the observed generation, so the next
    /// cloud update of the same generation is a duplicate and versions continue upwards.
    pub fn from_status(status: &DeviceStatus) -> Self {
        let mut shadow = Self::new();
        for twin in &status.twins {
            let pairs = [
                (&mut shadow.reported, &twin.reported),
                (&mut shadow.desired, &twin.observed_desired),
            ];
            for (section, value) in pairs {
                if let Some(v) = value {
                    let version = v.version.and_then(|x| u64::try_from(x).ok()).unwrap_or(0);
                    section.version = section.version.max(version);
                    let state = PropertyState {
                        value: v.value.clone(),
                        timestamp: v.metadata.timestamp_ms().unwrap_or(0),
                        ty: v.metadata.ty.as_deref().and_then(|t| t.parse().ok()),
                        version,
                    };
                    section.props.insert(twin.property_name.clone(), state);
                }
            }
        }
        let reported_version = status.reported_version.and_then(|v| u64::try_from(v).ok());
        shadow.reported.version = shadow.reported.version.max(reported_version.unwrap_or(0));
        shadow.observed_generation = status
            .observed_generation
            .and_then(|g| u64::try_from(g).ok());
        if let Some(g) = shadow.observed_generation {
            shadow.desired.version = shadow.desired.version.max(g);
        }
        shadow.state = status.state.clone();
        shadow
    }

    /// The desired section.
    pub fn desired(&self) -> &Section {
        &self.desired
    }

    /// The reported section.
    pub fn reported(&self) -> &Section {
        &self.reported
    }

    /// The last cloud generation applied, if any.
    pub fn observed_generation(&self) -> Option<u64> {
        self.observed_generation
    }

    /// The last reported connection state.
    pub fn state(&self) -> Option<&DeviceState> {
        self.state.as_ref()
    }

    /// When the device last reported `online` (ms since the epoch).
    pub fn last_online(&self) -> Option<i64> {
        self.last_online
    }

    /// Desired properties whose value differs from the reported one (or that have no
    /// reported value), with the desired value.
    pub fn delta(&self) -> BTreeMap<String, String> {
        self.desired
            .props
            .iter()
            .filter(|(name, d)| !view::agrees(d, self.reported.props.get(*name)))
            .map(|(name, d)| (name.clone(), d.value.clone()))
            .collect()
    }

    /// The whole twin in KubeEdge's payload shape (`expected`/`actual`/`metadata`).
    pub fn twin_view(&self) -> BTreeMap<String, MsgTwin> {
        let names = self.desired.props.keys().chain(self.reported.props.keys());
        names
            .filter_map(|n| Some((n.clone(), self.msg_twin(n)?)))
            .collect()
    }

    /// A snapshot for `Device.status` (what [`TwinAction::ReportUp`] carries).
    pub fn report(&self) -> TwinReport {
        TwinReport {
            observed_generation: self.observed_generation,
            desired_version: self.desired.version,
            reported_version: self.reported.version,
            desired: self.desired.props.clone(),
            reported: self.reported.props.clone(),
        }
    }

    /// Applies one event. On `Err` the shadow is unchanged.
    pub fn apply(&mut self, event: TwinEvent) -> Result<Vec<TwinAction>, TwinError> {
        match event {
            TwinEvent::CloudDesired {
                generation,
                props,
                at,
            } => self.cloud_desired(generation, props, at, false),
            TwinEvent::CloudRecheck {
                generation,
                props,
                at,
            } => self.cloud_desired(generation, props, at, true),
            TwinEvent::EdgeUpdate {
                reported,
                desired,
                at,
            } => self.edge_update(reported, desired, at),
            TwinEvent::EdgeState { state, at } => Ok(self.edge_state(state, at)),
            TwinEvent::Get { at } => Ok(vec![self.get(at)]),
        }
    }
}

#[cfg(test)]
mod tests;
