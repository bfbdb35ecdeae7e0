#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn labels_parse() {
    let l = parse_labels("a=1, b=x=y,,c=").unwrap();
    assert_eq!(l["a"], "1");
    assert_eq!(l["b"], "x=y");
    assert_eq!(l["c"], "");
    assert!(parse_labels("novalue").is_err());
    assert!(parse_labels("=v").is_err());
}

#[test]
fn csr_names_the_node() {
    let (key, csr) = key_and_csr("edge-1").unwrap();
    assert!(key.contains("PRIVATE KEY"));
    let params = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
    let cn = params
        .params
        .distinguished_name
        .get(&rcgen::DnType::CommonName)
        .unwrap();
    assert!(matches!(cn, rcgen::DnValue::Utf8String(s) if s == "system:node:edge-1"));
}

#[test]
fn refusals_carry_a_hint() {
    let e = refused(
        401,
        br#"{"code":401,"reason":"TokenExpired","message":"token expired"}"#,
        "n",
    );
    let s = e.to_string();
    assert!(
        s.contains("TokenExpired")
            && s.contains("token expired")
            && s.contains("cloudcore token create"),
        "{s}"
    );
    let e = refused(500, b"boom", "n");
    assert!(e.to_string().contains("boom"));
}

#[test]
fn files_are_written_with_modes() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("a/b/key");
    write_file(&p, b"x", 0o600).unwrap();
    write_file(&p, b"y", 0o600).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"y");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
