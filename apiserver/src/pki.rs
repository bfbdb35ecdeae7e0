//! The embedded API server's own PKI. Start reading at [`ApiPki::load_or_create`].
//!
//! This CA ("kedge-apiserver-ca") is **not** the node CA that signs edge certificates: the
//! TLS listener trusts only this CA for client certificates, so an edge node certificate is
//! never an API credential (it fails the TLS handshake, see [`ApiPki::server_config`]).
//!
//! Files under the PKI directory (keys and the token are mode 0600, written atomically):
//!
//! | file | what | lifetime |
//! | --- | --- | --- |
//! | `ca.crt`, `ca.key` | self-signed API CA, ECDSA P-256, `CN=kedge-apiserver-ca, OU=ca-<key id>` | 10 years, never rotated here |
//! | `apiserver.crt/.key` | serving certificate, SANs `localhost`, `127.0.0.1`, `::1` + extra | 1 year |
//! | `admin.crt/.key` | client certificate CN `kedge-admin`, O `system:masters` | 1 year |
//! | `admin.token` | random admin bearer token (64 hex characters) | until deleted |
//! | `sa.key` | ServiceAccount token signing key, ECDSA P-256 (PKCS#8) | until deleted (tokens die with it) |
//!
//! On every start the CA is reloaded (the same CA across restarts); a leaf is re-issued when
//! it is missing, unreadable, not signed by the CA, within 30 days of expiry, or (serving
//! certificate) its SAN set differs from the configured one. Nothing else is touched, so
//! kubeconfigs written earlier keep working unless their own certificate was re-issued.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::auth::{TokenAuthenticator, UserInfo};

// `#[path]` keeps the submodule lookup identical whether this file is compiled as
// `apiserver::pki` or included elsewhere through `#[path]` (the isolated test crate).
#[path = "pki/accept.rs"]
mod accept;
#[path = "pki/der.rs"]
mod der;
#[path = "pki/issue.rs"]
mod issue;
#[path = "pki/kubeconfig.rs"]
mod kubeconfig;
#[path = "pki/store.rs"]
mod store;
#[cfg(test)]
#[path = "pki/tests.rs"]
mod tests;
#[cfg(test)]
#[path = "pki/tls_tests.rs"]
pub(crate) mod tls_tests;

pub use accept::accept_tls;
pub use kubeconfig::{CLUSTER_NAME, Credentials};

use issue::{Ca, LeafSpec};
use store::{PUBLIC_MODE, SECRET_MODE};

/// User name (certificate CN) of the admin identity.
pub const ADMIN_USER: &str = "kedge-admin";
/// Group (certificate O) of the admin identity; Kubernetes' RBAC grants it everything.
pub const ADMIN_GROUP: &str = "system:masters";

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVING_CERT: &str = "apiserver.crt";
const SERVING_KEY: &str = "apiserver.key";
const ADMIN_CERT: &str = "admin.crt";
const ADMIN_KEY: &str = "admin.key";
const ADMIN_TOKEN: &str = "admin.token";
const SA_KEY: &str = "sa.key";

