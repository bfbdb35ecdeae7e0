//! Node authorisation of edge -> cloud frames, decided before anything
//! touches the API. [`authorize`] is a pure function of the node name (from
//! its certificate), the frame and a few [`Facts`] from the watch caches.
//!
//! A node may exactly:
//! - **read** (`get`): what [`Facts::node_may_read`] allows — its own Node,
//!   the pods bound to it, the ConfigMaps / Secrets / ServiceAccounts those
//!   pods reference, its Devices and their DeviceModels — plus its own Lease;
//!   **list** the collections of those kinds (the hub filters the items
//!   through `node_may_read` afterwards, see `upstream`);
//! - request a **ServiceAccount token** (`create` on
//!   `<ns>/serviceaccounttoken/<serviceaccount>`) for a ServiceAccount it may read;
//! - write its own **Node status** (`patch_status` / `update_status` on
//!   `null/node/<self>`);
//! - create / update / patch its own **Lease** (`kube-node-lease/lease/<self>`);
//! - write the **status of its pods** (`patch_status` / `update_status`);
//! - **confirm the deletion** of its pods (`delete` whose DeleteOptions say
//!   `gracePeriodSeconds: 0`);
//! - create / update / patch **Events** whose `involvedObject` is its Node,
//!   one of its pods or one of its Devices (a patch must name the
//!   `involvedObject` too, since the hub does not read the stored Event);
//! - **patch the status of its Devices** (`patch_status`), and patch a
//!   Device's **desired values** only: a JSON patch touching nothing but
//!   `/spec/properties/<i>/desired`, or a merge patch
//!   `{"spec":{"properties":[{"name":..,"desired":..}]}}` (applied per
//!   property name by `upstream`).
//!
//! Everything else is refused: 403 `Forbidden`, counted as
//! `forbidden_<op>`; a body that cannot be checked is 400 `BadRequest`.

use proto::{CollectionKey, Frame, Kind, Op, ResourceKey};
use serde_json::Value;

/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Key kind of a ServiceAccount token request (`TokenRequest` on the
/// `token` subresource of the named ServiceAccount).
pub const SERVICE_ACCOUNT_TOKEN: &str = "serviceaccounttoken";

/// Kinds a node may `list` (items are filtered afterwards).
const LISTABLE: [&str; 7] = [
    "node",
    "pod",
    "configmap",
    "secret",
    "serviceaccount",
    "device",
    "devicemodel",
];

/// What the authoriser needs to know about the cluster (the edge cache
/// implements it; tests use a fake).
pub trait Facts {
    /// Whether `node` may read the object at `key`.
    fn node_may_read(&self, node: &str, key: &ResourceKey) -> bool;
    /// `spec.nodeName` of a pod, if the pod is known.
    fn pod_node(&self, namespace: &str, name: &str) -> Option<String>;
    /// The node a Device is bound to, if the Device is known.
    fn device_node(&self, namespace: &str, name: &str) -> Option<String>;
}

/// Why a frame was refused; becomes the RESPONSE (or ERROR) the edge gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP-style code: 403 or 400.
    pub code: u32,
    /// Kubernetes Status reason: `Forbidden` or `BadRequest`.
    pub reason: &'static str,
    /// Metrics label (`forbidden_<op>`, `bad_request`).
    pub metric: String,
    /// Human-readable detail.
    pub message: String,
}

