//! DeviceModel: the property template shared by Devices, and the value checks it implies.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{ObjectMeta, Visitors};
use crate::payload::MAX_VALUE_LEN;

/// A `devices.kubeedge.io/v1beta1` DeviceModel object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceModel {
    /// `devices.kubeedge.io/v1beta1`.
    pub api_version: String,
    /// `DeviceModel`.
    pub kind: String,
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// The template.
    pub spec: DeviceModelSpec,
}

/// The spec of a DeviceModel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceModelSpec {
    /// Properties every device of this model exposes.
    pub properties: Vec<ModelProperty>,
    /// Protocol name of devices of this model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Default protocol settings, overridable per Device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_config_data: Option<Value>,
}

impl DeviceModelSpec {
    /// The property called `name`, if the model has one.
    pub fn property(&self, name: &str) -> Option<&ModelProperty> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// Checks the model itself: non-empty unique names, numeric bounds that parse for the
    /// property's type, and `minimum <= maximum`. cloudcore reports these on the object;
    /// value checks ([`ModelProperty::check_value`]) ignore bounds that do not parse.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut seen = BTreeSet::new();
        for p in &self.properties {
            if p.name.is_empty() {
                return Err(ModelError::EmptyName);
            }
            if !seen.insert(p.name.as_str()) {
                return Err(ModelError::DuplicateProperty(p.name.clone()));
            }
            if !p.ty.is_numeric() {
                continue;
            }
            let min = p.bound(p.minimum.as_deref(), "minimum")?;
            let max = p.bound(p.maximum.as_deref(), "maximum")?;
            if let (Some(min), Some(max)) = (min, max)
                && min > max
            {
                return Err(ModelError::EmptyRange(p.name.clone()));
            }
        }
        Ok(())
    }
}

/// One property of a DeviceModel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelProperty {
    /// Property name; the twin key.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Value type.
    #[serde(rename = "type")]
    pub ty: PropertyType,
    /// ReadWrite or ReadOnly; absent reads as ReadWrite (KubeEdge's behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    /// Lower bound for numeric types, as a string (KubeEdge's v1beta1 shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<String>,
    /// Upper bound for numeric types, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<String>,
    /// Unit of measure, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Default visitor settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitors: Option<Visitors>,
}

impl ModelProperty {
    /// A property with just a name and a type.
    pub fn new(name: impl Into<String>, ty: PropertyType) -> Self {
        Self {
            name: name.into(),
            description: None,
            ty,
            access_mode: None,
            minimum: None,
            maximum: None,
            unit: None,
            visitors: None,
        }
    }

    /// Whether desired values may be written (anything but an explicit ReadOnly).
    pub fn is_writable(&self) -> bool {
        self.access_mode != Some(AccessMode::ReadOnly)
    }

    /// Whether the property's values may be negative: its `minimum` is below 0.
    pub fn allows_negative(&self) -> bool {
        matches!(self.bound(self.minimum.as_deref(), "minimum"), Ok(Some(m)) if m < 0.0)
    }

    /// Checks a wire value against the length limit ([`check_value_len`]), the type and the
    /// bounds. Bounds that do not parse are ignored here (see [`DeviceModelSpec::validate`]).
    /// Run [`ModelProperty::normalize_value`] first: `23.0` is an INT only once spelt `23`.
    pub fn check_value(&self, value: &str) -> Result<(), ValueError> {
        check_value_len(value)?;
        let number = match self.ty {
            PropertyType::Int => value
                .parse::<i64>()
                .map(|v| v as f64)
                .map_err(|_| ValueError::TypeMismatch(self.ty))?,
            PropertyType::Float | PropertyType::Double => match value.parse::<f64>() {
                Ok(v) if v.is_finite() => v,
                _ => return Err(ValueError::TypeMismatch(self.ty)),
            },
            PropertyType::Boolean => {
                return parse_bool(value)
                    .map(|_| ())
                    .ok_or(ValueError::TypeMismatch(self.ty));
            }
            PropertyType::String | PropertyType::Bytes | PropertyType::Stream => return Ok(()),
        };
        if let Ok(Some(min)) = self.bound(self.minimum.as_deref(), "minimum")
            && number < min
        {
            return Err(ValueError::BelowMinimum(
                self.minimum.clone().unwrap_or_default(),
            ));
        }
        if let Ok(Some(max)) = self.bound(self.maximum.as_deref(), "maximum")
            && number > max
        {
            return Err(ValueError::AboveMaximum(
                self.maximum.clone().unwrap_or_default(),
            ));
        }
        Ok(())
    }