/// Errors of the API PKI. None of them is retryable: they mean a bad directory, bad files
/// or bad configuration, and are reported at start.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The PKI directory could not be created.
    #[error("cannot create PKI directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A PKI file exists but could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written (or its mode set).
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `ca.crt`/`ca.key` exist but are unusable; they are never replaced automatically,
    /// since that would invalidate every credential issued so far.
    #[error("invalid API CA in {path}: {reason} (move the PKI directory away to create a new CA)")]
    InvalidCa {
        /// The CA certificate file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `ca.crt` exists without `ca.key`: nothing can be signed.
    #[error(
        "{cert} exists but its key {key} is missing (restore it, or move the PKI directory away to create a new CA)"
    )]
    MissingCaKey {
        /// The CA certificate file.
        cert: PathBuf,
        /// The missing key file.
        key: PathBuf,
    },
    /// `sa.key` exists but is not an ECDSA P-256 key; it is never replaced automatically,
    /// since that would invalidate every ServiceAccount token issued so far.
    #[error(
        "invalid ServiceAccount signing key {path}: {reason} (move it away to create a new one)"
    )]
    InvalidServiceAccountKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The API CA has expired.
    #[error("API CA {path} expired (move the PKI directory away to create a new CA)")]
    CaExpired {
        /// The CA certificate file.
        path: PathBuf,
    },
    /// A configured subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid serving certificate SAN {san:?}: {reason}")]
    InvalidSan {
        /// The offending entry.
        san: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate validity time is out of range.
    #[error("certificate validity out of range")]
    Validity {
        /// Cause.
        #[source]
        source: x509_parser::error::X509Error,
    },
    /// The operating system's random source failed.
    #[error("cannot read random bytes from the operating system")]
    Random {
        /// Cause.
        #[source]
        source: rand::rand_core::OsError,
    },
    /// Generating a key or signing a certificate failed.
    #[error("cannot create {what}")]
    Mint {
        /// What was being created.
        what: &'static str,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate produced by rcgen could not be re-encoded with its full subject
    /// (a bug, not an input problem).
    #[error("cannot re-encode the {what} of an issued certificate")]
    Resign {
        /// The DER element that was not as expected.
        what: &'static str,
    },
    /// A PEM certificate or key held in memory could not be decoded for rustls.
    #[error("cannot decode {what} for TLS")]
    DecodePem {
        /// Which object.
        what: &'static str,
        /// Cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The client certificate verifier could not be built.
    #[error("cannot build the client certificate verifier")]
    ClientVerifier {
        /// Cause.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls rejected the server configuration.
    #[error("cannot build the TLS server configuration")]
    TlsConfig {
        /// Cause.
        #[source]
        source: rustls::Error,
    },
    /// A kubeconfig was requested for a server URL that is not `https://host[:port]`.
    #[error("server URL {url:?} is not an https:// URL")]
    InvalidServerUrl {
        /// The URL given.
        url: String,
    },
    /// The kubeconfig could not be rendered as YAML.
    #[error("cannot render the kubeconfig")]
    RenderKubeconfig {
        /// Cause.
        #[source]
        source: serde_saphyr::ser::Error,
    },
}

/// The API server's CA, serving certificate, admin credentials and admin token, as loaded
/// from (and persisted to) one directory. Cheap to share behind an `Arc`; immutable.
pub struct ApiPki {
    dir: PathBuf,
    ca: Ca,
    serving_cert_pem: String,
    serving_key_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    admin_token: String,
    sa_key_pem: String,
}

impl fmt::Debug for ApiPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiPki")
            .field("dir", &self.dir)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl ApiPki {
    /// Loads the PKI from `dir`, creating whatever is missing (see the module docs for the
    /// files and the renewal rules). `sans` are extra DNS names / IP addresses for the
    /// serving certificate, on top of `localhost`, `127.0.0.1` and `::1`.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<ApiPki, PkiError> {
        Self::load_or_create_at(dir, sans, SystemTime::now())
    }

    fn load_or_create_at(dir: &Path, sans: &[String], now: SystemTime) -> Result<ApiPki, PkiError> {
        // Validate configuration before touching the disk.
        issue::wanted_sans(sans)?;
        store::ensure_dir(dir)?;
        let ca = load_or_create_ca(dir, now)?;

        let serving_spec = LeafSpec::Server { sans };
        let (serving_cert_pem, serving_key_pem) =
            load_or_issue_leaf(dir, &ca, SERVING_CERT, SERVING_KEY, &serving_spec, now)?;
        let admin_orgs = [ADMIN_GROUP];
        let admin_spec = LeafSpec::Client {
            cn: ADMIN_USER,
            orgs: &admin_orgs,
        };
        let (admin_cert_pem, admin_key_pem) =
            load_or_issue_leaf(dir, &ca, ADMIN_CERT, ADMIN_KEY, &admin_spec, now)?;
        let admin_token = load_or_create_token(&dir.join(ADMIN_TOKEN))?;
        let sa_key_pem = load_or_create_sa_key(&dir.join(SA_KEY))?;

        Ok(ApiPki {
            dir: dir.to_path_buf(),
            ca,
            serving_cert_pem,
            serving_key_pem,
            admin_cert_pem,
            admin_key_pem,
            admin_token,
            sa_key_pem,
        })
    }

    /// The directory the PKI lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API CA certificate (PEM): what clients put in `certificate-authority-data`.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The API CA certificate (DER).
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca.cert_der
    }

    /// The serving certificate (PEM).
    pub fn serving_cert_pem(&self) -> &str {
        &self.serving_cert_pem
    }

    /// The admin client certificate (PEM), CN `kedge-admin`, O `system:masters`.
    pub fn admin_cert_pem(&self) -> &str {
        &self.admin_cert_pem
    }

    /// The admin client key (PEM, PKCS#8).
    pub fn admin_key_pem(&self) -> &str {
        &self.admin_key_pem
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The key ServiceAccount tokens are signed with (`sa.key`: ECDSA P-256, PKCS#8 PEM).
    pub fn service_account_key_pem(&self) -> &str {
        &self.sa_key_pem
    }

    /// The identity the admin certificate and token authenticate as.
    pub fn admin_user() -> UserInfo {
        UserInfo::new(ADMIN_USER, [ADMIN_GROUP])
    }

    /// A token authenticator that knows the admin token; add further validators to it.
    pub fn token_authenticator(&self) -> TokenAuthenticator {
        let mut tokens = TokenAuthenticator::new();
        tokens.add_static_token(&self.admin_token, Self::admin_user());
        tokens
    }

    /// Issues a client certificate signed by the API CA: `cn` becomes the user name, `orgs`
    /// the groups. Valid for `ttl`, cut at the CA's expiry. Returns `(cert_pem, key_pem)`.
    /// Nothing is persisted.
    pub fn issue_client_cert(
        &self,
        cn: &str,
        orgs: &[&str],
        ttl: Duration,
    ) -> Result<(String, String), PkiError> {
        let minted = issue::mint_leaf(
            &self.ca,
            &LeafSpec::Client { cn, orgs },
            ttl,
            SystemTime::now(),
        )?;
        Ok((minted.cert_pem, minted.key_pem))
    }

    /// The TLS configuration of the API listener (ring provider, TLS 1.2 and 1.3, ALPN `h2`
    /// and `http/1.1`).
    ///
    /// Client certificates are **optional but verified**: a client without a certificate
    /// (bearer token, or anonymous to be refused with 401 later) completes the handshake; a
    /// client presenting a certificate that does not chain to the API CA (an edge node
    /// certificate, a certificate of another cluster) fails the handshake. The server then
    /// sends a fatal `unknown_ca` alert (rustls reports
    /// `InvalidCertificate(UnknownIssuer)` on the server side; kubectl prints
    /// `remote error: tls: unknown certificate authority`). With TLS 1.3 the client's
    /// handshake may already have finished, so clients see the alert on their first read.
    /// Accept with [`accept_tls`] so that such a client reliably sees that alert. A verified
    /// chain's identity is read with [`crate::auth::user_from_peer_certs`].
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.cert_der.clone())
            .map_err(|source| PkiError::TlsConfig { source })?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|source| PkiError::ClientVerifier { source })?;

        let cert =
            CertificateDer::from_pem_slice(self.serving_cert_pem.as_bytes()).map_err(|source| {
                PkiError::DecodePem {
                    what: "serving certificate",
                    source,
                }
            })?;
        let key =
            PrivateKeyDer::from_pem_slice(self.serving_key_pem.as_bytes()).map_err(|source| {
                PkiError::DecodePem {
                    what: "serving key",
                    source,
                }
            })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| PkiError::TlsConfig { source })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .map_err(|source| PkiError::TlsConfig { source })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The admin kubeconfig as YAML (see [`ApiPki::write_kubeconfig`]).
    pub fn kubeconfig_yaml(&self, server_url: &str, mode: Credentials) -> Result<String, PkiError> {
        let (cert_and_key_pem, token) = match mode {
            Credentials::ClientCert => (
                Some((self.admin_cert_pem.as_str(), self.admin_key_pem.as_str())),
                None,
            ),
            Credentials::Token => (None, Some(self.admin_token.as_str())),
        };
        kubeconfig::render(&kubeconfig::Input {
            server_url,
            ca_cert_pem: &self.ca.cert_pem,
            user: ADMIN_USER,
            cert_and_key_pem,
            token,
        })
    }

    /// Writes an admin kubeconfig to `path` (parent directories are created): cluster and
    /// context `kedge` (current), user `kedge-admin` with the admin certificate or token,
    /// the CA inline. Mode 0600, replaced atomically. `server_url` is `https://host:port`.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server_url: &str,
        mode: Credentials,
    ) -> Result<(), PkiError> {
        let yaml = self.kubeconfig_yaml(server_url, mode)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            store::ensure_dir(parent)?;
        }
        store::write_atomic(path, yaml.as_bytes(), SECRET_MODE)
    }
}

