//! Join tokens, K3s style: `K10<sha256 hex of the node CA PEM>::<id>.<secret>`.
//!
//! The id is 6 and the secret 16 lower-case alphanumerics. A token is stored as the Secret
//! `kedge-system/kedge-token-<id>` (type `kedge.io/join-token`, label `kedge.io/token=true`)
//! holding only `sha256(secret)`, the expiry (RFC 3339; absent = never), an optional node
//! name the token is bound to, a description and the creation time — never the secret.
//! The CA hash lets `edgecore join` pin the CA it fetches from `GET /ca.crt`; the server
//! checks it too, so a token minted for another installation fails with a clear reason.
//! The short form `<id>.<secret>` (no pinning) is accepted as well.
//!
//! Pure parts: [`parse`], [`check`] (the validation decision); IO: [`create`], [`list`],
//! [`delete`], [`validate`]; the `cloudcore token …` commands: [`cli_create`], [`cli_list`],
//! [`cli_delete`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::nodeca::{NAMESPACE, api_status};

/// Prefix of a full token (K3s' "K10" format).
pub const TOKEN_PREFIX: &str = "K10";
/// Type of token Secrets.
pub const TOKEN_SECRET_TYPE: &str = "kedge.io/join-token";
/// Label every token Secret carries (value `true`).
pub const TOKEN_LABEL: &str = "kedge.io/token";
/// Name prefix of token Secrets.
pub const TOKEN_SECRET_PREFIX: &str = "kedge-token-";
/// Length of the token id.
pub const ID_LEN: usize = 6;
/// Length of the token secret.
pub const SECRET_LEN: usize = 16;

const KEY_ID: &str = "token-id";
const KEY_HASH: &str = "secret-sha256";
const KEY_EXPIRATION: &str = "expiration";
const KEY_NODE: &str = "node-name";
const KEY_DESCRIPTION: &str = "description";
const KEY_CREATED: &str = "created";

/// Why a token was refused or could not be managed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The string is not `K10<hash>::<id>.<secret>` nor `<id>.<secret>`.
    #[error("malformed token: expected K10<ca-hash>::<id>.<secret>")]
    Malformed,
    /// The token pins another node CA than this server's.
    #[error("the token was issued for another node CA (its CA hash is not this server's)")]
    CaHashMismatch,
    /// Unknown id or wrong secret (deliberately not told apart).
    #[error("invalid or unknown join token")]
    Invalid,
    /// The token existed but is past its expiry.
    #[error(
        "the join token {id} expired at {expired_at}; create a new one with `cloudcore token create`"
    )]
    Expired {
        /// Token id.
        id: String,
        /// When it expired (RFC 3339).
        expired_at: String,
    },
    /// A token Secret exists but cannot be read as one.
    #[error("token Secret {name} is corrupt: {reason}")]
    Corrupt {
        /// The Secret's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A `--node-name` that is not a DNS-1123 subdomain.
    #[error("invalid node name {0:?}: must be a DNS-1123 subdomain")]
    InvalidNodeName(String),
    /// An API call failed.
    #[error("{action}")]
    Api {
        /// What was being done.
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    /// The random source failed.
    #[error("reading random bytes")]
    Random(#[source] rand::rand_core::OsError),
}

/// A token split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// The pinned CA hash (lower-case hex), absent in the short form.
    pub ca_hash: Option<String>,
    /// Token id.
    pub id: String,
    /// Token secret.
    pub secret: String,
}

/// What is stored about a token (the Secret's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Token id.
    pub id: String,
    /// sha256 of the secret.
    pub secret_sha256: [u8; 32],
    /// Expiry; `None` = never.
    pub expires: Option<DateTime<Utc>>,
    /// The only node name this token may join as.
    pub node: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Creation time.
    pub created: Option<DateTime<Utc>>,
}

/// A token that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    /// Token id.
    pub id: String,
    /// The node name it is bound to, if any.
    pub node: Option<String>,
}

/// What `cloudcore token list` shows (serialisable for `-o json|yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Token id (what `token delete` takes).
    pub id: String,
    /// Expiry, RFC 3339; absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Whether it is past its expiry now.
    pub expired: bool,
    /// Node name it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// Splits a token string. Checks only the syntax.
pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
    let token = token.trim();
    let (ca_hash, rest) = match token.strip_prefix(TOKEN_PREFIX) {
        Some(rest) => {
            let (hash, creds) = rest.split_once("::").ok_or(TokenError::Malformed)?;
            let ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(TokenError::Malformed);
            }
            (Some(hash.to_ascii_lowercase()), creds)
        }
        None => (None, token),
    };
    let (id, secret) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    if !is_token_part(id, ID_LEN) || !is_token_part(secret, SECRET_LEN) {
        return Err(TokenError::Malformed);
    }
    Ok(ParsedToken {
        ca_hash,
        id: id.to_owned(),
        secret: secret.to_owned(),
    })
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Formats a full token.
pub fn format_token(ca_hash: &str, id: &str, secret: &str) -> String {
    format!("{TOKEN_PREFIX}{ca_hash}::{id}.{secret}")
}

