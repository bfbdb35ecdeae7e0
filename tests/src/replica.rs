//! `cloudcore run` replicas for end-to-end tests: production mode against a
//! `cloudcore standalone` that plays the cluster (its API server, and its node-lifecycle
//! emulation in the role of kube-controller-manager).
//!
//! Each replica authenticates the way the Helm chart's pod does: as the ServiceAccount
//! `kedge-system/cloudcore`, with a bound token from the TokenRequest API
//! (`kubectl create token`) in a kubeconfig next to the API's CA. Its requests therefore
//! land in the standalone's audit log under the chart's identity, and the RBAC check of
//! `tests/tests/helm_audit.rs` covers what `cloudcore run` does too.
//!
//! A replica listens on ports the OS picks and reports them on stdout (`hub:` and
//! `metrics:`); it is killed (SIGKILL) when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Standalone, bin, curl};

/// The chart's ServiceAccount (namespace, name).
pub const SERVICE_ACCOUNT: (&str, &str) = ("kedge-system", "cloudcore");

/// Creates the chart's ServiceAccount (idempotent) and writes a kubeconfig for it into
/// `dir`: the standalone's API URL and CA, and a one-hour bound token.
pub fn service_account_kubeconfig(s: &Standalone, dir: &Path) -> Result<PathBuf> {
    let (ns, name) = SERVICE_ACCOUNT;
    s.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}, namespace: {ns}}}\n"
    ));
    let token = s
        .kubectl_ok(&["create", "token", name, "-n", ns, "--duration", "1h"])
        .trim()
        .to_owned();
    if token.is_empty() {
        bail!("kubectl create token printed nothing");
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join("cloudcore-sa.kubeconfig");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kedge\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: kedge\n  context:\n    cluster: kedge\n    user: {name}\ncurrent-context: kedge\n",
        s.url,
        s.ca_file().display(),
    );
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// A running `cloudcore run`.
#[derive(Debug)]
pub struct Replica {
    child: Option<Child>,
    /// The hub's URL (`wss://127.0.0.1:<port>`).
    pub hub: String,
    /// The hub's address.
    pub hub_addr: SocketAddr,
    /// `http://127.0.0.1:<port>/metrics`.
    pub metrics: String,
    log: PathBuf,
}

/// A replica that was spawned and has not printed its addresses yet.
#[derive(Debug)]
pub struct Starting {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Replica {
    /// Spawns `cloudcore run` with `kubeconfig`, state and log under `dir`, and `config`
    /// (TOML, may be empty) as its configuration file. Returns at once; see
    /// [`Starting::wait`]. Spawning several before waiting starts them together.
    pub fn spawn(dir: &Path, kubeconfig: &Path, config: &str) -> Result<Starting> {
        std::fs::create_dir_all(dir)?;
        let cfg = dir.join("cloudcore.toml");
        std::fs::write(&cfg, config)?;
        let log = dir.join("cloudcore.log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = Command::new(bin("cloudcore"))
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--hub-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env_remove("KUBECONFIG")
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .context("spawning cloudcore run")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining so the child never writes into a closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Starting {
            child: Some(child),
            lines,
            log,
        })
    }

    /// [`Replica::spawn`] then [`Starting::wait`].
    pub fn start(dir: &Path, kubeconfig: &Path, config: &str) -> Result<Replica> {
        Self::spawn(dir, kubeconfig, config)?.wait()
    }

    /// `/readyz` answers 200 (the watch caches synced: the hub serves edges).
    pub fn ready(&self) -> bool {
        let url = self.metrics.replace("/metrics", "/readyz");
        curl(&[&url]).0 == 200
    }

    /// The value of the un-labelled metric `name` (`None` if absent or unreachable).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (code, body) = curl(&[&self.metrics]);
        if code != 200 {
            return None;
        }
        body.lines()
            .filter_map(|l| l.strip_prefix(name))
            .find_map(|rest| rest.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Nodes with a session on this replica (`cloudcore_hub_connected_nodes`).
    pub fn connected_nodes(&self) -> Option<u64> {
        self.metric("cloudcore_hub_connected_nodes")
            .map(|v| v as u64)
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process hangs (alive, sockets open, nothing answered), as a replica
    /// stuck on a lock or starved of CPU would.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`Replica::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }

    /// Everything the replica logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Starting {
    /// Waits (up to 60 s) for the `hub:` and `metrics:` lines, then (up to 60 s more) for
    /// `/readyz`.
    pub fn wait(mut self) -> Result<Replica> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut hub, mut metrics) = (None, None);
        while hub.is_none() || metrics.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(h) = line.strip_prefix("hub: ") {
                        hub = Some(h.trim().to_owned());
                    }
                    if let Some(m) = line.strip_prefix("metrics: ") {
                        metrics = Some(m.trim().to_owned());
                    }
                }
                Err(_) => {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    bail!("cloudcore run printed no hub/metrics address within 60 s; log:\n{log}");
                }
            }
        }
        let hub = hub.unwrap_or_default();
        let hub_addr: SocketAddr = hub
            .trim_start_matches("wss://")
            .parse()
            .with_context(|| format!("hub address {hub:?}"))?;
        let replica = Replica {
            child: self.child.take(),
            hub,
            hub_addr,
            metrics: metrics.unwrap_or_default(),
            log: self.log.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !replica.ready() {
            if Instant::now() > deadline {
                bail!(
                    "cloudcore run at {} not ready within 60 s; log:\n{}",
                    replica.hub,
                    replica.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(replica)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        // A replica that never became a `Replica` (not waited for, or failed to start).
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
