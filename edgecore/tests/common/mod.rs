//! A tiny fake cloud for edgecore's integration tests: an rcgen node CA with
//! server and node certificates, a mutual-TLS WebSocket listener on
//! 127.0.0.1:0, and a connection wrapper that speaks `proto` frames. Every
//! await is bounded by a timeout whose message names what was expected.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use proto::{Frame, Hello, HelloAck, Inventory, InventoryEntry, Kind, Limits};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub const T: Duration = Duration::from_secs(10);

/// Node CA, server certificate, and one node's client certificate (PEM).
pub struct Pki {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub node_cert_pem: String,
    pub node_key_pem: String,
}

impl Pki {
    pub fn new(node: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "kedge-node-ca");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();

        let node_key = KeyPair::generate().unwrap();
        let mut np = CertificateParams::new(Vec::<String>::new()).unwrap();
        np.distinguished_name
            .push(DnType::CommonName, format!("system:node:{node}"));
        np.distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        let node_cert = np.signed_by(&node_key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            ca_key_pem,
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            node_cert_pem: node_cert.pem(),
            node_key_pem: node_key.serialize_pem(),
        }
    }

    /// Writes ca.crt, node.crt, node.key under `dir`.
    pub fn write_node_files(&self, dir: &Path) -> edgecore::config::PkiConfig {
        std::fs::create_dir_all(dir).unwrap();
        let pki = edgecore::config::PkiConfig::under(dir);
        std::fs::write(&pki.ca, &self.ca_pem).unwrap();
        std::fs::write(&pki.cert, &self.node_cert_pem).unwrap();
        std::fs::write(&pki.key, &self.node_key_pem).unwrap();
        pki
    }

    /// Signs a CSR (PEM) with the node CA; returns the certificate PEM.
    pub fn sign_csr(&self, csr_pem: &str) -> String {
        let key = KeyPair::from_pem(&self.ca_key_pem).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, key).unwrap();
        rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .unwrap()
            .signed_by(&issuer)
            .unwrap()
            .pem()
    }

    /// rustls server config for the bootstrap endpoints (no client certificate).
    pub fn bootstrap_server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap(),
            )
            .unwrap()
    }

    /// rustls server config requiring a client certificate from the node CA.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap(),
            )
            .unwrap()
    }
}

/// The fake cloud's listener.
pub struct FakeCloud {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    pub port: u16,
}

impl FakeCloud {
    pub async fn bind(pki: &Pki) -> FakeCloud {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        FakeCloud {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(pki.server_config())),
            port,
        }
    }

    pub fn server(&self) -> String {
        format!("wss://127.0.0.1:{}", self.port)
    }

    /// Accepts the next edge connection (TLS + WebSocket on /v1/connect).
    pub async fn accept(&self) -> CloudConn {
        let fut = async {
            let (tcp, _) = self.listener.accept().await.unwrap();
            let tls = self.acceptor.accept(tcp).await.unwrap();
            let check_path = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                              resp| {
                assert_eq!(req.uri().path(), "/v1/connect");
                Ok(resp)
            };
            let ws = tokio_tungstenite::accept_hdr_async(tls, check_path)
                .await
                .unwrap();
            CloudConn { ws }
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .expect("timed out waiting for edgecore to connect")
    }
}

/// One edge session seen from the cloud.
pub struct CloudConn {
    pub ws: WebSocketStream<tokio_rustls::server::TlsStream<TcpStream>>,
}

impl CloudConn {
    /// The next frame; `None` when the edge closed the connection.
    pub async fn try_recv(&mut self) -> Option<Frame> {
        loop {
            let msg = tokio::time::timeout(T, self.ws.next())
                .await
                .expect("timed out waiting for a frame from edgecore");
            match msg {
                Some(Ok(Message::Binary(b))) => {
                    return Some(
                        proto::decode(&b, Limits::default())
                            .expect("edgecore sent an invalid frame"),
                    );
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn recv(&mut self) -> Frame {
        self.try_recv()
            .await
            .expect("edgecore closed the connection")
    }

    /// The next frame of `kind`; frames of other kinds are returned too.
    pub async fn recv_until(&mut self, kind: Kind) -> (Frame, Vec<Frame>) {
        let mut others = Vec::new();
        loop {
            let f = self.recv().await;
            if f.kind == kind as i32 {
                return (f, others);
            }
            others.push(f);
        }
    }

    pub async fn send(&mut self, frame: &Frame) {
        tokio::time::timeout(
            T,
            self.ws.send(Message::Binary(proto::encode(frame).into())),
        )
        .await
        .expect("timed out sending to edgecore")
        .unwrap();
    }

    /// HELLO -> HELLO_ACK -> the whole inventory. Returns the HELLO, the
    /// inventory entries and every other frame seen meanwhile.
    pub async fn handshake(&mut self) -> (Hello, Vec<InventoryEntry>, Vec<Frame>) {
        let hello = self.recv().await;
        assert_eq!(
            hello.kind,
            Kind::Hello as i32,
            "first frame must be HELLO: {hello:?}"
        );
        let hello = hello.control::<Hello>().unwrap();
        self.send(&Frame::hello_ack(&HelloAck {
            version: 1,
            session_id: "s-test".into(),
            ping_interval_secs: 15,
            idle_timeout_secs: 45,
            max_frame_bytes: 0,
        }))
        .await;
        let mut entries = Vec::new();
        let mut others = Vec::new();
        loop {
            let f = self.recv().await;
            if f.kind == Kind::Inventory as i32 {
                let inv = f.control::<Inventory>().unwrap();
                entries.extend(inv.entries);
                if inv.complete {
                    return (hello, entries, others);
                }
            } else {
                others.push(f);
            }
        }
    }
}

/// A data dir path under `tmp`.
pub fn data_dir(tmp: &Path) -> PathBuf {
    tmp.join("var/lib/kedge")
}
