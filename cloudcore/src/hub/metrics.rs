//! CloudHub's Prometheus metrics, registered into the registry the caller
//! passes to `Hub::new`. Labels are bounded sets (kinds, ops, reasons,
//! phases); nothing is labelled per node, so cardinality does not grow with
//! the cluster.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proto::Kind;

use super::phase::Phase;

/// `{kind}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Frame kind (`object`, `ack`...).
    pub kind: &'static str,
}

/// `{reason}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Stable reason label.
    pub reason: String,
}

/// `{state}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// Session phase.
    pub state: &'static str,
}

/// `{direction}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `received` (edge acked our frames) or `sent` (we acked the edge's).
    pub direction: &'static str,
}

/// `{op, code}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    /// Request op (`patch_status`...), or `event`.
    pub op: &'static str,
    /// HTTP status class or code (`200`, `403`, `transient`).
    pub code: String,
}

/// Every metric of the hub; cheap to clone (the metrics are shared).
#[derive(Debug, Clone, Default)]
pub struct HubMetrics {
    /// Nodes with a session.
    pub connected: Gauge,
    /// Sessions per phase.
    pub sessions: Family<StateLabel, Gauge>,
    /// Frames received per kind.
    pub frames_in: Family<KindLabel, Counter>,
    /// Frames sent per kind (retransmissions included).
    pub frames_out: Family<KindLabel, Counter>,
    /// Cumulative ACKs per direction.
    pub acks: Family<DirectionLabel, Counter>,
    /// Frames acked by edges.
    pub acked_frames: Counter,
    /// Retransmitted frames.
    pub retransmits: Counter,
    /// Queued plus in-flight cloud -> edge frames over all sessions.
    pub queue_depth: Gauge,
    /// Bytes of edge requests queued for their API call over all sessions (bounded by
    /// `hub.queued_request_budget_mib`).
    pub queued_request_bytes: Gauge,
    /// Full resyncs from the cache per reason (`inventory`, `lagged`).
    pub resyncs: Family<ReasonLabel, Counter>,
    /// Refused connections and frames per reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// Upstream API calls per op and result.
    pub upstream: Family<UpstreamLabel, Counter>,
    /// Sessions closed per reason.
    pub closed: Family<ReasonLabel, Counter>,
    /// Certificate renewals over the link per result (`issued`, or the refusal reason:
    /// `InvalidCSR`, `CSRIdentityMismatch`, `NodeRevoked`, `InternalError`).
    pub cert_renewals: Family<ResultLabel, Counter>,
    /// Node heartbeats per result: `edge` (nothing due: the edge renews its own Lease and
    /// its Node is Ready in the cache or the last check is fresh), `lease` (the Lease alone
    /// renewed, the last Node check being fresh), `checked` (the Node read and kept Ready,
    /// the Lease renewed unless the edge renews it), `failed`, `busy` (no API permit within
    /// one interval: nothing sent, the next heartbeat tries), `timeout` (calls started and
    /// took longer than 30 s).
    pub heartbeats: Family<ResultLabel, Counter>,
}

/// `{result}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `issued` or a refusal reason.
    pub result: String,
}

impl HubMetrics {
    /// Creates the metrics and registers them under `cloudcore_hub_*`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = HubMetrics::default();
        let reg = registry.sub_registry_with_prefix("cloudcore_hub");
        reg.register(
            "connected_nodes",
            "Nodes with a session",
            m.connected.clone(),
        );
        reg.register("sessions", "Sessions by state", m.sessions.clone());
        reg.register("frames_in", "Frames received by kind", m.frames_in.clone());
        reg.register("frames_out", "Frames sent by kind", m.frames_out.clone());
        reg.register("acks", "Cumulative ACKs by direction", m.acks.clone());
        reg.register(
            "acked_frames",
            "Frames acked by edges",
            m.acked_frames.clone(),
        );
        reg.register("retransmits", "Retransmitted frames", m.retransmits.clone());
        reg.register(
            "queue_depth",
            "Queued and in-flight frames to edges",
            m.queue_depth.clone(),
        );
        reg.register(
            "queued_request_bytes",
            "Bytes of edge requests queued for their API call, over all sessions",
            m.queued_request_bytes.clone(),
        );
        reg.register(
            "resyncs",
            "Full resyncs from the cache by reason",
            m.resyncs.clone(),
        );
        reg.register(
            "refused",
            "Refused connections and frames by reason",
            m.refused.clone(),
        );
        reg.register(
            "upstream_requests",
            "Edge API calls by op and result",
            m.upstream.clone(),
        );
        reg.register(
            "sessions_closed",
            "Closed sessions by reason",
            m.closed.clone(),
        );
        reg.register(
            "cert_renewals",
            "Node certificate renewals over the link by result",
            m.cert_renewals.clone(),
        );
        reg.register(
            "heartbeats",
            "Node heartbeats by result: edge (the edge renews its Lease; nothing due), lease, checked, failed, busy (no API permit in one interval), timeout",
            m.heartbeats.clone(),
        );
        for phase in Phase::ALL {
            let _ = m.sessions.get_or_create(&StateLabel {
                state: phase.label(),
            });
        }
        m
    }

    /// Counts a refusal.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a certificate renewal by result.
    pub fn cert_renewal(&self, result: &str) {
        self.cert_renewals
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts an upstream call made (or spared) for an edge, by op and code.
    pub fn upstream_call(&self, op: &'static str, code: impl Into<String>) {
        self.upstream
            .get_or_create(&UpstreamLabel {
                op,
                code: code.into(),
            })
            .inc();
    }

    /// Counts a node heartbeat by result.
    pub fn heartbeat(&self, result: &str) {
        self.heartbeats
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a frame received.
    pub fn frame_in(&self, kind: Kind) {
        self.frames_in
            .get_or_create(&KindLabel { kind: kind.label() })
            .inc();
    }

    /// Counts a frame sent.
    pub fn frame_out(&self, kind: Kind) {
        self.frames_out
            .get_or_create(&KindLabel { kind: kind.label() })
            .inc();
    }

    /// Moves one session from phase `from` (if any) to `to`.
    pub fn phase(&self, from: Option<Phase>, to: Phase) {
        if let Some(from) = from {
            self.sessions
                .get_or_create(&StateLabel {
                    state: from.label(),
                })
                .dec();
        }
        if to != Phase::Closed {
            self.sessions
                .get_or_create(&StateLabel { state: to.label() })
                .inc();
        }
    }
}
