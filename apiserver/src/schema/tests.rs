//! Tests of the schema module: definitions, merge keys, validation, pruning, structure.

use serde_json::{Value, json};

use super::*;
use crate::builtin;

fn pod(containers: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "labels": {"app": "x"}, "creationTimestamp": null},
        "spec": {"containers": containers},
    })
}

fn pod_schema() -> SchemaRef<'static> {
    builtin_schema("io.k8s.api.core.v1.Pod").unwrap()
}

fn messages(v: &Validation) -> Vec<String> {
    v.errors.iter().map(ToString::to_string).collect()
}

#[test]
fn every_builtin_kind_and_list_has_a_definition_with_its_gvk() {
    let defs = builtin_definitions();
    let mut mismatched = Vec::new();
    for k in builtin::all() {
        for (def, kind) in [(k.definition, k.kind), (k.list_definition, k.list_kind)] {
            let gvk = &defs[def]["x-kubernetes-group-version-kind"][0];
            assert_eq!(
                gvk,
                &json!({"group": k.group, "kind": kind, "version": k.version}),
                "{def}"
            );
        }
        let has_status = defs[k.definition]["properties"].get("status").is_some();
        if has_status != k.has_status {
            mismatched.push(k.plural);
        }
    }
    // Kinds with a `status` field but no status subresource in Kubernetes.
    assert_eq!(mismatched, ["csinodes"]);
    assert!(defs.contains_key(OBJECT_META));
    assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"));
    assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.Patch"));
    assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"));
}

#[test]
fn every_ref_resolves() {
    let defs = builtin_definitions();
    let mut refs = Vec::new();
    for def in defs.values() {
        defs::refs_in(def, &mut refs);
    }
    for r in refs {
        assert!(defs.contains_key(&r), "dangling $ref {r}");
    }
}

#[test]
fn every_merge_key_entry_lands() {
    let defs = builtin_definitions();
    for e in merge_keys::TABLE {
        let prop = &defs[e.definition]["properties"][e.property];
        assert!(prop.is_object(), "{}.{} missing", e.definition, e.property);
        if !e.merge_key.is_empty() {
            assert_eq!(prop["x-kubernetes-patch-merge-key"], e.merge_key);
        }
    }
}

#[test]
fn patch_meta_on_pod() {
    let spec = pod_schema().field("spec").unwrap();
    let containers = spec.field("containers").unwrap();
    assert_eq!(containers.merge_key().as_deref(), Some("name"));
    assert_eq!(containers.strategies(), vec!["merge"]);
    let container = containers.items().unwrap();
    let env = container.field("env").unwrap();
    assert_eq!(env.merge_key().as_deref(), Some("name"));
    assert_eq!(
        container.field("ports").unwrap().merge_key().as_deref(),
        Some("containerPort")
    );
    let volumes = spec.field("volumes").unwrap();
    assert_eq!(volumes.strategies(), vec!["merge", "retainKeys"]);
    assert!(container.field("image").unwrap().merge_key().is_none());
    let meta = pod_schema().field("metadata").unwrap();
    assert_eq!(
        meta.field("ownerReferences")
            .unwrap()
            .merge_key()
            .as_deref(),
        Some("uid")
    );
    assert_eq!(
        meta.field("finalizers").unwrap().strategies(),
        vec!["merge"]
    );
    // Map values: labels are strings.
    let label = meta.field("labels").unwrap().items().unwrap();
    assert_eq!(label.type_name(), Some("string"));
    let deploy = builtin_schema("io.k8s.api.apps.v1.Deployment").unwrap();
    let strategy = deploy.field("spec").unwrap().field("strategy").unwrap();
    assert_eq!(strategy.strategies(), vec!["retainKeys"]);
    assert!(strategy.field("rollingUpdate").is_some());
}

