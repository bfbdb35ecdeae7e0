//! What Kubernetes' admission plugins and built-in controllers would do, for the kinds whose
//! life has rules: namespaces (lifecycle, cascading delete), pods (defaults, immutable spec,
//! graceful deletion confirmed by the node), services (defaults), CRDs (validation,
//! registration, status) and custom resources (status subresource).
//!
//! `on_create`/`on_update` run inside the store's read-modify-write and must do no IO;
//! `after_write` runs after the write is durable and may write again.
//!
//! Pods also go through Kubernetes' `DefaultTolerationSeconds` ([`tolerations`]) and, when
//! [`AdmissionConfig::edge_autonomy`] is set (cloudcore standalone), kedge's edge autonomy
//! ([`autonomy`]), in that order, as kube-apiserver runs its plugins before webhooks.

pub mod autonomy;
mod plugins;
pub mod tolerations;

pub use plugins::AdmissionConfig;
use plugins::{admit_pod_tolerations, pod_node_labels};

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::api::Api;
use crate::auth::UserInfo;
use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};
use crate::store::{Event, EventType, Outcome};

fn is(res: &Resource, group: &str, plural: &str) -> bool {
    res.group == group && res.plural == plural
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    v.get_mut(key).and_then(Value::as_object_mut)
}

/// Refuse content in a namespace that does not exist or is being deleted.
pub fn check_namespace_open(api: &Api, ns: &str) -> ApiResult<()> {
    match api.store.get(&format!("core/namespaces//{ns}")) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if n.value().pointer("/metadata/deletionTimestamp").is_some() => {
            Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )))
        }
        Some(_) => Ok(()),
    }
}

/// Defaults and checks on create.
pub fn on_create(api: &Api, res: &Resource, obj: &mut Value, _user: &UserInfo) -> ApiResult<()> {
    if is(res, "", "namespaces") {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(labels) = obj.get_mut("metadata").and_then(|m| obj_mut(m, "labels")) {
            labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
        }
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
    } else if is(res, "", "pods") {
        crate::serviceaccount::admit_pod(api, obj)?;
        pod_defaults(obj);
        let labels = pod_node_labels(api, obj);
        admit_pod_tolerations(api, obj, labels.as_ref());
        obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(obj)});
    } else if is(res, "", "services") {
        service_defaults(api, obj);
    } else if is(res, "apiextensions.k8s.io", "customresourcedefinitions") {
        crate::crd::validate(obj)?;
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    } else if res.is_custom()
        && res.has_status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    Ok(())
}

/// Checks on update (after system fields were carried over).
pub fn on_update(
    api: &Api,
    res: &Resource,
    old: &Value,
    new: &mut Value,
    sub: Option<&str>,
    _user: &UserInfo,
) -> ApiResult<()> {
    if is(res, "", "pods") && sub.is_none() {
        // Under the store's lock: no node lookup, so only the pod's own selectors make it
        // an edge pod here. A pod bound at creation was decided then (its untimed
        // tolerations satisfy both plugins now); standalone serves no pods/binding.
        admit_pod_tolerations(api, new, None);
        check_pod_spec_update(old, new)?;
    }
    if is(res, "apiextensions.k8s.io", "customresourcedefinitions") && sub.is_none() {
        crate::crd::validate(new)?;
        if old.pointer("/spec/group") != new.pointer("/spec/group")
            || old.pointer("/spec/names/plural") != new.pointer("/spec/names/plural")
        {
            return Err(ApiError::invalid(
                "CustomResourceDefinition",
                new.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                vec![
                    json!({"reason":"FieldValueInvalid","field":"spec","message":"Invalid value: field is immutable"}),
                ],
                "apiextensions.k8s.io",
            ));
        }
    }
    if is(res, "", "namespaces") && sub.is_none() {
        // The namespace's finalizers and phase belong to the lifecycle, not to clients.
        if let Some(spec) = old.get("spec") {
            new["spec"] = spec.clone();
        }
    }
    Ok(())
}

