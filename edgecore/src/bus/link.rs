//! The bus's MQTT client (rumqttc, MQTT 3.1.1): connects, subscribes to the edge's request
//! topics, re-subscribes after every reconnect (rumqttc has no reconnect event; a CONNACK is
//! one), and backs off with the one jittered [`Backoff`] of edgecore (cap 30 s).
//!
//! Logging is per state change, not per attempt: a missing broker gives one warning, then
//! silence (debug level) until it is back (one info line). KubeEdge floods its log instead
//! (kubeedge#5446).
//!
//! Publishing never waits: [`Publisher::publish`] queues or, if the client queue is full
//! (broker away for long), drops and counts. Incoming publishes go to the bus loop over a
//! bounded channel; when the loop is busy the link stops reading, so the broker holds back.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::metrics::BusMetrics;
use super::{BusConfig, BusError, broker};
use crate::backoff::Backoff;

/// Capacity of the channel of incoming messages to the bus loop.
pub const INCOMING_CAPACITY: usize = 1024;
/// Capacity of rumqttc's request queue (publishes waiting for the network).
const REQUEST_CAPACITY: usize = 4096;

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether it is the embedded broker (clean sessions) or an external one (persistent
    /// session, so the broker queues requests while edgecore restarts).
    pub embedded: bool,
}

impl BrokerAddr {
    /// The embedded broker listening on `listen`.
    pub fn from_listen(listen: std::net::SocketAddr) -> Self {
        let a = broker::connectable(listen);
        Self {
            host: a.ip().to_string(),
            port: a.port(),
            embedded: true,
        }
    }
}

/// Parses `mqtt://host:port` (also `tcp://`, or bare `host:port`; default port 1883).
pub fn parse_broker_url(url: &str) -> Result<BrokerAddr, BusError> {
    let bad = |why: &str| BusError::Config(format!("external broker {url:?}: {why}"));
    let rest = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "unsupported scheme {scheme:?} (use mqtt://host:port)"
            )));
        }
        None => url,
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(bad("expected mqtt://host:port"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => {
            let port = p.parse::<u16>().map_err(|_| bad("invalid port"))?;
            (h, port)
        }
        _ => (rest, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad("expected mqtt://host:port"));
    }
    Ok(BrokerAddr {
        host: host.to_owned(),
        port,
        embedded: false,
    })
}

/// One message received on a subscribed topic.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
}

/// The link's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Dialling (entered at start and after every back-off).
    Connecting,
    /// CONNACK received and subscriptions sent (left on any connection error).
    Connected,
    /// Waiting before the next attempt (entered on an error, left when the delay is over).
    Backoff,
}

/// The publishing side, used by the bus loop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: AsyncClient,
    metrics: BusMetrics,
}

impl Publisher {
    /// Queues a QoS 1 publish; drops it (counted) if the queue is full.
    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        if let Err(e) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
        {
            self.metrics.publish_dropped.inc();
            debug!(error = %e, "dropping an MQTT publish: client queue full");
        }
    }
}

