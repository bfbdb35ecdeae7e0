//! The upstream half of a session: edge REQUEST / EVENT / CERT_RENEW_REQUEST
//! frames are delivered in order, authorised, run, answered, and acked only
//! once their API call finished (transient failures are not acked, so the
//! edge sends them again). Status patches and Event creates of different objects
//! run up to [`MAX_RUNNING`] at once (an edge's device and pod statuses would
//! otherwise wait for each other's durable API write one by one: ~500 device status
//! writes/s of one edge need that, and a pod start's Events held its status
//! behind them); everything else runs alone. Results are
//! handled in the order the frames arrived, so answers and acks stay in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::{CertRenewRequest, CertRenewResponse, Frame, Kind, Op, Receipt, Response};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::super::authz::{self, Facts};
use super::super::phase::Phase;
use super::super::upstream::{self, Outcome};
use super::{MAX_QUEUED_REQUESTS, MAX_RUNNING, REFUSAL_BUDGET, Session};
use crate::join::JoinError;

/// The result of one upstream call.
pub(super) struct Done {
    id: u64,
    kind: Kind,
    op: &'static str,
    answer: Answer,
}

/// What an upstream call produced.
pub(super) enum Answer {
    /// An API call (REQUEST or EVENT).
    Api(Outcome),
    /// A certificate renewal.
    Cert(Result<CertRenewResponse, JoinError>),
    /// Replaced by a newer write of the same object before it ran: acked, not answered
    /// (the edge's outbox acts only on the answer for the entry it holds now).
    Superseded,
}

/// A delivered edge request waiting for its API call.
pub(super) struct Queued {
    frame: Frame,
    /// Its bytes of the hub's queued-request budget, given back when it leaves the queue
    /// or is superseded.
    charge: Option<OwnedSemaphorePermit>,
}

/// What a queued request is charged: its payload, route and bookkeeping.
fn charge_of(frame: &Frame) -> usize {
    frame.payload.len() + frame.route.as_ref().map_or(0, |r| r.resource.len()) + 128
}

impl Session {
    /// A sequenced edge frame: deliver in order, queue for execution.
    pub(super) fn on_sequenced(&mut self, frame: Frame) {
        let mut charge = None;
        if frame.id > self.tracker.delivered() {
            // A new frame. One that does not fit is not delivered: the edge sends it again
            // after its timeout.
            if self.requests.len() >= MAX_QUEUED_REQUESTS {
                self.shared.metrics.refuse("busy");
                return;
            }
            match self.take_budget(charge_of(&frame)) {
                Some(permit) => charge = Some(permit),
                None => {
                    self.shared.metrics.refuse("budget");
                    return;
                }
            }
        }
        match self.tracker.on_frame(frame.id) {
            Receipt::Deliver => {
                if coalesces(&self.node, &frame) {
                    // An edge renews its Lease (and re-posts its Node status) every interval
                    // whether or not the last one was answered; while the API lags, the queued
                    // older ones would only be written and overwritten — and pile up here.
                    for old in self.requests.iter_mut() {
                        if old.frame.route == frame.route && self.superseded.insert(old.frame.id) {
                            old.frame.payload = Vec::new();
                            if let Some(p) = old.charge.take() {
                                self.queued_bytes -= p.num_permits();
                            }
                        }
                    }
                }
                self.requests.push_back(Queued { frame, charge });
            }
            Receipt::Duplicate | Receipt::Gap { .. } | Receipt::Unsequenced => {}
        }
        self.shared.note_queued_bytes();
    }

    /// `bytes` of the hub's queued-request budget for one more request, if this session's
    /// share and the whole budget have room (a session with nothing queued is held only to
    /// the whole budget, so any frame can get through once others drain).
    fn take_budget(&mut self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let budget = self.shared.queued_budget_total;
        let bytes = bytes.min(budget);
        let share = crate::hub::session_share(budget);
        if !self.requests.is_empty() && self.queued_bytes + bytes > share {
            return None;
        }
        let n = u32::try_from(bytes).ok()?;
        let permit = self
            .shared
            .queued_budget
            .clone()
            .try_acquire_many_owned(n)
            .ok()?;
        self.queued_bytes += permit.num_permits();
        Some(permit)
    }

    /// The oldest queued request, its budget given back.
    fn pop_request(&mut self) -> Option<Frame> {
        let q = self.requests.pop_front()?;
        if let Some(p) = q.charge {
            self.queued_bytes -= p.num_permits();
        }
        self.shared.note_queued_bytes();
        Some(q.frame)
    }

