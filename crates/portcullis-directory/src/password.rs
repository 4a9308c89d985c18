//! Passwords in memory (redacted, compared only through hashes) and PBKDF2 password hashes.

use std::fmt;
use std::num::NonZeroU32;

use aws_lc_rs::pbkdf2;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::DirectoryError;

/// The longest password accepted, in bytes: longer input is refused before hashing, so a
/// request cannot make the server run PBKDF2 over megabytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// A password as typed by a user. `Debug` never prints it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    ///
    /// # Errors
    ///
    /// [`DirectoryError::InvalidInput`] if it is empty, longer than [`MAX_PASSWORD_LEN`]
    /// bytes, or contains a NUL character (LDAP and many stores truncate at NUL).
    pub fn new(password: impl Into<String>) -> Result<Self, DirectoryError> {
        let password = password.into();
        let invalid = |reason: &str| DirectoryError::InvalidInput {
            what: "password",
            reason: reason.to_owned(),
        };
        if password.is_empty() {
            return Err(invalid("it is empty"));
        }
        if password.len() > MAX_PASSWORD_LEN {
            return Err(invalid(&format!("longer than {MAX_PASSWORD_LEN} bytes")));
        }
        if password.contains('\0') {
            return Err(invalid("it contains a NUL character"));
        }
        Ok(Password(password))
    }

    /// The password itself, for a directory that must send it (an LDAP bind).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

const ALGORITHM: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256.
const DEFAULT_ITERATIONS: u32 = 600_000;
const MIN_ITERATIONS: u32 = 10_000;

/// A salted PBKDF2-HMAC-SHA256 password hash, written
/// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`.
///
/// ```
/// use portcullis_directory::{Password, PasswordHash};
/// let hash = PasswordHash::create_with_iterations(&Password::new("hunter2")?, 10_000)?;
/// let stored = hash.to_string();
/// let parsed: PasswordHash = stored.parse()?;
/// assert!(parsed.verify(&Password::new("hunter2")?));
/// assert!(!parsed.verify(&Password::new("hunter3")?));
/// # Ok::<(), portcullis_directory::DirectoryError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: NonZeroU32,
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt and 600,000 iterations.
    ///
    /// # Errors
    ///
    /// [`DirectoryError::Unavailable`] if the system random source fails.
    pub fn create(password: &Password) -> Result<Self, DirectoryError> {
        Self::create_with_iterations(password, DEFAULT_ITERATIONS)
    }

    /// As [`PasswordHash::create`] with a chosen iteration count (at least 10,000).
    ///
    /// # Errors
    ///
    /// [`DirectoryError::Config`] below 10,000 iterations; [`DirectoryError::Unavailable`]
    /// if the system random source fails.
    pub fn create_with_iterations(
        password: &Password,
        iterations: u32,
    ) -> Result<Self, DirectoryError> {
        let iterations = checked_iterations(iterations)?;
        let mut salt = [0u8; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| DirectoryError::Unavailable("the system random source failed".into()))?;
        let mut hash = [0u8; HASH_LEN];
        pbkdf2::derive(
            ALGORITHM,
            iterations,
            &salt,
            password.0.as_bytes(),
            &mut hash,
        );
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    /// The PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &Password) -> bool {
        pbkdf2::verify(
            ALGORITHM,
            self.iterations,
            &self.salt,
            password.0.as_bytes(),
            &self.hash,
        )
        .is_ok()
    }
}

fn checked_iterations(iterations: u32) -> Result<NonZeroU32, DirectoryError> {
    NonZeroU32::new(iterations)
        .filter(|n| n.get() >= MIN_ITERATIONS)
        .ok_or_else(|| {
            DirectoryError::Config(format!(
                "a password hash needs at least {MIN_ITERATIONS} iterations, not {iterations}"
            ))
        })
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pbkdf2-sha256${}${}${}",
            self.iterations,
            hex::encode(self.salt),
            hex::encode(self.hash)
        )
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for PasswordHash {
    type Err = DirectoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            DirectoryError::Config(format!(
                "password hash: {why} (expected pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX)"
            ))
        };
        let mut parts = s.split('$');
        let (Some("pbkdf2-sha256"), Some(iterations), Some(salt_hex), Some(hash_hex), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("wrong scheme or number of fields"));
        };
        let iterations = checked_iterations(
            iterations
                .parse()
                .map_err(|_| bad("iterations is not a number"))?,
        )?;
        let mut salt = [0u8; SALT_LEN];
        hex::decode_to_slice(salt_hex, &mut salt)
            .map_err(|_| bad("salt is not 16 bytes of hex"))?;
        let mut hash = [0u8; HASH_LEN];
        hex::decode_to_slice(hash_hex, &mut hash)
            .map_err(|_| bad("hash is not 32 bytes of hex"))?;
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }
}

impl<'de> serde::Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for PasswordHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let p = Password::new("s3cret").unwrap();
        assert!(!format!("{p:?}").contains("s3cret"));
        let h = PasswordHash::create_with_iterations(&p, 10_000).unwrap();
        assert!(!format!("{h:?}").contains(&hex::encode(h.hash)));
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(Password::new("").is_err());
        assert!(Password::new("a\0b").is_err());
        assert!(Password::new("x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
        for bad in [
            "",
            "md5$1$00$00",
            "pbkdf2-sha256$9$00000000000000000000000000000000$0000000000000000000000000000000000000000000000000000000000000000",
            "pbkdf2-sha256$10000$zz$00",
            "pbkdf2-sha256$10000$00000000000000000000000000000000$00$extra",
        ] {
            assert!(bad.parse::<PasswordHash>().is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips_and_salts_differ() {
        let p = Password::new("pw").unwrap();
        let a = PasswordHash::create_with_iterations(&p, 10_000).unwrap();
        let b = PasswordHash::create_with_iterations(&p, 10_000).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<PasswordHash>().unwrap(), a);
        assert!(b.verify(&p));
    }
}