    /// A reported or desired value in its canonical spelling: for `INT`, an integral number
    /// written as a float (`23.0`, `2.3e1`: what a mapper sends when it scales a register
    /// or formats every number as a float) becomes `23`; a fractional one (`23.5`) is left as is, for
    /// [`ModelProperty::check_value`] to refuse. Anything else is returned as is.
    pub fn normalize_value(&self, value: &str) -> String {
        if self.ty == PropertyType::Int
            && value.parse::<i64>().is_err()
            && let Some(i) = integral(value)
        {
            return i.to_string();
        }
        value.to_owned()
    }

    /// A desired value in its canonical spelling: [`ModelProperty::normalize_value`], and
    /// for `BOOLEAN` the synonyms users write (`on`/`off`, `high`/`low`, `1`/`0`, `yes`/`no`
    /// and Go's `ParseBool` spellings, any case) become `true`/`false`, KubeEdge's spelling.
    /// Desired values are normalised before they are checked, compared and stored, so a
    /// driver reporting `true` meets a desired `on`.
    pub fn normalize_desired(&self, value: &str) -> String {
        if self.ty == PropertyType::Boolean
            && let Some(b) = parse_bool_synonym(value)
        {
            return if b { "true" } else { "false" }.to_owned();
        }
        self.normalize_value(value)
    }

    /// Checks a desired value: the property must be writable and the (normalised) value
    /// must fit the type and bounds. Returns the value to store.
    pub fn check_desired(&self, value: &str) -> Result<String, ValueError> {
        if !self.is_writable() {
            return Err(ValueError::ReadOnly);
        }
        let value = self.normalize_desired(value);
        self.check_value(&value)?;
        Ok(value)
    }

    fn bound(&self, raw: Option<&str>, which: &'static str) -> Result<Option<f64>, ModelError> {
        let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(None);
        };
        let parsed = match self.ty {
            PropertyType::Int => raw.parse::<i64>().ok().map(|v| v as f64),
            _ => raw.parse::<f64>().ok().filter(|v| v.is_finite()),
        };
        parsed.map(Some).ok_or_else(|| ModelError::InvalidBound {
            property: self.name.clone(),
            which,
            value: raw.to_owned(),
        })
    }
}

/// The checks every value is held to, with or without a model property: at most
/// [`MAX_VALUE_LEN`] characters. Part of [`ModelProperty::check_value`] (and so of
/// [`ModelProperty::check_desired`]); call it alone for properties no model describes.
pub fn check_value_len(value: &str) -> Result<(), ValueError> {
    let len = value.chars().count();
    if len > MAX_VALUE_LEN {
        return Err(ValueError::TooLong(len));
    }
    Ok(())
}

/// `value` as an `i64` if it is a finite number with no fractional part that fits.
fn integral(value: &str) -> Option<i64> {
    let v = value.trim().parse::<f64>().ok()?;
    // 2^63 is exactly representable; every f64 below it in magnitude converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if !v.is_finite() || v.fract() != 0.0 || !(-LIMIT..LIMIT).contains(&v) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some(v as i64)
}

/// Parses a boolean the way Go's `strconv.ParseBool` does (KubeEdge mappers are Go).
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Booleans as users write desired values: Go's `ParseBool` spellings and `on`/`off`,
/// `high`/`low`, `yes`/`no`, case-insensitively, surrounding blanks ignored.
pub(crate) fn parse_bool_synonym(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "high" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "low" | "no" => Some(false),
        _ => None,
    }
}

