//! Enrolled TOTP secrets at rest: AES-256-GCM under a key the embedder keeps, with the
//! user's name as associated data, so a sealed secret opens only for the user it was sealed
//! for, and a store (or its backups) never holds a usable secret.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use super::TotpSecret;
use crate::ApprovalError;

/// The first byte of every sealed secret: the format (AES-256-GCM, 96-bit random nonce).
const FORMAT_V1: u8 = 1;

/// Associated data before the user's name: says what the ciphertext is, so it cannot be
/// passed off as anything else sealed under the same key.
const AAD_PREFIX: &[u8] = b"portcullis-approval totp-secret v1\0";

/// The smallest sealed secret: format byte, nonce, a 16-byte secret and the 16-byte tag.
const MIN_SEALED: usize = 1 + NONCE_LEN + 16 + 16;

fn aad(user: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + user.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(user.as_bytes());
    aad
}

/// The 32-byte key enrolled TOTP secrets are encrypted under (AES-256-GCM). Keep it out of
/// the database — in a secret manager or an environment variable — so the store alone never
/// yields a usable secret. `Debug` never shows it.
#[derive(Clone)]
pub struct TotpSecretKey(Arc<LessSafeKey>);

impl TotpSecretKey {
    /// A key from exactly 32 bytes.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Config`] for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApprovalError> {
        if bytes.len() != 32 {
            return Err(ApprovalError::Config(format!(
                "the TOTP secret key is exactly 32 bytes (64 hex digits), not {}",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| ApprovalError::Crypto("AES-256-GCM refused the key".into()))?;
        Ok(TotpSecretKey(Arc::new(LessSafeKey::new(key))))
    }

    /// A key from 64 hex digits, as kept in an environment variable.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Config`] if it is not hex or not 32 bytes.
    pub fn from_hex(text: &str) -> Result<Self, ApprovalError> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| ApprovalError::Config("the TOTP secret key is not hex".into()))?;
        Self::from_bytes(&bytes)
    }

    /// A fresh random key, returned with its hex form so it can be kept.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Crypto`] if the random source fails.
    pub fn generate() -> Result<(Self, String), ApprovalError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ApprovalError::Crypto("the system random source failed".into()))?;
        Ok((Self::from_bytes(&bytes)?, hex::encode(bytes)))
    }

    /// Encrypts `secret` for `user` under a fresh random nonce.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Crypto`] if the random source or the cipher fails.
    pub fn seal(&self, user: &str, secret: &TotpSecret) -> Result<SealedTotpSecret, ApprovalError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| ApprovalError::Crypto("the system random source failed".into()))?;
        let mut body = secret.expose().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(user)),
                &mut body,
            )
            .map_err(|_| ApprovalError::Crypto("sealing the TOTP secret failed".into()))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + body.len());
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(SealedTotpSecret(sealed))
    }

    /// Decrypts `sealed`, which must have been sealed for `user` under this key.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Crypto`] if it was sealed under another key or for another user, was
    /// altered, or is not a sealed secret at all.
    pub fn open(&self, user: &str, sealed: &SealedTotpSecret) -> Result<TotpSecret, ApprovalError> {
        let refused = || {
            ApprovalError::Crypto(format!(
                "the stored TOTP secret of `{user}` does not open: sealed under another key, \
                 for another user, or altered"
            ))
        };
        let (format, rest) = sealed.0.split_first().ok_or_else(refused)?;
        if *format != FORMAT_V1 || sealed.0.len() < MIN_SEALED {
            return Err(refused());
        }
        let (nonce, body) = rest.split_at_checked(NONCE_LEN).ok_or_else(refused)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad(user)), &mut body)
            .map_err(|_| refused())?;
        TotpSecret::new(plain.to_vec())
    }
}

impl fmt::Debug for TotpSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecretKey(<redacted>)")
    }
}

/// A TOTP secret as a [`TotpStore`](crate::TotpStore) keeps it: a format byte, the random
/// nonce, the AES-256-GCM ciphertext and its tag. Useless without the [`TotpSecretKey`];
/// opens only for the user it was sealed for.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedTotpSecret(Vec<u8>);

impl SealedTotpSecret {
    /// Wraps bytes read back from a store (checked when opened).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        SealedTotpSecret(bytes.into())
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SealedTotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedTotpSecret(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_for_one_user_under_one_key() {
        let (key, hex) = TotpSecretKey::generate().unwrap();
        let secret = TotpSecret::new(b"12345678901234567890".to_vec()).unwrap();
        let sealed = key.seal("bob", &secret).unwrap();
        assert_eq!(sealed.as_bytes().len(), 1 + NONCE_LEN + 20 + 16);
        assert!(!sealed.as_bytes().windows(20).any(|w| w == secret.expose()));
        let again = key.seal("bob", &secret).unwrap();
        assert_ne!(sealed, again, "a fresh nonce each time");
        assert_eq!(key.open("bob", &sealed).unwrap().expose(), secret.expose());
        assert!(key.open("alice", &sealed).is_err(), "bound to the user");
        let (other, _) = TotpSecretKey::generate().unwrap();
        assert!(other.open("bob", &sealed).is_err(), "bound to the key");
        let same = TotpSecretKey::from_hex(&hex).unwrap();
        assert!(same.open("bob", &sealed).is_ok());
        for mutate in [0, 1, 13, sealed.as_bytes().len() - 1] {
            let mut bytes = sealed.as_bytes().to_vec();
            bytes[mutate] ^= 1;
            assert!(
                key.open("bob", &SealedTotpSecret::from_bytes(bytes))
                    .is_err(),
                "byte {mutate}"
            );
        }
        for short in [0, 1, MIN_SEALED - 1] {
            let bytes = sealed.as_bytes()[..short].to_vec();
            assert!(
                key.open("bob", &SealedTotpSecret::from_bytes(bytes))
                    .is_err()
            );
        }
    }

    #[test]
    fn keys_are_32_bytes_and_redacted() {
        assert!(TotpSecretKey::from_bytes(&[1; 31]).is_err());
        assert!(TotpSecretKey::from_bytes(&[1; 33]).is_err());
        assert!(TotpSecretKey::from_hex("zz").is_err());
        let key = TotpSecretKey::from_bytes(&[0xab; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "TotpSecretKey(<redacted>)");
    }
}
