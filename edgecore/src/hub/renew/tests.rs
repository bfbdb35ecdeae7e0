use super::*;

fn pki_in(dir: &Path) -> PkiConfig {
    PkiConfig {
        ca: dir.join("ca.crt"),
        cert: dir.join("node.crt"),
        key: dir.join("node.key"),
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn renewal_is_due_at_80_percent_plus_minus_5() {
    let c = CertInfo {
        not_before: 1_000,
        not_after: 1_000 + 20_000,
        serial_hex: "01".into(),
    };
    assert_eq!(c.renew_at(0.0), 1_000 + 15_000);
    assert_eq!(c.renew_at(0.5), 1_000 + 16_000);
    assert_eq!(c.renew_at(1.0), 1_000 + 17_000);
    // Out-of-range randomness is clamped into the window.
    assert_eq!(c.renew_at(-3.0), 1_000 + 15_000);
    assert_eq!(c.renew_at(7.0), 1_000 + 17_000);
    for _ in 0..1000 {
        let at = c.renew_at(rand::random::<f64>());
        assert!((16_000..=18_000).contains(&at), "{at}");
    }
    // A short-lived certificate: 20 s renews between 15 s and 17 s.
    let short = CertInfo {
        not_before: 0,
        not_after: 20,
        serial_hex: "02".into(),
    };
    assert!((15..=17).contains(&short.renew_at(rand::random::<f64>())));
}

#[test]
fn a_pair_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_in(dir.path());
    std::fs::write(&pki.key, "old key").unwrap();
    std::fs::write(&pki.cert, "old cert").unwrap();
    write_pair(&pki, "new key", "new cert").unwrap();
    assert_eq!(read(&pki.key), "new key");
    assert_eq!(read(&pki.cert), "new cert");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["node.crt", "node.key"], "no temp files left");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&pki.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(recover_pair(&pki).unwrap(), Recovered::Clean);
}

#[test]
fn a_crash_between_the_renames_is_rolled_forward() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_in(dir.path());
    // The key was renamed, the certificate not yet: new key next to the old certificate.
    std::fs::write(&pki.key, "new key").unwrap();
    std::fs::write(&pki.cert, "old cert").unwrap();
    std::fs::write(with_suffix(&pki.cert, ".new"), "new cert").unwrap();
    assert_eq!(recover_pair(&pki).unwrap(), Recovered::RolledForward);
    assert_eq!(read(&pki.key), "new key");
    assert_eq!(read(&pki.cert), "new cert");

    // Both written, neither renamed.
    std::fs::write(with_suffix(&pki.key, ".new"), "newer key").unwrap();
    std::fs::write(with_suffix(&pki.cert, ".new"), "newer cert").unwrap();
    assert_eq!(recover_pair(&pki).unwrap(), Recovered::RolledForward);
    assert_eq!(read(&pki.key), "newer key");
    assert_eq!(read(&pki.cert), "newer cert");
}

#[test]
fn an_incomplete_pair_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_in(dir.path());
    std::fs::write(&pki.key, "old key").unwrap();
    std::fs::write(&pki.cert, "old cert").unwrap();
    // Crash while the certificate was being written: only the key is complete.
    std::fs::write(with_suffix(&pki.key, ".new"), "new key").unwrap();
    std::fs::write(with_suffix(&pki.cert, ".new.tmp"), "new ce").unwrap();
    assert_eq!(recover_pair(&pki).unwrap(), Recovered::Discarded);
    assert_eq!(read(&pki.key), "old key");
    assert_eq!(read(&pki.cert), "old cert");
    assert!(!with_suffix(&pki.key, ".new").exists());
}

#[test]
fn the_answer_must_belong_to_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_in(dir.path());
    std::fs::write(&pki.key, "old key").unwrap();
    std::fs::write(&pki.cert, "old cert").unwrap();
    let mut r = Renewer::new(pki.clone(), "edge-1".into(), "edgecore join".into());
    assert!(matches!(r.complete("x"), Err(RenewError::NotPending)));
    let csr = r.begin().unwrap();
    assert!(csr.contains("CERTIFICATE REQUEST"));
    assert_eq!(r.due(), None, "nothing is due while a renewal runs");
    // A certificate for some other key is refused and the old pair stays.
    let other = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&other)
        .unwrap()
        .pem();
    assert!(matches!(
        r.complete(&foreign),
        Err(RenewError::BadCertificate)
    ));
    assert_eq!(read(&pki.key), "old key");
    assert_eq!(read(&pki.cert), "old cert");
    r.abandon(100, 5);
    assert_eq!(r.due(), Some(105), "retried later");
}
