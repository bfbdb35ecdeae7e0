//! Edge autonomy end to end with the real binaries and kubectl: `cloudcore standalone`
//! (whose node-lifecycle emulation taints an edge that stops renewing its Lease and evicts
//! pods whose tolerations ran out), `edgecore join`/`run`, kill -9 of the edge.
//!
//! Both tests shorten Kubernetes' 300 s default tolerations to 3 s and the Lease grace to
//! 4 s through cloudcore's TOML, so the only difference between a pod that stays and one
//! that goes is the autonomy admission:
//! - on (default): a pod bound to the edge carries untimed tolerations and outlives an
//!   outage well past the point where an opted-out twin on the same node was evicted;
//! - off (`[autonomy] enabled = false`): the pod keeps the 3 s tolerations and is evicted
//!   once the node goes Unknown — the emulation bites.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::edge::{Edge, condition, wait_until};
use tests::{Standalone, bin};

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn start_cloud(dir: &Path, autonomy: bool) -> Standalone {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("cloud.toml");
    std::fs::write(
        &cfg,
        format!(
            "[lifecycle]\ngrace_seconds = 4\n\n[autonomy]\nenabled = {autonomy}\n\
             default_not_ready_toleration_seconds = 3\ndefault_unreachable_toleration_seconds = 3\n"
        ),
    )
    .unwrap();
    Standalone::start(dir, &["--config", cfg.to_str().unwrap()]).unwrap()
}

/// Create a pod bound to `node`; returns it as stored.
fn create_pod(s: &Standalone, name: &str, node: &str, labels: Value) -> Value {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gw", "effect": "NoSchedule"}]}});
    let out = s.kubectl_stdin(&["create", "-f", "-", "-o", "json"], Some(&pod.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The pod's tolerations of `key` (NoExecute): their `tolerationSeconds` (None = untimed).
fn seconds(pod: &Value, key: &str) -> Vec<Option<i64>> {
    pod["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"] == key && t["effect"] == "NoExecute")
        .map(|t| t["tolerationSeconds"].as_i64())
        .collect()
}

/// kill -9 the edge and wait for Ready=Unknown plus the NoExecute unreachable taint.
fn go_offline(s: &Standalone, edge: &mut Edge, node: &str) -> Instant {
    edge.kill9();
    wait_until(
        &format!("{node} Unknown with the unreachable NoExecute taint"),
        Duration::from_secs(40),
        || {
            s.get_json(&["node", node]).is_some_and(|n| {
                condition(&n, "Ready") == "Unknown"
                    && n["spec"]["taints"].as_array().is_some_and(|ts| {
                        ts.iter()
                            .any(|t| t["key"] == UNREACHABLE && t["effect"] == "NoExecute")
                    })
            })
        },
    );
    Instant::now()
}

/// Evicted: gone, or deleted and waiting for its (offline) node to confirm.
fn evicted(s: &Standalone, name: &str) -> bool {
    s.get_json(&["pod", name, "-n", "default"])
        .is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null())
}

#[test]
fn autonomy_on_edge_pods_survive_an_outage_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_cloud(&dir.path().join("cloud"), true);
    let mut edge = Edge::join_ready(&s, "gw-on", &dir.path().join("edge"), &[]);

    let kept = create_pod(&s, "kept", "gw-on", json!({"app": "kept"}));
    // The admission's result as kubectl shows it: untimed, the pod's own toleration kept.
    let shown = s.get_json(&["pod", "kept", "-n", "default"]).unwrap();
    assert_eq!(
        seconds(&shown, NOT_READY),
        vec![None],
        "{}",
        shown["spec"]["tolerations"]
    );
    assert_eq!(
        seconds(&shown, UNREACHABLE),
        vec![None],
        "{}",
        shown["spec"]["tolerations"]
    );
    assert!(
        shown["spec"]["tolerations"]
            .to_string()
            .contains("dedicated"),
        "{}",
        shown["spec"]["tolerations"]
    );
    // An update of the pod (a patch, run under the API's store lock) keeps them.
    s.kubectl_ok(&["label", "pod", "kept", "-n", "default", "tier=edge"]);
    let shown = s.get_json(&["pod", "kept", "-n", "default"]).unwrap();
    assert_eq!(shown["metadata"]["labels"]["tier"], "edge");
    assert_eq!(
        seconds(&shown, UNREACHABLE),
        vec![None],
        "{}",
        shown["spec"]["tolerations"]
    );
    // The opted-out twin keeps Kubernetes' (here 3 s) defaults: the control group.
    let twin = create_pod(&s, "twin", "gw-on", json!({"kedge.io/autonomy": "off"}));
    assert_eq!(
        seconds(&twin, UNREACHABLE),
        vec![Some(3)],
        "{}",
        twin["spec"]["tolerations"]
    );

    let offline = go_offline(&s, &mut edge, "gw-on");
    wait_until(
        "the opted-out twin evicted",
        Duration::from_secs(40),
        || evicted(&s, "twin"),
    );
    // Well past the eviction delay (3 s tolerations, 2 s lifecycle rounds), the pod is
    // still there, untouched.
    while offline.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = s
        .get_json(&["pod", "kept", "-n", "default"])
        .expect("pod kept still exists");
    assert_eq!(
        after["metadata"]["uid"], kept["metadata"]["uid"],
        "same pod"
    );
    assert!(after["metadata"]["deletionTimestamp"].is_null(), "{after}");
    assert_eq!(after["spec"], shown["spec"], "spec untouched");
    let log = s.log();
    assert!(log.contains("evicted by taint"), "the emulation ran: {log}");
}

