//! Tests of the PKI directory lifecycle (creation, reload, SAN change, renewal, recovery).
//! The TLS and client tests (rustls, kube-rs, kubectl) are in `pki/tls_tests.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn read(dir: &Path, name: &str) -> Result<String, std::io::Error> {
    std::fs::read_to_string(dir.join(name))
}

fn sans_of(pem: &str) -> Result<BTreeSet<String>, Box<dyn std::error::Error>> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)?;
    Ok(issue::cert_sans(&x509))
}

#[test]
fn reload_keeps_ca_leaves_and_token() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("pki");
    let first = ApiPki::load_or_create(&dir, &[])?;
    let second = ApiPki::load_or_create(&dir, &[])?;
    assert_eq!(first.ca_cert_pem(), second.ca_cert_pem());
    assert_eq!(first.serving_cert_pem(), second.serving_cert_pem());
    assert_eq!(first.admin_cert_pem(), second.admin_cert_pem());
    assert_eq!(first.admin_token(), second.admin_token());
    assert_eq!(first.admin_token().len(), 64);
    assert_eq!(read(&dir, CA_CERT)?, first.ca_cert_pem());
    assert_eq!(read(&dir, ADMIN_TOKEN)?.trim(), first.admin_token());
    let want: BTreeSet<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    assert_eq!(sans_of(first.serving_cert_pem())?, want);
    Ok(())
}

#[cfg(unix)]
#[test]
fn secrets_are_private() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let pki = ApiPki::load_or_create(tmp.path(), &[])?;
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    for name in [CA_KEY, SERVING_KEY, ADMIN_KEY, ADMIN_TOKEN] {
        assert_eq!(mode(&tmp.path().join(name))?, 0o600, "{name}");
    }
    // A key whose mode was widened is narrowed again on load.
    std::fs::set_permissions(
        tmp.path().join(CA_KEY),
        std::fs::Permissions::from_mode(0o644),
    )?;
    ApiPki::load_or_create(tmp.path(), &[])?;
    assert_eq!(mode(&tmp.path().join(CA_KEY))?, 0o600);

    let kubeconfig = tmp.path().join("nested/dir/admin.kubeconfig");
    pki.write_kubeconfig(&kubeconfig, "https://127.0.0.1:6443", Credentials::Token)?;
    assert_eq!(mode(&kubeconfig)?, 0o600);
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    Ok(())
}

#[test]
fn san_change_reissues_only_the_serving_certificate() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let first = ApiPki::load_or_create(tmp.path(), &["api.example.com".into()])?;
    // Same set in another order, other case, with a duplicate default: nothing changes.
    let same = ApiPki::load_or_create(tmp.path(), &["127.0.0.1".into(), "API.example.com".into()])?;
    assert_eq!(first.serving_cert_pem(), same.serving_cert_pem());

    let changed =
        ApiPki::load_or_create(tmp.path(), &["api.example.com".into(), "10.1.2.3".into()])?;
    assert_ne!(first.serving_cert_pem(), changed.serving_cert_pem());
    assert!(sans_of(changed.serving_cert_pem())?.contains("10.1.2.3"));
    assert_eq!(first.ca_cert_pem(), changed.ca_cert_pem());
    assert_eq!(first.admin_cert_pem(), changed.admin_cert_pem());
    assert_eq!(first.admin_token(), changed.admin_token());
    Ok(())
}

#[test]
fn invalid_san_is_refused_before_anything_is_written() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("pki");
    for bad in ["", "bad name", "-x.example", "exämple.com", "a..b"] {
        let err = ApiPki::load_or_create(&dir, &[bad.to_owned()]);
        assert!(
            matches!(err, Err(PkiError::InvalidSan { .. })),
            "{bad:?}: {err:?}"
        );
    }
    assert!(!dir.exists());
    ApiPki::load_or_create(&dir, &["*.example.com".into(), "fd00::1".into()])?;
    Ok(())
}

#[test]
fn leaves_near_expiry_are_renewed() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let first = ApiPki::load_or_create(tmp.path(), &[])?;
    // Replace the admin certificate by one that expires in 10 days.
    let (cert, key) =
        first.issue_client_cert(ADMIN_USER, &[ADMIN_GROUP], Duration::from_secs(10 * 86_400))?;
    std::fs::write(tmp.path().join(ADMIN_CERT), &cert)?;
    std::fs::write(tmp.path().join(ADMIN_KEY), &key)?;
    let second = ApiPki::load_or_create(tmp.path(), &[])?;
    assert_ne!(second.admin_cert_pem(), cert);
    assert_eq!(second.serving_cert_pem(), first.serving_cert_pem());

    // One with 60 days left is kept.
    let (cert, key) =
        first.issue_client_cert(ADMIN_USER, &[ADMIN_GROUP], Duration::from_secs(60 * 86_400))?;
    std::fs::write(tmp.path().join(ADMIN_CERT), &cert)?;
    std::fs::write(tmp.path().join(ADMIN_KEY), &key)?;
    assert_eq!(
        ApiPki::load_or_create(tmp.path(), &[])?.admin_cert_pem(),
        cert
    );

    // At "now + 340 days" the 1-year serving certificate is within 30 days of expiry and the
    // 60-day admin certificate has expired: both are re-issued, the CA stays.
    let later = SystemTime::now() + Duration::from_secs(340 * 86_400);
    let third = ApiPki::load_or_create_at(tmp.path(), &[], later)?;
    assert_ne!(third.serving_cert_pem(), first.serving_cert_pem());
    assert_ne!(third.admin_cert_pem(), cert);
    assert_eq!(third.ca_cert_pem(), first.ca_cert_pem());
    Ok(())
}

