//! Certificate minting and inspection for [`super::ApiPki`]: pure functions over PEM strings,
//! no file IO. `mint_*` create certificates (ECDSA P-256, random serials); `inspect_*` decide
//! whether a certificate found on disk can be kept, returning why not if it cannot.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::TryRngCore;
use rand::rngs::OsRng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use super::{PkiError, der};

/// Subject CN of the API CA.
pub(super) const CA_COMMON_NAME: &str = "kedge-apiserver-ca";
/// Subject CN of the serving certificate (clients check SANs, not this).
pub(super) const SERVING_COMMON_NAME: &str = "kedge-apiserver";
/// Names every serving certificate carries, before the configured extra SANs.
pub(super) const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Lifetime of the API CA.
pub(super) const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of the serving and admin certificates.
pub(super) const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Leaves closer than this to their expiry are re-issued at start.
pub(super) const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start this far in the past so clients with a slightly slow clock accept them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A freshly minted certificate with its private key, both PEM.
pub(super) struct Minted {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

/// What a leaf certificate is for.
pub(super) enum LeafSpec<'a> {
    /// TLS server certificate for the given SANs (DNS names or IP addresses).
    Server { sans: &'a [String] },
    /// TLS client certificate: CN is the user name, O entries are the groups.
    Client { cn: &'a str, orgs: &'a [&'a str] },
}

/// A parsed, usable API CA.
pub(super) struct Ca {
    pub(super) cert_pem: String,
    pub(super) cert_der: CertificateDer<'static>,
    pub(super) key: KeyPair,
    /// Unix seconds after which the CA is no longer valid.
    pub(super) not_after: i64,
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

fn to_time(unix: i64) -> Result<x509_parser::time::ASN1Time, PkiError> {
    ASN1Time::from_timestamp(unix).map_err(|source| PkiError::Validity { source })
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|source| PkiError::Random { source })?;
    // Positive and of full length, so DER encodes all 16 bytes without a sign byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Fills `buf` from the operating system's CSPRNG.
pub(super) fn random_bytes(buf: &mut [u8]) -> Result<(), PkiError> {
    OsRng
        .try_fill_bytes(buf)
        .map_err(|source| PkiError::Random { source })
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Mint {
        what: "key pair",
        source,
    })
}

fn ca_params(key: &KeyPair, now: i64) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // Every kedge API CA has the same CN, so the subject also carries an id derived from
    // the CA key. Without it a certificate of another kedge installation would be matched
    // to this CA by name and fail on its signature, which TLS reports as a confusing
    // `decrypt_error` instead of `unknown_ca`. Derived from the key (not random) so that a
    // CA certificate re-signed from the surviving key keeps the same name.
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
    params.not_before = to_time(now - secs(BACKDATE))?.to_datetime();
    params.not_after = to_time(now.saturating_add(secs(CA_VALIDITY)))?.to_datetime();
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Creates a new self-signed API CA.
pub(super) fn mint_ca(now: SystemTime) -> Result<Ca, PkiError> {
    let key = new_key()?;
    self_sign_ca(key, now)
}

/// Self-signs a CA certificate for an existing CA key. Certificates issued earlier by
/// that key stay valid: same subject, same key, same key identifier.
pub(super) fn self_sign_ca(key: KeyPair, now: SystemTime) -> Result<Ca, PkiError> {
    let now = unix_secs(now);
    let params = ca_params(&key, now)?;
    let cert = params.self_signed(&key).map_err(|source| PkiError::Mint {
        what: "CA certificate",
        source,
    })?;
    Ok(Ca {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key,
        not_after: now.saturating_add(secs(CA_VALIDITY)),
    })
}

/// Parses a CA certificate and key from disk and checks that they belong together.
/// `cert_path` is only used in error messages.
pub(super) fn parse_ca(
    cert_pem: &str,
    key_pem: &str,
    cert_path: &std::path::Path,
) -> Result<Ca, PkiError> {
    let bad = |reason: String| PkiError::InvalidCa {
        path: cert_path.to_path_buf(),
        reason,
    };
    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("unreadable ca.key: {e}")))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    if !x509.is_ca() {
        return Err(bad("certificate is not a CA".into()));
    }
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(bad("ca.key does not belong to ca.crt".into()));
    }
    let not_after = x509.validity().not_after.timestamp();
    Ok(Ca {
        cert_pem: cert_pem.to_owned(),
        cert_der,
        key,
        not_after,
    })
}

