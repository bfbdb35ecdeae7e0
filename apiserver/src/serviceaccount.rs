//! ServiceAccounts as Kubernetes runs them: the `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap in every namespace (the ServiceAccount and root-CA
//! publisher controllers), pods defaulted to a ServiceAccount that must exist and given the
//! `kube-api-access-*` projected token volume (the ServiceAccount admission plugin), and
//! bound tokens: issued by the `serviceaccounts/token` subresource (TokenRequest) and
//! accepted as bearer tokens while they are unexpired and what they are bound to still
//! exists with the same uid.
//!
//! Start reading at [`ServiceAccounts`]; `pod` is the admission's pure part, `token` the
//! claims and the TokenRequest handler, `jwt` the ES256 signatures.

pub mod jwt;
pub mod pod;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{Api, ApiConfig};
use crate::auth::{TokenValidator, UserInfo};
use crate::status::{ApiError, ApiResult};
use crate::store::{Event, EventType, Store};

/// Kubernetes' default issuer (and API audience) of ServiceAccount tokens.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Where the token volume is mounted in containers.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap holding the API CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The ServiceAccount every namespace has.
pub const DEFAULT_SA: &str = "default";
/// Group of every ServiceAccount.
pub const SA_GROUP: &str = "system:serviceaccounts";

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The storage key of a ServiceAccount.
pub fn sa_key(namespace: &str, name: &str) -> String {
    format!("core/serviceaccounts/{namespace}/{name}")
}

/// What ServiceAccount tokens are made and checked with.
#[derive(Debug)]
pub struct ServiceAccounts {
    signer: jwt::Signer,
    /// `iss` of issued tokens; only tokens of this issuer are accepted.
    pub issuer: String,
    /// The API's audiences: the default `aud` of issued tokens, and a token must name one
    /// of them to authenticate.
    pub audiences: Vec<String>,
    /// Shortest `expirationSeconds` a TokenRequest may ask for.
    pub min_ttl: Duration,
    /// The API CA (PEM), published as `kube-root-ca.crt`.
    pub ca_pem: String,
}

impl ServiceAccounts {
    /// From the PKI's signing key and CA, and the server's settings.
    pub fn new(key_pem: &str, ca_pem: &str, cfg: &ApiConfig) -> Result<Self, jwt::JwtError> {
        Ok(Self {
            signer: jwt::Signer::from_pem(key_pem)?,
            issuer: cfg.service_account_issuer.clone(),
            audiences: vec![cfg.service_account_issuer.clone()],
            min_ttl: cfg.min_token_ttl,
            ca_pem: ca_pem.to_string(),
        })
    }

    /// The bearer-token validator for tokens issued here (register it with the
    /// `TokenAuthenticator`).
    pub fn validator(self: &Arc<Self>, store: Arc<Store>) -> Arc<dyn TokenValidator> {
        Arc::new(Validator {
            sa: self.clone(),
            store,
        })
    }
}

struct Validator {
    sa: Arc<ServiceAccounts>,
    store: Arc<Store>,
}

impl TokenValidator for Validator {
    fn validate(&self, token: &str) -> Option<UserInfo> {
        let claims = self.sa.signer.verify(token)?;
        let now = chrono::Utc::now().timestamp();
        let v = token::check(&claims, &self.sa.issuer, &self.sa.audiences, now)?;
        let sa = self.store.get(&sa_key(&v.namespace, &v.name))?;
        if uid(&sa.value()) != Some(v.uid.as_str()) {
            return None;
        }
        if let Some(b) = &v.bound {
            let obj = self
                .store
                .get(&format!("core/{}/{}/{}", b.plural, v.namespace, b.name))?
                .value();
            if uid(&obj) != Some(b.uid.as_str()) || deleted_before(&obj, now) {
                return None;
            }
        }
        Some(UserInfo {
            name: format!("system:serviceaccount:{}:{}", v.namespace, v.name),
            groups: vec![SA_GROUP.to_string(), format!("{SA_GROUP}:{}", v.namespace)],
            uid: Some(v.uid),
        })
    }
}

fn uid(v: &Value) -> Option<&str> {
    v.pointer("/metadata/uid").and_then(Value::as_str)
}

/// A pod whose deletion time passed (its tokens die with it).
fn deleted_before(obj: &Value, now: i64) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.timestamp() <= now)
}

/// The ServiceAccount admission of a pod being created: default its ServiceAccount, refuse
/// it when that does not exist (403, Kubernetes' message), mount the token unless
/// automounting is off. Reads the store (call it outside a store mutation).
pub fn admit_pod(api: &Api, pod: &mut Value) -> ApiResult<()> {
    let Some(name) = pod::default_service_account(pod) else {
        return Ok(());
    };
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let Some(sa) = api.store.get(&sa_key(&ns, &name)) else {
        let pod_name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(ApiError::forbidden(format!(
            "pods \"{pod_name}\" is forbidden: error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found"
        ))
        .with_details(json!({"name": pod_name, "kind": "pods"})));
    };
    if pod::automount(pod, &sa.value()) {
        pod::mount_token(pod);
    }
    Ok(())
}

/// Create the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap of namespace
/// `ns` when missing, and put the CA back into the ConfigMap when it was changed.
pub async fn ensure_namespace_defaults(api: &Arc<Api>, ns: &str) {
    if api.store.get(&sa_key(ns, DEFAULT_SA)).is_none() {
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT_SA, "namespace": ns}});
        if let Err(e) = crate::bootstrap::ensure(api, sa).await {
            tracing::debug!(namespace = ns, error = %e, "creating the default ServiceAccount");
        }
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns,
            "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
        "data": {"ca.crt": api.service_accounts.ca_pem}});
    if let Err(e) = crate::bootstrap::ensure(api, cm).await {
        tracing::debug!(namespace = ns, error = %e, "publishing kube-root-ca.crt");
    }
}

/// The controllers' reactions to a durable write: a new namespace gets its defaults (before
/// the namespace's creation is answered, so a pod can follow at once); a deleted `default`
/// ServiceAccount or a deleted or edited `kube-root-ca.crt` is put back.
pub async fn after_write(api: &Arc<Api>, plural: &str, ev: &Event) {
    let fields = ev.obj.fields();
    let name = fields.field("metadata.name").unwrap_or("");
    let ns = fields.field("metadata.namespace").unwrap_or("");
    let target = match (plural, ev.kind) {
        ("namespaces", EventType::Added) => name,
        ("serviceaccounts", EventType::Deleted) if name == DEFAULT_SA => ns,
        ("configmaps", EventType::Deleted | EventType::Modified) if name == ROOT_CA_CONFIGMAP => {
            let obj = ev.obj.value();
            let ca = obj.pointer("/data/ca.crt").and_then(Value::as_str);
            if ev.kind == EventType::Modified && ca == Some(api.service_accounts.ca_pem.as_str()) {
                return;
            }
            ns
        }
        _ => return,
    };
    if target.is_empty() || crate::admission::check_namespace_open(api, target).is_err() {
        return;
    }
    // Boxed: creating the objects runs `after_write` again (for them).
    Box::pin(ensure_namespace_defaults(api, target)).await;
}
