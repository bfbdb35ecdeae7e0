//! `cloudcore standalone --with-local-edge` and the local edge's MQTT address:
//! `--edge-mqtt-listen 127.0.0.1:0` gives it a free port, printed on the banner's `mqtt:`
//! line, where kedge's device bus answers; an address already taken is refused up front
//! with a message naming the flag; a `kill -9` of cloudcore takes its local edge with it.

#![allow(clippy::unwrap_used)]

mod devices_common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use devices_common::*;
use tests::bin;

struct Cloud(Child);

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn standalone(dir: &Path, mqtt: &str) -> Command {
    let mut cmd = Command::new(bin("cloudcore"));
    cmd.arg("standalone")
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--hub-listen", "127.0.0.1:0", "--with-local-edge"])
        .args(["--edge-node-name", "local-mqtt-test"])
        .args(["--edge-arg", "--metrics-listen=127.0.0.1:0"])
        .args(["--edge-mqtt-listen", mqtt]);
    cmd
}

#[test]
fn a_taken_mqtt_address_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let log = dir.path().join("stderr.log");
    let mut child = standalone(&dir.path().join("cloud"), &addr)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = tests::wait_exit(&mut child, Duration::from_secs(60)).unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "cloudcore must refuse: {err}");
    assert!(
        err.contains(&addr) && err.contains("already in use") && err.contains("--edge-mqtt-listen"),
        "a clear error: {err}"
    );
    assert!(
        !dir.path().join("cloud/kubeconfig.yaml").exists(),
        "nothing started before the check"
    );
}

#[test]
fn port_zero_gives_the_local_edge_a_free_mqtt_port_shown_in_the_banner() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = standalone(&dir.path().join("cloud"), "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut cloud = Cloud(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    let mqtt = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no mqtt: line in the banner: {banner:?}"));
        banner.push(line.clone());
        if let Some(rest) = line.strip_prefix("mqtt: mqtt://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    assert!(
        banner
            .iter()
            .any(|l| l.starts_with("local edge: node local-mqtt-test")),
        "the existing banner lines stay: {banner:?}"
    );
    let port: u16 = mqtt.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_ne!(port, 1883, "a free port, not the default");

    // kedge's bus answers there: a twin/get for an unknown device gets an error result.
    wait_for(
        "the local edge's broker accepts",
        Duration::from_secs(60),
        || publish(port, "kedge/hello", "x"),
    );
    let result = "kedge/events/device/default/nobody/twin/get/result";
    let sub = Sub::start(port, &[result]);
    wait_for(
        "an error result from the bus",
        Duration::from_secs(30),
        || {
            publish(
                port,
                "kedge/events/device/default/nobody/twin/get",
                r#"{"event_id":"q"}"#,
            );
            sub.try_expect(result, Duration::from_secs(2))
                .is_some_and(|r| r["reason"] == "unknown_device")
        },
    );

    // cloudcore killed with SIGKILL (no chance to stop its child): the kernel stops the local
    // edge with it, so no orphan keeps the broker port, the store and the node's link.
    cloud.0.kill().unwrap();
    cloud.0.wait().unwrap();
    wait_for(
        "the local edge exits with its cloudcore",
        Duration::from_secs(20),
        || !publish(port, "kedge/hello", "x"),
    );
}
