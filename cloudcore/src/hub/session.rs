//! One node's session: the event loop that owns its WebSocket, timers, the
//! cloud -> edge [`Queue`] and the edge -> cloud [`AckTracker`].
//!
//! Tasks and channels per session (so a slow or dead node never holds up
//! another): the session task (this loop) and a writer task fed through a
//! bounded channel. The loop never awaits the socket or the API inline: it
//! `select!`s over the socket, a writer permit, the one upstream API call
//! in progress, the cache's change feed and one timer.
//!
//! Order of a session ([`Phase`]): HELLO -> HELLO_ACK (Syncing) -> INVENTORY
//! chunks -> wait for the caches' first list -> diff + SYNCED (Live) ->
//! follow the change feed. Upstream REQUEST / EVENT frames are delivered in
//! order by the tracker, authorised, run (status patches and Event creates of
//! different objects up to [`MAX_RUNNING`] at once, everything else one at a time; see
//! `requests`), answered and acked in order only once their API call finished
//! (see `upstream`); they wait while the caches are not synced, since
//! authorisation reads them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, OptionFuture};
use futures::stream::FuturesOrdered;
use futures::{SinkExt, StreamExt};
use proto::{AckPolicy, AckTracker, ErrorInfo, Frame, Kind, Limits, Ping, WindowConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

mod link;
mod requests;

use super::Shared;
use super::identity::PeerIdentity;
use super::metrics::{DirectionLabel, ReasonLabel};
use super::phase::{Admission, CloseReason, GarbageMeter, InventoryCollector, Phase, admit};
use super::queue::{Popped, Queue};
use crate::edge::{NodeChange, NodeFeed};
use requests::Done;

/// Frames waiting for the writer task.
const WRITER_CAPACITY: usize = 64;
/// Control frames (responses, acks, pongs, retransmissions) waiting to be
/// written; an edge that lets more pile up is not reading.
const URGENT_MAX: usize = 4096;
/// Delivered edge requests waiting to run; further ones are not delivered
/// (the edge retransmits them).
const MAX_QUEUED_REQUESTS: usize = 512;
/// Upstream API calls of one session running at once (status patches and Event creates
/// of different objects; see `requests`). One edge's device and pod statuses must not wait for each
/// other's durable API write one by one.
const MAX_RUNNING: usize = 16;
/// Refusals handled per loop turn before yielding to other events.
const REFUSAL_BUDGET: usize = 64;
/// Inventory entries a node may report.
const MAX_INVENTORY: usize = 1_000_000;
/// Undecodable frames tolerated per minute.
const GARBAGE_PER_MINUTE: usize = 20;
/// How long the writer may take to flush the goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a synced cache may take to learn of the node before the
/// session is refused as `unknown_node`.
const NODE_WAIT: Duration = Duration::from_secs(10);
/// How long a session's diff waits for the node's referenced objects that
/// the cache is still fetching.
const REFS_WAIT: Duration = Duration::from_secs(5);
/// Interval of the Node / Lease heartbeat while the edge is heard from.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a heartbeat's API calls may take once they started.
const HEARTBEAT_CALL: Duration = Duration::from_secs(30);

/// Why a heartbeat gave up.
enum Late {
    /// No API permit within one interval: nothing was sent (the next heartbeat tries).
    Busy,
    /// The API calls started and took longer than [`HEARTBEAT_CALL`].
    Call,
}

/// How long a heartbeat may trust the last full check of the Node for a lifecycle `grace`
/// (renewing only the Lease meanwhile): never past the grace minus one heartbeat interval and
/// a margin, so a node the lifecycle controller could have marked Unknown is always re-read;
/// at most 30 s. Zero — read the Node on every heartbeat — when the grace is short.
pub fn node_check_for(grace: Duration) -> Duration {
    grace
        .saturating_sub(HEARTBEAT + Duration::from_secs(5))
        .min(Duration::from_secs(30))
}

/// The cloud -> edge window.
pub(super) fn window_config() -> WindowConfig {
    WindowConfig::default()
}

/// Runs a session until it ends; the caller registered it in `shared`.
pub(super) async fn run<S>(
    shared: Arc<Shared>,
    ws: WebSocketStream<S>,
    peer: PeerIdentity,
    seq: u64,
    replaced: CancellationToken,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel(WRITER_CAPACITY);
    let writer = tokio::spawn(write_loop(sink, out_rx));
    let ended = CancellationToken::new();
    let _ended_guard = ended.clone().drop_guard();
    let mut s = Session::new(shared.clone(), &peer, seq, ended);
    shared.metrics.phase(None, Phase::Handshake);
    tracing::info!("edge connected");

    let reason = loop {
        s.turn(Instant::now());
        let wake = s.next_wake();
        let want_send = !s.urgent.is_empty() || s.queue.can_send();
        // Unbiased: a chatty edge must not starve our writes, nor a big
        // sync starve reading the edge's acks.
        let event = tokio::select! {
            _ = replaced.cancelled() => Event::Close(CloseReason::Replaced),
            _ = shutdown.cancelled() => Event::Close(CloseReason::Shutdown),
            msg = stream.next() => Event::Socket(msg),
            permit = out_tx.reserve(), if want_send => match permit {
                Ok(permit) => Event::Writable(permit),
                Err(_) => Event::Close(CloseReason::WriteFailed),
            },
            Some(done) = s.running.next(), if !s.running.is_empty() => Event::Done(done),
            Some(known) = OptionFuture::from(s.sync_wait.as_mut()), if s.sync_wait.is_some() => Event::CacheReady(known),
            change = recv(&mut s.feed), if s.feed.is_some() => Event::Change(change),
            () = sleep_until(wake) => Event::Timer,
        };
        let now = Instant::now();
        let closed = match event {
            Event::Close(reason) => Some(reason),
            Event::Socket(None) => Some(CloseReason::PeerClosed),
            Event::Socket(Some(Err(WsError::Capacity(e)))) => {
                shared.metrics.refuse("oversized");
                tracing::warn!(error = %e, "oversized WebSocket message");
                Some(CloseReason::Oversized)
            }
            Event::Socket(Some(Err(e))) => {
                tracing::debug!(error = %e, "WebSocket read failed");
                Some(CloseReason::PeerClosed)
            }
            Event::Socket(Some(Ok(msg))) => s.on_message(msg, now),
            Event::Writable(permit) => {
                s.send_one(permit, now);
                None
            }
            Event::Done(done) => {
                s.running_keys.pop_front();
                s.on_done(done, now);
                None
            }
            Event::CacheReady(true) => {
                s.sync_wait = None;
                s.refs_waited = true;
                s.try_sync();
                None
            }
            Event::CacheReady(false) => {
                shared.metrics.refuse("unknown_node");
                Some(CloseReason::UnknownNode)
            }
            Event::Change(change) => s.on_change(change),
            Event::Timer => s.on_timer(now),
        };
        if let Some(reason) = closed {
            break reason;
        }
        if s.urgent.len() > URGENT_MAX {
            break CloseReason::WriteFailed;
        }
    };

    tracing::info!(reason = reason.label(), "session closed");
    let metrics = &shared.metrics;
    metrics
        .closed
        .get_or_create(&ReasonLabel {
            reason: reason.label().to_owned(),
        })
        .inc();
    metrics.phase(Some(s.phase), Phase::Closed);
    metrics.queue_depth.dec_by(s.reported_depth);
    // Best effort: what was queued (e.g. the ERROR naming a violation), then why.
    for (_, wire) in s.urgent.drain(..) {
        if out_tx.try_send(Message::Binary(wire)).is_err() {
            break;
        }
    }
    drop(s);
    shared.note_queued_bytes();
    if let Some(info) = reason.error_info() {
        let _ = out_tx.try_send(Message::Binary(Bytes::from(proto::encode(&Frame::error(
            &info,
        )))));
    }
    let code = match reason {
        CloseReason::Oversized => CloseCode::Size,
        CloseReason::Protocol(_) | CloseReason::Garbage => CloseCode::Policy,
        CloseReason::Shutdown => CloseCode::Away,
        _ => CloseCode::Normal,
    };
    let _ = out_tx.try_send(Message::Close(Some(CloseFrame {
        code,
        reason: reason.label().into(),
    })));
    drop(out_tx);
    let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
    shared.unregister(&peer.node, seq);
}

/// What woke the session loop.
enum Event<'a> {
    Close(CloseReason),
    Socket(Option<Result<Message, WsError>>),
    Writable(mpsc::Permit<'a, Message>),
    Done(Done),
    /// The caches are synced; whether they know the node.
    CacheReady(bool),
    Change(Result<NodeChange, broadcast::error::RecvError>),
    Timer,
}

/// Writes queued messages, flushing whenever the queue runs dry.
async fn write_loop<S>(
    mut sink: futures::stream::SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Message>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    'outer: while let Some(mut msg) = rx.recv().await {
        loop {
            let close = matches!(msg, Message::Close(_));
            if sink.feed(msg).await.is_err() || close {
                break 'outer;
            }
            match rx.try_recv() {
                Ok(next) => msg = next,
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

async fn recv(feed: &mut Option<NodeFeed>) -> Result<NodeChange, broadcast::error::RecvError> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The state of one session's loop.
struct Session {
    shared: Arc<Shared>,
    node: String,
    session_id: String,
    phase: Phase,
    /// Frames to write before anything from the queue.
    urgent: VecDeque<(Kind, Bytes)>,
    queue: Queue<Instant>,
    tracker: AckTracker<Instant>,
    inventory: InventoryCollector,
    /// The complete inventory, until the diff consumed it.
    held: Option<Vec<proto::InventoryEntry>>,
    sync_wait: Option<BoxFuture<'static, bool>>,
    /// The wait for the node's pending references is over (bounded: a
    /// reference that never resolves must not keep the session syncing).
    refs_waited: bool,
    feed: Option<NodeFeed>,
    requests: VecDeque<requests::Queued>,
    /// Bytes of the hub's queued-request budget the queued requests hold.
    queued_bytes: usize,
    /// Ids of queued requests a newer one for the same object replaced (acked in order
    /// without their API call; see `requests::coalesces`).
    superseded: std::collections::HashSet<u64>,
    /// Upstream calls in progress; results come out in the order they were started.
    running: FuturesOrdered<BoxFuture<'static, Done>>,
    /// What each running call writes (`None`: it must run alone), in `running`'s order.
    running_keys: VecDeque<Option<String>>,
    garbage: GarbageMeter<Instant>,
    last_rx: Instant,
    next_ping: Instant,
    nonce: u64,
    /// Serial of the client certificate (revocation is checked while live).
    serial: String,
    /// notAfter (Unix seconds) of the client certificate: the session ends with it.
    not_after: i64,
    /// Consecutive checks that found no Node object.
    node_missing: u8,
    /// Set once the Node and Lease were created for this session.
    registered: Arc<AtomicBool>,
    /// A heartbeat call is running.
    beating: Arc<AtomicBool>,
    /// The last full heartbeat's check of the Node (see `lifecycle::heartbeat_with`).
    checked: Arc<std::sync::Mutex<Option<crate::lifecycle::NodeChecked>>>,
    /// When the edge's own renewal of its Lease last succeeded through this session.
    edge_renewed: Arc<std::sync::Mutex<Option<Instant>>>,
    next_heartbeat: Instant,
    edge_limits: Limits,
    reported_depth: i64,
    /// Cancelled when the session ends (stops helper tasks).
    ended: CancellationToken,
}

impl Session {
    fn new(shared: Arc<Shared>, peer: &PeerIdentity, seq: u64, ended: CancellationToken) -> Self {
        let now = Instant::now();
        let node = peer.node.clone();
        let session_id = format!("{node}-{seq}-{:08x}", rand::random::<u32>());
        Session {
            node,
            session_id,
            phase: Phase::Handshake,
            urgent: VecDeque::new(),
            queue: Queue::new(window_config(), Limits::default()),
            tracker: AckTracker::new(AckPolicy::default()),
            inventory: InventoryCollector::new(MAX_INVENTORY),
            held: None,
            sync_wait: None,
            refs_waited: false,
            feed: None,
            requests: VecDeque::new(),
            queued_bytes: 0,
            superseded: std::collections::HashSet::new(),
            running: FuturesOrdered::new(),
            running_keys: VecDeque::new(),
            garbage: GarbageMeter::new(GARBAGE_PER_MINUTE, Duration::from_secs(60)),
            last_rx: now,
            next_ping: now + shared.cfg.ping,
            nonce: 0,
            serial: peer.serial_hex.clone(),
            not_after: peer.not_after,
            node_missing: 0,
            registered: Arc::new(AtomicBool::new(false)),
            beating: Arc::new(AtomicBool::new(false)),
            checked: Arc::new(std::sync::Mutex::new(None)),
            edge_renewed: Arc::new(std::sync::Mutex::new(None)),
            next_heartbeat: now + HEARTBEAT,
            edge_limits: Limits::default(),
            reported_depth: 0,
            ended,
            shared,
        }
    }

    fn set_phase(&mut self, to: Phase) {
        self.shared.metrics.phase(Some(self.phase), to);
        tracing::debug!(from = self.phase.label(), to = to.label(), "session phase");
        self.phase = to;
    }

    /// Queues a control frame (encoded within the edge's limit).
    fn push(&mut self, frame: &Frame) {
        let kind = frame.checked_kind().unwrap_or(Kind::Unspecified);
        self.urgent
            .push_back((kind, Bytes::from(proto::encode(frame))));
    }

    fn error(&mut self, code: u32, reason: &str, message: impl Into<String>, in_reply_to: u64) {
        self.push(&Frame::error(&ErrorInfo {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            in_reply_to,
        }));
    }

    /// Work due after every event: start requests, send acks, metrics.
    fn turn(&mut self, now: Instant) {
        self.start_requests(now);
        if let Some(up_to) = self.tracker.poll_ack(now) {
            self.push(&Frame::ack(up_to));
            self.shared
                .metrics
                .acks
                .get_or_create(&DirectionLabel { direction: "sent" })
                .inc();
        }
        let depth = i64::try_from(self.queue.depth()).unwrap_or(i64::MAX);
        self.shared
            .metrics
            .queue_depth
            .inc_by(depth - self.reported_depth);
        self.reported_depth = depth;
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.last_rx + self.shared.cfg.idle;
        if self.phase != Phase::Handshake {
            wake = wake.min(self.next_ping).min(self.next_heartbeat);
        }
        for t in [self.queue.next_deadline(), self.tracker.next_deadline()]
            .into_iter()
            .flatten()
        {
            wake = wake.min(t);
        }
        wake
    }

    fn on_timer(&mut self, now: Instant) -> Option<CloseReason> {
        if now >= self.last_rx + self.shared.cfg.idle {
            return Some(CloseReason::Idle);
        }
        if self.phase != Phase::Handshake && now >= self.next_ping {
            self.nonce = self.nonce.wrapping_add(1);
            self.push(&Frame::ping(self.nonce));
            self.next_ping = now + self.shared.cfg.ping;
        }
        if self.phase != Phase::Handshake && now >= self.next_heartbeat {
            self.next_heartbeat = now + HEARTBEAT;
            if let Some(reason) = self.still_admitted() {
                return Some(reason);
            }
            self.heartbeat(now);
        }
        let room = self.queue.in_flight().saturating_mul(2).max(64);
        for sent in self.queue.due(now) {
            if self.urgent.len() < room {
                self.shared.metrics.retransmits.inc();
                self.urgent.push_back((sent.kind, sent.wire));
            }
        }
        None
    }

    /// Whether the node may keep its session: its certificate must not be
    /// revoked nor expired, and its Node must exist once it was created (two checks in
    /// a row, so a Node the cache has not seen yet is not mistaken for a
    /// deleted one). The change feed reports a deletion sooner; this also
    /// covers a lagged feed.
    fn still_admitted(&mut self) -> Option<CloseReason> {
        if self.shared.bootstrap.is_revoked(&self.serial) {
            return Some(CloseReason::Revoked);
        }
        if crate::join::unix_now() > self.not_after {
            return Some(CloseReason::CertificateExpired);
        }
        let cache = &self.shared.cache;
        if !self.registered.load(Ordering::Acquire) || !cache.is_synced() {
            return None;
        }
        if cache.node_exists(&self.node) {
            self.node_missing = 0;
            return None;
        }
        self.node_missing = self.node_missing.saturating_add(1);
        (self.node_missing >= 2).then_some(CloseReason::NodeDeleted)
    }

    /// Keeps the Lease (and Ready) fresh while the edge is heard from: the
    /// edge pings every `ping`, so silence longer than that plus a margin
    /// stops the heartbeat well before the idle timeout drops the session.
    /// An edge that renews its own Lease through the session (edgecore does,
    /// every status interval, as the kubelet does) is left to it — one
    /// renewal per interval, not two — and the hub only checks the Node;
    /// the hub renews when the edge's renewals stop arriving.
    fn heartbeat(&self, now: Instant) {
        let heard_recently =
            now.duration_since(self.last_rx) <= self.shared.cfg.ping + Duration::from_secs(5);
        if !heard_recently
            || !self.registered.load(Ordering::Acquire)
            || self.beating.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let lease = if self
            .edge_renewed
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| now.duration_since(t) <= HEARTBEAT + Duration::from_secs(5))
        {
            crate::lifecycle::LeaseRenewal::Edge
        } else {
            crate::lifecycle::LeaseRenewal::Hub
        };
        let last_fresh = self
            .checked
            .lock()
            .ok()
            .and_then(|c| {
                c.as_ref()
                    .map(|c| c.at.elapsed() < self.shared.cfg.node_check)
            })
            .unwrap_or(false);
        // The Node watch shows Ready=True: a read of the Node would only confirm it (a
        // lifecycle controller's Unknown reaches the cache within the watch's latency, and
        // the next heartbeat then reads and heals it).
        let ready = || self.shared.cache.node_ready(&self.node) == Some(true);
        if lease == crate::lifecycle::LeaseRenewal::Edge && (last_fresh || ready()) {
            // Nothing is due: no task, no API permit.
            self.shared.metrics.heartbeat("edge");
            self.beating.store(false, Ordering::Release);
            return;
        }
        let shared = self.shared.clone();
        let node = self.node.clone();
        let beating = self.beating.clone();
        let ended = self.ended.clone();
        let checked = self.checked.clone();
        tokio::spawn(async move {
            let last = checked.lock().ok().and_then(|c| c.clone());
            let outcome = tokio::select! {
                _ = ended.cancelled() => None,
                r = async {
                    // Waiting for a permit past the interval: the next heartbeat will do.
                    // A call that started is given longer (cancelling requests in flight
                    // costs the API server their work and the client its connection).
                    let Ok(_permit) = tokio::time::timeout(HEARTBEAT, shared.heartbeat_permit()).await else {
                        return Err(Late::Busy);
                    };
                    tokio::time::timeout(
                        HEARTBEAT_CALL,
                        crate::lifecycle::heartbeat_with(&shared.client, &node, last.as_ref(), shared.cfg.node_check, lease),
                    )
                    .await
                    .map_err(|_| Late::Call)
                } => Some(match r {
                    Ok(Ok((c, called))) => {
                        // A Lease-only renewal hands back the last check as it was.
                        let fresh = last.as_ref().is_none_or(|l| l.at != c.at);
                        shared.metrics.heartbeat(match (fresh, called) {
                            (true, _) => "checked",
                            (false, true) => "lease",
                            (false, false) => "edge",
                        });
                        Some(c)
                    }
                    Ok(Err(e)) => {
                        shared.metrics.heartbeat("failed");
                        tracing::warn!(node = %node, error = %e, "node heartbeat failed");
                        None
                    }
                    Err(Late::Busy) => {
                        // No API call was made: every permit was taken for a whole interval.
                        shared.metrics.heartbeat("busy");
                        tracing::debug!(node = %node, "node heartbeat skipped: no API permit");
                        None
                    }
                    Err(Late::Call) => {
                        shared.metrics.heartbeat("timeout");
                        tracing::warn!(node = %node, "node heartbeat timed out");
                        None
                    }
                }),
            };
            // A failed or timed-out renewal may have let the Lease go stale: the next
            // heartbeat reads the Node again.
            if let (Some(c), Ok(mut slot)) = (outcome, checked.lock()) {
                *slot = c;
            }
            beating.store(false, Ordering::Release);
        });
    }

    fn send_one(&mut self, permit: mpsc::Permit<'_, Message>, now: Instant) {
        if let Some((kind, wire)) = self.urgent.pop_front() {
            self.shared.metrics.frame_out(kind);
            permit.send(Message::Binary(wire));
            return;
        }
        match self.queue.pop(now) {
            Some(Popped::Frame(sent)) => {
                self.shared.metrics.frame_out(sent.kind);
                permit.send(Message::Binary(sent.wire));
            }
            Some(Popped::Skipped { key, error }) => {
                self.shared.metrics.refuse("object_too_large");
                tracing::warn!(%key, %error, "object not sent: too large for the edge");
            }
            None => {}
        }
    }

    fn on_message(&mut self, msg: Message, now: Instant) -> Option<CloseReason> {
        self.last_rx = now;
        let limits = Limits::with_max_frame(self.shared.cfg.max_frame_bytes);
        match msg {
            Message::Binary(bytes) => match proto::decode(&bytes, limits) {
                Ok(frame) => self.on_frame(frame, now),
                Err(e) => self.garbage(e.to_error_info(0), now),
            },
            Message::Text(_) => self.garbage(
                ErrorInfo {
                    code: 400,
                    reason: "text_message".into(),
                    message: "frames are binary WebSocket messages".into(),
                    in_reply_to: 0,
                },
                now,
            ),
            Message::Close(_) => Some(CloseReason::PeerClosed),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        }
    }

    /// Refuses an undecodable message; too many close the session.
    fn garbage(&mut self, info: ErrorInfo, now: Instant) -> Option<CloseReason> {
        self.shared.metrics.refuse(&info.reason);
        tracing::debug!(reason = %info.reason, message = %info.message, "refused a frame");
        self.push(&Frame::error(&info));
        self.garbage.record(now).then_some(CloseReason::Garbage)
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) -> Option<CloseReason> {
        let Ok(kind) = frame.checked_kind() else {
            return None; // decode validated it
        };
        self.shared.metrics.frame_in(kind);
        match admit(self.phase, kind) {
            Admission::Ignore => return None,
            Admission::Refuse { reason, fatal } => {
                let info = ErrorInfo {
                    code: 400,
                    reason: reason.into(),
                    message: format!(
                        "{} frame not expected while {}",
                        kind.label(),
                        self.phase.label()
                    ),
                    in_reply_to: frame.id,
                };
                if fatal {
                    self.shared.metrics.refuse(reason);
                    self.push(&Frame::error(&info));
                    return Some(CloseReason::Protocol(reason));
                }
                return self.garbage(info, now);
            }
            Admission::Accept => {}
        }
        match kind {
            Kind::Hello => self.on_hello(&frame),
            Kind::Inventory => self.on_inventory(&frame),
            Kind::Ack => {
                let up_to = frame.control::<proto::Ack>().map(|a| a.up_to).unwrap_or(0);
                self.shared
                    .metrics
                    .acks
                    .get_or_create(&DirectionLabel {
                        direction: "received",
                    })
                    .inc();
                match self.queue.on_ack(up_to) {
                    Ok(acked) => {
                        self.shared
                            .metrics
                            .acked_frames
                            .inc_by(acked.released as u64);
                        if acked.synced {
                            tracing::info!("edge in sync");
                        }
                        None
                    }
                    Err(e) => {
                        self.shared.metrics.refuse(e.reason());
                        self.error(400, e.reason(), e.to_string(), 0);
                        Some(CloseReason::Protocol(e.reason()))
                    }
                }
            }
            Kind::Ping => {
                let nonce = frame.control::<Ping>().map(|p| p.nonce).unwrap_or(0);
                self.push(&Frame::pong(nonce));
                None
            }
            Kind::Error => {
                let info = frame.control::<ErrorInfo>().unwrap_or_default();
                tracing::warn!(code = info.code, reason = %info.reason, message = %info.message,
                    in_reply_to = info.in_reply_to, "edge reported an error");
                None
            }
            Kind::Request | Kind::Event | Kind::CertRenewRequest => {
                self.on_sequenced(frame);
                None
            }
            _ => None,
        }
    }
}
