//! Authentication: who is calling the embedded API. Start reading at [`authenticate`].
//!
//! Two credentials are accepted, tried in this order (Kubernetes' union authenticator
//! order: the first that succeeds wins):
//!
//! 1. a TLS client certificate. rustls already verified its chain against the API CA
//!    during the handshake ([`crate::pki::ApiPki::server_config`]), so this module only
//!    maps it: CN → user name, O → groups ([`user_from_peer_certs`]);
//! 2. `Authorization: Bearer <token>`, checked by a [`TokenAuthenticator`]: static tokens
//!    (the admin token) compared in constant time, then pluggable [`TokenValidator`]s
//!    (ServiceAccount tokens, later).
//!
//! Anonymous requests are refused: no credential, a malformed header, an unknown token or an
//! identity of `system:anonymous` all give [`AuthError`] → HTTP 401 with the message
//! `Unauthorized` (the caller builds the Kubernetes `Status`). Every authenticated user
//! carries the group `system:authenticated`, as in Kubernetes.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

/// Group added to every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The anonymous user's name; never accepted.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The anonymous group; never accepted.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// An authenticated identity (Kubernetes `user.Info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (certificate CN, or the token's subject).
    pub name: String,
    /// Groups (certificate O entries, or the token's groups).
    pub groups: Vec<String>,
    /// Stable unique id, when the credential carries one (ServiceAccount tokens do).
    pub uid: Option<String>,
}

impl UserInfo {
    /// A user without uid.
    /// `groups` may be an array, a slice or a `Vec` of strings.
    pub fn new(name: impl Into<String>, groups: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        UserInfo {
            name: name.into(),
            groups: groups.into_iter().map(|g| g.as_ref().to_owned()).collect(),
            uid: None,
        }
    }

    /// `system:anonymous` in `system:unauthenticated`: the identity of an unauthenticated
    /// request to a public endpoint (`/version`, `/healthz`). [`authenticate`] never
    /// returns it.
    pub fn anonymous() -> Self {
        Self::new(ANONYMOUS_USER, [UNAUTHENTICATED_GROUP])
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Why a request is not authenticated. All variants mean HTTP 401 and display as
/// `Unauthorized` (clients learn nothing about which check failed); [`AuthError::reason`]
/// is the detail for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither a client certificate nor an `Authorization` header.
    #[error("Unauthorized")]
    NoCredentials,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("Unauthorized")]
    MalformedHeader,
    /// A bearer token no authenticator knows.
    #[error("Unauthorized")]
    UnknownToken,
    /// A credential that maps to the anonymous identity.
    #[error("Unauthorized")]
    Anonymous,
}

impl AuthError {
    /// HTTP status for every authentication failure.
    pub const STATUS: u16 = 401;
    /// The message for the Kubernetes `Status` body.
    pub const MESSAGE: &'static str = "Unauthorized";

    /// Short machine-readable reason, for logs and metric labels (never sent to clients).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::NoCredentials => "no_credentials",
            AuthError::MalformedHeader => "malformed_authorization_header",
            AuthError::UnknownToken => "unknown_token",
            AuthError::Anonymous => "anonymous",
        }
    }
}

/// Validates bearer tokens the server issues itself (ServiceAccount TokenRequest tokens).
/// Called only for tokens that matched no static token.
pub trait TokenValidator: Send + Sync {
    /// The identity of `token`, or `None` if it is not valid (unknown, expired, revoked).
    fn validate(&self, token: &str) -> Option<UserInfo>;
}

impl<F> TokenValidator for F
where
    F: Fn(&str) -> Option<UserInfo> + Send + Sync,
{
    fn validate(&self, token: &str) -> Option<UserInfo> {
        self(token)
    }
}

/// Bearer-token authentication: static tokens plus pluggable validators. Cheap to clone.
#[derive(Clone, Default)]
pub struct TokenAuthenticator {
    /// SHA-256 of each static token with its identity. Only digests are kept and compared,
    /// so comparison time depends neither on the token's length nor on where it differs.
    static_tokens: Vec<([u8; 32], UserInfo)>,
    validators: Vec<Arc<dyn TokenValidator>>,
}

