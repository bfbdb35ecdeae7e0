//! The node CA: the certificate authority that signs edge nodes' client certificates
//! (CN `system:node:<name>`, O `system:nodes`) and CloudHub's serving certificate.
//!
//! It is deliberately **not** the API server's client CA, so an edge certificate is never
//! an API credential. It lives in the Secret `kedge-system/kedge-node-ca` (type
//! `kedge.io/node-ca`, data `ca.crt` + `ca.key`) and is created once with create-if-absent
//! semantics: every replica generates a candidate, tries to create the Secret, and on
//! `409 AlreadyExists` reads and uses the one that won — replicas that start together
//! converge on one CA (KubeEdge #5923).
//!
//! Start at [`NodeCa::load_or_create`]; the minting itself is pure (`NodeCa::generate`,
//! [`NodeCa::sign_csr`], [`NodeCa::issue_server`]) and unit-tested below.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rand::TryRngCore;
use rand::rngs::OsRng;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::time::ASN1Time;

/// Namespace holding kedge's own Secrets (node CA, join tokens, certificate records).
pub const NAMESPACE: &str = "kedge-system";
/// Name of the node CA Secret.
pub const CA_SECRET: &str = "kedge-node-ca";
/// Type of the node CA Secret.
pub const CA_SECRET_TYPE: &str = "kedge.io/node-ca";
/// Subject CN of the node CA.
pub const CA_COMMON_NAME: &str = "kedge-node-ca";
/// Subject O of every node certificate (Kubernetes' node group).
pub const NODE_GROUP: &str = "system:nodes";
/// Subject CN prefix of node certificates.
pub const NODE_CN_PREFIX: &str = "system:node:";
/// Lifetime of the node CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of node certificates.
pub const DEFAULT_NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Lifetime of CloudHub's serving certificate (re-minted at every start).
const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this far in the past so peers with a slightly slow clock accept them
/// (node certificates: at most this, see [`backdate`]).
const BACKDATE: Duration = Duration::from_secs(3600);

/// How far a node certificate of lifetime `validity` is backdated for clock skew:
/// min(1 h, 10% of the lifetime), so a short-lived certificate is not mostly in the past.
pub fn backdate(validity: Duration) -> Duration {
    BACKDATE.min(validity / 10)
}

