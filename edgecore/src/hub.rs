//! EdgeHub: the edge end of the link to cloudcore.
//!
//! [`link`] is the protocol as a pure state machine ([`link::LinkState`]:
//! events in, actions out). This file is the thin IO loop around it: it
//! dials ([`conn::dial`]), reads WebSocket messages and decodes them with the
//! codec's limits, runs timers, hands batches to MetaManager, drains the
//! outbox into the send window, and executes every [`Action`]. Reconnects
//! happen by the state machine entering `Backoff` and the loop dialing again;
//! unacked upstream writes are replayed from the outbox in the next session.
//!
//! Tasks: the loop itself ([`run`]), and per session one writer task that
//! owns the WebSocket sink (fed by a bounded channel, so a slow socket never
//! stops the loop from reading).

pub mod conn;
pub mod journal;
pub mod link;
pub mod renew;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{SinkExt, StreamExt};
use proto::{Frame, Hello, Kind, Limits};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::ServerUrl;
use crate::meta::{Applied, MetaError, MetaHandle};
use crate::outbox::Outbox;
use crate::telemetry::{Metrics, label};
use link::{Action, Event, Link, LinkConfig, LinkState};

/// What the hub publishes about the link (for status, metrics, the node
/// reporter).
#[derive(Debug, Clone, PartialEq)]
pub struct HubStatus {
    /// The link state.
    pub link: Link,
    /// The cloud's id of the current session (empty when none).
    pub session_id: String,
    /// When the link entered this state.
    pub since: SystemTime,
    /// Sessions started so far.
    pub sessions: u64,
}

impl Default for HubStatus {
    fn default() -> Self {
        HubStatus {
            link: Link::Connecting,
            session_id: String::new(),
            since: SystemTime::now(),
            sessions: 0,
        }
    }
}

/// Everything the hub needs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// cloudcore's hub.
    pub server: ServerUrl,
    /// Mutual-TLS client config (node cert, node CA): used as is when `pki` is `None`,
    /// else only when the files cannot be read at a dial.
    pub tls: Arc<rustls::ClientConfig>,
    /// The node's PKI files: read again at every dial and rotated over the link
    /// ([`renew`]). `None` (tests with in-memory credentials): no rotation.
    pub pki: Option<crate::config::PkiConfig>,
    /// Protocol tuning.
    pub link: LinkConfig,
    /// The HELLO this node announces.
    pub hello: Hello,
    /// Bound on TCP + TLS + WebSocket handshake.
    pub connect_timeout: Duration,
    /// Bound on draining at shutdown.
    pub grace: Duration,
}

/// The parts the hub talks to.
#[derive(Debug, Clone)]
pub struct HubDeps {
    /// MetaManager's writer.
    pub meta: MetaHandle,
    /// The upstream outbox.
    pub outbox: Outbox,
    /// Metrics.
    pub metrics: Metrics,
    /// Where the link status is published.
    pub status: watch::Sender<HubStatus>,
}

/// One open session's socket halves.
struct Conn {
    tx: mpsc::Sender<Message>,
    rx: futures::stream::SplitStream<conn::Ws>,
    writer: JoinHandle<()>,
}

/// Runs the link until `shutdown`, then drains: finishes the group commit in
/// progress, sends its ACK and closes the WebSocket cleanly, all within
/// `config.grace`.
pub async fn run(config: HubConfig, deps: HubDeps, shutdown: CancellationToken) {
    let backoff = Backoff::new(config.link.backoff_initial, config.link.backoff_max);
    let renewer = config.pki.clone().map(|pki| {
        let hint = format!(
            "edgecore join --server {} --token <fresh token> --node-name {}",
            config.server, config.hello.node_name
        );
        renew::Renewer::new(pki, config.hello.node_name.clone(), hint)
    });
    let mut hub = Hub {
        renewer,
        state: LinkState::new(config.link.clone(), config.hello.clone(), backoff),
        limits: Limits::with_max_frame(config.link.max_frame),
        config,
        deps,
        conn: None,
        apply: None,
        events: VecDeque::from([Event::Start]),
        shutdown: shutdown.clone(),
    };
    hub.set_state_gauge(Link::Connecting);
    loop {
        hub.process_events().await;
        hub.drain_outbox().await;
        hub.maybe_renew().await;
        if !hub.events.is_empty() {
            continue;
        }
        let deadline = earliest(hub.state.next_deadline(), hub.deps.outbox.next_wakeup());
        let deadline = earliest(deadline, hub.renew_deadline());
        tokio::select! {
            () = shutdown.cancelled() => break,
            res = join_opt(&mut hub.apply) => {
                hub.apply = None;
                hub.events.push_back(match res {
                    Ok(Ok(applied)) => Event::Committed { up_to: applied.up_to },
                    Ok(Err(e)) => Event::ApplyFailed(conn::chain(&e)),
                    Err(e) => Event::ApplyFailed(e.to_string()),
                });
            }
            msg = next_message(&mut hub.conn) => hub.on_message(msg).await,
            () = sleep_until_opt(deadline) => hub.events.push_back(Event::Tick),
            () = hub.deps.outbox.notified() => {}
        }
    }
    hub.drain().await;
}

