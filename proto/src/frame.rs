//! Building and reading [`Frame`]s: one constructor per kind, typed access
//! to control payloads ([`Frame::control`]), and the [`Op`] enum.
//!
//! Constructors fill exactly the fields the kind needs (see `kedge.proto`),
//! so a frame built here always passes [`crate::codec::validate`] as long as
//! the arguments are valid (a non-zero id for sequenced kinds, a JSON body
//! where the op needs one). Control payloads are read with
//! `frame.control::<Hello>()` — the constructors already own the names
//! `Frame::hello`, `Frame::ack`, ...

mod op;

use prost::Message;

pub(crate) use op::truncate;
pub use op::{JSON_PATCH, MERGE_PATCH, Op, PATCH_CONTENT_TYPES, STRATEGIC_MERGE_PATCH, UnknownOp};

use crate::codec::DecodeError;
use crate::key::{CollectionKey, ResourceKey};
use crate::pb::{
    Ack, CertRenewRequest, CertRenewResponse, ErrorInfo, Frame, Hello, HelloAck, Inventory,
    InventoryEntry, Kind, Ping, Response, Route,
};

impl Kind {
    /// Whether frames of this kind carry an id > 0 and wait for an ACK.
    pub fn is_sequenced(self) -> bool {
        matches!(
            self,
            Kind::Object
                | Kind::Tombstone
                | Kind::Synced
                | Kind::Request
                | Kind::Event
                | Kind::CertRenewRequest
        )
    }

    /// Whether frames of this kind carry a `Route` (and a resource key).
    pub fn has_route(self) -> bool {
        matches!(
            self,
            Kind::Object | Kind::Tombstone | Kind::Request | Kind::Event
        )
    }

    /// Short lower-case name, for logs and metric labels (`"hello_ack"`).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Unspecified => "unspecified",
            Kind::Hello => "hello",
            Kind::HelloAck => "hello_ack",
            Kind::Inventory => "inventory",
            Kind::Ack => "ack",
            Kind::Ping => "ping",
            Kind::Pong => "pong",
            Kind::Object => "object",
            Kind::Tombstone => "tombstone",
            Kind::Synced => "synced",
            Kind::Request => "request",
            Kind::Response => "response",
            Kind::Event => "event",
            Kind::Error => "error",
            Kind::CertRenewRequest => "cert_renew_request",
            Kind::CertRenewResponse => "cert_renew_response",
        }
    }
}

/// A protobuf control message carried in `Frame.payload`, and the kinds
/// that carry it. Used by [`Frame::control`].
pub trait Control: Message + Default {
    /// The frame kinds whose payload is this message.
    const KINDS: &'static [Kind];
}

macro_rules! control {
    ($($ty:ty => [$($kind:ident),+];)+) => {
        $(impl Control for $ty {
            const KINDS: &'static [Kind] = &[$(Kind::$kind),+];
        })+
    };
}

control! {
    Hello => [Hello];
    HelloAck => [HelloAck];
    Inventory => [Inventory];
    Ack => [Ack];
    Ping => [Ping, Pong];
    ErrorInfo => [Error];
    Response => [Response];
    CertRenewRequest => [CertRenewRequest];
    CertRenewResponse => [CertRenewResponse];
}

impl Frame {
    fn control_frame(kind: Kind, msg: &impl Message) -> Frame {
        Frame {
            kind: kind as i32,
            payload: msg.encode_to_vec(),
            ..Frame::default()
        }
    }

    fn routed(id: u64, kind: Kind, op: Option<Op>, resource: String, payload: Vec<u8>) -> Frame {
        Frame {
            id,
            kind: kind as i32,
            route: Some(Route {
                op: op.map(|o| o.as_str().to_owned()).unwrap_or_default(),
                resource,
                content_type: String::new(),
            }),
            payload,
            ..Frame::default()
        }
    }

    /// HELLO, the edge's first frame.
    pub fn hello(hello: &Hello) -> Frame {
        Self::control_frame(Kind::Hello, hello)
    }

