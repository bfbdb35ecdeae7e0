//! kube-rs against [`crate::pki::ApiPki::server_config`]: a `kube::Client` built from a
//! kubeconfig written by [`crate::pki::ApiPki::write_kubeconfig`] (certificate and token
//! modes) completes TLS and reads `/version` from the test server of `pki/tls_tests.rs`; a
//! wrong token gets 401.
//!
//! Needs `kube` as a dev-dependency, which the apiserver crate does not have yet, so this
//! file is compiled by the isolated PKI test crate only. To enable it here: add
//! `kube.workspace = true` under `[dev-dependencies]` in apiserver/Cargo.toml and declare
//! `#[cfg(test)] #[path = "pki/kube_tests.rs"] mod kube_tests;` in `pki.rs`.

use std::path::Path;

use tokio::time::timeout;

use crate::pki::tls_tests::{STEP, version_server};
use crate::pki::{ApiPki, Credentials};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn kube_client(path: &Path) -> Result<kube::Client, Box<dyn std::error::Error>> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test]
async fn kube_rs_client_from_written_kubeconfig() -> TestResult {
    // kube builds its rustls config with the process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir()?;
    let pki = ApiPki::load_or_create(&tmp.path().join("pki"), &[])?;
    let addr = version_server(&pki).await?;
    let url = format!("https://127.0.0.1:{}", addr.port());

    for (mode, file) in [
        (Credentials::ClientCert, "cert.kubeconfig"),
        (Credentials::Token, "token.kubeconfig"),
    ] {
        let path = tmp.path().join(file);
        pki.write_kubeconfig(&path, &url, mode)?;
        let client = kube_client(&path).await?;
        let version = timeout(STEP, client.apiserver_version()).await??;
        assert_eq!(version.git_version, "v1.37.0-kedge", "{mode:?}");
        assert_eq!(
            (version.major.as_str(), version.minor.as_str()),
            ("1", "37")
        );
    }

    // A wrong token passes TLS and gets 401 from authentication.
    let path = tmp.path().join("bad-token.kubeconfig");
    let yaml = pki
        .kubeconfig_yaml(&url, Credentials::Token)?
        .replace(pki.admin_token(), "wrong");
    std::fs::write(&path, yaml)?;
    let client = kube_client(&path).await?;
    match timeout(STEP, client.apiserver_version()).await? {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => return Err(format!("expected 401, got {other:?}").into()),
    }
    Ok(())
}
