//! Parsing a modbus device's protocol and visitor configData into a [`ModbusPlan`].

use std::time::Duration;

use serde_json::{Map, Value};

use super::codec::{Layout, Register};
use crate::driver::{PlanError, PropertyCommon};

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    /// None.
    None,
    /// Even.
    Even,
    /// Odd.
    Odd,
}

/// How the slave is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// RTU over a serial line.
    Rtu {
        /// Device path (`/dev/ttyUSB0`).
        path: String,
        /// Baud rate.
        baud: u32,
        /// 5..=8.
        data_bits: u8,
        /// Parity.
        parity: Parity,
        /// 1 or 2.
        stop_bits: u8,
    },
    /// Modbus TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// One property's registers.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusProp {
    /// Common settings.
    pub common: PropertyCommon,
    /// Start address.
    pub offset: u16,
    /// How the value is laid out.
    pub layout: Layout,
}

/// A modbus device's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusPlan {
    /// Where the slave is.
    pub transport: Transport,
    /// Slave (unit) id.
    pub slave: u8,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Properties.
    pub props: Vec<ModbusProp>,
}

fn flatten(config: &Value) -> Map<String, Value> {
    let mut m = config.as_object().cloned().unwrap_or_default();
    for nested in ["com", "tcp", "rtu"] {
        if let Some(Value::Object(inner)) = m.remove(nested) {
            for (k, v) in inner {
                m.entry(k).or_insert(v);
            }
        }
    }
    m
}

/// A number given as a JSON number or a numeric string.
fn num(m: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{key} {s:?} is not a number")),
        Some(v) => Err(format!("{key} {v} is not a number")),
    }
}

fn int<T: TryFrom<i64>>(m: &Map<String, Value>, key: &str, default: T) -> Result<T, String> {
    match num(m, key)? {
        None => Ok(default),
        Some(f) if f.fract() == 0.0 => {
            T::try_from(f as i64).map_err(|_| format!("{key} {f} is out of range"))
        }
        Some(f) => Err(format!("{key} {f} is not an integer")),
    }
}

fn flag(m: &Map<String, Value>, key: &str) -> bool {
    match m.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn transport(m: &Map<String, Value>) -> Result<Transport, String> {
    let port_path = m
        .get("port")
        .and_then(Value::as_str)
        .filter(|p| p.starts_with('/'));
    let serial = m
        .get("serialPort")
        .and_then(Value::as_str)
        .or(port_path)
        .filter(|p| !p.is_empty());
    if let Some(path) = serial {
        let parity = match m
            .get("parity")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
        {
            None => Parity::None,
            Some(p) => match p.as_str() {
                "none" | "n" | "" => Parity::None,
                "even" | "e" => Parity::Even,
                "odd" | "o" => Parity::Odd,
                _ => return Err(format!("parity {p:?} (expected none, even or odd)")),
            },
        };
        let data_bits: u8 = int(m, "dataBits", 8)?;
        if !(5..=8).contains(&data_bits) {
            return Err(format!("dataBits {data_bits} (expected 5 to 8)"));
        }
        let stop_bits: u8 = int(m, "stopBits", 1)?;
        if !(1..=2).contains(&stop_bits) {
            return Err(format!("stopBits {stop_bits} (expected 1 or 2)"));
        }
        return Ok(Transport::Rtu {
            path: path.to_owned(),
            baud: int(m, "baudRate", 9600)?,
            data_bits,
            parity,
            stop_bits,
        });
    }
    if let Some(ip) = m
        .get("ip")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Ok(Transport::Tcp {
            host: ip.to_owned(),
            port: int(m, "port", 502)?,
        });
    }
    Err("neither serialPort (RTU) nor ip (TCP) is set".to_owned())
}

/// Parses a modbus device's protocol and visitor settings.
pub fn plan(config: &Value, props: Vec<(PropertyCommon, Value)>) -> Result<ModbusPlan, PlanError> {
    let m = flatten(config);
    let transport = transport(&m).map_err(PlanError::Protocol)?;
    let slave_key = if m.contains_key("slaveID") {
        "slaveID"
    } else {
        "slaveId"
    };
    let slave: u8 = int(&m, slave_key, 1).map_err(PlanError::Protocol)?;
    let timeout_ms: u64 = int(&m, "timeout", 1000).map_err(PlanError::Protocol)?;
    let mut out = Vec::new();
    for (common, visitor) in props {
        let v = flatten(&visitor);
        let err = |message: String| PlanError::Visitor {
            property: common.name.clone(),
            message,
        };
        let register = v
            .get("register")
            .and_then(Value::as_str)
            .and_then(Register::parse)
            .ok_or_else(|| err("register must be CoilRegister, DiscreteInputRegister, HoldingRegister or InputRegister".to_owned()))?;
        let offset: u16 = int(&v, "offset", 0).map_err(err)?;
        let limit: u16 = int(&v, "limit", 1).map_err(err)?;
        if limit == 0 || limit > 125 {
            return Err(err(format!("limit {limit} (expected 1 to 125)")));
        }
        let scale = num(&v, "scale").map_err(err)?.unwrap_or(1.0);
        let layout = Layout {
            register,
            ty: common.ty,
            limit,
            scale,
            swap: flag(&v, "isSwap"),
            register_swap: flag(&v, "isRegisterSwap"),
            signed: common.signed,
        };
        out.push(ModbusProp {
            common,
            offset,
            layout,
        });
    }
    Ok(ModbusPlan {
        transport,
        slave,
        timeout: Duration::from_millis(timeout_ms.clamp(50, 60_000)),
        props: out,
    })
}