    /// HELLO_ACK, the cloud's answer to HELLO.
    pub fn hello_ack(ack: &HelloAck) -> Frame {
        Self::control_frame(Kind::HelloAck, ack)
    }

    /// One INVENTORY chunk; see [`inventory_frames`] to split a large one.
    pub fn inventory(inventory: &Inventory) -> Frame {
        Self::control_frame(Kind::Inventory, inventory)
    }

    /// ACK of every sequenced peer frame with id <= `up_to`.
    pub fn ack(up_to: u64) -> Frame {
        Self::control_frame(Kind::Ack, &Ack { up_to })
    }

    /// PING with a nonce the PONG echoes.
    pub fn ping(nonce: u64) -> Frame {
        Self::control_frame(Kind::Ping, &Ping { nonce })
    }

    /// PONG answering the PING with `nonce`.
    pub fn pong(nonce: u64) -> Frame {
        Self::control_frame(Kind::Pong, &Ping { nonce })
    }

    /// OBJECT upsert: store `json` (the object as the API returned it).
    pub fn upsert(id: u64, key: &ResourceKey, uid: &str, rv: &str, json: Vec<u8>) -> Frame {
        let mut f = Self::routed(id, Kind::Object, Some(Op::Upsert), key.to_string(), json);
        f.uid = uid.to_owned();
        f.resource_version = rv.to_owned();
        f
    }

    /// OBJECT upsert without a uid (the edge reads it from the JSON if needed).
    pub fn object(id: u64, key: &ResourceKey, rv: &str, json: Vec<u8>) -> Frame {
        Self::upsert(id, key, "", rv, json)
    }

    /// OBJECT delete of the incarnation `uid` of `key`, last seen at `rv`.
    pub fn delete(id: u64, key: &ResourceKey, uid: &str, rv: &str) -> Frame {
        let mut f = Self::routed(
            id,
            Kind::Object,
            Some(Op::Delete),
            key.to_string(),
            Vec::new(),
        );
        f.uid = uid.to_owned();
        f.resource_version = rv.to_owned();
        f
    }

    /// TOMBSTONE: `key` is known not to exist.
    pub fn tombstone(id: u64, key: &ResourceKey) -> Frame {
        Self::routed(id, Kind::Tombstone, None, key.to_string(), Vec::new())
    }

    /// SYNCED: the inventory diff is complete up to this frame.
    pub fn synced(id: u64) -> Frame {
        Frame {
            id,
            kind: Kind::Synced as i32,
            ..Frame::default()
        }
    }

    /// REQUEST `op` on one object; `body` is JSON (empty for get/delete).
    /// For patches, set the patch type with [`Frame::with_content_type`].
    pub fn request(id: u64, op: Op, key: &ResourceKey, body: Vec<u8>) -> Frame {
        Self::routed(id, Kind::Request, Some(op), key.to_string(), body)
    }

    /// REQUEST "list" of a collection.
    pub fn list(id: u64, collection: &CollectionKey) -> Frame {
        Self::routed(
            id,
            Kind::Request,
            Some(Op::List),
            collection.to_string(),
            Vec::new(),
        )
    }

    /// RESPONSE to the REQUEST with id `request_id`.
    pub fn response(request_id: u64, response: &Response) -> Frame {
        let mut f = Self::control_frame(Kind::Response, response);
        f.ack_of = Some(request_id);
        f
    }

    /// EVENT: a Kubernetes Event object (`json`) created/updated/patched.
    pub fn event(id: u64, op: Op, key: &ResourceKey, json: Vec<u8>) -> Frame {
        Self::routed(id, Kind::Event, Some(op), key.to_string(), json)
    }

    /// ERROR; `ack_of` is set from `info.in_reply_to` when it is non-zero.
    pub fn error(info: &ErrorInfo) -> Frame {
        let mut f = Self::control_frame(Kind::Error, info);
        f.ack_of = (info.in_reply_to != 0).then_some(info.in_reply_to);
        f
    }

