//! kedge's end-to-end test harness: starts the real binaries (built by `cargo build
//! --workspace --bins` before the tests run) on ports the OS picks, and drives them with the
//! real kubectl, kube-rs and curl. Every wait has a timeout whose message says what was
//! awaited.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod containerd;
pub mod edge;
pub mod edgesim;

use anyhow::{Context, Result, bail};

pub mod helm;
pub mod proxy;
pub mod rbac;
pub mod replica;

/// The directory holding the workspace's built binaries (`target/<profile>`), seen from a
/// test (`target/<profile>/deps/<test>`) or from a binary of this crate
/// (`target/<profile>/<bin>`, e.g. `kedge-bench`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("executable directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary; fails clearly when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// KubeEdge's published Device/DeviceModel samples and CRD schemas, kept as data outside the
/// project (`../shared/compat/kubeedge` beside the checkout): `$KEDGE_COMPAT_DIR` when set,
/// else that folder beside this checkout, else `/work/shared/compat/kubeedge` (for a clone
/// made elsewhere on the same machine, as CI makes one). Panics naming where it looked.
pub fn kubeedge_fixtures() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("KEDGE_COMPAT_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push(workspace_root().join("../shared/compat/kubeedge"));
    candidates.push(PathBuf::from("/work/shared/compat/kubeedge"));
    candidates
        .iter()
        .find(|p| p.join("website-device-sample.yaml").exists())
        .cloned()
        .unwrap_or_else(|| panic!("KubeEdge fixtures not found in any of {candidates:?}"))
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Install the ring provider once (kube-rs needs a process default).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running `cloudcore standalone`.
#[derive(Debug)]
pub struct Standalone {
    pub child: Child,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub url: String,
    /// The CloudHub URL edges on this machine use (`wss://127.0.0.1:<port>`).
    pub hub: String,
    pub stderr_log: PathBuf,
}

impl Standalone {
    /// Start on `data_dir` with extra flags; returns once the kubeconfig is written.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let stderr_log = data_dir.join("cloudcore.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)?;
        let mut child = Command::new(bin("cloudcore"))
            .arg("standalone")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            // Never the default hub port: tests run in parallel.
            .args(if extra.contains(&"--hub-listen") {
                &[][..]
            } else {
                &["--hub-listen", "127.0.0.1:0"][..]
            })
            .args(extra)
            .args(audit_args(data_dir, extra))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("spawning cloudcore")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after start-up so the child never writes into a closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut url = None;
        let mut kubeconfig = None;
        let mut hub = None;
        let mut banner_done = false;
        while !banner_done {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(u) = line.strip_prefix("kedge standalone API server: ") {
                        url = Some(u.trim().to_string());
                    }
                    if let Some(k) = line.strip_prefix("kubeconfig: ") {
                        kubeconfig = Some(PathBuf::from(k.trim()));
                    }
                    if let Some(h) = line.strip_prefix("hub: ") {
                        hub = Some(h.trim().to_string());
                    }
                    if line.starts_with("metrics: ") {
                        banner_done = true;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                    bail!(
                        "cloudcore standalone did not print its kubeconfig within 60 s; log:\n{log}"
                    );
                }
            }
        }
        Ok(Self {
            child,
            data_dir: data_dir.to_path_buf(),
            kubeconfig: kubeconfig.unwrap_or_default(),
            url: url.unwrap_or_default(),
            hub: hub.unwrap_or_default(),
            stderr_log,
        })
    }

    /// Run kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Run kubectl with `stdin` as its input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl(&self.kubeconfig, args, stdin, &[])
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Apply a manifest given as text.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}{}\n---\n{yaml}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A kube-rs client for this server.
    pub async fn client(&self) -> Result<kube::Client> {
        init_crypto();
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// Stop with SIGTERM and wait (up to 20 s) for a clean exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_exit(&mut self.child, Duration::from_secs(20)).map_err(|e| {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            e.context(format!("cloudcore's log ends:\n{tail}"))
        })
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The API's CA certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("apiserver/pki/ca.crt")
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        rbac::collect(&self.data_dir.join("audit.log"));
    }
}

/// `--audit-log DATA_DIR/audit.log` unless the test passes its own: every e2e run records
/// cloudcore's requests for the chart's RBAC check (`rbac::collect`). Not for kedge-bench,
/// whose throughput numbers are measured without an audit log.
fn audit_args(data_dir: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let bench = std::env::current_exe()
        .ok()
        .and_then(|e| {
            e.file_name()
                .map(|n| n.to_string_lossy().starts_with("kedge-bench"))
        })
        .unwrap_or(false);
    if bench || extra.contains(&"--audit-log") {
        return Vec::new();
    }
    vec![
        "--audit-log".into(),
        data_dir.join("audit.log").into_os_string(),
    ]
}

/// Wait for a child to exit within `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let stacks = thread_stacks(child.id());
            let _ = child.kill();
            bail!("process did not exit within {timeout:?}; its threads:\n{stacks}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every thread's stack of process `pid` (gdb, when installed): what a test prints when a
/// process it stopped hangs instead of exiting.
pub fn thread_stacks(pid: u32) -> String {
    let out = Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "set pagination off", "-ex", "thread apply all bt 40"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(no stacks: gdb: {e})"),
    }
}

/// Run kubectl with a kubeconfig, optional stdin and extra environment.
pub fn kubectl(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout", "30s"])
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("kubectl is installed");
    if let Some(input) = stdin
        && let Some(mut s) = child.stdin.take()
    {
        let _ = s.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("kubectl output")
}

/// Poll `f` until it returns `Some`, or fail naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A curl request: returns (HTTP code, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