/// Loads `ca.crt` + `ca.key`, re-self-signs the certificate if only the key survived, or
/// creates a new CA if neither exists.
fn load_or_create_ca(dir: &Path, now: SystemTime) -> Result<Ca, PkiError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let cert = store::read_optional(&cert_path)?;
    let key = store::read_optional(&key_path)?;
    match (cert, key) {
        (Some(cert), Some(key)) => {
            store::tighten_secret_mode(&key_path)?;
            let ca = issue::parse_ca(&cert, &key, &cert_path)?;
            let now_unix = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if ca.not_after <= i64::try_from(now_unix).unwrap_or(i64::MAX) {
                return Err(PkiError::CaExpired { path: cert_path });
            }
            Ok(ca)
        }
        (Some(_), None) => Err(PkiError::MissingCaKey {
            cert: cert_path,
            key: key_path,
        }),
        (None, Some(key)) => {
            // The key is written first, so this is a crash during creation (or a deleted
            // certificate): a certificate over the same key keeps issued leaves valid.
            store::tighten_secret_mode(&key_path)?;
            let key = rcgen::KeyPair::from_pem(&key).map_err(|e| PkiError::InvalidCa {
                path: key_path.clone(),
                reason: format!("unreadable key: {e}"),
            })?;
            tracing::warn!(path = %cert_path.display(), "API CA certificate missing; re-signing it from the existing key");
            let ca = issue::self_sign_ca(key, now)?;
            store::write_atomic(&cert_path, ca.cert_pem.as_bytes(), PUBLIC_MODE)?;
            Ok(ca)
        }
        (None, None) => {
            tracing::info!(dir = %dir.display(), "creating API CA");
            let ca = issue::mint_ca(now)?;
            store::write_atomic(&key_path, ca.key.serialize_pem().as_bytes(), SECRET_MODE)?;
            store::write_atomic(&cert_path, ca.cert_pem.as_bytes(), PUBLIC_MODE)?;
            Ok(ca)
        }
    }
}