    /// Starts the next upstream calls that may run now (see [`may_start`]); refusals are
    /// answered at once, or in order behind the calls still running.
    pub(super) fn start_requests(&mut self, now: Instant) {
        if self.phase == Phase::Handshake || !self.shared.cache.is_synced() {
            return;
        }
        for _ in 0..REFUSAL_BUDGET {
            if let Some(front) = self.requests.front()
                && self.superseded.remove(&front.frame.id)
                && let Some(frame) = self.pop_request()
            {
                let done = Done {
                    id: frame.id,
                    kind: frame.checked_kind().unwrap_or(Kind::Unspecified),
                    op: op_label(&frame),
                    answer: Answer::Superseded,
                };
                if self.running.is_empty() {
                    self.on_done(done, now);
                } else {
                    // Acked in order, after the calls before it.
                    self.run(concurrent_key(&frame), Box::pin(std::future::ready(done)));
                }
                continue;
            }
            let Some(key) = self.requests.front().map(|q| concurrent_key(&q.frame)) else {
                return;
            };
            if !may_start(&self.running_keys, key.as_deref()) {
                return;
            }
            let Some(frame) = self.pop_request() else {
                return;
            };
            let kind = frame.checked_kind().unwrap_or(Kind::Unspecified);
            if kind == Kind::CertRenewRequest {
                let csr = frame
                    .control::<CertRenewRequest>()
                    .unwrap_or_default()
                    .csr_pem;
                let bootstrap = self.shared.bootstrap.clone();
                let node = self.node.clone();
                let serial = self.serial.clone();
                let id = frame.id;
                self.run(
                    None,
                    Box::pin(async move {
                        let answer =
                            bootstrap
                                .renew_certificate(&node, &serial, &csr)
                                .await
                                .map(|issued| CertRenewResponse {
                                    cert_chain_pem: issued.cert_pem,
                                    ca_pem: bootstrap.ca_pem().to_owned(),
                                });
                        Done {
                            id,
                            kind,
                            op: "cert_renew",
                            answer: Answer::Cert(answer),
                        }
                    }),
                );
                return;
            }
            let facts: &dyn Facts = self.shared.cache.as_ref();
            if let Err(refusal) = authz::authorize(&self.node, &frame, facts) {
                self.shared.metrics.refuse(&refusal.metric);
                tracing::warn!(id = frame.id, reason = %refusal.metric, message = %refusal.message, "refused");
                if kind == Kind::Event {
                    // Events get no RESPONSE; say why it was dropped.
                    let (code, message) = (refusal.code, refusal.message.clone());
                    self.error(code, &refusal.metric, message, frame.id);
                }
                let outcome = upstream::refusal(refusal.code, refusal.reason, refusal.message);
                let done = Done {
                    id: frame.id,
                    kind,
                    op: op_label(&frame),
                    answer: Answer::Api(outcome),
                };
                if self.running.is_empty() {
                    self.on_done(done, now);
                } else {
                    // Answered and acked in order, after the calls before it.
                    self.run(key, Box::pin(std::future::ready(done)));
                }
                continue;
            }
            let shared = self.shared.clone();
            let facts: Arc<dyn Facts + Send + Sync> = self.shared.cache.clone();
            let node = self.node.clone();
            let registered = self.registered.clone();
            let edge_renewed = renews_own_lease(&node, &frame).then(|| self.edge_renewed.clone());
            if let Some(Ok(mut slot)) = edge_renewed.as_ref().map(|s| s.lock()) {
                // A renewal on its way to the API counts: under load the hub must not add its
                // own behind it (that doubles the writes exactly when the API is slowest).
                *slot = Some(now);
            }
            let alone = key.is_none();
            self.run(
                key,
                Box::pin(async move {
                    let began = Instant::now();
                    let permit = shared.api_permit().await;
                    let mut outcome =
                        upstream::execute(&shared.client, facts.clone(), &node, &frame).await;
                    drop(permit);
                    tracing::debug!(
                        id = frame.id,
                        op = op_label(&frame),
                        resource = %frame.route.as_ref().map_or("", |r| r.resource.as_str()),
                        ms = began.elapsed().as_millis(),
                        "upstream call done"
                    );
                    if let Outcome::Final(response, _) = &outcome
                        && response.code == 404
                        && !registered.load(Ordering::Acquire)
                        && registers(&node, &frame)
                    {
                        // A first connect: the edge renewed its Lease (or Node status) before
                        // the session created them. Wait for the registration and run it again
                        // (in order: the requests behind it wait too), rather than dropping it.
                        let deadline = tokio::time::Instant::now() + REGISTER_WAIT;
                        while !registered.load(Ordering::Acquire)
                            && tokio::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let _permit = shared.api_permit().await;
                        outcome = upstream::execute(&shared.client, facts, &node, &frame).await;
                    }
                    if let Some(Ok(mut slot)) = edge_renewed.as_ref().map(|s| s.lock()) {
                        // Renewed: the hub's heartbeat leaves the Lease to the edge meanwhile;
                        // refused or failed: the hub renews it again.
                        let ok = matches!(&outcome, Outcome::Final(r, _) if (200..300).contains(&r.code));
                        *slot = ok.then(Instant::now);
                    }
                    Done {
                        id: frame.id,
                        kind,
                        op: op_label(&frame),
                        answer: Answer::Api(outcome),
                    }
                }),
            );
            if alone {
                return;
            }
        }
    }