fn qos_class(pod: &Value) -> &'static str {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    let mut any = false;
    let mut all_guaranteed = true;
    for c in containers.into_iter().flatten() {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        let guaranteed = ["cpu", "memory"].iter().all(|k| {
            let l = lim.and_then(|l| l.get(*k));
            let r = req.and_then(|r| r.get(*k)).or(l);
            l.is_some() && l == r
        });
        all_guaranteed &= guaranteed;
    }
    match (any, all_guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn pod_defaults(pod: &mut Value) {
    let Some(spec) = obj_mut(pod, "spec") else {
        return;
    };
    let defaults = [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
        ("priority", json!(0)),
    ];
    for (k, v) in defaults {
        spec.entry(k).or_insert(v);
    }
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        spec.entry("serviceAccount").or_insert(sa);
    }
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let tag_latest = !image.contains('@')
                    && image
                        .rsplit('/')
                        .next()
                        .is_some_and(|last| !last.contains(':') || last.ends_with(":latest"));
                c.entry("imagePullPolicy").or_insert(json!(if tag_latest {
                    "Always"
                } else {
                    "IfNotPresent"
                }));
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Pod spec fields Kubernetes lets an update change.
fn check_pod_spec_update(old: &Value, new: &Value) -> ApiResult<()> {
    let norm = |v: &Value| -> Value {
        let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(m) = spec.as_object_mut() {
            m.remove("activeDeadlineSeconds");
            m.remove("tolerations");
            m.remove("terminationGracePeriodSeconds");
            m.remove("schedulingGates");
            for list in ["initContainers", "containers"] {
                if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
        }
        spec
    };
    let old_n = norm(old);
    let mut new_n = norm(new);
    // An unbound pod may be bound by setting nodeName once.
    if old.pointer("/spec/nodeName").is_none()
        && let Some(m) = new_n.as_object_mut()
    {
        m.remove("nodeName");
    }
    let mut old_cmp = old_n.clone();
    if old.pointer("/spec/nodeName").is_none()
        && let Some(m) = old_cmp.as_object_mut()
    {
        m.remove("nodeName");
    }
    if old_cmp != new_n {
        let name = new
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(ApiError::invalid(
            "Pod",
            name,
            vec![
                json!({"reason":"FieldValueForbidden","field":"spec","message":"Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"}),
            ],
            "",
        ));
    }
    Ok(())
}

fn service_defaults(api: &Api, svc: &mut Value) {
    let Some(spec) = obj_mut(svc, "spec") else {
        return;
    };
    spec.entry("type").or_insert(json!("ClusterIP"));
    spec.entry("sessionAffinity").or_insert(json!("None"));
    if !spec.contains_key("clusterIP") {
        // A stand-in address from 10.96.0.0/16: standalone runs no service proxy.
        let n = api.store.current_rv() % 65_000 + 10;
        let ip = format!("10.96.{}.{}", n / 256, n % 256);
        spec.insert("clusterIP".into(), json!(ip.clone()));
        spec.insert("clusterIPs".into(), json!([ip]));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                p.entry("targetPort").or_insert(port);
            }
        }
    }
}

fn pod_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn pod_bound(pod: &Value) -> bool {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
}

