#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::*;

fn csr(cn: &str) -> String {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "system:masters");
    params.distinguished_name = dn;
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

fn verifies(ca: &NodeCa, cert_pem: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .expect("verifier");
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("der");
    verifier
        .verify_client_cert(&der, &[], UnixTime::now())
        .is_ok()
}

#[test]
fn generated_ca_round_trips_through_pem() {
    let ca = NodeCa::generate(SystemTime::now()).expect("ca");
    let again = NodeCa::from_pem(ca.cert_pem(), &ca.key.serialize_pem()).expect("parse");
    assert_eq!(ca.hash(), again.hash());
    assert_eq!(ca.hash(), ca_hash(ca.cert_pem()));
    assert_eq!(ca.hash().len(), 64);
    let other = NodeCa::generate(SystemTime::now()).expect("ca");
    let err = NodeCa::from_pem(ca.cert_pem(), &other.key.serialize_pem()).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
}

#[test]
fn node_certificate_subject_is_forced_and_chains_to_the_ca() {
    let ca = NodeCa::generate(SystemTime::now()).expect("ca");
    let issued = ca
        .sign_csr(
            &csr("system:admin"),
            "edge-1",
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .expect("sign");
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("der");
    let (_, x509) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let cn: Vec<_> = x509.subject().iter_common_name().collect();
    assert_eq!(cn.len(), 1);
    assert_eq!(cn[0].as_str().expect("cn"), "system:node:edge-1");
    let o: Vec<_> = x509
        .subject()
        .iter_organization()
        .map(|o| o.as_str().expect("o").to_owned())
        .collect();
    assert_eq!(o, vec!["system:nodes".to_owned()]);
    assert!(x509.subject_alternative_name().expect("san").is_none());
    let eku = x509.extended_key_usage().expect("eku").expect("present");
    assert!(eku.value.client_auth && !eku.value.server_auth);
    assert!(!x509.is_ca());
    assert_eq!(
        serial_hex(&der).as_deref(),
        Some(issued.serial_hex.as_str())
    );
    let lifetime = x509.validity().not_after.timestamp() - unix_secs(SystemTime::now());
    assert!((3500..=3600).contains(&lifetime), "{lifetime}");
    assert!(verifies(&ca, &issued.cert_pem));
    let foreign = NodeCa::generate(SystemTime::now()).expect("ca");
    assert!(!verifies(&foreign, &issued.cert_pem));
}

#[test]
fn serials_are_random() {
    let ca = NodeCa::generate(SystemTime::now()).expect("ca");
    let req = csr("x");
    let a = ca
        .sign_csr(&req, "n", DEFAULT_NODE_CERT_VALIDITY, SystemTime::now())
        .expect("a");
    let b = ca
        .sign_csr(&req, "n", DEFAULT_NODE_CERT_VALIDITY, SystemTime::now())
        .expect("b");
    assert_ne!(a.serial_hex, b.serial_hex);
}

#[test]
fn garbage_csr_is_refused() {
    let ca = NodeCa::generate(SystemTime::now()).expect("ca");
    let err = ca
        .sign_csr("not a csr", "n", Duration::from_secs(60), SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, NodeCaError::InvalidCsr(_)), "{err}");
}

#[test]
fn serving_certificate_carries_default_and_extra_sans() {
    let ca = NodeCa::generate(SystemTime::now()).expect("ca");
    let (cert, key) = ca
        .issue_server(
            &["hub.example.com".into(), "10.0.0.7".into()],
            SystemTime::now(),
        )
        .expect("serving");
    assert!(key.contains("PRIVATE KEY"));
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("der");
    let (_, x509) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let sans = format!("{:?}", x509.subject_alternative_name().expect("san"));
    for want in [
        "localhost",
        "hub.example.com",
        "[127, 0, 0, 1]",
        "[10, 0, 0, 7]",
    ] {
        assert!(sans.contains(want), "{want} missing in {sans}");
    }
    assert!(
        ca.issue_server(&["bad name!".into()], SystemTime::now())
            .is_err()
    );
}

#[test]
fn serial_hex_is_normalised() {
    assert_eq!(normalize_serial_hex("00:AB:01"), "ab01");
    assert_eq!(normalize_serial_hex("0x00ff"), "ff");
    assert_eq!(normalize_serial_hex("000"), "0");
}

fn node_csr(cn: &str, org: Option<&str>) -> String {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    params.distinguished_name = dn;
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

#[test]
fn short_lived_certificates_are_backdated_by_a_tenth() {
    assert_eq!(backdate(Duration::from_secs(20)), Duration::from_secs(2));
    assert_eq!(
        backdate(Duration::from_secs(36_000)),
        Duration::from_secs(3600)
    );
    assert_eq!(
        backdate(DEFAULT_NODE_CERT_VALIDITY),
        Duration::from_secs(3600)
    );
    let ca = NodeCa::generate(SystemTime::now()).expect("ca");
    let now = SystemTime::now();
    let issued = ca
        .sign_csr(&csr("x"), "n", Duration::from_secs(20), now)
        .expect("sign");
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("der");
    let (_, x509) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let v = x509.validity();
    assert_eq!(v.not_before.timestamp(), unix_secs(now) - 2);
    assert_eq!(v.not_after.timestamp(), unix_secs(now) + 20);
}

#[test]
fn renewal_csr_must_name_exactly_the_node() {
    let ok = node_csr("system:node:edge-1", Some("system:nodes"));
    assert_eq!(csr_identity_mismatch(&ok, "edge-1").expect("parse"), None);
    for (cn, org) in [
        ("system:node:edge-2", Some("system:nodes")),
        ("system:node:edge-1", Some("system:masters")),
        ("system:node:edge-1", None),
        ("system:admin", Some("system:nodes")),
    ] {
        let bad = node_csr(cn, org);
        let subject = csr_identity_mismatch(&bad, "edge-1")
            .expect("parse")
            .unwrap_or_else(|| panic!("{cn} {org:?} accepted"));
        assert!(subject.contains(cn), "{subject}");
    }
    for garbage in [
        "garbage",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        assert!(matches!(
            csr_identity_mismatch(garbage, "edge-1"),
            Err(NodeCaError::InvalidCsr(_))
        ));
    }
    // A certificate is not a CSR.
    let ca = NodeCa::generate(SystemTime::now()).expect("ca");
    assert!(matches!(
        csr_identity_mismatch(ca.cert_pem(), "edge-1"),
        Err(NodeCaError::InvalidCsr(_))
    ));
}
