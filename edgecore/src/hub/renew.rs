//! Node certificate rotation: when to renew, the key + certificate files as one pair, and
//! what the link's TLS uses.
//!
//! [`Renewer`] owns the node's PKI files for the running edgecore. The hub asks it for
//! the TLS configuration at every dial ([`Renewer::load`]: the files are read again, so a
//! certificate written by `edgecore join` while edgecore runs is picked up at the next
//! dial, without a restart). Once the link is live and [`Renewer::due`] has passed
//! (80% ± 5% of the certificate's lifetime, jittered so a fleet joined together does not
//! renew together), the hub sends a CERT_RENEW_REQUEST with a CSR for a fresh key
//! ([`Renewer::begin`]); the answer is written with [`write_pair`] and the hub reconnects
//! with the new certificate.
//!
//! Crash safety ([`write_pair`], [`recover_pair`]): the new key and certificate are first
//! written and fsynced as `<key>.new` and `<cert>.new` (the certificate last, so a
//! `<cert>.new` on disk means the pair is complete), then renamed over the old files, key
//! first. A crash between the two renames leaves the new key next to the old certificate;
//! [`recover_pair`] (run before every load) finishes the renames, so the node never
//! *uses* a certificate with the wrong key, and an incomplete pair is discarded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;

use crate::config::PkiConfig;
use crate::pki::{self, PkiError};

/// Renew at this fraction of the lifetime...
pub const RENEW_FRACTION: f64 = 0.80;
/// ...plus or minus this much (uniformly).
pub const RENEW_JITTER: f64 = 0.05;

/// What the hub needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Serial, lower-case hex.
    pub serial_hex: String,
}

impl CertInfo {
    /// Reads the first certificate of a PEM chain; `None` if there is none.
    pub fn parse(cert_pem: &str) -> Option<CertInfo> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
        let cert = pem.parse_x509().ok()?;
        let v = cert.validity();
        Some(CertInfo {
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
            serial_hex: hex::encode(cert.raw_serial()),
        })
    }

    /// When to renew, for `unit` uniform in [0, 1): notBefore + lifetime × (0.80 ± 0.05).
    pub fn renew_at(&self, unit: f64) -> i64 {
        let fraction = RENEW_FRACTION + RENEW_JITTER * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let lifetime = (self.not_after - self.not_before).max(0) as f64;
        self.not_before + (lifetime * fraction) as i64
    }
}

/// Why a renewal answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// No renewal is in progress (a stray or late answer).
    #[error("no certificate renewal is in progress")]
    NotPending,
    /// Key or CSR generation failed.
    #[error("cannot create a key and CSR: {0}")]
    Crypto(String),
    /// The answer holds no certificate for the new key.
    #[error("the cloud's certificate does not match the new key or does not parse")]
    BadCertificate,
    /// Writing the files failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// The node's certificate files and the renewal in progress. See the module docs.
#[derive(Debug)]
pub struct Renewer {
    pki: PkiConfig,
    node: String,
    current: Option<CertInfo>,
    due: Option<i64>,
    /// The key of the renewal in progress (only in memory until the answer comes).
    pending: Option<String>,
    expired_logged: bool,
    rejoin_hint: String,
}

impl Renewer {
    /// A renewer for the files of `pki`; `rejoin_hint` is the command shown when the
    /// certificate expired (`edgecore join --server ... --token <fresh token>`).
    pub fn new(pki: PkiConfig, node: String, rejoin_hint: String) -> Renewer {
        Renewer {
            pki,
            node,
            current: None,
            due: None,
            pending: None,
            expired_logged: false,
            rejoin_hint,
        }
    }

    /// Finishes an interrupted pair write, reads the files and builds the link's TLS
    /// configuration. Logs one actionable line when the certificate has expired (the
    /// cloud will refuse it; only a re-join helps) — once per expired certificate.
    pub fn load(&mut self, now: i64) -> Result<Arc<ClientConfig>, PkiError> {
        if let Err(e) = recover_pair(&self.pki) {
            tracing::warn!(error = %e, "cannot finish an interrupted certificate write");
        }
        let cert_pem = pki::read(&self.pki.cert)?;
        let config = pki::link_client_config(
            &pki::read(&self.pki.ca)?,
            &cert_pem,
            &pki::read(&self.pki.key)?,
        )?;
        let info = CertInfo::parse(&cert_pem);
        if info != self.current {
            self.due = info.as_ref().map(|i| i.renew_at(rand::random::<f64>()));
            if let Some(i) = &info {
                tracing::info!(serial = %i.serial_hex, not_after = i.not_after, renew_at = ?self.due,
                    "node certificate loaded");
            }
            self.current = info;
            self.expired_logged = false;
        }
        if self.expired(now) && !self.expired_logged {
            self.expired_logged = true;
            tracing::error!(
                node = %self.node,
                cert = %self.pki.cert.display(),
                "the node certificate expired while the node was offline, so cloudcore refuses it; pods keep running from the cache. To reconnect, create a token on the cloud (`cloudcore token create`) and run `{}` on this node: the running edgecore picks the new certificate up by itself",
                self.rejoin_hint
            );
        }
        Ok(Arc::new(config))
    }

