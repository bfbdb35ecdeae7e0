//! Edge -> cloud API calls: a REQUEST or EVENT frame (already authorised by
//! `authz`) becomes one raw HTTP call through the kube client, and its
//! result a [`proto::Response`].
//!
//! [`plan`] is the pure part (method, path, content type, body); [`execute`]
//! sends it. Which failures are *transient* — not acked, so the edge sends
//! the frame again — is decided in exactly one place, [`is_final`]: 5xx,
//! 408, 429 and transport errors or timeouts are transient; every other
//! status (success or a permanent refusal such as 404, 409, 422) is final
//! and acked.
//!
//! Two requests are more than a pass-through: a `list` is filtered through
//! `Facts::node_may_read` so a node sees only its own objects, and a merge
//! patch of a Device's desired values is turned into a guarded JSON patch
//! of `/spec/properties/<i>/desired` by property name (so it can neither
//! replace the whole `properties` array nor race with a concurrent edit).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use proto::frame::{JSON_PATCH, MERGE_PATCH};
use proto::{CollectionKey, Frame, Kind, Op, ResourceKey, Response};
use serde_json::{Value, json};

use super::authz::{self, Facts, SERVICE_ACCOUNT_TOKEN};

/// How long one API call may take before it counts as transient.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a kind lives in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// API group ("" for core).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Resource (plural).
    pub plural: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

/// The kinds that travel on the link (key kind -> API resource).
pub fn kind_info(kind: &str) -> Option<KindInfo> {
    let (group, version, plural, namespaced) = match kind {
        "node" => ("", "v1", "nodes", false),
        "pod" => ("", "v1", "pods", true),
        "configmap" => ("", "v1", "configmaps", true),
        "secret" => ("", "v1", "secrets", true),
        "serviceaccount" => ("", "v1", "serviceaccounts", true),
        "event" => ("", "v1", "events", true),
        "lease" => ("coordination.k8s.io", "v1", "leases", true),
        "device" => ("devices.kubeedge.io", "v1beta1", "devices", true),
        "devicemodel" => ("devices.kubeedge.io", "v1beta1", "devicemodels", true),
        _ => return None,
    };
    Some(KindInfo {
        group,
        version,
        plural,
        namespaced,
    })
}

/// One planned HTTP call.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// HTTP method.
    pub method: Method,
    /// Path (and query) relative to the API server.
    pub path: String,
    /// Request content type, when there is a body.
    pub content_type: Option<String>,
    /// Request body.
    pub body: Bytes,
    /// For `list`: filter the items by what the node may read.
    pub filter: Option<CollectionKey>,
    /// For a Device desired-values merge patch: `(property, desired)` to
    /// turn into a JSON patch once the Device is read.
    pub desired: Option<Vec<(String, Value)>>,
}

/// The result of running a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send this RESPONSE and ack the frame.
    Final(Response, String),
    /// Do not ack; the edge will send the frame again. Carries the cause.
    Transient(String),
}

/// Whether a status ends the request (acked) or it should be retried.
pub fn is_final(status: u16) -> bool {
    !(status >= 500 || status == 408 || status == 429)
}

/// A final failure before the API was reached (bad path, bad body...).
pub fn refusal(code: u32, reason: &str, message: impl Into<String>) -> Outcome {
    let message = message.into();
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    Outcome::Final(
        Response {
            code,
            reason: reason.to_owned(),
            message,
            body: body.to_string().into_bytes(),
        },
        String::new(),
    )
}

