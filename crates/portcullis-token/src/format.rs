//! The format of server-issued tokens: `pcs_` (script) or `pcp_` (personal), 28 base62
//! characters carrying 160 random bits, and a 6-character base62 CRC32 of everything before
//! it — so secret scanners can recognise a leaked token offline, as GitHub's can.

use std::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::AuthError;

/// Which kind of server-issued token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenKind {
    /// Automation, created by an environment admin, scoped to a resource and role
    /// (Teletraan's script tokens). Authenticates as a `script_token` principal named after
    /// the token.
    Script,
    /// A person's long-lived command-line token. Authenticates as its owner.
    Personal,
}

impl TokenKind {
    /// The prefix that starts every token of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Script => "pcs_",
            TokenKind::Personal => "pcp_",
        }
    }

    /// `script` or `personal`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Script => "script",
            TokenKind::Personal => "personal",
        }
    }

    /// Parses [`TokenKind::as_str`].
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`] for anything else (it is only read back from stores).
    pub fn from_name(name: &str) -> Result<Self, AuthError> {
        match name {
            "script" => Ok(TokenKind::Script),
            "personal" => Ok(TokenKind::Personal),
            other => Err(AuthError::Store(format!("unknown token kind `{other}`"))),
        }
    }
}

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Base62 digits for a u128 (62^22 > 2^128) and for a u32 (62^6 > 2^32).
const U128_DIGITS: usize = 22;
const U32_DIGITS: usize = 6;
const BODY_LEN: usize = U128_DIGITS + U32_DIGITS;
/// Length of every issued token.
pub const TOKEN_LEN: usize = 4 + BODY_LEN + U32_DIGITS;

fn push_base62(out: &mut String, mut n: u128, digits: usize) {
    let mut buf = [b'0'; U128_DIGITS];
    for slot in buf.iter_mut().take(digits).rev() {
        // `n % 62` is below 62, so the lookup always hits.
        *slot = ALPHABET.get((n % 62) as usize).copied().unwrap_or(b'0');
        n /= 62;
    }
    out.extend(buf.iter().take(digits).map(|&b| char::from(b)));
}

fn read_base62(digits: &str, max: u128) -> Option<u128> {
    digits.bytes().try_fold(0u128, |n, b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'Z' => b - b'A' + 10,
            b'a'..=b'z' => b - b'a' + 36,
            _ => return None,
        };
        n.checked_mul(62)?
            .checked_add(u128::from(d))
            .filter(|&v| v <= max)
    })
}

fn checksum(text: &str) -> u32 {
    crc32fast::hash(text.as_bytes())
}

/// A freshly issued token, shown to its owner once. `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// Generates a token of `kind` from the system random source.
    ///
    /// # Errors
    ///
    /// [`AuthError::Crypto`] if the random source fails.
    pub fn generate(kind: TokenKind) -> Result<Self, AuthError> {
        let mut random = [0u8; 20];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| AuthError::Crypto("the system random source failed".into()))?;
        let (high, low) = random.split_at(16);
        let high = u128::from_be_bytes(high.try_into().unwrap_or_default());
        let low = u32::from_be_bytes(low.try_into().unwrap_or_default());
        let mut token = String::with_capacity(TOKEN_LEN);
        token.push_str(kind.prefix());
        push_base62(&mut token, high, U128_DIGITS);
        push_base62(&mut token, u128::from(low), U32_DIGITS);
        let sum = checksum(&token);
        push_base62(&mut token, u128::from(sum), U32_DIGITS);
        Ok(TokenSecret(token))
    }

    /// The token, to hand to its owner once. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// Checks that `token` is a well-formed Portcullis token (prefix, length, alphabet,
