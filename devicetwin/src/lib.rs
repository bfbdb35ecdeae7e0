//! devicetwin: kedge's device twin logic, shared by cloudcore's device controller and
//! edgecore's MQTT bus. Pure: no IO, no async, no clocks (callers pass times in).
//!
//! Where to start reading:
//! - [`shadow`]: the per-device shadow state machine, `Shadow::apply(TwinEvent) ->
//!   Vec<TwinAction>`; the heart of the crate.
//! - [`topic`]: the KubeEdge >= 1.17 MQTT topic schema under a configurable prefix
//!   (`kedge` for the embedded broker, `$hw` for KubeEdge-compatible external brokers).
//! - [`payload`]: the KubeEdge-compatible JSON messages, their validation against a
//!   DeviceModel, and error codes for result messages.
//! - [`model`]: Device / DeviceModel specs as read from Kubernetes, and the Device status
//!   cloudcore writes.
//! - [`membership`]: which devices a node has, for `membership/*` topics.
//!
//! A typical edge flow: a message arrives on a topic; [`topic::parse`] names the device and
//! kind; [`payload::request_event`] validates it into a [`shadow::TwinEvent`]; the device's
//! [`shadow::Shadow`] applies it and returns actions; the bus publishes the `Publish*`
//! actions (topic from [`shadow::TwinAction::topic`] and [`topic::Topic::build`]), queues
//! `ReportUp`/`DesiredUp`/`StateUp` in the outbox and hands `DriveDevice` to a driver. Any
//! error becomes a [`payload::ResultMsg::error`] on the request's reply topic.

pub mod membership;
pub mod model;
pub mod payload;
pub mod shadow;
pub mod topic;

pub use membership::{Membership, MembershipChange};
pub use model::{Device, DeviceKey, DeviceModel, DeviceModelSpec, DeviceSpec, DeviceStatus};
pub use payload::{ErrorCode, PayloadError};
pub use shadow::{Shadow, Stamp, TwinAction, TwinError, TwinEvent};
pub use topic::{DeviceTopic, NodeTopic, Topic, TopicError};
