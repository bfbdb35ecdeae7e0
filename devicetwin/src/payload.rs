//! JSON payloads on the device topics, KubeEdge-compatible, and their validation.
//!
//! Start with [`request_event`]: it turns the bytes a mapper or app published on a request
//! topic into a [`TwinEvent`] for [`crate::shadow::Shadow::apply`], or into a
//! [`PayloadError`] whose [`ErrorCode::code`]/[`ErrorCode::reason`] go back on the reply topic
//! via [`ResultMsg::error`]. Nothing here panics on input, however malformed.
//!
//! Wire rules (KubeEdge's, plus kedge's versioned writes):
//! - values are strings on the wire (numbers and booleans are accepted and stringified);
//! - keys match `[A-Za-z0-9-_.,:/@#]{1,128}`, values are at most 512 characters;
//! - `"twin": {"p": null}` deletes `p` from the reported section, `"actual": {"value": null}`
//!   likewise, and `"expected": {"value": null}` (or `"expected": null`) deletes the desired
//!   value;
//! - a message-level `"version"` is the expected desired version when the message writes any
//!   `expected` value (required for a desired change, checked for equality), and otherwise
//!   the reported version (a lower one than the shadow's is refused);
//! - with a DeviceModel, values are checked against the property's type, `minimum` and
//!   `maximum`, unknown properties are refused, and desired writes to ReadOnly properties are
//!   refused. The payload's own `metadata.type` is only used when there is no model (old
//!   mappers send words like `"Updated"` there, so unknown types are ignored).
//!
//! | code | reasons |
//! | --- | --- |
//! | 400 | `malformed_json`, `missing_twin`, `invalid_key`, `invalid_state`, `not_a_request` |
//! | 404 | `unknown_property` |
//! | 409 | `stale_generation`, `version_conflict` (from the shadow) |
//! | 413 | `payload_too_large`, `key_too_long`, `value_too_long`, `too_many_properties` |
//! | 422 | `type_mismatch`, `below_minimum`, `above_maximum`, `read_only_property` |
//! | 428 | `version_required` (from the shadow) |

mod convert;
mod wire;

use serde::de::DeserializeOwned;

use crate::model::{DeviceModelSpec, ValueError};
use crate::shadow::TwinEvent;
use crate::topic::DeviceTopic;

pub use wire::{
    BaseMsg, DeltaMsg, DocumentMsg, MembershipDevice, MembershipResultMsg, MembershipUpdatedMsg,
    MsgTwin, ResultMsg, StateInfo, StateUpdateMsg, TwinDoc, TwinUpdateMsg, TwinValueMsg,
    TypeMetadata, ValueMetadata,
};

/// Longest twin key, in characters.
pub const MAX_KEY_LEN: usize = 128;
/// Longest twin value, in characters.
pub const MAX_VALUE_LEN: usize = 512;
/// Largest payload accepted on a request topic, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// An error that becomes a result message: an HTTP-style status code and a stable,
/// machine-readable reason. No error is retried by the edge itself; a requester that gets a
/// 409 re-reads the twin (`twin/get`) and retries with the current version, and anything
/// else is the requester's bug to fix.
pub trait ErrorCode: std::error::Error {
    /// HTTP-style status code (400, 404, 409, 413, 422, 428).
    fn code(&self) -> u16;
    /// Stable snake_case reason, for machines.
    fn reason(&self) -> &'static str;
}

/// Why a payload was refused before reaching the shadow.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Over [`MAX_PAYLOAD_BYTES`].
    #[error("payload is {len} bytes, over the {max} byte limit")]
    TooLarge {
        /// Payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed payload: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A twin update without a `twin` object.
    #[error("the update has no \"twin\" object")]
    MissingTwin,
    /// A key with characters outside `[A-Za-z0-9-_.,:/@#]`, or empty.
    #[error("twin key {0:?} may only contain letters, digits and - _ . , : / @ #")]
    InvalidKey(String),
    /// A key longer than [`MAX_KEY_LEN`].
    #[error("twin key of {len} characters is over the {MAX_KEY_LEN} limit")]
    KeyTooLong {
        /// Its length.
        len: usize,
    },
    /// A value longer than [`MAX_VALUE_LEN`].
    #[error("value of {property:?} has {len} characters, over the {MAX_VALUE_LEN} limit")]
    ValueTooLong {
        /// The property.
        property: String,
        /// Its length.
        len: usize,
    },
    /// The DeviceModel has no such property.
    #[error("the device model has no property {0:?}")]
    UnknownProperty(String),
    /// The value does not fit the property's type or bounds.
    #[error("value {value:?} of {property:?}: {source}")]
    InvalidValue {
        /// The property.
        property: String,
        /// The value as sent.
        value: String,
        /// What is wrong with it.
        #[source]
        source: ValueError,
    },
    /// A desired write to a ReadOnly property.
    #[error("property {0:?} is ReadOnly; only reported values may be written")]
    ReadOnly(String),
    /// A state update without a usable state word.
    #[error("state must be a non-empty string of at most {MAX_VALUE_LEN} characters")]
    InvalidState,
    /// Bytes handed over for a topic that is not a request.
    #[error("{0:?} is not a request topic")]
    NotARequest(DeviceTopic),
}

