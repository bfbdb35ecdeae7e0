//! The embedded API server driven by the real kubectl: apply with validation, re-apply
//! removing a list item, get in every format with selectors and the usual columns, watch,
//! patch of all three types, edit, label/annotate, api-resources, wait for a CRD, and
//! graceful deletion of a node-bound pod.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::{Standalone, kubectl};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string, enum: [red, green, blue]}
          status:
            type: object
            properties:
              phase: {type: string}
"#;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
  labels: {app: web}
data:
  mode: fast
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: demo
type: Opaque
stringData:
  password: hunter2
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: demo
  labels: {app: web, tier: front}
spec:
  nodeName: edge-1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sleep", "3600"]
    env:
    - {name: A, value: "1"}
    - {name: B, value: "2"}
  - name: side
    image: busybox:1.36
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: demo
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: main
        image: busybox:1.36
        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}
        ports:
        - {containerPort: 80}
        - {containerPort: 443}
"#;

fn start() -> (tempfile::TempDir, Standalone) {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("data"), &[]).unwrap();
    (dir, s)
}

fn json_of(s: &Standalone, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&a)).unwrap()
}

#[test]
fn apply_get_and_reapply_with_validation() {
    let (_d, s) = start();
    s.apply(CRD);
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=20s",
    ]);
    let out = s.apply(APP);
    assert!(out.contains("pod/web created"), "{out}");
    s.apply("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: demo}\nspec: {size: 3, color: red}\n");

    // Usual columns.
    let pods = s.kubectl_ok(&["get", "pods", "-n", "demo"]);
    let header = pods.lines().next().unwrap();
    for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(header.contains(col), "{pods}");
    }
    assert!(
        pods.contains("web") && pods.contains("0/2") && pods.contains("Pending"),
        "{pods}"
    );
    let wide = s.kubectl_ok(&["get", "pods", "-n", "demo", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("NODE") && wide.contains("edge-1"),
        "{wide}"
    );
    let widgets = s.kubectl_ok(&["get", "widgets", "-n", "demo"]);
    assert!(
        widgets.lines().next().unwrap().contains("SIZE") && widgets.contains("red"),
        "{widgets}"
    );
    let cms = s.kubectl_ok(&["get", "cm", "-n", "demo"]);
    assert!(cms.lines().next().unwrap().contains("DATA"), "{cms}");

    // Formats and selectors.
    let pod = json_of(&s, &["get", "pod", "web", "-n", "demo"]);
    assert_eq!(
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        pod["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    let yaml = s.kubectl_ok(&["get", "pod", "web", "-n", "demo", "-o", "yaml"]);
    assert!(yaml.contains("nodeName: edge-1"), "{yaml}");
    let by_label = json_of(
        &s,
        &[
            "get",
            "pods,cm",
            "-n",
            "demo",
            "-l",
            "app=web,tier in (front)",
        ],
    );
    let names: Vec<&str> = by_label["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["web"]);
    let by_field = json_of(
        &s,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=edge-1",
        ],
    );
    assert_eq!(by_field["items"].as_array().unwrap().len(), 1);
    let none = json_of(
        &s,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=edge-2",
        ],
    );
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let bad = s.kubectl(&["get", "pods", "--field-selector", "spec.bogus=1"]);
    assert!(!bad.status.success());

    // Re-apply with a list item (env B, port 443) and a label removed: they are gone,
    // the rest is untouched (strategic merge with kubectl's $setElementOrder directives).
    let edited = APP
        .replace("        - {name: B, value: \"2\"}\n", "")
        .replace("        - {containerPort: 443}\n", "")
        .replace("labels: {app: web, tier: front}", "labels: {app: web}");
    assert_ne!(edited, APP);
    s.apply(&edited);
    let dep = json_of(&s, &["get", "deployment", "api", "-n", "demo"]);
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let env = c["env"].as_array().unwrap();
    assert_eq!(env.len(), 1, "{env:?}");
    assert_eq!(env[0]["name"], "A");
    assert_eq!(c["ports"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = json_of(&s, &["get", "pod", "web", "-n", "demo"]);
    assert!(pod["metadata"]["labels"].get("tier").is_none());
    assert_eq!(pod["metadata"]["labels"]["app"], "web");

    // Validation: unknown field and schema errors are refused.
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: demo}\ndatta: {a: b}\n"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2, namespace: demo}\nspec: {color: purple}\n"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("size") && err.contains("purple"), "{err}");

    // api-resources lists built-ins and the CRD.
    let ar = s.kubectl_ok(&["api-resources"]);
    for r in [
        "pods",
        "configmaps",
        "leases",
        "customresourcedefinitions",
        "widgets",
        "devices",
    ] {
        assert!(ar.contains(r), "{r} missing from api-resources:\n{ar}");
    }
}

#[test]
fn patch_edit_label_annotate() {
    let (_d, s) = start();
    s.apply(APP);
    s.kubectl_ok(&[
        "patch",
        "cm",
        "settings",
        "-n",
        "demo",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"mode":"slow","extra":"1"}}"#,
    ]);
    s.kubectl_ok(&[
        "patch",
        "cm",
        "settings",
        "-n",
        "demo",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/data/extra"}]"#,
    ]);
    let cm = json_of(&s, &["get", "cm", "settings", "-n", "demo"]);
    assert_eq!(cm["data"], serde_json::json!({"mode": "slow"}));
    s.kubectl_ok(&[
        "patch",
        "pod",
        "web",
        "-n",
        "demo",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"containers":[{"name":"side","image":"busybox:1.37"}]}}"#,
    ]);
    let pod = json_of(&s, &["get", "pod", "web", "-n", "demo"]);
    let cs = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 2, "strategic merge kept the other container");
    assert_eq!(cs[0]["image"], "busybox:1.36");
    assert_eq!(cs[1]["image"], "busybox:1.37");

    s.kubectl_ok(&["label", "cm", "settings", "-n", "demo", "color=blue"]);
    s.kubectl_ok(&["annotate", "cm", "settings", "-n", "demo", "note=hello"]);
    let cm = json_of(&s, &["get", "cm", "settings", "-n", "demo"]);
    assert_eq!(cm["metadata"]["labels"]["color"], "blue");
    assert_eq!(cm["metadata"]["annotations"]["note"], "hello");
    s.kubectl_ok(&["label", "cm", "settings", "-n", "demo", "color-"]);
    let cm = json_of(&s, &["get", "cm", "settings", "-n", "demo"]);
    assert!(cm["metadata"]["labels"].get("color").is_none());

    // kubectl edit with a scripted editor.
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/mode: slow/mode: edited/' \"$1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .unwrap();
    let out = kubectl(
        &s.kubeconfig,
        &["edit", "cm", "settings", "-n", "demo"],
        None,
        &[
            ("EDITOR", editor.to_str().unwrap()),
            ("KUBE_EDITOR", editor.to_str().unwrap()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm = json_of(&s, &["get", "cm", "settings", "-n", "demo"]);
    assert_eq!(cm["data"]["mode"], "edited");
}

#[test]
#[allow(clippy::zombie_processes)] // a failed expectation ends the test process anyway
fn watch_prints_changes() {
    let (_d, s) = start();
    s.apply(APP);
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["get", "cm", "-n", "demo", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("initial watch line");
    // Every namespace also holds the CA bundle, listed first.
    if first.starts_with("kube-root-ca.crt") {
        first = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("second watch line");
    }
    assert!(first.contains("settings"), "{first}");
    s.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later, namespace: demo}\ndata: {a: b}\n",
    );
    let mut seen = String::new();
    while !seen.contains("later") {
        seen = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("watch shows the new configmap");
    }
    let _ = child.kill();
}

#[test]
fn node_bound_pod_stays_terminating_until_confirmed() {
    let (_d, s) = start();
    s.apply(APP);
    s.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: free, namespace: demo}\nspec: {containers: [{name: c, image: busybox}]}\n");
    s.kubectl_ok(&["delete", "pod", "free", "-n", "demo", "--wait=false"]);
    assert!(
        !s.kubectl(&["get", "pod", "free", "-n", "demo"])
            .status
            .success(),
        "an unbound pod goes at once"
    );
    s.kubectl_ok(&["delete", "pod", "web", "-n", "demo", "--wait=false"]);
    let table = s.kubectl_ok(&["get", "pod", "web", "-n", "demo"]);
    assert!(table.contains("Terminating"), "{table}");
    let pod = json_of(&s, &["get", "pod", "web", "-n", "demo"]);
    assert!(pod["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
    // The node confirms with grace 0 (what edgecore does once the pod stopped).
    s.kubectl_ok(&[
        "delete",
        "pod",
        "web",
        "-n",
        "demo",
        "--grace-period=0",
        "--force",
    ]);
    assert!(
        !s.kubectl(&["get", "pod", "web", "-n", "demo"])
            .status
            .success()
    );
}

#[test]
fn namespace_deletion_removes_its_objects() {
    let (_d, s) = start();
    s.apply(APP);
    s.kubectl_ok(&["delete", "namespace", "demo", "--timeout=30s"]);
    let all = json_of(&s, &["get", "cm,secrets,pods", "-A"]);
    let left: Vec<_> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["metadata"]["namespace"] == "demo")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let ns = json_of(&s, &["get", "ns"]);
    let names: Vec<&str> = ns["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"demo"), "{names:?}");
    for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
        assert!(names.contains(&ns), "{ns} missing: {names:?}");
    }
}

/// kubectl's generators send protobuf bodies: `run`, `create deployment|job|cronjob|service`
/// must be decoded (not 415) into the objects the flags describe.
#[test]
fn run_and_create_workloads_send_protobuf() {
    let (_d, s) = start();
    s.kubectl_ok(&[
        "run",
        "box",
        "--image=busybox:1.36",
        "--labels=app=box,tier=t1",
        "--env=GREETING=hi",
        "--port=8080",
        "--restart=Never",
        "--image-pull-policy=IfNotPresent",
        "--command",
        "--",
        "sleep",
        "3600",
    ]);
    let pod = json_of(&s, &["get", "pod", "box"]);
    assert_eq!(pod["metadata"]["labels"]["app"], "box", "{pod}");
    assert_eq!(pod["metadata"]["labels"]["tier"], "t1", "{pod}");
    assert_eq!(pod["spec"]["restartPolicy"], "Never", "{pod}");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["name"], "box", "{pod}");
    assert_eq!(c["image"], "busybox:1.36", "{pod}");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{pod}");
    assert_eq!(c["command"], serde_json::json!(["sleep", "3600"]), "{pod}");
    assert_eq!(c["env"][0]["name"], "GREETING", "{pod}");
    assert_eq!(c["env"][0]["value"], "hi", "{pod}");
    assert_eq!(c["ports"][0]["containerPort"], 8080, "{pod}");
    // Go encodes `stdin: false` and empty structs; they are left out as in JSON.
    assert!(c.get("stdin").is_none(), "{pod}");

    s.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=3",
        "--port=80",
    ]);
    let d = json_of(&s, &["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3, "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web", "{d}");
    let t = &d["spec"]["template"];
    assert_eq!(t["metadata"]["labels"]["app"], "web", "{d}");
    assert_eq!(t["spec"]["containers"][0]["image"], "nginx:1.27", "{d}");
    assert_eq!(
        t["spec"]["containers"][0]["ports"][0]["containerPort"], 80,
        "{d}"
    );

    s.kubectl_ok(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ]);
    let j = json_of(&s, &["get", "job", "once"]);
    let spec = &j["spec"]["template"]["spec"];
    assert_eq!(spec["restartPolicy"], "Never", "{j}");
    assert_eq!(
        spec["containers"][0]["command"],
        serde_json::json!(["echo", "hi"]),
        "{j}"
    );

    s.kubectl_ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
    ]);
    let cj = json_of(&s, &["get", "cronjob", "tick"]);
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *", "{cj}");
    let jt = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(jt["containers"][0]["image"], "busybox", "{cj}");

    s.kubectl_ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let svc = json_of(&s, &["get", "service", "web"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP", "{svc}");
    assert_eq!(svc["spec"]["selector"]["app"], "web", "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP", "{svc}");

    // The usual columns of what was created.
    let out = s.kubectl_ok(&["get", "pods,deployments,jobs,cronjobs,services"]);
    for name in [
        "pod/box",
        "deployment.apps/web",
        "job.batch/once",
        "cronjob.batch/tick",
        "service/web",
    ] {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
}

/// A list larger than one streamed chunk arrives whole and consistent, as JSON and as a
/// Table, also in pages.
#[test]
fn large_lists_stream_whole() {
    let (_d, s) = start();
    let mut yaml = String::new();
    let big = "x".repeat(4000);
    for i in 0..120 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big-{i:03}, labels: {{set: big}}}}\ndata: {{blob: {big}}}\n"
        ));
    }
    s.apply(&yaml);
    let all = json_of(&s, &["get", "cm", "-l", "set=big"]);
    let names: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..120).map(|i| format!("big-{i:03}")).collect();
    assert_eq!(names, expected);
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["data"]["blob"] == big.as_str())
    );
    let paged = json_of(&s, &["get", "cm", "-l", "set=big", "--chunk-size=7"]);
    assert_eq!(paged["items"].as_array().unwrap().len(), 120);
    let table = s.kubectl_ok(&["get", "cm", "-l", "set=big", "--no-headers"]);
    assert_eq!(table.lines().count(), 120, "{table}");
    assert!(table.lines().all(|l| l.starts_with("big-")), "{table}");
}

