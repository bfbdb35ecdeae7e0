//! Per-kind rules a decoded [`Frame`] must satisfy (see `kedge.proto`).

use prost::Message;

use super::DecodeError;
use crate::frame::{Op, PATCH_CONTENT_TYPES, truncate};
use crate::key::{CollectionKey, ResourceKey};
use crate::pb::{
    Ack, CertRenewRequest, CertRenewResponse, ErrorInfo, Frame, Hello, HelloAck, Inventory, Kind,
    Ping, Response, Route,
};

/// Checks `frame` against its kind's rules and returns the kind.
pub fn validate(frame: &Frame) -> Result<Kind, DecodeError> {
    let kind = frame.checked_kind()?;
    check_id(kind, frame.id)?;
    check_ack_of(kind, frame.ack_of)?;
    if kind.has_route() {
        let route = frame
            .route
            .as_ref()
            .ok_or(DecodeError::MissingRoute { kind })?;
        check_routed(kind, route, frame)?;
    } else if frame.route.is_some() {
        return Err(DecodeError::UnexpectedRoute { kind });
    } else {
        check_control_payload(kind, &frame.payload)?;
    }
    Ok(kind)
}

fn check_id(kind: Kind, id: u64) -> Result<(), DecodeError> {
    if kind.is_sequenced() == (id != 0) {
        Ok(())
    } else {
        Err(DecodeError::InvalidId { kind, id })
    }
}

fn check_ack_of(kind: Kind, ack_of: Option<u64>) -> Result<(), DecodeError> {
    let ok = match kind {
        Kind::Response | Kind::CertRenewResponse => matches!(ack_of, Some(n) if n > 0),
        Kind::Error => ack_of != Some(0),
        _ => ack_of.is_none(),
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidAckOf { kind, ack_of })
    }
}

fn check_routed(kind: Kind, route: &Route, frame: &Frame) -> Result<(), DecodeError> {
    let op = if kind == Kind::Tombstone {
        if !route.op.is_empty() {
            return Err(DecodeError::InvalidOp {
                kind,
                op: truncate(&route.op, 64),
            });
        }
        None
    } else {
        let op: Op = route
            .op
            .parse()
            .map_err(|source| DecodeError::UnknownOp { kind, source })?;
        if !op.allowed_for(kind) {
            return Err(DecodeError::InvalidOp {
                kind,
                op: op.as_str().to_owned(),
            });
        }
        Some(op)
    };

    if op == Some(Op::List) {
        CollectionKey::parse(&route.resource).map(drop)
    } else {
        ResourceKey::parse(&route.resource).map(drop)
    }
    .map_err(|source| DecodeError::InvalidResource { kind, source })?;

    let content_type_ok = route.content_type.is_empty()
        || (op.is_some_and(Op::is_patch)
            && PATCH_CONTENT_TYPES.contains(&route.content_type.as_str()));
    if !content_type_ok {
        return Err(DecodeError::InvalidContentType {
            content_type: truncate(&route.content_type, 64),
        });
    }

    let body_optional = kind == Kind::Request && op == Some(Op::Delete);
    let needs_body = op.is_some_and(Op::needs_body);
    match (needs_body, frame.payload.is_empty()) {
        (true, true) => return Err(DecodeError::MissingPayload { kind }),
        // A REQUEST delete may carry DeleteOptions; get/list requests,
        // tombstones and OBJECT deletes (the uid names what is removed) not.
        (false, false) if !body_optional => {
            return Err(DecodeError::UnexpectedPayload { kind });
        }
        _ => {}
    }
    if kind == Kind::Object && op == Some(Op::Delete) && frame.uid.is_empty() {
        return Err(DecodeError::MissingUid { kind });
    }
    Ok(())
}

fn check_control_payload(kind: Kind, payload: &[u8]) -> Result<(), DecodeError> {
    fn parse<T: Message + Default>(kind: Kind, payload: &[u8]) -> Result<(), DecodeError> {
        T::decode(payload)
            .map(drop)
            .map_err(|source| DecodeError::InvalidPayload { kind, source })
    }
    match kind {
        Kind::Hello => parse::<Hello>(kind, payload),
        Kind::HelloAck => parse::<HelloAck>(kind, payload),
        Kind::Inventory => parse::<Inventory>(kind, payload),
        Kind::Ack => parse::<Ack>(kind, payload),
        Kind::Ping | Kind::Pong => parse::<Ping>(kind, payload),
        Kind::Error => parse::<ErrorInfo>(kind, payload),
        Kind::Response => parse::<Response>(kind, payload),
        Kind::CertRenewRequest => parse::<CertRenewRequest>(kind, payload),
        Kind::CertRenewResponse => parse::<CertRenewResponse>(kind, payload),
        Kind::Synced if payload.is_empty() => Ok(()),
        Kind::Synced => Err(DecodeError::UnexpectedPayload { kind }),
        // Routed kinds are checked in `check_routed`; Unspecified never
        // gets here (`checked_kind` refuses it).
        Kind::Unspecified | Kind::Object | Kind::Tombstone | Kind::Request | Kind::Event => Ok(()),
    }
}
