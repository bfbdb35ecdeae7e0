//! `edgecore join` and `edgecore reset`.
//!
//! Join, in four steps (each printed as `[n/4] ...`):
//! 1. fetch `GET https://HOST:PORT/ca.crt` trusting nothing yet;
//! 2. check sha256(CA PEM bytes) against the hash pinned in the token — the
//!    only thing that authenticates the server in this step;
//! 3. with that CA trusted, generate an ECDSA P-256 key and a CSR
//!    (CN `system:node:<name>`, O `system:nodes`) and `POST /join`
//!    `{"token","nodeName","csr","labels","force"}` → `{"certificate","ca"}`;
//! 4. write `<root>/etc/kedge/pki/{ca.crt,node.crt,node.key}` (key 0600) and
//!    `<root>/etc/kedge/edgecore.toml`.
//!
//! Idempotent: if the node already joined this server under this name, its
//! CA matches the token's pin and its certificate is valid for more than an
//! hour, nothing is requested again (the config is rewritten with the new
//! flags). `--force` always joins again. The data directory is never touched
//! by join, so an edge whose certificate expired offline re-joins and keeps
//! its cache.

pub mod http;
mod reset;
pub mod token;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Layout, PkiConfig, ServerUrl, validate_node_name};
use crate::pki;
pub use reset::{reset, reset_all};
pub use token::Token;

/// Inputs of `edgecore join`.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// `wss://HOST:PORT`.
    pub server: String,
    /// The join token.
    pub token: String,
    /// Node name (default: the host name).
    pub node_name: Option<String>,
    /// Labels for the Node.
    pub labels: BTreeMap<String, String>,
    /// Root of the node's files (`/` in production).
    pub root: PathBuf,
    /// CRI endpoint to write into the config.
    pub cri_endpoint: Option<String>,
    /// MQTT listen address to write into the config.
    pub mqtt_listen: Option<SocketAddr>,
    /// Metrics listen address to write into the config.
    pub metrics_listen: Option<SocketAddr>,
    /// Join again even if already joined, and ask the cloud to replace a
    /// live node of the same name.
    pub force: bool,
}

/// Why join failed. Each message is one actionable line.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Bad flags or token (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached.
    #[error(
        "cannot reach cloudcore at {server}: {detail} — check --server and that cloudcore is running and its port is open"
    )]
    Unreachable {
        /// The server.
        server: String,
        /// What failed.
        detail: String,
    },
    /// The fetched CA does not match the token's pin.
    #[error(
        "the CA served by {server} (sha256 {actual}) does not match the token's pin ({expected}) — wrong --server, or a token from another cluster"
    )]
    CaMismatch {
        /// The server.
        server: String,
        /// Pinned hash.
        expected: String,
        /// Actual hash.
        actual: String,
    },
    /// The server refused the join.
    #[error("cloudcore refused the join (HTTP {code} {reason}): {message} — {hint}")]
    Refused {
        /// HTTP status.
        code: u16,
        /// Machine-readable reason.
        reason: String,
        /// The server's message.
        message: String,
        /// What to do.
        hint: String,
    },
    /// The server answered something that is not a join result.
    #[error("unexpected answer from {server}: {detail}")]
    Protocol {
        /// The server.
        server: String,
        /// What was wrong.
        detail: String,
    },
    /// Writing local files failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Key or CSR generation failed.
    #[error("cannot create the node key or CSR: {0}")]
    Crypto(String),
}

impl JoinError {
    /// Process exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            JoinError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Body of `POST /join`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinBody {
    /// The full token.
    pub token: String,
    /// The node name.
    pub node_name: String,
    /// PKCS#10 CSR, PEM.
    pub csr: String,
    /// Requested labels.
    pub labels: BTreeMap<String, String>,
    /// Replace a live node of the same name.
    pub force: bool,
}

/// Successful answer of `POST /join`.
#[derive(Debug, Deserialize)]
pub struct JoinResponse {
    /// The node certificate chain, PEM.
    pub certificate: String,
    /// The node CA, PEM.
    #[serde(default)]
    pub ca: String,
}

/// Error answer of the bootstrap endpoints (a Kubernetes Status-like JSON).
#[derive(Debug, Deserialize, Default)]
pub struct ErrorBody {
    /// HTTP-style code.
    #[serde(default)]
    pub code: u16,
    /// Machine-readable reason.
    #[serde(default)]
    pub reason: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// What join did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The config file written.
    pub config_path: PathBuf,
    /// The node name.
    pub node_name: String,
    /// False when the node was already joined and nothing was requested.
    pub requested: bool,
}

