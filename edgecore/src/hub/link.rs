//! The pure protocol logic of the link to cloudcore: [`LinkState`] takes
//! [`Event`]s (a frame arrived, a batch became durable, a timer fired...) and
//! returns [`Action`]s (send this frame, apply that batch, dial, close...).
//! It does no IO and reads no clock: every call takes `now`, so every
//! transition is a plain unit test. The IO loop in [`super`] owns the socket
//! and the timers and does what the actions say.
//!
//! Receiving: cloud OBJECT/TOMBSTONE/SYNCED frames go through an
//! [`AckTracker`] (strict order); delivered frames are batched into one
//! [`Action::Apply`] at a time (group commit); when the writer reports the
//! batch durable ([`Event::Committed`]) they are committed and acked — an ACK
//! means fsynced.
//!
//! Sending: upstream REQUEST/EVENT frames go through a [`SendWindow`];
//! cumulative ACKs release them ([`Action::Acked`]), RESPONSEs are routed to
//! the entry that caused them ([`Action::Responded`]), and frames not acked
//! in time are retransmitted.

use std::collections::VecDeque;
use std::time::Duration;

use proto::{
    AckPolicy, AckTracker, ErrorInfo, Frame, Hello, HelloAck, Kind, Ping, Receipt, Response,
    SendWindow, WindowConfig,
};
use tokio::time::Instant;

use crate::backoff::Backoff;
pub use event::{Action, Event, Outbound};

/// The lifecycle of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Dialing cloudcore (TCP, TLS, WebSocket upgrade), then HELLO sent and
    /// HELLO_ACK awaited. Entered at start and when a back-off ends; left
    /// for `Syncing` on HELLO_ACK, for `Backoff` on any failure or when no
    /// HELLO_ACK comes within the idle timeout.
    Connecting,
    /// Session established: the inventory was sent and the cloud's diff is
    /// being applied (and acked after each flush); upstream writes already
    /// flow. Left for `Live` once the SYNCED frame is durable, for `Backoff`
    /// when the session fails.
    Syncing,
    /// In sync: cloud changes are applied as they come, pings keep the
    /// session alive. Left for `Backoff` when the session fails (socket
    /// error, close, idle timeout, protocol violation).
    Live,
    /// Waiting a jittered exponential delay (capped) before dialing again.
    /// Left for `Connecting` when the delay has passed.
    Backoff,
}

impl Link {
    /// Lower-case name for logs, metrics and `edgecore status`.
    pub fn label(self) -> &'static str {
        match self {
            Link::Connecting => "connecting",
            Link::Syncing => "syncing",
            Link::Live => "live",
            Link::Backoff => "backoff",
        }
    }

    /// Every state, for the state gauge.
    pub const ALL: [Link; 4] = [Link::Connecting, Link::Syncing, Link::Live, Link::Backoff];
}

/// Tuning of the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Seconds between pings unless HELLO_ACK says otherwise.
    pub ping_interval: Duration,
    /// Silence after which the session is dropped unless HELLO_ACK says otherwise.
    pub idle_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// The upstream send window.
    pub window: WindowConfig,
    /// Most frames handed to the writer in one group commit.
    pub apply_budget: usize,
    /// Largest frame this edge sends and accepts.
    pub max_frame: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            window: WindowConfig {
                capacity: 64,
                ..WindowConfig::default()
            },
            apply_budget: 512,
            max_frame: proto::DEFAULT_MAX_FRAME,
        }
    }
}

/// One session's protocol state.
#[derive(Debug)]
struct Session {
    tracker: AckTracker<Instant>,
    window: SendWindow<Outbound, Instant>,
    /// Delivered frames not yet handed to the writer.
    pending: Vec<Frame>,
    /// A batch is with the writer.
    applying: bool,
    /// Id of the delivered SYNCED frame, until it is durable.
    synced_id: Option<u64>,
    last_heard: Instant,
    next_ping: Instant,
    ping_nonce: u64,
    ping_interval: Duration,
    idle_timeout: Duration,
    max_frame: usize,
    /// Upstream frames acked recently (id, key, seq), for a RESPONSE that
    /// arrives after the ACK covering its request.
    recent: VecDeque<(u64, String, u64)>,
    /// Id of the CERT_RENEW_REQUEST in flight, until answered.
    renew_id: Option<u64>,
}

/// The send-window key of a CERT_RENEW_REQUEST (never an outbox key: those are resource
/// keys with slashes).
pub const RENEW_KEY: &str = "cert-renew";

/// How many acked upstream frames are remembered for late RESPONSEs.
const RECENT: usize = 256;

