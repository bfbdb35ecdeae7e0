//! The audit log: one JSON line per request (who, what, which object, the answer), on when
//! the server is started with an audit path. Lines are appended through a buffered writer
//! owned by a mutex; a failed write is logged once and never fails the request.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// One audited request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent<'a> {
    pub timestamp: String,
    pub user: &'a str,
    pub groups: &'a [String],
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uri: &'a str,
    pub code: u16,
}

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    out: Mutex<BufWriter<File>>,
}

impl AuditLog {
    /// Open `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            out: Mutex::new(BufWriter::new(f)),
        })
    }

    /// Append one line (flushed at once so a crash loses nothing written).
    pub fn record(&self, ev: &AuditEvent<'_>) {
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        let line = serde_json::to_vec(ev).unwrap_or_default();
        let ok =
            out.write_all(&line).is_ok() && out.write_all(b"\n").is_ok() && out.flush().is_ok();
        if !ok {
            tracing::warn!("writing the audit log failed");
        }
    }
}
