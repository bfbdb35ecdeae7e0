//! Objects of built-in kinds encoded as protobuf for clients that ask for it (client-go's
//! typed clients and informers send `Accept: application/vnd.kubernetes.protobuf,
//! application/json`). The tables are [`super::generated`]'s: every field of each kind's
//! `generated.proto` message that the JSON may hold.
//!
//! An object is encoded only when every field of its JSON has a place in the message: a
//! field the tables do not know (a newer Kubernetes field, a value of an unexpected type)
//! makes [`object`] answer `None`, and the caller answers in JSON instead — the client gets
//! all of the object or JSON, never a silently shortened object. `null` is an unset field.
//! Repeated scalars are not packed (proto2, as `generated.proto` declares them). No IO.

use base64::Engine;
use serde_json::{Map, Value};

use super::{F, MAGIC, Ty};

/// A built-in kind answered in protobuf.
#[derive(Debug, Clone, Copy)]
pub struct ProtoKind {
    /// Its `apiVersion`.
    pub api_version: &'static str,
    /// Its `kind`.
    pub kind: &'static str,
    fields: &'static [F],
}

impl ProtoKind {
    /// The object `value` of this kind as its message (no envelope). `apiVersion` and
    /// `kind` are the envelope's, not the message's.
    pub fn encode(&self, value: &Value) -> Res<Vec<u8>> {
        object(value, self.fields)
    }
}

/// The built-in kind `kind` of `api_version`, if it is answered in protobuf (the kinds of
/// [`super::generated::KINDS`]).
pub fn kind_of(api_version: &str, kind: &str) -> Option<ProtoKind> {
    super::generated::KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|&(api_version, kind, fields)| ProtoKind {
            api_version,
            kind,
            fields,
        })
}

/// Why a value was not encoded (the caller falls back to JSON; the reason is for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unencodable(pub String);

type Res<T> = Result<T, Unencodable>;

fn object(value: &Value, fields: &[F]) -> Res<Vec<u8>> {
    let obj = value
        .as_object()
        .ok_or_else(|| Unencodable("not an object".into()))?;
    let mut out = Vec::with_capacity(512);
    let used = encode_fields(obj, fields, &mut out)?;
    let type_meta =
        usize::from(obj.contains_key("apiVersion")) + usize::from(obj.contains_key("kind"));
    if used + type_meta != obj.len() {
        return Err(unknown_key(obj, fields, &["apiVersion", "kind"]));
    }
    Ok(out)
}

/// The envelope around a message of `raw_len` bytes: `k8s\0` and a `runtime.Unknown` up to
/// its `raw` field's bytes (which follow). `contentEncoding` and `contentType` are empty
/// and left out (`raw` is then the last field).
pub fn envelope_head(api_version: &str, kind: &str, raw_len: usize) -> Vec<u8> {
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_key(&mut out, 2, 2);
    put_varint(&mut out, raw_len as u64);
    out
}

/// A list message (`metadata` = 1 `ListMeta`, `items` = 2) up to its items: the list's
/// metadata. Each item then follows as [`item_head`] and its message.
pub fn list_meta(resource_version: &str, cont: Option<&str>, remaining: Option<i64>) -> Vec<u8> {
    let mut meta = Vec::new();
    put_bytes(&mut meta, 2, resource_version.as_bytes());
    if let Some(c) = cont {
        put_bytes(&mut meta, 3, c.as_bytes());
    }
    if let Some(r) = remaining {
        put_key(&mut meta, 4, 0);
        put_varint(&mut meta, r as u64);
    }
    let mut out = Vec::new();
    put_bytes(&mut out, 1, &meta);
    out
}

/// The key and length of one list item of `len` bytes.
pub fn item_head(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    put_key(&mut out, 2, 2);
    put_varint(&mut out, len as u64);
    out
}

fn unknown_key(obj: &Map<String, Value>, fields: &[F], also: &[&str]) -> Unencodable {
    fn known(fields: &[F], name: &str) -> bool {
        fields.iter().any(|f| match f.ty {
            Ty::Inline(sub) => known(sub, name),
            _ => f.name == name,
        })
    }
    let key = obj
        .keys()
        .find(|k| !also.contains(&k.as_str()) && !known(fields, k))
        .map_or("?", String::as_str);
    Unencodable(format!("no protobuf field for {key:?}"))
}

/// Encode the fields of `obj` that `fields` names into `out`; the number of `obj`'s keys
/// used (inline messages take theirs from `obj` too).
fn encode_fields(obj: &Map<String, Value>, fields: &[F], out: &mut Vec<u8>) -> Res<usize> {
    let mut used = 0;
    for spec in fields {
        if let Ty::Inline(sub) = spec.ty {
            let mut buf = Vec::new();
            let n = encode_fields(obj, sub, &mut buf)?;
            if n > 0 {
                put_bytes(out, spec.num, &buf);
            }
            used += n;
            continue;
        }
        let Some(v) = obj.get(spec.name) else {
            continue;
        };
        used += 1;
        match v {
            Value::Null => {}
            Value::Array(items) if spec.repeated => {
                for item in items {
                    value(spec, item, out)?;
                }
            }
            _ if spec.repeated => {
                return Err(Unencodable(format!("{:?} is not a list", spec.name)));
            }
            v => value(spec, v, out)?,
        }
    }
    Ok(used)
}