/// Turns an authorised REQUEST / EVENT frame into an HTTP call.
pub fn plan(frame: &Frame) -> Result<Plan, String> {
    let op = frame.op().map_err(|e| e.to_string())?;
    let route = frame.route.clone().unwrap_or_default();
    if op == Op::List {
        let coll = CollectionKey::parse(&route.resource).map_err(|e| e.to_string())?;
        let info = kind_info(&coll.kind).ok_or_else(|| format!("unknown kind {:?}", coll.kind))?;
        if !info.namespaced && coll.namespace.is_some() {
            return Err(format!("{} is cluster-scoped", coll.kind));
        }
        return Ok(Plan {
            method: Method::GET,
            path: collection_path(&info, coll.namespace.as_deref()),
            content_type: None,
            body: Bytes::new(),
            filter: Some(coll),
            desired: None,
        });
    }
    let key = frame.key().map_err(|e| e.to_string())?;
    let body = Bytes::from(frame.payload.clone());
    if key.kind == SERVICE_ACCOUNT_TOKEN && op == Op::Create {
        let info = kind_info("serviceaccount").ok_or("serviceaccount")?;
        let ns = key
            .namespace
            .as_deref()
            .ok_or("a token request needs a namespace")?;
        let path = format!("{}/token", object_path(&info, Some(ns), &key.name));
        return Ok(simple(
            Method::POST,
            path,
            Some("application/json".into()),
            body,
        ));
    }
    let info = kind_info(&key.kind).ok_or_else(|| format!("unknown kind {:?}", key.kind))?;
    if info.namespaced != key.namespace.is_some() {
        return Err(format!(
            "{key}: {} is {}",
            key.kind,
            if info.namespaced {
                "namespaced"
            } else {
                "cluster-scoped"
            }
        ));
    }
    let ns = key.namespace.as_deref();
    let object = object_path(&info, ns, &key.name);
    let patch_type = match route.content_type.as_str() {
        "" => MERGE_PATCH.to_owned(),
        other => other.to_owned(),
    };
    let json_ct = Some("application/json".to_owned());
    Ok(match op {
        Op::Get => simple(Method::GET, object, None, body),
        Op::Create => simple(Method::POST, collection_path(&info, ns), json_ct, body),
        Op::Update => simple(Method::PUT, object, json_ct, body),
        Op::UpdateStatus => simple(Method::PUT, format!("{object}/status"), json_ct, body),
        Op::PatchStatus => simple(
            Method::PATCH,
            format!("{object}/status"),
            Some(patch_type),
            body,
        ),
        Op::Delete => {
            let ct = (!body.is_empty()).then(|| "application/json".to_owned());
            simple(Method::DELETE, object, ct, body)
        }
        Op::Patch
            if key.kind == "device"
                && patch_type != JSON_PATCH
                && frame.kind == Kind::Request as i32 =>
        {
            let value: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let mut p = simple(
                Method::PATCH,
                object,
                Some(JSON_PATCH.to_owned()),
                Bytes::new(),
            );
            p.desired = Some(authz::desired_entries(&value)?);
            p
        }
        Op::Patch => simple(Method::PATCH, object, Some(patch_type), body),
        Op::Upsert | Op::List => return Err(format!("{op} is not an API request")),
    })
}

fn simple(method: Method, path: String, content_type: Option<String>, body: Bytes) -> Plan {
    Plan {
        method,
        path,
        content_type,
        body,
        filter: None,
        desired: None,
    }
}

fn api_base(info: &KindInfo) -> String {
    if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    }
}

/// `/api/v1/namespaces/<ns>/pods`, or all namespaces when `ns` is None.
pub fn collection_path(info: &KindInfo, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if info.namespaced => {
            format!(
                "{}/namespaces/{}/{}",
                api_base(info),
                escape(ns),
                info.plural
            )
        }
        _ => format!("{}/{}", api_base(info), info.plural),
    }
}

