//! Bearer tokens from the configuration, kept as SHA-256 digests only: host tokens bound to
//! a SPIFFE ID, and principals' tokens for publishers and operators.

use std::fmt;

use async_trait::async_trait;
use aws_lc_rs::digest::{SHA256, digest};
use portcullis::token::{AuthError, Authenticator, Credential};
use portcullis::{AuthMethod, Principal};
use subtle::ConstantTimeEq;

/// How principals authenticated with a configured token appear in audit records.
pub(crate) const CONFIG_TOKEN: AuthMethod = AuthMethod::from_static("config_token");

/// The SHA-256 of a token, as written in the configuration (`token_sha256`, 64 hex digits).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TokenDigest([u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

impl TokenDigest {
    /// The digest of `token`.
    pub(crate) fn of(token: &str) -> TokenDigest {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        TokenDigest(out)
    }

    /// Parses 64 hex digits.
    pub(crate) fn parse(hex_text: &str) -> Result<TokenDigest, String> {
        let bytes = hex::decode(hex_text.trim())
            .map_err(|_| "token_sha256 is 64 hex digits (a SHA-256)".to_owned())?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "token_sha256 is 64 hex digits (a SHA-256)".to_owned())?;
        Ok(TokenDigest(bytes))
    }

    /// The digest as hex.
    pub(crate) fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Digest → what the token stands for. A lookup hashes the presented token and finds its
/// digest in a hash map — what the time of that reveals is about the SHA-256 of a
/// high-entropy secret, not the secret, as when GitLab looks tokens up by digest — then
/// confirms the match in constant time. One poll costs the same with 10 hosts or 10,000.
pub(crate) struct TokenTable<T> {
    entries: std::collections::HashMap<[u8; 32], T>,
}

impl<T> fmt::Debug for TokenTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenTable({} digests, redacted)", self.entries.len())
    }
}

impl<T> TokenTable<T> {
    /// A table; two entries with the same digest are refused (one token, two identities).
    pub(crate) fn new(entries: Vec<(TokenDigest, T)>) -> Result<TokenTable<T>, String> {
        let mut table = std::collections::HashMap::with_capacity(entries.len());
        for (digest, value) in entries {
            if table.insert(digest.0, value).is_some() {
                return Err(format!(
                    "token_sha256 {} is configured twice: one token would be two identities",
                    digest.to_hex()
                ));
            }
        }
        Ok(TokenTable { entries: table })
    }

    /// Whether `digest` is one of this table's.
    pub(crate) fn contains(&self, digest: &TokenDigest) -> bool {
        self.entries.contains_key(&digest.0)
    }

    /// The digests, for checks across tables.
    pub(crate) fn digests(&self) -> impl Iterator<Item = TokenDigest> + '_ {
        self.entries.keys().map(|d| TokenDigest(*d))
    }

    /// What `token` stands for, if it is configured.
    pub(crate) fn find(&self, token: &str) -> Option<&T> {
        let presented = TokenDigest::of(token);
        let (digest, value) = self.entries.get_key_value(&presented.0)?;
        let equal: bool = digest.ct_eq(&presented.0).into();
        equal.then_some(value)
    }

    /// What the `Authorization` header's token stands for.
    pub(crate) fn by_header(&self, header: Option<&[u8]>) -> Result<&T, AuthError> {
        let header = header.ok_or(AuthError::MissingCredential)?;
        let credential = Credential::from_authorization(header)?;
        self.find(credential.secret())
            .ok_or(AuthError::InvalidToken)
    }
}

/// Authenticates publishers and operators by the tokens the configuration lists.
#[derive(Debug)]
pub(crate) struct PrincipalTokens(pub(crate) TokenTable<Principal>);

#[async_trait]
impl Authenticator for PrincipalTokens {
    fn name(&self) -> &str {
        "config_token"
    }

    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        self.0
            .find(credential.secret())
            .cloned()
            .ok_or(AuthError::InvalidToken)
    }
}

/// A new random token (`pcd_` and 43 base64url characters: 256 bits).
pub(crate) fn new_token() -> Result<String, String> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random source failed".to_owned())?;
    Ok(format!(
        "pcd_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_digest_only() {
        let table = TokenTable::new(vec![
            (TokenDigest::of("alpha"), 1),
            (
                TokenDigest::parse(&TokenDigest::of("beta").to_hex()).unwrap(),
                2,
            ),
        ])
        .unwrap();
        assert_eq!(table.find("alpha"), Some(&1));
        assert_eq!(table.find("beta"), Some(&2));
        assert_eq!(table.find("gamma"), None);
        assert_eq!(table.by_header(Some(b"Bearer beta")).ok(), Some(&2));
        assert!(table.by_header(Some(b"Bearer nope")).is_err());
        assert!(table.by_header(None).is_err());
        assert!(!format!("{table:?}").contains(&TokenDigest::of("alpha").to_hex()));
        assert!(
            TokenTable::new(vec![(TokenDigest::of("a"), 1), (TokenDigest::of("a"), 2)]).is_err()
        );
        assert!(TokenDigest::parse("xyz").is_err());
        assert!(TokenDigest::parse(&"ab".repeat(31)).is_err());
        let token = new_token().unwrap();
        assert!(token.starts_with("pcd_") && token.len() == 47, "{token}");
    }
}
