//! Pods at the edge end to end: cloudcore standalone, a joined edgecore, a private
//! containerd (tests/src/containerd.rs) and kubectl. A pod with env from a ConfigMap, a
//! Secret volume and an init container writing to a hostPath runs; a ConfigMap change
//! reaches the mounted file in the same container; deletion stops it within the grace
//! period and the pod leaves the API; restarts with back-off and liveness; bad input;
//! offline cold boot with the same pod UID afterwards.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::containerd::{Containerd, IMAGE};
use tests::edge::{Edge, wait_for};
use tests::{Standalone, bin, curl};

/// Joins `node` with `ctd` as its runtime and a short crash back-off (so restarts are
/// observable in a test), and starts it.
fn join_edge(s: &Standalone, node: &str, root: &Path, ctd: &Containerd) -> Edge {
    let mut edge = Edge::join(s, node, root, &["--cri-endpoint", &ctd.endpoint]);
    let text = std::fs::read_to_string(edge.config()).unwrap();
    let text = text
        .replace("backoff_base_secs = 10", "backoff_base_secs = 1")
        .replace("backoff_max_secs = 300", "backoff_max_secs = 4");
    assert!(text.contains("backoff_base_secs = 1\n"), "{text}");
    std::fs::write(edge.config(), text).unwrap();
    edge.start();
    edge
}

fn pod(s: &Standalone, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn container_status<'a>(p: &'a Value, name: &str) -> Option<&'a Value> {
    p["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn start_cloud(dir: &Path, hub_port: Option<u16>) -> Standalone {
    std::fs::create_dir_all(dir).unwrap();
    let hub = hub_port.map(|p| format!("127.0.0.1:{p}"));
    let mut args = vec![];
    if let Some(h) = &hub {
        args.extend(["--hub-listen", h.as_str()]);
    }
    Standalone::start(dir, &args).unwrap()
}

fn setup(name: &str) -> (tempfile::TempDir, Containerd, Standalone, Edge) {
    let dir = tempfile::tempdir().unwrap();
    let ctd = Containerd::start().unwrap();
    let s = start_cloud(&dir.path().join("cloud"), None);
    let edge = join_edge(&s, name, &dir.path().join("edge"), &ctd);
    wait_for("the edge Node is Ready", Duration::from_secs(60), || {
        let out = s.kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
    });
    (dir, ctd, s, edge)
}

/// Like [`wait_for`], printing the end of the edge's log on a timeout.
fn wait_edge<T>(edge: &Edge, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            let log = edge.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "timed out after {timeout:?}: {what}; edge log tail:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn running(s: &Standalone, name: &str, edge: &Edge, timeout: Duration) -> Value {
    wait_edge(edge, &format!("pod {name} Running"), timeout, || {
        let p = pod(s, name)?;
        if p["status"]["phase"] == "Running"
            && container_status(&p, "app")?["state"]["running"].is_object()
        {
            Some(p)
        } else {
            None
        }
    })
}

#[test]
fn pod_runs_with_config_updates_in_place_and_is_deleted() {
    let (dir, ctd, s, edge) = setup("edge-pods");
    let host = dir.path().join("hostdata");
    std::fs::create_dir_all(&host).unwrap();
    s.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config, namespace: default}\ndata: {greeting: hello, file.txt: v1}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: app-secret, namespace: default}\nstringData: {password: hunter2}\n",
    );
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: edge-pods
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: init
    image: {IMAGE}
    command: ["sh", "-c", "echo initialized > /host/init.txt"]
    volumeMounts: [{{name: host, mountPath: /host}}]
  containers:
  - name: app
    image: {IMAGE}
    command: ["sh", "-c"]
    args:
    - 'echo "$GREETING $POD_NAME $NODE" > /host/env.txt; cat /secret/password > /host/secret.txt; trap "echo term > /host/term.txt; exit 0" TERM; while true; do cat /cfg/file.txt > /host/cfg.tmp; mv /host/cfg.tmp /host/cfg.txt; cat /var/run/secrets/kubernetes.io/serviceaccount/token > /host/token.tmp 2>/dev/null && mv /host/token.tmp /host/token.txt; sleep 0.2; done'
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: app-config, key: greeting}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    volumeMounts:
    - {{name: host, mountPath: /host}}
    - {{name: cfg, mountPath: /cfg}}
    - {{name: secret, mountPath: /secret, readOnly: true}}
  volumes:
  - {{name: host, hostPath: {{path: "{}", type: DirectoryOrCreate}}}}
  - {{name: cfg, configMap: {{name: app-config}}}}
  - {{name: secret, secret: {{secretName: app-secret}}}}
