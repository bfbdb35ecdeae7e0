#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use super::*;
use proto::frame::{JSON_PATCH, MERGE_PATCH};

/// Node `a` runs pod `default/pa` (using configmap `cfg-a`) and device
/// `default/da`; node `b` runs pod `default/pb` and device `default/db`.
struct Fake {
    pods: HashMap<&'static str, &'static str>,
    devices: HashMap<&'static str, &'static str>,
}

impl Fake {
    fn new() -> Self {
        Fake {
            pods: HashMap::from([("pa", "a"), ("pb", "b")]),
            devices: HashMap::from([("da", "a"), ("db", "b")]),
        }
    }
}

impl Facts for Fake {
    fn node_may_read(&self, node: &str, key: &ResourceKey) -> bool {
        let owner = match (key.kind.as_str(), key.name.as_str()) {
            ("node", n) => Some(n),
            ("pod", n) => self.pods.get(n).copied(),
            ("device", n) => self.devices.get(n).copied(),
            ("configmap", "cfg-a") | ("serviceaccount", "sa-a") => Some("a"),
            _ => None,
        };
        owner == Some(node)
    }
    fn pod_node(&self, _ns: &str, name: &str) -> Option<String> {
        self.pods.get(name).map(|n| n.to_string())
    }
    fn device_node(&self, _ns: &str, name: &str) -> Option<String> {
        self.devices.get(name).map(|n| n.to_string())
    }
}

fn key(s: &str) -> ResourceKey {
    ResourceKey::parse(s).unwrap()
}

fn req(op: Op, k: &str, body: &str) -> Frame {
    Frame::request(1, op, &key(k), body.as_bytes().to_vec())
}

fn check(node: &str, frame: &Frame) -> Result<(), Refusal> {
    authorize(node, frame, &Fake::new())
}

fn forbidden(node: &str, frame: &Frame) -> String {
    let r = check(node, frame).unwrap_err();
    assert_eq!((r.code, r.reason), (403, "Forbidden"), "{r:?}");
    r.metric
}

const STATUS: &str = r#"{"status":{"phase":"Running"}}"#;

#[test]
fn reads_are_limited_to_the_nodes_objects() {
    assert!(check("a", &req(Op::Get, "default/pod/pa", "")).is_ok());
    assert!(check("a", &req(Op::Get, "default/configmap/cfg-a", "")).is_ok());
    assert!(check("a", &req(Op::Get, "null/node/a", "")).is_ok());
    assert!(check("a", &req(Op::Get, "kube-node-lease/lease/a", "")).is_ok());
    assert!(check("a", &req(Op::Get, "default/device/da", "")).is_ok());
    assert_eq!(
        forbidden("a", &req(Op::Get, "default/pod/pb", "")),
        "forbidden_get"
    );
    assert_eq!(
        forbidden("a", &req(Op::Get, "null/node/b", "")),
        "forbidden_get"
    );
    assert_eq!(
        forbidden("a", &req(Op::Get, "default/secret/other", "")),
        "forbidden_get"
    );
    assert_eq!(
        forbidden("a", &req(Op::Get, "kube-node-lease/lease/b", "")),
        "forbidden_get"
    );
}

#[test]
fn lists_only_of_readable_kinds() {
    let list = |c: &str| Frame::list(1, &CollectionKey::parse(c).unwrap());
    assert!(check("a", &list("default/pod")).is_ok());
    assert!(check("a", &list("null/node")).is_ok());
    assert_eq!(forbidden("a", &list("default/lease")), "forbidden_list");
    assert_eq!(forbidden("a", &list("default/event")), "forbidden_list");
}

#[test]
fn status_writes_only_for_own_node_and_pods() {
    let node_status = r#"{"status":{"conditions":[]}}"#;
    assert!(check("a", &req(Op::PatchStatus, "null/node/a", node_status)).is_ok());
    assert!(check("a", &req(Op::PatchStatus, "default/pod/pa", STATUS)).is_ok());
    let update = r#"{"metadata":{"name":"pa","namespace":"default"},"status":{}}"#;
    assert!(check("a", &req(Op::UpdateStatus, "default/pod/pa", update)).is_ok());
    // node A writing node B's status, or B's pod status: refused
    assert_eq!(
        forbidden("a", &req(Op::PatchStatus, "null/node/b", node_status)),
        "forbidden_patch_status"
    );
    assert_eq!(
        forbidden("a", &req(Op::PatchStatus, "default/pod/pb", STATUS)),
        "forbidden_patch_status"
    );
    assert_eq!(
        forbidden("a", &req(Op::UpdateStatus, "default/pod/pb", update)),
        "forbidden_update_status"
    );
    // unknown pod
    assert_eq!(
        forbidden("a", &req(Op::PatchStatus, "default/pod/ghost", STATUS)),
        "forbidden_patch_status"
    );
    // writing a spec or the whole object is never allowed
    assert_eq!(
        forbidden("a", &req(Op::Patch, "default/pod/pa", STATUS)),
        "forbidden_patch"
    );
    assert_eq!(
        forbidden("a", &req(Op::Update, "null/node/a", update)),
        "forbidden_update"
    );
    assert_eq!(
        forbidden("a", &req(Op::Create, "default/pod/new", update)),
        "forbidden_create"
    );
}

