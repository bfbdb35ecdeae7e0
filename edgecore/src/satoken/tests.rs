#![allow(clippy::unwrap_used)]

use proto::Response;
use serde_json::json;

use super::*;
use crate::store::StoreConfig;

fn pod(uid: &str, sources: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p-{uid}"), "namespace": "apps", "uid": uid},
        "spec": {"nodeName": "edge-1", "serviceAccountName": "robot",
                 "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "v", "projected": {"sources": sources}},
                             {"name": "e", "emptyDir": {}}]}
    }))
    .unwrap()
}

fn token_pod(uid: &str) -> Pod {
    pod(
        uid,
        json!([{"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 7200}},
               {"configMap": {"name": "cm"}}]),
    )
}

fn answer(token: &str, expires: &str) -> Response {
    Response {
        code: 201,
        body: json!({"kind": "TokenRequest",
                     "status": {"token": token, "expirationTimestamp": expires}})
        .to_string()
        .into_bytes(),
        ..Response::default()
    }
}

fn ts(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

fn open(dir: &std::path::Path) -> (Store, SaTokens) {
    let store = Store::open(dir, &StoreConfig::default()).unwrap();
    let tokens = SaTokens::open(&store).unwrap();
    (store, tokens)
}

#[test]
fn needs_follow_the_projections_with_kubernetes_defaults() {
    let a = token_pod("u1");
    let b = pod(
        "u2",
        json!([{"serviceAccountToken": {"path": "t1", "expirationSeconds": 60}},
               {"serviceAccountToken": {"path": "t2", "expirationSeconds": 60}}]),
    );
    let mut c = pod("u3", json!([{"configMap": {"name": "cm"}}]));
    c.spec.service_account_name = None;
    let n = needs(&[a, b, c]);
    assert_eq!(n.len(), 2, "{n:?}");
    let a = &n["u1/7200/vault"];
    assert_eq!(
        (a.service_account.as_str(), a.pod_name.as_str()),
        ("robot", "p-u1")
    );
    // Below Kubernetes' minimum lifetime: raised to it; two projections, one token.
    assert_eq!(n["u2/600/"].expiration_seconds, MIN_EXPIRATION);
    let mut d = pod("u4", json!([{"serviceAccountToken": {"path": "t"}}]));
    d.spec.service_account_name = None;
    let n = needs(&[d]);
    let d = &n["u4/3600/"];
    assert_eq!(d.service_account, "default");
    assert_eq!(d.expiration_seconds, DEFAULT_EXPIRATION);
}

#[test]
fn the_request_is_bound_to_the_pod() {
    let need = needs(&[token_pod("u1")]).remove("u1/7200/vault").unwrap();
    let body = need.request_body();
    assert_eq!(body["kind"], "TokenRequest");
    assert_eq!(body["spec"]["audiences"], json!(["vault"]));
    assert_eq!(body["spec"]["expirationSeconds"], 7200);
    assert_eq!(
        body["spec"]["boundObjectRef"],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "p-u1", "uid": "u1"})
    );
    let n = needs(&[pod("u9", json!([{"serviceAccountToken": {"path": "t"}}]))]);
    assert_eq!(n["u9/3600/"].request_body()["spec"]["audiences"], json!([]));
}

#[test]
fn renewal_is_due_at_80_percent_or_a_day() {
    let t = Token {
        token: "x".into(),
        issued_at: 1000,
        expires_at: 1000 + 3600,
    };
    assert!(!t.due(1000));
    assert!(!t.due(1000 + 2879));
    assert!(t.due(1000 + 2880));
    assert!(t.due(1000 + 4000), "expired is due");
    let long = Token {
        expires_at: 1000 + 10 * 24 * 3600,
        ..t
    };
    assert!(!long.due(1000 + 23 * 3600));
    assert!(long.due(1000 + 24 * 3600));
}

#[test]
fn answers_are_parsed_and_garbage_is_refused() {
    let r = answer("jwt", "2030-01-01T00:00:00Z");
    let t = Token::from_response(&r.body, 5).unwrap();
    assert_eq!(
        (t.token.as_str(), t.issued_at, t.expires_at),
        ("jwt", 5, ts("2030-01-01T00:00:00Z"))
    );
    for bad in [
        &b"not json"[..],
        br#"{"status": {}}"#,
        br#"{"status": {"token": "", "expirationTimestamp": "2030-01-01T00:00:00Z"}}"#,
        br#"{"status": {"token": "x", "expirationTimestamp": "tomorrow"}}"#,
    ] {
        assert!(Token::from_response(bad, 0).is_err(), "{bad:?}");
    }
}

