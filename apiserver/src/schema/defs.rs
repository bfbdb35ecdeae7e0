//! The built-in definitions map: generated from k8s-openapi, normalised, annotated.
//!
//! k8s-openapi's schemars impls already use Kubernetes' definition names, so one
//! OpenAPI-3-style generator over every built-in kind yields the map. Then:
//! - free-form types (`RawExtension`, `FieldsV1`, apiextensions `JSON`) get
//!   `x-kubernetes-preserve-unknown-fields` (k8s-openapi says only `type: object`, which a
//!   structural validator would read as "no fields allowed");
//! - `Quantity` becomes `oneOf: [string, number]` (Kubernetes decodes `cpu: 0.5`);
//! - `metadata` is dropped from `required` (k8s-openapi requires it because the Rust field
//!   is not optional; Kubernetes does not);
//! - list kinds (`PodList`, …) are added and every kind carries
//!   `x-kubernetes-group-version-kind`;
//! - `super::merge_keys` adds the strategic-merge-patch annotations.

use std::sync::LazyLock;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{REF_PREFIX, definition_ref};
use crate::builtin;

pub(super) static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(build);

const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";
const GVK: &str = "x-kubernetes-group-version-kind";

fn build() -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    for kind in builtin::all().iter().chain(builtin::create_only()) {
        (kind.register)(&mut generator);
    }
    for sub in builtin::subresource_kinds() {
        (sub.register)(&mut generator);
    }
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<meta::APIResourceList>();
    generator.subschema_for::<meta::WatchEvent<Pod>>();
    let mut defs = generator.take_definitions(true);
    normalise(&mut defs);
    add_lists_and_gvks(&mut defs);
    super::merge_keys::annotate(&mut defs);
    defs
}

fn normalise(defs: &mut Map<String, Value>) {
    for name in [
        "io.k8s.apimachinery.pkg.runtime.RawExtension",
        "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
    ] {
        if let Some(Value::Object(def)) = defs.get_mut(name) {
            def.insert(PRESERVE.into(), Value::Bool(true));
        }
    }
    // Any JSON value: no type at all.
    if let Some(Value::Object(def)) =
        defs.get_mut("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON")
    {
        def.remove("type");
        def.insert(PRESERVE.into(), Value::Bool(true));
    }
    if let Some(Value::Object(def)) = defs.get_mut("io.k8s.apimachinery.pkg.api.resource.Quantity")
    {
        def.remove("x-kubernetes-int-or-string");
        def.remove("type");
        def.insert(
            "oneOf".into(),
            json!([{"type": "string"}, {"type": "number"}]),
        );
    }
    for def in defs.values_mut() {
        let Some(obj) = def.as_object_mut() else {
            continue;
        };
        let has_meta = obj
            .get("properties")
            .and_then(|p| p.get("metadata"))
            .is_some();
        if let (true, Some(Value::Array(required))) = (has_meta, obj.get_mut("required")) {
            required.retain(|r| r != "metadata");
            if required.is_empty() {
                obj.remove("required");
            }
        }
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{ "group": group, "kind": kind, "version": version }])
}

fn set_gvk(defs: &mut Map<String, Value>, definition: &str, value: Value) {
    if let Some(Value::Object(def)) = defs.get_mut(definition) {
        def.insert(GVK.into(), value);
    }
}

/// The schema Kubernetes publishes for a list kind (`PodList`: `items` of `$ref` item).
pub fn list_schema(item_definition: &str, list_kind: &str, kind: &str) -> Value {
    json!({
        "description": format!("{list_kind} is a list of {kind}."),
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "items": {
                "type": "array",
                "description": format!("List of {kind} objects."),
                "items": definition_ref(item_definition),
            },
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {
                "description": "Standard list metadata.",
                "allOf": [definition_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")],
            },
        },
        "required": ["items"],
    })
}

fn add_lists_and_gvks(defs: &mut Map<String, Value>) {
    for k in builtin::all() {
        if !defs.contains_key(k.list_definition) {
            defs.insert(
                k.list_definition.into(),
                list_schema(k.definition, k.list_kind, k.kind),
            );
        }
        set_gvk(defs, k.definition, gvk(k.group, k.version, k.kind));
        set_gvk(
            defs,
            k.list_definition,
            gvk(k.group, k.version, k.list_kind),
        );
    }
    for k in builtin::create_only() {
        set_gvk(defs, k.definition, gvk(k.group, k.version, k.kind));
    }
    for s in builtin::subresource_kinds() {
        set_gvk(defs, s.definition, gvk(s.group, s.version, s.kind));
    }
    // DeleteOptions is accepted by every group-version; Status and WatchEvent belong to
    // meta/v1 (served as core v1).
    let mut delete_gvks: Vec<Value> =
        vec![json!({"group": "", "kind": "DeleteOptions", "version": "v1"})];
    for (group, version) in builtin::group_versions() {
        if !group.is_empty() {
            delete_gvks.push(json!({"group": group, "kind": "DeleteOptions", "version": version}));
        }
    }
    set_gvk(
        defs,
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        Value::Array(delete_gvks),
    );
    set_gvk(
        defs,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        gvk("", "v1", "Status"),
    );
    set_gvk(
        defs,
        "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
        gvk("", "v1", "WatchEvent"),
    );
}

/// Pushes every definition name `value` refers to with a `$ref`, in order of appearance.
pub fn refs_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            if let Some(name) = obj
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
            {
                out.push(name.to_owned());
            }
            for v in obj.values() {
                refs_in(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs_in(v, out)),
        _ => {}
    }
}
