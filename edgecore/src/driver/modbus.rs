//! The `modbus` driver: a Modbus master for one slave, over serial RTU (tokio-serial) or TCP
//! (tokio-modbus), configured the way KubeEdge's modbus mapper is.
//!
//! Protocol configData (the Device's `spec.protocol.configData`, else the DeviceModel's; a
//! nested `com`/`tcp` object as older KubeEdge wrote it is accepted too):
//! - RTU: `serialPort` (or a `port` that is a path), `baudRate` (9600), `dataBits` (8),
//!   `parity` (`none`|`even`|`odd`), `stopBits` (1|2), `slaveID` (1);
//! - TCP: `ip`, `port` (502), `slaveID` (1);
//! - `timeout`: ms per request (1000).
//!
//! Visitor configData per property: `register` (`CoilRegister`, `DiscreteInputRegister`,
//! `HoldingRegister`, `InputRegister`), `offset`, `limit` (1), `scale` (1), `isSwap`,
//! `isRegisterSwap` — values convert as in [`codec`].
//!
//! A slave that does not answer (no serial peer, refused TCP, timeouts) makes the device
//! `offline`: one warning, then quiet retries with back-off (cap 30 s); it is `online` again
//! at its first answer. Desired values that could not be written are kept (latest per
//! property) and written after reconnecting; a Modbus exception drops the write with a warning.

pub mod codec;
mod config;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use devicetwin::model::DeviceState;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context, Reader, Writer};
use tokio_modbus::{ExceptionCode, Slave};
use tracing::{debug, info, warn};

use super::{Command, Ctx, Reporter};
use crate::backoff::Backoff;
use crate::bus::metrics::labels2;
use codec::{Register, WriteOp};
pub use config::{ModbusPlan, ModbusProp, Parity, Transport, plan};

/// Why talking to the slave failed.
enum Failure {
    /// The line or connection is unusable: reconnect.
    Link(String),
    /// The slave answered with an exception, or the value did not convert: skip.
    Value(String),
}

