//! A private containerd for tests: its own root, state, socket, CNI conf dir and config
//! (with the settings these machines need — `restrict_oom_score_adj = true`, a blocking
//! local sandbox image, Debian's CNI plugins), and a small OCI image built here from
//! Debian's busybox-static and imported with `ctr` — no registry anywhere.
//!
//! Dropping a [`Containerd`] kills its containers' shims, containerd itself and unmounts
//! what it left, so parallel tests do not leak processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The test image: busybox, Cmd `sleep 2147483647`; also the sandbox image.
pub const IMAGE: &str = "docker.io/kedge/busybox:test";

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A running private containerd.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    /// Root of everything it owns.
    pub dir: PathBuf,
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// `unix://<socket>`, for `--cri-endpoint`.
    pub endpoint: String,
    /// Its log.
    pub log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// Fails with what to install when containerd, ctr, runc, busybox or the CNI plugins are
/// missing (scripts/test.sh installs them; tests never skip silently).
pub fn require_tools() -> Result<()> {
    let mut missing = Vec::new();
    for bin in ["containerd", "ctr", "runc", "busybox"] {
        if which(bin).is_none() {
            missing.push(bin.to_owned());
        }
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        missing.push("/usr/lib/cni/bridge".to_owned());
    }
    if !missing.is_empty() {
        bail!(
            "containerd tests need {} — install Debian's containerd runc \
             containernetworking-plugins busybox-static (scripts/test.sh does)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn config(dir: &Path, n: u32) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
# instance {n}
"#
    )
}

fn cni_conflist(dir: &Path, n: u32) -> String {
    let tag = std::process::id() % 10_000 * 100 + n % 100;
    let subnet = 100 + (tag % 150);
    format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "kedge-test-{tag}",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "kt{tag}",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{}/cni-ipam",
        "ranges": [[{{"subnet": "10.{subnet}.{}.0/24"}}]]
      }}
    }}
  ]
}}"#,
        dir.display(),
        n % 250
    )
}

impl Containerd {
    /// Starts a private containerd and imports [`IMAGE`]; returns once CRI answers.
    pub fn start() -> Result<Containerd> {
        require_tools()?;
        let tmp = tempfile::Builder::new()
            .prefix("kctd")
            .tempdir_in("/var/tmp")
            .context("creating the containerd dir")?;
        let dir = tmp.path().to_path_buf();
        let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::write(dir.join("config.toml"), config(&dir, n))?;
        std::fs::write(dir.join("net.d/10-kedge.conflist"), cni_conflist(&dir, n))?;
        let log = dir.join("containerd.log");
        let child = Command::new(which("containerd").context("containerd")?)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning containerd")?;
        let socket = dir.join("containerd.sock");
        let mut c = Containerd {
            child: Some(child),
            endpoint: format!("unix://{}", socket.display()),
            socket,
            log,
            dir,
            _tmp: Some(tmp),
        };
        c.wait_ready(Duration::from_secs(60))?;
        let tar = c.dir.join("busybox.tar");
        build_image(&tar)?;
        c.import(&tar)?;
        Ok(c)
    }

    /// A handle to a containerd that does not run (its socket does not exist): for tests of
    /// an edge without a runtime.
    pub fn ghost(socket: &Path) -> Containerd {
        Containerd {
            child: None,
            dir: socket.parent().map(Path::to_path_buf).unwrap_or_default(),
            endpoint: format!("unix://{}", socket.display()),
            socket: socket.to_path_buf(),
            log: PathBuf::new(),
            _tmp: None,
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.socket.exists() {
                let out = self.ctr(&["version"]);
                if out.status.success() {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("containerd exited ({status}); log:\n{}", self.log_text());
            }
            if start.elapsed() > timeout {
                bail!(
                    "containerd not ready within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The containerd log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `ctr -a <socket> -n k8s.io ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .unwrap_or_else(|e| Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
                stdout: Vec::new(),
                stderr: e.to_string().into_bytes(),
            })
    }

    /// Imports an OCI/Docker image tar into the CRI namespace.
    pub fn import(&self, tar: &Path) -> Result<()> {
        let out = self.ctr(&["images", "import", &tar.to_string_lossy()]);
        if !out.status.success() {
            bail!(
                "ctr images import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Task (process) ids running in the CRI namespace.
    pub fn tasks(&self) -> Vec<String> {
        let out = self.ctr(&["tasks", "ls", "-q"]);
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        // `ctr` lists in no fixed order; sorted, two listings compare as sets.
        ids.sort();
        ids
    }

    /// Stops containerd (SIGKILL), like a crash; the shims keep running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn cleanup(&mut self) {
        if self.child.is_none() && self._tmp.is_none() {
            return;
        }
        // Kill the task processes first, then containerd, then any shim of ours.
        for id in self.tasks() {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
        }
        self.kill();
        let needle = self.dir.to_string_lossy().into_owned();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(needle.as_str()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).output();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

/// The layer: `/bin/busybox` and a symlink per applet, `/etc/passwd`, `/tmp` and the
/// mount points a container needs.
fn layer() -> Result<Vec<u8>> {
    let busybox = std::fs::read(which("busybox").context("busybox")?)?;
    let list = Command::new("busybox").arg("--list").output()?;
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    let mut b = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("root", 0o700),
        ("var", 0o755),
        ("run", 0o755),
    ] {
        b.append(
            &header(&format!("{dir}/"), tar::EntryType::Directory, mode, 0),
            &[][..],
        )?;
    }
    let h = header(
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        busybox.len() as u64,
    );
    b.append(&h, busybox.as_slice())?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox")?;
        h.set_cksum();
        b.append(&h, &[][..])?;
    }
    for (path, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ] {
        let h = header(path, tar::EntryType::Regular, 0o644, text.len() as u64);
        b.append(&h, text.as_bytes())?;
    }
    Ok(b.into_inner()?)
}

/// Writes an OCI image layout tar (`oci-layout`, `index.json`, `blobs/sha256/*`) of the
/// busybox image named [`IMAGE`] to `out`.
pub fn build_image(out: &Path) -> Result<()> {
    let layer = layer()?;
    let layer_digest = sha256(&layer);
    let config = serde_json::json!({
        "architecture": goarch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sleep", "2147483647"],
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created_by": "kedge tests: busybox-static"}]
    })
    .to_string();
    let config_digest = sha256(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"), "size": layer.len()}]
    })
    .to_string();
    let manifest_digest = sha256(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
            "platform": {"architecture": goarch(), "os": "linux"},
            "annotations": {"io.containerd.image.name": IMAGE,
                "org.opencontainers.image.ref.name": "test"}}]
    })
    .to_string();
    let mut b = tar::Builder::new(std::fs::File::create(out)?);
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    for (path, bytes) in [
        ("oci-layout".to_owned(), layout.as_slice()),
        ("index.json".to_owned(), index.as_bytes()),
        (format!("blobs/sha256/{layer_digest}"), layer.as_slice()),
        (format!("blobs/sha256/{config_digest}"), config.as_bytes()),
        (
            format!("blobs/sha256/{manifest_digest}"),
            manifest.as_bytes(),
        ),
    ] {
        let h = header(&path, tar::EntryType::Regular, 0o644, bytes.len() as u64);
        b.append(&h, bytes)?;
    }
    b.into_inner()?;
    Ok(())
}
