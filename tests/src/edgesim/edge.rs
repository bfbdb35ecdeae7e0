//! One simulated edge: edgecore's own pure link state machine
//! ([`edgecore::hub::link::LinkState`]) driven by a small IO loop that keeps the edge's
//! objects in memory instead of sled. It dials from its own 127.0.0.x source address,
//! sends its inventory on every (re)connect, acks what it "applied" at once, renews its
//! Lease every ~10 s (jittered) and patches its Node status on each new session and after
//! a period of ~30 renewals jittered as edgecore's ([`edgecore::node::status_period`]:
//! an unchanged status goes every 225–300 s by default), through
//! an in-memory outbox coalesced by key that replays unacked writes after a reconnect —
//! the same frames a real edgecore sends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use edgecore::backoff::Backoff;
use edgecore::config::ServerUrl;
use edgecore::hub::conn::{Ws, ws_config};
use edgecore::hub::link::{Action, Event, Link, LinkConfig, LinkState};
use edgecore::outbox::Upstream;
use futures::{SinkExt, StreamExt};
use proto::{Frame, Hello, InventoryEntry, Kind, Limits, Op, ResourceKey};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::Stats;

/// Outbox key of the Lease renewal (as edgecore's).
const LEASE: &str = edgecore::node::LEASE_KEY;
/// Outbox key of the Node status patch (as edgecore's).
const STATUS: &str = edgecore::node::STATUS_KEY;
/// The nominal period of the Node status patch in Lease renewals, besides on a new
/// session: edgecore posts an unchanged status every `status.report_secs` (jittered) and
/// renews the Lease every `status.interval_secs`.
fn status_every() -> u32 {
    let d = edgecore::config::StatusConfig::default();
    u32::try_from(d.report_secs / d.interval_secs.max(1))
        .unwrap_or(u32::MAX)
        .max(1)
}
/// Bound on TCP + TLS + WebSocket upgrade.
const DIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// What one edge holds of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub rv: String,
    /// When this version arrived (wall clock, for fan-out latency).
    pub at: SystemTime,
}

/// The part of an edge others read: its objects and link state.
#[derive(Debug, Default)]
pub struct EdgeView {
    /// key (`<namespace>/<kind>/<name>`) -> what the edge holds.
    pub held: HashMap<String, Held>,
    /// The link's state.
    pub link: Option<Link>,
    /// Sessions that got a HELLO_ACK.
    pub sessions: u64,
    /// Sessions whose SYNCED frame was applied.
    pub synced: u64,
}

/// A simulated edge: identity, connection settings and the shared view.
#[derive(Debug)]
pub struct SimEdge {
    /// Node name.
    pub name: String,
    /// Source address its sockets bind to.
    pub source: IpAddr,
    /// Index in the fleet (seeds the report jitter).
    pub index: usize,
    /// Mutual-TLS config with the node certificate from `/join`.
    pub tls: Arc<rustls::ClientConfig>,
    /// What it holds; the loop is the only writer.
    pub view: Mutex<EdgeView>,
}

impl SimEdge {
    /// A snapshot of what the edge holds: key -> rv.
    pub fn held_rvs(&self) -> BTreeMap<String, String> {
        let v = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        v.held
            .iter()
            .map(|(k, h)| (k.clone(), h.rv.clone()))
            .collect()
    }

    /// What the edge holds of `key`.
    pub fn get(&self, key: &str) -> Option<Held> {
        let v = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        v.held.get(key).cloned()
    }

    /// (link state, sessions, synced sessions).
    pub fn link(&self) -> (Option<Link>, u64, u64) {
        let v = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        (v.link, v.sessions, v.synced)
    }

