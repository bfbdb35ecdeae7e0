//! Who is on the other end of a TLS connection: the node name from the
//! client certificate's CN (`system:node:<name>`) and the certificate's
//! serial (for revocation). rustls already verified the chain against the
//! node CA; this only reads the verified leaf. A node's identity comes from
//! here and nowhere else.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// CN prefix of node certificates.
pub const NODE_CN_PREFIX: &str = "system:node:";

/// The client certificate's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The node name (CN without `system:node:`).
    pub node: String,
    /// The serial number, lower-case hex without separators or leading
    /// zero bytes (`"0a1b..."`).
    pub serial_hex: String,
    /// The certificate's notAfter, Unix seconds. rustls checks it in a full handshake, but
    /// a resumed TLS 1.3 session carries the certificate of the original handshake without
    /// checking it again: the hub checks this at the upgrade and while the session runs.
    pub not_after: i64,
}

impl PeerIdentity {
    /// Whether the certificate expired at `now` (Unix seconds).
    pub fn expired_at(&self, now: i64) -> bool {
        now > self.not_after
    }
}

/// Why a connection has no usable node identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No client certificate was presented.
    #[error("a client certificate is required (join the node first)")]
    NoCertificate,
    /// The certificate does not parse (cannot happen after rustls accepted it).
    #[error("the client certificate cannot be parsed")]
    Unparsable,
    /// The CN is not `system:node:<valid node name>`.
    #[error("the client certificate's CN {0:?} is not system:node:<name>")]
    BadIdentity(String),
}

impl IdentityError {
    /// Metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::NoCertificate => "no_certificate",
            IdentityError::Unparsable | IdentityError::BadIdentity(_) => "bad_identity",
        }
    }

    /// HTTP status for the refusal: 401 without a certificate, else 403.
    pub fn status(&self) -> u16 {
        match self {
            IdentityError::NoCertificate => 401,
            _ => 403,
        }
    }
}

/// Reads the identity from the verified peer chain (leaf first).
pub fn peer_identity(chain: Option<&[CertificateDer<'_>]>) -> Result<PeerIdentity, IdentityError> {
    let leaf = chain
        .and_then(|c| c.first())
        .ok_or(IdentityError::NoCertificate)?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| IdentityError::Unparsable)?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    let node = cn
        .strip_prefix(NODE_CN_PREFIX)
        .filter(|n| valid_node_name(n))
        .ok_or_else(|| IdentityError::BadIdentity(cn.chars().take(128).collect()))?;
    Ok(PeerIdentity {
        node: node.to_owned(),
        serial_hex: serial_hex(cert.raw_serial()),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Lower-case hex of a serial, leading zero bytes dropped (DER adds one
/// when the high bit is set).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start.min(raw.len())..])
}

/// A DNS subdomain (RFC 1123): what Kubernetes accepts as a Node name.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x8f, 0x01]));
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn node_name_and_serial_come_from_the_certificate() {
        let der = cert("system:node:edge-1");
        let id = peer_identity(Some(&[der])).unwrap();
        assert_eq!(id.node, "edge-1");
        assert_eq!(id.serial_hex, "8f01");
        // rcgen's default validity ends in 4096.
        assert!(!id.expired_at(chrono::Utc::now().timestamp()));
        assert!(id.expired_at(id.not_after + 1));
    }

    #[test]
    fn other_identities_are_refused() {
        assert_eq!(
            peer_identity(None).unwrap_err(),
            IdentityError::NoCertificate
        );
        assert_eq!(peer_identity(Some(&[])).unwrap_err().status(), 401);
        for cn in [
            "admin",
            "system:node:",
            "system:node:Edge",
            "system:node:a/b",
            "system:nodes:x",
        ] {
            let err = peer_identity(Some(&[cert(cn)])).unwrap_err();
            assert_eq!(err.reason(), "bad_identity", "{cn}");
            assert_eq!(err.status(), 403);
        }
        let garbage = CertificateDer::from(vec![1, 2, 3]);
        assert_eq!(
            peer_identity(Some(&[garbage])).unwrap_err().reason(),
            "bad_identity"
        );
    }

    #[test]
    fn serials_are_normalised() {
        assert_eq!(serial_hex(&[0, 0, 0xab]), "ab");
        assert_eq!(serial_hex(&[0x12, 0x00]), "1200");
        assert_eq!(serial_hex(&[0]), "00");
        assert_eq!(serial_hex(&[]), "");
    }
}