/// The validation decision, with no IO: `record` is the stored token for `parsed.id`
/// (`None` if there is none). Order: CA hash, existence + secret (constant time), expiry.
pub fn check(
    parsed: &ParsedToken,
    record: Option<&TokenRecord>,
    our_ca_hash: &str,
    now: DateTime<Utc>,
) -> Result<ValidToken, TokenError> {
    if let Some(hash) = &parsed.ca_hash
        && !hash.eq_ignore_ascii_case(our_ca_hash)
    {
        return Err(TokenError::CaHashMismatch);
    }
    let digest: [u8; 32] = Sha256::digest(parsed.secret.as_bytes()).into();
    let Some(record) = record else {
        return Err(TokenError::Invalid);
    };
    if !constant_time_eq(&digest, &record.secret_sha256) || record.id != parsed.id {
        return Err(TokenError::Invalid);
    }
    if let Some(expires) = record.expires
        && expires <= now
    {
        return Err(TokenError::Expired {
            id: record.id.clone(),
            expired_at: rfc3339(expires),
        });
    }
    Ok(ValidToken {
        id: record.id.clone(),
        node: record.node.clone(),
    })
}

/// Compares two equally long byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn random_alnum(len: usize) -> Result<String, TokenError> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        OsRng.try_fill_bytes(&mut buf).map_err(TokenError::Random)?;
        // Rejection sampling keeps the distribution uniform (252 = 7 * 36).
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*b) % 36]));
        }
    }
    Ok(out)
}

impl TokenRecord {
    /// The Secret that stores this record.
    pub fn to_secret(&self) -> Secret {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            data.insert(k.to_owned(), ByteString(v.into_bytes()));
        };
        put(KEY_ID, self.id.clone());
        put(KEY_HASH, hex::encode(self.secret_sha256));
        if let Some(e) = self.expires {
            put(KEY_EXPIRATION, rfc3339(e));
        }
        if let Some(n) = &self.node {
            put(KEY_NODE, n.clone());
        }
        if let Some(d) = &self.description {
            put(KEY_DESCRIPTION, d.clone());
        }
        if let Some(c) = self.created {
            put(KEY_CREATED, rfc3339(c));
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(format!("{TOKEN_SECRET_PREFIX}{}", self.id)),
                namespace: Some(NAMESPACE.into()),
                labels: Some(BTreeMap::from([(
                    TOKEN_LABEL.to_owned(),
                    "true".to_owned(),
                )])),
                ..Default::default()
            },
            type_: Some(TOKEN_SECRET_TYPE.into()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// Reads a record back from its Secret.
    pub fn from_secret(secret: &Secret) -> Result<Self, TokenError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let corrupt = |reason: String| TokenError::Corrupt {
            name: name.clone(),
            reason,
        };
        let get = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let time = |k: &str| -> Result<Option<DateTime<Utc>>, TokenError> {
            get(k)
                .map(|s| {
                    DateTime::parse_from_rfc3339(&s)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| corrupt(format!("{k}: {e}")))
                })
                .transpose()
        };
        let id = get(KEY_ID)
            .or_else(|| name.strip_prefix(TOKEN_SECRET_PREFIX).map(str::to_owned))
            .ok_or_else(|| corrupt("no token id".into()))?;
        let hash = get(KEY_HASH).ok_or_else(|| corrupt(format!("no {KEY_HASH}")))?;
        let mut secret_sha256 = [0u8; 32];
        hex::decode_to_slice(&hash, &mut secret_sha256)
            .map_err(|e| corrupt(format!("{KEY_HASH}: {e}")))?;
        Ok(Self {
            id,
            secret_sha256,
            expires: time(KEY_EXPIRATION)?,
            node: get(KEY_NODE),
            description: get(KEY_DESCRIPTION),
            created: time(KEY_CREATED)?,
        })
    }

    /// What `token list` shows.
    pub fn info(&self, now: DateTime<Utc>) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            expires: self.expires.map(rfc3339),
            expired: self.expires.is_some_and(|e| e <= now),
            node_name: self.node.clone(),
            description: self.description.clone(),
            created: self.created.map(rfc3339),
        }
    }
}

fn secrets(client: &Client) -> Api<Secret> {
    Api::namespaced(client.clone(), NAMESPACE)
}

