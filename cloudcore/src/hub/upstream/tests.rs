#![allow(clippy::unwrap_used)]

use super::*;
use proto::frame::STRATEGIC_MERGE_PATCH;

fn key(s: &str) -> ResourceKey {
    ResourceKey::parse(s).unwrap()
}

fn req(op: Op, k: &str, body: &str) -> Frame {
    Frame::request(7, op, &key(k), body.as_bytes().to_vec())
}

fn route(p: &Plan) -> (Method, &str, Option<&str>) {
    (p.method.clone(), p.path.as_str(), p.content_type.as_deref())
}

#[test]
fn plans_paths_and_methods_per_op() {
    let p = plan(&req(Op::Get, "default/pod/nginx", "")).unwrap();
    assert_eq!(
        route(&p),
        (Method::GET, "/api/v1/namespaces/default/pods/nginx", None)
    );
    let p = plan(&req(Op::PatchStatus, "null/node/edge-1", "{}")).unwrap();
    assert_eq!(
        route(&p),
        (
            Method::PATCH,
            "/api/v1/nodes/edge-1/status",
            Some(MERGE_PATCH)
        )
    );
    let p =
        plan(&req(Op::PatchStatus, "default/pod/p", "{}").with_content_type(STRATEGIC_MERGE_PATCH))
            .unwrap();
    assert_eq!(p.content_type.as_deref(), Some(STRATEGIC_MERGE_PATCH));
    let p = plan(&req(Op::UpdateStatus, "default/pod/p", "{}")).unwrap();
    assert_eq!(
        route(&p),
        (
            Method::PUT,
            "/api/v1/namespaces/default/pods/p/status",
            Some("application/json")
        )
    );
    let p = plan(&req(Op::Create, "kube-node-lease/lease/edge-1", "{}")).unwrap();
    assert_eq!(
        route(&p),
        (
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Some("application/json")
        )
    );
    let p = plan(&req(Op::Update, "kube-node-lease/lease/edge-1", "{}")).unwrap();
    assert_eq!(
        p.path,
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1"
    );
    let p = plan(&req(
        Op::Delete,
        "default/pod/p",
        r#"{"gracePeriodSeconds":0}"#,
    ))
    .unwrap();
    assert_eq!(
        route(&p),
        (
            Method::DELETE,
            "/api/v1/namespaces/default/pods/p",
            Some("application/json")
        )
    );
    assert_eq!(&p.body[..], br#"{"gracePeriodSeconds":0}"#);
    let p = plan(&req(Op::PatchStatus, "default/device/d", "{}")).unwrap();
    assert_eq!(
        p.path,
        "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/d/status"
    );
    let p = plan(&req(
        Op::Create,
        "default/serviceaccounttoken/default",
        "{}",
    ))
    .unwrap();
    assert_eq!(
        route(&p),
        (
            Method::POST,
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            Some("application/json")
        )
    );
    let ev = Frame::event(3, Op::Create, &key("default/event/p.1"), b"{}".to_vec());
    assert_eq!(plan(&ev).unwrap().path, "/api/v1/namespaces/default/events");
}

#[test]
fn lists_are_filtered_collections() {
    let p = plan(&Frame::list(1, &CollectionKey::parse("null/pod").unwrap())).unwrap();
    assert_eq!(p.path, "/api/v1/pods");
    assert_eq!(p.filter.unwrap().kind, "pod");
    let p = plan(&Frame::list(
        1,
        &CollectionKey::parse("default/devicemodel").unwrap(),
    ))
    .unwrap();
    assert_eq!(
        p.path,
        "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicemodels"
    );
    assert!(
        plan(&Frame::list(
            1,
            &CollectionKey::parse("default/node").unwrap()
        ))
        .is_err()
    );
}

#[test]
fn scope_mismatches_and_unknown_kinds_are_refused() {
    assert!(plan(&req(Op::Get, "default/node/x", "")).is_err());
    assert!(plan(&req(Op::Get, "null/pod/x", "")).is_err());
    assert!(plan(&req(Op::Get, "default/widget/x", "")).is_err());
}

#[test]
fn names_are_escaped_in_paths() {
    let p = plan(&req(Op::Get, "default/pod/a?b#c:d", "")).unwrap();
    assert_eq!(p.path, "/api/v1/namespaces/default/pods/a%3Fb%23c%3Ad");
}

#[test]
fn device_desired_merge_patch_becomes_a_guarded_json_patch() {
    let body = r#"{"spec":{"properties":[{"name":"temp","desired":{"value":"21"}},{"name":"fan","desired":null}]}}"#;
    let p = plan(&req(Op::Patch, "default/device/d", body)).unwrap();
    assert_eq!(p.content_type.as_deref(), Some(JSON_PATCH));
    let desired = p.desired.unwrap();
    let device =
        br#"{"spec":{"properties":[{"name":"fan","desired":{"value":"on"}},{"name":"temp"}]}}"#;
    let patch: Value =
        serde_json::from_slice(&desired_json_patch(device, &desired).unwrap()).unwrap();
    assert_eq!(
        patch,
        json!([
            {"op":"test","path":"/spec/properties/1/name","value":"temp"},
            {"op":"add","path":"/spec/properties/1/desired","value":{"value":"21"}},
            {"op":"test","path":"/spec/properties/0/name","value":"fan"},
            {"op":"remove","path":"/spec/properties/0/desired"},
        ])
    );
    let err = desired_json_patch(device, &[("nope".into(), json!({}))]).unwrap_err();
    assert!(err.contains("nope"));
    // A JSON patch is passed through unchanged.
    let jp = r#"[{"op":"add","path":"/spec/properties/0/desired","value":{}}]"#;
    let p = plan(&req(Op::Patch, "default/device/d", jp).with_content_type(JSON_PATCH)).unwrap();
    assert!(p.desired.is_none());
    assert_eq!(&p.body[..], jp.as_bytes());
}

#[test]
fn transient_and_final_statuses() {
    for s in [200, 201, 400, 403, 404, 409, 410, 422] {
        assert!(is_final(s), "{s}");
    }
    for s in [408, 429, 500, 502, 503, 504] {
        assert!(!is_final(s), "{s}");
    }
}

#[test]
fn responses_carry_code_reason_and_resource_version() {
    let ok = to_outcome(
        200,
        Bytes::from_static(br#"{"metadata":{"resourceVersion":"42"}}"#),
    );
    match ok {
        Outcome::Final(r, rv) => {
            assert_eq!((r.code, r.reason.as_str(), rv.as_str()), (200, "", "42"));
        }
        other => panic!("{other:?}"),
    }
    let status = br#"{"kind":"Status","status":"Failure","reason":"NotFound","message":"pods \"x\" not found","code":404}"#;
    match to_outcome(404, Bytes::from_static(status)) {
        Outcome::Final(r, _) => {
            assert_eq!(r.code, 404);
            assert_eq!(r.reason, "NotFound");
            assert!(r.message.contains("not found"));
            assert_eq!(r.body, status.to_vec());
        }
        other => panic!("{other:?}"),
    }
    match to_outcome(409, Bytes::from_static(b"plain text")) {
        Outcome::Final(r, _) => assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            ("Conflict", "plain text")
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        to_outcome(503, Bytes::new()),
        Outcome::Transient(_)
    ));
    match refusal(403, "Forbidden", "no") {
        Outcome::Final(r, _) => {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["reason"], "Forbidden");
            assert_eq!(r.code, 403);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn list_items_are_filtered_by_what_the_node_may_read() {
    let body = br#"{"kind":"PodList","items":[
        {"metadata":{"name":"mine","namespace":"default"}},
        {"metadata":{"name":"theirs","namespace":"default"}},
        {"metadata":{}}]}"#;
    let coll = CollectionKey::parse("null/pod").unwrap();
    let out = filter_list(body, &coll, |k| k.name == "mine").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["metadata"]["name"], "mine");
    assert_eq!(v["kind"], "PodList");
}

#[test]
fn lease_renewals_are_stamped_with_the_cloud_clock() {
    let now = "2030-01-01T00:00:00.000001Z";
    let stale = br#"{"spec":{"holderIdentity":"e1","renewTime":"2020-01-01T00:00:00.000000Z"}}"#;
    let out: serde_json::Value =
        serde_json::from_slice(&restamp_lease(stale, now).unwrap()).unwrap();
    assert_eq!(out["spec"]["renewTime"], now);
    assert_eq!(out["spec"]["holderIdentity"], "e1");
    // Nothing to renew, or not JSON: left alone.
    assert!(restamp_lease(br#"{"spec":{"holderIdentity":"e1"}}"#, now).is_none());
    assert!(restamp_lease(br#"[{"op":"replace"}]"#, now).is_none());
    assert!(restamp_lease(b"garbage", now).is_none());
}