    /// CERT_RENEW_REQUEST carrying a PEM CSR.
    pub fn cert_renew_request(id: u64, csr_pem: &str) -> Frame {
        let mut f = Self::control_frame(
            Kind::CertRenewRequest,
            &CertRenewRequest {
                csr_pem: csr_pem.to_owned(),
            },
        );
        f.id = id;
        f
    }

    /// CERT_RENEW_RESPONSE to the request with id `request_id`.
    pub fn cert_renew_response(request_id: u64, response: &CertRenewResponse) -> Frame {
        let mut f = Self::control_frame(Kind::CertRenewResponse, response);
        f.ack_of = Some(request_id);
        f
    }

    /// Sets `Route.content_type` (patch media type); no-op without a route.
    pub fn with_content_type(mut self, content_type: &str) -> Frame {
        if let Some(route) = &mut self.route {
            content_type.clone_into(&mut route.content_type);
        }
        self
    }

    /// Sets `resource_version` (e.g. on a RESPONSE).
    pub fn with_resource_version(mut self, rv: &str) -> Frame {
        rv.clone_into(&mut self.resource_version);
        self
    }

    /// The kind, or an error for values this build does not know.
    pub fn checked_kind(&self) -> Result<Kind, DecodeError> {
        match Kind::try_from(self.kind) {
            Ok(Kind::Unspecified) => Err(DecodeError::MissingKind),
            Ok(kind) => Ok(kind),
            Err(_) => Err(DecodeError::UnknownKind(self.kind)),
        }
    }

    /// Decodes the control payload as `T`, checking the frame's kind first.
    pub fn control<T: Control>(&self) -> Result<T, DecodeError> {
        let kind = self.checked_kind()?;
        if !T::KINDS.contains(&kind) {
            return Err(DecodeError::WrongKind {
                expected: T::KINDS,
                actual: kind,
            });
        }
        T::decode(self.payload.as_slice())
            .map_err(|source| DecodeError::InvalidPayload { kind, source })
    }

    /// `Route.op` parsed, for routed kinds.
    pub fn op(&self) -> Result<Op, DecodeError> {
        let kind = self.checked_kind()?;
        let route = self
            .route
            .as_ref()
            .ok_or(DecodeError::MissingRoute { kind })?;
        route
            .op
            .parse()
            .map_err(|source| DecodeError::UnknownOp { kind, source })
    }

    /// `Route.resource` parsed as an object key (not valid for "list").
    pub fn key(&self) -> Result<ResourceKey, DecodeError> {
        let kind = self.checked_kind()?;
        let route = self
            .route
            .as_ref()
            .ok_or(DecodeError::MissingRoute { kind })?;
        ResourceKey::parse(&route.resource)
            .map_err(|source| DecodeError::InvalidResource { kind, source })
    }
}

/// Bytes kept free in each chunk for the envelope and the chunk fields.
const INVENTORY_OVERHEAD: usize = 64;

/// Splits an inventory into INVENTORY frames that each encode to at most
/// `max_frame` bytes (chunks numbered from 0, the last one `complete`).
/// Always returns at least one frame, so an empty store still reports.
pub fn inventory_frames(
    entries: impl IntoIterator<Item = InventoryEntry>,
    max_frame: usize,
) -> Vec<Frame> {
    let budget = max_frame.saturating_sub(INVENTORY_OVERHEAD);
    let mut chunks: Vec<Inventory> = Vec::new();
    let mut current = Inventory::default();
    let mut used = 0usize;
    for entry in entries {
        let len = entry.encoded_len();
        // tag byte + length varint + the entry itself
        let cost = 1 + prost::length_delimiter_len(len) + len;
        if used + cost > budget && !current.entries.is_empty() {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        used += cost;
        current.entries.push(entry);
    }
    chunks.push(current);
    let last = chunks.len() - 1;
    chunks
        .iter_mut()
        .enumerate()
        .map(|(i, inv)| {
            inv.chunk = u32::try_from(i).unwrap_or(u32::MAX);
            inv.complete = i == last;
            Frame::inventory(inv)
        })
        .collect()
}

#[cfg(test)]
mod tests;
