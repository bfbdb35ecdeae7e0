//! Built-in device drivers: one task per device whose `spec.protocol.protocolName` is `gpio`
//! or `modbus`, reading properties every `collectCycle` ms and writing desired values of
//! ReadWrite properties. Devices with any other protocol are left to external mappers over
//! MQTT (they act on `twin/update/delta` and publish `twin/update`).
//!
//! Where to start reading: [`plan`] turns a Device (+ DeviceModel) into a typed [`Plan`] (pure,
//! KubeEdge v1beta1 shapes: `spec.protocol {protocolName, configData}` and per-property
//! `visitors {protocolName, configData}`); [`Drivers`] starts, restarts (when the plan
//! changes) and stops the tasks; [`gpio`] and [`modbus`] are the protocols.
//!
//! Drivers talk to the bus only through [`DriverEvent`]s (readings and connection state) and
//! [`Command`]s (writes). A reading is sent when the value changed or `reportCycle` ms passed
//! since the property was last sent ([`Reporter`]); after a write the driver reads the value
//! back and sends it at once.

pub mod gpio;
pub mod modbus;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use devicetwin::model::{DeviceModelSpec, DeviceState, ModelProperty, PropertyType};
use devicetwin::{Device, DeviceKey};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bus::metrics::BusMetrics;

/// Read interval when a property sets none.
pub const DEFAULT_COLLECT: Duration = Duration::from_millis(1000);
/// Shortest accepted cycle.
pub const MIN_CYCLE: Duration = Duration::from_millis(10);
/// Longest accepted cycle (KubeEdge's documentation sample says 10000000000, meaning ns).
pub const MAX_CYCLE: Duration = Duration::from_secs(24 * 3600);
/// How long a restarted driver waits for its predecessor to end (and release the serial
/// port or pins) before it opens the device anyway.
pub const RESTART_WAIT: Duration = Duration::from_secs(2);

/// What a driver tells the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverEvent {
    /// Values read from the device.
    Readings {
        /// Device.
        device: DeviceKey,
        /// Property -> value as a twin string.
        values: BTreeMap<String, String>,
        /// When they were read (ms since the epoch).
        timestamp: i64,
    },
    /// The device became reachable or unreachable (sent on change only).
    State {
        /// Device.
        device: DeviceKey,
        /// `online`, `offline`, or `simulated` for a simulated GPIO bank.
        state: DeviceState,
    },
}

/// What the bus asks of a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Write a desired value, then read it back.
    Write {
        /// Property.
        property: String,
        /// Value as a twin string.
        value: String,
    },
}

/// Why a device's protocol settings cannot be used. The device gets no driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Device-level configData is unusable.
    #[error("protocol configData: {0}")]
    Protocol(String),
    /// A property's visitor configData is unusable.
    #[error("property {property:?}: visitors.configData: {message}")]
    Visitor {
        /// Property.
        property: String,
        /// What is wrong.
        message: String,
    },
}

/// Settings shared by every protocol's properties.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyCommon {
    /// Property name.
    pub name: String,
    /// Value type (from the DeviceModel; `string` without one).
    pub ty: PropertyType,
    /// Whether desired values are written (DeviceModel accessMode, ReadWrite when absent).
    pub writable: bool,
    /// Whether the value may be negative (the DeviceModel's `minimum` is below 0): integer
    /// registers then read as two's complement, the way negative values are written.
    pub signed: bool,
    /// Read interval.
    pub collect: Duration,
    /// Longest interval between two readings sent for an unchanged value.
    pub report: Duration,
}

/// A device's driver settings, typed. Two equal plans mean "no restart needed".
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// GPIO pins.
    Gpio(gpio::GpioPlan),
    /// A Modbus RTU or TCP slave.
    Modbus(modbus::ModbusPlan),
}

impl Plan {
    /// `gpio` or `modbus`.
    pub fn protocol(&self) -> &'static str {
        match self {
            Self::Gpio(_) => "gpio",
            Self::Modbus(_) => "modbus",
        }
    }
}

/// The device's protocol name: `spec.protocol.protocolName`, else the DeviceModel's
/// `protocol`, else the first property visitor's.
pub fn protocol_name(device: &Device, model: Option<&DeviceModelSpec>) -> Option<String> {
    let spec = &device.spec;
    spec.protocol
        .as_ref()
        .and_then(|p| p.protocol_name.clone())
        .or_else(|| model.and_then(|m| m.protocol.clone()))
        .or_else(|| {
            spec.properties
                .iter()
                .find_map(|p| p.visitors.as_ref()?.protocol_name.clone())
        })
        .filter(|n| !n.is_empty())
}