#[test]
fn a_valid_pod_passes() {
    let obj = pod(json!([{
        "name": "c", "image": "nginx", "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": {"limits": {"cpu": 1, "memory": "128Mi"}, "requests": {"cpu": "500m", "memory": 0.5}},
        "livenessProbe": {"httpGet": {"port": "http", "path": "/"}},
    }]));
    let v = validate(pod_schema(), &obj);
    assert_eq!(v, Validation::default(), "{:?}", messages(&v));
}

#[test]
fn unknown_container_field_is_reported_with_its_path() {
    let obj = pod(json!([{"name": "c", "image": "nginx", "imagee": "typo"}]));
    let v = validate(pod_schema(), &obj);
    assert!(v.is_valid());
    assert_eq!(v.unknown_fields, vec!["spec.containers[0].imagee"]);
    assert_eq!(
        v.unknown_field_messages(),
        vec![r#"unknown field "spec.containers[0].imagee""#]
    );

    let mut pruned = obj.clone();
    assert_eq!(
        prune(pod_schema(), &mut pruned),
        vec!["spec.containers[0].imagee"]
    );
    assert!(pruned["spec"]["containers"][0].get("imagee").is_none());
    // null creationTimestamp is dropped silently; known fields stay in order.
    assert!(pruned["metadata"].get("creationTimestamp").is_none());
    let keys: Vec<&String> = pruned["metadata"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "namespace", "labels"]);
}

#[test]
fn unknown_metadata_and_top_level_fields() {
    let mut obj = pod(json!([{"name": "c"}]));
    obj["metadata"]["labelz"] = json!({});
    obj["spek"] = json!({});
    let v = validate(pod_schema(), &obj);
    assert_eq!(v.unknown_fields, vec!["metadata.labelz", "spek"]);
}

#[test]
fn deployment_replicas_of_wrong_type() {
    let obj = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": "three", "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}},
    });
    let v = validate(
        builtin_schema("io.k8s.api.apps.v1.Deployment").unwrap(),
        &obj,
    );
    assert_eq!(v.errors.len(), 1, "{:?}", messages(&v));
    let e = &v.errors[0];
    assert_eq!(e.path, "spec.replicas");
    assert_eq!(e.reason, CauseType::TypeInvalid);
    assert_eq!(e.reason.as_str(), "FieldValueTypeInvalid");
    assert_eq!(
        e.to_string(),
        r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#
    );
    assert_eq!(v.error_summary(), e.to_string());
}

#[test]
fn required_fields_of_builtins() {
    let obj = pod(json!([{"image": "nginx"}]));
    let v = validate(pod_schema(), &obj);
    assert_eq!(
        messages(&v),
        vec!["spec.containers[0].name: Required value"]
    );
    let no_meta = json!({"apiVersion": "v1", "kind": "ConfigMap"});
    let cm = builtin_schema("io.k8s.api.core.v1.ConfigMap").unwrap();
    assert!(validate(cm, &no_meta).is_valid());
}

#[test]
fn service_target_port_int_or_string() {
    let svc = builtin_schema("io.k8s.api.core.v1.Service").unwrap();
    for target in [json!(8080), json!("http")] {
        let obj = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": target}], "selector": {"app": "x"}}});
        let v = validate(svc, &obj);
        assert_eq!(v, Validation::default(), "{target}: {:?}", messages(&v));
    }
    let obj = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "targetPort": true}]}});
    let v = validate(svc, &obj);
    assert_eq!(v.errors[0].path, "spec.ports[0].targetPort");
}

#[test]
fn configmap_data_values_must_be_strings() {
    let cm = builtin_schema("io.k8s.api.core.v1.ConfigMap").unwrap();
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"ok": "yes", "bad": 5}, "binaryData": {"b": "aGVsbG8="}});
    let v = validate(cm, &obj);
    assert_eq!(
        messages(&v),
        vec![
            r#"data.bad: Invalid value: "integer": data.bad in body must be of type string: "integer""#
        ]
    );
    let bad_b64 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "binaryData": {"b": "!!"}});
    assert_eq!(validate(cm, &bad_b64).errors[0].path, "binaryData.b");
}

