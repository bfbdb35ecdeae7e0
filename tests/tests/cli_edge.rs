//! The operator's commands around an edge node, with the real binaries:
//! `cloudcore nodes` (table / json / yaml, Ready and connected while the edge runs — also
//! after edgecore paged out its start-up code — Unknown and disconnected after kill -9, exit
//! codes) and
//! `edgecore join --install-service` (the unit written with this join's paths, idempotent,
//! what to run where systemd is not the init system) removed again by `edgecore reset`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tests::edge::{Edge, join, wait_for};
use tests::{Standalone, bin};

fn start_cloud(dir: &Path) -> Standalone {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("cloud.toml");
    std::fs::write(&cfg, "[lifecycle]\ngrace_seconds = 4\n").unwrap();
    Standalone::start(dir, &["--config", cfg.to_str().unwrap()]).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn nodes(s: &Standalone, args: &[&str]) -> Output {
    Command::new(bin("cloudcore"))
        .args(["nodes", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

fn nodes_json(s: &Standalone) -> Vec<Value> {
    let out = nodes(s, &["-o", "json"]);
    assert!(
        out.status.success(),
        "cloudcore nodes: {}",
        text(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

#[test]
fn cloudcore_nodes_shows_status_connection_and_facts() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_cloud(&dir.path().join("cloud"));

    // No edge yet: an empty table, an empty JSON list, exit 0.
    let out = nodes(&s, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "No resources found.");
    assert_eq!(nodes_json(&s), Vec::<Value>::new());

    let root = dir.path().join("edge");
    let mut edge = Edge::join(&s, "edge-n", &root, &[]);
    edge.start();

    let row = wait_for(
        "cloudcore nodes: edge-n Ready and connected",
        Duration::from_secs(60),
        || {
            nodes_json(&s)
                .into_iter()
                .find(|n| n["name"] == "edge-n" && n["status"] == "Ready" && n["connected"] == true)
        },
    );
    assert!(row["version"].as_str().unwrap().contains("kedge"), "{row}");
    assert!(row["heartbeatAgeSeconds"].as_i64().unwrap() <= 40, "{row}");
    assert!(
        row["lastHeartbeat"].as_str().unwrap().ends_with('Z'),
        "{row}"
    );
    assert_eq!(
        row["internalIps"],
        serde_json::json!(["127.0.0.1"]),
        "{row}"
    );
    assert!(
        row["platform"].as_str().unwrap().starts_with("linux/"),
        "{row}"
    );

    // The table: kubectl-style headers and one line per node.
    let out = nodes(&s, &[]);
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STATUS",
            "CONNECTED",
            "LAST-HEARTBEAT",
            "VERSION",
            "RUNTIME",
            "INTERNAL-IP",
            "AGE"
        ],
        "{table}"
    );
    let line: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&line[..3], ["edge-n", "Ready", "yes"], "{table}");
    let yaml = text(&nodes(&s, &["-o", "yaml"]).stdout);
    assert!(yaml.contains("name: edge-n"), "{yaml}");

    // Once live, edgecore paged out the code its start-up ran: its file-backed resident memory
    // fell, and it keeps working (the code it runs comes back from the binary).
    let line = wait_for(
        "edgecore pages out its start-up code",
        Duration::from_secs(30),
        || {
            edge.log()
                .lines()
                .find(|l| l.contains("start-up code paged out"))
                .map(str::to_owned)
        },
    );
    let kib = |field: &str| -> u64 {
        let at = line.find(&format!("{field}=")).unwrap() + field.len() + 1;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (before, after) = (
        kib("resident_file_kib_before"),
        kib("resident_file_kib_after"),
    );
    assert!(after < before, "{line}");
    let beat = nodes_json(&s)[0]["lastHeartbeat"].clone();
    wait_for(
        "a heartbeat after the page-out",
        Duration::from_secs(30),
        || (nodes_json(&s)[0]["lastHeartbeat"] != beat).then_some(()),
    );
    assert_eq!(nodes_json(&s)[0]["status"], "Ready");

    // kill -9: the lifecycle emulation declares the node Unknown, and it is no longer
    // connected.
    drop(edge);
    let row = wait_for(
        "cloudcore nodes: edge-n Unknown and disconnected after kill -9",
        Duration::from_secs(60),
        || {
            nodes_json(&s).into_iter().find(|n| {
                n["name"] == "edge-n" && n["status"] == "Unknown" && n["connected"] == false
            })
        },
    );
    assert!(row["heartbeatAgeSeconds"].as_i64().unwrap() >= 1, "{row}");

    // Exit codes: 2 for a bad flag, 1 (with one error line) for an unreadable kubeconfig.
    let out = nodes(&s, &["-o", "xml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = Command::new(bin("cloudcore"))
        .args(["nodes", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("/nonexistent/kubeconfig"),
        "{err}"
    );
}

#[test]
fn join_install_service_writes_the_unit_and_reset_removes_it() {
    let systemd_pid1 = Path::new("/run/systemd/system").is_dir();
    if systemd_pid1 {
        // Starting a real unit here would run edgecore as root outside the test's control.
        eprintln!("SKIP: systemd is the init system here; this test covers the no-systemd path");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start_cloud(&dir.path().join("cloud"));
    let root = dir.path().join("gw");
    let units = dir.path().join("units");
    let args = [
        "--install-service",
        "--systemd-dir",
        units.to_str().unwrap(),
    ];

    let out = join(&s, "edge-svc", &root, &args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "join: {stdout}{}", text(&out.stderr));
    let unit_path = units.join("edgecore.service");
    assert!(
        stdout.contains(&format!("wrote {}", unit_path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("systemd is not running"), "{stdout}");
    assert!(
        stdout.contains("systemctl daemon-reload && systemctl enable edgecore.service"),
        "{stdout}"
    );
    let config = root.join("etc/kedge/edgecore.toml");
    assert!(
        stdout.contains(&format!("run --config {}", config.display())),
        "{stdout}"
    );

    // The unit runs this edgecore with this join's config, and is writable only where
    // edgecore writes.
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exe = std::fs::canonicalize(bin("edgecore")).unwrap();
    assert!(
        unit.contains(&format!(
            "\nExecStart={} run --config {}\n",
            exe.display(),
            config.display()
        )),
        "{unit}"
    );
    assert!(
        unit.contains(&format!(
            "\nReadWritePaths={} {} /run/containerd\n",
            root.join("var/lib/kedge").display(),
            root.join("etc/kedge").display()
        )),
        "{unit}"
    );
    assert!(unit.contains("\nRestart=always\n"), "{unit}");
    // Shipped template, unchanged otherwise.
    let shipped =
        std::fs::read_to_string(tests::workspace_root().join("deploy/systemd/edgecore.service"))
            .unwrap();
    assert_eq!(unit.lines().count(), shipped.lines().count() + 1);
    // No foreground edgecore was started: the node's store is not locked.
    assert!(!stdout.contains("starting:"), "{stdout}");

    // Idempotent: the same join again leaves the unit as it is.
    let before = std::fs::metadata(&unit_path).unwrap().modified().unwrap();
    let out = join(&s, "edge-svc", &root, &args);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "second join: {stdout}{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("is up to date"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&unit_path).unwrap(), unit);
    assert_eq!(
        std::fs::metadata(&unit_path).unwrap().modified().unwrap(),
        before
    );

    // --install-service and --no-start contradict each other.
    let out = join(
        &s,
        "edge-svc",
        &root,
        &[&args[..], &["--no-start"]].concat(),
    );
    assert_eq!(out.status.code(), Some(2));

    // reset removes the unit with the node's files; a hand-written unit is left alone.
    let out = Command::new(bin("edgecore"))
        .args(["reset", "--root"])
        .arg(&root)
        .arg("--systemd-dir")
        .arg(&units)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "reset: {stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("removed {}", unit_path.display())),
        "{stdout}"
    );
    assert!(!unit_path.exists());
    assert!(!config.exists());

    std::fs::write(&unit_path, &shipped).unwrap();
    let out = Command::new(bin("edgecore"))
        .args(["reset", "--root"])
        .arg(&root)
        .arg("--systemd-dir")
        .arg(&units)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(unit_path.exists(), "reset removed a unit it did not write");
}

#[test]
fn sixty_four_gateways_joining_at_once_all_get_their_certificate() {
    // A fleet rollout: every join rewrites the one Secret recording issued certificates, so
    // concurrent joins conflict there and must retry until each is recorded — none may fail.
    let dir = tempfile::tempdir().unwrap();
    let s = start_cloud(dir.path());
    let outs: Vec<(String, Output)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let (s, root) = (&s, dir.path().join(format!("gw-{i}")));
                scope.spawn(move || {
                    let node = format!("gw-{i}");
                    let out = join(s, &node, &root, &["--no-start"]);
                    (node, out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (node, out) in &outs {
        assert!(
            out.status.success(),
            "{node}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let cert = dir.path().join(format!("{node}/etc/kedge/pki/node.crt"));
        assert!(cert.exists(), "{node} has its certificate");
    }
    let listed = nodes_json(&s);
    assert_eq!(listed.len(), 64, "{listed:?}");
}
