//! The embedded MQTT broker: rumqttd with a config built in code, on its own thread
//! (`Broker::start` blocks and has no shutdown API).
//!
//! Sized for a gateway. rumqttd keeps an in-memory log per subscribed filter and per topic
//! published without a subscriber (`dynamic_filters`; without it such a publish disconnects
//! the publisher). Segments are filled as messages come, so a log holds at most 128 KiB
//! (8 segments of 16 KiB) for results, deltas and documents, and 1 MiB (8 × 128 KiB) for the
//! bus's own request filters, where a burst of reports must not overrun the bus client.
//! rumqttd drops a log's oldest segment when it is full, and a subscriber that lags behind
//! loses what it had not read — QoS 1 or not. Logs are sized by exact filter string, so a
//! mapper's wildcard subscription to every device's results shares one default-sized log:
//! with 32 KiB such a subscriber lost ~30 of 256 results in flight (`kedge-bench twin
//! --smoke`, 3 of 3 runs), with 128 KiB none. Eight segments make a full log drop an eighth
//! of itself, not half.
//!
//! The segment *count* is what costs memory, not the byte budget: rumqttd gives every new
//! segment a `Vec` with room for 1,024 entries (~240 KiB, of which a 16 KiB segment of
//! 100–300 byte messages uses a few pages). Once glibc has seen one such block freed it serves
//! the next ones from the router thread's heap instead of mmap, and that heap then spans
//! (and, reused for other allocations, touches) ~240 KiB per live segment. 64 segments of
//! 2 KiB per log cost several MiB of resident memory at 100 devices; 8 of 16 KiB hold the
//! same 128 KiB (see docs/benchmarks.md, "edgecore memory, session 6").
//! rumqttd routes no `$`-topics, hence the `kedge` prefix.
//! With a username, every client must present it (and the password); a wrong password just
//! drops the socket (rumqttd sends no CONNACK refusal).
//!
//! The broker's own meters (connections, routed and failed publishes) are pushed by rumqttd
//! every second while messages flow and copied into [`BusMetrics`].

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rumqttd::{
    Broker, Config, ConnectionSettings, Meter, MetricSettings, MetricType, RouterConfig,
    SegmentConfig, ServerSettings,
};
use tokio::sync::oneshot;
use tracing::{debug, error, info};

use super::metrics::BusMetrics;
use super::{BusConfig, BusError};

/// Largest MQTT payload the broker accepts (the twin payload limit plus headroom).
pub const MAX_PAYLOAD: usize = 512 * 1024;

/// The rumqttd config for `cfg`: one MQTT 3.1.1 listener, small segments.
pub fn config(cfg: &BusConfig) -> Config {
    let auth = cfg
        .username
        .as_ref()
        .map(|u| HashMap::from([(u.clone(), cfg.password.clone().unwrap_or_default())]));
    let server = ServerSettings {
        name: "kedge-v4".to_owned(),
        listen: cfg.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let big = SegmentConfig {
        max_segment_size: 128 * 1024,
        max_segment_count: 8,
    };
    let custom = devicetwin::topic::edge_subscriptions(&cfg.prefix, &cfg.node_name)
        .unwrap_or_default()
        .into_iter()
        .map(|f| (f, big.clone()))
        .collect::<HashMap<_, _>>();
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 256,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024,
            max_segment_count: 8,
            custom_segment: Some(custom),
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        metrics: meter_settings(),
        ..Config::default()
    }
}

/// Meters pushed every second (rumqttd's settings type has private fields, so it is built
/// through serde). Alerts must be configured too: rumqttd's timer unwraps both intervals.
fn meter_settings() -> Option<HashMap<MetricType, MetricSettings>> {
    let every = |s: u64| serde_json::from_value(serde_json::json!({ "push_interval": s })).ok();
    Some(HashMap::from([
        (MetricType::Meters, every(1)?),
        (MetricType::Alerts, every(3600)?),
    ]))
}