const TIMEOUT: Duration = Duration::from_secs(15);

/// Parses `k=v,k2=v2`.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("label {part:?} is not key=value"))?;
        if k.is_empty() {
            return Err(format!("label {part:?} has an empty key"));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Runs the join; progress lines go to `out`.
pub async fn join(req: &JoinRequest, out: &mut dyn Write) -> Result<Joined, JoinError> {
    let token =
        Token::parse(&req.token).map_err(|e| JoinError::Usage(format!("invalid --token: {e}")))?;
    let server = ServerUrl::parse(&req.server)
        .map_err(|e| JoinError::Usage(format!("invalid --server: {e}")))?;
    let node_name = match &req.node_name {
        Some(n) => n.clone(),
        None => crate::node::hostname().ok_or_else(|| {
            JoinError::Usage("cannot read the host name; pass --node-name".to_owned())
        })?,
    };
    validate_node_name(&node_name)
        .map_err(|e| JoinError::Usage(format!("invalid --node-name: {e}")))?;
    let layout = Layout::new(&req.root);
    let config = build_config(req, &layout, &server, &node_name);
    config
        .validate()
        .map_err(|e| JoinError::Usage(e.to_string()))?;

    if !req.force && already_joined(&layout, &config, &token) {
        let _ = writeln!(
            out,
            "[1/4] already joined {server} as {node_name} (certificate valid, CA matches the token)"
        );
        let _ = writeln!(out, "[4/4] writing {}", layout.config.display());
        write_file(&layout.config, config.to_toml().as_bytes(), 0o644)?;
        return Ok(Joined {
            config_path: layout.config,
            node_name,
            requested: false,
        });
    }

    let _ = writeln!(
        out,
        "[1/4] fetching the CA from {}",
        server.https("/ca.crt")
    );
    let unverified =
        pki::unverified_client_config().map_err(|e| JoinError::Crypto(e.to_string()))?;
    let (status, ca_pem) = http::request(
        &server,
        unverified,
        ::http::Method::GET,
        "/ca.crt",
        None,
        TIMEOUT,
    )
    .await
    .map_err(|e| unreachable(&server, &e))?;
    if !status.is_success() {
        return Err(JoinError::Protocol {
            server: server.to_string(),
            detail: format!("GET /ca.crt answered HTTP {status}"),
        });
    }

    let _ = writeln!(out, "[2/4] verifying the CA against the token's pin");
    let actual = pki::sha256_hex(&ca_pem);
    if actual != token.ca_hash {
        return Err(JoinError::CaMismatch {
            server: server.to_string(),
            expected: token.ca_hash.clone(),
            actual,
        });
    }
    let ca_pem = String::from_utf8(ca_pem.to_vec()).map_err(|_| JoinError::Protocol {
        server: server.to_string(),
        detail: "the CA is not UTF-8 PEM".to_owned(),
    })?;
    let trusted = pki::bootstrap_client_config(&ca_pem).map_err(|e| JoinError::Protocol {
        server: server.to_string(),
        detail: format!("the CA is not a usable certificate: {e}"),
    })?;

    let _ = writeln!(out, "[3/4] requesting a certificate for node {node_name}");
    let (key_pem, csr_pem) = key_and_csr(&node_name)?;
    let body = JoinBody {
        token: token.as_string(),
        node_name: node_name.clone(),
        csr: csr_pem,
        labels: req.labels.clone(),
        force: req.force,
    };
    let body = serde_json::to_vec(&body).map_err(|e| JoinError::Crypto(e.to_string()))?;
    let (status, answer) = http::request(
        &server,
        trusted,
        ::http::Method::POST,
        "/join",
        Some(body),
        TIMEOUT,
    )
    .await
    .map_err(|e| unreachable(&server, &e))?;
    if !status.is_success() {
        return Err(refused(status.as_u16(), &answer, &node_name));
    }
    let answer: JoinResponse =
        serde_json::from_slice(&answer).map_err(|e| JoinError::Protocol {
            server: server.to_string(),
            detail: format!("the join answer is not the expected JSON: {e}"),
        })?;
    if pki::certs(&answer.certificate, "node certificate").is_err() {
        return Err(JoinError::Protocol {
            server: server.to_string(),
            detail: "the join answer holds no certificate".to_owned(),
        });
    }

    let _ = writeln!(
        out,
        "[4/4] writing {} and {}",
        layout.pki.display(),
        layout.config.display()
    );
    // The pinned CA is what the link trusts; the answer's `ca` is only
    // informative here (rotation happens over the live link).
    write_file(&config.pki.ca, ca_pem.as_bytes(), 0o644)?;
    // Key and certificate as one pair: a running edgecore (re-join after the certificate
    // expired offline) picks them up at its next dial and must never see a mismatch.
    crate::hub::renew::write_pair(&config.pki, &key_pem, &answer.certificate).map_err(
        |e| match e {
            crate::hub::renew::RenewError::Write { path, source } => {
                JoinError::Write { path, source }
            }
            other => JoinError::Crypto(other.to_string()),
        },
    )?;
    write_file(&layout.config, config.to_toml().as_bytes(), 0o644)?;
    Ok(Joined {
        config_path: layout.config,
        node_name,
        requested: true,
    })
}

fn build_config(req: &JoinRequest, layout: &Layout, server: &ServerUrl, node_name: &str) -> Config {
    let mut config = Config::for_root(&req.root);
    // Keep tuning from an earlier join (a re-join only changes what was passed).
    if let Ok(old) = Config::load(&layout.config) {
        config = Config {
            node_name: String::new(),
            server: String::new(),
            ..old
        };
    }
    config.node_name = node_name.to_owned();
    config.server = server.to_string();
    config.pki = PkiConfig::under(&layout.pki);
    if !req.labels.is_empty() {
        config.labels = req.labels.clone();
    }
    if let Some(c) = &req.cri_endpoint {
        config.cri_endpoint = c.clone();
    }
    if let Some(a) = req.mqtt_listen {
        config.mqtt_listen = a;
    }
    if let Some(a) = req.metrics_listen {
        config.metrics_listen = a;
    }
    config
}

/// True when the files on disk already make a valid node for this server,
/// name and CA pin.
fn already_joined(layout: &Layout, config: &Config, token: &Token) -> bool {
    let Ok(old) = Config::load(&layout.config) else {
        return false;
    };
    if old.server != config.server || old.node_name != config.node_name {
        return false;
    }
    let (Ok(ca), Ok(cert), Ok(key)) = (
        std::fs::read(&old.pki.ca),
        std::fs::read_to_string(&old.pki.cert),
        std::fs::read_to_string(&old.pki.key),
    ) else {
        return false;
    };
    pki::sha256_hex(&ca) == token.ca_hash && cert_matches_key_and_valid(&cert, &key, 3600)
}

/// Whether the first certificate in `cert_pem` belongs to `key_pem` and is
/// valid for at least `margin_secs` more seconds.
pub fn cert_matches_key_and_valid(cert_pem: &str, key_pem: &str, margin_secs: i64) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let Ok(key) = rcgen::KeyPair::from_pem(key_pem) else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    let validity = cert.validity();
    validity.not_before.timestamp() <= now
        && validity.not_after.timestamp() > now + margin_secs
        && cert.public_key().raw == rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
}

