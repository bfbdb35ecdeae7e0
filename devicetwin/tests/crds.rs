//! Checks kedge's Device and DeviceModel CRDs (`deploy/crds/`): that they are structural,
//! carry the agreed columns and subresources, accept KubeEdge's published samples, and accept
//! every spec field KubeEdge's own v1beta1 CRD schema accepts.
//!
//! The KubeEdge fixtures are data kept outside the project: `$KEDGE_COMPAT_DIR`, else
//! `../shared/compat/kubeedge` beside the checkout, else `/work/shared/compat/kubeedge` (a
//! clone made elsewhere on the same machine, as CI makes one). Tests that need them print a
//! note and pass when none is there.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use devicetwin::model::{Device, DeviceModel, DeviceStatus};
use devicetwin::shadow::{PropertyWrite, Shadow, Stamp, TwinEvent};
use serde_json::{Value, json};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn crd(file: &str) -> Value {
    yaml(&manifest_dir().join("../deploy/crds").join(file))
}

fn device_crd() -> Value {
    crd("devices.kubeedge.io_devices.yaml")
}

fn model_crd() -> Value {
    crd("devices.kubeedge.io_devicemodels.yaml")
}

/// The KubeEdge fixture file, or `None` (with a note) when the fixtures are not there.
fn fixture(file: &str) -> Option<Value> {
    let dirs = std::env::var_os("KEDGE_COMPAT_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            manifest_dir().join("../../shared/compat/kubeedge"),
            PathBuf::from("/work/shared/compat/kubeedge"),
        ]);
    let tried: Vec<PathBuf> = dirs.map(|d| d.join(file)).collect();
    let Some(path) = tried.iter().find(|p| p.exists()) else {
        eprintln!(
            "note: {file} is absent (looked at {tried:?}); skipping the KubeEdge compatibility check"
        );
        return None;
    };
    Some(yaml(path))
}

/// `spec.versions[name=v1beta1].schema.openAPIV3Schema` of a CRD.
fn v1beta1_schema(crd: &Value) -> &Value {
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1beta1")
        .unwrap();
    &version["schema"]["openAPIV3Schema"]
}

#[path = "crds/schema.rs"]
mod schema;

use schema::{errors_for, preserve_paths, structural_errors, subsumption_errors};

// ---- tests ----

#[test]
fn crds_are_structural_and_well_formed() {
    for (crd, kind, plural) in [
        (device_crd(), "Device", "devices"),
        (model_crd(), "DeviceModel", "devicemodels"),
    ] {
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        assert_eq!(
            crd["metadata"]["name"],
            format!("{plural}.devices.kubeedge.io")
        );
        let spec = &crd["spec"];
        assert_eq!(spec["group"], "devices.kubeedge.io");
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["kind"], kind);
        assert_eq!(spec["names"]["plural"], plural);
        assert_eq!(spec["names"]["listKind"], format!("{kind}List"));
        assert_eq!(spec["names"]["categories"], json!(["kedge"]));
        let versions = spec["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0]["name"], "v1beta1");
        assert_eq!(
            (&versions[0]["served"], &versions[0]["storage"]),
            (&json!(true), &json!(true))
        );
        let schema = v1beta1_schema(&crd);
        let mut errors = Vec::new();
        structural_errors(schema, "$", &mut errors);
        assert!(errors.is_empty(), "{kind}: {errors:#?}");
        assert_eq!(schema["properties"]["metadata"], json!({"type": "object"}));
        // Age is the creation timestamp, typed as a date.
        let columns = versions[0]["additionalPrinterColumns"].as_array().unwrap();
        let age = columns
            .iter()
            .find(|c| c["jsonPath"] == ".metadata.creationTimestamp")
            .unwrap();
        assert_eq!(age["type"], "date");
    }
}

