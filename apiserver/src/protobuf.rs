//! Protocol-buffer request bodies (`application/vnd.kubernetes.protobuf`) of the kinds
//! kubectl's typed commands create — `create namespace|serviceaccount|configmap|secret`,
//! `create token`, the reviews of `auth whoami` and `auth can-i`, and (tables in
//! `workloads`) `run` and `create deployment|job|cronjob|service` — decoded to the JSON the
//! handlers take. Other kinds stay 415.
//!
//! The body is Kubernetes' envelope: `k8s\0` then a `runtime.Unknown` message (`typeMeta`
//! = 1 {`apiVersion` = 1, `kind` = 2}, `raw` = 2) whose `raw` is the object in the field
//! numbering of `k8s.io/api`'s `generated.proto`; a table per kind below names the fields
//! understood (others are skipped, as the JSON decoder drops unknown fields). Empty strings
//! and empty messages — how Go encodes unset non-pointer fields — are left out. No IO.

use base64::Engine;
use serde_json::{Map, Value};

/// The envelope's magic prefix.
const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Not the envelope, or a truncated or malformed message.
    #[error("the protobuf body is malformed: {0}")]
    Malformed(&'static str),
    /// A kind this server does not decode from protobuf.
    #[error("protobuf bodies of {0} are not supported; send application/json")]
    Unsupported(String),
}

mod encode;
mod generated;
mod workloads;

pub use encode::{ProtoKind, Unencodable, envelope_head, item_head, kind_of, list_meta};

#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    /// An integer kept even when 0 (Go: a pointer, encoded only when set).
    Int,
    /// An integer Go always encodes; 0 means unset (`omitempty`) and is left out.
    Num,
    /// A bool kept even when false (Go: a pointer).
    Bool,
    /// A bool Go always encodes; false is left out (`omitempty`).
    Flag,
    /// A message; left out when empty (Go: a struct, always encoded).
    Msg(&'static [F]),
    /// A message kept even when empty (Go: a pointer; `emptyDir: {}` means something).
    Opt(&'static [F]),
    /// An embedded Go struct: its fields belong to the enclosing object in JSON.
    Inline(&'static [F]),
    /// `intstr.IntOrString` {type = 1, intVal = 2, strVal = 3}: a number or a string.
    IntOrStr,
    /// `resource.Quantity` {string = 1}: a string.
    Quantity,
    MapStr,
    MapBytes,
    /// `map<string, Quantity>` (resource limits and requests).
    MapQuantity,
    /// `meta.v1.Time` {seconds = 1, nanos = 2}: an RFC 3339 string at seconds.
    Time,
    /// `meta.v1.MicroTime`: as `Time`, at microseconds in JSON.
    MicroTime,
    /// `meta.v1.FieldsV1` / `runtime.RawExtension` {raw = 1}: JSON held as bytes.
    RawJson,
}

#[derive(Debug, Clone, Copy)]
struct F {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> F {
    F {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn rep(num: u64, name: &'static str, ty: Ty) -> F {
    F {
        num,
        name,
        ty,
        repeated: true,
    }
}

const OBJECT_META: &[F] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(11, "labels", Ty::MapStr),
    f(12, "annotations", Ty::MapStr),
    rep(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    rep(14, "finalizers", Ty::Str),
];
const OWNER_REFERENCE: &[F] = &[
    f(5, "apiVersion", Ty::Str),
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];
const META: F = f(1, "metadata", Ty::Msg(OBJECT_META));

const NAMESPACE: &[F] = &[
    META,
    f(2, "spec", Ty::Msg(&[rep(1, "finalizers", Ty::Str)])),
];
const OBJECT_REFERENCE: &[F] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "fieldPath", Ty::Str),
];
const SERVICE_ACCOUNT: &[F] = &[
    META,
    rep(2, "secrets", Ty::Msg(OBJECT_REFERENCE)),
    rep(3, "imagePullSecrets", Ty::Msg(&[f(1, "name", Ty::Str)])),
    f(4, "automountServiceAccountToken", Ty::Bool),
];
const CONFIG_MAP: &[F] = &[
    META,
    f(2, "data", Ty::MapStr),
    f(3, "binaryData", Ty::MapBytes),
    f(4, "immutable", Ty::Bool),
];
const SECRET: &[F] = &[
    META,
    f(2, "data", Ty::MapBytes),
    f(3, "type", Ty::Str),
    f(4, "stringData", Ty::MapStr),
    f(5, "immutable", Ty::Bool),
];
const BOUND_OBJECT_REF: &[F] = &[
    f(1, "kind", Ty::Str),
    f(2, "apiVersion", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
];
const TOKEN_REQUEST: &[F] = &[
    META,
    f(
        2,
        "spec",
        Ty::Msg(&[
            rep(1, "audiences", Ty::Str),
            f(3, "boundObjectRef", Ty::Msg(BOUND_OBJECT_REF)),
            f(4, "expirationSeconds", Ty::Int),
        ]),
    ),
];

const RESOURCE_ATTRIBUTES: &[F] = &[
    f(1, "namespace", Ty::Str),
    f(2, "verb", Ty::Str),
    f(3, "group", Ty::Str),
    f(4, "version", Ty::Str),
    f(5, "resource", Ty::Str),
    f(6, "subresource", Ty::Str),
    f(7, "name", Ty::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[F] = &[f(1, "path", Ty::Str), f(2, "verb", Ty::Str)];
/// `SubjectAccessReviewSpec` (`extra` is not decoded); its first two fields are
/// `SelfSubjectAccessReviewSpec`.
const ACCESS_REVIEW_SPEC: &[F] = &[
    f(1, "resourceAttributes", Ty::Opt(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Ty::Opt(NON_RESOURCE_ATTRIBUTES)),
    f(3, "user", Ty::Str),
    rep(4, "groups", Ty::Str),
    f(6, "uid", Ty::Str),
];
const ACCESS_REVIEW: &[F] = &[META, f(2, "spec", Ty::Msg(ACCESS_REVIEW_SPEC))];
const RULES_REVIEW: &[F] = &[META, f(2, "spec", Ty::Msg(&[f(1, "namespace", Ty::Str)]))];
const TOKEN_REVIEW: &[F] = &[
    META,
    f(
        2,
        "spec",
        Ty::Msg(&[f(1, "token", Ty::Str), rep(2, "audiences", Ty::Str)]),
    ),
];

fn table(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => &[META],
        ("authentication.k8s.io/v1", "TokenReview") => TOKEN_REVIEW,
        (
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview",
        ) => ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => RULES_REVIEW,
        ("v1", "Pod") => workloads::POD,
        ("v1", "Service") => workloads::SERVICE,
        ("apps/v1", "Deployment") => workloads::DEPLOYMENT,
        ("batch/v1", "Job") => workloads::JOB,
        ("batch/v1", "CronJob") => workloads::CRON_JOB,
        _ => return None,
    })
}

/// Decode an enveloped protobuf body to its JSON object.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or(ProtoError::Malformed("missing the k8s envelope"))?;
    let mut type_meta = None;
    let mut raw = None;
    for field in Fields(rest) {
        let (num, v) = field?;
        match (num, v) {
            (1, Wire::Len(b)) => type_meta = Some(b),
            (2, Wire::Len(b)) => raw = Some(b),
            _ => {}
        }
    }
    let tm = decode_msg(
        type_meta.ok_or(ProtoError::Malformed("no typeMeta"))?,
        &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)],
    )?;
    let api_version = tm.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = tm.get("kind").and_then(Value::as_str).unwrap_or("");
    let fields = table(api_version, kind)
        .ok_or_else(|| ProtoError::Unsupported(format!("{api_version} {kind}")))?;
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::from(api_version));
    out.insert("kind".into(), Value::from(kind));
    out.extend(decode_msg(raw.unwrap_or_default(), fields)?);
    Ok(Value::Object(out))
}

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// The fields of a message: (field number, value).
struct Fields<'a>(&'a [u8]);

