//! The upstream half of a session: edge REQUEST / EVENT / CERT_RENEW_REQUEST
//! frames are delivered in order, authorised, run one at a time, answered,
//! and acked only once their API call finished (transient failures are
//! not acked, so the edge sends them again).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::{CertRenewRequest, CertRenewResponse, Frame, Kind, Receipt, Response};
use tokio::time::Instant;

use super::super::authz::{self, Facts};
use super::super::metrics::UpstreamLabel;
use super::super::phase::Phase;
use super::super::upstream::{self, Outcome};
use super::{MAX_QUEUED_REQUESTS, REFUSAL_BUDGET, Session};
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
}

impl Session {
    /// A sequenced edge frame: deliver in order, queue for execution.
    pub(super) fn on_sequenced(&mut self, frame: Frame) {
        if self.requests.len() >= MAX_QUEUED_REQUESTS && frame.id > self.tracker.delivered() {
            // Not delivered: the edge sends it again after its timeout.
            self.shared.metrics.refuse("busy");
            return;
        }
        match self.tracker.on_frame(frame.id) {
            Receipt::Deliver => self.requests.push_back(frame),
            Receipt::Duplicate | Receipt::Gap { .. } | Receipt::Unsequenced => {}
        }
    }

    /// Starts the next upstream call if none runs; refusals are answered
    /// at once.
    pub(super) fn start_requests(&mut self, now: Instant) {
        if self.running.is_some()
            || self.phase == Phase::Handshake
            || !self.shared.cache.is_synced()
        {
            return;
        }
        for _ in 0..REFUSAL_BUDGET {
            let Some(frame) = self.requests.pop_front() else {
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
                self.running = Some(Box::pin(async move {
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
                }));
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
                let answer = Answer::Api(outcome);
                self.on_done(
                    Done {
                        id: frame.id,
                        kind,
                        op: op_label(&frame),
                        answer,
                    },
                    now,
                );
                continue;
            }
            let shared = self.shared.clone();
            let client = self.shared.client.clone();
            let facts: Arc<dyn Facts + Send + Sync> = self.shared.cache.clone();
            let node = self.node.clone();
            let registered = self.registered.clone();
            self.running = Some(Box::pin(async move {
                let permit = shared.api_permit().await;
                let mut outcome = upstream::execute(&client, facts.clone(), &node, &frame).await;
                drop(permit);
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
                    outcome = upstream::execute(&client, facts, &node, &frame).await;
                }
                Done {
                    id: frame.id,
                    kind,
                    op: op_label(&frame),
                    answer: Answer::Api(outcome),
                }
            }));
            return;
        }
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
            Answer::Cert(Ok(response)) => {
                metrics
                    .upstream
                    .get_or_create(&UpstreamLabel {
                        op,
                        code: "200".into(),
                    })
                    .inc();
                metrics.cert_renewal("issued");
                tracing::info!(id, "node certificate renewed");
                self.commit(id, now);
                self.push(&Frame::cert_renew_response(id, &response));
                return;
            }
            Answer::Cert(Err(e)) => {
                let (code, reason) = e.status();
                metrics
                    .upstream
                    .get_or_create(&UpstreamLabel {
                        op,
                        code: code.to_string(),
                    })
                    .inc();
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
                metrics
                    .upstream
                    .get_or_create(&UpstreamLabel {
                        op,
                        code: response.code.to_string(),
                    })
                    .inc();
                self.commit(id, now);
                if kind == Kind::Request {
                    let frame = self.response_frame(id, response, &rv);
                    self.push(&frame);
                } else if response.code >= 400 {
                    tracing::debug!(id, code = response.code, message = %response.message, "event not stored");
                }
            }
            Outcome::Transient(cause) => {
                metrics
                    .upstream
                    .get_or_create(&UpstreamLabel {
                        op,
                        code: "transient".into(),
                    })
                    .inc();
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
    /// retransmissions are run again (in order).
    fn retry_from(&mut self, id: u64) {
        self.tracker.redeliver_from(id);
        self.requests.clear();
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

fn op_label(frame: &Frame) -> &'static str {
    if frame.kind == Kind::Event as i32 {
        return "event";
    }
    frame.op().map(|o| o.as_str()).unwrap_or("unknown")
}
