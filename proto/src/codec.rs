//! Bytes <-> [`Frame`]: the only place frames are encoded and decoded.
//!
//! [`decode`] checks the size limit before parsing, parses the protobuf, then
//! [`validate`]s the frame against its kind's rules (ids, `ack_of`, route,
//! op, key, payload; control payloads must parse). A frame it returns is
//! therefore safe to dispatch on. It never panics, whatever the input.
//!
//! Every [`DecodeError`] has a stable [`DecodeError::reason`], used as a
//! metrics label and as `ErrorInfo.reason` when refusing a frame:
//!
//! | reason | meaning |
//! | --- | --- |
//! | `oversized` | frame larger than [`Limits::max_frame`] |
//! | `malformed` | not a protobuf `Frame` |
//! | `missing_kind` / `unknown_kind` | kind 0 / a kind this build does not know |
//! | `invalid_id` | id 0 on a sequenced kind, or id != 0 on an unsequenced one |
//! | `invalid_ack_of` | `ack_of` missing where required or present where not |
//! | `missing_route` / `unexpected_route` | route absent on a routed kind / present on a control kind |
//! | `unknown_op` / `invalid_op` | op string unknown / not allowed for the kind |
//! | `invalid_resource` | `Route.resource` is no valid key |
//! | `invalid_content_type` | unknown patch media type |
//! | `missing_payload` / `unexpected_payload` | body required but empty / body where none belongs |
//! | `missing_uid` | OBJECT delete without the uid it removes |
//! | `invalid_payload` | control payload does not parse as its message |
//! | `wrong_kind` | typed accessor used on another kind |

mod validate;

use prost::Message;

pub use validate::validate;

use crate::frame::UnknownOp;
use crate::key::KeyError;
use crate::pb::{ErrorInfo, Frame, Kind};

/// Default largest frame, in bytes (4 MiB), for both directions.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// Limits applied by [`decode`] and [`encode_checked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted encoded frame, in bytes. Configure the WebSocket
    /// library's message limit to the same value.
    pub max_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl Limits {
    /// Limits with the given largest frame size.
    pub fn with_max_frame(max_frame: usize) -> Self {
        Limits { max_frame }
    }
}

