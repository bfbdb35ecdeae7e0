//! [`Op`]: the operation in `Route.op`, and which kinds allow which ops.

use std::fmt;
use std::str::FromStr;

use crate::pb::Kind;

/// `Route.content_type` of a JSON merge patch (the default when empty).
pub const MERGE_PATCH: &str = "application/merge-patch+json";
/// `Route.content_type` of a Kubernetes strategic merge patch.
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
/// `Route.content_type` of an RFC 6902 JSON patch.
pub const JSON_PATCH: &str = "application/json-patch+json";
/// Every accepted non-empty `Route.content_type`.
pub const PATCH_CONTENT_TYPES: [&str; 3] = [MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH];

/// The operation a frame asks for (`Route.op` on the wire, lower snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// OBJECT: store this object (create or replace) at the edge.
    Upsert,
    /// OBJECT: remove the object (of `Frame.uid`); REQUEST: delete via the API.
    Delete,
    /// REQUEST: read one object.
    Get,
    /// REQUEST: list a collection (`Route.resource` = `<namespace>/<kind>`).
    List,
    /// REQUEST or EVENT: create the object in the body.
    Create,
    /// REQUEST or EVENT: replace the object with the body.
    Update,
    /// REQUEST or EVENT: patch the object (`Route.content_type` says how).
    Patch,
    /// REQUEST: replace the `status` subresource.
    UpdateStatus,
    /// REQUEST: patch the `status` subresource.
    PatchStatus,
}

/// `Route.op` held a string that is no known [`Op`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown op {0:?}")]
pub struct UnknownOp(pub String);

impl Op {
    /// Every op, in declaration order.
    pub const ALL: [Op; 9] = [
        Op::Upsert,
        Op::Delete,
        Op::Get,
        Op::List,
        Op::Create,
        Op::Update,
        Op::Patch,
        Op::UpdateStatus,
        Op::PatchStatus,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
            Op::Get => "get",
            Op::List => "list",
            Op::Create => "create",
            Op::Update => "update",
            Op::Patch => "patch",
            Op::UpdateStatus => "update_status",
            Op::PatchStatus => "patch_status",
        }
    }

    /// Whether a frame of `kind` may carry this op.
    pub fn allowed_for(self, kind: Kind) -> bool {
        match kind {
            Kind::Object => matches!(self, Op::Upsert | Op::Delete),
            Kind::Request => !matches!(self, Op::Upsert),
            Kind::Event => matches!(self, Op::Create | Op::Update | Op::Patch),
            _ => false,
        }
    }

    /// Whether this op needs a (JSON) payload.
    pub fn needs_body(self) -> bool {
        matches!(
            self,
            Op::Upsert | Op::Create | Op::Update | Op::Patch | Op::UpdateStatus | Op::PatchStatus
        )
    }

    /// Whether this op is a patch (and so may set `Route.content_type`).
    pub fn is_patch(self) -> bool {
        matches!(self, Op::Patch | Op::PatchStatus)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = UnknownOp;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Op::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| UnknownOp(truncate(s, 64)))
    }
}

/// At most `max` bytes of `s`, cut on a char boundary (for error messages
/// that quote peer input).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn string_round_trip() {
        for op in Op::ALL {
            assert_eq!(op.as_str().parse::<Op>().unwrap(), op);
            assert_eq!(op.to_string(), op.as_str());
        }
        assert_eq!("patch_status".parse::<Op>(), Ok(Op::PatchStatus));
    }

    #[test]
    fn unknown_ops_fail() {
        assert_eq!("Upsert".parse::<Op>(), Err(UnknownOp("Upsert".into())));
        assert!("".parse::<Op>().is_err());
        let long = "é".repeat(100);
        let err = long.parse::<Op>().unwrap_err();
        assert!(err.0.len() <= 64);
    }

    #[test]
    fn ops_per_kind() {
        assert!(Op::Upsert.allowed_for(Kind::Object));
        assert!(Op::Delete.allowed_for(Kind::Object));
        assert!(!Op::Get.allowed_for(Kind::Object));
        assert!(!Op::Upsert.allowed_for(Kind::Request));
        assert!(Op::PatchStatus.allowed_for(Kind::Request));
        assert!(Op::Create.allowed_for(Kind::Event));
        assert!(!Op::Delete.allowed_for(Kind::Event));
        assert!(!Op::Get.allowed_for(Kind::Ping));
        assert!(Op::Create.needs_body() && !Op::Get.needs_body() && !Op::Delete.needs_body());
        assert!(Op::Patch.is_patch() && !Op::Update.is_patch());
    }
}