struct Hub {
    renewer: Option<renew::Renewer>,
    state: LinkState,
    config: HubConfig,
    deps: HubDeps,
    limits: Limits,
    conn: Option<Conn>,
    apply: Option<JoinHandle<Result<Applied, MetaError>>>,
    events: VecDeque<Event>,
    shutdown: CancellationToken,
}

impl Hub {
    async fn process_events(&mut self) {
        while let Some(event) = self.events.pop_front() {
            let actions = self.state.handle(event, Instant::now());
            for action in actions {
                self.exec(action).await;
            }
        }
    }

    async fn exec(&mut self, action: Action) {
        match action {
            Action::Dial => self.dial().await,
            Action::Send(frame) => self.send(&frame).await,
            Action::SendInventory { max_frame } => match self.deps.meta.begin_session().await {
                Ok(entries) => {
                    let count = entries.len();
                    let frames = proto::inventory_frames(entries, max_frame);
                    tracing::info!(objects = count, chunks = frames.len(), "sending inventory");
                    for f in frames {
                        self.send(&f).await;
                    }
                }
                Err(e) => self.events.push_back(Event::ApplyFailed(conn::chain(&e))),
            },
            Action::Apply(frames) => {
                let meta = self.deps.meta.clone();
                let journal = journal::entries(&frames);
                self.apply = Some(tokio::spawn(async move {
                    let res = meta.apply(frames).await;
                    if res.is_ok() {
                        journal::log(journal);
                    }
                    res
                }));
            }
            Action::Acked(items) => {
                self.deps.metrics.acks_received.inc();
                tracing::debug!(writes = items.len(), "upstream writes acked");
                for item in items {
                    if let Err(e) = self.deps.outbox.on_acked(&item.key, item.seq) {
                        tracing::error!(error = %conn::chain(&e), "cannot remove an acked outbox entry");
                    }
                }
            }
            Action::Responded { key, seq, response } => {
                match self
                    .deps
                    .outbox
                    .on_response(&key, seq, &response, Instant::now())
                {
                    Ok(None) => {}
                    Ok(Some(dropped)) => {
                        let node = &self.config.hello.node_name;
                        if let Err(e) = self.deps.outbox.report_dropped(node, &dropped) {
                            tracing::warn!(error = %conn::chain(&e), "cannot queue the Event about a dropped write");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %conn::chain(&e), "cannot update the outbox");
                    }
                }
            }
            Action::CertRenewed(response) => self.on_renewed(&response),
            Action::CertRenewRefused(info) => {
                self.renew_failed("refused", &info.reason, 60);
            }
            Action::CertRenewAbandoned => self.renew_failed("failed", "session ended", 5),
            Action::CloudError(info) => {
                self.deps
                    .metrics
                    .cloud_errors
                    .get_or_create(&label("reason", &info.reason))
                    .inc();
                tracing::warn!(
                    code = info.code, reason = %info.reason, message = %info.message,
                    in_reply_to = info.in_reply_to, "cloud sent an error"
                );
            }
            Action::State(link) => {
                tracing::info!(state = link.label(), "link state");
                self.set_state_gauge(link);
                self.deps.status.send_modify(|s| {
                    s.link = link;
                    s.since = SystemTime::now();
                    if link == Link::Backoff {
                        s.session_id.clear();
                    }
                });
            }
            Action::SessionUp { session_id } => {
                tracing::info!(%session_id, server = %self.config.server, "session established");
                self.deps.status.send_modify(|s| {
                    s.session_id = session_id;
                    s.sessions += 1;
                });
            }
            Action::EndSession { reason, began } => {
                if self.shutdown.is_cancelled() {
                    tracing::info!(%reason, "session ended");
                } else {
                    tracing::warn!(%reason, "session ended; will reconnect");
                }
                self.deps.metrics.reconnects.inc();
                self.close(&reason).await;
                // A batch still with the writer completes there; its result
                // belongs to the dead session and is not awaited.
                self.apply = None;
                if began {
                    self.deps.meta.end_session().await;
                }
                self.deps.outbox.restart();
            }
        }
    }

