//! [`TotpFactor`]: checks typed codes against confirmed secrets, claims each code's step in a
//! [`TotpStore`] so it is accepted once, and runs the enrollment of new secrets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use portcullis_core::{Clock, SystemClock};

use super::{
    MemoryTotpAttempts, TotpAttempts, TotpConfig, TotpEnrollment, TotpSecret, TotpSecretKey, hotp,
    otpauth_uri,
};
use crate::{
    ApprovalError, Confirmation, FactorOutcome, MemoryApprovalStore, SecondFactor,
    TotpEnrollmentState, TotpError, TotpStore,
};

/// A [`SecondFactor`] checking TOTP codes typed by the approver.
///
/// Replay protection goes through a [`TotpStore`]: a code counts only if the store atomically
/// records its time step as the user's newest, so a code (or an older one) is refused after
/// it was used — by any instance sharing the store, and after a restart when the store is
/// durable (`SqliteApprovalStore`, `PostgresApprovalStore`). A store error refuses the code.
///
/// Secrets come from the store, sealed under a [`TotpSecretKey`] and enrolled by the user
/// ([`begin_enrollment`](Self::begin_enrollment), [`confirm_enrollment`](Self::confirm_enrollment)),
/// or from configuration ([`enroll`](Self::enroll)), which takes precedence.
#[derive(Debug)]
pub struct TotpFactor {
    config: TotpConfig,
    store: Arc<dyn TotpStore>,
    key: TotpSecretKey,
    /// Secrets given in configuration; always confirmed, never in the store.
    configured: HashMap<String, TotpSecret>,
    clock: Arc<dyn Clock>,
    limit: AttemptLimit,
    /// Where attempts are counted against the limit: this process, or a shared store.
    attempts: Arc<dyn TotpAttempts>,
}

/// How many wrong codes a user may send in a window before every code is refused.
#[derive(Debug, Clone, Copy)]
struct AttemptLimit {
    max: usize,
    window: Duration,
}

/// Five wrong codes in five minutes: with one step of skew (three codes valid at a time)
/// a guesser has about one chance in 67,000 per window.
const DEFAULT_LIMIT: AttemptLimit = AttemptLimit {
    max: 5,
    window: Duration::from_secs(300),
};

/// Which secret a user's code is checked against.
enum Found {
    Confirmed(TotpSecret),
    Pending(TotpSecret, crate::SealedTotpSecret),
}

impl TotpFactor {
    /// A factor with these parameters over a private in-memory store (under a random key):
    /// codes are refused once used only until the process ends. For tests and
    /// configured secrets ([`enroll`](Self::enroll)); services use
    /// [`with_store`](Self::with_store) and a durable store.
    ///
    /// # Errors
    ///
    /// As [`TotpConfig::validate`]; [`ApprovalError::Crypto`] if the random source fails.
    pub fn new(config: TotpConfig) -> Result<Self, ApprovalError> {
        let (key, _) = TotpSecretKey::generate()?;
        Self::with_store(config, Arc::new(MemoryApprovalStore::new()), key)
    }

    /// A factor keeping used steps and enrolled secrets in `store`, secrets sealed under
    /// `key`. Every instance sharing the store must use the same key.
    ///
    /// # Errors
    ///
    /// As [`TotpConfig::validate`].
    pub fn with_store(
        config: TotpConfig,
        store: Arc<dyn TotpStore>,
        key: TotpSecretKey,
    ) -> Result<Self, ApprovalError> {
        config.validate()?;
        Ok(TotpFactor {
            config,
            store,
            key,
            configured: HashMap::new(),
            clock: Arc::new(SystemClock),
            limit: DEFAULT_LIMIT,
            attempts: Arc::new(MemoryTotpAttempts::new()),
        })
    }

    /// Refuses every code of a user who sent `max` wrong codes within
    /// `window`, until the oldest of them is `window` old (default: 5 in 5 minutes). Counted
    /// per process, unless [`with_attempt_store`](Self::with_attempt_store) names a store
    /// the instances of a service share.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Config`] for `max` of zero or a window under a second.
    pub fn with_attempt_limit(
        mut self,
        max: usize,
        window: Duration,
    ) -> Result<Self, ApprovalError> {
        if max == 0 || window.as_secs() == 0 {
            return Err(ApprovalError::Config(
                "a TOTP attempt limit allows at least one code per window of at least 1 s".into(),
            ));
        }
        self.limit = AttemptLimit { max, window };
        Ok(self)
    }