    /// Whether the certificate file differs from the one loaded (a re-join wrote it).
    pub fn files_changed(&self) -> bool {
        let on_disk = std::fs::read_to_string(&self.pki.cert)
            .ok()
            .and_then(|pem| CertInfo::parse(&pem));
        on_disk.is_some() && on_disk != self.current
    }

    /// The loaded certificate.
    pub fn current(&self) -> Option<&CertInfo> {
        self.current.as_ref()
    }

    /// Seconds until the loaded certificate's notAfter (negative once expired).
    pub fn expires_in(&self, now: i64) -> Option<i64> {
        self.current.as_ref().map(|c| c.not_after - now)
    }

    /// Whether the loaded certificate has expired.
    pub fn expired(&self, now: i64) -> bool {
        self.current.as_ref().is_some_and(|c| now > c.not_after)
    }

    /// When the next renewal is due (Unix seconds); `None` while one is in progress.
    pub fn due(&self) -> Option<i64> {
        if self.pending.is_some() {
            return None;
        }
        self.due
    }

    /// Starts a renewal: a fresh key (kept in memory) and the CSR to send.
    pub fn begin(&mut self) -> Result<String, RenewError> {
        let (key_pem, csr_pem) =
            crate::join::key_and_csr(&self.node).map_err(|e| RenewError::Crypto(e.to_string()))?;
        self.pending = Some(key_pem);
        Ok(csr_pem)
    }

    /// The renewal could not complete (refused, a bad answer, or the session ended):
    /// forget its key and try again after `retry_after` seconds.
    pub fn abandon(&mut self, now: i64, retry_after: i64) {
        self.pending = None;
        self.due = Some(now + retry_after);
    }

    /// Writes the answer's certificate with the pending key as one pair. The next
    /// [`Renewer::load`] uses it.
    pub fn complete(&mut self, cert_pem: &str) -> Result<CertInfo, RenewError> {
        let key_pem = self.pending.take().ok_or(RenewError::NotPending)?;
        if !crate::join::cert_matches_key_and_valid(cert_pem, &key_pem, 0) {
            return Err(RenewError::BadCertificate);
        }
        let info = CertInfo::parse(cert_pem).ok_or(RenewError::BadCertificate)?;
        write_pair(&self.pki, &key_pem, cert_pem)?;
        Ok(info)
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_synced(path: &Path, data: &[u8], mode: u32) -> Result<(), RenewError> {
    crate::pki::write_synced(path, data, mode).map_err(|source| RenewError::Write {
        path: path.to_owned(),
        source,
    })
}

fn sync_dir(path: &Path) -> Result<(), RenewError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| RenewError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Replaces the node key and certificate as one pair (see the module docs): never a new
/// certificate next to the old key, and a crash at any point leaves either the old pair or
/// a state [`recover_pair`] completes.
pub fn write_pair(pki: &PkiConfig, key_pem: &str, cert_pem: &str) -> Result<(), RenewError> {
    let key_new = with_suffix(&pki.key, ".new");
    let cert_new = with_suffix(&pki.cert, ".new");
    for path in [&pki.key, &pki.cert] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| RenewError::Write {
                path: dir.to_owned(),
                source,
            })?;
        }
    }
    let _ = std::fs::remove_file(&cert_new);
    write_synced(&key_new, key_pem.as_bytes(), 0o600)?;
    // The certificate last: `<cert>.new` existing means the pair is complete.
    write_synced(&cert_new, cert_pem.as_bytes(), 0o644)?;
    sync_dir(&pki.cert)?;
    sync_dir(&pki.key)?;
    commit_pair(pki)
}

fn commit_pair(pki: &PkiConfig) -> Result<(), RenewError> {
    let key_new = with_suffix(&pki.key, ".new");
    let cert_new = with_suffix(&pki.cert, ".new");
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| RenewError::Write {
            path: to.to_owned(),
            source,
        })
    };
    if key_new.exists() {
        rename(&key_new, &pki.key)?;
        sync_dir(&pki.key)?;
    }
    rename(&cert_new, &pki.cert)?;
    sync_dir(&pki.cert)
}

/// What [`recover_pair`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// No interrupted write.
    Clean,
    /// A complete pair was half renamed or not yet renamed: finished.
    RolledForward,
    /// An incomplete pair (no `<cert>.new`) was removed; the old pair stays.
    Discarded,
}

/// Finishes or discards a [`write_pair`] interrupted by a crash.
pub fn recover_pair(pki: &PkiConfig) -> Result<Recovered, RenewError> {
    let key_new = with_suffix(&pki.key, ".new");
    let cert_new = with_suffix(&pki.cert, ".new");
    if cert_new.exists() {
        commit_pair(pki)?;
        return Ok(Recovered::RolledForward);
    }
    if key_new.exists() {
        std::fs::remove_file(&key_new).map_err(|source| RenewError::Write {
            path: key_new.clone(),
            source,
        })?;
        return Ok(Recovered::Discarded);
    }
    Ok(Recovered::Clean)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
