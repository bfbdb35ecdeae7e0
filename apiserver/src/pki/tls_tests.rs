//! In-process TLS tests of [`ApiPki::server_config`] on `127.0.0.1:0`: raw rustls clients
//! (admin certificate, token-only, certificate of another CA), and kubectl (when it is
//! installed; the kube-rs client test is `pki/kube_tests.rs`) using kubeconfigs from
//! [`ApiPki::write_kubeconfig`] against a tiny hyper server that authenticates with
//! [`crate::auth::authenticate`] and serves `/version`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::auth;

type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) const STEP: Duration = Duration::from_secs(20);

const VERSION_JSON: &str = r#"{"major":"1","minor":"37","gitVersion":"v1.37.0-kedge","gitCommit":"0000000000000000000000000000000000000000","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z","goVersion":"rust","compiler":"rustc","platform":"linux/amd64"}"#;

/// What the server saw of one connection: the handshake outcome.
type Handshake = Result<Option<UserInfo>, std::io::Error>;

/// A TLS server answering every handshake with "ok\n" and reporting each outcome.
async fn raw_server(
    pki: &ApiPki,
) -> Result<(SocketAddr, mpsc::Receiver<Handshake>), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(pki.server_config()?);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            match accept_tls(&acceptor, tcp).await {
                Ok(mut tls) => {
                    let user = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(auth::user_from_peer_certs);
                    let _ = tx.send(Ok(user)).await;
                    let _ = tls.write_all(b"ok\n").await;
                    let _ = tls.shutdown().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        }
    });
    Ok((addr, rx))
}

fn client_config(
    ca: &ApiPki,
    identity: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, Box<dyn std::error::Error>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_cert_der().clone())?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes())?],
            PrivateKeyDer::from_pem_slice(key.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Connects, reads to the end; returns what was read or the client-side error.
async fn raw_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<String, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

#[tokio::test]
async fn tls_accepts_admin_and_token_clients_and_rejects_foreign_certificates() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let other = tempfile::tempdir()?;
    let pki = ApiPki::load_or_create(tmp.path(), &[])?;
    let foreign = ApiPki::load_or_create(other.path(), &[])?;
    let (addr, mut seen) = raw_server(&pki).await?;

    // Admin client certificate: handshake succeeds and maps to kedge-admin/system:masters.
    let admin = client_config(&pki, Some((pki.admin_cert_pem(), pki.admin_key_pem())))?;
    assert_eq!(timeout(STEP, raw_client(addr, admin)).await??, "ok\n");
    let user = timeout(STEP, seen.recv()).await?.ok_or("server gone")??;
    assert_eq!(user, Some(ApiPki::admin_user()));

    // No client certificate (a bearer-token client): handshake succeeds, no identity yet.
    let token_only = client_config(&pki, None)?;
    assert_eq!(timeout(STEP, raw_client(addr, token_only)).await??, "ok\n");
    assert_eq!(
        timeout(STEP, seen.recv()).await?.ok_or("server gone")??,
        None
    );

    // A certificate from another CA (think: an edge node certificate): the server aborts
    // the handshake with unknown_ca.
    let intruder = client_config(
        &pki,
        Some((foreign.admin_cert_pem(), foreign.admin_key_pem())),
    )?;
    let client_err = timeout(STEP, raw_client(addr, intruder))
        .await?
        .err()
        .ok_or("client with a foreign certificate got through")?;
    assert!(
        matches!(
            rustls_error(&client_err),
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            ))
        ),
        "client saw {client_err:?}"
    );
    let server_err = timeout(STEP, seen.recv())
        .await?
        .ok_or("server gone")?
        .err()
        .ok_or("server accepted a foreign certificate")?;
    assert!(
        matches!(
            rustls_error(&server_err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "server saw {server_err:?}"
    );

    // An issued certificate of the right CA works and carries its identity.
    let (cert, key) = pki.issue_client_cert("alice", &["dev"], Duration::from_secs(600))?;
    let alice = client_config(&pki, Some((&cert, &key)))?;
    assert_eq!(timeout(STEP, raw_client(addr, alice)).await??, "ok\n");
    let user = timeout(STEP, seen.recv()).await?.ok_or("server gone")??;
    assert_eq!(user, Some(UserInfo::new("alice", ["dev"])));
    Ok(())
}

#[tokio::test]
async fn alpn_offers_h2_and_http11() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let pki = ApiPki::load_or_create(tmp.path(), &[])?;
    let config = pki.server_config()?;
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    Ok(())
}

/// A hyper (HTTP/1.1 + h2) server over [`ApiPki::server_config`] that authenticates every
/// request and serves `GET /version`; anything unauthenticated gets a 401 Status.
pub(crate) async fn version_server(pki: &ApiPki) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(pki.server_config()?);
    let tokens = Arc::new(pki.token_authenticator());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tokens = tokens.clone();
            tokio::spawn(async move {
                let Ok(tls) = accept_tls(&acceptor, tcp).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(auth::user_from_peer_certs);
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        let header = req
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok());
                        let authed = auth::authenticate(peer.as_ref(), header, &tokens);
                        let (status, body) = match (authed, req.uri().path()) {
                            (Err(e), _) => (
                                StatusCode::UNAUTHORIZED,
                                format!(
                                    r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{e}","reason":"Unauthorized","code":401}}"#
                                ),
                            ),
                            (Ok(_), "/version") => (StatusCode::OK, VERSION_JSON.to_owned()),
                            (Ok(_), _) => (StatusCode::NOT_FOUND, "{}".to_owned()),
                        };
                        let response = Response::builder()
                            .status(status)
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from(body)));
                        async move { response }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Runs `kubectl --kubeconfig <path> version -o json [extra]`; `None` if kubectl is absent.
async fn kubectl_version(
    home: &Path,
    kubeconfig: &Path,
    extra: &[&str],
) -> Result<Option<std::process::Output>, Box<dyn std::error::Error>> {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig).args([
        "version",
        "-o",
        "json",
        "--request-timeout=15s",
    ]);
    cmd.args(extra)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .kill_on_drop(true);
    match timeout(STEP, cmd.output()).await? {
        Ok(out) => Ok(Some(out)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn kubectl_with_written_kubeconfig() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let other = tempfile::tempdir()?;
    let pki = ApiPki::load_or_create(&tmp.path().join("pki"), &[])?;
    let addr = version_server(&pki).await?;
    let url = format!("https://127.0.0.1:{}", addr.port());

    for (mode, file) in [
        (Credentials::ClientCert, "cert.kubeconfig"),
        (Credentials::Token, "token.kubeconfig"),
    ] {
        let path = tmp.path().join(file);
        pki.write_kubeconfig(&path, &url, mode)?;
        let Some(out) = kubectl_version(tmp.path(), &path, &[]).await? else {
            eprintln!("kubectl not installed; skipping the kubectl check");
            return Ok(());
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode:?}: {stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(
            json["serverVersion"]["gitVersion"], "v1.37.0-kedge",
            "{mode:?}: {json}"
        );
    }

    // A client certificate of another CA: what kubectl users will see.
    let foreign = ApiPki::load_or_create(other.path(), &[])?;
    let path = tmp.path().join("foreign.kubeconfig");
    let ca_file = tmp.path().join("pki").join(CA_CERT);
    foreign.write_kubeconfig(&path, &url, Credentials::ClientCert)?;
    let ca_flag = format!("--certificate-authority={}", ca_file.display());
    let out = kubectl_version(tmp.path(), &path, &[&ca_flag])
        .await?
        .ok_or("kubectl vanished")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("remote error: tls: unknown certificate authority"),
        "{stderr}"
    );
    Ok(())
}