/// Why a DeviceModel is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A property has an empty name.
    #[error("a property has an empty name")]
    EmptyName,
    /// Two properties share a name.
    #[error("property {0:?} is defined twice")]
    DuplicateProperty(String),
    /// A numeric bound does not parse for the property's type.
    #[error("property {property:?}: {which} {value:?} is not a number of the property's type")]
    InvalidBound {
        /// Property name.
        property: String,
        /// `minimum` or `maximum`.
        which: &'static str,
        /// The bound as written.
        value: String,
    },
    /// `minimum > maximum`.
    #[error("property {0:?}: minimum is greater than maximum")]
    EmptyRange(String),
}

/// Why a value does not fit a [`ModelProperty`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value does not parse as the property's type.
    #[error("value is not a valid {0}")]
    TypeMismatch(PropertyType),
    /// The value is below the property's minimum (carried as written in the model).
    #[error("value is below the minimum {0}")]
    BelowMinimum(String),
    /// The value is above the property's maximum.
    #[error("value is above the maximum {0}")]
    AboveMaximum(String),
    /// A desired value for a ReadOnly property.
    #[error("the property is ReadOnly; only reported values may be written")]
    ReadOnly,
    /// A value longer than [`MAX_VALUE_LEN`] characters (carries its length).
    #[error("the value has {0} characters, over the {MAX_VALUE_LEN} character limit")]
    TooLong(usize),
}

impl ValueError {
    /// The stable snake_case reason used in result messages and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TypeMismatch(_) => "type_mismatch",
            Self::BelowMinimum(_) => "below_minimum",
            Self::AboveMaximum(_) => "above_maximum",
            Self::ReadOnly => "read_only_property",
            Self::TooLong(_) => "value_too_long",
        }
    }
}

/// Value type of a property. Parsed case-insensitively (`INT` in CRDs, `int` in MQTT payload
/// metadata); serialised in the CRD's upper case, see [`PropertyType::wire_name`] for payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyType {
    /// 64-bit signed integer.
    Int,
    /// Floating point.
    Float,
    /// Floating point (double precision).
    Double,
    /// Any string.
    String,
    /// `true`/`false` (and the spellings Go's `ParseBool` accepts).
    Boolean,
    /// Opaque bytes, carried as a string.
    Bytes,
    /// A stream handled by a mapper (KubeEdge); opaque to kedge.
    Stream,
}

impl PropertyType {
    /// Upper-case CRD spelling (`INT`).
    pub fn crd_name(self) -> &'static str {
        match self {
            Self::Int => "INT",
            Self::Float => "FLOAT",
            Self::Double => "DOUBLE",
            Self::String => "STRING",
            Self::Boolean => "BOOLEAN",
            Self::Bytes => "BYTES",
            Self::Stream => "STREAM",
        }
    }

    /// Lower-case spelling used in MQTT payload metadata (`int`).
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::Double => "double",
            Self::String => "string",
            Self::Boolean => "boolean",
            Self::Bytes => "bytes",
            Self::Stream => "stream",
        }
    }

    /// Int, Float or Double.
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Int | Self::Float | Self::Double)
    }
}

impl fmt::Display for PropertyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

/// An unrecognised property type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown property type {0:?} (expected int, float, double, string, boolean, bytes or stream)"
)]
pub struct UnknownType(pub String);

impl FromStr for PropertyType {
    type Err = UnknownType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "int" => Self::Int,
            "float" => Self::Float,
            "double" => Self::Double,
            "string" => Self::String,
            "boolean" => Self::Boolean,
            "bytes" => Self::Bytes,
            "stream" => Self::Stream,
            _ => return Err(UnknownType(s.to_owned())),
        })
    }
}

impl Serialize for PropertyType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.crd_name())
    }
}

impl<'de> Deserialize<'de> for PropertyType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether a property takes desired values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessMode {
    /// Reported and desired.
    ReadWrite,
    /// Reported only; desired writes are refused.
    ReadOnly,
}

impl Serialize for AccessMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Self::ReadWrite => "ReadWrite",
            Self::ReadOnly => "ReadOnly",
        })
    }
}

impl<'de> Deserialize<'de> for AccessMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "readwrite" => Ok(Self::ReadWrite),
            "readonly" => Ok(Self::ReadOnly),
            _ => Err(serde::de::Error::custom(format!(
                "unknown accessMode {s:?} (expected ReadWrite or ReadOnly)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
