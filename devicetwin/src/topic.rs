//! The MQTT topic schema between edgecore's bus and mappers/apps: KubeEdge >= 1.17's layout
//! under a configurable prefix. Start with [`parse`] and [`Topic::build`].
//!
//! ```text
//! <prefix>/events/device/{ns}/{name}/twin/update            mapper/app -> edge  (request)
//! <prefix>/events/device/{ns}/{name}/twin/update/result     edge -> requester
//! <prefix>/events/device/{ns}/{name}/twin/update/delta      edge -> mapper (desired != reported)
//! <prefix>/events/device/{ns}/{name}/twin/update/document   edge -> anyone (before/after)
//! <prefix>/events/device/{ns}/{name}/twin/get               request
//! <prefix>/events/device/{ns}/{name}/twin/get/result
//! <prefix>/events/device/{ns}/{name}/state/update           request
//! <prefix>/events/device/{ns}/{name}/state/update/result
//! <prefix>/events/node/{node}/membership/get                request
//! <prefix>/events/node/{node}/membership/get/result
//! <prefix>/events/node/{node}/membership/updated            edge -> mappers
//! ```
//!
//! **Prefix.** KubeEdge uses `$hw` ([`KUBEEDGE_PREFIX`]); set it with an external broker such
//! as Mosquitto for drop-in KubeEdge mapper compatibility. The embedded rumqttd broker refuses
//! and never routes `$`-topics, so with it kedge uses `kedge` ([`EMBEDDED_PREFIX`]).
//!
//! **Legacy form.** KubeEdge before 1.17 had no namespace in device topics
//! (`$hw/events/device/{name}/twin/update`). [`parse`] accepts that form too and puts such
//! devices in the `default` namespace; the parsed [`Topic`] remembers the form
//! ([`TopicForm::Legacy`]) so replies go where an old mapper listens. Building a legacy-form
//! topic drops the namespace, so only `default` devices round-trip through it.
//! The two forms never overlap: after `device/`, a namespaced topic has two segments before a
//! known suffix (`twin/update`, ...) and a legacy one has one, and no known suffix is another
//! known suffix with a segment in front.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{DEFAULT_NAMESPACE, DeviceKey};

/// The prefix for the embedded rumqttd broker (which cannot route `$`-topics).
pub const EMBEDDED_PREFIX: &str = "kedge";
/// KubeEdge's prefix, for external brokers and unmodified KubeEdge mappers.
pub const KUBEEDGE_PREFIX: &str = "$hw";

/// A parsed device or node topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A per-device topic.
    Device {
        /// Which device.
        device: DeviceKey,
        /// Namespaced (>= 1.17) or legacy (namespace-less) layout.
        form: TopicForm,
        /// Which topic of the device.
        kind: DeviceTopic,
    },
    /// A per-node topic.
    Node {
        /// Node name.
        node: String,
        /// Which topic of the node.
        kind: NodeTopic,
    },
}

/// Layout of a device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopicForm {
    /// `device/{ns}/{name}/...` (KubeEdge >= 1.17, kedge's default).
    Namespaced,
    /// `device/{name}/...`, namespace `default` (older KubeEdge mappers).
    Legacy,
}

/// The topics of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceTopic {
    /// `twin/update`: a mapper reports values or an app writes desired ones.
    TwinUpdate,
    /// `twin/update/result`: the outcome of a `twin/update`.
    TwinUpdateResult,
    /// `twin/update/delta`: desired values that differ from reported.
    TwinUpdateDelta,
    /// `twin/update/document`: before and after of every accepted change.
    TwinUpdateDocument,
    /// `twin/get`: ask for the whole twin.
    TwinGet,
    /// `twin/get/result`: the whole twin.
    TwinGetResult,
    /// `state/update`: a mapper reports the connection state.
    StateUpdate,
    /// `state/update/result`: the outcome of a `state/update`.
    StateUpdateResult,
}

/// The topics of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeTopic {
    /// `membership/get`: ask for the node's devices.
    MembershipGet,
    /// `membership/get/result`: the node's devices.
    MembershipGetResult,
    /// `membership/updated`: devices added to or removed from the node.
    MembershipUpdated,
}

const DEVICE_TOPICS: [DeviceTopic; 8] = [
    DeviceTopic::TwinUpdate,
    DeviceTopic::TwinUpdateResult,
    DeviceTopic::TwinUpdateDelta,
    DeviceTopic::TwinUpdateDocument,
    DeviceTopic::TwinGet,
    DeviceTopic::TwinGetResult,
    DeviceTopic::StateUpdate,
    DeviceTopic::StateUpdateResult,
];