/// `kubectl auth whoami` (a `SelfSubjectReview`) names the caller: the admin of the
/// kubeconfig, and a ServiceAccount by its token — one bound to a pod, as the pod's
/// projected token would be.
#[test]
fn auth_whoami_for_admin_and_service_account() {
    let (d, s) = start();
    let me = json_of(&s, &["auth", "whoami"]);
    assert_eq!(me["kind"], "SelfSubjectReview", "{me}");
    let user = &me["status"]["userInfo"];
    assert!(
        user["username"].as_str().is_some_and(|u| !u.is_empty()),
        "{me}"
    );
    let groups = user["groups"].as_array().unwrap();
    assert!(
        groups.contains(&Value::from("system:authenticated")),
        "{me}"
    );

    s.apply(APP);
    let token = s.kubectl_ok(&[
        "-n",
        "demo",
        "create",
        "token",
        "default",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "web",
    ]);
    // Only the token: a kubeconfig without the admin's credentials.
    let empty = d.path().join("empty-kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
    let ca = s.ca_file();
    let out = tests::kubectl(
        &empty,
        &[
            "--server",
            &s.url,
            "--certificate-authority",
            ca.to_str().unwrap(),
            "--token",
            token.trim(),
            "auth",
            "whoami",
            "-o",
            "json",
        ],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "whoami with the ServiceAccount token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me: Value = serde_json::from_slice(&out.stdout).unwrap();
    let user = &me["status"]["userInfo"];
    assert_eq!(
        user["username"], "system:serviceaccount:demo:default",
        "{me}"
    );
    assert!(user["uid"].as_str().is_some_and(|u| !u.is_empty()), "{me}");
    let groups = user["groups"].as_array().unwrap();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:demo",
        "system:authenticated",
    ] {
        assert!(groups.contains(&Value::from(g)), "{g} missing: {me}");
    }

    // Not a list, not a get: only create.
    let out = s.kubectl(&[
        "get",
        "--raw",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
    ]);
    assert!(!out.status.success());
}
