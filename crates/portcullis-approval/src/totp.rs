//! TOTP (RFC 6238) with `ring` HMAC: SHA-1/256/512, 6–8 digits, configurable step and skew
//! window, and replay protection (a code is accepted once per user per step, and never a step
//! older than one already used).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use portcullis_core::{Clock, SystemClock};
use ring::hmac;

use crate::{ApprovalError, Confirmation, FactorOutcome, SecondFactor};

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

/// TOTP parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        let mut bytes = vec![0u8; 20];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
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

/// A [`SecondFactor`] checking TOTP codes typed by the approver.
#[derive(Debug)]
pub struct TotpFactor {
    config: TotpConfig,
    secrets: HashMap<String, TotpSecret>,
    /// Per user, the last step a code was accepted for.
    last_step: Mutex<HashMap<String, u64>>,
    clock: Arc<dyn Clock>,
}

impl TotpFactor {
    /// A factor with these parameters and no enrolled users.
    ///
    /// # Errors
    ///
    /// As [`TotpConfig::validate`].
    pub fn new(config: TotpConfig) -> Result<Self, ApprovalError> {
        config.validate()?;
        Ok(TotpFactor {
            config,
            secrets: HashMap::new(),
            last_step: Mutex::new(HashMap::new()),
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for the current step.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Enrols `user` with `secret`.
    #[must_use]
    pub fn enroll(mut self, user: impl Into<String>, secret: TotpSecret) -> Self {
        self.secrets.insert(user.into(), secret);
        self
    }

    /// Checks `code` for `user` now, consuming its step on success.
    ///
    /// # Errors
    ///
    /// A message saying why (wrong length, not digits, unknown user, wrong or reused code).
    pub fn check(&self, user: &str, code: &str) -> Result<(), String> {
        if code.len() != self.config.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("a code has exactly {} digits", self.config.digits));
        }
        let Some(secret) = self.secrets.get(user) else {
            return Err("no TOTP secret is enrolled for this approver".into());
        };
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let current = now / self.config.step.as_secs().max(1);
        let skew = u64::from(self.config.skew);
        let mut matched = None;
        // Every candidate is computed and compared in constant time.
        for step in current.saturating_sub(skew)..=current.saturating_add(skew) {
            let expected = hotp(secret, self.config.algorithm, self.config.digits, step);
            if bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_bytes(),
                code.as_bytes(),
            )) {
                matched = Some(step);
            }
        }
        let Some(step) = matched else {
            return Err("wrong code".into());
        };
        let mut last = self
            .last_step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.get(user).is_some_and(|used| *used >= step) {
            return Err("this code (or a newer one) was already used".into());
        }
        last.insert(user.to_owned(), step);
        Ok(())
    }
}

#[async_trait]
impl SecondFactor for TotpFactor {
    fn name(&self) -> &str {
        "totp"
    }

    async fn confirm(&self, confirmation: Confirmation<'_>) -> FactorOutcome {
        let Some(code) = confirmation.code else {
            return FactorOutcome::Error("a TOTP code is required".into());
        };
        match self.check(confirmation.approver.subject(), code) {
            Ok(()) => FactorOutcome::Allow,
            Err(why) => FactorOutcome::Error(why),
        }
    }
}
