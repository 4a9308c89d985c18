//! TOTP (RFC 6238) with `ring` HMAC: SHA-1/256/512, 6–8 digits, configurable step and skew
//! window, and replay protection through a [`TotpStore`](crate::TotpStore) (a code is
//! accepted once per user per step, and never a step older than one already used — also
//! after a restart, with a durable store). Secrets are enrolled by the user
//! ([`TotpFactor::begin_enrollment`], [`TotpFactor::confirm_enrollment`]) and kept sealed
//! under a [`TotpSecretKey`], or given in configuration ([`TotpFactor::enroll`]).

mod attempts;
mod enrollment;
mod factor;
mod key;

use std::fmt;
use std::time::Duration;

use aws_lc_rs::hmac;

#[cfg(feature = "postgres")]
pub use attempts::PostgresTotpAttempts;
pub use attempts::{MemoryTotpAttempts, TotpAttempts};
pub use enrollment::{TotpEnrollment, otpauth_uri};
pub use factor::TotpFactor;
pub use key::{SealedTotpSecret, TotpSecretKey};

use crate::ApprovalError;

/// The HMAC behind the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1, what authenticator apps default to.
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpAlgorithm {
    /// Its name in an `otpauth://` URI: `SHA1`, `SHA256` or `SHA512`.
    pub fn otpauth_name(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }

    /// The length of a generated secret: the HMAC's output size (RFC 6238's test keys).
    fn secret_len(self) -> usize {
        match self {
            TotpAlgorithm::Sha1 => 20,
            TotpAlgorithm::Sha256 => 32,
            TotpAlgorithm::Sha512 => 64,
        }
    }
}

/// TOTP parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TotpConfig {
    /// The HMAC.
    pub algorithm: TotpAlgorithm,
    /// Code length, 6 to 8.
    pub digits: u32,
    /// The time step (30 s usually).
    pub step: Duration,
    /// How many steps before or after the current one are accepted (clock skew), at most 10.
    pub skew: u32,
}

/// Setters, so that options built outside this crate keep compiling as fields are added
/// (the struct is `#[non_exhaustive]`): `TotpConfig::default().with_…(…)`.
impl TotpConfig {
    /// Sets [`algorithm`](Self::algorithm).
    #[must_use]
    pub fn with_algorithm(mut self, algorithm: TotpAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Sets [`digits`](Self::digits).
    #[must_use]
    pub fn with_digits(mut self, digits: u32) -> Self {
        self.digits = digits;
        self
    }

    /// Sets [`step`](Self::step).
    #[must_use]
    pub fn with_step(mut self, step: Duration) -> Self {
        self.step = step;
        self
    }

    /// Sets [`skew`](Self::skew).
    #[must_use]
    pub fn with_skew(mut self, skew: u32) -> Self {
        self.skew = skew;
        self
    }
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            step: Duration::from_secs(30),
            skew: 1,
        }
    }
}

impl TotpConfig {
    /// Checks the parameters.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Config`] for digits outside 6–8, a step under a second, or a skew
    /// above 10 steps.
    pub fn validate(&self) -> Result<(), ApprovalError> {
        if !(6..=8).contains(&self.digits) {
            return Err(ApprovalError::Config(
                "TOTP codes have 6 to 8 digits".into(),
            ));
        }
        if self.step.as_secs() == 0 {
            return Err(ApprovalError::Config(
                "the TOTP step is at least 1 s".into(),
            ));
        }
        if self.skew > 10 {
            return Err(ApprovalError::Config(
                "a TOTP skew window above 10 steps accepts stale codes".into(),
            ));
        }
        Ok(())
    }
}

/// A user's TOTP secret. `Debug` never shows it.
#[derive(Clone)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// A secret of at least 16 bytes (RFC 4226 asks for 128 bits at least).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Config`] for shorter secrets.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, ApprovalError> {
        let bytes = bytes.into();
        if bytes.len() < 16 {
            return Err(ApprovalError::Config(
                "a TOTP secret has at least 16 bytes".into(),
            ));
        }
        Ok(TotpSecret(bytes))
    }

    /// A fresh random 20-byte secret (to show the user once, e.g. as an otpauth URI).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Crypto`] if the random source fails.
    pub fn generate() -> Result<Self, ApprovalError> {
        Self::generate_for(TotpAlgorithm::Sha1)
    }

    /// A fresh random secret as long as `algorithm`'s output (20, 32 or 64 bytes).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Crypto`] if the random source fails.
    pub fn generate_for(algorithm: TotpAlgorithm) -> Result<Self, ApprovalError> {
        let mut bytes = vec![0u8; algorithm.secret_len()];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| ApprovalError::Crypto("the system random source failed".into()))?;
        Ok(TotpSecret(bytes))
    }

    /// The raw secret, for enrolment. Keep it secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// The code for `counter` (RFC 4226 HOTP, with RFC 6238's algorithms).
pub fn hotp(secret: &TotpSecret, algorithm: TotpAlgorithm, digits: u32, counter: u64) -> String {
    let alg = match algorithm {
        TotpAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        TotpAlgorithm::Sha256 => hmac::HMAC_SHA256,
        TotpAlgorithm::Sha512 => hmac::HMAC_SHA512,
    };
    let tag = hmac::sign(&hmac::Key::new(alg, &secret.0), &counter.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
    let word = mac
        .get(offset..offset + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    // Digits are 6–8 by configuration; a larger count just keeps every digit of the word.
    let modulus = 10u64.checked_pow(digits).unwrap_or(u64::MAX);
    let code = u64::from(word & 0x7fff_ffff) % modulus;
    format!("{code:0width$}", width = digits as usize)
}

/// The TOTP code at `unix_seconds`.
pub fn totp(secret: &TotpSecret, config: &TotpConfig, unix_seconds: u64) -> String {
    hotp(
        secret,
        config.algorithm,
        config.digits,
        unix_seconds / config.step.as_secs().max(1),
    )
}
