//! The `gpio` driver: one pin per property, visitor configData `{"pin": N, "direction":
//! "in"|"out"}` (default `in`, so a sensor pin is never driven by accident).
//!
//! On a Raspberry Pi the pins are rppal's. Anywhere else (`Gpio::new()` fails) the driver
//! uses a **simulated pin bank**: one file per pin, `<gpio_sim_dir>/pin-<n>`, holding `0` or
//! `1`, which tests (and curious users) read and flip. A simulated device reports the state
//! `simulated` instead of `online` and says so in the log, so nobody mistakes it for
//! hardware.
//!
//! Values: a `boolean` property reads `true`/`false`, any other type `1`/`0`. Desired values
//! accept `1`/`0`, `true`/`false` (Go's spellings), `on`/`off`, `high`/`low`, and numbers
//! (non-zero is high). Only `out` pins of ReadWrite properties are written; the pin is read
//! back and the value reported at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use devicetwin::model::{DeviceState, PropertyType};
use rppal::gpio::{Gpio, InputPin, OutputPin};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Command, Ctx, PlanError, PropertyCommon, Reporter};
use crate::backoff::Backoff;
use crate::bus::metrics::labels2;

/// Pin direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Read only.
    In,
    /// Written with desired values, read back.
    Out,
}

/// One property's pin.
#[derive(Debug, Clone, PartialEq)]
pub struct GpioProp {
    /// Common settings.
    pub common: PropertyCommon,
    /// BCM pin number.
    pub pin: u8,
    /// Direction.
    pub direction: Direction,
}

/// A gpio device's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct GpioPlan {
    /// Its pins.
    pub props: Vec<GpioProp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Visitor {
    #[serde(deserialize_with = "pin_number")]
    pin: u8,
    #[serde(default)]
    direction: Option<Direction>,
}

/// A BCM pin number written as a number (`17`) or, as KubeEdge YAML often has it (its
/// configData values are strings), a numeric string (`"17"`, blanks ignored).
fn pin_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    use serde::de::Error;
    let invalid =
        |shown: &str| D::Error::custom(format!("pin {shown} is not a pin number (0-255)"));
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| invalid(&n.to_string())),
        Value::String(s) => s
            .trim()
            .parse::<u8>()
            .map_err(|_| invalid(&format!("{s:?}"))),
        other => Err(invalid(&other.to_string())),
    }
}

/// Parses the visitors of a gpio device.
pub fn plan(props: Vec<(PropertyCommon, Value)>) -> Result<GpioPlan, PlanError> {
    let mut out = Vec::new();
    for (common, config) in props {
        let v: Visitor = serde_json::from_value(config).map_err(|e| PlanError::Visitor {
            property: common.name.clone(),
            message: format!("{e} (expected {{\"pin\": N, \"direction\": \"in\"|\"out\"}})"),
        })?;
        out.push(GpioProp {
            common,
            pin: v.pin,
            direction: v.direction.unwrap_or(Direction::In),
        });
    }
    Ok(GpioPlan { props: out })
}

/// A desired value as a level.
pub fn parse_level(value: &str) -> Option<bool> {
    let v = value.trim();
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "high" => return Some(true),
        "0" | "f" | "false" | "off" | "low" => return Some(false),
        _ => {}
    }
    v.parse::<f64>().ok().map(|n| n != 0.0)
}

/// A level as the twin value of a property of type `ty`.
pub fn format_level(level: bool, ty: PropertyType) -> String {
    match (ty, level) {
        (PropertyType::Boolean, true) => "true".to_owned(),
        (PropertyType::Boolean, false) => "false".to_owned(),
        (_, true) => "1".to_owned(),
        (_, false) => "0".to_owned(),
    }
}

/// A pin of either bank.
enum Pin {
    In(InputPin),
    Out(OutputPin),
    Sim(PathBuf),
}

impl Pin {
    fn read(&self) -> std::io::Result<bool> {
        match self {
            Self::In(p) => Ok(p.is_high()),
            Self::Out(p) => Ok(p.is_set_high()),
            Self::Sim(path) => read_sim(path),
        }
    }

    fn write(&mut self, level: bool) -> std::io::Result<()> {
        match self {
            Self::In(_) => Err(std::io::Error::other("the pin is an input")),
            Self::Out(p) => {
                if level {
                    p.set_high();
                } else {
                    p.set_low();
                }
                Ok(())
            }
            Self::Sim(path) => write_sim(path, level),
        }
    }
}

/// Path of simulated pin `n`.
pub fn sim_path(dir: &Path, pin: u8) -> PathBuf {
    dir.join(format!("pin-{pin}"))
}

fn read_sim(path: &Path) -> std::io::Result<bool> {
    let s = std::fs::read_to_string(path)?;
    parse_level(&s).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} holds {:?}, not 0 or 1", path.display(), s.trim()),
        )
    })
}