const NODE_TOPICS: [NodeTopic; 3] = [
    NodeTopic::MembershipGet,
    NodeTopic::MembershipGetResult,
    NodeTopic::MembershipUpdated,
];

impl DeviceTopic {
    /// The path after `{ns}/{name}/`.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::TwinUpdate => "twin/update",
            Self::TwinUpdateResult => "twin/update/result",
            Self::TwinUpdateDelta => "twin/update/delta",
            Self::TwinUpdateDocument => "twin/update/document",
            Self::TwinGet => "twin/get",
            Self::TwinGetResult => "twin/get/result",
            Self::StateUpdate => "state/update",
            Self::StateUpdateResult => "state/update/result",
        }
    }

    /// Whether the edge receives this topic (a request from a mapper or app).
    pub fn is_request(self) -> bool {
        matches!(self, Self::TwinUpdate | Self::TwinGet | Self::StateUpdate)
    }

    /// The topic a request is answered on (`None` for topics that are not requests).
    pub fn reply(self) -> Option<Self> {
        match self {
            Self::TwinUpdate => Some(Self::TwinUpdateResult),
            Self::TwinGet => Some(Self::TwinGetResult),
            Self::StateUpdate => Some(Self::StateUpdateResult),
            _ => None,
        }
    }

    fn from_suffix(s: &str) -> Option<Self> {
        DEVICE_TOPICS.into_iter().find(|t| t.suffix() == s)
    }
}

impl NodeTopic {
    /// The path after `{node}/`.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::MembershipGet => "membership/get",
            Self::MembershipGetResult => "membership/get/result",
            Self::MembershipUpdated => "membership/updated",
        }
    }

    /// The topic a request is answered on (`None` for topics that are not requests).
    pub fn reply(self) -> Option<Self> {
        match self {
            Self::MembershipGet => Some(Self::MembershipGetResult),
            _ => None,
        }
    }

    fn from_suffix(s: &str) -> Option<Self> {
        NODE_TOPICS.into_iter().find(|t| t.suffix() == s)
    }
}

/// Why a topic could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The configured prefix is empty, has wildcards or empty levels.
    #[error("invalid topic prefix {0:?}: it must be non-empty without '+', '#' or empty levels")]
    InvalidPrefix(String),
    /// The topic is not under `<prefix>/events/`.
    #[error("topic {0:?} is not under the configured prefix")]
    ForeignPrefix(String),
    /// Under the prefix, but not a topic of this schema.
    #[error("unknown topic {0:?}")]
    Unknown(String),
    /// A namespace, name or node segment is empty or contains a wildcard or `/`.
    #[error("invalid topic segment {0:?}")]
    InvalidSegment(String),
}

fn check_prefix(prefix: &str) -> Result<(), TopicError> {
    let bad =
        prefix.is_empty() || prefix.contains(['+', '#']) || prefix.split('/').any(str::is_empty);
    if bad {
        return Err(TopicError::InvalidPrefix(prefix.to_owned()));
    }
    Ok(())
}

fn check_segment(s: &str) -> Result<(), TopicError> {
    if s.is_empty() || s.contains(['+', '#', '/', '\0']) {
        return Err(TopicError::InvalidSegment(s.to_owned()));
    }
    Ok(())
}

/// Parses a topic under `prefix` (e.g. `kedge` or `$hw`). Accepts both device topic forms.
pub fn parse(prefix: &str, topic: &str) -> Result<Topic, TopicError> {
    check_prefix(prefix)?;
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix("/events/"))
        .ok_or_else(|| TopicError::ForeignPrefix(topic.to_owned()))?;
    let unknown = || TopicError::Unknown(topic.to_owned());
    if let Some(rest) = rest.strip_prefix("device/") {
        let mut parts = rest.splitn(3, '/');
        let first = parts.next().unwrap_or_default();
        let second = parts.next().unwrap_or_default();
        let tail = parts.next().unwrap_or_default();
        if let Some(kind) = DeviceTopic::from_suffix(tail) {
            check_segment(first)?;
            check_segment(second)?;
            return Ok(Topic::Device {
                device: DeviceKey::new(first, second),
                form: TopicForm::Namespaced,
                kind,
            });
        }
        let (name, legacy_tail) = rest.split_once('/').ok_or_else(unknown)?;
        let kind = DeviceTopic::from_suffix(legacy_tail).ok_or_else(unknown)?;
        check_segment(name)?;
        return Ok(Topic::Device {
            device: DeviceKey::new(DEFAULT_NAMESPACE, name),
            form: TopicForm::Legacy,
            kind,
        });
    }
    if let Some(rest) = rest.strip_prefix("node/") {
        let (node, tail) = rest.split_once('/').ok_or_else(unknown)?;
        let kind = NodeTopic::from_suffix(tail).ok_or_else(unknown)?;
        check_segment(node)?;
        return Ok(Topic::Node {
            node: node.to_owned(),
            kind,
        });
    }
    Err(unknown())
}