    fn with_view<T>(&self, f: impl FnOnce(&mut EdgeView) -> T) -> T {
        f(&mut self.view.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A queued upstream write: the latest version per key, sent once per session until acked.
#[derive(Debug)]
struct Pending {
    seq: u64,
    up: Upstream,
    in_flight: bool,
}

/// The IO loop of one edge (see the module docs).
struct Loop {
    edge: Arc<SimEdge>,
    server: ServerUrl,
    stats: Arc<Stats>,
    state: LinkState,
    limits: Limits,
    ws: Option<Ws>,
    events: VecDeque<Event>,
    outbox: BTreeMap<&'static str, Pending>,
    seq: u64,
    reports: u64,
    next_report: Instant,
    /// When an unchanged Node status is due again.
    next_status: Instant,
    interval: Duration,
}

/// Runs `edge` against `server` until `shutdown`; each change of `kicks` drops the
/// current session at once (every edge at the same moment: a reconnect storm).
pub async fn run(
    edge: Arc<SimEdge>,
    server: ServerUrl,
    interval: Duration,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    mut kicks: watch::Receiver<u64>,
) {
    let info = edgecore::node::node_info(&edge.name, &server, &BTreeMap::new());
    let hello = Hello {
        node_name: edge.name.clone(),
        info: Some(info),
        ..Hello::default()
    };
    let config = LinkConfig::default();
    let backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    // Spread the first reports over the interval so renewals are not in lock step.
    let jitter = interval.mul_f64(spread(edge.index));
    let mut lp = Loop {
        limits: Limits::with_max_frame(config.max_frame),
        state: LinkState::new(config, hello, backoff),
        edge,
        server,
        stats,
        ws: None,
        events: VecDeque::from([Event::Start]),
        outbox: BTreeMap::new(),
        seq: 0,
        reports: 0,
        next_report: Instant::now() + jitter,
        next_status: Instant::now(),
        interval,
    };
    let mut kicks_open = true;
    loop {
        lp.process().await;
        lp.drain_outbox().await;
        if !lp.events.is_empty() {
            continue;
        }
        let deadline = lp
            .state
            .next_deadline()
            .map_or(lp.next_report, |d| d.min(lp.next_report));
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = kicks.changed(), if kicks_open => match changed {
                Ok(()) => {
                    lp.events.push_back(Event::Closed("kicked by edgesim (storm)".to_owned()));
                }
                Err(_) => kicks_open = false,
            },
            msg = next_message(&mut lp.ws) => lp.on_message(msg),
            () = tokio::time::sleep_until(deadline) => {
                if Instant::now() >= lp.next_report {
                    lp.queue_reports();
                }
                lp.events.push_back(Event::Tick);
            }
        }
    }
    if let Some(mut ws) = lp.ws.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
}

/// A fraction in [0, 1) spread evenly over indices (golden-ratio sequence).
fn spread(index: usize) -> f64 {
    (index as f64 * 0.618_033_988_749_895).fract()
}

impl Loop {
    async fn process(&mut self) {
        while let Some(event) = self.events.pop_front() {
            for action in self.state.handle(event, Instant::now()) {
                self.exec(action).await;
            }
        }
    }

    async fn exec(&mut self, action: Action) {
        match action {
            Action::Dial => match tokio::time::timeout(DIAL_TIMEOUT, self.dial()).await {
                Ok(Ok(ws)) => {
                    self.ws = Some(ws);
                    self.events.push_back(Event::Dialed);
                }
                Ok(Err(e)) => {
                    self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                    self.events.push_back(Event::DialFailed(e));
                }
                Err(_) => {
                    self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                    self.events
                        .push_back(Event::DialFailed("dial timed out".to_owned()));
                }
            },
            Action::Send(frame) => self.send(&frame).await,
            Action::SendInventory { max_frame } => {
                let entries: Vec<InventoryEntry> = self.edge.with_view(|v| {
                    v.held
                        .iter()
                        .map(|(k, h)| InventoryEntry {
                            key: k.clone(),
                            uid: h.uid.clone(),
                            resource_version: h.rv.clone(),
                        })
                        .collect()
                });
                for f in proto::inventory_frames(entries, max_frame) {
                    self.send(&f).await;
                }
            }
            Action::Apply(frames) => {
                let up_to = self.apply(&frames);
                self.events.push_back(Event::Committed { up_to });
            }
            Action::Acked(items) => {
                for item in items {
                    let done = self
                        .outbox
                        .get(item.key.as_str())
                        .is_some_and(|p| p.seq == item.seq);
                    if done {
                        self.outbox.remove(item.key.as_str());
                    }
                }
            }
            Action::Responded { key, response, .. } => {
                if key == LEASE && (200..300).contains(&response.code) {
                    // Answered, so written (a renewal the hub coalesced away is acked only).
                    self.stats.lease_renewals.fetch_add(1, Ordering::Relaxed);
                } else if key == LEASE && response.code == 404 {
                    self.stats.lease_not_found.fetch_add(1, Ordering::Relaxed);
                } else if !(200..300).contains(&response.code) {
                    self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                    *self
                        .stats
                        .last_upstream_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(format!(
                        "{key}: {} {} {}",
                        response.code, response.reason, response.message
                    ));
                }
            }
            Action::CloudError(_) => {
                self.stats.cloud_errors.fetch_add(1, Ordering::Relaxed);
            }
            Action::State(link) => self.edge.with_view(|v| v.link = Some(link)),
            Action::SessionUp { .. } => {
                self.edge.with_view(|v| v.sessions += 1);
                self.stats.sessions.fetch_add(1, Ordering::Relaxed);
                // A new session reports at once, its Node status too, as edgecore does.
                self.next_status = Instant::now();
                self.queue_reports();
            }
            Action::EndSession { .. } => {
                if let Some(mut ws) = self.ws.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                }
                for p in self.outbox.values_mut() {
                    p.in_flight = false;
                }
            }
            // Simulated edges keep the certificate they joined with (issued for a year);
            // they never ask to renew it, so these never come.
            Action::CertRenewed(_) | Action::CertRenewRefused(_) | Action::CertRenewAbandoned => {}
        }
    }

    /// Applies a batch in memory; returns the highest frame id (all "durable" now).
    fn apply(&mut self, frames: &[Frame]) -> u64 {
        let now = SystemTime::now();
        let mut up_to = 0;
        let mut synced = false;
        self.edge.with_view(|v| {
            for f in frames {
                up_to = up_to.max(f.id);
                let kind = Kind::try_from(f.kind).unwrap_or(Kind::Unspecified);
                let route = f.route.as_ref();
                let key = route.map(|r| r.resource.clone()).unwrap_or_default();
                match kind {
                    Kind::Synced => synced = true,
                    Kind::Tombstone => {
                        v.held.remove(&key);
                    }
                    // A delete removes only the incarnation it names (uid).
                    Kind::Object if route.is_some_and(|r| r.op == Op::Delete.as_str()) => {
                        let same = v.held.get(&key).is_some_and(|h| h.uid == f.uid);
                        if same {
                            v.held.remove(&key);
                        }
                    }
                    Kind::Object => {
                        v.held.insert(
                            key,
                            Held {
                                uid: f.uid.clone(),
                                rv: f.resource_version.clone(),
                                at: now,
                            },
                        );
                    }
                    _ => {}
                }
            }
            if synced {
                v.synced += 1;
            }
        });
        self.stats
            .objects_applied
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        up_to
    }

    /// Queues the Lease renewal (and the Node status when its jittered period is over).
    fn queue_reports(&mut self) {
        let now = Utc::now();
        let edge = self.edge.clone();
        let name = &edge.name;
        if let Ok(key) = ResourceKey::namespaced("kube-node-lease", "lease", name.clone()) {
            let body = edgecore::node::lease_patch(name, 40, now);
            self.put(
                LEASE,
                Upstream::request(Op::Patch, &key, &body)
                    .with_content_type(proto::frame::MERGE_PATCH),
            );
        }
        if Instant::now() >= self.next_status
            && let Ok(key) = ResourceKey::cluster("node", name.clone())
        {
            let draw = spread(self.edge.index.wrapping_mul(31) + self.reports as usize);
            let period =
                edgecore::node::status_period(self.interval.saturating_mul(status_every()), draw);
            self.next_status = Instant::now() + period;
            let info = edgecore::node::node_info(name, &self.server, &BTreeMap::new());
            let body = edgecore::node::node_status_patch(&info, now, &[], now);
            self.put(
                STATUS,
                Upstream::request(Op::PatchStatus, &key, &body)
                    .with_content_type(proto::frame::MERGE_PATCH),
            );
        }
        self.reports += 1;
        // ±10 % jitter around the interval.
        let factor = 0.9 + 0.2 * spread(self.edge.index + self.reports as usize);
        self.next_report = Instant::now() + self.interval.mul_f64(factor);
    }

    fn put(&mut self, key: &'static str, up: Upstream) {
        self.seq += 1;
        self.outbox.insert(
            key,
            Pending {
                seq: self.seq,
                up,
                in_flight: false,
            },
        );
    }

    async fn drain_outbox(&mut self) {
        let now = Instant::now();
        let keys: Vec<&'static str> = self
            .outbox
            .iter()
            .filter(|(_, p)| !p.in_flight)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if !self.state.can_send() {
                break;
            }
            let Some(p) = self.outbox.get_mut(key) else {
                continue;
            };
            let up = &p.up;
            if let Some(frame) =
                self.state
                    .send_upstream(key.to_owned(), p.seq, |id| up.to_frame(id), now)
            {
                p.in_flight = true;
                self.send(&frame).await;
            }
        }
    }