impl Refusal {
    fn forbidden(node: &str, op: Op, resource: &str, why: &str) -> Self {
        Refusal {
            code: 403,
            reason: "Forbidden",
            metric: format!("forbidden_{}", op.as_str()),
            message: format!("node {node:?} may not {op} {resource}: {why}"),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Refusal {
            code: 400,
            reason: "BadRequest",
            metric: "bad_request".to_owned(),
            message: message.into(),
        }
    }
}

/// Decides whether `node` may have `frame` (a REQUEST or EVENT) executed.
pub fn authorize(node: &str, frame: &Frame, facts: &dyn Facts) -> Result<(), Refusal> {
    let kind = frame
        .checked_kind()
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    if !matches!(kind, Kind::Request | Kind::Event) {
        return Err(Refusal::bad_request(format!(
            "{} frames are not API requests",
            kind.label()
        )));
    }
    let op = frame
        .op()
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    let resource = frame
        .route
        .as_ref()
        .map(|r| r.resource.as_str())
        .unwrap_or_default();
    let deny = |why: &str| Err(Refusal::forbidden(node, op, resource, why));
    if op == Op::List {
        let collection =
            CollectionKey::parse(resource).map_err(|e| Refusal::bad_request(e.to_string()))?;
        if LISTABLE.contains(&collection.kind.as_str()) {
            return Ok(());
        }
        return deny("not a kind nodes may list");
    }
    let key = frame
        .key()
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    let ns = key.namespace.as_deref().unwrap_or_default();
    let own_lease = key.kind == "lease" && ns == LEASE_NAMESPACE && key.name == node;
    let own_node = key.kind == "node" && key.is_cluster_scoped() && key.name == node;

    if kind == Kind::Event {
        if key.kind != "event" {
            return deny("EVENT frames carry Events only");
        }
        return event(node, op, &key, frame, facts).or_else(|why| deny(&why));
    }

    match (op, key.kind.as_str()) {
        (Op::Get, _) if own_lease || own_node || facts.node_may_read(node, &key) => Ok(()),
        (Op::Get, _) => deny("not an object of this node"),
        (Op::Create, SERVICE_ACCOUNT_TOKEN) => {
            let sa = ResourceKey::namespaced(ns, "serviceaccount", key.name.clone())
                .map_err(|e| Refusal::bad_request(e.to_string()))?;
            if !facts.node_may_read(node, &sa) {
                return deny("no pod of this node uses that ServiceAccount");
            }
            // As Kubernetes' NodeRestriction: a node's tokens are bound to its own pods,
            // so they die with the pod.
            let body = parse(&frame.payload)?;
            let bound = body.pointer("/spec/boundObjectRef");
            let kind = bound.and_then(|b| b.get("kind")).and_then(Value::as_str);
            let pod = bound.and_then(|b| b.get("name")).and_then(Value::as_str);
            match (kind, pod) {
                (Some("Pod"), Some(pod)) if is_mine(facts.pod_node(ns, pod), node) => Ok(()),
                (Some("Pod"), Some(_)) => deny("the token is bound to a pod of another node"),
                _ => deny("a node's tokens must be bound to one of its pods"),
            }
        }
        (Op::Create | Op::Update, "lease") | (Op::Patch, "lease") if own_lease => {
            if matches!(op, Op::Create | Op::Update) {
                body_names_key(&key, &frame.payload)?;
            }
            Ok(())
        }
        (Op::UpdateStatus | Op::PatchStatus, "node") if own_node => {
            if op == Op::UpdateStatus {
                body_names_key(&key, &frame.payload)?;
            }
            Ok(())
        }
        (Op::UpdateStatus | Op::PatchStatus, "pod")
            if is_mine(facts.pod_node(ns, &key.name), node) =>
        {
            if op == Op::UpdateStatus {
                body_names_key(&key, &frame.payload)?;
            }
            Ok(())
        }
        (Op::Delete, "pod") if is_mine(facts.pod_node(ns, &key.name), node) => {
            if grace_zero(&frame.payload)? {
                Ok(())
            } else {
                deny("pods are only deleted to confirm termination (gracePeriodSeconds 0)")
            }
        }
        (Op::PatchStatus, "device") if is_mine(facts.device_node(ns, &key.name), node) => Ok(()),
        (Op::Patch, "device") if is_mine(facts.device_node(ns, &key.name), node) => {
            let content_type = frame.route.as_ref().map(|r| r.content_type.as_str());
            desired_only(content_type.unwrap_or_default(), &frame.payload).or_else(|why| deny(&why))
        }
        (Op::Create | Op::Update | Op::Patch, "event") => {
            event(node, op, &key, frame, facts).or_else(|why| deny(&why))
        }
        _ => deny("not permitted for nodes"),
    }
}

fn is_mine(owner: Option<String>, node: &str) -> bool {
    owner.as_deref() == Some(node)
}

fn parse(payload: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(payload)
        .map_err(|e| Refusal::bad_request(format!("body is not JSON: {e}")))
}

/// The body's `metadata.name` / `metadata.namespace` must match the key
/// (a create goes to the collection, so the body decides what is written).
fn body_names_key(key: &ResourceKey, payload: &[u8]) -> Result<(), Refusal> {
    let body = parse(payload)?;
    let meta = body.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
    if name != Some(key.name.as_str()) {
        return Err(Refusal::bad_request(format!(
            "metadata.name {name:?} does not match {key}"
        )));
    }
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    if ns.is_some_and(|ns| !ns.is_empty() && Some(ns) != key.namespace.as_deref()) {
        return Err(Refusal::bad_request(format!(
            "metadata.namespace {ns:?} does not match {key}"
        )));
    }
    Ok(())
}

/// Whether DeleteOptions say `gracePeriodSeconds: 0`.
fn grace_zero(payload: &[u8]) -> Result<bool, Refusal> {
    if payload.is_empty() {
        return Ok(false);
    }
    let body = parse(payload)?;
    Ok(body.get("gracePeriodSeconds").and_then(Value::as_i64) == Some(0))
}

/// An Event (create / update / patch) about one of the node's objects.
fn event(
    node: &str,
    op: Op,
    key: &ResourceKey,
    frame: &Frame,
    facts: &dyn Facts,
) -> Result<(), String> {
    let body: Value =
        serde_json::from_slice(&frame.payload).map_err(|e| format!("body is not JSON: {e}"))?;
    if op != Op::Patch {
        body_names_key(key, &frame.payload).map_err(|r| r.message)?;
    }
    let involved = body
        .get("involvedObject")
        .ok_or("the Event names no involvedObject")?;
    let field = |f: &str| involved.get(f).and_then(Value::as_str).unwrap_or_default();
    let (kind, name, ns) = (field("kind"), field("name"), field("namespace"));
    let event_ns = key.namespace.as_deref().unwrap_or_default();
    let mine = match kind {
        "Node" => name == node,
        "Pod" => ns == event_ns && is_mine(facts.pod_node(ns, name), node),
        "Device" => ns == event_ns && is_mine(facts.device_node(ns, name), node),
        _ => false,
    };
    if mine {
        Ok(())
    } else {
        Err(format!(
            "the Event is not about an object of this node ({kind} {ns}/{name})"
        ))
    }
}

/// A Device patch that changes nothing but `spec.properties[*].desired`.
fn desired_only(content_type: &str, payload: &[u8]) -> Result<(), String> {
    let body: Value =
        serde_json::from_slice(payload).map_err(|e| format!("body is not JSON: {e}"))?;
    if content_type == proto::frame::JSON_PATCH {
        let ops = body.as_array().ok_or("a JSON patch is an array")?;
        for op in ops {
            let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
            let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
            let ok = match kind {
                "add" | "replace" | "remove" => is_desired_path(path),
                "test" => is_desired_path(path) || is_property_name_path(path),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "patch op {kind:?} on {path:?} is not a desired value"
                ));
            }
        }
        return Ok(());
    }
    desired_entries(&body).map(drop)
}