/// Encode a message: every key of `v` must have a field.
fn message(v: &Value, fields: &[F], name: &str) -> Res<Vec<u8>> {
    let obj = v
        .as_object()
        .ok_or_else(|| Unencodable(format!("{name:?} is not an object")))?;
    let mut buf = Vec::new();
    if encode_fields(obj, fields, &mut buf)? != obj.len() {
        return Err(unknown_key(obj, fields, &[]));
    }
    Ok(buf)
}

fn value(spec: &F, v: &Value, out: &mut Vec<u8>) -> Res<()> {
    let wrong = || Unencodable(format!("{:?} has a value of another type", spec.name));
    match spec.ty {
        Ty::Str => put_bytes(out, spec.num, v.as_str().ok_or_else(wrong)?.as_bytes()),
        Ty::Int | Ty::Num => {
            let n = v.as_i64().ok_or_else(wrong)?;
            put_key(out, spec.num, 0);
            put_varint(out, n as u64);
        }
        Ty::Bool | Ty::Flag => {
            put_key(out, spec.num, 0);
            put_varint(out, u64::from(v.as_bool().ok_or_else(wrong)?));
        }
        Ty::Time | Ty::MicroTime => {
            let t = chrono::DateTime::parse_from_rfc3339(v.as_str().ok_or_else(wrong)?)
                .map_err(|_| wrong())?;
            let mut buf = Vec::new();
            if t.timestamp() != 0 {
                put_key(&mut buf, 1, 0);
                put_varint(&mut buf, t.timestamp() as u64);
            }
            if t.timestamp_subsec_nanos() != 0 {
                put_key(&mut buf, 2, 0);
                put_varint(&mut buf, u64::from(t.timestamp_subsec_nanos()));
            }
            put_bytes(out, spec.num, &buf);
        }
        Ty::Quantity => put_bytes(out, spec.num, &quantity(v).ok_or_else(wrong)?),
        Ty::IntOrStr => {
            let mut buf = Vec::new();
            match v {
                Value::String(s) => {
                    put_key(&mut buf, 1, 0);
                    put_varint(&mut buf, 1);
                    put_bytes(&mut buf, 3, s.as_bytes());
                }
                _ => {
                    let n = v.as_i64().ok_or_else(wrong)?;
                    put_key(&mut buf, 1, 0);
                    put_varint(&mut buf, 0);
                    put_key(&mut buf, 2, 0);
                    put_varint(&mut buf, i64::from(n as i32) as u64);
                }
            }
            put_bytes(out, spec.num, &buf);
        }
        Ty::RawJson => {
            let raw = serde_json::to_vec(v).map_err(|_| wrong())?;
            let mut buf = Vec::with_capacity(raw.len() + 4);
            put_bytes(&mut buf, 1, &raw);
            put_bytes(out, spec.num, &buf);
        }
        Ty::Msg(sub) | Ty::Opt(sub) => put_bytes(out, spec.num, &message(v, sub, spec.name)?),
        Ty::Inline(_) => return Err(wrong()),
        Ty::MapStr | Ty::MapBytes | Ty::MapQuantity => {
            let m = v.as_object().ok_or_else(wrong)?;
            for (k, val) in m {
                let val = match (spec.ty, val) {
                    (Ty::MapStr, Value::String(s)) => s.as_bytes().to_vec(),
                    (Ty::MapBytes, Value::String(s)) => base64(s)?,
                    (Ty::MapQuantity, q) => quantity(q).ok_or_else(wrong)?,
                    _ => return Err(wrong()),
                };
                let mut entry = Vec::with_capacity(k.len() + val.len() + 4);
                put_bytes(&mut entry, 1, k.as_bytes());
                put_bytes(&mut entry, 2, &val);
                put_bytes(out, spec.num, &entry);
            }
        }
    }
    Ok(())
}

/// A `Quantity` message (`string` = 1) of a JSON quantity (a string, or a number as Go's
/// decoder takes it).
fn quantity(v: &Value) -> Option<Vec<u8>> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let mut buf = Vec::with_capacity(s.len() + 2);
    put_bytes(&mut buf, 1, s.as_bytes());
    Some(buf)
}

fn base64(s: &str) -> Res<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Unencodable("a bytes field is not base64".into()))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, num: u64, wire: u64) {
    put_varint(out, (num << 3) | wire);
}

fn put_bytes(out: &mut Vec<u8>, num: u64, b: &[u8]) {
    put_key(out, num, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