/// Each property with visitor configData (the Device's, else the DeviceModel's), with its
/// common settings.
pub fn visited_properties(
    device: &Device,
    model: Option<&DeviceModelSpec>,
) -> Vec<(PropertyCommon, Value)> {
    device
        .spec
        .properties
        .iter()
        .filter_map(|p| {
            let mp = model.and_then(|m| m.property(&p.name));
            let config = p
                .visitors
                .as_ref()
                .and_then(|v| v.config_data.clone())
                .or_else(|| mp?.visitors.as_ref()?.config_data.clone())?;
            let collect = cycle(p.collect_cycle).unwrap_or(DEFAULT_COLLECT);
            let report = cycle(p.report_cycle).unwrap_or(collect);
            let ty = mp.map(|m| m.ty).unwrap_or_else(|| {
                p.desired
                    .as_ref()
                    .and_then(|d| d.metadata.get("type"))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(PropertyType::String)
            });
            let common = PropertyCommon {
                name: p.name.clone(),
                ty,
                writable: mp.is_none_or(|m| m.is_writable()),
                signed: mp.is_some_and(ModelProperty::allows_negative),
                collect,
                report,
            };
            Some((common, config))
        })
        .collect()
}

fn cycle(ms: Option<i64>) -> Option<Duration> {
    let ms = u64::try_from(ms?).ok().filter(|m| *m > 0)?;
    Some(Duration::from_millis(ms).clamp(MIN_CYCLE, MAX_CYCLE))
}

/// The driver plan of a device: `Ok(None)` when no built-in driver handles its protocol.
pub fn plan(device: &Device, model: Option<&DeviceModelSpec>) -> Result<Option<Plan>, PlanError> {
    let Some(name) = protocol_name(device, model) else {
        return Ok(None);
    };
    let config = device
        .spec
        .protocol
        .as_ref()
        .and_then(|p| p.config_data.clone())
        .or_else(|| model.and_then(|m| m.protocol_config_data.clone()))
        .unwrap_or(Value::Null);
    let props = visited_properties(device, model);
    match name.to_ascii_lowercase().as_str() {
        "gpio" => gpio::plan(props).map(|p| Some(Plan::Gpio(p))),
        "modbus" | "modbus-rtu" | "modbus-tcp" => {
            modbus::plan(&config, props).map(|p| Some(Plan::Modbus(p)))
        }
        _ => Ok(None),
    }
}

/// Decides which readings to send: a changed value at once, an unchanged one every
/// `report` interval.
#[derive(Debug, Default)]
pub struct Reporter {
    last: BTreeMap<String, (String, Instant)>,
}

impl Reporter {
    /// Whether to send `value` of `property` now; records it if so.
    pub fn should_send(
        &mut self,
        property: &str,
        value: &str,
        report: Duration,
        now: Instant,
    ) -> bool {
        let send = match self.last.get(property) {
            Some((v, at)) => v != value || now.duration_since(*at) >= report,
            None => true,
        };
        if send {
            self.last
                .insert(property.to_owned(), (value.to_owned(), now));
        }
        send
    }

    /// Forgets everything (after a reconnect every value is sent again).
    pub fn reset(&mut self) {
        self.last.clear();
    }
}

/// Milliseconds since the epoch (re-exported for drivers).
pub fn now_ms() -> i64 {
    crate::bus::now_ms()
}

/// What every driver task gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The device.
    pub device: DeviceKey,
    /// Where readings and states go.
    pub events: mpsc::Sender<DriverEvent>,
    /// Counters.
    pub metrics: BusMetrics,
    /// Stops the task.
    pub cancel: CancellationToken,
}

impl Ctx {
    /// Sends readings (waits if the bus is busy: a driver must not outrun it).
    pub async fn send_readings(&self, values: BTreeMap<String, String>) {
        if values.is_empty() {
            return;
        }
        let ev = DriverEvent::Readings {
            device: self.device.clone(),
            values,
            timestamp: now_ms(),
        };
        let _ = self.events.send(ev).await;
    }

    /// Sends a state change.
    pub async fn send_state(&self, state: DeviceState) {
        let ev = DriverEvent::State {
            device: self.device.clone(),
            state,
        };
        let _ = self.events.send(ev).await;
    }
}

