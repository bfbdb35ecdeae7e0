//! Decoding kubectl's protobuf bodies (captured) and hand-built ones.
use super::*;
use serde_json::json;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[test]
fn kubectl_create_token_body() {
    // kubectl create token default --duration=15m --audience=a1 --audience=a2
    //   --bound-object-kind=Pod --bound-object-name=holder --bound-object-uid=u-1
    let body = hex(
        "6b 38 73 00 0a 28 0a 18 61 75 74 68 65 6e 74 69 63 61 74 69 6f 6e 2e 6b 38 73 2e 69 6f 2f 76 31
         12 0c 54 6f 6b 65 6e 52 65 71 75 65 73 74 12 3d 0a 10 0a 00 12 00 1a 00 22 00 2a 00 32 00 38 00
         42 00 12 23 0a 02 61 31 0a 02 61 32 1a 16 0a 03 50 6f 64 12 02 76 31 1a 06 68 6f 6c 64 65 72 22
         03 75 2d 31 20 84 07 1a 04 0a 00 12 00 1a 00 22 00",
    );
    assert_eq!(
        decode(&body).unwrap(),
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": ["a1", "a2"], "expirationSeconds": 900,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "holder", "uid": "u-1"}},
        })
    );
}

#[test]
fn kubectl_create_namespace_configmap_secret_serviceaccount_bodies() {
    let ns = hex(
        "6b 38 73 00 0a 0f 0a 02 76 31 12 09 4e 61 6d 65 73 70 61 63 65 12 1b 0a 13 0a 03 6e 73 78 12 00
         1a 00 22 00 2a 00 32 00 38 00 42 00 12 00 1a 02 0a 00 1a 00 22 00",
    );
    assert_eq!(
        decode(&ns).unwrap(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nsx"}})
    );
    let cm = hex(
        "6b 38 73 00 0a 0f 0a 02 76 31 12 09 43 6f 6e 66 69 67 4d 61 70 12 1d 0a 13 0a 03 63 6d 78 12 00
         1a 00 22 00 2a 00 32 00 38 00 42 00 12 06 0a 01 61 12 01 31 1a 00 22 00",
    );
    assert_eq!(
        decode(&cm).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cmx"}, "data": {"a": "1"}})
    );
    let secret = hex(
        "6b 38 73 00 0a 0c 0a 02 76 31 12 06 53 65 63 72 65 74 12 24 0a 12 0a 02 73 78 12 00 1a 00 22 00
         2a 00 32 00 38 00 42 00 12 0c 0a 01 70 12 07 68 75 6e 74 65 72 32 1a 00 1a 00 22 00",
    );
    assert_eq!(
        decode(&secret).unwrap(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sx"}, "data": {"p": "aHVudGVyMg=="}})
    );
    let sa = hex(
        "6b 38 73 00 0a 14 0a 02 76 31 12 0e 53 65 72 76 69 63 65 41 63 63 6f 75 6e 74 12 15 0a 13 0a 03
         73 61 78 12 00 1a 00 22 00 2a 00 32 00 38 00 42 00 1a 00 22 00",
    );
    assert_eq!(
        decode(&sa).unwrap(),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sax"}})
    );
}

fn varint_bytes(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Field `num` holding a length-delimited value.
fn ld(num: u64, body: &[u8]) -> Vec<u8> {
    let mut out = varint_bytes(num << 3 | 2);
    out.extend(varint_bytes(body.len() as u64));
    out.extend_from_slice(body);
    out
}

/// Field `num` holding a varint.
fn vi(num: u64, v: u64) -> Vec<u8> {
    [varint_bytes(num << 3), varint_bytes(v)].concat()
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let tm = [ld(1, api_version.as_bytes()), ld(2, kind.as_bytes())].concat();
    [b"k8s\0".to_vec(), ld(1, &tm), ld(2, raw)].concat()
}

#[test]
fn deployment_with_the_fields_go_always_encodes() {
    let labels = ld(11, &[ld(1, b"app"), ld(2, b"web")].concat());
    let meta = ld(1, &[ld(1, b"web"), ld(2, b""), labels.clone()].concat());
    let quantity = |q: &str| ld(1, q.as_bytes());
    let resources = ld(
        8,
        &ld(1, &[ld(1, b"cpu"), ld(2, &quantity("250m"))].concat()),
    );
    let env = ld(
        7,
        &[
            ld(1, b"A"),
            ld(3, &ld(3, &[ld(1, &ld(1, b"cm")), ld(2, b"k")].concat())),
        ]
        .concat(),
    );
    let container = ld(
        2,
        &[
            ld(1, b"web"),
            ld(2, b"nginx"),
            ld(6, &[vi(2, 0), vi(3, 80), ld(4, b"TCP")].concat()),
            env,
            resources,
            vi(16, 0),
            vi(18, 1),
        ]
        .concat(),
    );
    let volume = ld(1, &[ld(1, b"data"), ld(2, &ld(2, &ld(1, b"")))].concat());
    let pod_spec = [volume, container, ld(3, b"Always"), vi(11, 0)].concat();
    let template = ld(3, &[ld(1, &labels), ld(2, &pod_spec)].concat());
    let int_or_string =
        |ty: u64, i: u64, s: &str| [vi(1, ty), vi(2, i), ld(3, s.as_bytes())].concat();
    let strategy = ld(
        4,
        &[
            ld(1, b"RollingUpdate"),
            ld(
                2,
                &[
                    ld(1, &int_or_string(1, 0, "25%")),
                    ld(2, &int_or_string(0, 2, "")),
                ]
                .concat(),
            ),
        ]
        .concat(),
    );
    let spec = ld(
        2,
        &[
            vi(1, 0),
            ld(2, &ld(1, &[ld(1, b"app"), ld(2, b"web")].concat())),
            template,
            strategy,
            vi(5, 0),
            vi(7, 0),
        ]
        .concat(),
    );
    let body = envelope("apps/v1", "Deployment", &[meta, spec, ld(3, b"")].concat());
    assert_eq!(
        decode(&body).unwrap(),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "volumes": [{"name": "data", "emptyDir": {}}],
                        "containers": [{
                            "name": "web", "image": "nginx",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
                            "resources": {"limits": {"cpu": "250m"}},
                            "tty": true,
                        }],
                        "restartPolicy": "Always",
                    },
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 2}},
            },
        })
    );
}