    /// The TLS configuration for the next dial: the PKI files read again (finishing an
    /// interrupted rotation, picking up a re-join), else the one edgecore started with.
    fn link_tls(&mut self) -> Arc<rustls::ClientConfig> {
        let now = unix_now();
        let Some(renewer) = self.renewer.as_mut() else {
            return self.config.tls.clone();
        };
        let tls = match renewer.load(now) {
            Ok(tls) => tls,
            Err(e) => {
                tracing::warn!(error = %conn::chain(&e), "cannot read the node certificate files; dialing with the ones loaded at start");
                self.config.tls.clone()
            }
        };
        self.update_expiry_gauge();
        tls
    }

    fn update_expiry_gauge(&self) {
        if let Some(secs) = self.renewer.as_ref().and_then(|r| r.expires_in(unix_now())) {
            self.deps.metrics.cert_expiry_seconds.set(secs);
        }
    }

    /// When the loop must wake for the renewal: its due time while live; while backing
    /// off, a short poll for credentials a re-join wrote.
    fn renew_deadline(&self) -> Option<Instant> {
        let renewer = self.renewer.as_ref()?;
        match self.state.link() {
            Link::Live => {
                let due = renewer.due()?;
                let wait = u64::try_from(due - unix_now()).unwrap_or(0);
                Some(Instant::now() + Duration::from_secs(wait))
            }
            Link::Backoff => Some(Instant::now() + REJOIN_POLL),
            _ => None,
        }
    }