/// Issues a leaf certificate signed by `ca`, valid for `ttl` (cut at the CA's own expiry).
pub(super) fn mint_leaf(
    ca: &Ca,
    spec: &LeafSpec<'_>,
    ttl: Duration,
    now: SystemTime,
) -> Result<Minted, PkiError> {
    let now = unix_secs(now);
    let mut params = match spec {
        LeafSpec::Server { sans } => {
            let mut params = CertificateParams::default();
            params.subject_alt_names = wanted_sans(sans)?
                .iter()
                .map(|s| parse_san(s))
                .collect::<Result<Vec<_>, _>>()?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, SERVING_COMMON_NAME);
            params.distinguished_name = dn;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params
        }
        LeafSpec::Client { cn, .. } => {
            let mut params = CertificateParams::default();
            // The groups (O, possibly several) are written by `der::resign_with_subject`:
            // rcgen keeps one value per attribute type (rcgen issue #81).
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, *cn);
            params.distinguished_name = dn;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params
        }
    };
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_time(now - secs(BACKDATE))?.to_datetime();
    params.not_after = to_time(now.saturating_add(secs(ttl)).min(ca.not_after))?.to_datetime();
    params.serial_number = Some(random_serial()?);

    let issuer =
        Issuer::from_ca_cert_der(&ca.cert_der, &ca.key).map_err(|source| PkiError::Mint {
            what: "issuer from CA certificate",
            source,
        })?;
    let key = new_key()?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| PkiError::Mint {
            what: "leaf certificate",
            source,
        })?;
    let der = match spec {
        LeafSpec::Server { .. } => cert.der().to_vec(),
        LeafSpec::Client { cn, orgs } => {
            let subject = der::client_subject(cn, orgs);
            der::resign_with_subject(cert.der(), &subject, &ca.key)?
        }
    };
    let cert_pem = pem_encode("CERTIFICATE", &der);
    Ok(Minted {
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

/// PEM with 64-column base64 lines, as rcgen and openssl write it.
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Parses one SAN entry: an IP address, else a DNS name.
fn parse_san(s: &str) -> Result<SanType, PkiError> {
    let invalid = |reason: &str| PkiError::InvalidSan {
        san: s.to_owned(),
        reason: reason.to_owned(),
    };
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if s.is_empty() || s.len() > 253 {
        return Err(invalid("empty or longer than 253 characters"));
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let rest = s.strip_prefix("*.").unwrap_or(s);
    if !rest.split('.').all(valid_label) {
        return Err(invalid("neither an IP address nor a DNS name"));
    }
    let name = s
        .to_ascii_lowercase()
        .try_into()
        .map_err(|_| invalid("not ASCII"))?;
    Ok(SanType::DnsName(name))
}

/// The canonical SAN set a serving certificate must carry: the defaults plus `extra`,
/// DNS names lower-cased, IPs in canonical form. Rejects entries that are neither.
pub(super) fn wanted_sans(extra: &[String]) -> Result<BTreeSet<String>, PkiError> {
    DEFAULT_SANS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(extra.iter().map(|s| s.trim().to_owned()))
        .map(|s| parse_san(&s).map(|san| canonical_san(&san)))
        .collect()
}

fn canonical_san(san: &SanType) -> String {
    match san {
        SanType::IpAddress(ip) => ip.to_string(),
        SanType::DnsName(name) => name.as_str().to_ascii_lowercase(),
        other => format!("{other:?}"),
    }
}

pub(super) fn cert_sans(x509: &X509Certificate<'_>) -> BTreeSet<String> {
    let Ok(Some(ext)) = x509.subject_alternative_name() else {
        return BTreeSet::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Checks a leaf found on disk: parses, belongs to its key, chains to `ca` for its purpose,
/// is not within [`RENEW_BEFORE`] of expiry and matches `spec`. `Err(reason)` means
/// "re-issue it", with a reason for the log.
pub(super) fn inspect_leaf(
    ca: &Ca,
    cert_pem: &str,
    key_pem: &str,
    spec: &LeafSpec<'_>,
    now: SystemTime,
) -> Result<(), String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| format!("unreadable key: {e}"))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err("key does not belong to the certificate".into());
    }
    let remaining = x509.validity().not_after.timestamp() - unix_secs(now);
    if remaining < secs(RENEW_BEFORE) {
        return Err(format!("expires in {} days", remaining / 86_400));
    }
    verify_chain(ca, &der, spec, now)?;
    match spec {
        LeafSpec::Server { sans } => {
            let want = wanted_sans(sans).map_err(|e| e.to_string())?;
            let have = cert_sans(&x509);
            if want != have {
                return Err(format!("SANs changed from {have:?} to {want:?}"));
            }
        }
        LeafSpec::Client { cn, orgs } => {
            let subject = x509.subject();
            let have_cn = subject
                .iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok());
            let have_orgs: BTreeSet<&str> = subject
                .iter_organization()
                .filter_map(|a| a.as_str().ok())
                .collect();
            let want_orgs: BTreeSet<&str> = orgs.iter().copied().collect();
            if have_cn != Some(*cn) || have_orgs != want_orgs {
                return Err("subject changed".into());
            }
        }
    }
    Ok(())
}

/// Verifies `der` against `ca` exactly the way TLS peers will (rustls/webpki, ring).
fn verify_chain(
    ca: &Ca,
    der: &CertificateDer<'_>,
    spec: &LeafSpec<'_>,
    now: SystemTime,
) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der.clone())
        .map_err(|e| format!("CA not usable as a root: {e}"))?;
    let roots = Arc::new(roots);
    let at = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(unix_secs(now)).unwrap_or(0),
    ));
    let result = match spec {
        LeafSpec::Server { .. } => {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| e.to_string())?;
            let name = ServerName::try_from(DEFAULT_SANS[0]).map_err(|e| e.to_string())?;
            verifier
                .verify_server_cert(der, &[], &name, &[], at)
                .map(|_| ())
        }
        LeafSpec::Client { .. } => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| e.to_string())?;
            verifier.verify_client_cert(der, &[], at).map(|_| ())
        }
    };
    result.map_err(|e| format!("not valid under the current CA: {e}"))
}
