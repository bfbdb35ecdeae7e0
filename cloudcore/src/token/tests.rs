#![allow(clippy::unwrap_used)]

use chrono::{TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::*;

const HASH: &str = "ab12000000000000000000000000000000000000000000000000000000000000";

fn record(secret: &str, expires: Option<DateTime<Utc>>) -> TokenRecord {
    TokenRecord {
        id: "abc123".into(),
        secret_sha256: Sha256::digest(secret.as_bytes()).into(),
        expires,
        node: Some("edge-1".into()),
        description: Some("for the lab".into()),
        created: Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()),
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
}

#[test]
fn parses_full_and_short_tokens() {
    let full = format_token(HASH, "abc123", "0123456789abcdef");
    let p = parse(&full).unwrap();
    assert_eq!(p.ca_hash.as_deref(), Some(HASH));
    assert_eq!(
        (p.id.as_str(), p.secret.as_str()),
        ("abc123", "0123456789abcdef")
    );
    let short = parse(" abc123.0123456789abcdef\n").unwrap();
    assert_eq!(short.ca_hash, None);
    for bad in [
        "",
        "abc123",
        "abc12.0123456789abcdef",
        "ABC123.0123456789abcdef",
        "abc123.0123456789abcde",
        "K10abc::abc123.0123456789abcdef",
        "K10zz12000000000000000000000000000000000000000000000000000000000000::abc123.0123456789abcdef",
        &format!("K10{HASH}:abc123.0123456789abcdef"),
        "abc/12.0123456789abcdef",
    ] {
        assert!(matches!(parse(bad), Err(TokenError::Malformed)), "{bad:?}");
    }
}

#[test]
fn check_accepts_the_right_secret_before_expiry() {
    let p = parse(&format_token(HASH, "abc123", "0123456789abcdef")).unwrap();
    let r = record("0123456789abcdef", Some(now() + chrono::Duration::hours(1)));
    let ok = check(&p, Some(&r), HASH, now()).unwrap();
    assert_eq!(ok.id, "abc123");
    assert_eq!(ok.node.as_deref(), Some("edge-1"));
    let never = record("0123456789abcdef", None);
    assert!(check(&p, Some(&never), HASH, now()).is_ok());
}

#[test]
fn check_refuses_with_the_right_reason() {
    let p = parse(&format_token(HASH, "abc123", "0123456789abcdef")).unwrap();
    let good = record("0123456789abcdef", None);
    let other_hash = HASH.replace("ab12", "cd34");
    assert!(matches!(
        check(&p, Some(&good), &other_hash, now()),
        Err(TokenError::CaHashMismatch)
    ));
    assert!(matches!(
        check(&p, None, HASH, now()),
        Err(TokenError::Invalid)
    ));
    let wrong = record("fedcba9876543210", None);
    assert!(matches!(
        check(&p, Some(&wrong), HASH, now()),
        Err(TokenError::Invalid)
    ));
    let expired = record(
        "0123456789abcdef",
        Some(now() - chrono::Duration::seconds(1)),
    );
    let err = check(&p, Some(&expired), HASH, now()).unwrap_err();
    assert!(matches!(err, TokenError::Expired { .. }));
    assert!(
        err.to_string().contains("expired at 2025-06-01T11:59:59Z"),
        "{err}"
    );
    let short = parse("abc123.0123456789abcdef").unwrap();
    assert!(check(&short, Some(&good), &other_hash, now()).is_ok());
}

#[test]
fn record_round_trips_through_its_secret_without_the_secret() {
    let r = record("0123456789abcdef", Some(now()));
    let s = r.to_secret();
    assert_eq!(s.metadata.name.as_deref(), Some("kedge-token-abc123"));
    assert_eq!(s.type_.as_deref(), Some(TOKEN_SECRET_TYPE));
    let raw = serde_json::to_string(&s).unwrap();
    assert!(!raw.contains("0123456789abcdef"));
    assert_eq!(TokenRecord::from_secret(&s).unwrap(), r);
    let info = r.info(now());
    assert!(info.expired);
    assert_eq!(info.expires.as_deref(), Some("2025-06-01T12:00:00Z"));
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["nodeName"], "edge-1");
}

#[test]
fn random_parts_have_the_right_shape() {
    for _ in 0..50 {
        let s = random_alnum(SECRET_LEN).unwrap();
        assert!(is_token_part(&s, SECRET_LEN), "{s}");
    }
}