/// Errors of the node CA.
#[derive(Debug, thiserror::Error)]
pub enum NodeCaError {
    /// Creating the `kedge-system` namespace failed (other than "already exists").
    #[error("creating namespace {NAMESPACE}")]
    CreateNamespace(#[source] kube::Error),
    /// Creating the CA Secret failed (other than "already exists").
    #[error("creating Secret {NAMESPACE}/{CA_SECRET}")]
    CreateSecret(#[source] kube::Error),
    /// Reading the CA Secret after losing the creation race failed.
    #[error("reading Secret {NAMESPACE}/{CA_SECRET}")]
    ReadSecret(#[source] kube::Error),
    /// The stored CA is unusable; kedge never replaces it on its own, since every joined
    /// node trusts it.
    #[error("Secret {NAMESPACE}/{CA_SECRET} holds an unusable CA: {0}")]
    InvalidCa(String),
    /// rcgen refused to mint something.
    #[error("minting the {what}")]
    Mint {
        /// What was being minted.
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// The operating system's random source failed.
    #[error("reading random bytes")]
    Random(#[source] rand::rand_core::OsError),
    /// The CSR could not be parsed or its signature is invalid.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    /// A serving-certificate SAN is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),
    /// A validity bound is out of range.
    #[error("certificate validity out of range")]
    Validity,
}

/// A certificate issued by the node CA.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its serial number, lower-case hex without leading zeros (see [`serial_hex`]).
    pub serial_hex: String,
    /// Its expiry, Unix seconds.
    pub not_after: i64,
}

/// The loaded node CA: certificate and key.
pub struct NodeCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    not_after: i64,
    hash: String,
}

impl std::fmt::Debug for NodeCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCa")
            .field("hash", &self.hash)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl NodeCa {
    /// Reads the CA from `kedge-system/kedge-node-ca`, creating the namespace and the
    /// Secret when absent (create-if-absent: on `409` the existing Secret wins).
    pub async fn load_or_create(client: &Client) -> Result<Self, NodeCaError> {
        ensure_namespace(client).await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        if let Some(existing) = secrets
            .get_opt(CA_SECRET)
            .await
            .map_err(NodeCaError::ReadSecret)?
        {
            return Self::from_secret(&existing);
        }
        let candidate = Self::generate(SystemTime::now())?;
        match secrets
            .create(&PostParams::default(), &candidate.to_secret())
            .await
        {
            Ok(_) => {
                tracing::info!(hash = %candidate.hash, "created the node CA");
                Ok(candidate)
            }
            Err(e) if api_status(&e) == Some(409) => {
                tracing::info!("another replica created the node CA first; using it");
                let existing = secrets
                    .get(CA_SECRET)
                    .await
                    .map_err(NodeCaError::ReadSecret)?;
                Self::from_secret(&existing)
            }
            Err(e) => Err(NodeCaError::CreateSecret(e)),
        }
    }

    /// Mints a fresh self-signed CA (ECDSA P-256, ten years).
    pub fn generate(now: SystemTime) -> Result<Self, NodeCaError> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| NodeCaError::Mint {
                what: "CA key",
                source,
            })?;
        let now = unix_secs(now);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // An id derived from the key keeps two installations' CAs apart by name, so a
        // foreign certificate fails as "unknown CA" instead of a confusing signature error.
        let id = Sha256::digest(key.subject_public_key_info());
        dn.push(
            DnType::OrganizationalUnitName,
            format!("ca-{}", hex::encode(&id[..8])),
        );
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(
            &mut params,
            now - secs(BACKDATE),
            now.saturating_add(secs(CA_VALIDITY)),
        )?;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(|source| NodeCaError::Mint {
                what: "CA certificate",
                source,
            })?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Parses a CA certificate + key (PEM) and checks that they belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, NodeCaError> {
        let bad = |m: String| NodeCaError::InvalidCa(m);
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad(format!("ca.crt is not a PEM certificate: {e}")))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("ca.key: {e}")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| bad(format!("ca.crt is not X.509: {e}")))?;
        if !x509.is_ca() {
            return Err(bad("ca.crt is not a CA certificate".into()));
        }
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(bad("ca.key does not belong to ca.crt".into()));
        }
        let not_after = x509.validity().not_after.timestamp();
        Ok(Self {
            hash: ca_hash(cert_pem),
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key,
            not_after,
        })
    }

    fn from_secret(secret: &Secret) -> Result<Self, NodeCaError> {
        let data = secret.data.as_ref();
        let field = |name: &str| {
            data.and_then(|d| d.get(name))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .ok_or_else(|| NodeCaError::InvalidCa(format!("no data.{name}")))
        };
        Self::from_pem(&field("ca.crt")?, &field("ca.key")?)
    }

    fn to_secret(&self) -> Secret {
        let data = BTreeMap::from([
            (
                "ca.crt".to_owned(),
                ByteString(self.cert_pem.clone().into()),
            ),
            (
                "ca.key".to_owned(),
                ByteString(self.key.serialize_pem().into()),
            ),
        ]);
        Secret {
            metadata: ObjectMeta {
                name: Some(CA_SECRET.into()),
                namespace: Some(NAMESPACE.into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/part-of".to_owned(),
                    "kedge".to_owned(),
                )])),
                ..Default::default()
            },
            type_: Some(CA_SECRET_TYPE.into()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// The CA certificate, PEM (what `GET /ca.crt` serves).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// sha256 (lower-case hex) of [`NodeCa::cert_pem`]'s bytes: what join tokens pin.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Signs a node's CSR. Only the CSR's public key is used: the subject is always CN
    /// `system:node:<node>`, O `system:nodes`, no SANs, client-auth only, valid for
    /// `validity` (cut at the CA's own expiry) with a random serial.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        node: &str,
        validity: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, NodeCaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| NodeCaError::InvalidCsr(e.to_string()))?;
        let now = unix_secs(now);
        let not_after = now.saturating_add(secs(validity)).min(self.not_after);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, NODE_GROUP);
        dn.push(DnType::CommonName, format!("{NODE_CN_PREFIX}{node}"));
        let serial = random_serial()?;
        let serial_hex = serial_hex_of(&serial.to_bytes());
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial);
        set_validity(&mut params, now - secs(backdate(validity)), not_after)?;
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer()?)
            .map_err(|source| NodeCaError::Mint {
                what: "node certificate",
                source,
            })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            serial_hex,
            not_after,
        })
    }

    /// Mints CloudHub's serving certificate and key (PEM) for `localhost`, `127.0.0.1`,
    /// `::1` and `extra_sans` (DNS names or IP addresses).
    pub fn issue_server(
        &self,
        extra_sans: &[String],
        now: SystemTime,
    ) -> Result<(String, String), NodeCaError> {
        let now = unix_secs(now);
        let mut params = CertificateParams::default();
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        for s in extra_sans.iter().map(|s| s.trim()) {
            if !s.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(s)) {
                names.push(s.to_owned());
            }
        }
        params.subject_alt_names = names
            .iter()
            .map(|s| parse_san(s))
            .collect::<Result<_, _>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kedge-cloudhub");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(
            &mut params,
            now - secs(BACKDATE),
            now.saturating_add(secs(SERVING_VALIDITY))
                .min(self.not_after),
        )?;
        params.serial_number = Some(random_serial()?);
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| NodeCaError::Mint {
                what: "serving key",
                source,
            })?;
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(|source| NodeCaError::Mint {
                what: "serving certificate",
                source,
            })?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, NodeCaError> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(|source| NodeCaError::Mint {
            what: "issuer from the CA certificate",
            source,
        })
    }
}