/// Copies rumqttd's meters into `metrics` until the broker goes away.
async fn follow_meters(link: rumqttd::meters::MetersLink, metrics: BusMetrics) {
    while let Ok(meters) = link.next().await {
        for m in meters {
            if let Meter::Router(_, r) = m {
                metrics
                    .broker_connections
                    .set(i64::try_from(r.total_connections).unwrap_or(i64::MAX));
                metrics.broker_publishes.inc_by(r.total_publishes as u64);
                metrics
                    .broker_failed_publishes
                    .inc_by(r.failed_publishes as u64);
            }
        }
    }
    debug!("the embedded broker's meters ended");
}

/// Starts the broker on `cfg.listen` and returns once it accepts connections.
///
/// Binds the address first so a taken port (a system Mosquitto on 1883) is a clear error
/// instead of a log line from the broker thread.
pub async fn start(cfg: &BusConfig, metrics: BusMetrics) -> Result<(), BusError> {
    let addr = cfg.listen;
    match TcpListener::bind(addr) {
        Ok(probe) => drop(probe),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(BusError::PortInUse { addr });
        }
        Err(e) => {
            return Err(BusError::Broker {
                addr,
                reason: format!("binding: {e}"),
            });
        }
    }
    let mut broker = Broker::new(config(cfg));
    match broker.meters() {
        Ok(link) => {
            tokio::spawn(follow_meters(link, metrics));
        }
        Err(e) => debug!(error = %e, "no meters from the embedded broker"),
    }
    let (done_tx, mut done_rx) = oneshot::channel::<String>();
    std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            let outcome = match broker.start() {
                Ok(()) => "the broker thread ended".to_owned(),
                Err(e) => e.to_string(),
            };
            error!(%addr, reason = %outcome, "embedded MQTT broker stopped");
            let _ = done_tx.send(outcome);
        })
        .map_err(|e| BusError::Broker {
            addr,
            reason: format!("spawning its thread: {e}"),
        })?;

    let connect_to = connectable(addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(reason) = done_rx.try_recv() {
            return Err(BusError::Broker { addr, reason });
        }
        let probe = tokio::task::spawn_blocking(move || {
            TcpStream::connect_timeout(&connect_to, Duration::from_millis(200))
        })
        .await;
        if matches!(probe, Ok(Ok(_))) {
            info!(%addr, "embedded MQTT broker listening");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BusError::Broker {
                addr,
                reason: "it did not accept connections within 10 s".to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The address a local client dials for a listen address (`0.0.0.0` -> loopback).
pub fn connectable(listen: SocketAddr) -> SocketAddr {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_one_small_v4_listener_and_optional_auth() {
        let mut cfg = BusConfig::new("n");
        let c = config(&cfg);
        let v4 = c.v4.as_ref().map(|m| m.len());
        assert_eq!(v4, Some(1));
        let per_topic = c.router.max_segment_size * c.router.max_segment_count;
        assert!(per_topic <= 128 * 1024, "{per_topic} bytes per topic");
        assert!(
            per_topic >= 128 * 1024,
            "a wildcard subscriber of every device's results shares this log"
        );
        assert!(
            c.router.max_segment_count >= 8,
            "a full log drops one small segment, not half of itself"
        );
        assert!(
            c.router.max_segment_count <= 8,
            "each segment reserves ~240 KiB in rumqttd; more of them cost resident memory"
        );
        let custom = c.router.custom_segment.clone().unwrap_or_default();
        assert!(custom.contains_key("kedge/events/device/+/+/twin/update"));
        assert!(c.v5.is_none() && c.ws.is_none() && c.prometheus.is_none());
        let metrics = c.metrics.clone().unwrap_or_default();
        assert!(
            metrics.contains_key(&MetricType::Meters) && metrics.contains_key(&MetricType::Alerts),
            "rumqttd's timer thread panics unless both are set"
        );
        cfg.username = Some("u".into());
        cfg.password = Some("p".into());
        let c = config(&cfg);
        let auth =
            c.v4.as_ref()
                .and_then(|m| m.get("1"))
                .and_then(|s| s.connections.auth.clone());
        assert_eq!(auth, Some(HashMap::from([("u".into(), "p".into())])));
    }

    #[test]
    fn unspecified_listen_is_dialled_on_loopback() {
        let a: SocketAddr = "0.0.0.0:1883"
            .parse()
            .unwrap_or(SocketAddr::from(([0; 4], 1883)));
        assert_eq!(connectable(a), SocketAddr::from(([127, 0, 0, 1], 1883)));
    }
}
