//! Protocol-buffer request bodies (`application/vnd.kubernetes.protobuf`) of the kinds
//! kubectl's typed commands create — `create namespace|serviceaccount|configmap|secret`
//! and `create token` — decoded to the JSON the handlers take. Other kinds stay 415.
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

#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static [F]),
    MapStr,
    MapBytes,
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
    rep(14, "finalizers", Ty::Str),
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

fn table(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
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
            (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
            (Ty::Msg(sub), Wire::Len(b)) => Value::Object(decode_msg(b, sub)?),
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
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn kubectl_create_token_body() {
        // kubectl create token default --duration=15m --audience=a1 --audience=a2
        //   --bound-object-kind=Pod --bound-object-name=holder --bound-object-uid=u-1
        let body = hex(
            "6b 38 73 00 0a 28 0a 18 61 75 74 68 65 6e 74 69 63 61 74 69 6f 6e 2e 6b 38 73 2e 69 6f 2f 76 31
             12 0c 54 6f 6b 65 6e 52 65 71 75 65 73 74 12 3d 0a 10 0a 00 12 00 1a 00 22 00 2a 00 32 00 38 00
             42 00 12 23 0a 02 61 31 0a 02 61 32 1a 16 0a 03 50 6f 64 12 02 76 31 1a 06 68 6f 6c 64 65 72 22
             03 75 2d 31 20 84 07 1a 04 0a 00 12 00 1a 00 22 00",
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": ["a1", "a2"], "expirationSeconds": 900,
                    "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "holder", "uid": "u-1"}},
            })
        );
    }

    #[test]
    fn kubectl_create_namespace_configmap_secret_serviceaccount_bodies() {
        let ns = hex(
            "6b 38 73 00 0a 0f 0a 02 76 31 12 09 4e 61 6d 65 73 70 61 63 65 12 1b 0a 13 0a 03 6e 73 78 12 00
             1a 00 22 00 2a 00 32 00 38 00 42 00 12 00 1a 02 0a 00 1a 00 22 00",
        );
        assert_eq!(
            decode(&ns).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nsx"}})
        );
        let cm = hex(
            "6b 38 73 00 0a 0f 0a 02 76 31 12 09 43 6f 6e 66 69 67 4d 61 70 12 1d 0a 13 0a 03 63 6d 78 12 00
             1a 00 22 00 2a 00 32 00 38 00 42 00 12 06 0a 01 61 12 01 31 1a 00 22 00",
        );
        assert_eq!(
            decode(&cm).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cmx"}, "data": {"a": "1"}})
        );
        let secret = hex(
            "6b 38 73 00 0a 0c 0a 02 76 31 12 06 53 65 63 72 65 74 12 24 0a 12 0a 02 73 78 12 00 1a 00 22 00
             2a 00 32 00 38 00 42 00 12 0c 0a 01 70 12 07 68 75 6e 74 65 72 32 1a 00 1a 00 22 00",
        );
        assert_eq!(
            decode(&secret).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sx"}, "data": {"p": "aHVudGVyMg=="}})
        );
        let sa = hex(
            "6b 38 73 00 0a 14 0a 02 76 31 12 0e 53 65 72 76 69 63 65 41 63 63 6f 75 6e 74 12 15 0a 13 0a 03
             73 61 78 12 00 1a 00 22 00 2a 00 32 00 38 00 42 00 1a 00 22 00",
        );
        assert_eq!(
            decode(&sa).unwrap(),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sax"}})
        );
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        let pod = hex("6b 38 73 00 0a 09 0a 02 76 31 12 03 50 6f 64 12 00");
        assert_eq!(decode(&pod), Err(ProtoError::Unsupported("v1 Pod".into())));
        assert!(decode(b"{}").is_err());
        assert!(decode(&hex("6b 38 73 00 0a ff")).is_err());
        assert!(decode(&hex("6b 38 73 00 0a 05 0a")).is_err());
        assert!(decode(&hex("6b 38 73 00 ff ff ff ff ff ff ff ff ff ff ff")).is_err());
    }
}