fn write_sim(path: &Path, level: bool) -> std::io::Result<()> {
    // Write-then-rename, so a reader never sees an empty file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, if level { "1\n" } else { "0\n" })?;
    std::fs::rename(&tmp, path)
}

/// Opens every pin: rppal's on a Raspberry Pi, files under `sim_dir` elsewhere.
fn open(plan: &GpioPlan, sim_dir: &Path) -> std::io::Result<(BTreeMap<String, Pin>, bool)> {
    let mut pins = BTreeMap::new();
    match Gpio::new() {
        Ok(gpio) => {
            for p in &plan.props {
                let pin = gpio.get(p.pin).map_err(std::io::Error::other)?;
                let pin = match p.direction {
                    Direction::In => Pin::In(pin.into_input()),
                    Direction::Out => {
                        // Keep the current level (no glitch on restart); the bus drives the
                        // desired value right after.
                        let mut out = pin.into_output();
                        out.set_reset_on_drop(false);
                        Pin::Out(out)
                    }
                };
                pins.insert(p.common.name.clone(), pin);
            }
            Ok((pins, false))
        }
        Err(e) => {
            debug!(error = %e, "no GPIO hardware; using the simulated pin bank");
            std::fs::create_dir_all(sim_dir)?;
            for p in &plan.props {
                let path = sim_path(sim_dir, p.pin);
                if !path.exists() {
                    write_sim(&path, false)?;
                }
                pins.insert(p.common.name.clone(), Pin::Sim(path));
            }
            Ok((pins, true))
        }
    }
}