async fn connect(plan: &ModbusPlan) -> Result<Context, String> {
    let slave = Slave(plan.slave);
    match &plan.transport {
        Transport::Rtu {
            path,
            baud,
            data_bits,
            parity,
            stop_bits,
        } => {
            use tokio_serial::SerialPortBuilderExt;
            let builder = tokio_serial::new(path.as_str(), *baud)
                .data_bits(match data_bits {
                    5 => tokio_serial::DataBits::Five,
                    6 => tokio_serial::DataBits::Six,
                    7 => tokio_serial::DataBits::Seven,
                    _ => tokio_serial::DataBits::Eight,
                })
                .parity(match parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .stop_bits(if *stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                });
            let stream = builder
                .open_native_async()
                .map_err(|e| format!("opening {path}: {e}"))?;
            Ok(tokio_modbus::client::rtu::attach_slave(stream, slave))
        }
        Transport::Tcp { host, port } => {
            let dial = async {
                let addr = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("resolving {host}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("{host} has no address"))?;
                tokio_modbus::client::tcp::connect_slave(addr, slave)
                    .await
                    .map_err(|e| format!("connecting to {addr}: {e}"))
            };
            tokio::time::timeout(Duration::from_secs(3), dial)
                .await
                .map_err(|_| format!("connecting to {host}:{port}: timed out"))?
        }
    }
}

type ModbusResult<T> = Result<Result<T, ExceptionCode>, tokio_modbus::Error>;

async fn call<T>(
    timeout: Duration,
    f: impl Future<Output = ModbusResult<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, f).await {
        Err(_) => Err(Failure::Link("no answer (timeout)".to_owned())),
        Ok(Err(e)) => Err(Failure::Link(e.to_string())),
        Ok(Ok(Err(exc))) => Err(Failure::Value(format!("modbus exception: {exc}"))),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

async fn read(conn: &mut Context, p: &ModbusProp, timeout: Duration) -> Result<String, Failure> {
    let (addr, n, l) = (p.offset, p.layout.limit, &p.layout);
    let value = match l.register {
        Register::Coil => codec::decode_bits(&call(timeout, conn.read_coils(addr, n)).await?, l),
        Register::DiscreteInput => {
            codec::decode_bits(&call(timeout, conn.read_discrete_inputs(addr, n)).await?, l)
        }
        Register::Holding => codec::decode_words(
            &call(timeout, conn.read_holding_registers(addr, n)).await?,
            l,
        ),
        Register::Input => {
            codec::decode_words(&call(timeout, conn.read_input_registers(addr, n)).await?, l)
        }
    };
    value.map_err(|e| Failure::Value(e.to_string()))
}

async fn write(
    conn: &mut Context,
    p: &ModbusProp,
    value: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    let op = codec::encode(value, &p.layout).map_err(|e| Failure::Value(e.to_string()))?;
    match op {
        WriteOp::Coil(on) => call(timeout, conn.write_single_coil(p.offset, on)).await,
        WriteOp::Registers(words) if words.len() == 1 => {
            call(timeout, conn.write_single_register(p.offset, words[0])).await
        }
        WriteOp::Registers(words) => {
            call(timeout, conn.write_multiple_registers(p.offset, &words)).await
        }
    }
}

/// Per-device loop state.
struct Device<'a> {
    plan: &'a ModbusPlan,
    ctx: &'a Ctx,
    state: Option<DeviceState>,
    /// Desired values not written yet (latest per property).
    pending: BTreeMap<String, String>,
    /// Properties already warned about (exceptions), until they read fine again.
    warned: BTreeSet<String>,
    reporter: Reporter,
}

impl Device<'_> {
    async fn set_state(&mut self, next: DeviceState) {
        if self.state.as_ref() != Some(&next) {
            if next == DeviceState::Online {
                info!(device = %self.ctx.device, "modbus slave answers; device online");
            }
            self.ctx.send_state(next.clone()).await;
            self.state = Some(next);
        }
    }

    fn count(&self, what: &str, ok: bool) {
        let family = if what == "read" {
            &self.ctx.metrics.driver_reads
        } else {
            &self.ctx.metrics.driver_writes
        };
        let result = if ok { "ok" } else { "error" };
        family
            .get_or_create(&labels2(("protocol", "modbus"), ("result", result)))
            .inc();
    }

    fn queue(&mut self, cmd: Command) {
        let Command::Write { property, value } = cmd;
        match self.plan.props.iter().find(|p| p.common.name == property) {
            Some(p) if p.common.writable && p.layout.register.is_writable() => {
                self.pending.insert(property, value);
            }
            Some(_) => {
                debug!(device = %self.ctx.device, property, "read-only property; desired value not written")
            }
            None => {}
        }
    }

    /// Writes pending values, reading each back. `Err` when the link broke.
    async fn flush_writes(&mut self, conn: &mut Context) -> Result<(), String> {
        let props = std::mem::take(&mut self.pending);
        let mut iter = props.into_iter();
        for (name, value) in iter.by_ref() {
            let Some(p) = self.plan.props.iter().find(|p| p.common.name == name) else {
                continue;
            };
            match write(conn, p, &value, self.plan.timeout).await {
                Ok(()) => {
                    self.count("write", true);
                    debug!(device = %self.ctx.device, property = %name, %value, "desired value written");
                    match read(conn, p, self.plan.timeout).await {
                        Ok(v) => {
                            self.reporter
                                .should_send(&name, &v, Duration::ZERO, Instant::now());
                            self.ctx.send_readings(BTreeMap::from([(name, v)])).await;
                        }
                        Err(Failure::Link(e)) => return Err(e),
                        Err(Failure::Value(_)) => {}
                    }
                }
                Err(Failure::Value(e)) => {
                    self.count("write", false);
                    warn!(device = %self.ctx.device, property = %name, %value, error = %e, "desired value not written");
                }
                Err(Failure::Link(e)) => {
                    self.count("write", false);
                    self.pending.insert(name, value);
                    self.pending.extend(iter);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Serves one connection until it breaks (`Ok(false)`) or the driver is cancelled
    /// (`Ok(true)`). `Err` carries the link failure.
    async fn serve(
        &mut self,
        conn: &mut Context,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<bool, String> {
        self.reporter.reset();
        let start = Instant::now();
        let mut due: Vec<Instant> = vec![start; self.plan.props.len()];
        self.flush_writes(conn).await?;
        loop {
            let next = due
                .iter()
                .min()
                .copied()
                .unwrap_or(start + Duration::from_secs(3600));
            tokio::select! {
                () = self.ctx.cancel.cancelled() => return Ok(true),
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return Ok(true) };
                    self.queue(cmd);
                    self.flush_writes(conn).await?;
                }
                () = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    let mut values = BTreeMap::new();
                    for (i, p) in self.plan.props.iter().enumerate() {
                        if due[i] > now {
                            continue;
                        }
                        due[i] = now + p.common.collect;
                        match read(conn, p, self.plan.timeout).await {
                            Ok(v) => {
                                self.count("read", true);
                                self.warned.remove(&p.common.name);
                                self.set_state(DeviceState::Online).await;
                                if self.reporter.should_send(&p.common.name, &v, p.common.report, now) {
                                    values.insert(p.common.name.clone(), v);
                                }
                            }
                            Err(Failure::Value(e)) => {
                                self.count("read", false);
                                self.set_state(DeviceState::Online).await;
                                if self.warned.insert(p.common.name.clone()) {
                                    warn!(device = %self.ctx.device, property = %p.common.name, error = %e, "reading the property failed");
                                }
                            }
                            Err(Failure::Link(e)) => {
                                self.count("read", false);
                                self.ctx.send_readings(values).await;
                                return Err(e);
                            }
                        }
                    }
                    self.ctx.send_readings(values).await;
                }
            }
        }
    }
}

/// Runs a modbus device until cancelled.
pub async fn run(plan: ModbusPlan, ctx: Ctx, mut commands: mpsc::Receiver<Command>) {
    let mut dev = Device {
        plan: &plan,
        ctx: &ctx,
        state: None,
        pending: BTreeMap::new(),
        warned: BTreeSet::new(),
        reporter: Reporter::default(),
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut quiet = false;
    loop {
        let failure = match connect(&plan).await {
            Ok(mut conn) => {
                let served = dev.serve(&mut conn, &mut commands).await;
                let _ = tokio::time::timeout(Duration::from_millis(200), conn.disconnect()).await;
                match served {
                    Ok(_) => return,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        if dev.state == Some(DeviceState::Online) {
            backoff.reset();
            quiet = false;
        }
        if quiet {
            debug!(device = %ctx.device, error = %failure, "modbus slave still unreachable");
        } else {
            warn!(device = %ctx.device, error = %failure, "modbus slave unreachable; device offline, retrying quietly with back-off");
            quiet = true;
        }
        dev.set_state(DeviceState::Offline).await;
        let wake = Instant::now() + backoff.next_delay();
        loop {
            tokio::select! {
                () = ctx.cancel.cancelled() => return,
                () = tokio::time::sleep_until(wake) => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => dev.queue(cmd),
                    None => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