/// The link's state machine. See the module docs.
#[derive(Debug)]
pub struct LinkState {
    link: Link,
    config: LinkConfig,
    hello: Hello,
    backoff: Backoff,
    retry_at: Option<Instant>,
    session: Option<Session>,
}

impl LinkState {
    /// A link that will announce itself with `hello`.
    pub fn new(config: LinkConfig, hello: Hello, backoff: Backoff) -> Self {
        LinkState {
            link: Link::Connecting,
            config,
            hello,
            backoff,
            retry_at: None,
            session: None,
        }
    }

    /// The current state.
    pub fn link(&self) -> Link {
        self.link
    }

    /// Replaces the HELLO of future sessions (node facts changed).
    pub fn set_hello(&mut self, hello: Hello) {
        self.hello = hello;
    }

    /// Whether an upstream frame can be sent now (session up, window not full).
    pub fn can_send(&self) -> bool {
        matches!(self.link, Link::Syncing | Link::Live)
            && self.session.as_ref().is_some_and(|s| !s.window.is_full())
    }

    /// Assigns the next upstream id to an outbox entry and returns the frame
    /// to send; `None` if [`LinkState::can_send`] is false.
    pub fn send_upstream(
        &mut self,
        key: String,
        seq: u64,
        build: impl FnOnce(u64) -> Frame,
        now: Instant,
    ) -> Option<Frame> {
        if !self.can_send() {
            return None;
        }
        let session = self.session.as_mut()?;
        let id = session.window.next_id()?;
        let frame = build(id);
        let out = Outbound {
            key,
            seq,
            frame: frame.clone(),
        };
        session.window.push(out, now).ok()?;
        Some(frame)
    }

    /// Sends a CERT_RENEW_REQUEST through the send window (sequenced, retransmitted like
    /// any upstream frame). `None` unless the link is live, the window has room and no
    /// renewal is in flight.
    pub fn send_cert_renew(&mut self, csr_pem: &str, now: Instant) -> Option<Frame> {
        if self.link != Link::Live {
            return None;
        }
        let s = self.session.as_mut()?;
        if s.renew_id.is_some() || s.window.is_full() {
            return None;
        }
        let id = s.window.next_id()?;
        let frame = Frame::cert_renew_request(id, csr_pem);
        let out = Outbound {
            key: RENEW_KEY.to_owned(),
            seq: 0,
            frame: frame.clone(),
        };
        s.window.push(out, now).ok()?;
        s.renew_id = Some(id);
        Some(frame)
    }

