//! Bootstrap: how an edge gets in. Owns the node CA in use, CloudHub's TLS configuration,
//! the `GET /ca.crt` and `POST /join` endpoints and certificate revocation.
//!
//! The hub serves [`Bootstrap::handle`] on its TLS port with client certificates optional
//! at the TLS layer ([`Bootstrap::tls_config`]), and checks [`Bootstrap::is_revoked`] for
//! every WebSocket session. A join validates the token ([`crate::token`]), refuses to take
//! over the name of a live node (its Lease renewed within 40 s) unless the token is bound to
//! that name or `force` is set, creates or labels the Node (`node-role.kubernetes.io/edge`
//! plus the join labels), records the new certificate's serial under the Node's UID and
//! answers `{"certificate", "ca"}`. Deleting the Node revokes its certificates
//! (`revoke`, kept in a Secret so all replicas agree).
//!
//! Start at [`Bootstrap::new`]; error → HTTP mapping is [`JoinError::status`].

pub mod revoke;
mod validate;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::lifecycle::{EDGE_ROLE_LABEL, LEASE_NAMESPACE};
use crate::nodeca::{
    DEFAULT_NODE_CERT_VALIDITY, IssuedCert, NodeCa, api_status, normalize_serial_hex,
};
use crate::token::{self, TokenError};
pub use validate::{is_dns1123_subdomain, validate_labels};

/// Tunables of the bootstrap endpoints.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// Lifetime of issued node certificates.
    pub node_cert_validity: Duration,
    /// A node whose Lease was renewed this recently counts as live.
    pub live_window: Duration,
    /// Largest accepted `/join` body.
    pub max_body_bytes: usize,
    /// The process's shutdown: the revocation watchers stop with it (and when the
    /// [`Bootstrap`] is dropped), before the API they watch goes away.
    pub shutdown: CancellationToken,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            node_cert_validity: DEFAULT_NODE_CERT_VALIDITY,
            live_window: Duration::from_secs(40),
            max_body_bytes: 64 * 1024,
            shutdown: CancellationToken::new(),
        }
    }
}

/// The body of `POST /join`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The join token.
    pub token: String,
    /// The node name to join as (may be empty when the token is bound to a name).
    #[serde(default)]
    pub node_name: String,
    /// PEM CSR carrying the node's public key.
    pub csr: String,
    /// Labels for the Node object.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Take over the name of a live node.
    #[serde(default)]
    pub force: bool,
}

/// The answer to a successful join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The node certificate, PEM.
    pub certificate: String,
    /// The node CA, PEM.
    pub ca: String,
}

/// The error body of the bootstrap endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// HTTP status.
    pub code: u16,
    /// Machine-readable reason (`InvalidToken`, `TokenExpired`, `CAHashMismatch`, ...).
    pub reason: String,
    /// What happened and what to do.
    pub message: String,
}