#[test]
fn autonomy_off_edge_pods_are_evicted_after_toleration_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_cloud(&dir.path().join("cloud"), false);
    let mut edge = Edge::join_ready(&s, "gw-off", &dir.path().join("edge"), &[]);

    let pod = create_pod(&s, "doomed", "gw-off", json!({}));
    assert_eq!(
        seconds(&pod, NOT_READY),
        vec![Some(3)],
        "{}",
        pod["spec"]["tolerations"]
    );
    assert_eq!(
        seconds(&pod, UNREACHABLE),
        vec![Some(3)],
        "{}",
        pod["spec"]["tolerations"]
    );

    let offline = go_offline(&s, &mut edge, "gw-off");
    wait_until("the pod evicted", Duration::from_secs(40), || {
        evicted(&s, "doomed")
    });
    // Not before its tolerationSeconds ran out (counted from the taint's timeAdded, which
    // is at most a lifecycle round before we saw it).
    let node = s.get_json(&["node", "gw-off"]).unwrap();
    let added = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == UNREACHABLE && t["effect"] == "NoExecute")
        .and_then(|t| t["timeAdded"].as_str().map(str::to_string))
        .unwrap();
    let deleted = s
        .get_json(&["pod", "doomed", "-n", "default"])
        .and_then(|p| {
            p["metadata"]["deletionTimestamp"]
                .as_str()
                .map(str::to_string)
        });
    if let Some(deleted) = deleted {
        let t = |s: &str| {
            s.parse::<k8s_openapi::jiff::Timestamp>()
                .unwrap()
                .as_second()
        };
        let waited = t(&deleted) - t(&added);
        assert!(
            waited >= 3,
            "evicted {waited} s after the taint, before its 3 s toleration ran out"
        );
    }
    assert!(offline.elapsed() < Duration::from_secs(40));
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cloudcore_run_serves_the_autonomy_webhook_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("cloud"), &[]).unwrap();
    s.apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: gw-run\n  labels: {node-role.kubernetes.io/edge: \"\"}\n");

    // A self-signed serving certificate for 127.0.0.1, made as docs/operations.md shows.
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=cloudcore-webhook"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(tls.join("tls.key"))
        .arg("-out")
        .arg(tls.join("tls.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hub]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [autonomy]\nwebhook_listen = \"127.0.0.1:0\"\nwebhook_cert = \"{}\"\nwebhook_key = \"{}\"\n",
            tls.join("tls.crt").display(),
            tls.join("tls.key").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let _run = Proc(
        Command::new(bin("cloudcore"))
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .env("KEDGE_LOG_FORMAT", "json")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut addr = String::new();
    wait_until(
        "cloudcore run's webhook listening",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            addr = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["message"] == "autonomy webhook listening")
                .and_then(|l| l["addr"].as_str().map(str::to_string))
                .unwrap_or_default();
            !addr.is_empty()
        },
    );

    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "e2e-uid-1", "operation": "CREATE", "namespace": "default",
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"nodeName": "gw-run", "containers": [{"name": "c", "image": "busybox"}],
                    "tolerations": [
                        {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                        {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}}}});
    let body = dir.path().join("review.json");
    std::fs::write(&body, review.to_string()).unwrap();
    let (code, out) = tests::curl(&[
        "--cacert",
        tls.join("tls.crt").to_str().unwrap(),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("https://{addr}/mutate/v1/pods/autonomy"),
    ]);
    assert_eq!(
        code,
        200,
        "{out} (addr {addr}); log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["response"]["uid"], "e2e-uid-1");
    assert_eq!(out["response"]["allowed"], true);
    assert_eq!(out["response"]["patchType"], "JSONPatch");
    let mut b64 = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let patch = out["response"]["patch"].as_str().unwrap().to_string();
        b64.stdin
            .take()
            .unwrap()
            .write_all(patch.as_bytes())
            .unwrap();
    }
    let patch: Value = serde_json::from_slice(&b64.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        patch,
        json!([{"op": "replace", "path": "/spec/tolerations", "value": [
            {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"},
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]}]),
        "the node was read from the API: gw-run is an edge"
    );
}
