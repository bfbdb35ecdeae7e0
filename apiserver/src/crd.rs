//! CustomResourceDefinitions: checking a CRD, turning it into served resources, and the
//! status Kubernetes' establishing controller writes (`NamesAccepted`, `Established`).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::registry::{CustomVersion, Origin, Resource};
use crate::status::{ApiError, ApiResult};
use crate::table::PrinterColumn;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn field_err(field: &str, message: String) -> Value {
    json!({"reason": "FieldValueInvalid", "field": field, "message": message})
}

/// Validate a CRD object (create and update).
pub fn validate(crd: &Value) -> ApiResult<()> {
    let name = s(crd, "/metadata/name");
    let group = s(crd, "/spec/group");
    let plural = s(crd, "/spec/names/plural");
    let mut causes = Vec::new();
    if group.is_empty() || !group.contains('.') {
        causes.push(field_err(
            "spec.group",
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        ));
    }
    if plural.is_empty() || !crate::validation::is_dns1123_label(plural).is_empty() {
        causes.push(field_err(
            "spec.names.plural",
            format!("Invalid value: \"{plural}\": a lowercase RFC 1123 label is required"),
        ));
    }
    if s(crd, "/spec/names/kind").is_empty() {
        causes.push(json!({"reason":"FieldValueRequired","field":"spec.names.kind","message":"Required value"}));
    }
    if name != format!("{plural}.{group}") {
        causes.push(field_err(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    match s(crd, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        other => causes.push(json!({"reason":"FieldValueNotSupported","field":"spec.scope","message":format!("Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\"")})),
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(json!({"reason":"FieldValueRequired","field":"spec.versions","message":"Required value: must have exactly one version marked as storage version"}));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        causes.push(field_err(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
            for problem in crate::schema::check_structural(schema) {
                causes.push(field_err(
                    &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    problem,
                ));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "CustomResourceDefinition",
            name,
            causes,
            "apiextensions.k8s.io",
        ))
    }
}

/// The resources a CRD serves (one per served version).
pub fn resources(crd: &Value) -> Vec<Resource> {
    let name = s(crd, "/metadata/name").to_string();
    let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let kind = s(&names, "/kind").to_string();
    let strs = |ptr: &str| -> Vec<String> {
        names
            .pointer(ptr)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let singular = match s(&names, "/singular") {
        "" => kind.to_lowercase(),
        x => x.to_string(),
    };
    let list_kind = match s(&names, "/listKind") {
        "" => format!("{kind}List"),
        x => x.to_string(),
    };
    let mut out = Vec::new();
    for v in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let printer_columns: Vec<PrinterColumn> = v
            .get("additionalPrinterColumns")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        let selectable_fields = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        let cv = CustomVersion {
            crd_name: name.clone(),
            schema: v
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or_else(
                    || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                ),
            printer_columns,
            selectable_fields,
            storage: v.get("storage").and_then(Value::as_bool) == Some(true),
        };
        out.push(Resource {
            group: s(crd, "/spec/group").to_string(),
            version: s(v, "/name").to_string(),
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            plural: s(&names, "/plural").to_string(),
            singular: singular.clone(),
            namespaced: s(crd, "/spec/scope") == "Namespaced",
            short_names: strs("/shortNames"),
            categories: strs("/categories"),
            has_status: v.pointer("/subresources/status").is_some(),
            origin: Origin::Custom(Arc::new(cv)),
        });
    }
    out
}

/// The status the establishing controller writes. `conflict` names a taken name, if any.
pub fn status(crd: &Value, conflict: Option<&str>) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = names.clone();
    if accepted.get("singular").is_none() {
        accepted["singular"] = json!(s(&names, "/kind").to_lowercase());
    }
    if accepted.get("listKind").is_none() {
        accepted["listKind"] = json!(format!("{}List", s(&names, "/kind")));
    }
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let old = crd.pointer("/status/conditions").and_then(Value::as_array);
    let since = |t: &str, st: &str| -> String {
        old.into_iter()
            .flatten()
            .find(|c| s(c, "/type") == t && s(c, "/status") == st)
            .and_then(|c| c.get("lastTransitionTime").and_then(Value::as_str))
            .unwrap_or(&now)
            .to_string()
    };
    let (na, est) = match conflict {
        None => (
            json!({"type":"NamesAccepted","status":"True","reason":"NoConflicts","message":"no conflicts found","lastTransitionTime": since("NamesAccepted","True")}),
            json!({"type":"Established","status":"True","reason":"InitialNamesAccepted","message":"the initial names have been accepted","lastTransitionTime": since("Established","True")}),
        ),
        Some(name) => (
            json!({"type":"NamesAccepted","status":"False","reason":"NameConflict","message":format!("\"{name}\" is already in use"),"lastTransitionTime": since("NamesAccepted","False")}),
            json!({"type":"Established","status":"False","reason":"NotAccepted","message":"not all names are accepted","lastTransitionTime": since("Established","False")}),
        ),
    };
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for v in storage {
        if !stored.contains(&v) {
            stored.push(v);
        }
    }
    json!({
        "conditions": [na, est],
        "acceptedNames": if conflict.is_none() { accepted } else { json!({"plural":"","kind":""}) },
        "storedVersions": stored,
    })
}

/// The first of the CRD's names another resource of its group already uses.
pub fn name_conflict(taken: &[String], crd: &Value) -> Option<String> {
    let names = crd.pointer("/spec/names")?;
    let mut mine = vec![
        s(names, "/plural").to_string(),
        s(names, "/kind").to_string(),
    ];
    if let Some(x) = names.get("singular").and_then(Value::as_str) {
        mine.push(x.to_string());
    }
    if let Some(a) = names.get("shortNames").and_then(Value::as_array) {
        mine.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)));
    }
    mine.into_iter()
        .find(|n| !n.is_empty() && taken.contains(n))
}
