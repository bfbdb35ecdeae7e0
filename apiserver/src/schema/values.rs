//! Helpers shared by validation and pruning: field paths and JSON value predicates in
//! kube-openapi's terms (type names, formats, equality).

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::Value;

/// A field path being walked (`spec.containers[0].image`).
#[derive(Debug, Default, Clone)]
pub(super) struct Path(Vec<Seg>);

/// One step of a [`Path`].
#[derive(Debug, Clone)]
pub(super) enum Seg {
    /// A property or map key.
    Field(String),
    /// A list index.
    Index(usize),
}

impl Path {
    /// Runs `f` with `seg` pushed.
    pub(super) fn with<R>(&mut self, seg: Seg, f: impl FnOnce(&mut Self) -> R) -> R {
        self.0.push(seg);
        let r = f(self);
        self.0.pop();
        r
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Field(name) if i == 0 => f.write_str(name)?,
                Seg::Field(name) => write!(f, ".{name}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// How kube-openapi names a JSON value's type in messages.
pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

pub(super) fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => is_integer(v),
        "number" => v.is_number(),
        _ => true,
    }
}

/// A value as Kubernetes prints it after `Invalid value:` (strings quoted).
pub(super) fn show(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A bound as Kubernetes prints it (`1`, not `1.0`).
pub(super) fn show_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Equality with numbers compared by value (`1` == `1.0`).
pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

static REGEXES: LazyLock<Mutex<HashMap<String, Option<Regex>>>> = LazyLock::new(Default::default);

/// Whether `s` matches `pattern`; compiled regexes are cached (bounded). A pattern that does
/// not compile matches everything (`check_structural` rejects it at CRD creation).
pub(super) fn pattern_matches(pattern: &str, s: &str) -> bool {
    let Ok(mut cache) = REGEXES.lock() else {
        return true;
    };
    if cache.len() > 1024 {
        cache.clear();
    }
    let re = cache
        .entry(pattern.to_owned())
        .or_insert_with(|| Regex::new(pattern).ok());
    re.as_ref().is_none_or(|re| re.is_match(s))
}

/// RFC 3339 `date-time` (`2024-01-02T03:04:05Z`, fractional seconds and offsets allowed).
pub(super) fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't' | b' ')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

/// Standard base64 with padding (what Go's `[]byte` JSON encoding produces and accepts).
pub(super) fn is_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return false;
    }
    let pad = b.iter().rev().take_while(|c| **c == b'=').count();
    pad <= 2
        && b[..b.len() - pad]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

pub(super) fn has_duplicates(items: &[Value], eq: impl Fn(&Value, &Value) -> bool) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, a)| items[..i].iter().any(|b| eq(a, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_time_and_base64() {
        assert!(is_date_time("2024-01-02T03:04:05Z"));
        assert!(is_date_time("2024-01-02T03:04:05.123456+01:00"));
        assert!(!is_date_time("2024-01-02"));
        assert!(!is_date_time("2024-01-02T03:04:05"));
        assert!(is_base64("aGVsbG8="));
        assert!(is_base64(""));
        assert!(!is_base64("aGVsbG8"));
    }
}