#[test]
fn update_status_body_must_name_the_key() {
    let other = r#"{"metadata":{"name":"pb","namespace":"default"},"status":{}}"#;
    let r = check("a", &req(Op::UpdateStatus, "default/pod/pa", other)).unwrap_err();
    assert_eq!((r.code, r.metric.as_str()), (400, "bad_request"));
}

#[test]
fn lease_writes_only_for_own_lease() {
    let lease =
        |n: &str| format!(r#"{{"metadata":{{"name":"{n}","namespace":"kube-node-lease"}}}}"#);
    assert!(
        check(
            "a",
            &req(Op::Create, "kube-node-lease/lease/a", &lease("a"))
        )
        .is_ok()
    );
    assert!(
        check(
            "a",
            &req(Op::Update, "kube-node-lease/lease/a", &lease("a"))
        )
        .is_ok()
    );
    assert!(
        check(
            "a",
            &req(Op::Patch, "kube-node-lease/lease/a", r#"{"spec":{}}"#)
        )
        .is_ok()
    );
    assert_eq!(
        forbidden(
            "a",
            &req(Op::Update, "kube-node-lease/lease/b", &lease("b"))
        ),
        "forbidden_update"
    );
    assert_eq!(
        forbidden("a", &req(Op::Delete, "kube-node-lease/lease/a", "")),
        "forbidden_delete"
    );
    // the key is our lease but the body creates another one
    let r = check(
        "a",
        &req(Op::Create, "kube-node-lease/lease/a", &lease("b")),
    )
    .unwrap_err();
    assert_eq!(r.code, 400);
}

#[test]
fn pod_delete_only_as_confirmation() {
    let grace0 = r#"{"gracePeriodSeconds":0,"preconditions":{"uid":"u"}}"#;
    assert!(check("a", &req(Op::Delete, "default/pod/pa", grace0)).is_ok());
    assert_eq!(
        forbidden("a", &req(Op::Delete, "default/pod/pa", "")),
        "forbidden_delete"
    );
    assert_eq!(
        forbidden(
            "a",
            &req(Op::Delete, "default/pod/pa", r#"{"gracePeriodSeconds":30}"#)
        ),
        "forbidden_delete"
    );
    assert_eq!(
        forbidden("a", &req(Op::Delete, "default/pod/pb", grace0)),
        "forbidden_delete"
    );
    assert_eq!(
        forbidden("a", &req(Op::Delete, "default/configmap/cfg-a", grace0)),
        "forbidden_delete"
    );
}

fn event_body(name: &str, kind: &str, obj: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}","namespace":"default"}},"involvedObject":{{"kind":"{kind}","namespace":"default","name":"{obj}"}},"reason":"Started"}}"#
    )
}

#[test]
fn events_only_about_own_objects() {
    let ok = event_body("pa.1", "Pod", "pa");
    assert!(check("a", &req(Op::Create, "default/event/pa.1", &ok)).is_ok());
    assert!(
        check(
            "a",
            &Frame::event(
                1,
                Op::Create,
                &key("default/event/pa.1"),
                ok.clone().into_bytes()
            )
        )
        .is_ok()
    );
    let node_ev = event_body("a.1", "Node", "a");
    assert!(check("a", &req(Op::Create, "default/event/a.1", &node_ev)).is_ok());
    let dev_ev = event_body("da.1", "Device", "da");
    assert!(check("a", &req(Op::Create, "default/event/da.1", &dev_ev)).is_ok());

    let theirs = event_body("pb.1", "Pod", "pb");
    assert_eq!(
        forbidden("a", &req(Op::Create, "default/event/pb.1", &theirs)),
        "forbidden_create"
    );
    let ev = Frame::event(
        1,
        Op::Create,
        &key("default/event/pb.1"),
        theirs.into_bytes(),
    );
    assert_eq!(forbidden("a", &ev), "forbidden_create");
    let node_b = event_body("b.1", "Node", "b");
    assert_eq!(
        forbidden("a", &req(Op::Create, "default/event/b.1", &node_b)),
        "forbidden_create"
    );
    // a patch must say what it is about
    assert_eq!(
        forbidden("a", &req(Op::Patch, "default/event/pa.1", r#"{"count":2}"#)),
        "forbidden_patch"
    );
    // an EVENT frame must carry an Event
    let wrong = Frame::event(1, Op::Create, &key("default/pod/pa"), ok.into_bytes());
    assert_eq!(forbidden("a", &wrong), "forbidden_create");
}

#[test]
fn device_status_and_desired_values_only() {
    assert!(
        check(
            "a",
            &req(
                Op::PatchStatus,
                "default/device/da",
                r#"{"status":{"twins":[]}}"#
            )
        )
        .is_ok()
    );
    assert_eq!(
        forbidden(
            "a",
            &req(Op::PatchStatus, "default/device/db", r#"{"status":{}}"#)
        ),
        "forbidden_patch_status"
    );
    let desired = r#"{"spec":{"properties":[{"name":"temp","desired":{"value":"20"}}]}}"#;
    assert!(check("a", &req(Op::Patch, "default/device/da", desired)).is_ok());
    let merge = req(Op::Patch, "default/device/da", desired).with_content_type(MERGE_PATCH);
    assert!(check("a", &merge).is_ok());
    assert_eq!(
        forbidden("a", &req(Op::Patch, "default/device/db", desired)),
        "forbidden_patch"
    );

    for body in [
        r#"{"spec":{"nodeName":"b"}}"#,
        r#"{"spec":{"properties":[{"name":"temp","visitors":{}}]}}"#,
        r#"{"spec":{"properties":[{"desired":{"value":"1"}}]}}"#,
        r#"{"metadata":{"labels":{"x":"y"}},"spec":{"properties":[]}}"#,
        r#"[{"op":"add","path":"/spec/properties/0/desired","value":{}}]"#,
    ] {
        assert_eq!(
            forbidden("a", &req(Op::Patch, "default/device/da", body)),
            "forbidden_patch",
            "{body}"
        );
    }

    let json = |body: &str| req(Op::Patch, "default/device/da", body).with_content_type(JSON_PATCH);
    assert!(check(
        "a",
        &json(r#"[{"op":"test","path":"/spec/properties/0/name","value":"temp"},{"op":"add","path":"/spec/properties/0/desired","value":{"value":"3"}},{"op":"replace","path":"/spec/properties/12/desired/value","value":"4"}]"#)
    )
    .is_ok());
    for body in [
        r#"[{"op":"replace","path":"/spec/properties/0/name","value":"x"}]"#,
        r#"[{"op":"add","path":"/spec/nodeName","value":"b"}]"#,
        r#"[{"op":"move","from":"/spec/properties/0/desired","path":"/spec/properties/1/desired"}]"#,
        r#"[{"op":"add","path":"/spec/properties/-/desired","value":{}}]"#,
        r#"[{"op":"add","path":"/spec/properties/0/desiredX","value":{}}]"#,
        r#"{"op":"add"}"#,
    ] {
        assert_eq!(forbidden("a", &json(body)), "forbidden_patch", "{body}");
    }
}

#[test]
fn service_account_tokens_only_for_used_accounts_bound_to_own_pods() {
    let body = r#"{"spec":{"audiences":["x"],"boundObjectRef":{"kind":"Pod","name":"pa"}}}"#;
    assert!(
        check(
            "a",
            &req(Op::Create, "default/serviceaccounttoken/sa-a", body)
        )
        .is_ok()
    );
    assert_eq!(
        forbidden(
            "a",
            &req(Op::Create, "default/serviceaccounttoken/other", body)
        ),
        "forbidden_create"
    );
    assert_eq!(
        forbidden("a", &req(Op::Create, "default/serviceaccount/sa-a", body)),
        "forbidden_create"
    );
    // Unbound, bound to another node's pod, to an unknown pod or to a non-pod: refused.
    for other in [
        r#"{"spec":{"audiences":["x"]}}"#,
        r#"{"spec":{"boundObjectRef":{"kind":"Pod","name":"pb"}}}"#,
        r#"{"spec":{"boundObjectRef":{"kind":"Pod","name":"ghost"}}}"#,
        r#"{"spec":{"boundObjectRef":{"kind":"Secret","name":"pa"}}}"#,
    ] {
        assert_eq!(
            forbidden(
                "a",
                &req(Op::Create, "default/serviceaccounttoken/sa-a", other)
            ),
            "forbidden_create",
            "{other}"
        );
    }
    assert!(
        check(
            "a",
            &req(Op::Create, "default/serviceaccounttoken/sa-a", "garbage")
        )
        .is_err()
    );
}

#[test]
fn control_frames_and_bad_bodies_are_bad_requests() {
    let r = check("a", &Frame::ack(3)).unwrap_err();
    assert_eq!((r.code, r.reason), (400, "BadRequest"));
    // patch bodies are passed to the API, which validates them
    assert!(check("a", &req(Op::PatchStatus, "default/pod/pa", "not json")).is_ok());
    let r = check("a", &req(Op::Delete, "default/pod/pa", "{oops")).unwrap_err();
    assert_eq!(r.code, 400);
}

#[test]
fn desired_entries_reads_names_and_values() {
    let v: Value = serde_json::from_str(
        r#"{"spec":{"properties":[{"name":"a","desired":{"value":"1"}},{"name":"b"}]}}"#,
    )
    .unwrap();
    assert_eq!(
        desired_entries(&v).unwrap(),
        vec![
            ("a".to_string(), serde_json::json!({"value":"1"})),
            ("b".to_string(), Value::Null)
        ]
    );
}
