#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;

#[test]
fn node_names_follow_dns_1123() {
    for ok in ["edge-1", "a", "gw.site-3.example", "0abc"] {
        assert!(is_dns1123_subdomain(ok), "{ok}");
    }
    let long = "a".repeat(254);
    for bad in ["", "Edge", "-a", "a-", "a..b", "a_b", "a/b", long.as_str()] {
        assert!(!is_dns1123_subdomain(bad), "{bad}");
    }
}

#[test]
fn join_labels_are_checked() {
    let ok = BTreeMap::from([
        ("site".to_owned(), "lab-3".to_owned()),
        ("example.com/rack".to_owned(), String::new()),
        (
            "topology.kubernetes.io/zone".to_owned(),
            "eu_1.a".to_owned(),
        ),
    ]);
    assert!(validate_labels(&ok).is_ok());
    for (k, v) in [
        ("bad key!", "x"),
        ("a", "-x"),
        ("Example.com/x", "y"),
        ("node-restriction.kubernetes.io/trusted", "true"),
        ("kedge.io/anything", "1"),
    ] {
        let labels = BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(validate_labels(&labels).is_err(), "{k}={v}");
    }
}

#[test]
fn errors_map_to_the_documented_codes() {
    let cases = [
        (JoinError::Token(TokenError::Invalid), 401, "InvalidToken"),
        (JoinError::Token(TokenError::Malformed), 401, "InvalidToken"),
        (
            JoinError::Token(TokenError::Expired {
                id: "abc123".into(),
                expired_at: "2025-01-01T00:00:00Z".into(),
            }),
            401,
            "TokenExpired",
        ),
        (
            JoinError::Token(TokenError::CaHashMismatch),
            400,
            "CAHashMismatch",
        ),
        (
            JoinError::BoundToOtherNode {
                bound: "a".into(),
                asked: "b".into(),
            },
            403,
            "TokenBoundToOtherNode",
        ),
        (JoinError::NodeNameInUse("a".into()), 409, "NodeNameInUse"),
        (
            JoinError::InvalidNodeName("A".into()),
            400,
            "InvalidNodeName",
        ),
        (JoinError::InvalidCsr("x".into()), 400, "InvalidCSR"),
    ];
    for (err, code, reason) in cases {
        assert_eq!(err.status(), (code, reason), "{err}");
        let resp = err.response();
        assert_eq!(resp.status().as_u16(), code);
        let body: ErrorBody = serde_json::from_slice(resp.body()).expect("json");
        assert_eq!((body.code, body.reason.as_str()), (code, reason));
        assert!(!body.message.is_empty());
    }
}
