//! `edgecore images import FILE.tar`: loads an image archive (OCI layout or `docker save`)
//! into the runtime's CRI namespace, for gateways that get images by sneakernet.
//!
//! CRI has no import call, so this streams the file into containerd's own client,
//! `ctr -a <socket> -n k8s.io images import -` (reading from stdin), and reports progress
//! from the bytes it fed. Imported images are then used by pods whatever their pull policy
//! when the registry is unreachable (see [`super::start::ensure_image`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The endpoint is not a unix socket.
    #[error(transparent)]
    Endpoint(#[from] super::cri::CriError),
    /// `ctr` is not installed.
    #[error("cannot run `ctr` (containerd's client, from the containerd package): {0}")]
    Ctr(#[source] std::io::Error),
    /// `ctr` refused the archive.
    #[error("import failed: {0}")]
    Failed(String),
}

/// Imports `file` into the runtime at `endpoint`; returns the image names imported.
/// Progress goes to `progress` (one line per step, `\r`-updated on a terminal).
pub async fn import(
    file: &Path,
    endpoint: &str,
    progress: &mut dyn Write,
) -> Result<Vec<String>, ImportError> {
    let socket = super::cri::socket_path(endpoint)?;
    let read_err = |source| ImportError::Read {
        path: file.to_path_buf(),
        source,
    };
    let mut input = tokio::fs::File::open(file).await.map_err(read_err)?;
    let total = input.metadata().await.map_err(read_err)?.len();
    let mut child = tokio::process::Command::new("ctr")
        .arg("-a")
        .arg(&socket)
        .args(["-n", "k8s.io", "images", "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(ImportError::Ctr)?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| ImportError::Failed("no stdin".to_owned()))?;
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).await.map_err(read_err)?;
        if n == 0 {
            break;
        }
        if stdin.write_all(&buf[..n]).await.is_err() {
            // ctr stopped reading: its stderr says why.
            break;
        }
        sent += n as u64;
        if last.elapsed() >= Duration::from_millis(250) || sent == total {
            last = Instant::now();
            let pct = (sent * 100).checked_div(total).unwrap_or(100);
            let _ = write!(
                progress,
                "\rimporting {}: {pct:>3}% ({} / {} MiB)",
                file.display(),
                sent >> 20,
                total >> 20
            );
            let _ = progress.flush();
        }
    }
    drop(stdin);
    let out = child.wait_with_output().await.map_err(ImportError::Ctr)?;
    let _ = writeln!(progress);
    if !out.status.success() {
        return Err(ImportError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let names = imported_names(&String::from_utf8_lossy(&out.stdout));
    let _ = writeln!(
        progress,
        "imported {} image(s) in {:.1}s",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(names)
}

/// The names in ctr's `unpacking NAME (sha256:...)...done` lines.
pub fn imported_names(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("unpacking "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_ctr_output() {
        let out = "unpacking docker.io/kedge/busybox:test (sha256:ab12)...done\n\
                   unpacking docker.io/library/nginx:1 (sha256:cd)...done\n";
        assert_eq!(
            imported_names(out),
            vec!["docker.io/kedge/busybox:test", "docker.io/library/nginx:1"]
        );
    }

    #[tokio::test]
    async fn missing_file_is_a_clear_error() {
        let mut sink = Vec::new();
        let e = import(Path::new("/nonexistent.tar"), "unix:///x.sock", &mut sink)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("cannot read /nonexistent.tar"),
            "{e}"
        );
    }
}
