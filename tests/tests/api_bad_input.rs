//! Bad input to the embedded API server gets the right Kubernetes Status — and the server
//! keeps serving everyone else. Requests are made with curl so nothing client-side
//! "fixes" them first.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;
use tests::{Standalone, curl};

struct Api {
    s: Standalone,
    _dir: tempfile::TempDir,
    token: String,
    ca: String,
}

impl Api {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s = Standalone::start(&dir.path().join("d"), &[]).unwrap();
        let token = std::fs::read_to_string(s.data_dir.join("apiserver/pki/admin.token"))
            .unwrap()
            .trim()
            .to_string();
        let ca = s.ca_file().display().to_string();
        Self {
            s,
            _dir: dir,
            token,
            ca,
        }
    }

    fn req(&self, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, Value) {
        let file = self._dir.path().join("body");
        std::fs::write(&file, body).unwrap();
        let url = format!("{}{}", self.s.url, path);
        let auth = format!("Authorization: Bearer {}", self.token);
        let ct = format!("Content-Type: {ctype}");
        let data = format!("@{}", file.display());
        let (code, text) = curl(&[
            "--cacert",
            &self.ca,
            "-X",
            method,
            "-H",
            &auth,
            "-H",
            &ct,
            "--data-binary",
            &data,
            &url,
        ]);
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn healthy(&self) {
        let (code, v) = self.req("GET", "/api/v1/namespaces/default", "application/json", b"");
        assert_eq!(code, 200, "{v}");
    }
}

fn assert_status(got: (u16, Value), code: u16, reason: &str) {
    assert_eq!(got.0, code, "{}", got.1);
    assert_eq!(got.1["kind"], "Status", "{}", got.1);
    assert_eq!(got.1["reason"], reason, "{}", got.1);
    assert_eq!(got.1["code"], code);
}

#[test]
fn each_bad_request_gets_its_status_and_others_are_served() {
    let a = Api::start();
    let cms = "/api/v1/namespaces/default/configmaps";
    assert_status(
        a.req(
            "POST",
            cms,
            "application/json",
            b"{\"apiVersion\":\"v1\",\"kind\":",
        ),
        400,
        "BadRequest",
    );
    assert_status(
        a.req(
            "POST",
            cms,
            "application/yaml",
            b"metadata: [unclosed\n  - x: {",
        ),
        400,
        "BadRequest",
    );
    assert_status(
        a.req("POST", cms, "text/plain", b"hello"),
        415,
        "UnsupportedMediaType",
    );
    assert_status(
        a.req(
            "GET",
            "/api/v1/namespaces/default/gizmos",
            "application/json",
            b"",
        ),
        404,
        "NotFound",
    );
    assert_status(
        a.req(
            "GET",
            "/apis/nope.example.com/v1/things",
            "application/json",
            b"",
        ),
        404,
        "NotFound",
    );
    let strict = format!("{cms}?fieldValidation=Strict");
    let (code, v) = a.req(
        "POST",
        &strict,
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"dta":{}}"#,
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"dta\""),
        "{v}"
    );
    let (code, v) = a.req(
        "POST",
        cms,
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#,
    );
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["reason"], "Invalid");
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
    let (code, v) = a.req(
        "POST",
        cms,
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":5}}"#,
    );
    assert_eq!(code, 422, "a non-string data value is invalid: {v}");
    let big = vec![b' '; 4 * 1024 * 1024];
    assert_status(
        a.req("POST", cms, "application/json", &big),
        413,
        "RequestEntityTooLarge",
    );
    let (code, v) = a.req(
        "POST",
        cms,
        "application/json",
        br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
    );
    assert_eq!(code, 400, "kind mismatch: {v}");
    let (code, v) = a.req(
        "POST",
        "/api/v1/namespaces/nosuch/configmaps",
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    );
    assert_eq!((code, v["reason"].as_str()), (404, Some("NotFound")), "{v}");
    a.healthy();

    // No credentials.
    let (code, body) = curl(&["--cacert", &a.ca, &format!("{}/api/v1/namespaces", a.s.url)]);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, v["reason"].as_str()), (401, Some("Unauthorized")));
    let (code, _) = curl(&[
        "--cacert",
        &a.ca,
        "-H",
        "Authorization: Bearer wrong",
        &format!("{}/api/v1/namespaces", a.s.url),
    ]);
    assert_eq!(code, 401);

    // A client certificate from another CA: the handshake is refused.
    let d = a._dir.path();
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kedge-admin/O=system:masters",
        ])
        .arg("-keyout")
        .arg(d.join("evil.key"))
        .arg("-out")
        .arg(d.join("evil.crt"))
        .output()
        .unwrap();
    assert!(st.status.success());
    let (code, _) = curl(&[
        "--cacert",
        &a.ca,
        "--cert",
        d.join("evil.crt").to_str().unwrap(),
        "--key",
        d.join("evil.key").to_str().unwrap(),
        &format!("{}/api/v1/namespaces", a.s.url),
    ]);
    assert_eq!(
        code, 0,
        "a foreign client certificate must not get an HTTP answer"
    );
    a.healthy();
    // Metrics count the refusals.
    let (_, metrics) = curl(&[
        "--cacert",
        &a.ca,
        "-H",
        &format!("Authorization: Bearer {}", a.token),
        &format!("{}/metrics", a.s.url),
    ]);
    assert!(
        metrics.contains("apiserver_rejected_requests_total{reason=\"unauthenticated\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"tls_handshake\""), "{metrics}");
}