"#,
        host.display()
    );
    s.apply(&manifest);
    let p = running(&s, "web", &edge, Duration::from_secs(90));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let app = container_status(&p, "app").unwrap();
    let id = app["containerID"].as_str().unwrap().to_string();
    assert!(id.starts_with("containerd://"), "{app}");
    assert_eq!(app["restartCount"], 0);
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 0,
        "{p}"
    );
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True", "{p}");
    // Seen through the files the containers wrote, and through containerd.
    let read = |f: &str| std::fs::read_to_string(host.join(f)).unwrap_or_default();
    wait_for(
        "the containers wrote their files",
        Duration::from_secs(20),
        || (read("cfg.txt") == "v1").then_some(()),
    );
    assert_eq!(read("init.txt"), "initialized\n");
    assert_eq!(read("env.txt"), "hello web edge-pods\n");
    assert_eq!(read("secret.txt"), "hunter2");
    // The projected ServiceAccount token the API server's admission added (kube-api-access)
    // was requested through the link, bound to this pod, and authenticates as its account.
    let token = wait_for(
        "the projected token reached the container",
        Duration::from_secs(30),
        || Some(read("token.txt")).filter(|t| t.split('.').count() == 3),
    );
    let with_token = |path: &str| {
        curl(&[
            "--cacert",
            s.ca_file().to_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{}{path}", s.url),
        ])
    };
    let api = with_token("/api");
    assert_eq!(api.0, 200, "the token authenticates: {api:?}");
    let short = id.trim_start_matches("containerd://");
    assert!(
        ctd.tasks().iter().any(|t| t == short),
        "task {short} runs in containerd"
    );
    // Logs in the kubelet layout.
    let logs = edge.root().join(format!(
        "var/lib/kedge-runtime/logs/pods/default_web_{uid}/app/0.log"
    ));
    assert!(logs.exists(), "{} exists", logs.display());

    // A ConfigMap change reaches the mounted file in the same container; env does not change.
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "app-config",
        "-p",
        r#"{"data":{"file.txt":"v2","greeting":"changed"}}"#,
    ]);
    wait_for(
        "the mounted ConfigMap file changed",
        Duration::from_secs(30),
        || (read("cfg.txt") == "v2").then_some(()),
    );
    let p = pod(&s, "web").unwrap();
    assert_eq!(
        container_status(&p, "app").unwrap()["containerID"],
        id.as_str(),
        "same container"
    );
    assert_eq!(read("env.txt"), "hello web edge-pods\n");

    // Events reached the API.
    let events = wait_for("pod events", Duration::from_secs(20), || {
        let out = s.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let reasons: Vec<String> = v["items"]
            .as_array()?
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect();
        (reasons.iter().any(|r| r == "Started") && reasons.iter().any(|r| r == "Created"))
            .then_some(reasons)
    });
    assert!(events.iter().any(|r| r == "Pulled"), "{events:?}");

    // Deletion: SIGTERM (the trap writes term.txt), within the grace period, pod leaves the API.
    let t = Instant::now();
    let out = s.kubectl(&["delete", "pod", "web", "--wait=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the pod left the API", Duration::from_secs(30), || {
        pod(&s, "web").is_none().then_some(())
    });
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "deleted in {:?}",
        t.elapsed()
    );
    assert_eq!(read("term.txt"), "term\n", "the container got SIGTERM");
    let after = with_token("/api");
    assert_eq!(after.0, 401, "the token died with its pod: {after:?}");
    wait_for(
        "the task is gone from containerd",
        Duration::from_secs(20),
        || (!ctd.tasks().iter().any(|t| t == short)).then_some(()),
    );
    drop(edge);
}