/// Creates a token pinning `ca_hash`, valid for `ttl` (`None` or zero = never expires),
/// optionally bound to `node`. Returns the token string (shown once; only its hash is kept).
pub async fn create(
    client: &Client,
    ca_hash: &str,
    ttl: Option<Duration>,
    node: Option<String>,
    description: Option<String>,
) -> Result<String, TokenError> {
    if let Some(n) = &node
        && !crate::join::is_dns1123_subdomain(n)
    {
        return Err(TokenError::InvalidNodeName(n.clone()));
    }
    let now = Utc::now();
    let expires = ttl
        .filter(|t| !t.is_zero())
        .map(|t| now + chrono::Duration::from_std(t).unwrap_or(chrono::Duration::MAX));
    crate::nodeca::ensure_namespace(client)
        .await
        .map_err(|e| match e {
            crate::nodeca::NodeCaError::CreateNamespace(source) => TokenError::Api {
                action: "creating namespace kedge-system",
                source,
            },
            other => TokenError::Corrupt {
                name: NAMESPACE.into(),
                reason: other.to_string(),
            },
        })?;
    // An id collision (1 in 2 billion) answers 409; draw again.
    for _ in 0..5 {
        let id = random_alnum(ID_LEN)?;
        let secret = random_alnum(SECRET_LEN)?;
        let record = TokenRecord {
            id: id.clone(),
            secret_sha256: Sha256::digest(secret.as_bytes()).into(),
            expires,
            node: node.clone(),
            description: description.clone().filter(|d| !d.is_empty()),
            created: Some(now),
        };
        match secrets(client)
            .create(&PostParams::default(), &record.to_secret())
            .await
        {
            Ok(_) => return Ok(format_token(ca_hash, &id, &secret)),
            Err(e) if api_status(&e) == Some(409) => continue,
            Err(source) => {
                return Err(TokenError::Api {
                    action: "creating the token Secret",
                    source,
                });
            }
        }
    }
    Err(TokenError::Corrupt {
        name: TOKEN_SECRET_PREFIX.into(),
        reason: "could not find a free token id".into(),
    })
}

/// Every stored token (corrupt ones are skipped with a warning).
pub async fn list(client: &Client) -> Result<Vec<TokenRecord>, TokenError> {
    let list = secrets(client)
        .list(&ListParams::default().labels(&format!("{TOKEN_LABEL}=true")))
        .await
        .map_err(|source| TokenError::Api {
            action: "listing token Secrets",
            source,
        })?;
    let mut out: Vec<TokenRecord> = list
        .items
        .iter()
        .filter(|s| s.type_.as_deref() == Some(TOKEN_SECRET_TYPE))
        .filter_map(|s| match TokenRecord::from_secret(s) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "skipping a corrupt token Secret");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Deletes token `id`; `false` if there was none.
pub async fn delete(client: &Client, id: &str) -> Result<bool, TokenError> {
    if !is_token_part(id, ID_LEN) {
        return Ok(false);
    }
    match secrets(client)
        .delete(
            &format!("{TOKEN_SECRET_PREFIX}{id}"),
            &DeleteParams::default(),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if api_status(&e) == Some(404) => Ok(false),
        Err(source) => Err(TokenError::Api {
            action: "deleting the token Secret",
            source,
        }),
    }
}

/// Validates a presented token against the stored ones and `our_ca_hash`.
pub async fn validate(
    client: &Client,
    token: &str,
    our_ca_hash: &str,
) -> Result<ValidToken, TokenError> {
    let parsed = parse(token)?;
    if let Some(hash) = &parsed.ca_hash
        && !hash.eq_ignore_ascii_case(our_ca_hash)
    {
        return Err(TokenError::CaHashMismatch);
    }
    let stored = secrets(client)
        .get_opt(&format!("{TOKEN_SECRET_PREFIX}{}", parsed.id))
        .await
        .map_err(|source| TokenError::Api {
            action: "reading the token Secret",
            source,
        })?;
    let record = match &stored {
        Some(s) if s.type_.as_deref() == Some(TOKEN_SECRET_TYPE) => {
            Some(TokenRecord::from_secret(s)?)
        }
        _ => None,
    };
    check(&parsed, record.as_ref(), our_ca_hash, Utc::now())
}

/// `cloudcore token create`: loads (or creates) the node CA, creates a token and returns it.
pub async fn cli_create(
    client: kube::Client,
    ttl: Duration,
    node: Option<String>,
    description: Option<String>,
) -> anyhow::Result<String> {
    let ca = crate::nodeca::NodeCa::load_or_create(&client).await?;
    Ok(create(&client, ca.hash(), Some(ttl), node, description).await?)
}

/// `cloudcore token list`.
pub async fn cli_list(client: kube::Client) -> anyhow::Result<Vec<TokenInfo>> {
    let now = Utc::now();
    Ok(list(&client).await?.iter().map(|r| r.info(now)).collect())
}

/// `cloudcore token delete ID`: an unknown id is an error.
pub async fn cli_delete(client: kube::Client, id: &str) -> anyhow::Result<()> {
    if delete(&client, id).await? {
        Ok(())
    } else {
        anyhow::bail!("no join token with id {id:?}")
    }
}

#[cfg(test)]
mod tests;
