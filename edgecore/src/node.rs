//! What the edge reports about itself: the facts in HELLO ([`NodeInfo`] read
//! from `/proc` and `/etc`), the Node status patch and the Lease renewal —
//! built by pure functions ([`node_status_patch`], [`lease_patch`]) — and the
//! [`run_reporter`] task that renews the Lease every `status.interval_secs` and
//! posts the Node status when it changed, every `status.report_secs` anyway (as
//! the kubelet does: the Lease is the heartbeat, not the Node), and both at once
//! whenever a session comes up. The unchanged-status period is jittered
//! ([`status_period`]): a fleet whose sessions came up together (a cloudcore
//! restart, a reconnect storm) would otherwise post its Node statuses in waves.
//!
//! Both go through the outbox coalesced under fixed keys, so an edge that is
//! offline for a day sends one status and one renewal when it returns, not
//! 8,640 of each.

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use proto::{NodeAddress, NodeInfo, Op, ResourceKey};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::ServerUrl;
use crate::hub::HubStatus;
use crate::hub::link::Link;
use crate::outbox::{Outbox, Upstream};

/// Condition type raised after the store was moved aside and recreated.
pub const STORE_RECOVERED: &str = "KedgeStoreRecovered";
/// Outbox key of the Node status report.
pub const STATUS_KEY: &str = "node-status";
/// Outbox key of the Lease renewal.
pub const LEASE_KEY: &str = "node-lease";

/// The Kubernetes architecture name of this build's CPU.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// This machine's host name (lower-cased), or `None`.
pub fn hostname() -> Option<String> {
    let h = read_trim("/proc/sys/kernel/hostname");
    let h = if h.is_empty() {
        read_trim("/etc/hostname")
    } else {
        h
    };
    (!h.is_empty()).then(|| h.to_ascii_lowercase())
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".to_owned())
}

/// Capacity from `/proc`: cpu (cores), memory (KiB), pods.
fn capacity() -> BTreeMap<String, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    BTreeMap::from([
        ("cpu".to_owned(), cpus.to_string()),
        ("memory".to_owned(), format!("{mem_kib}Ki")),
        ("pods".to_owned(), "110".to_owned()),
    ])
}