/// Why a join (or a certificate renewal) was refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The body is not a valid join request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The body is larger than allowed.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// The token was refused.
    #[error(transparent)]
    Token(TokenError),
    /// The token is bound to another node name.
    #[error("the token is bound to node {bound:?}, not {asked:?}")]
    BoundToOtherNode {
        /// The name the token is bound to.
        bound: String,
        /// The name asked for.
        asked: String,
    },
    /// The node name is not a DNS-1123 subdomain.
    #[error(
        "invalid node name {0:?}: must be a DNS-1123 subdomain (lower-case alphanumerics, '-', '.')"
    )]
    InvalidNodeName(String),
    /// A label key or value is invalid.
    #[error("invalid labels: {0}")]
    InvalidLabels(String),
    /// A live node already uses that name.
    #[error(
        "node {0:?} is live (its Lease was renewed recently); use another name, a token bound to it, or --force"
    )]
    NodeNameInUse(String),
    /// The CSR was refused.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// A renewal CSR asks for another identity than the session's node.
    #[error(
        "the CSR's subject {subject:?} is not this node's identity (CN system:node:{node}, O system:nodes)"
    )]
    CsrIdentityMismatch {
        /// The session's node.
        node: String,
        /// The subject the CSR asked for.
        subject: String,
    },
    /// A renewal for a node whose Node object is gone or whose certificate was revoked.
    #[error(
        "node {0:?} was deleted (its certificates are revoked); join it again with a new token"
    )]
    NodeRevoked(String),
    /// Signing failed.
    #[error("signing the certificate: {0}")]
    Sign(String),
    /// An API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl JoinError {
    /// HTTP status code and reason of this error — the one place that decides it.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            JoinError::BadRequest(_) => (400, "BadRequest"),
            JoinError::TooLarge(_) => (413, "RequestEntityTooLarge"),
            JoinError::Token(TokenError::CaHashMismatch) => (400, "CAHashMismatch"),
            JoinError::Token(TokenError::Expired { .. }) => (401, "TokenExpired"),
            JoinError::Token(TokenError::Malformed | TokenError::Invalid) => (401, "InvalidToken"),
            JoinError::Token(_) => (500, "InternalError"),
            JoinError::BoundToOtherNode { .. } => (403, "TokenBoundToOtherNode"),
            JoinError::InvalidNodeName(_) => (400, "InvalidNodeName"),
            JoinError::InvalidLabels(_) => (400, "InvalidLabels"),
            JoinError::NodeNameInUse(_) => (409, "NodeNameInUse"),
            JoinError::InvalidCsr(_) => (400, "InvalidCSR"),
            JoinError::CsrIdentityMismatch { .. } => (403, "CSRIdentityMismatch"),
            JoinError::NodeRevoked(_) => (403, "NodeRevoked"),
            JoinError::Sign(_) | JoinError::Api { .. } => (500, "InternalError"),
        }
    }

    /// The HTTP response for this error.
    pub fn response(&self) -> Response<Bytes> {
        let (code, reason) = self.status();
        let body = ErrorBody {
            code,
            reason: reason.into(),
            message: self.to_string(),
        };
        json_response(code, &body)
    }
}

/// The bootstrap state shared by the hub's connections.
pub struct Bootstrap {
    client: Client,
    ca: NodeCa,
    tls: Arc<rustls::ServerConfig>,
    revoked: Arc<RwLock<HashSet<String>>>,
    cfg: JoinConfig,
    _stop: DropGuard,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("ca", &self.ca)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Bootstrap {
    /// Loads or creates the node CA, mints the hub's serving certificate (SANs `localhost`,
    /// `127.0.0.1`, `::1` + `hub_sans`) and starts following revocations. The background
    /// tasks stop when the returned value is dropped.
    pub async fn new(client: Client, hub_sans: &[String]) -> anyhow::Result<Arc<Self>> {
        Self::with_config(client, hub_sans, JoinConfig::default()).await
    }

    /// [`Bootstrap::new`] with explicit tunables.
    pub async fn with_config(
        client: Client,
        hub_sans: &[String],
        cfg: JoinConfig,
    ) -> anyhow::Result<Arc<Self>> {
        let ca = NodeCa::load_or_create(&client).await?;
        let tls = server_config(&ca, hub_sans)?;
        revoke::migrate_legacy(&client)
            .await
            .map_err(|e| anyhow::anyhow!("moving the certificate record into its shards: {e}"))?;
        let initial = revoke::revoked_now(&client).await?;
        let revoked = Arc::new(RwLock::new(initial));
        let stop = cfg.shutdown.child_token();
        tokio::spawn(revoke::follow_record(
            client.clone(),
            revoked.clone(),
            stop.clone(),
        ));
        tokio::spawn(revoke::revoke_deleted_nodes(client.clone(), stop.clone()));
        tracing::info!(ca_hash = %ca.hash(), "bootstrap ready");
        Ok(Arc::new(Self {
            client,
            ca,
            tls,
            revoked,
            cfg,
            _stop: stop.drop_guard(),
        }))
    }

    /// The hub's TLS configuration: serving certificate signed by the node CA, client
    /// certificates optional at the TLS layer but verified against the node CA (only) when
    /// presented, TLS 1.3, ring, ALPN `http/1.1`.
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.clone()
    }