/// The grace period of a graceful deletion, or `None` when the object goes at once.
/// Only pods bound to a node that are still running are deleted gracefully: they stay
/// Terminating until the node confirms with grace 0.
pub fn graceful_period(res: &Resource, obj: &Value, requested: Option<i64>) -> Option<i64> {
    if !is(res, "", "pods") || !pod_bound(obj) || pod_terminal(obj) {
        return None;
    }
    let grace = requested.unwrap_or_else(|| {
        obj.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    (grace > 0).then_some(grace)
}

/// True when an object being deleted must wait for someone else (its node) to confirm.
pub fn waits_for_confirmation(res: &Resource, obj: &Value) -> bool {
    is(res, "", "pods") && pod_bound(obj) && !pod_terminal(obj)
}

/// Kinds whose deletion is finished by a background task (their contents go first).
pub fn deletes_in_background(res: &Resource) -> bool {
    is(res, "", "namespaces") || is(res, "apiextensions.k8s.io", "customresourcedefinitions")
}

/// Mark an object whose background deletion starts.
pub fn on_delete_marked(res: &Resource, obj: &mut Value) {
    if is(res, "", "namespaces") {
        obj["status"] = json!({"phase": "Terminating"});
    }
}

/// DELETE answers with the object (not a Status) for these kinds, as Kubernetes does.
pub fn returns_deleted_object(res: &Resource) -> bool {
    is(res, "", "pods")
        || is(res, "", "namespaces")
        || res.is_custom()
        || is(res, "apiextensions.k8s.io", "customresourcedefinitions")
}

/// Follow-ups of a durable write.
pub async fn after_write(api: &Arc<Api>, res: &Resource, ev: &Event) {
    if res.group.is_empty() {
        crate::serviceaccount::after_write(api, &res.plural, ev).await;
    }
    if is(res, "apiextensions.k8s.io", "customresourcedefinitions") {
        crd_changed(api, ev).await;
    } else if is(res, "", "namespaces")
        && ev.kind != EventType::Deleted
        && ev
            .obj
            .value()
            .pointer("/metadata/deletionTimestamp")
            .is_some()
        && ev
            .prev
            .as_ref()
            .is_none_or(|p| p.value().pointer("/metadata/deletionTimestamp").is_none())
    {
        let name = ev
            .obj
            .fields()
            .field("metadata.name")
            .unwrap_or("")
            .to_string();
        let api = api.clone();
        tokio::spawn(async move { delete_namespace_contents(&api, &name).await });
    }
}

/// Register (or unregister) a CRD's resources and write its status.
pub async fn crd_changed(api: &Arc<Api>, ev: &Event) {
    let crd: &Value = &ev.obj.value();
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if ev.kind == EventType::Deleted {
        api.registry.unregister_crd(&name);
        api.invalidate_openapi();
        return;
    }
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        let api = api.clone();
        let crd = crd.clone();
        tokio::spawn(async move { delete_crd_contents(&api, &crd).await });
        return;
    }
    register_crd(api, crd);
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let taken = api.registry.names_taken(group, &name);
    let conflict = crate::crd::name_conflict(&taken, crd);
    let status = crate::crd::status(crd, conflict.as_deref());
    if crd.get("status") == Some(&status) {
        return;
    }
    let key = format!("apiextensions.k8s.io/customresourcedefinitions//{name}");
    let res = api.store.mutate(&key, |cur, _| {
        let Some(cur) = cur else {
            return Ok(Outcome::Unchanged);
        };
        let mut v = cur.value();
        let st = crate::crd::status(&v, conflict.as_deref());
        if v.get("status") == Some(&st) {
            return Ok(Outcome::Unchanged);
        }
        v["status"] = st;
        Ok(Outcome::Put(v))
    });
    if let Ok(Some(ev)) = res {
        let _ = api.store.durable(ev.rv).await;
    }
}

/// Serve a stored CRD's resources (at start-up and after each change).
pub fn register_crd(api: &Api, crd: &Value) {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    api.registry.register_crd(name, crate::crd::resources(crd));
    api.invalidate_openapi();
}

async fn delete_crd_contents(api: &Arc<Api>, crd: &Value) {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    let prefix = format!("{group}/{plural}/");
    delete_prefix(api, &prefix).await;
    api.registry.unregister_crd(&name);
    api.invalidate_openapi();
    let key = format!("apiextensions.k8s.io/customresourcedefinitions//{name}");
    if let Ok(Some(ev)) = api.store.mutate(&key, |cur, _| {
        Ok(if cur.is_some() {
            Outcome::Delete
        } else {
            Outcome::Unchanged
        })
    }) {
        let _ = api.store.durable(ev.rv).await;
    }
}

async fn delete_prefix(api: &Arc<Api>, prefix: &str) {
    let mut last = 0;
    for key in api.store.keys(prefix) {
        if let Ok(Some(ev)) = api.store.mutate(&key, |cur, _| {
            Ok(if cur.is_some() {
                Outcome::Delete
            } else {
                Outcome::Unchanged
            })
        }) {
            last = ev.rv;
        }
    }
    if last > 0 {
        let _ = api.store.durable(last).await;
    }
}

/// The namespace controller: delete everything in a Terminating namespace, then it.
pub async fn delete_namespace_contents(api: &Arc<Api>, ns: &str) {
    let mut prefixes: Vec<String> = api
        .registry
        .all()
        .iter()
        .filter(|r| r.namespaced)
        .map(|r| format!("{}{ns}/", r.prefix()))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    for p in prefixes {
        delete_prefix(api, &p).await;
    }
    let key = format!("core/namespaces//{ns}");
    if let Ok(Some(ev)) = api.store.mutate(&key, |cur, _| {
        Ok(if cur.is_some() {
            Outcome::Delete
        } else {
            Outcome::Unchanged
        })
    }) {
        let _ = api.store.durable(ev.rv).await;
    }
}