/// The `(name, desired)` pairs of a merge patch shaped
/// `{"spec":{"properties":[{"name":..,"desired":..}, ..]}}`.
pub fn desired_entries(body: &Value) -> Result<Vec<(String, Value)>, String> {
    const SHAPE: &str =
        r#"a Device patch must be {"spec":{"properties":[{"name":..,"desired":..}]}}"#;
    let obj = body.as_object().ok_or(SHAPE)?;
    let spec = match (obj.len(), obj.get("spec")) {
        (1, Some(Value::Object(spec))) => spec,
        _ => return Err(SHAPE.into()),
    };
    let props = match (spec.len(), spec.get("properties")) {
        (1, Some(Value::Array(props))) => props,
        _ => return Err(SHAPE.into()),
    };
    let mut out = Vec::with_capacity(props.len());
    for prop in props {
        let prop = prop.as_object().ok_or(SHAPE)?;
        let name = prop.get("name").and_then(Value::as_str).ok_or(SHAPE)?;
        if prop.keys().any(|k| k != "name" && k != "desired") {
            return Err(format!("property {name:?}: only `desired` may change"));
        }
        out.push((
            name.to_owned(),
            prop.get("desired").cloned().unwrap_or(Value::Null),
        ));
    }
    Ok(out)
}

/// `/spec/properties/<i>/desired` or below it.
fn is_desired_path(path: &str) -> bool {
    property_rest(path).is_some_and(|rest| rest == "desired" || rest.starts_with("desired/"))
}

/// `/spec/properties/<i>/name`.
fn is_property_name_path(path: &str) -> bool {
    property_rest(path) == Some("name")
}

/// The part after `/spec/properties/<i>/`.
fn property_rest(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/spec/properties/")?;
    let (index, rest) = rest.split_once('/')?;
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

#[cfg(test)]
mod tests;