/// Returns the leaf in `cert_file`/`key_file` if it is still fit for `spec`, else issues
/// and persists a new one.
fn load_or_issue_leaf(
    dir: &Path,
    ca: &Ca,
    cert_file: &str,
    key_file: &str,
    spec: &LeafSpec<'_>,
    now: SystemTime,
) -> Result<(String, String), PkiError> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    let reason = match (
        store::read_optional(&cert_path)?,
        store::read_optional(&key_path)?,
    ) {
        (Some(cert), Some(key)) => match issue::inspect_leaf(ca, &cert, &key, spec, now) {
            Ok(()) => {
                store::tighten_secret_mode(&key_path)?;
                return Ok((cert, key));
            }
            Err(reason) => reason,
        },
        _ => "missing".to_owned(),
    };
    tracing::info!(cert = %cert_path.display(), %reason, "issuing certificate");
    let minted = issue::mint_leaf(ca, spec, issue::LEAF_VALIDITY, now)?;
    // Key first: a crash in between leaves a mismatched pair, which is re-issued next start.
    store::write_atomic(&key_path, minted.key_pem.as_bytes(), SECRET_MODE)?;
    store::write_atomic(&cert_path, minted.cert_pem.as_bytes(), PUBLIC_MODE)?;
    Ok((minted.cert_pem, minted.key_pem))
}

/// Reads the ServiceAccount signing key, or creates one (ECDSA P-256).
fn load_or_create_sa_key(path: &Path) -> Result<String, PkiError> {
    if let Some(pem) = store::read_optional(path)? {
        store::tighten_secret_mode(path)?;
        let key =
            rcgen::KeyPair::from_pem(&pem).map_err(|e| PkiError::InvalidServiceAccountKey {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(PkiError::InvalidServiceAccountKey {
                path: path.to_path_buf(),
                reason: "not an ECDSA P-256 key".into(),
            });
        }
        return Ok(pem);
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
        PkiError::Mint {
            what: "ServiceAccount signing key",
            source,
        }
    })?;
    let pem = key.serialize_pem();
    store::write_atomic(path, pem.as_bytes(), SECRET_MODE)?;
    Ok(pem)
}

/// Reads the admin token, or creates one (32 random bytes, hex).
fn load_or_create_token(path: &Path) -> Result<String, PkiError> {
    if let Some(existing) = store::read_optional(path)? {
        let token = existing.trim();
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
            store::tighten_secret_mode(path)?;
            return Ok(token.to_owned());
        }
        tracing::warn!(path = %path.display(), "admin token file is empty or malformed; replacing it");
    }
    let mut bytes = [0u8; 32];
    issue::random_bytes(&mut bytes)?;
    let token = hex::encode(bytes);
    store::write_atomic(path, format!("{token}\n").as_bytes(), SECRET_MODE)?;
    Ok(token)
}

#[cfg(test)]
#[path = "pki/kube_tests.rs"]
mod kube_tests;