    fn run(&mut self, key: Option<String>, call: futures::future::BoxFuture<'static, Done>) {
        self.running.push_back(call);
        self.running_keys.push_back(key);
    }

    fn commit(&mut self, id: u64, now: Instant) {
        if let Err(e) = self.tracker.commit(id, now) {
            tracing::error!(error = %e, "ack bookkeeping");
        }
    }

    pub(super) fn on_done(&mut self, done: Done, now: Instant) {
        let Done {
            id,
            kind,
            op,
            answer,
        } = done;
        let metrics = &self.shared.metrics;
        let outcome = match answer {
            Answer::Api(outcome) => outcome,
            Answer::Superseded => {
                metrics.upstream_call(op, "superseded");
                self.commit(id, now);
                return;
            }
            Answer::Cert(Ok(response)) => {
                metrics.upstream_call(op, "200");
                metrics.cert_renewal("issued");
                tracing::info!(id, "node certificate renewed");
                self.commit(id, now);
                self.push(&Frame::cert_renew_response(id, &response));
                return;
            }
            Answer::Cert(Err(e)) => {
                let (code, reason) = e.status();
                metrics.upstream_call(op, code.to_string());
                metrics.cert_renewal(reason);
                tracing::warn!(id, code, reason, error = %e, "certificate renewal refused");
                if upstream::is_final(code) {
                    self.commit(id, now);
                    self.error(u32::from(code), reason, e.to_string(), id);
                } else {
                    self.retry_from(id);
                }
                return;
            }
        };
        match outcome {
            Outcome::Final(response, rv) => {
                metrics.upstream_call(op, response.code.to_string());
                self.commit(id, now);
                if kind == Kind::Request {
                    let frame = self.response_frame(id, response, &rv);
                    self.push(&frame);
                } else if response.code >= 400 {
                    tracing::debug!(id, code = response.code, message = %response.message, "event not stored");
                }
            }
            Outcome::Transient(cause) => {
                metrics.upstream_call(op, "transient");
                if kind == Kind::Event {
                    // Events may be dropped under pressure; ack anyway.
                    tracing::debug!(id, %cause, "event dropped");
                    self.commit(id, now);
                } else {
                    tracing::warn!(id, %cause, "API call failed; waiting for the edge to retry");
                    self.retry_from(id);
                }
            }
        }
    }

    /// Forgets the delivery of `id` and everything after it, so the edge's
    /// retransmissions are run again (in order). Calls after `id` still running are
    /// dropped unanswered: they are status patches or Event creates (see
    /// [`concurrent_key`]), which the edge's retransmission repeats harmlessly.
    fn retry_from(&mut self, id: u64) {
        self.tracker.redeliver_from(id);
        self.requests.clear();
        self.queued_bytes = 0;
        self.shared.note_queued_bytes();
        self.superseded.clear();
        self.running = futures::stream::FuturesOrdered::new();
        self.running_keys.clear();
    }

    /// RESPONSE for request `id`, shrunk to an error if too large.
    fn response_frame(&self, id: u64, response: Response, rv: &str) -> Frame {
        let frame = Frame::response(id, &response).with_resource_version(rv);
        match proto::encode_checked(&frame, self.edge_limits) {
            Ok(_) => frame,
            Err(e) => Frame::response(
                id,
                &Response {
                    code: 413,
                    reason: "RequestEntityTooLarge".into(),
                    message: format!("the API response does not fit in a frame: {e}"),
                    body: Vec::new(),
                },
            ),
        }
    }
}

/// How long a write of the node's own Lease/Node that found it missing waits for the
/// session to register the node before it is run again.
const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// Whether `frame` writes an object the session creates at registration: the node's own
/// Lease or Node.
fn registers(node: &str, frame: &Frame) -> bool {
    frame.key().is_ok_and(|key| {
        key.name == node
            && match key.kind.as_str() {
                "lease" => key.namespace.as_deref() == Some(crate::lifecycle::LEASE_NAMESPACE),
                "node" => key.is_cluster_scoped(),
                _ => false,
            }
    })
}

