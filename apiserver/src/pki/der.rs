//! Minimal DER surgery: replace the subject of a certificate rcgen issued and sign it again.
//!
//! Why: Kubernetes maps every subject O to a group, so a client certificate may need
//! several O attributes, but rcgen 0.14's `DistinguishedName` keeps one value per attribute
//! type (rcgen issue #81). rcgen builds everything else (extensions, key identifiers); this
//! module swaps in a subject with all the O values and re-signs the TBS with the CA key.
//! Only definite-length, single-byte-tag DER (all that rcgen emits) is handled.

use rcgen::{KeyPair, SigningKey};

use super::PkiError;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const BIT_STRING: u8 = 0x03;
/// id-at-commonName 2.5.4.3 and id-at-organizationName 2.5.4.10, content octets.
const OID_CN: [u8; 3] = [0x55, 0x04, 0x03];
const OID_O: [u8; 3] = [0x55, 0x04, 0x0a];
/// Fields of TBSCertificate before the subject: [0] version, serial, signature, issuer,
/// validity.
const FIELDS_BEFORE_SUBJECT: usize = 5;

/// One TLV at the start of `input`: `(element, content, rest)`.
fn tlv(input: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let tag = *input.first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tag
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None; // indefinite or absurd length
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
            2 + n,
        )
    };
    let end = header.checked_add(len)?;
    let element = input.get(..end)?;
    Some((element, input.get(header..end)?, input.get(end..)?))
}

/// Encodes one TLV.
fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
    let mut atv = encode(OID, oid);
    atv.extend(encode(UTF8_STRING, value.as_bytes()));
    encode(SET, &encode(SEQUENCE, &atv))
}

/// DER `Name` for a Kubernetes client: one RDN per group (O), then the user (CN), the order
/// Go's `pkix.Name` writes.
pub(super) fn client_subject(cn: &str, orgs: &[&str]) -> Vec<u8> {
    let mut rdns: Vec<u8> = orgs.iter().flat_map(|o| attribute(&OID_O, o)).collect();
    rdns.extend(attribute(&OID_CN, cn));
    encode(SEQUENCE, &rdns)
}

/// Returns `cert_der` with its subject replaced by `subject_der`, signed again by `ca_key`
/// (same algorithm as before, so the outer AlgorithmIdentifier is kept).
pub(super) fn resign_with_subject(
    cert_der: &[u8],
    subject_der: &[u8],
    ca_key: &KeyPair,
) -> Result<Vec<u8>, PkiError> {
    let malformed = |what: &'static str| PkiError::Resign { what };
    let (_, cert, trailing) = tlv(cert_der).ok_or(malformed("certificate"))?;
    if !trailing.is_empty() {
        return Err(malformed("certificate trailer"));
    }
    let (_, tbs, after_tbs) = tlv(cert).ok_or(malformed("TBSCertificate"))?;
    let (algorithm, _, _) = tlv(after_tbs).ok_or(malformed("signature algorithm"))?;

    let mut new_tbs = Vec::with_capacity(tbs.len() + subject_der.len());
    let mut rest = tbs;
    for _ in 0..FIELDS_BEFORE_SUBJECT {
        let (element, _, next) = tlv(rest).ok_or(malformed("TBSCertificate field"))?;
        new_tbs.extend_from_slice(element);
        rest = next;
    }
    let (_, _, after_subject) = tlv(rest).ok_or(malformed("subject"))?;
    new_tbs.extend_from_slice(subject_der);
    new_tbs.extend_from_slice(after_subject);
    let new_tbs = encode(SEQUENCE, &new_tbs);

    let signature = ca_key.sign(&new_tbs).map_err(|source| PkiError::Mint {
        what: "certificate signature",
        source,
    })?;
    let mut bits = vec![0u8]; // no unused bits
    bits.extend(signature);

    let mut body = new_tbs;
    body.extend_from_slice(algorithm);
    body.extend(encode(BIT_STRING, &bits));
    Ok(encode(SEQUENCE, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_round_trips_short_and_long_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let encoded = encode(SEQUENCE, &content);
            let (element, parsed, rest) = tlv(&encoded).unwrap_or_default();
            assert_eq!(
                (element.len(), parsed, rest),
                (encoded.len(), &content[..], &[][..])
            );
        }
    }

    #[test]
    fn tlv_rejects_truncated_and_exotic_input() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 1],
            &[0x30, 0x80],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0],
        ] {
            assert!(tlv(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_certificates_are_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let key = KeyPair::generate()?;
        let subject = client_subject("a", &["b"]);
        for bad in [&[][..], &[0x30, 0x00], &[0x30, 0x02, 0x30, 0x00]] {
            assert!(resign_with_subject(bad, &subject, &key).is_err(), "{bad:?}");
        }
        Ok(())
    }
}