fn varint(buf: &mut &[u8]) -> Result<u64, ProtoError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf
            .split_first()
            .ok_or(ProtoError::Malformed("truncated varint"))?;
        *buf = rest;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(ProtoError::Malformed("varint too long"))
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let mut buf = self.0;
        let item = (|| {
            let key = varint(&mut buf)?;
            let value = match key & 7 {
                0 => Wire::Varint(varint(&mut buf)?),
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    buf = buf
                        .get(n..)
                        .ok_or(ProtoError::Malformed("truncated fixed field"))?;
                    Wire::Fixed
                }
                2 => {
                    let len = usize::try_from(varint(&mut buf)?)
                        .map_err(|_| ProtoError::Malformed("length too large"))?;
                    let (v, rest) = buf
                        .split_at_checked(len)
                        .ok_or(ProtoError::Malformed("truncated field"))?;
                    buf = rest;
                    Wire::Len(v)
                }
                _ => return Err(ProtoError::Malformed("unsupported wire type")),
            };
            Ok((key >> 3, value))
        })();
        self.0 = if item.is_ok() { buf } else { &[] };
        Some(item)
    }
}

fn text(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("a string is not UTF-8"))
}

fn decode_msg(buf: &[u8], fields: &[F]) -> Result<Map<String, Value>, ProtoError> {
    let mut out = Map::new();
    for field in Fields(buf) {
        let (num, wire) = field?;
        let Some(spec) = fields.iter().find(|s| s.num == num) else {
            continue;
        };
        let value = match (spec.ty, wire) {
            (Ty::Str, Wire::Len(b)) => Value::String(text(b)?),
            (Ty::Int, Wire::Varint(v)) => Value::from(v as i64),
            (Ty::Num, Wire::Varint(0)) | (Ty::Flag, Wire::Varint(0)) => continue,
            (Ty::Num, Wire::Varint(v)) => Value::from(v as i64),
            (Ty::Bool | Ty::Flag, Wire::Varint(v)) => Value::Bool(v != 0),
            (Ty::Msg(sub), Wire::Len(b)) => Value::Object(decode_msg(b, sub)?),
            (Ty::Opt(sub), Wire::Len(b)) if !spec.repeated => {
                out.insert(spec.name.into(), Value::Object(decode_msg(b, sub)?));
                continue;
            }
            (Ty::Opt(sub), Wire::Len(b)) => Value::Object(decode_msg(b, sub)?),
            (Ty::Inline(sub), Wire::Len(b)) => {
                out.extend(decode_msg(b, sub)?);
                continue;
            }
            (Ty::IntOrStr, Wire::Len(b)) => int_or_string(b)?,
            (Ty::Time | Ty::MicroTime, Wire::Len(b)) => time(b, spec.ty)?,
            (Ty::RawJson, Wire::Len(b)) => {
                let raw = Fields(b)
                    .filter_map(Result::ok)
                    .find_map(|(n, w)| match (n, w) {
                        (1, Wire::Len(r)) => Some(r),
                        _ => None,
                    })
                    .unwrap_or(b"null");
                serde_json::from_slice(raw)
                    .map_err(|_| ProtoError::Malformed("raw JSON does not parse"))?
            }
            (Ty::Quantity, Wire::Len(b)) => quantity(b)?,
            (Ty::MapQuantity, Wire::Len(b)) => {
                let mut key = String::new();
                let mut val = Value::from("");
                for field in Fields(b) {
                    match field? {
                        (1, Wire::Len(k)) => key = text(k)?,
                        (2, Wire::Len(v)) => val = quantity(v)?,
                        _ => {}
                    }
                }
                if let Some(m) = out
                    .entry(spec.name)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                {
                    m.insert(key, val);
                }
                continue;
            }
            (Ty::MapStr | Ty::MapBytes, Wire::Len(b)) => {
                let entry = decode_msg(b, &[f(1, "k", Ty::Str), f(2, "v", Ty::Str)]);
                let (k, v) = map_entry(b, spec.ty, entry)?;
                let m = out
                    .entry(spec.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            _ => return Err(ProtoError::Malformed("a field has an unexpected wire type")),
        };
        let empty = match &value {
            Value::String(s) => s.is_empty(),
            Value::Object(m) => m.is_empty(),
            _ => false,
        };
        if spec.repeated {
            let list = out
                .entry(spec.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(l) = list.as_array_mut() {
                l.push(value);
            }
        } else if !empty {
            out.insert(spec.name.into(), value);
        }
    }
    Ok(out)
}

/// An `IntOrString`: `type` 0 is `intVal`, 1 is `strVal`.
fn int_or_string(b: &[u8]) -> Result<Value, ProtoError> {
    let (mut ty, mut int, mut s) = (0, 0i64, String::new());
    for field in Fields(b) {
        match field? {
            (1, Wire::Varint(v)) => ty = v,
            (2, Wire::Varint(v)) => int = i64::from(v as i32),
            (3, Wire::Len(v)) => s = text(v)?,
            _ => {}
        }
    }
    Ok(if ty == 1 {
        Value::String(s)
    } else {
        Value::from(int)
    })
}

/// A `Time` (at seconds) or `MicroTime` (at microseconds) as its RFC 3339 string.
fn time(b: &[u8], ty: Ty) -> Result<Value, ProtoError> {
    let (mut secs, mut nanos) = (0i64, 0u32);
    for field in Fields(b) {
        match field? {
            (1, Wire::Varint(v)) => secs = v as i64,
            (2, Wire::Varint(v)) => nanos = v as u32,
            _ => {}
        }
    }
    let t = chrono::DateTime::from_timestamp(secs, nanos)
        .ok_or(ProtoError::Malformed("a time is out of range"))?;
    let precision = match ty {
        Ty::MicroTime => chrono::SecondsFormat::Micros,
        _ => chrono::SecondsFormat::Secs,
    };
    Ok(Value::String(t.to_rfc3339_opts(precision, true)))
}

/// A `Quantity`: its canonical string.
fn quantity(b: &[u8]) -> Result<Value, ProtoError> {
    let mut s = String::new();
    for field in Fields(b) {
        if let (1, Wire::Len(v)) = field? {
            s = text(v)?;
        }
    }
    Ok(Value::String(s))
}

/// A map entry (`key` = 1, `value` = 2); bytes values become base64, as in JSON.
fn map_entry(
    b: &[u8],
    ty: Ty,
    as_text: Result<Map<String, Value>, ProtoError>,
) -> Result<(String, Value), ProtoError> {
    if let Ty::MapBytes = ty {
        let mut key = String::new();
        let mut val = Vec::new();
        for field in Fields(b) {
            match field? {
                (1, Wire::Len(k)) => key = text(k)?,
                (2, Wire::Len(v)) => val = v.to_vec(),
                _ => {}
            }
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(val);
        return Ok((key, Value::String(encoded)));
    }
    let m = as_text?;
    let key = m.get("k").and_then(Value::as_str).unwrap_or("").to_string();
    let val = m.get("v").cloned().unwrap_or(Value::from(""));
    Ok((key, val))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