    fn now_secs(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Counts attempts against the limit in `store`, shared by every instance of the
    /// service, instead of in this process: the limit then holds for the service as a
    /// whole. If the store cannot answer, codes are refused ([`ApprovalError::Store`]).
    #[must_use]
    pub fn with_attempt_store(mut self, store: Arc<dyn TotpAttempts>) -> Self {
        self.attempts = store;
        self
    }

    /// Counts an attempt of `user` before their code is checked: its time, or why none may
    /// be made ([`TotpError::TooManyAttempts`], or the store's error — refused either way).
    async fn begin_attempt(&self, user: &str) -> Result<u64, ApprovalError> {
        let now = self.now_secs();
        let window = self.limit.window.as_secs();
        match self
            .attempts
            .begin(user, now, self.limit.max, window)
            .await?
        {
            None => Ok(now),
            Some(wait) => {
                tracing::warn!(user, "TOTP code refused: too many wrong codes lately");
                Err(TotpError::TooManyAttempts(wait).into())
            }
        }
    }

    /// Only wrong codes are guesses; the attempt of any other outcome (right, malformed,
    /// replayed, a store error) is handed back.
    async fn end_attempt(&self, user: &str, at: u64, outcome: &Result<(), ApprovalError>) {
        if let Err(ApprovalError::Totp(TotpError::WrongCode)) = outcome {
            return;
        }
        if let Err(error) = self.attempts.release(user, at).await {
            tracing::warn!(user, %error, "a TOTP attempt could not be handed back; it counts until its window passes");
        }
    }

    /// Uses `clock` for the current step.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Enrols `user` with `secret` from configuration: confirmed at once, kept in memory
    /// only, and preferred over any secret in the store. Used steps still go to the store.
    #[must_use]
    pub fn enroll(mut self, user: impl Into<String>, secret: TotpSecret) -> Self {
        self.configured.insert(user.into(), secret);
        self
    }

    /// The parameters.
    pub fn config(&self) -> &TotpConfig {
        &self.config
    }

    fn well_formed(&self, code: &str) -> Result<(), ApprovalError> {
        if code.len() != self.config.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TotpError::Malformed(self.config.digits).into());
        }
        Ok(())
    }

    /// The newest step in the skew window whose code is `code`. Every candidate is computed
    /// and compared in constant time.
    fn matching_step(&self, secret: &TotpSecret, code: &str) -> Option<u64> {
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let current = now / self.config.step.as_secs().max(1);
        let skew = u64::from(self.config.skew);
        let mut matched = None;
        for step in current.saturating_sub(skew)..=current.saturating_add(skew) {
            let expected = hotp(secret, self.config.algorithm, self.config.digits, step);
            if bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_bytes(),
                code.as_bytes(),
            )) {
                matched = Some(step);
            }
        }
        matched
    }

    /// The user's secret: configured, or sealed in the store.
    async fn find(&self, user: &str) -> Result<Option<Found>, ApprovalError> {
        if let Some(secret) = self.configured.get(user) {
            return Ok(Some(Found::Confirmed(secret.clone())));
        }
        let Some(stored) = self.store.secret(user).await? else {
            return Ok(None);
        };
        let secret = self.key.open(user, &stored.sealed)?;
        Ok(Some(match stored.state {
            TotpEnrollmentState::Confirmed => Found::Confirmed(secret),
            TotpEnrollmentState::Pending => Found::Pending(secret, stored.sealed),
        }))
    }

    /// Claims `step` for `user` in the store: refused if it or a newer one was used.
    async fn claim(&self, user: &str, step: u64) -> Result<(), ApprovalError> {
        if self.store.claim_step(user, step).await? {
            Ok(())
        } else {
            Err(TotpError::Replayed.into())
        }
    }

    /// Checks `code` for `user` now against their confirmed secret, consuming its step on
    /// success. A pending enrollment never confirms anything.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Totp`] saying why the code was refused (malformed, no confirmed
    /// secret, wrong, already used); [`ApprovalError::Store`] or [`ApprovalError::Crypto`]
    /// if the secret or the used steps cannot be read — the code is refused then too.
    pub async fn check(&self, user: &str, code: &str) -> Result<(), ApprovalError> {
        let at = self.begin_attempt(user).await?;
        let checked = self.check_unlimited(user, code).await;
        self.end_attempt(user, at, &checked).await;
        checked
    }

    async fn check_unlimited(&self, user: &str, code: &str) -> Result<(), ApprovalError> {
        self.well_formed(code)?;
        let Some(Found::Confirmed(secret)) = self.find(user).await? else {
            return Err(TotpError::NotEnrolled(user.to_owned()).into());
        };
        let step = self
            .matching_step(&secret, code)
            .ok_or(TotpError::WrongCode)?;
        self.claim(user, step).await
    }

    /// Starts enrolling `user`: generates a fresh secret (as long as the HMAC's output),
    /// stores it sealed and *pending* — replacing an earlier pending one — and returns the
    /// `otpauth://` URI naming `issuer`, once. The secret approves nothing until
    /// [`confirm_enrollment`](Self::confirm_enrollment).
    ///
    /// # Errors
    ///
    /// [`TotpError::AlreadyEnrolled`] if the user has a confirmed or configured secret
    /// (remove it first: re-enrolling is explicit); [`TotpError::InvalidLabel`];
    /// [`ApprovalError::Store`] or [`ApprovalError::Crypto`].
    pub async fn begin_enrollment(
        &self,
        user: &str,
        issuer: &str,
    ) -> Result<TotpEnrollment, ApprovalError> {
        if self.configured.contains_key(user) {
            return Err(TotpError::AlreadyEnrolled(user.to_owned()).into());
        }
        let secret = TotpSecret::generate_for(self.config.algorithm)?;
        let uri = otpauth_uri(issuer, user, &secret, &self.config)?;
        let sealed = self.key.seal(user, &secret)?;
        self.store.put_pending_secret(user, &sealed).await?;
        tracing::info!(user, "TOTP enrollment begun");
        Ok(TotpEnrollment { uri, secret })
    }

    /// Confirms `user`'s pending enrollment with a `code` from their app: the secret becomes
    /// the one their codes are checked against, and the code's step is claimed, so the code
    /// that confirmed cannot also approve.
    ///
    /// # Errors
    ///
    /// [`TotpError::NoPendingEnrollment`] (also when a newer enrollment replaced this one
    /// meanwhile), [`TotpError::AlreadyEnrolled`], [`TotpError::Malformed`],
    /// [`TotpError::WrongCode`], [`TotpError::Replayed`]; [`ApprovalError::Store`] or
    /// [`ApprovalError::Crypto`].
    pub async fn confirm_enrollment(&self, user: &str, code: &str) -> Result<(), ApprovalError> {
        let at = self.begin_attempt(user).await?;
        let confirmed = self.confirm_unlimited(user, code).await;
        self.end_attempt(user, at, &confirmed).await;
        confirmed
    }

    async fn confirm_unlimited(&self, user: &str, code: &str) -> Result<(), ApprovalError> {
        self.well_formed(code)?;
        let (secret, sealed) = match self.find(user).await? {
            Some(Found::Pending(secret, sealed)) => (secret, sealed),
            Some(Found::Confirmed(_)) => {
                return Err(TotpError::AlreadyEnrolled(user.to_owned()).into());
            }
            None => return Err(TotpError::NoPendingEnrollment(user.to_owned()).into()),
        };
        let step = self
            .matching_step(&secret, code)
            .ok_or(TotpError::WrongCode)?;
        // Claimed first: if confirming fails after this, the code is spent all the same.
        self.claim(user, step).await?;
        if !self.store.confirm_secret(user, &sealed).await? {
            return Err(TotpError::NoPendingEnrollment(user.to_owned()).into());
        }
        tracing::info!(user, "TOTP enrollment confirmed");
        Ok(())
    }

    /// Removes `user`'s enrolled secret from the store, pending or confirmed; `false` if
    /// there was none. A configured secret stays (it is configuration). The used steps are
    /// kept, so no code is ever accepted twice.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    pub async fn remove_enrollment(&self, user: &str) -> Result<bool, ApprovalError> {
        let removed = self.store.remove_secret(user).await?;
        if removed {
            tracing::info!(user, "TOTP enrollment removed");
        }
        Ok(removed)
    }

    /// Where `user`'s enrollment stands: `None` if they have no secret, confirmed for a
    /// configured one.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    pub async fn enrollment_state(
        &self,
        user: &str,
    ) -> Result<Option<TotpEnrollmentState>, ApprovalError> {
        if self.configured.contains_key(user) {
            return Ok(Some(TotpEnrollmentState::Confirmed));
        }
        Ok(self.store.secret(user).await?.map(|s| s.state))
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
        let user = confirmation.approver.subject();
        match self.check(user, code).await {
            Ok(()) => FactorOutcome::Allow,
            Err(ApprovalError::Totp(why)) => FactorOutcome::Error(why.to_string()),
            Err(error @ ApprovalError::Store(_)) => {
                tracing::warn!(user, %error, "TOTP store unavailable; the code is refused");
                FactorOutcome::Unavailable(error.to_string())
            }
            Err(error) => {
                tracing::warn!(user, %error, "TOTP check failed; the code is refused");
                FactorOutcome::Error(error.to_string())
            }
        }
    }
}