    /// The node CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// sha256 hex of the node CA PEM (what tokens pin).
    pub fn ca_hash(&self) -> &str {
        self.ca.hash()
    }

    /// Whether a certificate serial (hex, any case, leading zeros or colons allowed) was
    /// revoked by deleting its Node. See [`crate::nodeca::serial_hex`].
    pub fn is_revoked(&self, cert_serial_hex: &str) -> bool {
        let serial = normalize_serial_hex(cert_serial_hex);
        self.revoked
            .read()
            .map(|set| set.contains(&serial))
            .unwrap_or(true)
    }

    /// Serves `GET /ca.crt` and `POST /join`; anything else is 404/405.
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/ca.crt") => Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/x-pem-file")
                .body(Bytes::copy_from_slice(self.ca.cert_pem().as_bytes()))
                .unwrap_or_default(),
            (&Method::POST, "/join") => match self.join(req.body()).await {
                Ok(ok) => json_response(200, &ok),
                Err(e) => {
                    let (code, reason) = e.status();
                    tracing::warn!(code, reason, error = %e, "join refused");
                    e.response()
                }
            },
            (_, "/ca.crt" | "/join") => simple_error(405, "MethodNotAllowed", "method not allowed"),
            (_, path) => simple_error(404, "NotFound", &format!("no such path {path:?}")),
        }
    }

    async fn join(&self, body: &[u8]) -> Result<JoinResponse, JoinError> {
        if body.len() > self.cfg.max_body_bytes {
            return Err(JoinError::TooLarge(self.cfg.max_body_bytes));
        }
        let req: JoinRequest =
            serde_json::from_slice(body).map_err(|e| JoinError::BadRequest(e.to_string()))?;
        let valid = token::validate(&self.client, &req.token, self.ca.hash())
            .await
            .map_err(|e| match e {
                TokenError::Api { action, source } => JoinError::Api { action, source },
                other => JoinError::Token(other),
            })?;
        let node = match (req.node_name.trim(), &valid.node) {
            ("", Some(bound)) => bound.clone(),
            (name, _) => name.to_owned(),
        };
        if !is_dns1123_subdomain(&node) {
            return Err(JoinError::InvalidNodeName(node));
        }
        if let Some(bound) = &valid.node
            && *bound != node
        {
            return Err(JoinError::BoundToOtherNode {
                bound: bound.clone(),
                asked: node,
            });
        }
        validate_labels(&req.labels).map_err(JoinError::InvalidLabels)?;
        let span = tracing::info_span!("join", node = %node, token = %valid.id);
        let _entered = span.enter();
        if valid.node.is_none() && !req.force && self.is_live(&node).await? {
            return Err(JoinError::NodeNameInUse(node));
        }
        // Sign before touching the Node: a bad CSR must leave no trace.
        let issued = self
            .ca
            .sign_csr(
                &req.csr,
                &node,
                self.cfg.node_cert_validity,
                SystemTime::now(),
            )
            .map_err(|e| match e {
                crate::nodeca::NodeCaError::InvalidCsr(m) => JoinError::InvalidCsr(m),
                other => JoinError::Sign(other.to_string()),
            })?;
        let uid = self.prepare_node(&node, &req.labels).await?;
        self.record(&node, &uid, &issued).await?;
        tracing::info!(serial = %issued.serial_hex, "node joined");
        Ok(JoinResponse {
            certificate: issued.cert_pem,
            ca: self.ca.cert_pem().to_owned(),
        })
    }

    /// Signs a renewal CSR for a connected node (the hub's `CERT_RENEW_REQUEST`) and
    /// records the new serial under the node's current UID. `serial` is the certificate the
    /// session authenticated with. Refused: a CSR that does not parse (`InvalidCSR`), one
    /// naming another identity (`CSRIdentityMismatch`), a revoked certificate or a deleted
    /// Node (`NodeRevoked`: deleting the Node is how an operator evicts an edge, and a
    /// renewal must not outlive that).
    pub async fn renew_certificate(
        &self,
        node: &str,
        serial: &str,
        csr_pem: &str,
    ) -> Result<IssuedCert, JoinError> {
        let mismatch =
            crate::nodeca::csr_identity_mismatch(csr_pem, node).map_err(|e| match e {
                crate::nodeca::NodeCaError::InvalidCsr(m) => JoinError::InvalidCsr(m),
                other => JoinError::Sign(other.to_string()),
            })?;
        if let Some(subject) = mismatch {
            return Err(JoinError::CsrIdentityMismatch {
                node: node.to_owned(),
                subject,
            });
        }
        if self.is_revoked(serial) {
            return Err(JoinError::NodeRevoked(node.to_owned()));
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let existing = nodes.get_opt(node).await.map_err(|source| JoinError::Api {
            action: "reading the Node",
            source,
        })?;
        let Some(uid) = existing
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .and_then(|n| n.metadata.uid)
        else {
            return Err(JoinError::NodeRevoked(node.to_owned()));
        };
        let issued = self
            .ca
            .sign_csr(
                csr_pem,
                node,
                self.cfg.node_cert_validity,
                SystemTime::now(),
            )
            .map_err(|e| match e {
                crate::nodeca::NodeCaError::InvalidCsr(m) => JoinError::InvalidCsr(m),
                other => JoinError::Sign(other.to_string()),
            })?;
        self.record(node, &uid, &issued).await?;
        Ok(issued)
    }

    async fn is_live(&self, node: &str) -> Result<bool, JoinError> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let lease = leases
            .get_opt(node)
            .await
            .map_err(|source| JoinError::Api {
                action: "reading the node's Lease",
                source,
            })?;
        let renewed = lease
            .and_then(|l| l.spec)
            .and_then(|s| s.renew_time)
            .map(|t| t.0);
        Ok(renewed.is_some_and(|t| {
            let age_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond() - t.as_millisecond();
            age_ms < i64::try_from(self.cfg.live_window.as_millis()).unwrap_or(i64::MAX)
        }))
    }

    /// Creates the Node (edge role + join labels) or adds the labels to an existing one.
    /// Returns its UID.
    async fn prepare_node(
        &self,
        node: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, JoinError> {
        let api_err = |action| move |source| JoinError::Api { action, source };
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut all = labels.clone();
        all.insert(EDGE_ROLE_LABEL.into(), String::new());
        if validate::is_label_value(node) {
            all.entry("kubernetes.io/hostname".into())
                .or_insert_with(|| node.to_owned());
        }
        if nodes
            .get_opt(node)
            .await
            .map_err(api_err("reading the Node"))?
            .is_none()
        {
            let new = Node {
                metadata: ObjectMeta {
                    name: Some(node.to_owned()),
                    labels: Some(all.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match nodes.create(&PostParams::default(), &new).await {
                Ok(created) => return Ok(created.metadata.uid.unwrap_or_default()),
                Err(e) if api_status(&e) == Some(409) => {}
                Err(e) => return Err(api_err("creating the Node")(e)),
            }
        }
        let patch = serde_json::json!({"metadata": {"labels": all}});
        let patched = nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err("labelling the Node"))?;
        Ok(patched.metadata.uid.unwrap_or_default())
    }

    async fn record(&self, node: &str, uid: &str, issued: &IssuedCert) -> Result<(), JoinError> {
        let now = unix_now();
        let entry = revoke::CertEntry {
            node: node.to_owned(),
            node_uid: uid.to_owned(),
            serial: issued.serial_hex.clone(),
            not_after: issued.not_after,
            issued_at: now,
        };
        revoke::update_node(&self.client, node, |r| r.record_issue(entry.clone(), now))
            .await
            .map(drop)
            .map_err(|source| JoinError::Api {
                action: "recording the issued certificate",
                source,
            })
    }
}

pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn json_response(code: u16, body: &impl Serialize) -> Response<Bytes> {
    let json = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(json))
        .unwrap_or_default()
}

fn simple_error(code: u16, reason: &str, message: &str) -> Response<Bytes> {
    json_response(
        code,
        &ErrorBody {
            code,
            reason: reason.into(),
            message: message.into(),
        },
    )
}

fn server_config(ca: &NodeCa, sans: &[String]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert_pem, key_pem) = ca.issue_server(sans, SystemTime::now())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
