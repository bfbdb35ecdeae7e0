//! Register values <-> twin strings, the way KubeEdge's modbus mapper reads them, so the same
//! Device YAML gives the same values:
//!
//! 1. the registers' bytes, big-endian (coils: bits packed LSB first into bytes);
//! 2. `isRegisterSwap`: reverse the order of the 16-bit registers;
//! 3. `isSwap`: swap the two bytes inside each register;
//! 4. by the property type: `int` — the bytes as an unsigned big-endian integer (1, 2, 4 or 8
//!    bytes; two's complement when the DeviceModel's `minimum` is negative) times `scale`,
//!    truncated; `float` — 4 bytes as f32, `double` — 8 bytes as f64,
//!    times `scale`, six decimals; `boolean` — first coil, or any non-zero register; `string`
//!    — the bytes as text (trailing NULs dropped).
//!
//! Deliberate differences, each where KubeEdge gives a useless answer: `scale` absent or 0
//! means 1 (KubeEdge multiplies by 0); a boolean in a register is "non-zero" (KubeEdge tests
//! the high byte only); `float`/`double` of one register are the integer times scale
//! (KubeEdge refuses); and writes divide by `scale` and honour `limit` and both swaps (KubeEdge
//! writes the integer part of the value into one register), so a written value reads back
//! as itself.

use devicetwin::model::PropertyType;

/// Modbus data areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// Read/write bits (FC 1, 5, 15).
    Coil,
    /// Read-only bits (FC 2).
    DiscreteInput,
    /// Read/write words (FC 3, 6, 16).
    Holding,
    /// Read-only words (FC 4).
    Input,
}

impl Register {
    /// Parses KubeEdge's names (`CoilRegister`, `DiscreteInputRegister`, `HoldingRegister`,
    /// `InputRegister`), case-insensitively, with or without the `Register` suffix.
    pub fn parse(s: &str) -> Option<Self> {
        let l = s.to_ascii_lowercase();
        let l = l.strip_suffix("register").unwrap_or(&l);
        Some(match l {
            "coil" | "coils" => Self::Coil,
            "discreteinput" | "discreteinputs" | "discrete" => Self::DiscreteInput,
            "holding" => Self::Holding,
            "input" => Self::Input,
            _ => return None,
        })
    }

    /// Whether the area holds bits.
    pub fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::DiscreteInput)
    }

    /// Whether the master may write it.
    pub fn is_writable(self) -> bool {
        matches!(self, Self::Coil | Self::Holding)
    }
}

/// How to read and write one property's registers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// Data area.
    pub register: Register,
    /// Value type.
    pub ty: PropertyType,
    /// Registers (or bits) read.
    pub limit: u16,
    /// Multiplier applied on read (divisor on write).
    pub scale: f64,
    /// Swap the bytes in each register.
    pub swap: bool,
    /// Reverse the register order.
    pub register_swap: bool,
    /// `int` values are two's complement (the property's minimum is negative), so a
    /// negative value written reads back as itself.
    pub signed: bool,
}

/// A value that does not convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The register count does not fit the type.
    #[error("{len} bytes cannot hold a {ty} value")]
    Width {
        /// Bytes read.
        len: usize,
        /// The type.
        ty: PropertyType,
    },
    /// A desired value that does not parse or fit.
    #[error("cannot write {value:?} as {ty} into {limit} register(s)")]
    Value {
        /// The value.
        value: String,
        /// The type.
        ty: PropertyType,
        /// Registers available.
        limit: u16,
    },
    /// The area is read-only.
    #[error("{0:?} is read-only")]
    ReadOnly(Register),
}

/// A write to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// One coil.
    Coil(bool),
    /// Holding registers from the property's offset.
    Registers(Vec<u16>),
}

fn scale(l: &Layout) -> f64 {
    if l.scale == 0.0 || !l.scale.is_finite() {
        1.0
    } else {
        l.scale
    }
}

/// Register words to bytes with both swaps applied.
fn word_bytes(words: &[u16], l: &Layout) -> Vec<u8> {
    let mut w: Vec<u16> = words.to_vec();
    if l.register_swap {
        w.reverse();
    }
    w.iter()
        .flat_map(|x| {
            let b = x.to_be_bytes();
            if l.swap { [b[1], b[0]] } else { b }
        })
        .collect()
}

/// Bits to bytes, LSB first (the Modbus wire packing).
fn bit_bytes(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |acc, (i, b)| acc | (u8::from(*b) << i))
        })
        .collect()
}

