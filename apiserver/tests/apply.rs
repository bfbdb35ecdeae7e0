//! Server-side apply through the real HTTP stack: create, merge, conflicts, force,
//! removal of fields no longer applied, and managedFields of ordinary writes.

#![allow(clippy::unwrap_used)]

#[path = "support/server.rs"]
mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/web";
const APPLY: &str = "application/apply-patch+yaml";

fn deployment(replicas: i64, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}},
        },
    })
}

async fn apply(s: &support::Server, query: &str, body: &Value) -> (u16, Value) {
    s.raw(
        "PATCH",
        &format!("{DEPLOY}?{query}"),
        APPLY,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn apply_creates_merges_conflicts_and_forces() {
    let s = support::start(|_| {}).await;
    let (code, body) = apply(&s, "", &deployment(3, json!({"app": "web"}))).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["message"],
        "fieldManager is required for apply requests"
    );

    let (code, created) = apply(&s, "fieldManager=a", &deployment(3, json!({"app": "web"}))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(managers(&created), ["a/Apply"]);
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    let rv = created["metadata"]["resourceVersion"].clone();
    // The same configuration again changes nothing.
    let (code, again) = apply(&s, "fieldManager=a", &deployment(3, json!({"app": "web"}))).await;
    assert_eq!(code, 200);
    assert_eq!(again["metadata"]["resourceVersion"], rv);

    let b = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let (code, err) = apply(&s, "fieldManager=b", &b).await;
    assert_eq!(code, 409, "{err}");
    assert_eq!(err["reason"], "Conflict");
    assert_eq!(
        err["message"],
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    assert_eq!(
        err["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"a\"", "field": ".spec.replicas"}])
    );
    let (code, forced) = apply(&s, "fieldManager=b&force=true", &b).await;
    assert_eq!(code, 200, "{forced}");
    assert_eq!(forced["spec"]["replicas"], 5);
    assert_eq!(managers(&forced), ["a/Apply", "b/Apply"]);
    let a_fields = &forced["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
    assert!(a_fields.get("f:replicas").is_none(), "{a_fields}");
    assert!(a_fields.get("f:selector").is_some());

    // a stops applying a label; b's fields stay.
    let (code, out) = apply(&s, "fieldManager=a", &{
        let mut d = deployment(5, json!({"app": "web", "tier": "front"}));
        d["spec"].as_object_mut().unwrap().remove("replicas");
        d
    })
    .await;
    assert_eq!(code, 200, "{out}");
    let (_, out) = apply(&s, "fieldManager=a", &{
        let mut d = deployment(5, json!({"app": "web"}));
        d["spec"].as_object_mut().unwrap().remove("replicas");
        d
    })
    .await;
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(out["spec"]["replicas"], 5);

    // Strict validation refuses unknown fields in the configuration.
    let mut bad = deployment(5, json!({"app": "web"}));
    bad["spec"]["bogus"] = json!(1);
    let (code, _) = apply(&s, "fieldManager=a&fieldValidation=Strict", &bad).await;
    assert_eq!(code, 400);
    // managedFields may not be applied.
    let mut mf = deployment(5, json!({"app": "web"}));
    mf["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    let (code, _) = apply(&s, "fieldManager=a", &mf).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn ordinary_writes_record_update_entries() {
    let s = support::start(|_| {}).await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    let pp = PostParams {
        field_manager: Some("creator".into()),
        ..Default::default()
    };
    let c = cms.create(&pp, &cm).await.unwrap();
    let mf = c.metadata.managed_fields.unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("creator"));
    assert_eq!(mf[0].operation.as_deref(), Some("Update"));
    assert_eq!(
        mf[0].fields_v1.as_ref().unwrap().0,
        json!({"f:data": {".": {}, "f:a": {}}})
    );
    let patched = cms
        .patch(
            "c",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"a": "2", "b": "3"}})),
        )
        .await
        .unwrap();
    let mf = patched.metadata.managed_fields.unwrap();
    let by = |m: &str| {
        mf.iter()
            .find(|e| e.manager.as_deref() == Some(m))
            .map(|e| e.fields_v1.as_ref().unwrap().0.clone())
    };
    assert_eq!(by("creator"), Some(json!({"f:data": {}})));
    assert_eq!(
        by("editor"),
        Some(json!({"f:data": {"f:a": {}, "f:b": {}}}))
    );
    // A server-side apply of data.a now conflicts with "editor" (an Update entry).
    let apply = Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c"}, "data": {"a": "9"}}));
    let err = cms
        .patch("c", &PatchParams::apply("ssa"), &apply)
        .await
        .unwrap_err();
    let kube::Error::Api(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, 409);
    assert!(
        e.message.contains("conflict with \"editor\" using v1 at "),
        "{}",
        e.message
    );
    let done = cms
        .patch("c", &PatchParams::apply("ssa").force(), &apply)
        .await
        .unwrap();
    assert_eq!(done.data.unwrap()["a"], "9");
    // Resetting managedFields with an empty list.
    let reset = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"managedFields": []}})),
        )
        .await
        .unwrap();
    assert!(reset.metadata.managed_fields.is_none());
}

#[tokio::test]
async fn kube_rs_server_side_apply_and_status() {
    let s = support::start(|_| {}).await;
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let d = deploys
        .patch(
            "web",
            &PatchParams::apply("kube-rs-test"),
            &Patch::Apply(deployment(2, json!({"app": "web"}))),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.replicas, Some(2));
    // The status subresource has its own entries; a main apply cannot touch the status.
    let status = Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "status": {"replicas": 2, "readyReplicas": 1}}));
    let d = deploys
        .patch_status("web", &PatchParams::apply("controller"), &status)
        .await
        .unwrap();
    assert_eq!(d.status.as_ref().unwrap().ready_replicas, Some(1));
    let mf = d.metadata.managed_fields.unwrap();
    let ctrl = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("controller"))
        .unwrap();
    assert_eq!(ctrl.subresource.as_deref(), Some("status"));
    // Through the main resource the status is ignored (another manager: applying only
    // the status as kube-rs-test would remove everything it applied before).
    let mut other = status.clone();
    if let Patch::Apply(v) = &mut other {
        v["status"]["readyReplicas"] = json!(0);
    }
    let d = deploys
        .patch("web", &PatchParams::apply("other"), &other)
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(1));
    assert_eq!(d.spec.replicas, Some(2));
}