fn waiting_reason(p: &Value, name: &str) -> String {
    container_status(p, name)
        .and_then(|c| c["state"]["waiting"]["reason"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn simple_pod(name: &str, node: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  nodeName: {node}\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {image}\n{extra}"
    )
}

#[test]
fn restarts_liveness_and_bad_input() {
    let (_dir, _ctd, s, edge) = setup("edge-restarts");
    let node = "edge-restarts";
    s.apply(&simple_pod(
        "crash",
        node,
        IMAGE,
        "    command: [\"sh\", \"-c\", \"sleep 0.5; exit 3\"]\n",
    ));
    s.apply(&simple_pod(
        "live",
        node,
        IMAGE,
        "    command: [\"sh\", \"-c\", \"touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 1000\"]\n    \
         livenessProbe: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 1}\n",
    ));
    s.apply(&simple_pod(
        "noimage",
        node,
        "docker.io/kedge/missing:1",
        "",
    ));
    s.apply(&simple_pod(
        "nocm",
        node,
        IMAGE,
        "    env: [{name: X, valueFrom: {configMapKeyRef: {name: absent, key: k}}}]\n",
    ));
    // Always: an exiting container restarts, with back-off, keeping its last state.
    let p = wait_edge(
        &edge,
        "crash restarted twice",
        Duration::from_secs(60),
        || {
            let p = pod(&s, "crash")?;
            (container_status(&p, "app")?["restartCount"].as_u64()? >= 2).then_some(p)
        },
    );
    let c = container_status(&p, "app").unwrap();
    let last = &c["lastState"]["terminated"];
    let state = &c["state"]["terminated"];
    assert!(
        last["exitCode"] == 3 || state["exitCode"] == 3 || c["state"]["running"].is_object(),
        "{c}"
    );
    wait_edge(
        &edge,
        "crash shows CrashLoopBackOff",
        Duration::from_secs(30),
        || (waiting_reason(&pod(&s, "crash")?, "app") == "CrashLoopBackOff").then_some(()),
    );
    wait_edge(
        &edge,
        "a BackOff event for crash",
        Duration::from_secs(30),
        || {
            let out = s.kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=crash",
                "-o",
                "json",
            ]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            v["items"]
                .as_array()?
                .iter()
                .any(|e| e["reason"] == "BackOff")
                .then_some(())
        },
    );
    // A failing liveness probe restarts the container.
    wait_edge(
        &edge,
        "live restarted by its liveness probe",
        Duration::from_secs(60),
        || {
            let p = pod(&s, "live")?;
            (container_status(&p, "app")?["restartCount"].as_u64()? >= 1).then_some(())
        },
    );
    // Bad input: a missing image and a missing ConfigMap are waiting reasons, not crashes.
    wait_edge(
        &edge,
        "noimage in ImagePullBackOff",
        Duration::from_secs(90),
        || (waiting_reason(&pod(&s, "noimage")?, "app") == "ImagePullBackOff").then_some(()),
    );
    let p = wait_edge(
        &edge,
        "nocm in CreateContainerConfigError",
        Duration::from_secs(30),
        || {
            let p = pod(&s, "nocm")?;
            (waiting_reason(&p, "app") == "CreateContainerConfigError").then_some(p)
        },
    );
    let msg = container_status(&p, "app").unwrap()["state"]["waiting"]["message"].to_string();
    assert!(msg.contains("absent"), "{msg}");
    assert_eq!(p["status"]["phase"], "Pending");
    // The ConfigMap appears: the pod starts without being recreated.
    s.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: absent, namespace: default}\ndata: {k: v}\n");
    running(&s, "nocm", &edge, Duration::from_secs(60));
}

use tests::edge::free_port;

/// Removes every kedge container and sandbox through CRI, as a reboot would.
fn wipe_pods(ctd: &Containerd) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cri = edgecore::runtime::cri::Cri::new(&ctd.endpoint).unwrap();
        let managed = [edgecore::runtime::podconfig::MANAGED];
        for s in cri.list_sandboxes(&managed).await.unwrap() {
            cri.stop_sandbox(&s.id).await.unwrap();
            cri.remove_sandbox(&s.id).await.unwrap();
        }
        assert!(cri.list_containers(&managed).await.unwrap().is_empty());
    });
}

