//! Where [`TotpFactor`](crate::TotpFactor) counts attempts against its wrong-code limit:
//! in the process ([`MemoryTotpAttempts`], the default), or in a store every instance of a
//! service shares (`PostgresTotpAttempts`, feature `postgres`), so N instances allow the
//! guesses of one, not N times as many.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::ApprovalError;

/// Attempts at TOTP codes, per user, within a sliding window. Async, object safe.
///
/// An attempt is counted *before* its code is checked ([`begin`](Self::begin)), in one
/// atomic step with the check against the limit, and handed back
/// ([`release`](Self::release)) when the code turns out not to be a wrong guess. So the
/// limit holds however many codes arrive at once, on however many instances: of `max + k`
/// concurrent wrong codes for one user, at most `max` are checked.
#[async_trait]
pub trait TotpAttempts: Send + Sync + fmt::Debug {
    /// Counts an attempt of `user` at `now` (Unix seconds) iff fewer than `max` are counted
    /// after `now - window`, as one atomic operation: `Ok(None)` if it was counted (the
    /// code may be checked), `Ok(Some(seconds))` if the user is over the limit and for how
    /// long still. Attempts at or before `now - window` no longer count and may be dropped.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`] if the store cannot answer: the code must then be refused.
    async fn begin(
        &self,
        user: &str,
        now: u64,
        max: usize,
        window: u64,
    ) -> Result<Option<u64>, ApprovalError>;

    /// Takes back one attempt of `user` counted at `at` by [`begin`](Self::begin): its code
    /// was right, malformed or replayed — not a guess that failed.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`]; the attempt then keeps counting until the window passes.
    async fn release(&self, user: &str, at: u64) -> Result<(), ApprovalError>;
}

/// Seconds until `user` may try again: the `max`th newest attempt leaves the window then.
/// `recent` is oldest first and holds at least `max` attempts.
fn wait(recent: &[u64], max: usize, now: u64, window: u64) -> Option<u64> {
    let index = recent.len().checked_sub(max)?;
    recent
        .get(index)
        .map(|oldest| oldest.saturating_add(window).saturating_sub(now).max(1))
}

/// The most users whose attempts are remembered in memory; beyond it, those whose newest
/// attempt is oldest are forgotten first (a flood of user names cannot grow memory without
/// bound).
const MAX_USERS: usize = 100_000;

/// [`TotpAttempts`] in this process: each instance of a service counts its own.
#[derive(Debug, Default)]
pub struct MemoryTotpAttempts {
    /// Per user, when their counted attempts came (Unix seconds), oldest first.
    attempts: Mutex<HashMap<String, VecDeque<u64>>>,
}

impl MemoryTotpAttempts {
    /// No attempts counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<u64>>> {
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl TotpAttempts for MemoryTotpAttempts {
    async fn begin(
        &self,
        user: &str,
        now: u64,
        max: usize,
        window: u64,
    ) -> Result<Option<u64>, ApprovalError> {
        let mut all = self.attempts();
        if all.len() >= MAX_USERS && !all.contains_key(user) {
            all.retain(|_, times| times.back().is_some_and(|at| at + window > now));
            if all.len() >= MAX_USERS {
                let stalest = all
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied().unwrap_or(0))
                    .map(|(name, _)| name.clone());
                if let Some(name) = stalest {
                    all.remove(&name);
                }
            }
        }
        let recent = all.entry(user.to_owned()).or_default();
        while recent.front().is_some_and(|at| at + window <= now) {
            recent.pop_front();
        }
        if recent.len() >= max {
            let times: Vec<u64> = recent.iter().copied().collect();
            return Ok(Some(wait(&times, max, now, window).unwrap_or(1)));
        }
        recent.push_back(now);
        Ok(None)
    }

    async fn release(&self, user: &str, at: u64) -> Result<(), ApprovalError> {
        let mut all = self.attempts();
        if let Some(recent) = all.get_mut(user)
            && let Some(index) = recent.iter().rposition(|t| *t == at)
        {
            recent.remove(index);
        }
        Ok(())
    }
}

#[cfg(feature = "postgres")]
pub use postgres::PostgresTotpAttempts;

#[cfg(feature = "postgres")]
mod postgres {
    use async_trait::async_trait;

    use super::{TotpAttempts, wait};
    use crate::ApprovalError;