#[test]
fn other_kinds_and_garbage_are_refused() {
    let node = hex("6b 38 73 00 0a 0a 0a 02 76 31 12 04 4e 6f 64 65 12 00");
    assert_eq!(
        decode(&node),
        Err(ProtoError::Unsupported("v1 Node".into()))
    );
    assert!(decode(b"{}").is_err());
    assert!(decode(&hex("6b 38 73 00 0a ff")).is_err());
    assert!(decode(&hex("6b 38 73 00 0a 05 0a")).is_err());
    assert!(decode(&hex("6b 38 73 00 ff ff ff ff ff ff ff ff ff ff ff")).is_err());
}

#[test]
fn access_and_rules_reviews_as_kubectl_auth_can_i_sends_them() {
    // resourceAttributes {namespace "default", verb "get", resource "pods"}; Go encodes the
    // empty strings of the unset fields and an empty status.
    let attrs = [
        ld(1, b"default"),
        ld(2, b"get"),
        ld(3, b""),
        ld(4, b""),
        ld(5, b"pods"),
        ld(6, b""),
        ld(7, b""),
    ]
    .concat();
    let raw = [ld(1, &[]), ld(2, &ld(1, &attrs)), ld(3, &[])].concat();
    assert_eq!(
        decode(&envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &raw
        ))
        .unwrap(),
        json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}},
        })
    );
    // An empty nonResourceAttributes is kept: it is a pointer in Go.
    let raw = [ld(2, &[ld(2, &[]), ld(3, b"bob"), ld(4, b"devs")].concat())].concat();
    assert_eq!(
        decode(&envelope(
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
            &raw
        ))
        .unwrap(),
        json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"nonResourceAttributes": {}, "user": "bob", "groups": ["devs"]},
        })
    );
    let raw = ld(2, &ld(1, b"default"));
    assert_eq!(
        decode(&envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectRulesReview",
            &raw
        ))
        .unwrap()["spec"],
        json!({"namespace": "default"})
    );
    let raw = ld(2, &[ld(1, b"t0k3n"), ld(2, b"api")].concat());
    assert_eq!(
        decode(&envelope("authentication.k8s.io/v1", "TokenReview", &raw)).unwrap()["spec"],
        json!({"token": "t0k3n", "audiences": ["api"]})
    );
}