/// The local address used to reach `server`: the node's InternalIP. A UDP
/// "connect" only picks a route; it sends nothing.
fn internal_ip(server: &ServerUrl) -> Option<IpAddr> {
    let target = (server.host.as_str(), server.port);
    let bind = if server.host.contains(':') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(target).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The version edgecore reports as the Node's `nodeInfo.kubeletVersion` — by the hub when
/// it registers the Node (from HELLO) and by edgecore's own status posts alike: semver with
/// a `-kedge` suffix, as KubeEdge's `v1.x.y-kubeedge-…` (`kubectl get nodes` VERSION).
pub fn kubelet_version() -> String {
    format!("v{}-kedge", env!("CARGO_PKG_VERSION"))
}

/// Facts about this node for HELLO and the Node status.
pub fn node_info(name: &str, server: &ServerUrl, labels: &BTreeMap<String, String>) -> NodeInfo {
    let capacity = capacity();
    let mut addresses = Vec::new();
    if let Some(ip) = internal_ip(server) {
        addresses.push(NodeAddress {
            r#type: "InternalIP".to_owned(),
            address: ip.to_string(),
        });
    }
    addresses.push(NodeAddress {
        r#type: "Hostname".to_owned(),
        address: name.to_owned(),
    });
    NodeInfo {
        os: std::env::consts::OS.to_owned(),
        arch: arch().to_owned(),
        kernel_version: read_trim("/proc/sys/kernel/osrelease"),
        os_image: os_image(),
        container_runtime_version: String::new(),
        agent_version: kubelet_version(),
        allocatable: capacity.clone(),
        capacity,
        addresses,
        labels: labels.clone(),
    }
}

/// A condition the edge reports besides Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `type`.
    pub kind: String,
    /// `True` / `False` / `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// When it last changed.
    pub since: DateTime<Utc>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Merge patch of the Node's `status`: conditions (Ready=True with reason
/// `KedgeReady`, plus `extra`), nodeInfo, capacity, allocatable, addresses.
pub fn node_status_patch(
    info: &NodeInfo,
    ready_since: DateTime<Utc>,
    extra: &[Condition],
    now: DateTime<Utc>,
) -> Value {
    let mut conditions = vec![json!({
        "type": "Ready",
        "status": "True",
        "reason": "KedgeReady",
        "message": "edgecore is running and posting status",
        "lastHeartbeatTime": time(now),
        "lastTransitionTime": time(ready_since),
    })];
    conditions.extend(extra.iter().map(|c| {
        json!({
            "type": c.kind,
            "status": c.status,
            "reason": c.reason,
            "message": c.message,
            "lastHeartbeatTime": time(now),
            "lastTransitionTime": time(c.since),
        })
    }));
    let addresses: Vec<Value> = info
        .addresses
        .iter()
        .map(|a| json!({"type": a.r#type, "address": a.address}))
        .collect();
    let boot_id = read_trim("/proc/sys/kernel/random/boot_id");
    let machine_id = read_trim("/etc/machine-id");
    json!({
        "status": {
            "conditions": conditions,
            "addresses": addresses,
            "capacity": info.capacity,
            "allocatable": info.allocatable,
            "nodeInfo": {
                "machineID": machine_id,
                "systemUUID": machine_id,
                "bootID": boot_id,
                "kernelVersion": info.kernel_version,
                "osImage": info.os_image,
                "containerRuntimeVersion": info.container_runtime_version,
                "kubeletVersion": info.agent_version,
                "kubeProxyVersion": "",
                "operatingSystem": info.os,
                "architecture": info.arch,
            },
        }
    })
}

/// Merge patch renewing the node Lease: `spec.renewTime` (RFC 3339 with
/// microseconds, as Kubernetes' MicroTime), `holderIdentity`,
/// `leaseDurationSeconds`.
pub fn lease_patch(node: &str, duration_secs: u64, now: DateTime<Utc>) -> Value {
    json!({
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": duration_secs,
            "renewTime": now.to_rfc3339_opts(SecondsFormat::Micros, true),
        }
    })
}

/// What the reporter needs.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// The node name.
    pub node: String,
    /// HELLO facts (re-read for every report is not needed: they rarely change).
    pub info: NodeInfo,
    /// Extra conditions (e.g. store recovered).
    pub conditions: watch::Receiver<Vec<Condition>>,
    /// Between Lease renewals (and checks of the Node status).
    pub interval: Duration,
    /// Lease duration.
    pub lease_duration_secs: u64,
    /// After this, an unchanged Node status is posted anyway.
    pub report: Duration,
}

impl Reporter {
    /// The two outbox entries of one report.
    #[cfg(test)]
    fn entries(&self, ready_since: DateTime<Utc>, now: DateTime<Utc>) -> Vec<(String, Upstream)> {
        self.status_entry(ready_since, now)
            .into_iter()
            .chain(self.lease_entry(now))
            .collect()
    }

    /// The Node status report.
    pub fn status_entry(
        &self,
        ready_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(String, Upstream)> {
        let node_key = ResourceKey::cluster("node", self.node.clone()).ok()?;
        let body = node_status_patch(&self.info, ready_since, &self.conditions.borrow(), now);
        Some((
            STATUS_KEY.to_owned(),
            Upstream::request(Op::PatchStatus, &node_key, &body)
                .with_content_type(proto::frame::MERGE_PATCH),
        ))
    }

    /// The Lease renewal.
    pub fn lease_entry(&self, now: DateTime<Utc>) -> Option<(String, Upstream)> {
        let lease_key =
            ResourceKey::namespaced("kube-node-lease", "lease", self.node.clone()).ok()?;
        let body = lease_patch(&self.node, self.lease_duration_secs, now);
        Some((
            LEASE_KEY.to_owned(),
            Upstream::request(Op::Patch, &lease_key, &body)
                .with_content_type(proto::frame::MERGE_PATCH),
        ))
    }
}

/// Share of `report` by which each unchanged-status period is shortened at most.
const STATUS_JITTER: f64 = 0.25;

/// The period until the next unchanged Node status post, from `report` and a draw
/// `u` in `[0, 1)`: uniform in `[report × 3/4, report]`, never longer than `report`
/// (the kubelet's `nodeStatusReportFrequency` is a maximum), so edges that posted
/// together drift apart by up to a quarter period with every post.
pub fn status_period(report: Duration, u: f64) -> Duration {
    report.mul_f64(1.0 - STATUS_JITTER * u.clamp(0.0, 1.0))
}

/// Queues the Lease renewal every interval and the Node status when it changed or
/// its jittered [`status_period`] passed; both at once when a session comes up and when the extra
/// conditions change; until `shutdown`. The status changes only through those
/// conditions (the node's facts are read once, at start), so a change is always
/// one of the forcing events: nothing needs comparing.
pub async fn run_reporter(
    mut reporter: Reporter,
    outbox: Outbox,
    mut hub: watch::Receiver<HubStatus>,
    shutdown: CancellationToken,
) {
    let ready_since = Utc::now();
    let mut tick = tokio::time::interval(reporter.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sessions = hub.borrow().sessions;
    let mut conditions_open = true;
    // When the Node status was last queued, and the period drawn for the next one.
    let mut posted: Option<tokio::time::Instant> = None;
    let mut period = reporter.report;
    loop {
        let force = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            changed = hub.changed() => {
                if changed.is_err() {
                    return;
                }
                let status = hub.borrow_and_update().clone();
                // Only a new session (HELLO_ACK) triggers an immediate report.
                if status.sessions == last_sessions || status.link != Link::Syncing {
                    continue;
                }
                last_sessions = status.sessions;
                true
            }
            changed = reporter.conditions.changed(), if conditions_open => {
                if changed.is_err() {
                    conditions_open = false;
                    continue;
                }
                true
            }
        };
        let now = Utc::now();
        let due = force || posted.is_none_or(|at| at.elapsed() >= period);
        let mut entries = Vec::with_capacity(2);
        if due {
            entries.extend(reporter.status_entry(ready_since, now));
        }
        entries.extend(reporter.lease_entry(now));
        match outbox.put_many(entries).await {
            Ok(_) if due => {
                posted = Some(tokio::time::Instant::now());
                period = status_period(reporter.report, rand::random::<f64>());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %crate::hub::conn::chain(&e), "cannot queue the node status");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lease_renew_time_has_microseconds() {
        let now = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = lease_patch("edge-1", 40, now);
        assert_eq!(p["spec"]["renewTime"], "2025-01-02T03:04:05.123456Z");
        assert_eq!(p["spec"]["holderIdentity"], "edge-1");
        assert_eq!(p["spec"]["leaseDurationSeconds"], 40);
    }

    #[test]
    fn status_patch_has_ready_and_extra_conditions() {
        let server = ServerUrl::parse("wss://127.0.0.1:1").unwrap();
        let info = node_info("edge-1", &server, &BTreeMap::new());
        assert_eq!(info.os, "linux");
        assert!(info.capacity.contains_key("cpu"));
        assert!(
            info.addresses
                .iter()
                .any(|a| a.r#type == "InternalIP" && a.address == "127.0.0.1")
        );
        let now = Utc::now();
        let extra = [Condition {
            kind: STORE_RECOVERED.into(),
            status: "True".into(),
            reason: "StoreMovedAside".into(),
            message: "moved".into(),
            since: now,
        }];
        let p = node_status_patch(&info, now, &extra, now);
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds[0]["type"], "Ready");
        assert_eq!(conds[0]["reason"], "KedgeReady");
        assert_eq!(conds[1]["type"], STORE_RECOVERED);
        assert_eq!(p["status"]["nodeInfo"]["architecture"], arch());
        // The same VERSION whether the hub registered the Node (from HELLO) or edgecore
        // posted its status: semver, as tools parse it.
        assert_eq!(
            p["status"]["nodeInfo"]["kubeletVersion"],
            info.agent_version
        );
        assert_eq!(
            info.agent_version,
            format!("v{}-kedge", env!("CARGO_PKG_VERSION"))
        );
        assert!(
            p["status"]["capacity"]["memory"]
                .as_str()
                .unwrap()
                .ends_with("Ki")
        );
    }

    #[test]
    fn reporter_entries_use_fixed_keys_and_ops() {
        let (_tx, rx) = watch::channel(Vec::new());
        let r = Reporter {
            node: "edge-1".into(),
            info: NodeInfo::default(),
            conditions: rx,
            interval: Duration::from_secs(10),
            lease_duration_secs: 40,
            report: Duration::from_secs(300),
        };
        let e = r.entries(Utc::now(), Utc::now());
        assert_eq!(e[0].0, STATUS_KEY);
        assert_eq!(e[0].1.op, "patch_status");
        assert_eq!(e[0].1.resource, "null/node/edge-1");
        assert_eq!(e[1].0, LEASE_KEY);
        assert_eq!(e[1].1.op, "patch");
        assert_eq!(e[1].1.resource, "kube-node-lease/lease/edge-1");
        for (_, u) in e {
            proto::validate(&u.to_frame(1)).unwrap();
        }
    }

    /// Drains `outbox` for `for_`, counting what it held by key.
    async fn drain(outbox: &Outbox, for_: Duration) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        let until = tokio::time::Instant::now() + for_;
        while tokio::time::Instant::now() < until {
            while let Some(t) = outbox.next_ready(tokio::time::Instant::now()) {
                *seen.entry(t.key.clone()).or_default() += 1;
                outbox.on_acked(&t.key, t.seq).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen
    }

    #[test]
    fn the_unchanged_status_period_is_at_most_report_and_at_least_three_quarters() {
        let report = Duration::from_secs(300);
        assert_eq!(status_period(report, 0.0), report);
        assert_eq!(status_period(report, 1.0), Duration::from_secs(225));
        assert_eq!(status_period(report, 7.0), Duration::from_secs(225));
        assert_eq!(status_period(report, -1.0), report);
    }

    #[test]
    fn status_posts_of_edges_that_came_up_together_drift_apart() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        // 1,000 edges whose sessions came up in the same second (a cloudcore restart):
        // by their fourth unchanged post no 10 s window holds more than 15 % of them
        // (~9 % expected: the sum of four uniform draws; without jitter, all of them).
        let mut rng = StdRng::seed_from_u64(7);
        let report = Duration::from_secs(300);
        let mut buckets = BTreeMap::<u64, u32>::new();
        for _ in 0..1_000 {
            let at: Duration = (0..4)
                .map(|_| status_period(report, rng.random::<f64>()))
                .sum();
            assert!(at >= Duration::from_secs(900) && at <= Duration::from_secs(1_200));
            *buckets.entry(at.as_secs() / 10).or_default() += 1;
        }
        let worst = buckets.values().max().copied().unwrap_or(0);
        assert!(
            worst <= 150,
            "{worst} of 1,000 edges posted in one 10 s window"
        );
    }

    #[tokio::test]
    async fn the_lease_is_renewed_every_interval_and_the_status_posted_when_it_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let store =
            crate::store::Store::open(&tmp.path().join("s"), &crate::store::StoreConfig::default())
                .unwrap();
        let outbox = Outbox::open(store, crate::telemetry::Metrics::new()).unwrap();
        let (cond_tx, cond_rx) = watch::channel(Vec::new());
        let (hub_tx, hub_rx) = watch::channel(HubStatus::default());
        let reporter = Reporter {
            node: "edge-1".into(),
            info: NodeInfo::default(),
            conditions: cond_rx,
            interval: Duration::from_millis(100),
            lease_duration_secs: 40,
            report: Duration::from_secs(300),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_reporter(reporter, outbox.clone(), hub_rx, stop.clone()));
        // Unchanged: the first status, then Lease renewals alone.
        let seen = drain(&outbox, Duration::from_millis(450)).await;
        assert_eq!(seen.get(STATUS_KEY), Some(&1), "{seen:?}");
        assert!(seen.get(LEASE_KEY).is_some_and(|n| *n >= 3), "{seen:?}");
        // A changed condition is posted at once.
        cond_tx.send_replace(vec![Condition {
            kind: STORE_RECOVERED.into(),
            status: "True".into(),
            reason: "Test".into(),
            message: String::new(),
            since: Utc::now(),
        }]);
        let seen = drain(&outbox, Duration::from_millis(50)).await;
        assert_eq!(seen.get(STATUS_KEY), Some(&1), "{seen:?}");
        // A new session gets the status again.
        hub_tx.send_modify(|h| {
            h.sessions += 1;
            h.link = Link::Syncing;
        });
        let seen = drain(&outbox, Duration::from_millis(50)).await;
        assert_eq!(seen.get(STATUS_KEY), Some(&1), "{seen:?}");
        let seen = drain(&outbox, Duration::from_millis(250)).await;
        assert_eq!(seen.get(STATUS_KEY), None, "{seen:?}");
        stop.cancel();
        task.await.unwrap();
    }
}