    const MIGRATIONS: &[(i64, &str)] = &[(
        1,
        include_str!("../../migrations/postgres_totp_attempts_0001.sql"),
    )];
    /// Concurrent first starts take turns at migrating.
    const MIGRATION_LOCK: i64 = 7_283_901_234_567_035;

    /// [`TotpAttempts`] in a PostgreSQL table every instance shares, for
    /// [`TotpFactor::with_attempt_store`](crate::TotpFactor::with_attempt_store): five wrong
    /// codes of a user in five minutes lock them out of every instance, not of one. A user's
    /// attempts are one row (user names kept as their SHA-256): counting one is a single
    /// upsert that appends it only while fewer than the limit are in the window, so the limit
    /// holds under any number of concurrent codes. Attempts older than the window are dropped
    /// as new ones come, and rows whose newest attempt is that old are deleted.
    #[derive(Debug, Clone)]
    pub struct PostgresTotpAttempts {
        pool: sqlx::PgPool,
    }

    fn user_hash(user: &str) -> String {
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            user.as_bytes(),
        ))
    }

    fn secs(at: u64) -> i64 {
        i64::try_from(at).unwrap_or(i64::MAX)
    }

    impl PostgresTotpAttempts {
        /// Counts in `pool`'s database, making the table if needed.
        ///
        /// # Errors
        ///
        /// [`ApprovalError::Store`] if the migration fails.
        pub async fn from_pool(pool: sqlx::PgPool) -> Result<Self, ApprovalError> {
            portcullis_sql::postgres::migrate(
                &pool,
                "portcullis_totp_attempt_schema",
                Some(MIGRATION_LOCK),
                MIGRATIONS,
            )
            .await?;
            Ok(PostgresTotpAttempts { pool })
        }
    }

    #[async_trait]
    impl TotpAttempts for PostgresTotpAttempts {
        async fn begin(
            &self,
            user: &str,
            now: u64,
            max: usize,
            window: u64,
        ) -> Result<Option<u64>, ApprovalError> {
            let hash = user_hash(user);
            let cut = secs(now.saturating_sub(window));
            let max_count = i64::try_from(max).unwrap_or(i64::MAX);
            // One statement: the row lock serialises concurrent attempts of one user, and
            // the attempt is appended only while fewer than `max` are in the window.
            let counted: Option<i32> = sqlx::query_scalar(
                "INSERT INTO portcullis_totp_attempts AS t (user_hash, attempts, last_at) \
                 VALUES ($1, ARRAY[$2::BIGINT], $2) \
                 ON CONFLICT (user_hash) DO UPDATE SET \
                   attempts = ARRAY(SELECT a FROM unnest(t.attempts) AS a WHERE a > $3 ORDER BY a) \
                              || $2::BIGINT, \
                   last_at = GREATEST(t.last_at, $2) \
                 WHERE (SELECT count(*) FROM unnest(t.attempts) AS a WHERE a > $3) < $4 \
                 RETURNING 1",
            )
            .bind(&hash)
            .bind(secs(now))
            .bind(cut)
            .bind(max_count)
            .fetch_optional(&self.pool)
            .await?;
            sqlx::query("DELETE FROM portcullis_totp_attempts WHERE last_at <= $1")
                .bind(cut)
                .execute(&self.pool)
                .await?;
            if counted.is_some() {
                return Ok(None);
            }
            let stored: Option<Vec<i64>> = sqlx::query_scalar(
                "SELECT ARRAY(SELECT a FROM unnest(attempts) AS a WHERE a > $2 ORDER BY a) \
                 FROM portcullis_totp_attempts WHERE user_hash = $1",
            )
            .bind(&hash)
            .bind(cut)
            .fetch_optional(&self.pool)
            .await?;
            let recent: Vec<u64> = stored
                .unwrap_or_default()
                .into_iter()
                .map(i64::unsigned_abs)
                .collect();
            // Refused either way; the wait is only what the message says.
            Ok(Some(wait(&recent, max, now, window).unwrap_or(1)))
        }

        async fn release(&self, user: &str, at: u64) -> Result<(), ApprovalError> {
            sqlx::query(
                "UPDATE portcullis_totp_attempts SET attempts = \
                   attempts[:array_position(attempts, $2::BIGINT) - 1] \
                   || attempts[array_position(attempts, $2::BIGINT) + 1:] \
                 WHERE user_hash = $1 AND array_position(attempts, $2::BIGINT) IS NOT NULL",
            )
            .bind(user_hash(user))
            .bind(secs(at))
            .execute(&self.pool)
            .await?;
            Ok(())
        }
    }
}
