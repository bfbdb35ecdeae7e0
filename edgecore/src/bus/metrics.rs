//! Prometheus metrics of the bus and the drivers. Handles are cheap clones sharing values.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set: `[(name, value)]`.
pub type Labels = Vec<(String, String)>;

/// Every bus metric.
#[derive(Debug, Clone, Default)]
pub struct BusMetrics {
    /// `edgecore_twin_rejected_total{reason}`: requests answered with an error result.
    pub rejected: Family<Labels, Counter>,
    /// Desired values from the cloud (Device spec) refused against the DeviceModel, by reason.
    pub desired_refused: Family<Labels, Counter>,
    /// `edgecore_twin_requests_total{kind}`: requests received (`twin_update`, ...).
    pub requests: Family<Labels, Counter>,
    /// `edgecore_bus_publish_dropped_total`: publishes dropped because the client queue was full
    /// (broker unreachable for long).
    pub publish_dropped: Counter,
    /// `edgecore_bus_connected`: 1 while the MQTT client is connected.
    pub connected: Gauge,
    /// `edgecore_bus_reconnects_total`: connections to the broker after the first.
    pub reconnects: Counter,
    /// `edgecore_device_status_sent_total`: `Device.status` snapshots handed to the outbox.
    pub status_sent: Counter,
    /// `edgecore_driver_reads_total{protocol,result}`: device reads by built-in drivers.
    pub driver_reads: Family<Labels, Counter>,
    /// `edgecore_driver_writes_total{protocol,result}`: desired values written to devices.
    pub driver_writes: Family<Labels, Counter>,
    /// `edgecore_devices`: devices bound to this node.
    pub devices: Gauge,
    /// `edgecore_twin_accepted_total{kind}`: requests applied to a shadow.
    pub accepted: Family<Labels, Counter>,
    /// `edgecore_twin_deltas_sent_total`: `twin/update/delta` messages published.
    pub deltas_sent: Counter,
    /// `edgecore_device_reports_coalesced_total`: status snapshots replaced by a newer one
    /// before they left (the per-device rate limit at work).
    pub status_coalesced: Counter,
    /// `edgecore_driver_config_errors`: devices not driven because their protocol
    /// settings are invalid.
    pub driver_config_errors: Gauge,
    /// `edgecore_devices_held`: devices held (no driver, twin updates refused) because
    /// their DeviceModel is not at the edge yet.
    pub devices_held: Gauge,
    /// `edgecore_broker_connections`: clients connected to the embedded broker (updated
    /// every second while messages flow).
    pub broker_connections: Gauge,
    /// `edgecore_broker_publishes_total`: publishes the embedded broker routed.
    pub broker_publishes: Counter,
    /// `edgecore_broker_failed_publishes_total`: publishes the embedded broker refused.
    pub broker_failed_publishes: Counter,
}

/// One label.
pub fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

/// Two labels.
pub fn labels2(a: (&str, &str), b: (&str, &str)) -> Labels {
    vec![
        (a.0.to_owned(), a.1.to_owned()),
        (b.0.to_owned(), b.1.to_owned()),
    ]
}

impl BusMetrics {
    /// Creates the metrics and registers them in `r`.
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "edgecore_twin_rejected",
            "Twin requests refused with an error result, by reason",
            m.rejected.clone(),
        );
        r.register(
            "edgecore_cloud_desired_refused",
            "Desired values set in the cloud (Device spec) refused against the DeviceModel and not applied, by reason",
            m.desired_refused.clone(),
        );
        r.register(
            "edgecore_twin_requests",
            "Twin, state and membership requests received over MQTT, by kind",
            m.requests.clone(),
        );
        r.register(
            "edgecore_bus_publish_dropped",
            "MQTT publishes dropped because the client queue was full",
            m.publish_dropped.clone(),
        );
        r.register(
            "edgecore_bus_connected",
            "1 while the bus client is connected to the MQTT broker",
            m.connected.clone(),
        );
        r.register(
            "edgecore_bus_reconnects",
            "Connections to the MQTT broker after the first",
            m.reconnects.clone(),
        );
        r.register(
            "edgecore_device_status_sent",
            "Device status snapshots handed to the outbox (after rate limiting)",
            m.status_sent.clone(),
        );
        r.register(
            "edgecore_driver_reads",
            "Device reads by built-in drivers, by protocol and result",
            m.driver_reads.clone(),
        );
        r.register(
            "edgecore_driver_writes",
            "Desired values written by built-in drivers, by protocol and result",
            m.driver_writes.clone(),
        );
        r.register(
            "edgecore_devices",
            "Devices bound to this node",
            m.devices.clone(),
        );
        r.register(
            "edgecore_twin_accepted",
            "Twin and state requests applied to a device shadow, by kind",
            m.accepted.clone(),
        );
        r.register(
            "edgecore_twin_deltas_sent",
            "twin/update/delta messages published",
            m.deltas_sent.clone(),
        );
        r.register(
            "edgecore_device_reports_coalesced",
            "Device status snapshots replaced by a newer one before they were sent",
            m.status_coalesced.clone(),
        );
        r.register(
            "edgecore_driver_config_errors",
            "Devices not driven because their protocol settings are invalid",
            m.driver_config_errors.clone(),
        );
        r.register(
            "edgecore_devices_held",
            "Devices held because their DeviceModel is not at the edge yet",
            m.devices_held.clone(),
        );
        r.register(
            "edgecore_broker_connections",
            "Clients connected to the embedded MQTT broker",
            m.broker_connections.clone(),
        );
        r.register(
            "edgecore_broker_publishes",
            "Publishes routed by the embedded MQTT broker",
            m.broker_publishes.clone(),
        );
        r.register(
            "edgecore_broker_failed_publishes",
            "Publishes the embedded MQTT broker could not route",
            m.broker_failed_publishes.clone(),
        );
        m
    }
}