#[test]
fn quantities_and_times() {
    let obj = pod(json!([{"name": "c", "resources": {"limits": {"cpu": true}}}]));
    let v = validate(pod_schema(), &obj);
    assert_eq!(v.errors[0].path, "spec.containers[0].resources.limits.cpu");
    let mut obj = pod(json!([{"name": "c"}]));
    obj["metadata"]["creationTimestamp"] = json!("2024-05-06T07:08:09Z");
    assert!(validate(pod_schema(), &obj).is_valid());
    obj["metadata"]["creationTimestamp"] = json!("yesterday");
    assert_eq!(
        validate(pod_schema(), &obj).errors[0].path,
        "metadata.creationTimestamp"
    );
}

#[test]
fn free_form_fields_accept_anything() {
    let cr = builtin_schema("io.k8s.api.apps.v1.ControllerRevision").unwrap();
    let obj = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"},
        "revision": 1, "data": {"spec": {"anything": [1, {"x": null}]}}});
    assert_eq!(validate(cr, &obj), Validation::default());
    let mut m = obj.clone();
    assert!(prune(cr, &mut m).is_empty());
    assert_eq!(m["data"], obj["data"]);
}

fn crd_sample() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["model"],
                "properties": {
                    "model": {"type": "string", "minLength": 1},
                    "protocol": {"type": "string", "enum": ["modbus", "gpio"]},
                    "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "format": "int32"},
                    "pins": {"type": "array", "maxItems": 2, "items": {"type": "integer"}, "x-kubernetes-list-type": "set"},
                    "port": {"x-kubernetes-int-or-string": true},
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "props": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "v": {"type": "string"}}}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                    "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                },
            },
            "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
        },
    })
}

#[test]
fn crd_schema_validation() {
    let schema = crd_sample();
    assert!(
        check_structural(&schema).is_empty(),
        "{:?}",
        check_structural(&schema)
    );
    let s = crd_schema(&schema);
    let ok = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "d", "labels": {"a": "b"}},
        "spec": {"model": "m", "protocol": "gpio", "replicas": 3, "pins": [1, 2], "port": "http",
                 "extra": {"deep": {"x": [1]}}, "props": [{"name": "a"}, {"name": "b"}], "labels": {"x": "y"}, "name": "abc",
                 "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}}});
    let v = validate(s, &ok);
    assert_eq!(v, Validation::default(), "{:?}", messages(&v));

    let bad = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": {"name": "d"},
        "spec": {"protocol": "serial", "replicas": 11, "pins": [1, 1, 2], "port": 1.5,
                 "props": [{"name": "a"}, {"name": "a"}], "name": "ABCDEFG", "template": {"metadata": {}},
                 "unknown": 1},
        "status": {"ok": "yes", "extra": 1}});
    let v = validate(s, &bad);
    let got = messages(&v);
    let want = [
        "spec.model: Required value",
        r#"spec.protocol: Unsupported value: "serial": supported values: "modbus", "gpio""#,
        "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        "spec.pins: Too many: 3: must have at most 2 items",
        "spec.pins[1]: Duplicate value: 1",
        r#"spec.port: Invalid value: "number": spec.port in body must be of type integer,string: "number""#,
        r#"spec.props[1]: Duplicate value: {"name":"a"}"#,
        "spec.name: Too long: may not be more than 5 bytes",
        r#"spec.name: Invalid value: "ABCDEFG": spec.name in body should match '^[a-z]+$'"#,
        "spec.template.apiVersion: Required value: must not be empty",
        "spec.template.kind: Required value: must not be empty",
        r#"status.ok: Invalid value: "string": status.ok in body must be of type boolean: "string""#,
    ];
    for w in want {
        assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
    assert_eq!(v.unknown_fields, vec!["spec.unknown", "status.extra"]);
}