    /// Starts a due renewal on a live link; in back-off, dials at once when a re-join
    /// replaced the certificate on disk.
    async fn maybe_renew(&mut self) {
        let now = unix_now();
        let link = self.state.link();
        let Some(renewer) = self.renewer.as_mut() else {
            return;
        };
        if link == Link::Backoff {
            if renewer.files_changed() {
                tracing::info!("new node certificate on disk (re-join?): reconnecting now");
                self.events.push_back(Event::RetryNow);
            }
            return;
        }
        if link != Link::Live || renewer.due().is_none_or(|due| now < due) {
            return;
        }
        let csr = match renewer.begin() {
            Ok(csr) => csr,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a certificate renewal");
                renewer.abandon(now, 60);
                return;
            }
        };
        match self.state.send_cert_renew(&csr, Instant::now()) {
            Some(frame) => {
                tracing::info!(id = frame.id, "renewing the node certificate");
                self.send(&frame).await;
            }
            // Window full: try again shortly.
            None => renewer.abandon(now, 1),
        }
    }

    fn on_renewed(&mut self, response: &proto::CertRenewResponse) {
        let Some(renewer) = self.renewer.as_mut() else {
            return;
        };
        match renewer.complete(&response.cert_chain_pem) {
            Ok(info) => {
                self.deps
                    .metrics
                    .cert_renewals
                    .get_or_create(&label("result", "renewed"))
                    .inc();
                tracing::info!(serial = %info.serial_hex, not_after = info.not_after,
                    "node certificate renewed; reconnecting with it");
                // The session keeps the old certificate; a new one authenticates with the
                // new certificate (and the cloud ends sessions whose certificate expired).
                self.events.push_back(Event::Closed(
                    "node certificate renewed: reconnecting with the new certificate".to_owned(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %conn::chain(&e), "the renewed certificate cannot be used");
                self.renew_failed("failed", "unusable answer", 60);
            }
        }
    }

    fn renew_failed(&mut self, result: &str, why: &str, retry_after: i64) {
        self.deps
            .metrics
            .cert_renewals
            .get_or_create(&label("result", result))
            .inc();
        if let Some(renewer) = self.renewer.as_mut() {
            tracing::warn!(
                result,
                why,
                retry_after,
                "node certificate renewal did not complete; will retry"
            );
            renewer.abandon(unix_now(), retry_after);
        }
    }

    fn set_state_gauge(&self, link: Link) {
        for l in Link::ALL {
            self.deps
                .metrics
                .link_state
                .get_or_create(&label("state", l.label()))
                .set(i64::from(l == link));
        }
    }

    async fn dial(&mut self) {
        let tls = self.link_tls();
        let dial = conn::dial(&self.config.server, tls, self.config.link.max_frame);
        let res = tokio::select! {
            r = tokio::time::timeout(self.config.connect_timeout, dial) => r,
            () = self.shutdown.cancelled() => {
                self.events.push_back(Event::DialFailed("shutting down".to_owned()));
                return;
            }
        };
        match res {
            Ok(Ok(ws)) => {
                let (mut sink, rx) = ws.split();
                let (tx, mut out) = mpsc::channel::<Message>(256);
                let writer = tokio::spawn(async move {
                    while let Some(m) = out.recv().await {
                        let close = matches!(m, Message::Close(_));
                        if sink.send(m).await.is_err() || close {
                            break;
                        }
                    }
                    let _ = sink.close().await;
                });
                self.conn = Some(Conn { tx, rx, writer });
                self.events.push_back(Event::Dialed);
            }
            Ok(Err(e)) => self.events.push_back(Event::DialFailed(conn::chain(&e))),
            Err(_) => self.events.push_back(Event::DialFailed(format!(
                "no connection to {} within {:?}",
                self.config.server, self.config.connect_timeout
            ))),
        }
    }

    async fn send(&mut self, frame: &Frame) {
        let Some(conn) = &self.conn else {
            return;
        };
        let kind = Kind::try_from(frame.kind).unwrap_or(Kind::Unspecified);
        let bytes = proto::encode(frame);
        if conn.tx.send(Message::Binary(bytes.into())).await.is_err() {
            self.events
                .push_back(Event::Closed("WebSocket writer stopped".to_owned()));
            return;
        }
        self.deps
            .metrics
            .frames_out
            .get_or_create(&label("kind", kind.label()))
            .inc();
        if kind == Kind::Ack {
            self.deps.metrics.acks_sent.inc();
        }
    }

    async fn close(&mut self, reason: &str) {
        if let Some(conn) = self.conn.take() {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: truncate(reason, 120).into(),
            };
            let _ = conn.tx.try_send(Message::Close(Some(frame)));
            drop(conn.tx);
            // Let the writer flush the close frame, but never wait long.
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.writer).await;
        }
    }

    async fn on_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let event = match msg {
            Some(Ok(Message::Binary(bytes))) => match proto::decode(&bytes, self.limits) {
                Ok(frame) => {
                    let kind = Kind::try_from(frame.kind).unwrap_or(Kind::Unspecified);
                    self.deps
                        .metrics
                        .frames_in
                        .get_or_create(&label("kind", kind.label()))
                        .inc();
                    if matches!(
                        kind,
                        Kind::Hello
                            | Kind::Inventory
                            | Kind::Request
                            | Kind::Event
                            | Kind::CertRenewRequest
                    ) {
                        self.deps.metrics.refuse("unexpected_kind");
                    }
                    Event::Frame(frame)
                }
                Err(e) => {
                    let reason = e.reason();
                    self.deps.metrics.refuse(reason);
                    tracing::warn!(%reason, error = %e, "refusing a frame from the cloud");
                    self.send(&Frame::error(&e.to_error_info(0))).await;
                    Event::Refused { reason }
                }
            },
            Some(Ok(Message::Text(_))) => {
                self.deps.metrics.refuse("text_message");
                Event::Refused {
                    reason: "text_message",
                }
            }
            Some(Ok(Message::Close(frame))) => Event::Closed(format!(
                "cloud closed the connection{}",
                frame
                    .map(|f| format!(" ({}: {})", f.code, f.reason))
                    .unwrap_or_default()
            )),
            // WebSocket-level pings are answered by tungstenite itself.
            Some(Ok(_)) => return,
            Some(Err(e)) => Event::Closed(format!("WebSocket error: {}", conn::chain(&e))),
            None => Event::Closed("connection closed".to_owned()),
        };
        self.events.push_back(event);
    }

    /// Sends ready outbox entries while the window has room.
    async fn drain_outbox(&mut self) {
        let now = Instant::now();
        while self.state.can_send() {
            let Some(taken) = self.deps.outbox.next_ready(now) else {
                break;
            };
            let item = taken.item.clone();
            let key = tracing::enabled!(tracing::Level::DEBUG).then(|| taken.key.clone());
            match self
                .state
                .send_upstream(taken.key, taken.seq, |id| item.to_frame(id), now)
            {
                Some(frame) => {
                    if let Some(key) = key {
                        tracing::debug!(id = frame.id, %key, "upstream write sent");
                    }
                    self.send(&frame).await
                }
                None => break,
            }
        }
    }

    /// Shutdown: finish the group commit in progress and ack it, then close.
    async fn drain(mut self) {
        let deadline = Instant::now() + self.config.grace;
        if let Some(apply) = self.apply.take()
            && let Ok(Ok(Ok(applied))) = tokio::time::timeout_at(deadline, apply).await
        {
            let actions = self.state.handle(
                Event::Committed {
                    up_to: applied.up_to,
                },
                Instant::now(),
            );
            for action in actions {
                if let Action::Send(frame) = action {
                    self.send(&frame).await;
                }
            }
        }
        self.close("edgecore shutting down").await;
        self.deps.meta.end_session().await;
        tracing::info!("link closed");
    }
}

/// How often a backing-off link looks for credentials written by a re-join.
const REJOIN_POLL: Duration = Duration::from_secs(2);

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn join_opt<T>(handle: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match handle {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

async fn next_message(
    conn: &mut Option<Conn>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match conn {
        Some(c) => c.rx.next().await,
        None => std::future::pending().await,
    }
}