fn options(cfg: &BusConfig, target: &BrokerAddr) -> MqttOptions {
    let id = format!("kedge-edgecore-{}", cfg.node_name);
    let mut o = MqttOptions::new(id, target.host.clone(), target.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(target.embedded);
    o.set_max_packet_size(broker::MAX_PAYLOAD + 1024, broker::MAX_PAYLOAD + 1024);
    o.set_inflight(100);
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    o
}

/// Starts the link task. Incoming publishes go to `incoming`; the task ends on `shutdown`.
pub fn spawn(
    cfg: &BusConfig,
    target: BrokerAddr,
    incoming: mpsc::Sender<Incoming>,
    metrics: BusMetrics,
    shutdown: CancellationToken,
) -> (Publisher, JoinHandle<()>) {
    let (client, eventloop) = AsyncClient::new(options(cfg, &target), REQUEST_CAPACITY);
    let filters =
        devicetwin::topic::edge_subscriptions(&cfg.prefix, &cfg.node_name).unwrap_or_default();
    let publisher = Publisher {
        client: client.clone(),
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(drive(
        client, eventloop, target, filters, incoming, metrics, shutdown,
    ));
    (publisher, task)
}

async fn drive(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    target: BrokerAddr,
    filters: Vec<String>,
    incoming: mpsc::Sender<Incoming>,
    metrics: BusMetrics,
    shutdown: CancellationToken,
) {
    let broker = format!("{}:{}", target.host, target.port);
    let mut state = LinkState::Connecting;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut connected_once = false;
    let mut warned = false;
    loop {
        let polled = tokio::select! {
            () = shutdown.cancelled() => break,
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                let subs = filters.iter().map(|f| rumqttc::SubscribeFilter {
                    path: f.clone(),
                    qos: QoS::AtLeastOnce,
                });
                if let Err(e) = client.try_subscribe_many(subs) {
                    warn!(%broker, error = %e, "queueing the bus subscriptions failed");
                }
                if connected_once {
                    metrics.reconnects.inc();
                }
                connected_once = true;
                metrics.connected.set(1);
                backoff.reset();
                if state != LinkState::Connected {
                    info!(%broker, session_present = ack.session_present, "bus connected to the MQTT broker");
                }
                warned = false;
                state = LinkState::Connected;
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let why = format!("refused: {:?}", ack.code);
                enter_backoff(&mut state, &broker, &why, &mut warned, &metrics);
                if !pause(&mut backoff, &shutdown, &mut state).await {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let msg = Incoming {
                    topic: p.topic,
                    payload: p.payload,
                };
                let sent = tokio::select! {
                    () = shutdown.cancelled() => break,
                    r = incoming.send(msg) => r,
                };
                if sent.is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    .count();
                if refused > 0 {
                    warn!(%broker, refused, "the broker refused bus subscriptions (a '$' prefix on rumqttd?)");
                }
            }
            Ok(_) => {}
            Err(e) => {
                enter_backoff(&mut state, &broker, &e.to_string(), &mut warned, &metrics);
                if !pause(&mut backoff, &shutdown, &mut state).await {
                    break;
                }
            }
        }
    }
    metrics.connected.set(0);
    let _ = client.try_disconnect();
    debug!(%broker, "bus link stopped");
}

/// Logs once per outage: a warning on the first failure, debug lines after.
fn enter_backoff(
    state: &mut LinkState,
    broker: &str,
    error: &str,
    warned: &mut bool,
    metrics: &BusMetrics,
) {
    metrics.connected.set(0);
    if *state == LinkState::Connected {
        warn!(%broker, %error, "bus lost the MQTT broker; reconnecting with back-off");
        *warned = true;
    } else if !*warned {
        warn!(%broker, %error, "MQTT broker unreachable; retrying quietly with back-off (cap 30 s)");
        *warned = true;
    } else {
        debug!(%broker, %error, "MQTT broker still unreachable");
    }
    *state = LinkState::Backoff;
}

/// Sleeps one back-off delay, then dials again; `false` if shut down meanwhile.
async fn pause(backoff: &mut Backoff, shutdown: &CancellationToken, state: &mut LinkState) -> bool {
    let delay = backoff.next_delay();
    debug!(?state, ?delay, "bus link backing off");
    let go_on = tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    };
    *state = LinkState::Connecting;
    go_on
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let a = parse_broker_url("mqtt://127.0.0.1:1884").ok();
        assert_eq!(
            a.map(|a| (a.host, a.port, a.embedded)),
            Some(("127.0.0.1".into(), 1884, false))
        );
        let a = parse_broker_url("tcp://broker").ok();
        assert_eq!(a.map(|a| (a.host, a.port)), Some(("broker".into(), 1883)));
        let a = parse_broker_url("localhost:1999").ok();
        assert_eq!(a.map(|a| a.port), Some(1999));
        let a = parse_broker_url("mqtt://[::1]:1884/").ok();
        assert_eq!(a.map(|a| (a.host, a.port)), Some(("::1".into(), 1884)));
        for bad in [
            "mqtts://h:1",
            "mqtt://",
            "mqtt://h:x",
            "mqtt://h:0",
            "mqtt://u@h:1",
            "mqtt://h:1/x",
        ] {
            assert!(parse_broker_url(bad).is_err(), "{bad}");
        }
    }
}
