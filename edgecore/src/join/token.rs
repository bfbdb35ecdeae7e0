//! Join tokens, K3s style: `K10<sha256 hex of the node CA PEM>::<id>.<secret>`.
//! The prefix pins the CA, so the edge can trust the server it fetches the
//! CA from before it trusts anything else.

use std::fmt;

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Lower-case hex sha256 of the node CA PEM bytes.
    pub ca_hash: String,
    /// Token id (public part).
    pub id: String,
    /// The secret.
    pub secret: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ca_hash", &self.ca_hash)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Token {
    /// Parses a token; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Token, String> {
        let shape = "expected K10<64 hex characters>::<id>.<secret>";
        let s = s.trim();
        let rest = s
            .strip_prefix("K10")
            .ok_or_else(|| format!("the token does not start with K10 ({shape})"))?;
        let (hash, cred) = rest
            .split_once("::")
            .ok_or_else(|| format!("the token has no '::' ({shape})"))?;
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "the token's CA hash is not 64 hex characters ({shape})"
            ));
        }
        let (id, secret) = cred
            .split_once('.')
            .ok_or_else(|| format!("the token has no '.' between id and secret ({shape})"))?;
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !ok(id) || !ok(secret) {
            return Err(format!(
                "the token's id or secret is empty or has invalid characters ({shape})"
            ));
        }
        Ok(Token {
            ca_hash: hash.to_ascii_lowercase(),
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The token as sent to the server (the same text).
    pub fn as_string(&self) -> String {
        format!("K10{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let hash = "ab".repeat(32);
        let t = Token::parse(&format!("K10{hash}::abc123.s3cr3t")).unwrap();
        assert_eq!(
            (t.ca_hash.as_str(), t.id.as_str(), t.secret.as_str()),
            (hash.as_str(), "abc123", "s3cr3t")
        );
        assert_eq!(t.as_string(), format!("K10{hash}::abc123.s3cr3t"));
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(Token::parse("abc").unwrap_err().contains("K10"));
        assert!(Token::parse("K10abc::a.b").unwrap_err().contains("64 hex"));
        assert!(Token::parse(&format!("K10{hash}::nodot")).is_err());
        assert!(Token::parse(&format!("K10{hash}::.x")).is_err());
    }
}
