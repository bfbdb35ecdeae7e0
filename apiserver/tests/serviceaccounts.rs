//! ServiceAccounts through the real HTTP stack: per-namespace defaults, pod admission, and
//! TokenRequest tokens that authenticate until they expire or what they are bound to goes.

#![allow(clippy::unwrap_used)]

#[path = "support/server.rs"]
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn pod(name: &str, spec: Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn token(s: &support::Server, ns: &str, sa: &str, spec: Value) -> (u16, Value) {
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    s.raw(
        "POST",
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await
}

async fn status_as(s: &support::Server, tok: &str) -> u16 {
    s.request(
        "GET",
        "/api/v1/namespaces/default/configmaps",
        tok,
        "application/json",
        vec![],
    )
    .await
    .0
}

#[tokio::test]
async fn namespaces_get_a_default_service_account_and_the_ca_bundle() {
    let s = support::start(|_| {}).await;
    let ca = s.server.pki.ca_cert_pem().to_string();
    let nss: Api<Namespace> = Api::all(s.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    for ns in ["default", "kube-system", "team"] {
        let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), ns);
        sas.get("default").await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), ns);
        let cm = cms.get("kube-root-ca.crt").await.unwrap();
        assert_eq!(cm.data.unwrap()["ca.crt"], ca);
    }
    // Deleted or edited, they come back.
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "team");
    let old = sas.get("default").await.unwrap().metadata.uid;
    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    assert_ne!(sas.get("default").await.unwrap().metadata.uid, old);
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "team");
    let mut cm = cms.get("kube-root-ca.crt").await.unwrap();
    cm.data = Some([("ca.crt".to_string(), "bogus".to_string())].into());
    cms.replace("kube-root-ca.crt", &PostParams::default(), &cm)
        .await
        .unwrap();
    assert_eq!(
        cms.get("kube-root-ca.crt").await.unwrap().data.unwrap()["ca.crt"],
        ca
    );
    // Discovery lists the token subresource.
    let (_, list) = s.get("/api/v1").await;
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"serviceaccounts/token"));
}

#[tokio::test]
async fn pods_get_the_projected_token_volume() {
    let s = support::start(|_| {}).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let p = pods
        .create(&PostParams::default(), &pod("plain", json!({})))
        .await
        .unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let vols = spec.volumes.unwrap();
    let vol = serde_json::to_value(&vols[0]).unwrap();
    assert!(
        vol["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-")
    );
    assert_eq!(
        vol["projected"]["sources"][0]["serviceAccountToken"],
        json!({"expirationSeconds": 3607, "path": "token"})
    );
    let mount = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        (MOUNT, Some(true))
    );
    let off = pods
        .create(
            &PostParams::default(),
            &pod("off", json!({"automountServiceAccountToken": false})),
        )
        .await
        .unwrap();
    assert!(off.spec.unwrap().volumes.is_none());
    let err = pods
        .create(
            &PostParams::default(),
            &pod("ghost", json!({"serviceAccountName": "ghost"})),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "pods \"ghost\" is forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" not found"
    );
}

#[tokio::test]
async fn tokens_authenticate_until_they_expire_or_their_binding_goes() {
    let s = support::start(|c| c.min_token_ttl = Duration::from_secs(1)).await;
    // An unbound token with a two-second life.
    let (code, tr) = token(&s, "default", "default", json!({"expirationSeconds": 2})).await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(
        tr["spec"]["audiences"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    let short = tr["status"]["token"].as_str().unwrap().to_string();
    assert!(tr["status"]["expirationTimestamp"].is_string());
    // A token bound to a pod.
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let p = pods
        .create(&PostParams::default(), &pod("bound", json!({})))
        .await
        .unwrap();
    let uid = p.metadata.uid.unwrap();
    let bound_ref = json!({"kind": "Pod", "apiVersion": "v1", "name": "bound", "uid": uid});
    let (code, tr) = token(
        &s,
        "default",
        "default",
        json!({"boundObjectRef": bound_ref}),
    )
    .await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    let bound = tr["status"]["token"].as_str().unwrap().to_string();
    // A token for an audience other than the API's does not authenticate against it.
    let (_, tr) = token(&s, "default", "default", json!({"audiences": ["vault"]})).await;
    let vault = tr["status"]["token"].as_str().unwrap().to_string();

    assert_eq!(status_as(&s, &short).await, 200);
    assert_eq!(status_as(&s, &bound).await, 200);
    assert_eq!(status_as(&s, &vault).await, 401);
    assert_eq!(status_as(&s, "not.a.token").await, 401);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(status_as(&s, &short).await, 401, "expired");
    assert_eq!(status_as(&s, &bound).await, 200);
    pods.delete("bound", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(status_as(&s, &bound).await, 401, "pod gone");

    // The ServiceAccount recreated (new uid) invalidates its old tokens.
    let (_, tr) = token(&s, "default", "default", json!({})).await;
    let before = tr["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(status_as(&s, &before).await, 200);
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(status_as(&s, &before).await, 401, "ServiceAccount replaced");
}

#[tokio::test]
async fn token_requests_are_checked() {
    let s = support::start(|_| {}).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("p", json!({})))
        .await
        .unwrap();
    let cases = [
        ("default", json!({"expirationSeconds": 60}), 422),
        (
            "default",
            json!({"expirationSeconds": 5_000_000_000_i64}),
            422,
        ),
        ("nobody", json!({}), 404),
        (
            "default",
            json!({"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}}),
            400,
        ),
        (
            "default",
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "missing"}}),
            404,
        ),
        (
            "default",
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "nope"}}),
            409,
        ),
        ("default", json!({"expirationSeconds": 600}), 201),
    ];
    for (sa, spec, want) in cases {
        let (code, body) = token(&s, "default", sa, spec.clone()).await;
        assert_eq!(code, want, "{spec}: {body}");
    }
    let (_, body) = token(&s, "default", "default", json!({"expirationSeconds": 60})).await;
    assert_eq!(
        body["message"],
        "TokenRequest.authentication.k8s.io \"default\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
    );
}
