//! TLS material of the node: loading PEM files, the rustls client configs of
//! the hub link (mutual TLS, trusting only the node CA) and of the join
//! bootstrap, and the CA pin hash. One crypto provider, ring, passed
//! explicitly everywhere.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{what} is not valid PEM: {detail}")]
    Pem {
        /// What was parsed (`node CA`, `node certificate`...).
        what: String,
        /// Detail.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("invalid TLS configuration")]
    Tls(#[from] rustls::Error),
}

/// The ring provider (design: one provider, ring, everywhere).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Lower-case hex sha256 of `bytes` (the token's CA pin is this over the CA PEM).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a file into a string, naming it in the error.
pub fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in `pem`; at least one.
pub fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| PkiError::Pem {
        what: what.to_owned(),
        detail: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(PkiError::Pem {
            what: what.to_owned(),
            detail: "no CERTIFICATE block".to_owned(),
        });
    }
    Ok(certs)
}

/// The private key in `pem`.
pub fn private_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// A root store holding only the certificates of `ca_pem`.
pub fn roots(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem, "node CA")? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// Client config of the hub link: TLS 1.3, trusts only the node CA,
/// authenticates with the node certificate.
pub fn link_client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, PkiError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(
            certs(cert_pem, "node certificate")?,
            private_key(key_pem, "node key")?,
        )?;
    Ok(config)
}

/// [`link_client_config`] from the PEM files of a [`crate::config::PkiConfig`].
pub fn link_client_config_from(pki: &crate::config::PkiConfig) -> Result<ClientConfig, PkiError> {
    link_client_config(&read(&pki.ca)?, &read(&pki.cert)?, &read(&pki.key)?)
}

/// Client config trusting only `ca_pem`, without a client certificate
/// (the join request).
pub fn bootstrap_client_config(ca_pem: &str) -> Result<ClientConfig, PkiError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth())
}

/// Client config that accepts ANY server certificate. Used for exactly one
/// request — fetching the CA whose hash the join token pins — and never for
/// anything that carries a secret: the pin check is what authenticates.
pub fn unverified_client_config() -> Result<ClientConfig, PkiError> {
    let provider = provider();
    let verifier = Arc::new(AcceptAnyServerCert(provider.clone()));
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The server name to verify for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, PkiError> {
    ServerName::try_from(host.to_owned()).map_err(|e| PkiError::Pem {
        what: format!("server name {host:?}"),
        detail: e.to_string(),
    })
}

#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Writes `data` to `path` with `mode` durably: a `<path>.tmp` file, fsynced, renamed over
/// `path` — a crash leaves the old or the new content, never half of it.
pub fn write_synced(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