/// Why bytes were not accepted as a frame (or a payload as its message).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The encoded frame is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a protobuf `Frame`.
    #[error("frame is not valid protobuf")]
    Malformed(#[source] prost::DecodeError),
    /// Kind 0 (unset).
    #[error("frame has no kind")]
    MissingKind,
    /// A kind value this build does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(i32),
    /// id 0 on a sequenced kind, or a non-zero id on an unsequenced kind.
    #[error("id {id} is invalid on a {kind:?} frame (sequenced kinds need id > 0, others 0)")]
    InvalidId {
        /// The frame kind.
        kind: Kind,
        /// The id it carried.
        id: u64,
    },
    /// `ack_of` missing where required, or present where not allowed.
    #[error("ack_of {ack_of:?} is invalid on a {kind:?} frame")]
    InvalidAckOf {
        /// The frame kind.
        kind: Kind,
        /// The `ack_of` it carried.
        ack_of: Option<u64>,
    },
    /// A routed kind without a route.
    #[error("{kind:?} frame has no route")]
    MissingRoute {
        /// The frame kind.
        kind: Kind,
    },
    /// A control kind with a route.
    #[error("{kind:?} frame must not have a route")]
    UnexpectedRoute {
        /// The frame kind.
        kind: Kind,
    },
    /// `Route.op` is not a known op.
    #[error("{kind:?} frame has an unknown op")]
    UnknownOp {
        /// The frame kind.
        kind: Kind,
        /// The unknown op (truncated).
        #[source]
        source: UnknownOp,
    },
    /// `Route.op` is known but not allowed on this kind.
    #[error("op {op} is not allowed on a {kind:?} frame")]
    InvalidOp {
        /// The frame kind.
        kind: Kind,
        /// The op string as sent (truncated).
        op: String,
    },
    /// `Route.resource` is not a valid key (or collection for "list").
    #[error("{kind:?} frame has an invalid resource")]
    InvalidResource {
        /// The frame kind.
        kind: Kind,
        /// What is wrong with the key.
        #[source]
        source: KeyError,
    },
    /// `Route.content_type` is not a known patch type, or set on a non-patch.
    #[error("content type {content_type:?} is invalid here")]
    InvalidContentType {
        /// The content type as sent (truncated).
        content_type: String,
    },
    /// The op or kind needs a payload and there is none.
    #[error("{kind:?} frame needs a payload")]
    MissingPayload {
        /// The frame kind.
        kind: Kind,
    },
    /// A payload where none belongs.
    #[error("{kind:?} frame must not have a payload")]
    UnexpectedPayload {
        /// The frame kind.
        kind: Kind,
    },
    /// An OBJECT delete that does not name the uid it removes.
    #[error("{kind:?} delete frame has no uid")]
    MissingUid {
        /// The frame kind.
        kind: Kind,
    },
    /// The control payload does not parse as the kind's message.
    #[error("{kind:?} frame payload is not a valid control message")]
    InvalidPayload {
        /// The frame kind.
        kind: Kind,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// A typed accessor was used on a frame of another kind.
    #[error("expected a frame of kind {expected:?}, got {actual:?}")]
    WrongKind {
        /// Kinds the accessor reads.
        expected: &'static [Kind],
        /// The frame's kind.
        actual: Kind,
    },
}

impl DecodeError {
    /// Stable label for metrics and `ErrorInfo.reason` (see the module table).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::MissingKind => "missing_kind",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::InvalidId { .. } => "invalid_id",
            DecodeError::InvalidAckOf { .. } => "invalid_ack_of",
            DecodeError::MissingRoute { .. } => "missing_route",
            DecodeError::UnexpectedRoute { .. } => "unexpected_route",
            DecodeError::UnknownOp { .. } => "unknown_op",
            DecodeError::InvalidOp { .. } => "invalid_op",
            DecodeError::InvalidResource { .. } => "invalid_resource",
            DecodeError::InvalidContentType { .. } => "invalid_content_type",
            DecodeError::MissingPayload { .. } => "missing_payload",
            DecodeError::UnexpectedPayload { .. } => "unexpected_payload",
            DecodeError::MissingUid { .. } => "missing_uid",
            DecodeError::InvalidPayload { .. } => "invalid_payload",
            DecodeError::WrongKind { .. } => "wrong_kind",
        }
    }

    /// HTTP-style code for `ErrorInfo.code`: 413 for oversized, else 400.
    pub fn code(&self) -> u32 {
        match self {
            DecodeError::Oversized { .. } => 413,
            _ => 400,
        }
    }

    /// The `ErrorInfo` to send back when refusing a frame for this reason.
    /// `in_reply_to` is the offending frame's id if known (else 0).
    pub fn to_error_info(&self, in_reply_to: u64) -> ErrorInfo {
        ErrorInfo {
            code: self.code(),
            reason: self.reason().to_owned(),
            message: self.to_string(),
            in_reply_to,
        }
    }
}

/// Why a frame was not encoded by [`encode_checked`].
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The frame would break the peer's size limit.
    #[error("encoded frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame breaks its kind's rules; the peer would refuse it.
    #[error("frame is invalid")]
    Invalid(#[source] DecodeError),
}

impl EncodeError {
    /// Stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            EncodeError::Oversized { .. } => "oversized",
            EncodeError::Invalid(e) => e.reason(),
        }
    }
}

/// Encodes a frame as the bytes of one binary WebSocket message.
pub fn encode(frame: &Frame) -> Vec<u8> {
    frame.encode_to_vec()
}

/// Validates and encodes a frame, refusing what the peer would refuse
/// (invalid for its kind, or larger than `limits.max_frame`).
pub fn encode_checked(frame: &Frame, limits: Limits) -> Result<Vec<u8>, EncodeError> {
    validate(frame).map_err(EncodeError::Invalid)?;
    let len = frame.encoded_len();
    if len > limits.max_frame {
        return Err(EncodeError::Oversized {
            len,
            max: limits.max_frame,
        });
    }
    Ok(frame.encode_to_vec())
}

/// Decodes and validates one frame. Never panics.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Frame, DecodeError> {
    if bytes.len() > limits.max_frame {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            max: limits.max_frame,
        });
    }
    let frame = Frame::decode(bytes).map_err(DecodeError::Malformed)?;
    validate(&frame)?;
    Ok(frame)
}

#[cfg(test)]
mod tests;