    async fn send(&mut self, frame: &Frame) {
        let Some(ws) = self.ws.as_mut() else {
            return;
        };
        let bytes = proto::encode(frame);
        if let Err(e) = ws.send(Message::Binary(bytes.into())).await {
            self.ws = None;
            self.events
                .push_back(Event::Closed(format!("send failed: {e}")));
        }
    }

    fn on_message(&mut self, msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) {
        let event = match msg {
            Some(Ok(Message::Binary(bytes))) => match proto::decode(&bytes, self.limits) {
                Ok(frame) => Event::Frame(frame),
                Err(e) => Event::Refused { reason: e.reason() },
            },
            Some(Ok(Message::Close(_))) | None => {
                self.ws = None;
                Event::Closed("cloud closed the WebSocket".to_owned())
            }
            Some(Ok(_)) => return,
            Some(Err(e)) => {
                self.ws = None;
                Event::Closed(format!("WebSocket error: {e}"))
            }
        };
        self.events.push_back(event);
    }

    /// TCP from this edge's source address, TLS with its node certificate, WebSocket.
    async fn dial(&self) -> Result<Ws, String> {
        let target: SocketAddr = format!("{}:{}", self.server.host, self.server.port)
            .parse()
            .map_err(|e| format!("edgesim dials IP addresses only: {e}"))?;
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(SocketAddr::new(self.edge.source, 0))
            .map_err(|e| format!("bind {}: {e}", self.edge.source))?;
        let tcp = socket
            .connect(target)
            .await
            .map_err(|e| format!("connect {target}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = edgecore::pki::server_name(&self.server.host).map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(self.edge.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            self.server.connect_url().as_str(),
            tls,
            Some(ws_config(proto::DEFAULT_MAX_FRAME)),
        )
        .await
        .map_err(|e| format!("WebSocket upgrade: {e}"))?;
        Ok(ws)
    }
}

async fn next_message(
    ws: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}