impl fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthenticator")
            .field("static_tokens", &self.static_tokens.len())
            .field("validators", &self.validators.len())
            .finish()
    }
}

impl TokenAuthenticator {
    /// An authenticator that accepts no token yet; add the admin token with
    /// [`TokenAuthenticator::add_static_token`] (or use
    /// [`crate::pki::ApiPki::token_authenticator`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` as `user`. An empty token can never match (the header parser
    /// refuses empty tokens).
    pub fn add_static_token(&mut self, token: &str, user: UserInfo) {
        self.static_tokens.push((digest(token), user));
    }

    /// Adds a validator, consulted after the static tokens, in insertion order.
    pub fn add_validator(&mut self, validator: Arc<dyn TokenValidator>) {
        self.validators.push(validator);
    }

    /// The identity of a bare token (no `Bearer ` prefix), if any authenticator knows it.
    pub fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        if token.is_empty() {
            return None;
        }
        let presented = digest(token);
        // Visit every static token, without short-circuiting, so timing does not reveal
        // which (or whether an early) entry matched.
        let mut found = None;
        for (known, user) in &self.static_tokens {
            if constant_time_eq(&presented, known) && found.is_none() {
                found = Some(user);
            }
        }
        if let Some(user) = found {
            return Some(user.clone());
        }
        self.validators.iter().find_map(|v| v.validate(token))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests in time independent of their contents.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Extracts the token from an `Authorization` header value: `Bearer <token>`, scheme
/// case-insensitive, surrounding whitespace trimmed. `None` for any other shape (other
/// scheme, empty token, embedded whitespace or control characters).
pub fn parse_bearer(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, token) = header.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(token)
}

