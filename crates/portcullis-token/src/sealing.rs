//! [`SealingKey`]: secrets kept in a shared database (session signing keys) are encrypted
//! with AES-256-GCM under a key that lives outside it, bound to what they are by associated
//! data, so that the database or its backups alone never yield a usable secret.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::AuthError;

/// The first byte of everything sealed: the format (AES-256-GCM, 96-bit random nonce).
const FORMAT_V1: u8 = 1;
/// The shortest sealed value: the format byte, the nonce and the tag.
const MIN_SEALED: usize = 1 + NONCE_LEN + 16;

/// The 32-byte key that encrypts secrets at rest (AES-256-GCM). Every instance sharing a
/// database needs the same one; keep it out of that database — in a secret manager, an
/// environment variable or a file only the service reads. `Debug` never shows it, and it is
/// never logged.
///
/// ```
/// use portcullis_token::SealingKey;
/// let key = SealingKey::from_hex(&"ab".repeat(32))?;
/// let sealed = key.seal(b"session key v1 kid=1", b"the secret")?;
/// assert_eq!(key.open(b"session key v1 kid=1", &sealed)?, b"the secret");
/// // Bound to its context: the same bytes under another label do not open.
/// assert!(key.open(b"session key v1 kid=2", &sealed).is_err());
/// assert_eq!(format!("{key:?}"), "SealingKey(<redacted>)");
/// # Ok::<(), portcullis_token::AuthError>(())
/// ```
#[derive(Clone)]
pub struct SealingKey(Arc<LessSafeKey>);

impl SealingKey {
    /// A key from exactly 32 bytes.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuthError> {
        if bytes.len() != 32 {
            return Err(AuthError::Config(format!(
                "a sealing key is exactly 32 bytes (64 hex digits), not {}",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| AuthError::Crypto("AES-256-GCM refused the key".into()))?;
        Ok(SealingKey(Arc::new(LessSafeKey::new(key))))
    }

    /// A key from 64 hex digits (surrounding whitespace ignored), as kept in an environment
    /// variable or a file (`openssl rand -hex 32`).
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] if it is not hex or not 32 bytes (the message never shows it).
    pub fn from_hex(text: &str) -> Result<Self, AuthError> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| AuthError::Config("the sealing key is not hex".into()))?;
        Self::from_bytes(&bytes)
    }

    /// The key in `file` (64 hex digits).
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] if the file cannot be read or does not hold a key.
    pub fn from_file(file: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| AuthError::Config(format!("sealing key file {}: {e}", file.display())))?;
        Self::from_hex(&text)
            .map_err(|e| AuthError::Config(format!("sealing key file {}: {e}", file.display())))
    }

    /// The key in environment variable `name` (64 hex digits).
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] if it is unset or does not hold a key.
    pub fn from_env(name: &str) -> Result<Self, AuthError> {
        let text = std::env::var(name)
            .map_err(|_| AuthError::Config(format!("environment variable `{name}` is not set")))?;
        Self::from_hex(&text).map_err(|e| AuthError::Config(format!("`{name}`: {e}")))
    }

    /// Encrypts `plain` under a fresh random nonce, bound to `context` (associated data:
    /// what the secret is and whose), which [`open`](Self::open) must be given again.
    ///
    /// # Errors
    ///
    /// [`AuthError::Crypto`] if the random source or the cipher fails.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, AuthError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| AuthError::Crypto("the system random source failed".into()))?;
        let mut body = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut body,
            )
            .map_err(|_| AuthError::Crypto("sealing failed".into()))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + body.len());
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Decrypts what [`seal`](Self::seal) made under this key for `context`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Crypto`] if it was sealed under another key or for another context, was
    /// altered, or is not sealed at all.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        let refused = || {
            AuthError::Crypto(
                "a sealed secret does not open: sealed under another key or for another \
                 purpose, or altered"
                    .into(),
            )
        };
        let (format, rest) = sealed.split_first().ok_or_else(refused)?;
        if *format != FORMAT_V1 || sealed.len() < MIN_SEALED {
            return Err(refused());
        }
        let (nonce, body) = rest.split_at_checked(NONCE_LEN).ok_or_else(refused)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(context), &mut body)
            .map_err(|_| refused())?;
        Ok(plain.to_vec())
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_bound_to_key_and_context_and_detects_tampering() {
        let key = SealingKey::from_bytes(&[7; 32]).unwrap();
        let sealed = key.seal(b"ctx", b"0123456789abcdef").unwrap();
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 16 + 16);
        assert!(!sealed.windows(16).any(|w| w == b"0123456789abcdef"));
        assert_ne!(sealed, key.seal(b"ctx", b"0123456789abcdef").unwrap());
        assert_eq!(key.open(b"ctx", &sealed).unwrap(), b"0123456789abcdef");
        assert!(key.open(b"other", &sealed).is_err());
        let other = SealingKey::from_bytes(&[8; 32]).unwrap();
        assert!(other.open(b"ctx", &sealed).is_err());
        for at in [0, 1, 13, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(key.open(b"ctx", &bad).is_err(), "byte {at}");
        }
        for short in [0, 1, MIN_SEALED - 1] {
            assert!(key.open(b"ctx", sealed.get(..short).unwrap()).is_err());
        }
    }

    #[test]
    fn keys_are_32_bytes_of_hex_and_never_shown() {
        assert!(SealingKey::from_bytes(&[1; 31]).is_err());
        assert!(SealingKey::from_hex("zz").is_err());
        let secret = "ab".repeat(32);
        let key = SealingKey::from_hex(&format!(" {secret}\n")).unwrap();
        assert!(!format!("{key:?}").contains("ab"));
        let missing = SealingKey::from_env("PORTCULLIS_TOKEN_TEST_NO_SUCH_VARIABLE").unwrap_err();
        assert!(missing.to_string().contains("not set"));
    }
}