#[test]
fn crd_preserve_unknown_fields_subtree_and_pruning() {
    let schema = crd_sample();
    let s = crd_schema(&schema);
    let mut obj = json!({"apiVersion": "a/v1", "kind": "D", "metadata": {"name": "d"},
        "spec": {"model": "m", "extra": {"free": {"a": 1}}, "junk": 1, "props": [{"name": "a", "zz": 1}]}, "top": 1});
    let v = validate(s, &obj);
    assert_eq!(
        v.unknown_fields,
        vec!["spec.junk", "spec.props[0].zz", "top"]
    );
    assert_eq!(prune(s, &mut obj), v.unknown_fields);
    assert_eq!(obj["spec"]["extra"], json!({"free": {"a": 1}}));
    assert!(validate(s, &obj).unknown_fields.is_empty());
}

#[test]
fn crd_junctors() {
    let schema = json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
        "not": {"properties": {"a": {"enum": ["forbidden"]}}, "required": ["a"]},
    }}});
    assert!(
        check_structural(&schema).is_empty(),
        "{:?}",
        check_structural(&schema)
    );
    let s = crd_schema(&schema);
    let obj =
        |spec: Value| json!({"apiVersion": "x/v1", "kind": "X", "metadata": {}, "spec": spec});
    assert!(validate(s, &obj(json!({"a": "x"}))).is_valid());
    let both = validate(s, &obj(json!({"a": "x", "b": "y"})));
    assert!(
        messages(&both)[0].ends_with("must validate one and only one schema (oneOf)"),
        "{both:?}"
    );
    let not = validate(s, &obj(json!({"a": "forbidden"})));
    assert!(
        messages(&not)[0].ends_with("must not validate the schema (not)"),
        "{not:?}"
    );
}

#[test]
fn crd_schema_of_a_crd_is_checked_against_json_schema_props() {
    // A CRD object itself: typos inside its openAPIV3Schema are unknown fields.
    let crd = builtin_schema(
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    )
    .unwrap();
    let obj = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "devices.devices.kubeedge.io"},
        "spec": {"group": "devices.kubeedge.io", "scope": "Namespaced",
            "names": {"plural": "devices", "kind": "Device"},
            "versions": [{"name": "v1beta1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "default": {"a": 1},
                        "properties": {"list": {"type": "array", "items": {"type": "string"}}}},
                    "status": {"type": "object", "additionalProperties": true, "typo": 1}}}}}]}});
    let v = validate(crd, &obj);
    assert!(v.is_valid(), "{:?}", messages(&v));
    assert_eq!(
        v.unknown_fields,
        vec!["spec.versions[0].schema.openAPIV3Schema.properties.status.typo"]
    );
}