/// A fresh ECDSA P-256 key and a CSR for `system:node:<name>` in `system:nodes`.
pub fn key_and_csr(node_name: &str) -> Result<(String, String), JoinError> {
    let crypto = |e: rcgen::Error| JoinError::Crypto(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(crypto)?;
    Ok((key.serialize_pem(), csr.pem().map_err(crypto)?))
}

fn unreachable(server: &ServerUrl, e: &http::HttpError) -> JoinError {
    JoinError::Unreachable {
        server: server.to_string(),
        detail: e.to_string(),
    }
}

fn refused(code: u16, body: &[u8], node_name: &str) -> JoinError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_else(|_| ErrorBody {
        message: String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(300)
            .collect(),
        ..ErrorBody::default()
    });
    let hint = match code {
        401 => "the token is wrong, expired or deleted: create a new one with `cloudcore token create` and run join again".to_owned(),
        403 => format!("this token may not join as {node_name:?} (it is bound to another node name)"),
        409 => format!("a live node named {node_name:?} exists: pass --force to replace it, or choose another --node-name"),
        400 | 422 => "the request was invalid; check --node-name and --labels".to_owned(),
        _ => "check cloudcore's logs".to_owned(),
    };
    JoinError::Refused {
        code,
        reason: if parsed.reason.is_empty() {
            "-".to_owned()
        } else {
            parsed.reason
        },
        message: if parsed.message.is_empty() {
            "(no message)".to_owned()
        } else {
            parsed.message
        },
        hint,
    }
}

/// Writes `data` to `path` atomically (temp file + rename) with `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), JoinError> {
    let err = |source| JoinError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    crate::pki::write_synced(path, data, mode).map_err(err)
}

#[cfg(test)]
mod tests;
