//! The webhook's serving certificate, read from PEM files and re-read when they change
//! (cert-manager renews by swapping the mounted Secret), so a renewal needs no restart.
//! Until the files load, handshakes fail and the API server's failurePolicy applies.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Files are looked at no more often than this.
const RECHECK: Duration = Duration::from_secs(2);

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("loading the private key {path}")]
    Key {
        path: String,
        #[source]
        source: rustls::Error,
    },
}

/// Load a certificate chain and its key.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, CertError> {
    let shown = |p: &Path| p.display().to_string();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| CertError::Read {
            path: shown(cert),
            source,
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate { path: shown(cert) });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|source| CertError::Read {
        path: shown(key),
        source,
    })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|source| CertError::Key {
            path: shown(key),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    // A renewal caught between writing the key and the certificate: refuse the pair (the
    // old one keeps serving) rather than serve a certificate the key cannot sign for.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(source) => Err(CertError::Key {
            path: shown(key),
            source,
        }),
    }
}

#[derive(Debug, Default)]
struct Loaded {
    stamp: Option<(SystemTime, SystemTime)>,
    key: Option<Arc<CertifiedKey>>,
    checked: Option<Instant>,
}

/// A [`ResolvesServerCert`] over two files.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

impl ReloadingCert {
    /// Watch `cert`/`key`; the first load happens now (its error is returned for the log,
    /// the resolver keeps trying).
    pub fn new(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> (Self, Result<(), CertError>) {
        let me = Self {
            cert,
            key,
            provider,
            state: Mutex::new(Loaded::default()),
        };
        let first = me.reload(true);
        (me, first)
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }

    fn reload(&self, force: bool) -> Result<(), CertError> {
        let Ok(mut st) = self.state.lock() else {
            return Ok(());
        };
        if !force && st.checked.is_some_and(|t| t.elapsed() < RECHECK) {
            return Ok(());
        }
        st.checked = Some(Instant::now());
        let stamp = self.stamp();
        if !force && stamp.is_some() && stamp == st.stamp {
            return Ok(());
        }
        match load(&self.cert, &self.key, &self.provider) {
            Ok(k) => {
                if st.key.is_some() {
                    tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                }
                st.key = Some(Arc::new(k));
                st.stamp = stamp;
                Ok(())
            }
            Err(e) => {
                // Keep serving the old certificate (a half-written renewal); retry later.
                if !force {
                    tracing::warn!(error = %e, "webhook certificate not (re)loaded");
                }
                Err(e)
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let _ = self.reload(false);
        self.state.lock().ok()?.key.clone()
    }
}

/// The webhook's rustls config (TLS 1.2+, HTTP/2 and HTTP/1.1) over reloading files.
pub fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<(Arc<rustls::ServerConfig>, Result<(), CertError>), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (resolver, first) = ReloadingCert::new(cert.into(), key.into(), provider.clone());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), first))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, cert_key: &rcgen::KeyPair, file_key: &rcgen::KeyPair) {
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(cert_key)
            .unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), file_key.serialize_pem()).unwrap();
    }

    #[test]
    fn a_matching_pair_loads_and_a_mismatched_or_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let err = load(&crt, &key, &provider).unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");
        let k1 = rcgen::KeyPair::generate().unwrap();
        let k2 = rcgen::KeyPair::generate().unwrap();
        write_pair(dir.path(), &k1, &k1);
        load(&crt, &key, &provider).unwrap();
        write_pair(dir.path(), &k1, &k2);
        let err = load(&crt, &key, &provider).unwrap_err();
        assert!(matches!(err, CertError::Key { .. }), "{err}");
        std::fs::write(&crt, "no pem here").unwrap();
        assert!(load(&crt, &key, &provider).is_err());
    }
}