#[test]
fn device_crd_has_columns_status_and_selectable_node() {
    let crd = device_crd();
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["dev"]));
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["subresources"], json!({"status": {}}));
    assert_eq!(
        v["selectableFields"],
        json!([{"jsonPath": ".spec.nodeName"}])
    );
    let columns: Vec<(String, String, String)> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            (s("name").to_uppercase(), s("jsonPath"), s("type"))
        })
        .collect();
    let expect = |n: &str, p: &str, t: &str| (n.to_owned(), p.to_owned(), t.to_owned());
    assert_eq!(
        columns,
        [
            expect("NODE", ".spec.nodeName", "string"),
            expect("MODEL", ".spec.deviceModelRef.name", "string"),
            expect("STATE", ".status.state", "string"),
            expect("AGE", ".metadata.creationTimestamp", "date"),
        ]
    );
    let schema = v1beta1_schema(&crd);
    let status = &schema["properties"]["status"]["properties"];
    for f in [
        "twins",
        "state",
        "lastOnlineTime",
        "observedGeneration",
        "reportedVersion",
    ] {
        assert!(status.get(f).is_some(), "status.{f}");
    }
    assert_eq!(status["reportedVersion"]["format"], "int64");
    let twin = &status["twins"]["items"]["properties"];
    for side in ["reported", "observedDesired"] {
        for f in ["value", "version", "metadata"] {
            assert!(twin[side]["properties"].get(f).is_some(), "{side}.{f}");
        }
        assert!(
            twin[side]["properties"]["metadata"]["properties"]
                .get("timestamp")
                .is_some()
        );
        assert!(
            twin[side]["properties"]["metadata"]["properties"]
                .get("type")
                .is_some()
        );
    }
    let model = model_crd();
    let short = model["spec"]["names"]["shortNames"].as_array().unwrap();
    assert!(short.contains(&json!("devmodel")) && short.contains(&json!("dm")));
    assert!(
        model["spec"]["versions"][0]
            .get("selectableFields")
            .is_none()
    );
}

#[test]
fn preserve_unknown_fields_only_where_kubeedge_allows_arbitrary_content() {
    let mut device = Vec::new();
    preserve_paths(v1beta1_schema(&device_crd()), "$", &mut device);
    assert_eq!(
        device,
        [
            "$.spec.properties[].visitors.configData",
            "$.spec.properties[].pushMethod.anomalyDetection",
            "$.spec.protocol.configData",
        ]
    );
    let mut model = Vec::new();
    preserve_paths(v1beta1_schema(&model_crd()), "$", &mut model);
    assert_eq!(
        model,
        [
            "$.spec.properties[].visitors.configData",
            "$.spec.protocolConfigData"
        ]
    );
    // ...and KubeEdge preserves at each of those paths too.
    for (file, ours) in [
        ("crd-devices_v1beta1_device.yaml", &device),
        ("crd-devices_v1beta1_devicemodel.yaml", &model),
    ] {
        let Some(theirs) = fixture(file) else { return };
        let mut theirs_paths = Vec::new();
        preserve_paths(v1beta1_schema(&theirs), "$", &mut theirs_paths);
        for p in ours {
            assert!(
                theirs_paths.contains(p),
                "{file}: {p} is not arbitrary in KubeEdge"
            );
        }
    }
}

#[test]
fn every_kubeedge_spec_field_is_accepted() {
    for (file, ours) in [
        ("crd-devices_v1beta1_device.yaml", device_crd()),
        ("crd-devices_v1beta1_devicemodel.yaml", model_crd()),
    ] {
        let Some(theirs) = fixture(file) else { return };
        let mut errors = Vec::new();
        subsumption_errors(
            &v1beta1_schema(&theirs)["properties"]["spec"],
            &v1beta1_schema(&ours)["properties"]["spec"],
            "$.spec",
            &mut errors,
        );
        assert!(errors.is_empty(), "{file}: {errors:#?}");
    }
}

#[test]
fn kubeedge_samples_validate_and_deserialise() {
    let (Some(device), Some(model)) = (
        fixture("website-device-sample.yaml"),
        fixture("website-devicemodel-sample.yaml"),
    ) else {
        return;
    };
    assert_eq!(
        errors_for(&device, v1beta1_schema(&device_crd())),
        Vec::<String>::new()
    );
    assert_eq!(
        errors_for(&model, v1beta1_schema(&model_crd())),
        Vec::<String>::new()
    );

    // The same YAML reads into kedge's types and drives a shadow.
    let device: Device = serde_json::from_value(device).unwrap();
    let model: DeviceModel = serde_json::from_value(model).unwrap();
    model.spec.validate().unwrap();
    assert_eq!(device.spec.model_name(), model.metadata.name.as_deref());
    let temp = model.spec.property("temp").unwrap();
    let desired = &device
        .spec
        .property("temp")
        .unwrap()
        .desired
        .as_ref()
        .unwrap()
        .value;
    temp.check_value(desired).unwrap();
    let event =
        TwinEvent::cloud_desired_from_spec(&device.spec, 1, Some(&model.spec), Stamp::new("t", 1));
    let mut shadow = Shadow::new();
    shadow.apply(event).unwrap();
    assert_eq!(shadow.delta().get("temp").map(String::as_str), Some("30"));
}