#[test]
fn typed_objects_serialised_by_k8s_openapi_validate() {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStatus, Node, NodeCondition,
        NodeStatus, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let container = Container {
        name: "c".into(),
        image: Some("nginx".into()),
        ..Default::default()
    };
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            creation_timestamp: Some(now.clone()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container.clone()],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(now.clone()),
                ..Default::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "c".into(),
                image: "nginx".into(),
                image_id: "sha256:x".into(),
                ready: true,
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(now.clone()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n".into()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deploy = Deployment {
        metadata: ObjectMeta {
            name: Some("d".into()),
            ..Default::default()
        },
        spec: DeploymentSpec {
            selector: LabelSelector::default(),
            template: PodTemplateSpec {
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    for (def, obj) in [
        (
            "io.k8s.api.core.v1.Pod",
            serde_json::to_value(&pod).unwrap(),
        ),
        (
            "io.k8s.api.core.v1.Node",
            serde_json::to_value(&node).unwrap(),
        ),
        (
            "io.k8s.api.apps.v1.Deployment",
            serde_json::to_value(&deploy).unwrap(),
        ),
    ] {
        let v = validate(builtin_schema(def).unwrap(), &obj);
        assert_eq!(v, Validation::default(), "{def}: {:?}", messages(&v));
    }
}

#[test]
fn everyday_manifests_validate() {
    let cases = [
        (
            "io.k8s.api.apps.v1.Deployment",
            json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "name": "http"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": 0.5}},
                        "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 5},
                        "securityContext": {"runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "tmp", "mountPath": "/tmp"}]}],
                    "volumes": [{"name": "cfg", "configMap": {"name": "web"}}, {"name": "tmp", "emptyDir": {}}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "node-role.kubernetes.io/edge", "operator": "Exists", "effect": "NoSchedule"}]}}},
            "status": {}}),
        ),
        (
            "io.k8s.api.core.v1.Secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "type": "Opaque", "data": {"a": "aGVsbG8="}, "stringData": {"b": "plain"}}),
        ),
        (
            "io.k8s.api.batch.v1.CronJob",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"backoffLimit": 1, "template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "date"]}]}}}}}}),
        ),
        (
            "io.k8s.api.networking.v1.Ingress",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i",
            "annotations": {"a": "b"}}, "spec": {"rules": [{"host": "x.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        ),
        (
            "io.k8s.api.rbac.v1.ClusterRole",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}),
        ),
    ];
    for (def, obj) in cases {
        let v = validate(builtin_schema(def).unwrap(), &obj);
        assert_eq!(v, Validation::default(), "{def}: {:?}", messages(&v));
    }
}

#[test]
fn crd_defaults_fill_absent_fields() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "default": {},
    "properties": {
        "mode": {"type": "string", "default": "auto"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"w": {"type": "integer", "default": 1}}}},
        "keep": {"type": "string", "default": "x"},
    }}}});
    let s = crd_schema(&schema);
    let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {}, "spec": {"items": [{}, {"w": 5}], "keep": null}});
    prune(s, &mut obj);
    apply_defaults(s, &mut obj);
    assert_eq!(
        obj["spec"],
        json!({"items": [{"w": 1}, {"w": 5}], "mode": "auto", "keep": "x"})
    );
    let mut empty = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {}});
    apply_defaults(s, &mut empty);
    assert_eq!(empty["spec"], json!({"mode": "auto", "keep": "x"}));
}

/// The write path finds unknown fields by pruning (one walk); it must report exactly what
/// validation reports, in the same order.
#[test]
fn pruning_reports_the_unknown_fields_validation_reports() {
    let mut with_typos = pod(json!([
        {"name": "c", "image": "nginx", "imagee": "typo", "ports": [{"containerPort": 80, "portt": 1}]},
        {"name": "d", "env": [{"name": "A", "vaule": "x"}], "resources": {"limits": {"cpu": "1"}, "limitz": {}}},
    ]));
    with_typos["metadata"]["labelz"] = json!({"a": "b"});
    with_typos["metadata"]["creationTimestamp"] = Value::Null;
    with_typos["spek"] = json!(null);
    with_typos["status"] =
        json!({"phase": "Running", "phaze": 1, "conditions": [{"type": "Ready", "x": 1}]});
    let wrong_types = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": {"name": "not-a-list", "bogus": 1}, "volumes": [{"name": "v", "emptyDir": 3, "junk": 1}]}});
    let crd = crd_sample();
    let crd_obj = json!({"apiVersion": "a/v1", "kind": "D", "metadata": {"name": "d", "x": 1},
        "spec": {"model": "m", "extra": {"free": {"a": 1}}, "junk": null, "props": [{"name": "a", "zz": 1}, 7]}, "top": 1});
    for (s, obj) in [
        (pod_schema(), with_typos),
        (pod_schema(), wrong_types),
        (crd_schema(&crd), crd_obj),
    ] {
        let expected = validate(s, &obj).unknown_fields;
        let mut pruned = obj.clone();
        assert_eq!(prune(s, &mut pruned), expected, "{obj}");
    }
}
