//! The inputs ([`Event`]) and outputs ([`Action`]) of [`super::LinkState`].

use proto::{ErrorInfo, Frame, Response};

use super::Link;

/// Something that happened, fed to [`super::LinkState::handle`].
#[derive(Debug, Clone)]
pub enum Event {
    /// Start (or restart after a back-off): dial.
    Start,
    /// The WebSocket is up.
    Dialed,
    /// Dialing failed.
    DialFailed(String),
    /// A valid frame arrived.
    Frame(Frame),
    /// Bytes arrived that are no valid frame (`reason` from the codec).
    Refused {
        /// Stable reason label.
        reason: &'static str,
    },
    /// The writer made every frame up to `up_to` durable.
    Committed {
        /// Highest durable frame id.
        up_to: u64,
    },
    /// The writer failed to make the batch durable.
    ApplyFailed(String),
    /// The socket closed or failed.
    Closed(String),
    /// A timer fired (or just: time passed).
    Tick,
    /// New credentials are on disk (a re-join while offline): end a back-off now.
    RetryNow,
}

/// An upstream frame in flight, and what it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The outbox key.
    pub key: String,
    /// The outbox seq of the entry version sent.
    pub seq: u64,
    /// The frame as sent (kept for retransmission).
    pub frame: Frame,
}

/// Something the IO loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Dial cloudcore; report [`Event::Dialed`] or [`Event::DialFailed`].
    Dial,
    /// Send this frame.
    Send(Frame),
    /// Start a resync: take the inventory from MetaManager and send it as
    /// INVENTORY chunks of at most `max_frame` bytes.
    SendInventory {
        /// Frame size limit agreed with the cloud.
        max_frame: usize,
    },
    /// Hand these delivered frames to MetaManager as one group commit;
    /// report [`Event::Committed`] or [`Event::ApplyFailed`].
    Apply(Vec<Frame>),
    /// The cloud acked these upstream frames.
    Acked(Vec<Outbound>),
    /// A RESPONSE came for an upstream frame.
    Responded {
        /// The outbox key.
        key: String,
        /// The outbox seq.
        seq: u64,
        /// The result.
        response: Response,
    },
    /// The cloud answered the certificate renewal in flight.
    CertRenewed(proto::CertRenewResponse),
    /// The cloud refused the certificate renewal in flight.
    CertRenewRefused(ErrorInfo),
    /// The session ended with a certificate renewal in flight.
    CertRenewAbandoned,
    /// The cloud sent an ERROR: log and count it.
    CloudError(ErrorInfo),
    /// The link changed state (for metrics, status and the node reporter).
    State(Link),
    /// The session is up (HELLO_ACK received): its id.
    SessionUp {
        /// The cloud's session id.
        session_id: String,
    },
    /// The session ended: close the socket (if any) with this reason, tell
    /// MetaManager and requeue unacked outbox entries.
    EndSession {
        /// Why.
        reason: String,
        /// Whether the session had begun a resync (MetaManager must be told).
        began: bool,
    },
}
