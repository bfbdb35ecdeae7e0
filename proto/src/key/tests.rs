#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn parse_and_display_round_trip() {
    for s in [
        "default/pod/nginx",
        "null/node/edge-1",
        "kube-system/configmap/kube-root-ca.crt",
        "default/event/nginx.17a8b9c0d1e2f3a4",
        "null/clusterrole/system:node",
    ] {
        let key = ResourceKey::parse(s).unwrap();
        assert_eq!(key.to_string(), s);
        assert_eq!(s.parse::<ResourceKey>().unwrap(), key);
    }
    let node = ResourceKey::parse("null/node/edge-1").unwrap();
    assert!(node.is_cluster_scoped());
    assert_eq!(node, ResourceKey::cluster("Node", "edge-1").unwrap());
    let pod = ResourceKey::namespaced("default", "Pod", "nginx").unwrap();
    assert_eq!(pod.namespace.as_deref(), Some("default"));
    assert_eq!(pod.kind, "pod");
}

#[test]
fn wrong_part_counts_fail() {
    for s in ["", "a", "a/b", "a/b/c/d", "default/pod/nginx/"] {
        let err = ResourceKey::parse(s).unwrap_err();
        assert_eq!(err.reason(), "key_parts", "{s}");
    }
}

#[test]
fn bad_parts_fail() {
    let cases = [
        ("/pod/x", "key_empty"),
        ("default//x", "key_empty"),
        ("default/pod/", "key_empty"),
        ("Default/pod/x", "key_invalid_char"),
        ("-ns/pod/x", "key_invalid_char"),
        ("default/Pod/x", "key_invalid_char"),
        ("default/pod/a b", "key_invalid_char"),
        ("default/pod/a%2f", "key_invalid_char"),
        ("default/pod/..", "key_reserved"),
    ];
    for (s, reason) in cases {
        assert_eq!(ResourceKey::parse(s).unwrap_err().reason(), reason, "{s}");
    }
    let long_name = format!("default/pod/{}", "a".repeat(MAX_NAME_LEN + 1));
    assert_eq!(
        ResourceKey::parse(&long_name).unwrap_err().reason(),
        "key_too_long"
    );
    let max_name = format!("default/pod/{}", "a".repeat(MAX_NAME_LEN));
    assert!(ResourceKey::parse(&max_name).is_ok());
    let long_ns = format!("{}/pod/x", "a".repeat(MAX_NAMESPACE_LEN + 1));
    assert_eq!(
        ResourceKey::parse(&long_ns).unwrap_err().reason(),
        "key_too_long"
    );
    assert_eq!(
        ResourceKey::namespaced("null", "pod", "x")
            .unwrap_err()
            .reason(),
        "key_reserved"
    );
    assert!(ResourceKey::cluster("node", "a/b").is_err());
}

#[test]
fn multibyte_input_does_not_panic() {
    let s = "é".repeat(80);
    assert_eq!(ResourceKey::parse(&s).unwrap_err().reason(), "key_parts");
    assert!(ResourceKey::parse("default/pod/é").is_ok());
}

#[test]
fn identity_from_object_json() {
    let json = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"nginx",
        "namespace":"default","uid":"u-1","resourceVersion":"42","labels":{"a":"b"}},
        "spec":{"containers":[]}}"#;
    let id = ObjectIdentity::from_json(json).unwrap();
    assert_eq!(id.key.to_string(), "default/pod/nginx");
    assert_eq!(id.uid, "u-1");
    assert_eq!(id.resource_version, "42");

    let node = serde_json::json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}});
    assert_eq!(
        ResourceKey::from_value(&node).unwrap().to_string(),
        "null/node/edge-1"
    );
    let dm = br#"{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel",
        "metadata":{"name":"thermo","namespace":"default"}}"#;
    assert_eq!(
        ResourceKey::from_json(dm).unwrap().to_string(),
        "default/devicemodel/thermo"
    );
}

#[test]
fn identity_errors() {
    let cases: [(&[u8], &str); 5] = [
        (b"not json", "object_invalid_json"),
        (b"[1,2]", "object_invalid_json"),
        (br#"{"metadata":{"name":"x"}}"#, "object_missing_field"),
        (br#"{"kind":"Pod"}"#, "object_missing_field"),
        (
            br#"{"kind":"Pod","metadata":{"name":""}}"#,
            "object_missing_field",
        ),
    ];
    for (json, reason) in cases {
        assert_eq!(
            ObjectIdentity::from_json(json).unwrap_err().reason(),
            reason
        );
    }
}

#[test]
fn collections() {
    let c = CollectionKey::parse("default/pod").unwrap();
    assert_eq!(c.to_string(), "default/pod");
    let c = CollectionKey::parse("null/node").unwrap();
    assert_eq!(c.namespace, None);
    assert_eq!(
        ResourceKey::parse("default/pod/x").unwrap().collection(),
        CollectionKey::parse("default/pod").unwrap()
    );
    assert!(CollectionKey::parse("default/pod/x").is_err());
    assert!(CollectionKey::parse("default/").is_err());
}

#[test]
fn serde_as_string() {
    let key = ResourceKey::parse("default/secret/token").unwrap();
    let json = serde_json::to_string(&key).unwrap();
    assert_eq!(json, r#""default/secret/token""#);
    assert_eq!(serde_json::from_str::<ResourceKey>(&json).unwrap(), key);
    assert!(serde_json::from_str::<ResourceKey>(r#""bad""#).is_err());
}
