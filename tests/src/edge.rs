//! Joined edges for end-to-end tests: a join token from the standalone cloud,
//! `edgecore join --no-start`, an `edgecore run` child that logs to `<root>/edge.log` and is
//! killed with the test, and the small readers and waits every edge test needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Standalone, bin};

/// How many objects the edge's store under `root` holds (`edgecore status -o json`;
/// 0 when it cannot be read, e.g. while the running edgecore holds the store).
pub fn edge_objects(root: &Path) -> u64 {
    let out = Command::new(bin("edgecore"))
        .args(["status", "-o", "json", "--root"])
        .arg(root)
        .output();
    out.ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| v["objects"].as_u64())
        .unwrap_or(0)
}

/// A free loopback address (`127.0.0.1:port`) for a listener the child binds itself.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A loopback port free right now, for a listener a child binds later.
///
/// Taken below the kernel's ephemeral range (32768–60999 by default), not from `bind(0)`: a
/// port `bind(0)` returned is handed out again as the local port of outgoing connections, and
/// one of those (any test's, any child's) can hold it by the time the child binds — an
/// edge's broker then fails to start. Ports are spread by process id and never repeat within
/// a process, so the parallel tests of one binary never pick the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(LOW + (base + n) % SPAN) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// Polls `f` every 200 ms until it yields a value; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait_for`] for a condition.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    wait_for(what, timeout, || f().then_some(()))
}

/// The `status` of condition `kind` in `obj.status.conditions`, or "" when absent.
pub fn condition(obj: &Value, kind: &str) -> String {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

impl Standalone {
    /// `cloudcore token create` against this cloud; panics with its stderr on failure.
    pub fn token(&self) -> String {
        let out = Command::new(bin("cloudcore"))
            .args(["token", "create", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .output()
            .expect("run cloudcore token create");
        assert!(
            out.status.success(),
            "cloudcore token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `kubectl get <what> -o json`, or `None` when kubectl fails (e.g. NotFound).
    pub fn get_json(&self, what: &[&str]) -> Option<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", "json"]);
        let out = self.kubectl(&args);
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("kubectl -o json prints JSON"))
    }

    /// The Ready condition's status of `node` ("True", "Unknown", …; "" if none yet).
    pub fn node_ready(&self, node: &str) -> String {
        self.get_json(&["node", node])
            .map(|n| condition(&n, "Ready"))
            .unwrap_or_default()
    }
}

/// `edgecore join` of `node` to `s` with a fresh token, into `root`, with free MQTT and
/// metrics ports and `extra` arguments; the raw output, for tests of join itself.
pub fn join(s: &Standalone, node: &str, root: &Path, extra: &[&str]) -> Output {
    Command::new(bin("edgecore"))
        .args(["join", "--server", &s.hub, "--token", &s.token()])
        .args(["--node-name", node, "--mqtt-listen", "127.0.0.1:0"])
        .args(["--metrics-listen", &free_addr()])
        .arg("--root")
        .arg(root)
        .args(extra)
        .output()
        .expect("run edgecore join")
}

/// An `edgecore run` child of a joined root; killed (SIGKILL) when dropped.
pub struct Edge {
    root: PathBuf,
    child: Option<Child>,
}

impl Edge {
    /// Joins `node` (`--no-start` plus `extra`) and leaves it stopped, so a test can edit
    /// [`Edge::config`] before [`Edge::start`].
    pub fn join(s: &Standalone, node: &str, root: &Path, extra: &[&str]) -> Edge {
        let mut args = vec!["--no-start"];
        args.extend_from_slice(extra);
        let out = join(s, node, root, &args);
        assert!(
            out.status.success(),
            "edgecore join {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Edge {
            root: root.to_path_buf(),
            child: None,
        }
    }

    /// Joins `node`, starts it and waits until its Node is Ready.
    pub fn join_ready(s: &Standalone, node: &str, root: &Path, extra: &[&str]) -> Edge {
        let mut edge = Edge::join(s, node, root, extra);
        edge.start();
        wait_until(
            &format!("node {node} Ready"),
            Duration::from_secs(60),
            || s.node_ready(node) == "True",
        );
        // Registering races the edge's first Lease renewal; the cloud must make the edge
        // retry it, not drop it as gone for good.
        let log = edge.log();
        assert!(
            !log.contains("refused an upstream write for good"),
            "a fresh edge lost a write:\n{log}"
        );
        edge
    }

    /// The joined root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The config file `join` wrote.
    pub fn config(&self) -> PathBuf {
        self.root.join("etc/kedge/edgecore.toml")
    }

    /// Starts `edgecore run` (appending to `edge.log`); a running child is killed first.
    pub fn start(&mut self) {
        self.kill9();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("edge.log"))
            .expect("open edge.log");
        self.child = Some(
            Command::new(bin("edgecore"))
                .arg("run")
                .arg("--config")
                .arg(self.config())
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn edgecore run"),
        );
    }

    /// Is `edgecore run` running?
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id of `edgecore run`, while it runs (for `/proc/<pid>` readers).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash or power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything edgecore logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("edge.log")).unwrap_or_default()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill9();
    }
}