#[test]
fn offline_cold_boot_brings_pods_back_with_the_same_uid() {
    let dir = tempfile::tempdir().unwrap();
    let ctd = Containerd::start().unwrap();
    let hub_port = free_port();
    let cloud_dir = dir.path().join("cloud");
    let mut s = start_cloud(&cloud_dir, Some(hub_port));
    let node = "edge-cold";
    let mut edge = join_edge(&s, node, &dir.path().join("edge"), &ctd);
    s.apply(&simple_pod(
        "cold",
        node,
        IMAGE,
        "    command: [\"sleep\", \"100000\"]\n",
    ));
    let p = running(&s, "cold", &edge, Duration::from_secs(90));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let first = container_status(&p, "app").unwrap()["containerID"]
        .as_str()
        .unwrap()
        .to_string();

    // The cloud goes away, edgecore dies, the node "reboots" (containers and sandbox gone).
    s.stop().unwrap();
    edge.kill9();
    wipe_pods(&ctd);
    assert!(ctd.tasks().is_empty());
    let t = Instant::now();
    edge.start();
    let task = wait_edge(
        &edge,
        "the pod runs again with no cloud",
        Duration::from_secs(30),
        || {
            let tasks = ctd.tasks();
            (tasks.len() >= 2).then_some(tasks)
        },
    );
    let took = t.elapsed();
    eprintln!("offline cold boot: pod running {took:?} after edgecore started");
    assert!(
        !task.iter().any(|t| first.ends_with(t.as_str())),
        "a new container"
    );

    // The cloud returns: same pod, same UID, the status written offline reconciles.
    let s = start_cloud(&cloud_dir, Some(hub_port));
    let p = wait_edge(
        &edge,
        "status reconciled after the cloud returned",
        Duration::from_secs(60),
        || {
            let p = pod(&s, "cold")?;
            let id = container_status(&p, "app")?["containerID"]
                .as_str()?
                .to_string();
            (id != first && p["status"]["phase"] == "Running").then_some(p)
        },
    );
    assert_eq!(p["metadata"]["uid"], uid.as_str(), "same pod UID");
    // And nothing is recreated on reconnect: the container stays.
    let id = container_status(&p, "app").unwrap()["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_secs(3));
    let p = pod(&s, "cold").unwrap();
    assert_eq!(
        container_status(&p, "app").unwrap()["containerID"],
        id.as_str()
    );
    assert_eq!(container_status(&p, "app").unwrap()["restartCount"], 0);

    // Deleted in the API while the edge is down: removed at the edge after it reconnects,
    // and only then does the pod leave the API.
    edge.kill9();
    let out = s.kubectl(&["delete", "pod", "cold", "--wait=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pod(&s, "cold").is_some(),
        "a node-bound pod waits for its node's confirmation"
    );
    assert!(
        !ctd.tasks().is_empty(),
        "still running at the edge while it is offline"
    );
    edge.start();
    wait_edge(
        &edge,
        "the pod left the API after the edge stopped it",
        Duration::from_secs(60),
        || pod(&s, "cold").is_none().then_some(()),
    );
    wait_edge(
        &edge,
        "no task left in containerd",
        Duration::from_secs(30),
        || ctd.tasks().is_empty().then_some(()),
    );
}

#[test]
fn missing_runtime_is_a_node_condition_not_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_cloud(&dir.path().join("cloud"), None);
    let root = dir.path().join("edge");
    // A containerd that is not there.
    let ghost = Containerd::ghost(&dir.path().join("nothing.sock"));
    let edge = join_edge(&s, "edge-noruntime", &root, &ghost);
    let cond = |kind: &str| {
        let path = format!("jsonpath={{.status.conditions[?(@.type==\"{kind}\")].status}}");
        let out = s.kubectl(&["get", "node", "edge-noruntime", "-o", &path]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_edge(
        &edge,
        "ContainerRuntimeUnhealthy=True",
        Duration::from_secs(60),
        || (cond("ContainerRuntimeUnhealthy") == "True").then_some(()),
    );
    assert_eq!(
        cond("Ready"),
        "True",
        "a missing runtime does not make the node NotReady"
    );
    let log = edge.log();
    let lines = log.matches("cannot reach the container runtime").count();
    assert_eq!(lines, 1, "one clear log line:\n{log}");
}

#[test]
fn images_import_loads_an_archive_with_progress() {
    let ctd = Containerd::start().unwrap();
    let out = ctd.ctr(&["images", "rm", IMAGE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = || String::from_utf8_lossy(&ctd.ctr(&["images", "ls", "-q"]).stdout).to_string();
    assert!(!images().contains(IMAGE));
    let tar = ctd.dir.join("busybox.tar");
    let out = Command::new(bin("edgecore"))
        .args(["images", "import"])
        .arg(&tar)
        .args(["--cri-endpoint", &ctd.endpoint])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), IMAGE);
    assert!(
        stderr.contains("100%") && stderr.contains("imported 1 image"),
        "{stderr}"
    );
    assert!(images().contains(IMAGE));
    // Bad input: a clear error, exit 1.
    let out = Command::new(bin("edgecore"))
        .args([
            "images",
            "import",
            "/nonexistent.tar",
            "--cri-endpoint",
            &ctd.endpoint,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.tar"));
}