#[test]
fn plan_requests_once_renews_when_due_and_forgets_gone_pods() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, tokens) = open(&tmp.path().join("s"));
    let pods = [token_pod("u1")];
    let wanted = needs(&pods);
    let now = ts("2030-01-01T00:00:00Z");
    assert_eq!(tokens.plan(&wanted, now).len(), 1);
    assert!(tokens.plan(&wanted, now + 5).is_empty(), "still waiting");
    assert_eq!(
        tokens.plan(&wanted, now + RETRY_UNANSWERED).len(),
        1,
        "an unanswered request is queued again"
    );
    let proj = &pods[0].spec.volumes[0].projected.as_ref().unwrap().sources[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(tokens.get(&pods[0], proj), None);
    let gen0 = tokens.generation();
    tokens.on_response(
        "satoken/u1/7200/vault",
        &answer("jwt-1", "2030-01-01T02:00:00Z"),
        now,
    );
    assert_eq!(tokens.get(&pods[0], proj).as_deref(), Some("jwt-1"));
    assert!(tokens.generation() > gen0);
    assert!(tokens.plan(&wanted, now + 5759).is_empty(), "fresh");
    assert_eq!(tokens.plan(&wanted, now + 5760).len(), 1, "80 % of 2 h");
    tokens.on_response(
        "satoken/u1/7200/vault",
        &answer("jwt-2", "2030-01-01T03:36:00Z"),
        now + 5760,
    );
    assert_eq!(tokens.get(&pods[0], proj).as_deref(), Some("jwt-2"));
    // Another writer's answers are not ours.
    tokens.on_response(
        "pod-status/u1",
        &answer("other", "2030-01-01T03:36:00Z"),
        now,
    );
    assert_eq!(tokens.len(), 1);
    // The pod is gone: its token is forgotten.
    assert!(tokens.plan(&BTreeMap::new(), now + 6000).is_empty());
    assert!(tokens.is_empty());
}

#[test]
fn refused_requests_wait_and_failures_keep_the_last_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, tokens) = open(&tmp.path().join("s"));
    let pods = [token_pod("u1")];
    let wanted = needs(&pods);
    let now = 1_000_000;
    assert_eq!(tokens.plan(&wanted, now).len(), 1);
    let refused = Response {
        code: 403,
        reason: "Forbidden".into(),
        ..Response::default()
    };
    tokens.on_response("satoken/u1/7200/vault", &refused, now);
    let retry = i64::try_from(RETRY_REFUSED.as_secs()).unwrap();
    assert!(tokens.plan(&wanted, now + retry - 1).is_empty());
    assert_eq!(tokens.plan(&wanted, now + retry).len(), 1);
    tokens.on_response(
        "satoken/u1/7200/vault",
        &answer("jwt", "1970-01-12T14:46:40Z"),
        now,
    );
    // A transient failure (the outbox retries) and a garbage answer keep the token.
    let unavailable = Response {
        code: 503,
        ..Response::default()
    };
    tokens.on_response("satoken/u1/7200/vault", &unavailable, now);
    let garbage = Response {
        code: 201,
        body: b"{}".to_vec(),
        ..Response::default()
    };
    tokens.on_response("satoken/u1/7200/vault", &garbage, now);
    let proj = pods[0].spec.volumes[0].projected.as_ref().unwrap().sources[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(tokens.get(&pods[0], &proj).as_deref(), Some("jwt"));
}

#[test]
fn tokens_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let pods = [token_pod("u1")];
    let proj = pods[0].spec.volumes[0].projected.as_ref().unwrap().sources[0]
        .service_account_token
        .clone()
        .unwrap();
    {
        let (store, tokens) = open(&dir);
        tokens.on_response(
            "satoken/u1/7200/vault",
            &answer("kept", "2030-01-01T02:00:00Z"),
            1,
        );
        store.flush().unwrap();
    }
    let (_store, tokens) = open(&dir);
    assert_eq!(tokens.get(&pods[0], &proj).as_deref(), Some("kept"));
}
