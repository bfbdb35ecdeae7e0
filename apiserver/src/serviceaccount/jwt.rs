//! Compact JWS tokens signed with ES256 (ECDSA P-256, SHA-256): just what ServiceAccount
//! tokens need, on `ring`. No IO; the caller decides what the claims mean.
//!
//! The key id (`kid`) is Kubernetes': base64url of the SHA-256 of the public key's
//! SubjectPublicKeyInfo. Verification accepts only `alg: ES256` with our `kid` (or none),
//! so `alg: none` and algorithm-confusion tokens fail.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Longest token examined (a real one is well under 2 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// DER prefix of a P-256 SubjectPublicKeyInfo before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why a signer could not be made or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The key is not a PKCS#8 ECDSA P-256 key.
    #[error("the ServiceAccount signing key is not a PKCS#8 ECDSA P-256 key")]
    Key,
    /// ring refused to sign (no randomness).
    #[error("signing a ServiceAccount token failed")]
    Sign,
}

/// Signs and verifies ES256 tokens with one key.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// A signer from a PEM `PRIVATE KEY` (PKCS#8).
    pub fn from_pem(pem: &str) -> Result<Self, JwtError> {
        match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
            Ok(PrivateKeyDer::Pkcs8(k)) => Self::from_pkcs8(k.secret_pkcs8_der()),
            _ => Err(JwtError::Key),
        }
    }

    /// A signer from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, JwtError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|_| JwtError::Key)?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = B64.encode(Sha256::digest(&spki));
        Ok(Self { key, rng, kid })
    }

    /// The key id put in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `header.payload.signature` for `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, JwtError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let mut token = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
        token.push('.');
        token.push_str(&B64.encode(serde_json::to_vec(claims).unwrap_or_default()));
        let sig = self
            .key
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| JwtError::Sign)?;
        token.push('.');
        token.push_str(&B64.encode(sig.as_ref()));
        Ok(token)
    }

    /// The claims of a token this key signed, or `None` (malformed, other algorithm or key,
    /// bad signature). Claims are not checked here.
    pub fn verify(&self, token: &str) -> Option<Value> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return None;
        }
        if header
            .get("kid")
            .is_some_and(|k| k.as_str() != Some(self.kid.as_str()))
        {
            return None;
        }
        let sig = B64.decode(s).ok()?;
        let signed = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signed.as_bytes(), &sig)
            .ok()?;
        let claims: Value = serde_json::from_slice(&B64.decode(p).ok()?).ok()?;
        claims.is_object().then_some(claims)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Signer::from_pem(&key.serialize_pem()).unwrap()
    }

    #[test]
    fn signs_and_verifies_its_own_tokens_only() {
        let s = signer();
        let claims = json!({"sub": "system:serviceaccount:default:default", "exp": 1});
        let t = s.sign(&claims).unwrap();
        assert_eq!(t.split('.').count(), 3);
        assert_eq!(s.verify(&t), Some(claims));
        let header: Value =
            serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], s.kid());
        assert_eq!(s.kid().len(), 43);
        // Another key, a changed payload, alg none, truncation: all refused.
        assert_eq!(signer().verify(&t), None);
        let parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(br#"{"sub":"system:serviceaccount:kube-system:admin"}"#);
        assert_eq!(
            s.verify(&format!("{}.{forged}.{}", parts[0], parts[2])),
            None
        );
        let none = B64.encode(br#"{"alg":"none"}"#);
        assert_eq!(s.verify(&format!("{none}.{}.", parts[1])), None);
        assert_eq!(s.verify(&format!("{}.{}", parts[0], parts[1])), None);
        assert_eq!(s.verify(&format!("{t}.x")), None);
        assert_eq!(s.verify("not a token"), None);
        assert_eq!(s.verify(&"a.".repeat(10_000)), None);
    }

    #[test]
    fn other_keys_are_refused() {
        assert!(Signer::from_pem("garbage").is_err());
        let rsa_like = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(Signer::from_pem(rsa_like).is_err());
    }
}