/// sha256 (lower-case hex) of a CA certificate's PEM bytes, as pinned in join tokens.
pub fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

/// The serial number of a DER certificate in the form [`crate::join::Bootstrap::is_revoked`]
/// expects (lower-case hex, no leading zeros). `None` if it is not X.509.
pub fn serial_hex(cert_der: &[u8]) -> Option<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(serial_hex_of(x509.raw_serial()))
}

/// Normalises serial bytes or a hex string to lower-case hex without leading zeros.
pub fn normalize_serial_hex(s: &str) -> String {
    let t = s
        .trim()
        .trim_start_matches("0x")
        .replace(':', "")
        .to_ascii_lowercase();
    let t = t.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

/// Checks that a PEM CSR asks for exactly `node`'s identity: CN `system:node:<node>` and
/// every O `system:nodes` (at least one). A renewal must not be a way to obtain another
/// node's (or another group's) certificate even though [`NodeCa::sign_csr`] only takes the
/// public key: a CSR naming someone else is refused rather than silently rewritten.
/// `Err(InvalidCsr)` when it does not parse, `Ok(Some(subject))` naming the mismatch.
pub fn csr_identity_mismatch(csr_pem: &str, node: &str) -> Result<Option<String>, NodeCaError> {
    use x509_parser::prelude::FromDer;
    let invalid = |m: String| NodeCaError::InvalidCsr(m);
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .map_err(|e| invalid(format!("not PEM: {e}")))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(invalid(format!(
            "expected a CERTIFICATE REQUEST PEM block, got {:?}",
            pem.label
        )));
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| invalid(format!("not a PKCS#10 request: {e}")))?;
    let subject = &csr.certification_request_info.subject;
    let cns: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let want_cn = format!("{NODE_CN_PREFIX}{node}");
    let ok = cns == [want_cn.as_str()] && !orgs.is_empty() && orgs.iter().all(|o| *o == NODE_GROUP);
    Ok((!ok).then(|| subject.to_string().chars().take(256).collect()))
}

fn serial_hex_of(bytes: &[u8]) -> String {
    normalize_serial_hex(&hex::encode(bytes))
}

/// Creates `kedge-system` if absent (an existing one is fine).
pub async fn ensure_namespace(client: &Client) -> Result<(), NodeCaError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(e) if api_status(&e) == Some(409) => Ok(()),
        Err(e) => Err(NodeCaError::CreateNamespace(e)),
    }
}

/// The HTTP status of an API error response, if `e` is one. Shared by kedge's modules that
/// talk to the API (create-if-absent on 409, "absent" on 404).
pub(crate) fn api_status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Sets `params`' validity to `[from, to]` (Unix seconds).
fn set_validity(params: &mut CertificateParams, from: i64, to: i64) -> Result<(), NodeCaError> {
    let at = |unix| {
        ASN1Time::from_timestamp(unix)
            .map(|t| t.to_datetime())
            .map_err(|_| NodeCaError::Validity)
    };
    params.not_before = at(from)?;
    params.not_after = at(to)?;
    Ok(())
}

fn random_serial() -> Result<SerialNumber, NodeCaError> {
    let mut bytes = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(NodeCaError::Random)?;
    // Positive and of full length: DER keeps all 16 bytes and no sign byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn parse_san(s: &str) -> Result<SanType, NodeCaError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let rest = s.strip_prefix("*.").unwrap_or(s);
    if s.len() > 253 || !rest.split('.').all(label_ok) {
        return Err(NodeCaError::InvalidSan(s.to_owned()));
    }
    let name = s
        .to_ascii_lowercase()
        .try_into()
        .map_err(|_| NodeCaError::InvalidSan(s.to_owned()))?;
    Ok(SanType::DnsName(name))
}

#[cfg(test)]
mod tests;