impl Topic {
    /// A namespaced-form device topic.
    pub fn device(device: DeviceKey, kind: DeviceTopic) -> Self {
        Self::Device {
            device,
            form: TopicForm::Namespaced,
            kind,
        }
    }

    /// A node topic.
    pub fn node(node: impl Into<String>, kind: NodeTopic) -> Self {
        Self::Node {
            node: node.into(),
            kind,
        }
    }

    /// The same device or node, another topic kind, same form.
    pub fn with_device_kind(&self, kind: DeviceTopic) -> Option<Self> {
        match self {
            Self::Device { device, form, .. } => Some(Self::Device {
                device: device.clone(),
                form: *form,
                kind,
            }),
            Self::Node { .. } => None,
        }
    }

    /// Where a request on this topic is answered (same device/node, same form).
    pub fn reply(&self) -> Option<Self> {
        match self {
            Self::Device { device, form, kind } => Some(Self::Device {
                device: device.clone(),
                form: *form,
                kind: kind.reply()?,
            }),
            Self::Node { node, kind } => Some(Self::Node {
                node: node.clone(),
                kind: kind.reply()?,
            }),
        }
    }

    /// The topic string under `prefix`. Fails on an invalid prefix or segment (so a name can
    /// never inject levels or wildcards).
    pub fn build(&self, prefix: &str) -> Result<String, TopicError> {
        check_prefix(prefix)?;
        Ok(match self {
            Self::Device { device, form, kind } => {
                check_segment(&device.name)?;
                match form {
                    TopicForm::Namespaced => {
                        check_segment(&device.namespace)?;
                        format!(
                            "{prefix}/events/device/{}/{}/{}",
                            device.namespace,
                            device.name,
                            kind.suffix()
                        )
                    }
                    TopicForm::Legacy => {
                        format!("{prefix}/events/device/{}/{}", device.name, kind.suffix())
                    }
                }
            }
            Self::Node { node, kind } => {
                check_segment(node)?;
                format!("{prefix}/events/node/{node}/{}", kind.suffix())
            }
        })
    }

    /// Display helper: the topic under `prefix`, or the error text.
    pub fn display<'a>(&'a self, prefix: &'a str) -> impl fmt::Display + 'a {
        DisplayTopic(self, prefix)
    }
}

struct DisplayTopic<'a>(&'a Topic, &'a str);

impl fmt::Display for DisplayTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.build(self.1) {
            Ok(t) => f.write_str(&t),
            Err(e) => write!(f, "<{e}>"),
        }
    }
}

/// The filters edgecore's bus subscribes to on `node`: every device request topic in both
/// forms, and the node's `membership/get`. Results, deltas and documents are the edge's own
/// output and are not matched, so the bus never hears itself.
pub fn edge_subscriptions(prefix: &str, node: &str) -> Result<Vec<String>, TopicError> {
    check_prefix(prefix)?;
    check_segment(node)?;
    let mut filters = Vec::new();
    for kind in DEVICE_TOPICS.into_iter().filter(|k| k.is_request()) {
        filters.push(format!("{prefix}/events/device/+/+/{}", kind.suffix()));
        filters.push(format!("{prefix}/events/device/+/{}", kind.suffix()));
    }
    filters.push(format!(
        "{prefix}/events/node/{node}/{}",
        NodeTopic::MembershipGet.suffix()
    ));
    Ok(filters)
}

/// The filters a mapper for `device` (namespaced form) subscribes to: the delta and the
/// results of its own requests.
pub fn mapper_subscriptions(prefix: &str, device: &DeviceKey) -> Result<Vec<String>, TopicError> {
    [
        DeviceTopic::TwinUpdateDelta,
        DeviceTopic::TwinUpdateResult,
        DeviceTopic::TwinGetResult,
        DeviceTopic::StateUpdateResult,
    ]
    .into_iter()
    .map(|k| Topic::device(device.clone(), k).build(prefix))
    .collect()
}

/// Whether an MQTT `filter` (with `+` and `#`) matches `topic`, per MQTT 3.1.1 §4.7. For
/// tests and for buses that dispatch on filters themselves.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