#[test]
fn status_written_by_kedge_validates() {
    let mut shadow = Shadow::new();
    let props = [("temp".to_owned(), PropertyWrite::new("30"))].into();
    shadow
        .apply(TwinEvent::CloudDesired {
            generation: 3,
            props,
            at: Stamp::new("c", 1),
        })
        .unwrap();
    let reported = [("temp".to_owned(), Some(PropertyWrite::new("25")))].into();
    shadow
        .apply(TwinEvent::edge_reported(reported, None, Stamp::new("r", 2)))
        .unwrap();
    let mut status = DeviceStatus::default();
    status.apply_report(&shadow.report());
    status.apply_state(&devicetwin::shadow::StateReport {
        state: devicetwin::model::DeviceState::Online,
        timestamp: 2,
        last_online: Some(2),
    });
    let object = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "d"}, "spec": {"nodeName": "n"}, "status": status});
    assert_eq!(
        errors_for(&object, v1beta1_schema(&device_crd())),
        Vec::<String>::new()
    );
    // With a refused desired value listed.
    status.desired_refusals = Some(vec![devicetwin::model::DesiredRefusal {
        property_name: "temp".into(),
        value: "abc".into(),
        reason: "type_mismatch".into(),
        message: "value is not a valid int".into(),
        generation: Some(4),
    }]);
    let object = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "d"}, "spec": {"nodeName": "n"}, "status": status});
    assert_eq!(
        errors_for(&object, v1beta1_schema(&device_crd())),
        Vec::<String>::new()
    );
}

#[test]
fn the_validator_is_not_vacuous() {
    let crd = device_crd();
    let schema = v1beta1_schema(&crd);
    let bad = [
        (json!({"spec": {"nodeNmae": "typo"}}), "unknown field"),
        (json!({"spec": {"nodeName": 5}}), "expected string"),
        (
            json!({"spec": {"properties": [{"name": "t", "desired": {}}]}}),
            "missing required value",
        ),
        (
            json!({"spec": {"properties": [{"name": "t", "reportCycle": "10s"}]}}),
            "expected integer",
        ),
        (
            json!({"spec": {"properties": [{"name": "t", "desired": {"value": "1", "metadata": {"a": 1}}}]}}),
            "expected string",
        ),
        (
            json!({"status": {"twins": [{"propertyName": "t", "extra": 1}]}}),
            "unknown field",
        ),
    ];
    for (object, want) in bad {
        let errors = errors_for(&object, schema);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{object}: {errors:?}"
        );
    }
    let model = model_crd();
    let model_schema = v1beta1_schema(&model);
    let errors = errors_for(
        &json!({"spec": {"properties": [{"name": "t", "type": "LONG"}]}}),
        model_schema,
    );
    assert!(
        errors.iter().any(|e| e.contains("not in enum")),
        "{errors:?}"
    );
    // The subsumption check notices a missing field and a narrowed type.
    if let Some(theirs) = fixture("crd-devices_v1beta1_device.yaml") {
        let mut ours = schema["properties"]["spec"].clone();
        ours["properties"]
            .as_object_mut()
            .unwrap()
            .remove("methods");
        ours["properties"]["nodeName"]["type"] = json!("integer");
        let mut errors = Vec::new();
        subsumption_errors(
            &v1beta1_schema(&theirs)["properties"]["spec"],
            &ours,
            "$.spec",
            &mut errors,
        );
        assert!(errors.iter().any(|e| e.contains("methods")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("nodeName")), "{errors:?}");
    }
    // Free-form places take anything.
    let ok = json!({"spec": {"protocol": {"configData": {"any": {"thing": [1, "x"]}}}}});
    assert!(errors_for(&ok, schema).is_empty());
}
