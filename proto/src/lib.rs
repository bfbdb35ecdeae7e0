//! The kedge wire crate: every message that crosses the cloud-edge link and
//! the pure logic both ends share. It does no IO.
//!
//! Where to start reading:
//! - [`pb`]: the generated protobuf types (`kedge.proto`): [`Frame`], [`Kind`],
//!   the control messages ([`Hello`], [`Ack`], [`Inventory`], ...).
//! - [`frame`]: constructors per kind ([`Frame::upsert`], [`Frame::ack`], ...),
//!   typed payload accessors ([`Frame::hello`]) and the [`Op`] enum.
//! - [`codec`]: [`codec::encode`] / [`codec::decode`] with size limits and
//!   per-kind validation; errors carry a stable [`codec::DecodeError::reason`].
//! - [`version`]: protocol versions and [`version::negotiate`].
//! - [`key`]: resource keys `<namespace>/<kind>/<name>` ([`ResourceKey`]).
//! - [`window`] and [`ack`]: the sender's in-flight window with retransmit
//!   back-off ([`SendWindow`]) and the receiver's cumulative-ack bookkeeping
//!   ([`AckTracker`]) — the "nothing lost" core of the sync protocol.
//!
//! Sequencing rule (see `kedge.proto`): each direction of a session numbers
//! its sequenced frames 1, 2, 3...; everything else carries id 0.
//!
//! One object from cloud to edge and its ACK back, with no sockets:
//!
//! ```
//! use std::time::Instant;
//! use proto::{
//!     Ack, AckPolicy, AckTracker, Frame, Limits, Receipt, ResourceKey, SendWindow, WindowConfig,
//!     decode, encode,
//! };
//!
//! let now = Instant::now();
//! // cloud: the window numbers the frame and keeps it until acked
//! let mut window: SendWindow<ResourceKey> = SendWindow::new(WindowConfig::default());
//! let key = ResourceKey::parse("default/pod/nginx")?;
//! let id = window.push(key.clone(), now).map_err(|r| r.error)?;
//! let wire = encode(&Frame::upsert(id, &key, "uid-1", "7", br#"{"kind":"Pod"}"#.to_vec()));
//!
//! // edge: deliver in order, store + flush, then ack what is durable
//! let mut tracker: AckTracker = AckTracker::new(AckPolicy { max_pending: 1, ..Default::default() });
//! let frame = decode(&wire, Limits::default())?;
//! assert_eq!(tracker.on_frame(frame.id), Receipt::Deliver);
//! tracker.commit(frame.id, now)?;
//! let up_to = tracker.poll_ack(now).ok_or("ack due")?;
//! let wire = encode(&Frame::ack(up_to));
//!
//! // cloud: the ACK releases the frame
//! let ack = decode(&wire, Limits::default())?.control::<Ack>()?;
//! assert_eq!(window.on_ack(ack.up_to)?, vec![(1, key)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod ack;
pub mod codec;
pub mod frame;
pub mod key;
pub mod version;
pub mod window;

/// Generated protobuf types of package `kedge.v1` (from `proto/kedge.proto`).
///
/// Field and message documentation comes from the `.proto` comments.
#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/kedge.v1.rs"));
}

pub use ack::{AckError, AckPolicy, AckTracker, Receipt};
pub use codec::{
    DEFAULT_MAX_FRAME, DecodeError, EncodeError, Limits, decode, encode, encode_checked, validate,
};
pub use frame::{Control, Op, UnknownOp, inventory_frames};
pub use key::{CollectionKey, KeyError, ObjectIdentity, ResourceKey};
pub use pb::{
    Ack, CertRenewRequest, CertRenewResponse, ErrorInfo, Frame, Hello, HelloAck, Inventory,
    InventoryEntry, Kind, NodeAddress, NodeInfo, Ping, Response, Route,
};
pub use version::{
    MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, VersionError, negotiate,
    negotiate_with_peer,
};
pub use window::{Rejected, SendWindow, Timestamp, WindowConfig, WindowError};
