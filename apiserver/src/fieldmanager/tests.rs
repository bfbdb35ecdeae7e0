use serde_json::{Value, json};

use super::*;
use crate::schema;

fn deploy_schema() -> Node<'static> {
    schema::builtin_schema("io.k8s.api.apps.v1.Deployment")
}

fn op(manager: &str) -> Op<'_> {
    Op {
        manager,
        api_version: "apps/v1",
        subresource: None,
        has_status: true,
        now: "2026-01-01T00:00:00Z",
    }
}

fn deploy(replicas: i64, image: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image,
                    "ports": [{"containerPort": 80}]}]},
            },
        },
    })
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .unwrap_or_else(|| panic!("no {operation} entry of {manager}: {obj}"))
}

fn entries(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap().to_string(),
                        e["operation"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn apply_creates_and_records_the_configuration_fields() {
    let cfg = deploy(3, "nginx:1", json!({"app": "web"}));
    let out = apply(&json!({}), &cfg, deploy_schema(), &op("a"), false).unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    let e = entry(&out, "a", "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert_eq!(e["time"], "2026-01-01T00:00:00Z");
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}}},
                    }}},
                },
            },
        })
    );
}

#[test]
fn a_second_manager_conflicts_unless_it_forces_or_agrees() {
    let live = apply(
        &json!({}),
        &deploy(3, "nginx:1", json!({"app": "web"})),
        deploy_schema(),
        &op("a"),
        false,
    )
    .unwrap();
    let b_cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let err = apply(&live, &b_cfg, deploy_schema(), &op("b"), false).unwrap_err();
    assert_eq!(
        err,
        vec![Conflict {
            manager: "\"a\"".into(),
            field: ".spec.replicas".into()
        }]
    );
    let status = conflict_error(&err).to_status();
    assert_eq!(status["code"], 409);
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "FieldManagerConflict", "message": "conflict with \"a\"", "field": ".spec.replicas"})
    );
    // Agreeing on the value shares the field.
    let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 3}});
    let shared = apply(&live, &same, deploy_schema(), &op("b"), false).unwrap();
    let a = FieldSet::from_fields_v1(&entry(&shared, "a", "Apply")["fieldsV1"]).unwrap();
    let b = FieldSet::from_fields_v1(&entry(&shared, "b", "Apply")["fieldsV1"]).unwrap();
    let replicas = [
        PathElement::Field("spec".into()),
        PathElement::Field("replicas".into()),
    ];
    assert!(a.contains(&replicas) && b.contains(&replicas));
    // Forcing takes it over.
    let forced = apply(&live, &b_cfg, deploy_schema(), &op("b"), true).unwrap();
    assert_eq!(forced["spec"]["replicas"], 5);
    let a = FieldSet::from_fields_v1(&entry(&forced, "a", "Apply")["fieldsV1"]).unwrap();
    assert!(!a.contains(&replicas));
    assert!(a.contains(&[
        PathElement::Field("spec".into()),
        PathElement::Field("selector".into())
    ]));
    // Re-applying a's old configuration now conflicts with b.
    let back = deploy(3, "nginx:1", json!({"app": "web"}));
    let err = apply(&forced, &back, deploy_schema(), &op("a"), false).unwrap_err();
    assert_eq!(err[0].manager, "\"b\"");
}

#[test]
fn fields_no_longer_applied_are_removed_unless_someone_else_owns_them() {
    let first = deploy(
        3,
        "nginx:1",
        json!({"app": "web", "tier": "front", "team": "x"}),
    );
    let live = apply(&json!({}), &first, deploy_schema(), &op("a"), false).unwrap();
    // b shares the `team` label.
    let b_cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"team": "x"}}});
    let live = apply(&live, &b_cfg, deploy_schema(), &op("b"), false).unwrap();
    // a drops both `tier` and `team`, and the container's port.
    let mut second = deploy(3, "nginx:2", json!({"app": "web"}));
    second["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("ports");
    let out = apply(&live, &second, deploy_schema(), &op("a"), false).unwrap();
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "team": "x"})
    );
    let c = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:2");
    assert!(c.get("ports").is_none(), "{c}");
    // A container no longer applied goes.
    let mut two = deploy(3, "nginx:2", json!({"app": "web"}));
    two["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "nginx", "image": "nginx:2"}, {"name": "sidecar", "image": "envoy"}]);
    let out = apply(&out, &two, deploy_schema(), &op("a"), false).unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let out = apply(&out, &second, deploy_schema(), &op("a"), false).unwrap();
    let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nginx"]);
}

#[test]
fn updates_take_the_fields_they_change() {
    let mut created = deploy(1, "nginx:1", json!({"app": "web"}));
    update(None, &mut created, deploy_schema(), &op("kubectl-create"));
    let e = entry(&created, "kubectl-create", "Update");
    assert_eq!(
        e["fieldsV1"]["f:metadata"],
        json!({"f:labels": {".": {}, "f:app": {}}})
    );
    assert!(e["fieldsV1"]["f:spec"].get(".").is_none());
    assert_eq!(
        e["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]["."],
        json!({})
    );
    // An apply now conflicts with the creator's ownership of replicas.
    let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 4}});
    let err = apply(&created, &cfg, deploy_schema(), &op("ssa"), false).unwrap_err();
    assert_eq!(
        err[0].manager,
        "\"kubectl-create\" using apps/v1 at 2026-01-01T00:00:00Z"
    );
    let applied = apply(&created, &cfg, deploy_schema(), &op("ssa"), true).unwrap();
    // An edit of replicas takes it back from the applier.
    let mut edited = applied.clone();
    edited["spec"]["replicas"] = json!(7);
    update(
        Some(&applied),
        &mut edited,
        deploy_schema(),
        &op("kubectl-edit"),
    );
    assert_eq!(
        entries(&edited),
        [
            ("kubectl-create".to_string(), "Update".to_string()),
            ("kubectl-edit".to_string(), "Update".to_string())
        ]
    );
    // A no-op update records nothing.
    let mut same = edited.clone();
    update(Some(&edited), &mut same, deploy_schema(), &op("other"));
    assert_eq!(same, edited);
}

#[test]
fn clients_can_reset_managed_fields() {
    let mut live = deploy(1, "nginx:1", json!({"app": "web"}));
    update(None, &mut live, deploy_schema(), &op("kubectl-create"));
    let mut reset = live.clone();
    reset["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        Managed::live_or_new(Some(&live), &reset),
        Managed::default()
    );
    let mut absent = live.clone();
    absent["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    assert_eq!(
        Managed::live_or_new(Some(&live), &absent),
        Managed::of(&live).unwrap()
    );
    let status_op = Op {
        subresource: Some("status"),
        ..op("ctrl")
    };
    let mut with_status = live.clone();
    with_status["status"] = json!({"replicas": 1});
    update(Some(&live), &mut with_status, deploy_schema(), &status_op);
    let e = &with_status["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "ctrl")
        .unwrap()
        .clone();
    assert_eq!(e["subresource"], "status");
    assert_eq!(e["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
}

#[test]
fn managers_are_named_like_kubernetes_does() {
    assert_eq!(
        default_manager("kubectl/v1.32.4 (linux/amd64) kubernetes/abc"),
        "kubectl"
    );
    assert_eq!(default_manager(""), "unknown");
    assert!(check_manager(&"x".repeat(129)).is_err());
    assert!(check_manager("a\u{7}").is_err());
    assert!(check_manager("kubectl-client-side-apply").is_ok());
}