/// Runs a gpio device until cancelled.
pub async fn run(
    plan: GpioPlan,
    sim_dir: PathBuf,
    ctx: Ctx,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut offline_logged = false;
    let mut state: Option<DeviceState> = None;
    loop {
        let (mut pins, simulated) = match open(&plan, &sim_dir) {
            Ok(p) => p,
            Err(e) => {
                if !offline_logged {
                    warn!(device = %ctx.device, error = %e, "gpio pins unavailable; retrying quietly");
                    offline_logged = true;
                }
                set_state(&ctx, &mut state, DeviceState::Offline).await;
                tokio::select! {
                    () = ctx.cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        if simulated {
            info!(device = %ctx.device, dir = %sim_dir.display(), "gpio device is SIMULATED: pins are files pin-<n> in this directory");
        }
        backoff.reset();
        let up = if simulated {
            DeviceState::Other("simulated".to_owned())
        } else {
            DeviceState::Online
        };
        set_state(&ctx, &mut state, up).await;
        match serve(&plan, &mut pins, &ctx, &mut commands).await {
            Served::Cancelled => return,
            Served::Failed(e) => {
                warn!(device = %ctx.device, error = %e, "gpio read failed; reopening the pins");
                set_state(&ctx, &mut state, DeviceState::Offline).await;
                offline_logged = true;
                tokio::select! {
                    () = ctx.cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

async fn set_state(ctx: &Ctx, current: &mut Option<DeviceState>, next: DeviceState) {
    if current.as_ref() != Some(&next) {
        ctx.send_state(next.clone()).await;
        *current = Some(next);
    }
}

enum Served {
    Cancelled,
    Failed(std::io::Error),
}

async fn serve(
    plan: &GpioPlan,
    pins: &mut BTreeMap<String, Pin>,
    ctx: &Ctx,
    commands: &mut mpsc::Receiver<Command>,
) -> Served {
    let mut reporter = Reporter::default();
    let start = Instant::now();
    let mut due: BTreeMap<&str, Instant> = plan
        .props
        .iter()
        .map(|p| (p.common.name.as_str(), start))
        .collect();
    loop {
        let next = due
            .values()
            .min()
            .copied()
            .unwrap_or(start + Duration::from_secs(3600));
        tokio::select! {
            () = ctx.cancel.cancelled() => return Served::Cancelled,
            cmd = commands.recv() => {
                let Some(Command::Write { property, value }) = cmd else {
                    return Served::Cancelled;
                };
                if let Some(v) = write(plan, pins, ctx, &property, &value) {
                    reporter.should_send(&property, &v, Duration::ZERO, Instant::now());
                    ctx.send_readings(BTreeMap::from([(property, v)])).await;
                }
            }
            () = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                let mut values = BTreeMap::new();
                for p in &plan.props {
                    let name = p.common.name.as_str();
                    if due.get(name).is_none_or(|t| *t > now) {
                        continue;
                    }
                    due.insert(name, now + p.common.collect);
                    let Some(pin) = pins.get(name) else { continue };
                    let read = pin.read();
                    let result = if read.is_ok() { "ok" } else { "error" };
                    ctx.metrics.driver_reads.get_or_create(&labels2(("protocol", "gpio"), ("result", result))).inc();
                    let level = match read {
                        Ok(l) => l,
                        Err(e) => return Served::Failed(e),
                    };
                    let v = format_level(level, p.common.ty);
                    if reporter.should_send(name, &v, p.common.report, now) {
                        values.insert(name.to_owned(), v);
                    }
                }
                ctx.send_readings(values).await;
            }
        }
    }
}

/// Writes a desired value; returns the value read back.
fn write(
    plan: &GpioPlan,
    pins: &mut BTreeMap<String, Pin>,
    ctx: &Ctx,
    property: &str,
    value: &str,
) -> Option<String> {
    let prop = plan.props.iter().find(|p| p.common.name == property)?;
    if !prop.common.writable || prop.direction != Direction::Out {
        debug!(device = %ctx.device, property, "not an output pin of a ReadWrite property; desired value not written");
        return None;
    }
    let Some(level) = parse_level(value) else {
        warn!(device = %ctx.device, property, value, "desired value is not a pin level");
        return None;
    };
    let pin = pins.get_mut(property)?;
    let written = pin.write(level);
    let result = if written.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .driver_writes
        .get_or_create(&labels2(("protocol", "gpio"), ("result", result)))
        .inc();
    if let Err(e) = written {
        warn!(device = %ctx.device, property, error = %e, "writing the pin failed");
        return None;
    }
    debug!(device = %ctx.device, property, pin = prop.pin, level, "pin written");
    pin.read().ok().map(|l| format_level(l, prop.common.ty))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(name: &str) -> PropertyCommon {
        PropertyCommon {
            name: name.into(),
            ty: PropertyType::Boolean,
            writable: true,
            signed: false,
            collect: Duration::from_millis(100),
            report: Duration::from_millis(100),
        }
    }

    #[test]
    fn visitors_parse_with_input_default() {
        let p = plan(vec![
            (
                common("led"),
                serde_json::json!({"pin": 17, "direction": "out"}),
            ),
            (common("button"), serde_json::json!({"pin": 4})),
        ]);
        let p = p.ok().map(|p| {
            p.props
                .iter()
                .map(|x| (x.pin, x.direction))
                .collect::<Vec<_>>()
        });
        assert_eq!(p, Some(vec![(17, Direction::Out), (4, Direction::In)]));
        assert!(plan(vec![(common("x"), serde_json::json!({"pin": "a"}))]).is_err());
        assert!(plan(vec![(common("x"), serde_json::json!({"pin": 300}))]).is_err());
        assert!(
            plan(vec![(
                common("x"),
                serde_json::json!({"pin": 1, "direction": "sideways"})
            )])
            .is_err()
        );
    }

    #[test]
    fn pins_written_as_numeric_strings_are_accepted_others_named_in_the_error() {
        let pins = |v: serde_json::Value| {
            plan(vec![(common("led"), v)])
                .map(|p| p.props[0].pin)
                .map_err(|e| e.to_string())
        };
        assert_eq!(pins(serde_json::json!({"pin": "17"})), Ok(17));
        assert_eq!(
            pins(serde_json::json!({"pin": " 4 ", "direction": "out"})),
            Ok(4)
        );
        assert_eq!(pins(serde_json::json!({"pin": 0})), Ok(0));
        for bad in [
            serde_json::json!({"pin": "GPIO17"}),
            serde_json::json!({"pin": "300"}),
            serde_json::json!({"pin": -1}),
            serde_json::json!({"pin": 1.5}),
            serde_json::json!({"pin": true}),
        ] {
            let e = pins(bad.clone()).expect_err(&bad.to_string());
            assert!(
                e.contains("led") && e.contains("is not a pin number"),
                "{bad}: {e}"
            );
        }
        assert!(pins(serde_json::json!({"direction": "out"})).is_err());
    }

    #[test]
    fn levels() {
        for hi in ["1", "true", "True", "ON", "high", "2.5", " 1\n"] {
            assert_eq!(parse_level(hi), Some(true), "{hi}");
        }
        for lo in ["0", "false", "off", "LOW", "0.0"] {
            assert_eq!(parse_level(lo), Some(false), "{lo}");
        }
        assert_eq!(parse_level("maybe"), None);
        assert_eq!(format_level(true, PropertyType::Boolean), "true");
        assert_eq!(format_level(false, PropertyType::Int), "0");
    }

    #[test]
    fn simulated_pins_round_trip() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else { return };
        let path = sim_path(dir.path(), 5);
        assert!(read_sim(&path).is_err());
        assert!(write_sim(&path, true).is_ok());
        assert!(matches!(read_sim(&path), Ok(true)));
        assert!(std::fs::write(&path, "garbage").is_ok());
        assert!(read_sim(&path).is_err());
    }
}
