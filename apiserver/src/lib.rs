//! kedge's embedded Kubernetes-compatible API server.
//!
//! `cloudcore standalone` runs it so that one machine without a cluster can run kedge, the
//! way K3s embeds its datastore; every end-to-end test uses it as its cluster. It is held to
//! what unmodified **kubectl** and **kube-rs** need: discovery (aggregated and legacy),
//! OpenAPI v3, every built-in kind k8s-openapi knows (stored generically), CRDs registered
//! live with structural-schema validation, all verbs with Kubernetes' semantics and
//! errors, server-side apply with managedFields, consistent paginated lists, watches that
//! resume across restarts, server-side Tables, ServiceAccounts with bound tokens, TLS with
//! its own CA.
//!
//! Where to start reading: [`ApiServer::start`] (wiring), `handler` (a request's path),
//! `store` (durability, resourceVersions, history and snapshots), `registry` (what is
//! served), `fieldmanager` (managedFields and apply), `serviceaccount` (token volume,
//! TokenRequest, token authentication).

pub mod admission;
pub mod api;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod builtin;
pub mod crd;
pub mod discovery;
pub mod fieldmanager;
pub mod handler;
pub mod openapi;
pub mod patch;
pub mod patch_meta;
pub mod pki;
pub mod protobuf;
pub mod registry;
pub mod request;
pub mod schema;
pub mod selector;
pub mod server;
pub mod serviceaccount;
pub mod status;
pub mod store;
pub mod table;
pub mod validation;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use api::{Api, ApiConfig};

/// Errors starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the object store")]
    Store(#[from] store::StoreError),
    #[error("preparing the API server's certificates")]
    Pki(#[from] pki::PkiError),
    #[error("{0}")]
    Listen(#[source] std::io::Error),
    #[error("opening the audit log")]
    Audit(#[source] std::io::Error),
    #[error("loading the ServiceAccount signing key")]
    ServiceAccountKey(#[source] serviceaccount::jwt::JwtError),
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    /// The shared state (for in-process users such as cloudcore standalone and tests).
    pub api: Arc<Api>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its certificates and admin credentials.
    pub pki: Arc<pki::ApiPki>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl ApiServer {
    /// Open the store, prepare certificates, bootstrap, bind and serve. Stops when
    /// `shutdown` fires; await [`ApiServer::stopped`] to know it finished.
    pub async fn start(cfg: ApiConfig, shutdown: CancellationToken) -> Result<Self, StartError> {
        let dir = cfg.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let store = store::Store::open(
            &dir.join("db"),
            store::StoreOptions {
                history: cfg.watch_history,
                history_window: cfg.history_window,
                ..Default::default()
            },
        )?;
        let mut sans = cfg.extra_sans.clone();
        if !cfg.listen.ip().is_unspecified() {
            sans.push(cfg.listen.ip().to_string());
        }
        let pki = Arc::new(pki::ApiPki::load_or_create(&dir.join("pki"), &sans)?);
        let mut tokens = auth::TokenAuthenticator::new();
        tokens.add_static_token(
            pki.admin_token(),
            auth::UserInfo::new("kedge-admin", ["system:masters", "system:authenticated"]),
        );
        let service_accounts = Arc::new(
            serviceaccount::ServiceAccounts::new(
                pki.service_account_key_pem(),
                pki.ca_cert_pem(),
                &cfg,
            )
            .map_err(StartError::ServiceAccountKey)?,
        );
        tokens.add_validator(service_accounts.validator(store.clone()));
        let listener = server::bind(cfg.listen).await.map_err(StartError::Listen)?;
        let addr = listener.local_addr().map_err(StartError::Listen)?;
        let mut cfg = cfg;
        cfg.listen = addr;
        let api = Arc::new(
            Api::new(
                cfg,
                store.clone(),
                tokens,
                service_accounts,
                shutdown.clone(),
            )
            .map_err(StartError::Audit)?,
        );
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(store.clone().run_committer(shutdown.clone())));
        bootstrap::run(&api).await;
        api.set_ready(true);
        let tls = pki.server_config()?;
        tasks.push(tokio::spawn(server::serve(
            api.clone(),
            listener,
            tls,
            shutdown.clone(),
            Duration::from_secs(5),
        )));
        tracing::info!(%addr, data_dir = %dir.display(), "API server listening");
        Ok(Self {
            api,
            addr,
            pki,
            tasks,
            shutdown,
        })
    }

    /// `https://<addr>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Write an admin kubeconfig for this server.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> Result<(), pki::PkiError> {
        self.pki
            .write_kubeconfig(path, &self.url(), pki::Credentials::ClientCert)
    }

    /// Ask the server to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Wait until every task ended (after `shutdown`).
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.api.cfg.data_dir.clone()
    }
}