#[test]
fn leaves_of_another_ca_or_subject_are_reissued() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let other = tempfile::tempdir()?;
    let mine = ApiPki::load_or_create(tmp.path(), &[])?;
    let foreign = ApiPki::load_or_create(other.path(), &[])?;
    std::fs::write(tmp.path().join(ADMIN_CERT), foreign.admin_cert_pem())?;
    std::fs::write(tmp.path().join(ADMIN_KEY), foreign.admin_key_pem())?;
    let reloaded = ApiPki::load_or_create(tmp.path(), &[])?;
    assert_ne!(reloaded.admin_cert_pem(), foreign.admin_cert_pem());
    assert_ne!(reloaded.admin_cert_pem(), mine.admin_cert_pem());

    // Right CA, wrong subject.
    let (cert, key) =
        mine.issue_client_cert("alice", &["dev"], Duration::from_secs(90 * 86_400))?;
    std::fs::write(tmp.path().join(ADMIN_CERT), &cert)?;
    std::fs::write(tmp.path().join(ADMIN_KEY), &key)?;
    assert_ne!(
        ApiPki::load_or_create(tmp.path(), &[])?.admin_cert_pem(),
        cert
    );

    // Garbage and a mismatched key are re-issued too, never an error.
    std::fs::write(tmp.path().join(SERVING_CERT), "garbage")?;
    ApiPki::load_or_create(tmp.path(), &[])?;
    std::fs::write(tmp.path().join(SERVING_KEY), foreign.admin_key_pem())?;
    let fixed = ApiPki::load_or_create(tmp.path(), &[])?;
    assert_eq!(read(tmp.path(), SERVING_CERT)?, fixed.serving_cert_pem());
    Ok(())
}

#[test]
fn ca_recovery_rules() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let first = ApiPki::load_or_create(tmp.path(), &[])?;

    // Certificate lost, key kept: re-signed over the same key, issued leaves stay valid.
    std::fs::remove_file(tmp.path().join(CA_CERT))?;
    let second = ApiPki::load_or_create(tmp.path(), &[])?;
    assert_ne!(second.ca_cert_pem(), first.ca_cert_pem());
    assert_eq!(second.admin_cert_pem(), first.admin_cert_pem());
    assert_eq!(second.serving_cert_pem(), first.serving_cert_pem());

    // Key lost: refuse, and say which file.
    std::fs::remove_file(tmp.path().join(CA_KEY))?;
    let err = ApiPki::load_or_create(tmp.path(), &[]);
    assert!(matches!(err, Err(PkiError::MissingCaKey { .. })), "{err:?}");

    // Key of another CA: refuse.
    let other = tempfile::tempdir()?;
    ApiPki::load_or_create(other.path(), &[])?;
    std::fs::copy(other.path().join(CA_KEY), tmp.path().join(CA_KEY))?;
    let err = ApiPki::load_or_create(tmp.path(), &[]);
    assert!(matches!(err, Err(PkiError::InvalidCa { .. })), "{err:?}");

    // Expired CA: refuse.
    let old = tempfile::tempdir()?;
    let long_ago = SystemTime::now() - Duration::from_secs(11 * 365 * 86_400);
    ApiPki::load_or_create_at(old.path(), &[], long_ago)?;
    let err = ApiPki::load_or_create(old.path(), &[]);
    assert!(matches!(err, Err(PkiError::CaExpired { .. })), "{err:?}");
    Ok(())
}

#[test]
fn issued_client_certificates_are_verified_and_mapped() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let pki = ApiPki::load_or_create(tmp.path(), &[])?;
    let (cert, _key) =
        pki.issue_client_cert("alice", &["dev", "ops"], Duration::from_secs(3600))?;
    let der = CertificateDer::from_pem_slice(cert.as_bytes())?;
    let user = crate::auth::user_from_peer_certs(&[der]);
    assert_eq!(user, Some(UserInfo::new("alice", ["dev", "ops"])));
    let admin = CertificateDer::from_pem_slice(pki.admin_cert_pem().as_bytes())?;
    assert_eq!(
        crate::auth::user_from_peer_certs(&[admin]),
        Some(ApiPki::admin_user())
    );
    Ok(())
}

#[test]
fn kubeconfig_yaml_shapes() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let pki = ApiPki::load_or_create(tmp.path(), &[])?;
    let yaml = pki.kubeconfig_yaml("https://127.0.0.1:6443", Credentials::Token)?;
    assert!(yaml.contains("current-context: kedge"), "{yaml}");
    assert!(
        yaml.contains(&format!("token: {}", pki.admin_token())),
        "{yaml}"
    );
    assert!(!yaml.contains("client-key-data"), "{yaml}");
    let yaml = pki.kubeconfig_yaml("https://[::1]:6443", Credentials::ClientCert)?;
    assert!(yaml.contains("client-key-data: "), "{yaml}");
    assert!(!yaml.contains("token"), "{yaml}");
    for bad in [
        "http://127.0.0.1:6443",
        "127.0.0.1:6443",
        "https://",
        "https://a b",
    ] {
        let err = pki.kubeconfig_yaml(bad, Credentials::Token);
        assert!(
            matches!(err, Err(PkiError::InvalidServerUrl { .. })),
            "{bad}: {err:?}"
        );
    }
    Ok(())
}