/// The identity in a client certificate chain that rustls verified against the API CA
/// (`ServerConnection::peer_certificates()`): the leaf's subject CN is the user name,
/// each O is a group. `None` without certificates, or if the leaf has no usable CN.
///
/// Do not call this on an unverified chain: it checks nothing but the subject.
pub fn user_from_peer_certs(certs: &[CertificateDer<'_>]) -> Option<UserInfo> {
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    Some(UserInfo {
        name,
        groups,
        uid: None,
    })
}

/// Authenticates a request from its verified client certificate identity (`peer`, from
/// [`user_from_peer_certs`]) and its `Authorization` header. The certificate wins when
/// both are present. The result always includes the group `system:authenticated`.
pub fn authenticate(
    peer: Option<&UserInfo>,
    authorization_header: Option<&str>,
    tokens: &TokenAuthenticator,
) -> Result<UserInfo, AuthError> {
    let user = match (peer, authorization_header) {
        (Some(user), _) => user.clone(),
        (None, Some(header)) => {
            let token = parse_bearer(header).ok_or(AuthError::MalformedHeader)?;
            tokens
                .authenticate_token(token)
                .ok_or(AuthError::UnknownToken)?
        }
        (None, None) => return Err(AuthError::NoCredentials),
    };
    if user.name == ANONYMOUS_USER || user.in_group(UNAUTHENTICATED_GROUP) {
        return Err(AuthError::Anonymous);
    }
    let mut user = user;
    if !user.in_group(AUTHENTICATED_GROUP) {
        user.groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> UserInfo {
        UserInfo::new("kedge-admin", ["system:masters"])
    }

    fn tokens() -> TokenAuthenticator {
        let mut t = TokenAuthenticator::new();
        t.add_static_token("s3cret", admin());
        t
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(parse_bearer("Bearer abc"), Some("abc"));
        assert_eq!(parse_bearer("bearer abc"), Some("abc"));
        assert_eq!(parse_bearer("BEARER   abc  "), Some("abc"));
        assert_eq!(parse_bearer("  Bearer\tabc"), Some("abc"));
        assert_eq!(parse_bearer("Bearer"), None);
        assert_eq!(parse_bearer("Bearer "), None);
        assert_eq!(parse_bearer("Bearer a b"), None);
        assert_eq!(parse_bearer("Basic YWRtaW46YWRtaW4="), None);
        assert_eq!(parse_bearer("Bearerabc"), None);
        assert_eq!(parse_bearer(""), None);
        assert_eq!(parse_bearer("Bearer ab\u{7f}c"), None);
        assert_eq!(parse_bearer("Bearer tök"), None);
    }

    #[test]
    fn static_token_matches_exactly() {
        let t = tokens();
        assert_eq!(t.authenticate_token("s3cret"), Some(admin()));
        assert_eq!(t.authenticate_token("s3cre"), None);
        assert_eq!(t.authenticate_token("s3cret2"), None);
        assert_eq!(t.authenticate_token(""), None);
        assert_eq!(TokenAuthenticator::new().authenticate_token("s3cret"), None);
    }

    #[test]
    fn validators_are_consulted_after_static_tokens() {
        let mut t = tokens();
        t.add_validator(Arc::new(|token: &str| {
            (token == "sa-token").then(|| UserInfo {
                name: "system:serviceaccount:default:builder".into(),
                groups: vec!["system:serviceaccounts".into()],
                uid: Some("1234".into()),
            })
        }));
        let user = authenticate(None, Some("Bearer sa-token"), &t).ok();
        assert_eq!(user.as_ref().and_then(|u| u.uid.as_deref()), Some("1234"));
        assert_eq!(t.authenticate_token("s3cret"), Some(admin()));
        assert_eq!(t.authenticate_token("other"), None);
    }

    #[test]
    fn authenticate_decides() {
        let t = tokens();
        let with_auth = |u: UserInfo| {
            let mut u = u;
            u.groups.push(AUTHENTICATED_GROUP.into());
            u
        };
        assert_eq!(
            authenticate(None, Some("Bearer s3cret"), &t),
            Ok(with_auth(admin()))
        );
        assert_eq!(authenticate(None, None, &t), Err(AuthError::NoCredentials));
        assert_eq!(
            authenticate(None, Some("Bearer nope"), &t),
            Err(AuthError::UnknownToken)
        );
        assert_eq!(
            authenticate(None, Some("Basic x"), &t),
            Err(AuthError::MalformedHeader)
        );
        let alice = UserInfo::new("alice", ["dev"]);
        // The certificate wins over a (bad) token.
        assert_eq!(
            authenticate(Some(&alice), Some("Bearer nope"), &t),
            Ok(with_auth(alice))
        );
        let anon = UserInfo::anonymous();
        assert_eq!(
            authenticate(Some(&anon), None, &t),
            Err(AuthError::Anonymous)
        );
        let unauth = UserInfo::new("x", [UNAUTHENTICATED_GROUP]);
        assert_eq!(
            authenticate(Some(&unauth), None, &t),
            Err(AuthError::Anonymous)
        );
        // system:authenticated is not duplicated.
        let already = UserInfo::new("bob", [AUTHENTICATED_GROUP]);
        assert_eq!(
            authenticate(Some(&already), None, &t).map(|u| u.groups.len()),
            Ok(1)
        );
    }

    #[test]
    fn errors_say_only_unauthorized() {
        for e in [
            AuthError::NoCredentials,
            AuthError::MalformedHeader,
            AuthError::UnknownToken,
            AuthError::Anonymous,
        ] {
            assert_eq!(e.to_string(), AuthError::MESSAGE);
            assert!(!e.reason().is_empty());
        }
    }

    #[test]
    fn garbage_certificates_yield_no_user() {
        assert_eq!(user_from_peer_certs(&[]), None);
        assert_eq!(
            user_from_peer_certs(&[CertificateDer::from(vec![1, 2, 3])]),
            None
        );
    }
}
