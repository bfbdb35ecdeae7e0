//! Projected ServiceAccount tokens, as the kubelet's token manager keeps them.
//!
//! For every `serviceAccountToken` projection of this node's pods a token *bound to the
//! pod* is requested from the cloud: a TokenRequest through the link (REQUEST `create` on
//! `<ns>/serviceaccounttoken/<sa>`, which cloudcore turns into
//! `POST …/serviceaccounts/<sa>/token` after checking the pod is this node's). The request
//! travels in the outbox, so one made offline goes out on reconnect. Answers are kept in
//! the store tree `satokens`, so a cold boot without the cloud still mounts the last token.
//!
//! A token is renewed once it is older than 80 % of its lifetime or 24 h (the kubelet's
//! rule); tokens of pods that are gone are forgotten. The runtime reads them with
//! [`SaTokens::get`] and swaps the mounted file in place when a renewal lands. A refused
//! request (403: the pod is not this node's, the account is gone) is retried after
//! [`RETRY_REFUSED`]; the volume is written without the token meanwhile.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proto::{Op, ResourceKey, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::meta::MetaReader;
use crate::outbox::{Outbox, Upstream};
use crate::runtime::desired_pods;
use crate::runtime::spec::{Pod, TokenProjection};
use crate::store::{Store, StoreError, Tree};

/// Store tree of tokens: [`Need::id`] -> [`Token`] JSON.
const TREE: &str = "satokens";
/// Prefix of the outbox keys of token requests.
pub const OUTBOX_PREFIX: &str = "satoken/";
/// Kubernetes' default `expirationSeconds` of a projected token.
pub const DEFAULT_EXPIRATION: i64 = 3600;
/// Kubernetes' minimum `expirationSeconds`.
pub const MIN_EXPIRATION: i64 = 600;
/// How long a refused request waits before it is tried again.
pub const RETRY_REFUSED: Duration = Duration::from_secs(60);
/// How long an unanswered request waits before it is queued again (the outbox retries on
/// its own; this only covers an answer lost with a restart).
const RETRY_UNANSWERED: i64 = 120;
/// A token is renewed at the latest this long after it was issued.
const MAX_AGE: i64 = 24 * 3600;

/// One token a pod needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// Namespace of the pod and its ServiceAccount.
    pub namespace: String,
    /// The pod's ServiceAccount.
    pub service_account: String,
    /// Pod name (the token's bound object).
    pub pod_name: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Audience ("" = the API server's).
    pub audience: String,
    /// Requested lifetime in seconds.
    pub expiration_seconds: i64,
}

impl Need {
    /// The need of `projection` in `pod`.
    pub fn of(pod: &Pod, projection: &TokenProjection) -> Need {
        Need {
            namespace: pod.metadata.namespace.clone(),
            service_account: pod
                .spec
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
            pod_name: pod.metadata.name.clone(),
            pod_uid: pod.metadata.uid.clone(),
            audience: projection.audience.clone(),
            expiration_seconds: projection
                .expiration_seconds
                .unwrap_or(DEFAULT_EXPIRATION)
                .max(MIN_EXPIRATION),
        }
    }

    /// Identity of the token: pod UID, lifetime and audience (one token serves every
    /// projection of the pod asking for the same).
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.pod_uid, self.expiration_seconds, self.audience
        )
    }

    /// The TokenRequest body.
    pub fn request_body(&self) -> Value {
        let audiences: Vec<&str> = if self.audience.is_empty() {
            Vec::new()
        } else {
            vec![self.audience.as_str()]
        };
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": self.expiration_seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod_name,
                    "uid": self.pod_uid,
                },
            },
        })
    }
}

/// Every token the pods need, by [`Need::id`].
pub fn needs(pods: &[Pod]) -> BTreeMap<String, Need> {
    let mut out = BTreeMap::new();
    for pod in pods {
        for v in &pod.spec.volumes {
            let Some(projected) = &v.projected else {
                continue;
            };
            for source in &projected.sources {
                if let Some(t) = &source.service_account_token {
                    let need = Need::of(pod, t);
                    out.insert(need.id(), need);
                }
            }
        }
    }
    out
}

/// A token the cloud issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The JWT.
    pub token: String,
    /// When it was received (Unix seconds).
    pub issued_at: i64,
    /// `status.expirationTimestamp` (Unix seconds).
    pub expires_at: i64,
}

impl Token {
    /// Parses a TokenRequest answer received at `now`.
    pub fn from_response(body: &[u8], now: i64) -> Result<Token, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
        let token = v
            .pointer("/status/token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("answer has no status.token")?;
        let expires = v
            .pointer("/status/expirationTimestamp")
            .and_then(Value::as_str)
            .ok_or("answer has no status.expirationTimestamp")?;
        let expires_at = chrono::DateTime::parse_from_rfc3339(expires)
            .map_err(|e| format!("bad expirationTimestamp {expires:?}: {e}"))?
            .timestamp();
        Ok(Token {
            token: token.to_owned(),
            issued_at: now,
            expires_at,
        })
    }

    /// Whether the token should be renewed at `now`: older than 80 % of its lifetime or
    /// than 24 h.
    pub fn due(&self, now: i64) -> bool {
        let lifetime = (self.expires_at - self.issued_at).max(0);
        let age = now - self.issued_at;
        age * 5 >= lifetime * 4 || age >= MAX_AGE
    }
}

#[derive(Debug, Default)]
struct State {
    tokens: BTreeMap<String, Token>,
    /// Requested and not answered: id -> when.
    pending: BTreeMap<String, i64>,
    /// Refused: id -> not before.
    refused: BTreeMap<String, i64>,
}