    /// The earliest moment a [`Event::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.link, &self.session) {
            (Link::Backoff, _) => self.retry_at,
            (_, Some(s)) => {
                let mut d = s.last_heard + s.idle_timeout;
                if self.link != Link::Connecting {
                    d = d.min(s.next_ping);
                }
                for t in [s.window.next_deadline(), s.tracker.next_deadline()]
                    .into_iter()
                    .flatten()
                {
                    d = d.min(t);
                }
                Some(d)
            }
            _ => None,
        }
    }

    /// Processes one event.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => self.dial(&mut out),
            Event::Dialed => self.on_dialed(now, &mut out),
            Event::DialFailed(reason) => self.fail(reason, now, &mut out),
            Event::Frame(frame) => self.on_frame(frame, now, &mut out),
            Event::Refused { reason } => {
                // A peer that sends garbage is broken; a fresh session resyncs.
                self.fail(format!("invalid frame from cloud: {reason}"), now, &mut out);
            }
            Event::Committed { up_to } => self.on_committed(up_to, now, &mut out),
            Event::ApplyFailed(reason) => {
                self.fail(format!("store write failed: {reason}"), now, &mut out);
            }
            Event::Closed(reason) => self.fail(reason, now, &mut out),
            Event::Tick => self.on_tick(now, &mut out),
            Event::RetryNow => {
                if self.link == Link::Backoff {
                    self.dial(&mut out);
                }
            }
        }
        out
    }

    fn set_link(&mut self, link: Link, out: &mut Vec<Action>) {
        if self.link != link {
            self.link = link;
            out.push(Action::State(link));
        }
    }

    fn dial(&mut self, out: &mut Vec<Action>) {
        self.retry_at = None;
        self.session = None;
        self.set_link(Link::Connecting, out);
        out.push(Action::Dial);
    }

    fn on_dialed(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.link != Link::Connecting {
            return;
        }
        self.session = Some(Session {
            // Ack as soon as a group commit is durable: the flush already
            // batched the frames, so one ACK per flush.
            tracker: AckTracker::new(AckPolicy {
                max_pending: 1,
                max_delay: Duration::from_millis(20),
            }),
            window: SendWindow::new(self.config.window),
            pending: Vec::new(),
            applying: false,
            synced_id: None,
            last_heard: now,
            next_ping: now + self.config.ping_interval,
            ping_nonce: 0,
            ping_interval: self.config.ping_interval,
            idle_timeout: self.config.idle_timeout,
            max_frame: self.config.max_frame,
            recent: VecDeque::new(),
            renew_id: None,
        });
        let mut hello = self.hello.clone();
        hello.min_version = proto::MIN_PROTOCOL_VERSION;
        hello.max_version = proto::MAX_PROTOCOL_VERSION;
        hello.max_frame_bytes = u32::try_from(self.config.max_frame).unwrap_or(u32::MAX);
        out.push(Action::Send(Frame::hello(&hello)));
    }

    /// Ends the session (if any) and schedules the next dial.
    fn fail(&mut self, reason: String, now: Instant, out: &mut Vec<Action>) {
        if self.link == Link::Backoff {
            return;
        }
        let began = matches!(self.link, Link::Syncing | Link::Live);
        if self.session.as_ref().is_some_and(|s| s.renew_id.is_some()) {
            out.push(Action::CertRenewAbandoned);
        }
        if began {
            // A session that got through HELLO counts as a success for the
            // back-off: the next failure starts from the initial delay again.
            self.backoff.reset();
        }
        self.session = None;
        out.push(Action::EndSession { reason, began });
        let delay = self.backoff.next_delay();
        self.retry_at = Some(now + delay);
        self.set_link(Link::Backoff, out);
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.link == Link::Backoff {
            if self.retry_at.is_some_and(|t| now >= t) {
                self.dial(out);
            }
            return;
        }
        let link = self.link;
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if now >= s.last_heard + s.idle_timeout {
            let reason = if link == Link::Connecting {
                "no HELLO_ACK from the cloud in time"
            } else {
                "cloud silent for too long (idle timeout)"
            };
            self.fail(reason.to_owned(), now, out);
            return;
        }
        if link == Link::Connecting {
            return;
        }
        if now >= s.next_ping {
            s.ping_nonce += 1;
            s.next_ping = now + s.ping_interval;
            out.push(Action::Send(Frame::ping(s.ping_nonce)));
        }
        for (_, item) in s.window.due(now) {
            out.push(Action::Send(item.frame.clone()));
        }
        if let Some(up_to) = s.tracker.poll_ack(now) {
            out.push(Action::Send(Frame::ack(up_to)));
        }
    }

    fn on_frame(&mut self, frame: Frame, now: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        s.last_heard = now;
        let kind = Kind::try_from(frame.kind).unwrap_or(Kind::Unspecified);
        if self.link == Link::Connecting {
            match kind {
                Kind::HelloAck => self.on_hello_ack(&frame, now, out),
                Kind::Error => {
                    let info = frame.control::<ErrorInfo>().unwrap_or_default();
                    let reason = format!(
                        "cloud refused the session: {} ({})",
                        info.message, info.reason
                    );
                    out.push(Action::CloudError(info));
                    self.fail(reason, now, out);
                }
                Kind::Ping => reply_pong(&frame, out),
                _ => self.fail(
                    format!("cloud sent {} before HELLO_ACK", kind.label()),
                    now,
                    out,
                ),
            }
            return;
        }
        match kind {
            Kind::Object | Kind::Tombstone | Kind::Synced => {
                match s.tracker.on_frame(frame.id) {
                    Receipt::Deliver => {
                        if kind == Kind::Synced {
                            s.synced_id = Some(frame.id);
                        }
                        s.pending.push(frame);
                        self.maybe_apply(out);
                    }
                    Receipt::Duplicate => {
                        if let Some(up_to) = s.tracker.poll_ack(now) {
                            out.push(Action::Send(Frame::ack(up_to)));
                        }
                    }
                    // Dropped; the cloud retransmits in order.
                    Receipt::Gap { .. } | Receipt::Unsequenced => {}
                }
            }
            Kind::Ack => {
                let up_to = frame.control::<proto::Ack>().map(|a| a.up_to).unwrap_or(0);
                match s.window.on_ack(up_to) {
                    Ok(released) if released.is_empty() => {}
                    Ok(released) => {
                        for (id, o) in &released {
                            if s.recent.len() == RECENT {
                                s.recent.pop_front();
                            }
                            s.recent.push_back((*id, o.key.clone(), o.seq));
                        }
                        let acked: Vec<Outbound> = released
                            .into_iter()
                            .map(|(_, o)| o)
                            .filter(|o| o.key != RENEW_KEY)
                            .collect();
                        if !acked.is_empty() {
                            out.push(Action::Acked(acked));
                        }
                    }
                    Err(e) => self.fail(format!("protocol violation: {e}"), now, out),
                }
            }
            Kind::Response => {
                let id = frame.ack_of.unwrap_or(0);
                // In flight, or acked just before its RESPONSE arrived.
                let target = s
                    .window
                    .get(id)
                    .map(|o| (o.key.clone(), o.seq))
                    .or_else(|| {
                        s.recent
                            .iter()
                            .find(|(i, _, _)| *i == id)
                            .map(|(_, k, q)| (k.clone(), *q))
                    });
                if let (Some((key, seq)), Ok(response)) = (target, frame.control::<Response>()) {
                    out.push(Action::Responded { key, seq, response });
                }
            }
            Kind::CertRenewResponse if frame.ack_of.is_some() && frame.ack_of == s.renew_id => {
                s.renew_id = None;
                match frame.control::<proto::CertRenewResponse>() {
                    Ok(response) => out.push(Action::CertRenewed(response)),
                    Err(_) => out.push(Action::CertRenewAbandoned),
                }
            }
            Kind::Ping => reply_pong(&frame, out),
            Kind::Pong => {}
            Kind::Error => {
                let info = frame.control::<ErrorInfo>().unwrap_or_default();
                if info.in_reply_to != 0 && Some(info.in_reply_to) == s.renew_id {
                    s.renew_id = None;
                    out.push(Action::CertRenewRefused(info.clone()));
                }
                out.push(Action::CloudError(info));
            }
            // HELLO_ACK again, or kinds only the edge sends: ignored and
            // counted by the IO loop through the frames-in metric.
            _ => {}
        }
    }

    fn on_hello_ack(&mut self, frame: &Frame, now: Instant, out: &mut Vec<Action>) {
        let Ok(ack) = frame.control::<HelloAck>() else {
            self.fail("invalid HELLO_ACK".to_owned(), now, out);
            return;
        };
        if let Err(e) = proto::negotiate_with_peer(ack.version, ack.version) {
            out.push(Action::CloudError(ErrorInfo {
                code: 426,
                reason: e.reason().to_owned(),
                message: e.to_string(),
                in_reply_to: 0,
            }));
            self.fail(
                format!("cloud chose protocol version {}: {e}", ack.version),
                now,
                out,
            );
            return;
        }
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if ack.ping_interval_secs > 0 {
            s.ping_interval = Duration::from_secs(u64::from(ack.ping_interval_secs));
        }
        if ack.idle_timeout_secs > 0 {
            s.idle_timeout = Duration::from_secs(u64::from(ack.idle_timeout_secs));
        }
        if ack.max_frame_bytes > 0 {
            s.max_frame = s.max_frame.min(ack.max_frame_bytes as usize);
        }
        s.next_ping = now + s.ping_interval;
        let max_frame = s.max_frame;
        self.set_link(Link::Syncing, out);
        out.push(Action::SessionUp {
            session_id: ack.session_id,
        });
        out.push(Action::SendInventory { max_frame });
    }

    fn maybe_apply(&mut self, out: &mut Vec<Action>) {
        let budget = self.config.apply_budget.max(1);
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if s.applying || s.pending.is_empty() {
            return;
        }
        let rest = if s.pending.len() > budget {
            s.pending.split_off(budget)
        } else {
            Vec::new()
        };
        let batch = std::mem::replace(&mut s.pending, rest);
        s.applying = true;
        out.push(Action::Apply(batch));
    }

    fn on_committed(&mut self, up_to: u64, now: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        s.applying = false;
        if let Err(e) = s.tracker.commit(up_to, now) {
            self.fail(format!("internal: {e}"), now, out);
            return;
        }
        if let Some(up_to) = s.tracker.poll_ack(now) {
            out.push(Action::Send(Frame::ack(up_to)));
        }
        if s.synced_id.is_some_and(|id| id <= up_to) {
            s.synced_id = None;
            self.set_link(Link::Live, out);
        }
        self.maybe_apply(out);
    }
}

fn reply_pong(frame: &Frame, out: &mut Vec<Action>) {
    let nonce = frame.control::<Ping>().map(|p| p.nonce).unwrap_or(0);
    out.push(Action::Send(Frame::pong(nonce)));
}

mod event;
#[cfg(test)]
mod tests;