fn be_uint(bytes: &[u8], ty: PropertyType) -> Result<u64, CodecError> {
    if !matches!(bytes.len(), 1 | 2 | 4 | 8) {
        return Err(CodecError::Width {
            len: bytes.len(),
            ty,
        });
    }
    Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The bytes as a big-endian integer: unsigned, or two's complement if `l.signed`.
fn be_int(bytes: &[u8], l: &Layout) -> Result<f64, CodecError> {
    let raw = be_uint(bytes, l.ty)?;
    let bits = bytes.len() * 8;
    if !l.signed || raw >> (bits - 1) == 0 {
        return Ok(raw as f64);
    }
    // Sign-extend the top bit of a `bits`-wide value.
    let shift = 64 - bits;
    Ok(((raw << shift) as i64 >> shift) as f64)
}

/// Decodes bits (coils, discrete inputs) into a twin value.
pub fn decode_bits(bits: &[bool], l: &Layout) -> Result<String, CodecError> {
    if l.ty == PropertyType::Boolean {
        return Ok(bits.first().copied().unwrap_or(false).to_string());
    }
    decode_bytes(&bit_bytes(bits), l)
}

/// Decodes registers into a twin value.
pub fn decode_words(words: &[u16], l: &Layout) -> Result<String, CodecError> {
    if l.ty == PropertyType::Boolean {
        return Ok(words.iter().any(|w| *w != 0).to_string());
    }
    decode_bytes(&word_bytes(words, l), l)
}

fn decode_bytes(bytes: &[u8], l: &Layout) -> Result<String, CodecError> {
    let s = scale(l);
    match l.ty {
        PropertyType::Int => {
            let v = be_int(bytes, l)? * s;
            Ok(format!("{}", v.trunc() as i64))
        }
        PropertyType::Float | PropertyType::Double => {
            let v = match bytes.len() {
                4 => f64::from(f32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
                8 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(bytes);
                    f64::from_be_bytes(b)
                }
                _ => be_int(bytes, l)?,
            };
            Ok(format!("{:.6}", v * s))
        }
        PropertyType::Boolean => Ok(bytes.iter().any(|b| *b != 0).to_string()),
        PropertyType::String | PropertyType::Bytes | PropertyType::Stream => {
            let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
        }
    }
}

fn bytes_to_words(bytes: &[u8], l: &Layout) -> Vec<u16> {
    let mut w: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let (hi, lo) = (c[0], c.get(1).copied().unwrap_or(0));
            if l.swap {
                u16::from_be_bytes([lo, hi])
            } else {
                u16::from_be_bytes([hi, lo])
            }
        })
        .collect();
    if l.register_swap {
        w.reverse();
    }
    w
}

/// Encodes a desired value for writing (the inverse of the decoders).
pub fn encode(value: &str, l: &Layout) -> Result<WriteOp, CodecError> {
    let bad = || CodecError::Value {
        value: value.to_owned(),
        ty: l.ty,
        limit: l.limit,
    };
    match l.register {
        Register::DiscreteInput | Register::Input => return Err(CodecError::ReadOnly(l.register)),
        Register::Coil => {
            let on = match value.trim().to_ascii_lowercase().as_str() {
                "1" | "t" | "true" | "on" => true,
                "0" | "f" | "false" | "off" => false,
                _ => return Err(bad()),
            };
            return Ok(WriteOp::Coil(on));
        }
        Register::Holding => {}
    }
    let limit = usize::from(l.limit.max(1));
    let width = limit * 2;
    let s = scale(l);
    let bytes: Vec<u8> = match l.ty {
        PropertyType::Boolean => {
            let on = match value.trim().to_ascii_lowercase().as_str() {
                "1" | "t" | "true" | "on" => 1u64,
                "0" | "f" | "false" | "off" => 0,
                _ => return Err(bad()),
            };
            uint_bytes(on, width).ok_or_else(bad)?
        }
        PropertyType::Int => int_bytes(value, s, width).ok_or_else(bad)?,
        PropertyType::Float | PropertyType::Double if width < 4 => {
            int_bytes(value, s, width).ok_or_else(bad)?
        }
        PropertyType::Float | PropertyType::Double => {
            let v: f64 = value.trim().parse().map_err(|_| bad())?;
            let v = v / s;
            match width {
                4 => (v as f32).to_be_bytes().to_vec(),
                8 => v.to_be_bytes().to_vec(),
                _ => return Err(bad()),
            }
        }
        PropertyType::String | PropertyType::Bytes | PropertyType::Stream => {
            let b = value.as_bytes();
            if b.len() > width {
                return Err(bad());
            }
            let mut out = b.to_vec();
            out.resize(width, 0);
            out
        }
    };
    Ok(WriteOp::Registers(bytes_to_words(&bytes, l)))
}

/// A number divided by `scale`, rounded, as `width` big-endian bytes (negative values in
/// two's complement); `None` if it does not parse or fit.
fn int_bytes(value: &str, scale: f64, width: usize) -> Option<Vec<u8>> {
    let v: f64 = value.trim().parse().ok()?;
    let raw = (v / scale).round();
    if !raw.is_finite() {
        return None;
    }
    let bits = width * 8;
    let (min, max) = if bits >= 64 {
        (i64::MIN as f64, u64::MAX as f64)
    } else {
        (-((1u64 << (bits - 1)) as f64), ((1u64 << bits) - 1) as f64)
    };
    if raw > max || raw < min {
        return None;
    }
    let n = if raw < 0.0 {
        (raw as i64) as u64
    } else {
        raw as u64
    };
    uint_bytes(n, width)
}

/// The low `width` bytes of `n`, big-endian; `None` if `n` does not fit (two's complement
/// values of a narrower width are truncated on purpose).
fn uint_bytes(n: u64, width: usize) -> Option<Vec<u8>> {
    let all = n.to_be_bytes();
    if width >= 8 {
        let mut v = vec![0u8; width - 8];
        v.extend_from_slice(&all);
        return Some(v);
    }
    Some(all[8 - width..].to_vec())
}

#[cfg(test)]
mod tests;