/// The node's tokens; cheap to clone.
#[derive(Debug, Clone)]
pub struct SaTokens {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    tree: Tree,
    changed: Notify,
    generation: AtomicU64,
}

impl SaTokens {
    /// Opens the tokens kept in `store`.
    pub fn open(store: &Store) -> Result<SaTokens, StoreError> {
        let tree = store.tree(TREE)?;
        let mut state = State::default();
        for entry in tree.scan_prefix(b"") {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            match serde_json::from_slice::<Token>(&value) {
                Ok(t) => {
                    state.tokens.insert(key, t);
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "dropping an unreadable token");
                    tree.delete(&key)?;
                }
            }
        }
        Ok(SaTokens {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                tree,
                changed: Notify::new(),
                generation: AtomicU64::new(0),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The token for `projection` of `pod`, if one was issued (expired or not: offline, the
    /// last token is all there is).
    pub fn get(&self, pod: &Pod, projection: &TokenProjection) -> Option<String> {
        let id = Need::of(pod, projection).id();
        self.lock().tokens.get(&id).map(|t| t.token.clone())
    }

    /// Number of tokens held.
    pub fn len(&self) -> usize {
        self.lock().tokens.len()
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bumped whenever a token is stored or replaced.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Waits until a token was stored or replaced.
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// The requests to queue at `now` for `needs`; forgets tokens nobody needs any more.
    pub fn plan(&self, needs: &BTreeMap<String, Need>, now: i64) -> Vec<Need> {
        let mut state = self.lock();
        let gone: Vec<String> = state
            .tokens
            .keys()
            .filter(|id| !needs.contains_key(*id))
            .cloned()
            .collect();
        for id in &gone {
            state.tokens.remove(id);
            if let Err(e) = self.inner.tree.delete(id) {
                tracing::warn!(%id, error = %e, "cannot forget a token");
            }
        }
        state.pending.retain(|id, _| needs.contains_key(id));
        state.refused.retain(|id, _| needs.contains_key(id));
        let mut out = Vec::new();
        for (id, need) in needs {
            let fresh = state.tokens.get(id).is_some_and(|t| !t.due(now));
            let waiting = state
                .pending
                .get(id)
                .is_some_and(|at| now - at < RETRY_UNANSWERED);
            let refused = state.refused.get(id).is_some_and(|until| now < *until);
            if !fresh && !waiting && !refused {
                state.pending.insert(id.clone(), now);
                out.push(need.clone());
            }
        }
        out
    }

    /// Takes the cloud's answer to the request queued under outbox key `key`.
    pub fn on_response(&self, key: &str, response: &Response, now: i64) {
        let Some(id) = key.strip_prefix(OUTBOX_PREFIX) else {
            return;
        };
        let mut state = self.lock();
        if !(200..300).contains(&response.code) {
            if crate::outbox::queue::classify(response.code)
                == crate::outbox::queue::Verdict::Permanent
            {
                state.pending.remove(id);
                let retry = i64::try_from(RETRY_REFUSED.as_secs()).unwrap_or(60);
                state.refused.insert(id.to_owned(), now + retry);
                tracing::warn!(%id, code = response.code, reason = %response.reason, message = %response.message,
                    "the cloud refused a ServiceAccount token; the volume goes without it for now");
            }
            return;
        }
        state.pending.remove(id);
        match Token::from_response(&response.body, now) {
            Ok(token) => {
                let json = serde_json::to_vec(&token).unwrap_or_default();
                if let Err(e) = self.inner.tree.put(id, json) {
                    tracing::warn!(%id, error = %e, "cannot keep a token in the store");
                }
                tracing::info!(%id, expires_at = token.expires_at, "ServiceAccount token received");
                state.tokens.insert(id.to_owned(), token);
                drop(state);
                self.inner.generation.fetch_add(1, Ordering::Release);
                self.inner.changed.notify_waiters();
            }
            Err(e) => tracing::warn!(%id, error = %e, "unusable TokenRequest answer"),
        }
    }
}

/// Unix seconds now.
fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Keeps the tokens of `node`'s pods requested and renewed until `shutdown`.
pub async fn run(
    node: String,
    mut reader: MetaReader,
    outbox: Outbox,
    tokens: SaTokens,
    shutdown: CancellationToken,
) {
    let mut responses: mpsc::UnboundedReceiver<(String, Response)> =
        outbox.subscribe_responses(OUTBOX_PREFIX);
    loop {
        let pods = desired_pods(&reader.snapshot(), &node);
        let wanted = needs(&pods);
        let due = tokens.plan(&wanted, now_s());
        if !due.is_empty() {
            let items = due
                .iter()
                .filter_map(|n| {
                    let key = ResourceKey::namespaced(
                        &n.namespace,
                        "serviceaccounttoken",
                        n.service_account.clone(),
                    )
                    .ok()?;
                    Some((
                        format!("{OUTBOX_PREFIX}{}", n.id()),
                        Upstream::request(Op::Create, &key, &n.request_body()),
                    ))
                })
                .collect::<Vec<_>>();
            tracing::debug!(requests = items.len(), "requesting ServiceAccount tokens");
            if let Err(e) = outbox.put_many(items).await {
                tracing::warn!(error = %e, "cannot queue ServiceAccount token requests");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = reader.changed() => if !changed { return },
            Some((key, response)) = responses.recv() => tokens.on_response(&key, &response, now_s()),
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests;