/// Whether a queued `frame` is replaced by a newer one with the same route: the node's own
/// Lease renewal and Node status, which the edge sends whole every interval (fire and
/// forget: nothing on the edge waits for their answers).
fn coalesces(node: &str, frame: &Frame) -> bool {
    own_write(node, frame, "lease", Op::Patch) || own_write(node, frame, "node", Op::PatchStatus)
}

/// Whether `frame` renews `node`'s own Lease (a patch of it).
fn renews_own_lease(node: &str, frame: &Frame) -> bool {
    own_write(node, frame, "lease", Op::Patch)
}

/// Whether `frame` is `op` on `node`'s own object of `kind` (its Lease or Node).
fn own_write(node: &str, frame: &Frame, kind: &str, op: Op) -> bool {
    registers(node, frame)
        && frame.key().is_ok_and(|k| k.kind == kind)
        && frame.op().is_ok_and(|o| o == op)
}

/// What a frame writes, if it may run while others run: a REQUEST patching an object's
/// status (idempotent — the edge always sends a whole status — so running it again after a
/// transient failure of an earlier call is harmless), or an EVENT creating a Kubernetes
/// Event (a new name each; a repeat is refused as AlreadyExists and dropped, and Events
/// are best effort anyway). A pod's start writes three Events: run one at a time, they
/// kept the status patches behind them waiting. Everything else runs alone.
fn concurrent_key(frame: &Frame) -> Option<String> {
    let op = frame.op().ok();
    let patches_status = frame.kind == Kind::Request as i32 && op == Some(proto::Op::PatchStatus);
    let creates_event = frame.kind == Kind::Event as i32 && op == Some(proto::Op::Create);
    (patches_status || creates_event)
        .then(|| frame.route.as_ref().map(|r| r.resource.clone()))
        .flatten()
}

/// Whether a call writing `key` (`None`: one that must run alone) may start while
/// `running` run: alone when nothing runs; otherwise only a status patch, among status
/// patches of other objects, fewer than [`MAX_RUNNING`]. Two writes of one object never run
/// at once, so they reach the API in the edge's order.
fn may_start(running: &VecDeque<Option<String>>, key: Option<&str>) -> bool {
    if running.is_empty() {
        return true;
    }
    let Some(key) = key else {
        return false;
    };
    running.len() < MAX_RUNNING
        && running
            .iter()
            .all(|r| r.as_deref().is_some_and(|r| r != key))
}

fn op_label(frame: &Frame) -> &'static str {
    if frame.kind == Kind::Event as i32 {
        return "event";
    }
    frame.op().map(|o| o.as_str()).unwrap_or("unknown")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proto::{Op, ResourceKey};

    use super::*;

    fn key(name: &str) -> ResourceKey {
        ResourceKey::namespaced("ns", "device", name).unwrap()
    }

    #[test]
    fn only_status_patches_and_event_creates_run_concurrently() {
        let status = Frame::request(1, Op::PatchStatus, &key("a"), b"{}".to_vec());
        assert_eq!(concurrent_key(&status).as_deref(), Some("ns/device/a"));
        let event = ResourceKey::namespaced("ns", "event", "p.1").unwrap();
        let event = Frame::event(6, Op::Create, &event, b"{}".to_vec());
        assert_eq!(concurrent_key(&event).as_deref(), Some("ns/event/p.1"));
        for alone in [
            Frame::request(2, Op::Patch, &key("a"), b"{}".to_vec()),
            Frame::request(3, Op::Create, &key("a"), b"{}".to_vec()),
            Frame::event(4, Op::PatchStatus, &key("a"), b"{}".to_vec()),
            Frame::cert_renew_request(5, "csr"),
        ] {
            assert_eq!(concurrent_key(&alone), None, "{alone:?}");
        }
    }

    #[test]
    fn status_patches_of_different_objects_overlap_others_wait() {
        let some = |k: &str| Some(k.to_owned());
        let mut running = VecDeque::new();
        assert!(
            may_start(&running, None),
            "anything starts when nothing runs"
        );
        running.push_back(some("ns/device/a"));
        assert!(may_start(&running, Some("ns/device/b")));
        assert!(
            !may_start(&running, Some("ns/device/a")),
            "two writes of one object keep their order"
        );
        assert!(!may_start(&running, None), "a create waits for the patches");
        running.push_back(None);
        assert!(
            !may_start(&running, Some("ns/device/c")),
            "nothing overlaps a call that runs alone"
        );
        let full: VecDeque<_> = (0..MAX_RUNNING).map(|i| some(&format!("k{i}"))).collect();
        assert!(
            !may_start(&full, Some("other")),
            "at most MAX_RUNNING at once"
        );
    }
}