/// `/api/v1/namespaces/<ns>/pods/<name>`.
pub fn object_path(info: &KindInfo, ns: Option<&str>, name: &str) -> String {
    format!("{}/{}", collection_path(info, ns), escape(name))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs an authorised frame against the API on behalf of `node`.
pub async fn execute(
    client: &kube::Client,
    facts: Arc<dyn Facts + Send + Sync>,
    node: &str,
    frame: &Frame,
) -> Outcome {
    let mut plan = match plan(frame) {
        Ok(p) => p,
        Err(message) => return refusal(400, "BadRequest", message),
    };
    if frame.key().is_ok_and(|k| k.kind == "lease")
        && let Some(body) = restamp_lease(&plan.body, &crate::lifecycle::now_micro())
    {
        plan.body = body;
    }
    if let Some(desired) = plan.desired.take() {
        let current = match call(client, Method::GET, &plan.path, None, Bytes::new()).await {
            Ok((200, body)) => body,
            Ok((status, body)) => return to_outcome(status, body),
            Err(e) => return Outcome::Transient(e),
        };
        match desired_json_patch(&current, &desired) {
            Ok(body) => plan.body = body,
            Err(message) => return refusal(422, "Invalid", message),
        }
    }
    let filter = plan.filter.take();
    match call(
        client,
        plan.method,
        &plan.path,
        plan.content_type.as_deref(),
        plan.body,
    )
    .await
    {
        Ok((status, body)) => match filter {
            Some(coll) if (200..300).contains(&status) => {
                match filter_list(&body, &coll, |k| facts.node_may_read(node, k)) {
                    Ok(body) => to_outcome(status, body),
                    Err(message) => Outcome::Transient(message),
                }
            }
            _ => to_outcome(status, body),
        },
        Err(e) => Outcome::Transient(e),
    }
}

/// An edge's Lease renewal carries the edge's clock and may have waited in
/// its outbox while it was offline; replayed as is, it could set `renewTime`
/// into the past (or, with a skewed edge clock, anywhere) and make the node
/// look dead to the node-lifecycle controller right after it reconnected.
/// The renewal is running over a live session, so the node is alive now:
/// `spec.renewTime` is set to the cloud's clock. Returns the new body, or
/// `None` when the body renews nothing (or is not a JSON object).
pub fn restamp_lease(body: &[u8], now: &str) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let renew = v.get_mut("spec")?.get_mut("renewTime")?;
    if renew.is_null() {
        return None;
    }
    *renew = Value::String(now.to_owned());
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

async fn call(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<(u16, Bytes), String> {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    let req = req
        .header(http::header::ACCEPT, "application/json")
        .body(kube::client::Body::from(body))
        .map_err(|e| format!("building the request: {e}"))?;
    let run = async {
        let res = client
            .send(req)
            .await
            .map_err(|e| format!("API call failed: {e}"))?;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the API response: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(CALL_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(format!("API call timed out after {CALL_TIMEOUT:?}")))
}

/// Maps an API answer to an outcome (see [`is_final`]).
pub fn to_outcome(status: u16, body: Bytes) -> Outcome {
    if !is_final(status) {
        return Outcome::Transient(format!("API answered {status}"));
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let text = |f: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(f))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let ok = (200..300).contains(&status);
    let rv = parsed
        .as_ref()
        .and_then(|v| v.pointer("/metadata/resourceVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (reason, message) = if ok {
        (String::new(), String::new())
    } else {
        let reason = text("reason");
        let reason = if reason.is_empty() {
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Unknown")
                .replace(' ', "")
        } else {
            reason
        };
        let message = text("message");
        let message = if message.is_empty() && parsed.is_none() {
            String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()
        } else {
            message
        };
        (reason, message)
    };
    Outcome::Final(
        Response {
            code: u32::from(status),
            reason,
            message,
            body: body.to_vec(),
        },
        rv,
    )
}

/// Keeps the items of a list the node may read.
pub fn filter_list(
    body: &[u8],
    coll: &CollectionKey,
    may_read: impl Fn(&ResourceKey) -> bool,
) -> Result<Bytes, String> {
    let mut list: Value =
        serde_json::from_slice(body).map_err(|e| format!("list response is not JSON: {e}"))?;
    if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
        items.retain(|item| {
            let meta = item.get("metadata");
            let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
            let key = ResourceKey::new(
                field("namespace").filter(|n| !n.is_empty()),
                &coll.kind,
                field("name").unwrap_or_default(),
            );
            key.is_ok_and(|k| may_read(&k))
        });
    }
    serde_json::to_vec(&list)
        .map(Bytes::from)
        .map_err(|e| format!("encoding the filtered list: {e}"))
}

/// A JSON patch setting `desired` of the named properties of `device`
/// (the Device's current JSON), each guarded by a `test` of its name.
pub fn desired_json_patch(device: &[u8], desired: &[(String, Value)]) -> Result<Bytes, String> {
    let device: Value =
        serde_json::from_slice(device).map_err(|e| format!("Device is not JSON: {e}"))?;
    let props = device
        .pointer("/spec/properties")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut ops = Vec::new();
    for (name, value) in desired {
        let index = props
            .iter()
            .position(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| format!("the Device has no property {name:?}"))?;
        let base = format!("/spec/properties/{index}");
        ops.push(json!({"op": "test", "path": format!("{base}/name"), "value": name}));
        if value.is_null() {
            if props[index].get("desired").is_some() {
                ops.push(json!({"op": "remove", "path": format!("{base}/desired")}));
            }
        } else {
            ops.push(json!({"op": "add", "path": format!("{base}/desired"), "value": value}));
        }
    }
    serde_json::to_vec(&ops)
        .map(Bytes::from)
        .map_err(|e| format!("encoding the patch: {e}"))
}

#[cfg(test)]
mod tests;