impl ErrorCode for PayloadError {
    fn code(&self) -> u16 {
        match self {
            Self::Malformed(_)
            | Self::MissingTwin
            | Self::InvalidKey(_)
            | Self::InvalidState
            | Self::NotARequest(_) => 400,
            Self::UnknownProperty(_) => 404,
            Self::TooLarge { .. } | Self::KeyTooLong { .. } | Self::ValueTooLong { .. } => 413,
            Self::InvalidValue { .. } | Self::ReadOnly(_) => 422,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "payload_too_large",
            Self::Malformed(_) => "malformed_json",
            Self::MissingTwin => "missing_twin",
            Self::InvalidKey(_) => "invalid_key",
            Self::KeyTooLong { .. } => "key_too_long",
            Self::ValueTooLong { .. } => "value_too_long",
            Self::UnknownProperty(_) => "unknown_property",
            Self::InvalidValue { source, .. } => source.reason(),
            Self::ReadOnly(_) => "read_only_property",
            Self::InvalidState => "invalid_state",
            Self::NotARequest(_) => "not_a_request",
        }
    }
}

impl PayloadError {
    /// A [`ValueError`] of `property`'s `value`: over-long values keep their own 413 error
    /// (`value_too_long`), the rest are [`PayloadError::InvalidValue`] (422).
    pub fn from_value_error(property: &str, value: &str, e: ValueError) -> Self {
        match e {
            ValueError::TooLong(len) => Self::ValueTooLong {
                property: property.to_owned(),
                len,
            },
            source => Self::InvalidValue {
                property: property.to_owned(),
                value: value.to_owned(),
                source,
            },
        }
    }
}

/// Decodes any payload type with the size limit applied. Empty input decodes as `{}`, which
/// lets mappers send an empty `twin/get` or `membership/get`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PayloadError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge {
            len: bytes.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // serde would read `[...]` as a struct's fields in order; payloads are objects.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let err =
            <serde_json::Error as serde::de::Error>::custom("the payload must be a JSON object");
        return Err(PayloadError::Malformed(err));
    }
    serde_json::from_slice(bytes).map_err(PayloadError::Malformed)
}

/// Decodes a `twin/update` payload and checks its keys and value lengths.
pub fn decode_twin_update(bytes: &[u8]) -> Result<TwinUpdateMsg, PayloadError> {
    let msg: TwinUpdateMsg = decode(bytes)?;
    convert::check_shape(&msg)?;
    Ok(msg)
}

/// Decodes a `state/update` payload.
pub fn decode_state_update(bytes: &[u8]) -> Result<StateUpdateMsg, PayloadError> {
    decode(bytes)
}

/// Best-effort `event_id` of a payload, for the error result of one that failed to decode.
pub fn peek_event_id(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        event_id: serde_json::Value,
    }
    match decode::<Peek>(bytes).map(|p| p.event_id) {
        Ok(serde_json::Value::String(s)) if s.chars().count() <= MAX_VALUE_LEN => s,
        _ => String::new(),
    }
}

/// Turns a request published on a device topic into a shadow event. `model` enables the
/// DeviceModel checks; `now_ms` stamps messages without a timestamp.
pub fn request_event(
    kind: DeviceTopic,
    bytes: &[u8],
    model: Option<&DeviceModelSpec>,
    now_ms: i64,
) -> Result<TwinEvent, PayloadError> {
    match kind {
        DeviceTopic::TwinUpdate => decode_twin_update(bytes)?.to_event(model, now_ms),
        DeviceTopic::StateUpdate => decode_state_update(bytes)?.to_event(now_ms),
        DeviceTopic::TwinGet => Ok(decode::<BaseMsg>(bytes)?.to_get_event(now_ms)),
        other => Err(PayloadError::NotARequest(other)),
    }
}

#[cfg(test)]
mod tests;