#[derive(Debug)]
struct Running {
    plan: Plan,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The running drivers, one per device with a built-in protocol. Owned by the bus loop.
#[derive(Debug)]
pub struct Drivers {
    sim_dir: PathBuf,
    events: mpsc::Sender<DriverEvent>,
    metrics: BusMetrics,
    shutdown: CancellationToken,
    running: BTreeMap<DeviceKey, Running>,
    refused: BTreeMap<DeviceKey, PlanError>,
}

impl Drivers {
    /// No drivers yet; simulated GPIO pins live under `sim_dir`.
    pub fn new(
        sim_dir: PathBuf,
        events: mpsc::Sender<DriverEvent>,
        metrics: BusMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            sim_dir,
            events,
            metrics,
            shutdown,
            running: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// Starts, restarts and stops drivers to match `devices`. Returns the devices whose
    /// driver (re)started: the bus drives their desired values.
    pub fn sync<'a>(
        &mut self,
        devices: impl Iterator<Item = (&'a DeviceKey, &'a Device, Option<&'a DeviceModelSpec>)>,
    ) -> Vec<DeviceKey> {
        let mut wanted = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (key, device, model) in devices {
            seen.insert(key.clone());
            match plan(device, model) {
                Ok(Some(p)) => {
                    self.refused.remove(key);
                    wanted.insert(key.clone(), p);
                }
                Ok(None) => {
                    self.refused.remove(key);
                }
                Err(e) => {
                    if self.refused.get(key) != Some(&e) {
                        warn!(device = %key, error = %e, "device not driven: invalid protocol settings");
                        self.refused.insert(key.clone(), e);
                    }
                }
            }
        }
        self.refused.retain(|k, _| seen.contains(k));
        let stale: Vec<DeviceKey> = self
            .running
            .iter()
            .filter(|(k, r)| wanted.get(*k) != Some(&r.plan))
            .map(|(k, _)| k.clone())
            .collect();
        let mut stopped = BTreeMap::new();
        for key in stale {
            if let Some(r) = self.running.remove(&key) {
                r.cancel.cancel();
                info!(device = %key, protocol = r.plan.protocol(), "driver stopped");
                stopped.insert(key, r.task);
            }
        }
        let mut started = Vec::new();
        for (key, plan) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let (tx, rx) = mpsc::channel(64);
            let ctx = Ctx {
                device: key.clone(),
                events: self.events.clone(),
                metrics: self.metrics.clone(),
                cancel: self.shutdown.child_token(),
            };
            let cancel = ctx.cancel.clone();
            info!(device = %key, protocol = plan.protocol(), "driver started");
            let previous = stopped.remove(&key);
            let task = match plan.clone() {
                Plan::Gpio(p) => spawn_after(previous, gpio::run(p, self.sim_dir.clone(), ctx, rx)),
                Plan::Modbus(p) => spawn_after(previous, modbus::run(p, ctx, rx)),
            };
            self.running.insert(
                key.clone(),
                Running {
                    plan,
                    commands: tx,
                    cancel,
                    task,
                },
            );
            started.push(key);
        }
        started
    }

    /// Devices whose protocol settings are unusable, with the reason.
    pub fn problems(&self) -> BTreeMap<DeviceKey, String> {
        self.refused
            .iter()
            .map(|(k, e)| (k.clone(), e.to_string()))
            .collect()
    }

    /// Hands a desired value to the device's driver, if it has one.
    pub fn write(&self, device: &DeviceKey, property: &str, value: &str) {
        let Some(r) = self.running.get(device) else {
            return;
        };
        let cmd = Command::Write {
            property: property.to_owned(),
            value: value.to_owned(),
        };
        if r.commands.try_send(cmd).is_err() {
            warn!(device = %device, property, "driver busy; desired value dropped (written again when the driver restarts or the value changes)");
        }
    }

    /// Stops every driver and waits (briefly) for them.
    pub async fn stop(&mut self) {
        for r in self.running.values() {
            r.cancel.cancel();
        }
        for (_, r) in std::mem::take(&mut self.running) {
            let _ = tokio::time::timeout(Duration::from_secs(2), r.task).await;
        }
    }
}

/// Spawns `driver` once `previous` (the cancelled task of the same device) has ended, or
/// after [`RESTART_WAIT`]: a restarted Modbus RTU driver would otherwise race its
/// predecessor for the serial port's lock and fail to open it. The bus loop never waits.
pub fn spawn_after<F>(previous: Option<JoinHandle<()>>, driver: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        if let Some(previous) = previous
            && tokio::time::timeout(RESTART_WAIT, previous).await.is_err()
        {
            warn!(wait = ?RESTART_WAIT, "the previous driver did not stop in time; starting anyway");
        }
        driver.await;
    })
}

#[cfg(test)]
mod tests;
