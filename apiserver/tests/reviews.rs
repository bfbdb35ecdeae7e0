//! The reviews (`kubectl auth whoami`, `kubectl auth can-i`, TokenReview, …) through the
//! real HTTP stack with real kubectl: served, listed in discovery and `/openapi/v3`, create
//! only, and refusing bad bodies with a Status.

#![allow(clippy::unwrap_used)]

#[path = "support/server.rs"]
mod support;

use std::process::Stdio;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::{Server, within};

const AUTHZ: &str = "/apis/authorization.k8s.io/v1";
const AUTHN: &str = "/apis/authentication.k8s.io/v1";

/// kubectl's output: (success, stdout, stderr). Its own discovery cache in the test's
/// directory, so no other run's cache answers for this server.
async fn kubectl_with(
    s: &Server,
    base: &[&str],
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.args(base)
        .arg("--cache-dir")
        .arg(s.dir.path().join("kubectl-cache"))
        .args(["--request-timeout", "20s"])
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("kubectl is on PATH");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.unwrap();
    }
    let out = within(&format!("kubectl {args:?}"), child.wait_with_output())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// kubectl as the admin of the server's kubeconfig; must succeed.
async fn kubectl(s: &Server, args: &[&str]) -> String {
    // (kubectl's client-side validation wants /openapi/v2 for a kind without PATCH, as
    // for any review on any server; /openapi/v2 is not served, so it is off here.)
    let kc = s.kubeconfig.to_str().unwrap().to_string();
    let (ok, out, err) = kubectl_with(s, &["--kubeconfig", &kc], args, None).await;
    assert!(ok, "kubectl {args:?} failed: {err}{out}");
    out
}

async fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    s.raw(
        "POST",
        path,
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_whoami_and_list() {
    let s = support::start(|_| {}).await;
    assert_eq!(
        kubectl(&s, &["auth", "can-i", "get", "pods"]).await.trim(),
        "yes"
    );
    assert_eq!(
        kubectl(
            &s,
            &["auth", "can-i", "delete", "nodes", "--all-namespaces"]
        )
        .await
        .trim(),
        "yes"
    );
    let list = kubectl(&s, &["auth", "can-i", "--list"]).await;
    let star = list
        .lines()
        .find(|l| l.starts_with("*.*"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(star.contains("[*]"), "{list}");

    let me: Value =
        serde_json::from_str(&kubectl(&s, &["auth", "whoami", "-o", "json"]).await).unwrap();
    assert_eq!(me["kind"], "SelfSubjectReview", "{me}");
    assert!(
        me["status"]["userInfo"]["username"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "{me}"
    );

    // kubectl explain reads /openapi/v3/apis/authorization.k8s.io/v1.
    let explained = kubectl(
        &s,
        &[
            "explain",
            "selfsubjectaccessreviews.spec.resourceAttributes",
        ],
    )
    .await;
    assert!(explained.contains("verb"), "{explained}");

    let ssar = "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\nspec:\n  resourceAttributes:\n    verb: list\n    resource: secrets\n    namespace: kube-system\n";
    // (kubectl's client-side validation wants /openapi/v2 for a kind without PATCH, as
    // for any review on any server; /openapi/v2 is not served, so it is off here.)
    let kc = s.kubeconfig.to_str().unwrap().to_string();
    let (ok, out, err) = kubectl_with(
        &s,
        &["--kubeconfig", &kc],
        &["create", "-f", "-", "-o", "json", "--validate=false"],
        Some(ssar),
    )
    .await;
    assert!(ok, "kubectl create SelfSubjectAccessReview: {err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(made["status"]["allowed"], true, "{made}");
    assert_eq!(
        made["spec"]["resourceAttributes"]["resource"], "secrets",
        "{made}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_in_discovery_and_openapi() {
    let s = support::start(|_| {}).await;
    let names = kubectl(&s, &["api-resources", "-o", "name"]).await;
    for r in [
        "selfsubjectreviews.authentication.k8s.io",
        "tokenreviews.authentication.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectrulesreviews.authorization.k8s.io",
        "subjectaccessreviews.authorization.k8s.io",
        "localsubjectaccessreviews.authorization.k8s.io",
    ] {
        assert!(
            names.lines().any(|l| l == r),
            "{r} missing from api-resources:\n{names}"
        );
    }
    let wide = kubectl(
        &s,
        &[
            "api-resources",
            "--api-group",
            "authorization.k8s.io",
            "-o",
            "wide",
        ],
    )
    .await;
    let lsar = wide
        .lines()
        .find(|l| l.starts_with("localsubjectaccessreviews"))
        .unwrap_or_else(|| panic!("{wide}"));
    assert!(lsar.contains("true") && lsar.contains("create"), "{wide}");

    let list: Value = serde_json::from_str(&kubectl(&s, &["get", "--raw", AUTHZ]).await).unwrap();
    let resources = list["resources"].as_array().unwrap();
    let find = |n: &str| {
        resources
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n}: {list}"))
    };
    assert_eq!(find("selfsubjectaccessreviews")["verbs"], json!(["create"]));
    assert_eq!(find("selfsubjectaccessreviews")["namespaced"], false);
    assert_eq!(find("localsubjectaccessreviews")["namespaced"], true);
    let list: Value = serde_json::from_str(&kubectl(&s, &["get", "--raw", AUTHN]).await).unwrap();
    assert!(
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "tokenreviews"),
        "{list}"
    );

    let groups: Value =
        serde_json::from_str(&kubectl(&s, &["get", "--raw", "/apis"]).await).unwrap();
    for g in ["authentication.k8s.io", "authorization.k8s.io"] {
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == g),
            "{g}: {groups}"
        );
    }
    let (code, group) = s.get("/apis/authorization.k8s.io").await;
    assert_eq!(
        (code, group["preferredVersion"]["version"].clone()),
        (200, json!("v1")),
        "{group}"
    );

    let (_, index) = s.get("/openapi/v3").await;
    assert!(
        index["paths"]["apis/authorization.k8s.io/v1"].is_object(),
        "{index}"
    );
    let (code, doc) = s.get("/openapi/v3/apis/authorization.k8s.io/v1").await;
    assert_eq!(code, 200);
    let path = &doc["paths"][&format!("{AUTHZ}/selfsubjectaccessreviews")];
    assert!(
        path["post"].is_object() && path.get("get").is_none(),
        "{path}"
    );
    assert!(doc["paths"][&format!("{AUTHZ}/namespaces/{{namespace}}/localsubjectaccessreviews")]["post"].is_object());
    assert!(
        doc["components"]["schemas"]["io.k8s.api.authorization.v1.SelfSubjectAccessReview"]
            .is_object()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_create_only_and_refuse_bad_bodies() {
    let s = support::start(|_| {}).await;
    for path in [
        format!("{AUTHZ}/selfsubjectaccessreviews"),
        format!("{AUTHZ}/selfsubjectrulesreviews"),
        format!("{AUTHN}/tokenreviews"),
        format!("{AUTHZ}/namespaces/default/localsubjectaccessreviews"),
    ] {
        let (code, st) = s.get(&path).await;
        assert_eq!(
            (code, st["reason"].clone()),
            (405, json!("MethodNotAllowed")),
            "GET {path}: {st}"
        );
    }
    let ssar = format!("{AUTHZ}/selfsubjectaccessreviews");
    // Neither attribute: Kubernetes' validation error.
    let (code, st) = post(&s, &ssar, json!({"spec": {}})).await;
    assert_eq!(
        (code, st["reason"].clone()),
        (422, json!("Invalid")),
        "{st}"
    );
    assert_eq!(
        st["details"]["causes"][0]["field"], "spec.resourceAttributes",
        "{st}"
    );
    // A spec of the wrong shape, a body that is not JSON, a body of another kind.
    let (code, st) = post(&s, &ssar, json!({"spec": "everything"})).await;
    assert_eq!((code, st["kind"].clone()), (400, json!("Status")), "{st}");
    let (code, st) = s
        .raw("POST", &ssar, "application/json", b"{not json".to_vec())
        .await;
    assert_eq!((code, st["kind"].clone()), (400, json!("Status")), "{st}");
    let (code, _) = post(&s, &ssar, json!({"apiVersion": "v1", "kind": "Pod"})).await;
    assert_eq!(code, 400);
    let (code, st) = post(
        &s,
        &format!("{AUTHZ}/selfsubjectrulesreviews"),
        json!({"spec": {}}),
    )
    .await;
    assert_eq!(code, 400, "{st}");
    assert_eq!(st["message"], "no namespace on request");
    // Wrong scope: no route.
    let (code, _) = post(&s, &format!("{AUTHZ}/localsubjectaccessreviews"), json!({})).await;
    assert_eq!(code, 404);

    // An answer echoes the request.
    let (code, r) = post(
        &s,
        &ssar,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}}),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["kind"], "SelfSubjectAccessReview");
    assert_eq!(r["spec"]["nonResourceAttributes"]["path"], "/healthz");
    assert_eq!(r["status"]["allowed"], true);
    assert!(
        r["status"]["reason"]
            .as_str()
            .is_some_and(|x| x.contains("authorizer")),
        "{r}"
    );

    // No credentials at all: 401 before any review.
    for path in [ssar, format!("{AUTHZ}/selfsubjectrulesreviews")] {
        let body = br#"{"spec": {"namespace": "default", "resourceAttributes": {"verb": "get"}}}"#;
        let (code, st) = s
            .request("POST", &path, "", "application/json", body.to_vec())
            .await;
        assert_eq!(
            (code, st["reason"].clone()),
            (401, json!("Unauthorized")),
            "{path}: {st}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_subject_access_reviews() {
    let s = support::start(|_| {}).await;
    let tr = format!("{AUTHN}/tokenreviews");
    let admin = s.server.pki.admin_token().to_string();
    let (code, r) = post(&s, &tr, json!({"spec": {"token": admin}})).await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert!(
        r["status"]["user"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("system:authenticated")),
        "{r}"
    );
    assert!(
        !r["status"]["audiences"].as_array().unwrap().is_empty(),
        "{r}"
    );
    let (_, r) = post(&s, &tr, json!({"spec": {"token": "not-a-token"}})).await;
    assert_eq!(r["status"]["authenticated"], false, "{r}");
    let (_, r) = post(
        &s,
        &tr,
        json!({"spec": {"token": admin, "audiences": ["elsewhere"]}}),
    )
    .await;
    assert_eq!(r["status"]["authenticated"], false, "{r}");
    let (code, _) = post(&s, &tr, json!({"spec": {}})).await;
    assert_eq!(code, 400);

    let sar = format!("{AUTHZ}/subjectaccessreviews");
    let attrs = json!({"verb": "get", "resource": "pods", "namespace": "default"});
    let (code, r) = post(
        &s,
        &sar,
        json!({"spec": {"user": "bob", "resourceAttributes": attrs}}),
    )
    .await;
    assert_eq!(
        (code, r["status"]["allowed"].clone()),
        (201, json!(true)),
        "{r}"
    );
    let (code, st) = post(&s, &sar, json!({"spec": {"resourceAttributes": attrs}})).await;
    assert_eq!(
        (code, st["details"]["causes"][0]["field"].clone()),
        (422, json!("spec.user")),
        "{st}"
    );

    let lsar = format!("{AUTHZ}/namespaces/default/localsubjectaccessreviews");
    let (code, r) = post(
        &s,
        &lsar,
        json!({"spec": {"groups": ["devs"], "resourceAttributes": attrs}}),
    )
    .await;
    assert_eq!(
        (code, r["metadata"]["namespace"].clone()),
        (201, json!("default")),
        "{r}"
    );
    assert_eq!(r["status"]["allowed"], true);
    let other = json!({"verb": "get", "resource": "pods", "namespace": "kube-system"});
    let (code, st) = post(
        &s,
        &lsar,
        json!({"spec": {"user": "bob", "resourceAttributes": other}}),
    )
    .await;
    assert_eq!(code, 422, "{st}");

    // kube-rs, typed.
    let api: Api<SelfSubjectAccessReview> = Api::all(s.client.clone());
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {"verb": "create", "resource": "deployments", "group": "apps"}}
    }))
    .unwrap();
    let got = within(
        "kube-rs SelfSubjectAccessReview",
        api.create(&PostParams::default(), &review),
    )
    .await
    .unwrap();
    assert!(got.status.unwrap().allowed);
}