/// checksum) and returns its kind; this is all a secret scanner needs, and no store is
/// touched. A token that passes may still be unknown, expired or revoked.
///
/// ```
/// use portcullis_token::{TokenKind, TokenSecret, decode_token};
/// let token = TokenSecret::generate(TokenKind::Script)?;
/// assert_eq!(decode_token(token.expose())?, TokenKind::Script);
/// assert!(decode_token("pcs_not-a-token").is_err());
/// # Ok::<(), portcullis_token::AuthError>(())
/// ```
///
/// # Errors
///
/// [`AuthError::Unrecognized`] if it does not start with a Portcullis prefix;
/// [`AuthError::Malformed`] if it does but is not a valid token.
pub fn decode_token(token: &str) -> Result<TokenKind, AuthError> {
    let kind = if token.starts_with(TokenKind::Script.prefix()) {
        TokenKind::Script
    } else if token.starts_with(TokenKind::Personal.prefix()) {
        TokenKind::Personal
    } else {
        return Err(AuthError::Unrecognized);
    };
    if token.len() != TOKEN_LEN || !token.is_ascii() {
        return Err(AuthError::Malformed(format!(
            "a {} token has {TOKEN_LEN} ASCII characters",
            kind.as_str()
        )));
    }
    let (head, sum) = token.split_at(TOKEN_LEN - U32_DIGITS);
    let (random_high, random_low) = head.get(4..).unwrap_or_default().split_at(U128_DIGITS);
    let valid_digits = read_base62(random_high, u128::MAX).is_some()
        && read_base62(random_low, u128::from(u32::MAX)).is_some();
    match read_base62(sum, u128::from(u32::MAX)) {
        Some(sum) if valid_digits && sum == u128::from(checksum(head)) => Ok(kind),
        _ => Err(AuthError::Malformed(format!(
            "the {} token's checksum does not match; it was mistyped or truncated",
            kind.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_decode_and_differ() {
        for kind in [TokenKind::Script, TokenKind::Personal] {
            let a = TokenSecret::generate(kind).unwrap();
            let b = TokenSecret::generate(kind).unwrap();
            assert_ne!(a, b);
            assert_eq!(a.expose().len(), TOKEN_LEN);
            assert!(a.expose().starts_with(kind.prefix()));
            assert_eq!(decode_token(a.expose()).unwrap(), kind);
            assert!(!format!("{a:?}").contains(a.expose()));
        }
    }

    #[test]
    fn the_format_is_stable() {
        // Made outside Rust (Python: base62 + zlib.crc32), so scanners written elsewhere agree.
        let known = "pcs_7n42D1bpAdJ1MsXvhAiS8f0rOpAQ1nr2e3";
        assert_eq!(decode_token(known).unwrap(), TokenKind::Script);
    }

    #[test]
    fn base62_edges() {
        let mut s = String::new();
        push_base62(&mut s, u128::MAX, U128_DIGITS);
        assert_eq!(read_base62(&s, u128::MAX), Some(u128::MAX));
        assert_eq!(
            read_base62("zzzzzzzzzzzzzzzzzzzzzz", u128::MAX),
            None,
            "overflow"
        );
        assert_eq!(
            read_base62("zzzzzz", u128::from(u32::MAX)),
            None,
            "above u32"
        );
        assert_eq!(read_base62("0-", u128::MAX), None);
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let token = TokenSecret::generate(TokenKind::Script).unwrap();
        let original = token.expose().as_bytes().to_vec();
        for i in 4..original.len() {
            for replacement in [b'0', b'a', b'Z'] {
                let mut changed = original.clone();
                if changed.get(i) == Some(&replacement) {
                    continue;
                }
                if let Some(c) = changed.get_mut(i) {
                    *c = replacement;
                }
                let text = String::from_utf8(changed).unwrap();
                assert!(decode_token(&text).is_err(), "{i}");
            }
        }
        assert!(matches!(
            decode_token("ghp_abc"),
            Err(AuthError::Unrecognized)
        ));
        assert!(matches!(
            decode_token("pcp_short"),
            Err(AuthError::Malformed(_))
        ));
        let truncated = token.expose().get(..TOKEN_LEN - 1).unwrap();
        assert!(matches!(
            decode_token(truncated),
            Err(AuthError::Malformed(_))
        ));
    }
}
