//! [`PostgresLoginAttempts`]: password login attempts counted for every instance.

use std::time::Duration;

use crate::session::attempt_wait;
use crate::{AuthError, LoginAttempts};

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres_login_failures_0001.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres_login_failures_0002.sql"),
    ),
];
/// Concurrent first starts take turns at migrating.
const MIGRATION_LOCK: i64 = 7_283_901_234_567_034;

/// The longest a login waits for the attempt store (a connection, a row lock, the
/// statements) before it is refused with [`AuthError::Store`]: a locked table must not hold
/// logins open.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Login attempts in a PostgreSQL table every instance shares, for
/// [`PasswordLogin::with_attempt_store`](crate::PasswordLogin::with_attempt_store): five
/// failed logins of a name in five minutes lock it out of every instance, not of one.
///
/// A name's attempts are one row (names kept as their SHA-256): counting one, before its
/// password is checked, is a single upsert that appends it only while fewer than the limit
/// are in the window, so the limit holds under any number of concurrent logins on any number
/// of instances. Attempts older than the window are dropped as new ones come, and rows whose
/// newest attempt is that old are deleted. Each call waits at most a bounded time (5 s by
/// default, [`with_timeout`](Self::with_timeout)) for a connection, a lock or an answer;
/// past it the login is refused ([`AuthError::Store`]).
#[derive(Debug, Clone)]
pub struct PostgresLoginAttempts {
    pool: sqlx::PgPool,
    timeout: Duration,
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

impl PostgresLoginAttempts {
    /// Counts in `pool`'s database, making the table if needed.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`] if the migration fails.
    pub async fn from_pool(pool: sqlx::PgPool) -> Result<Self, AuthError> {
        portcullis_sql::postgres::migrate(
            &pool,
            "portcullis_login_failure_schema",
            Some(MIGRATION_LOCK),
            MIGRATIONS,
        )
        .await?;
        Ok(PostgresLoginAttempts {
            pool,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Waits at most `timeout` (at least 1 ms) for the store on each login before refusing
    /// it, instead of 5 s.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Starts a transaction whose statements and lock waits are bounded by the timeout.
    async fn begin_bounded(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, AuthError> {
        let millis = self.timeout.as_millis().clamp(1, i32::MAX as u128);
        let mut tx = self.pool.begin().await?;
        // SET cannot take parameters; the values are integers made here.
        sqlx::query(&format!("SET LOCAL lock_timeout = {millis}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("SET LOCAL statement_timeout = {millis}"))
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn count(
        &self,
        user: &str,
        now: u64,
        max: usize,
        window: u64,
    ) -> Result<Option<u64>, AuthError> {
        let hash = user_hash(user);
        let cut = secs(now.saturating_sub(window));
        let max_count = i64::try_from(max).unwrap_or(i64::MAX);
        let mut tx = self.begin_bounded().await?;
        // One statement: the row lock serialises concurrent attempts of one name, and the
        // attempt is appended only while fewer than `max` are in the window.
        let counted: Option<i32> = sqlx::query_scalar(
            "INSERT INTO portcullis_login_attempts AS t (user_hash, attempts, last_at) \
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
        .fetch_optional(&mut *tx)
        .await?;
        let refused = if counted.is_some() {
            None
        } else {
            let stored: Option<Vec<i64>> = sqlx::query_scalar(
                "SELECT ARRAY(SELECT a FROM unnest(attempts) AS a WHERE a > $2 ORDER BY a) \
                 FROM portcullis_login_attempts WHERE user_hash = $1",
            )
            .bind(&hash)
            .bind(cut)
            .fetch_optional(&mut *tx)
            .await?;
            let recent: Vec<u64> = stored
                .unwrap_or_default()
                .into_iter()
                .map(i64::unsigned_abs)
                .collect();
            // Refused either way; the wait is only what the message says.
            Some(attempt_wait(&recent, max, now, window).unwrap_or(1))
        };
        tx.commit().await?;
        Ok(refused)
    }

    /// Forgets names whose newest attempt is at or before `cut`, skipping rows other logins
    /// hold.
    async fn purge(&self, cut: i64) -> Result<(), AuthError> {
        let mut tx = self.begin_bounded().await?;
        sqlx::query(
            "DELETE FROM portcullis_login_attempts WHERE user_hash IN (\
               SELECT user_hash FROM portcullis_login_attempts WHERE last_at <= $1 \
               FOR UPDATE SKIP LOCKED)",
        )
        .bind(cut)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn hand_back(&self, user: &str, at: u64) -> Result<(), AuthError> {
        let mut tx = self.begin_bounded().await?;
        sqlx::query(
            "UPDATE portcullis_login_attempts SET attempts = \
               attempts[:array_position(attempts, $2::BIGINT) - 1] \
               || attempts[array_position(attempts, $2::BIGINT) + 1:] \
             WHERE user_hash = $1 AND array_position(attempts, $2::BIGINT) IS NOT NULL",
        )
        .bind(user_hash(user))
        .bind(secs(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `work`, or [`AuthError::Store`] once the timeout has passed (a connection not to be
    /// had, a lock held, a server not answering).
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(AuthError::Store(format!(
                    "the login attempt store did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            })
    }
}

#[async_trait::async_trait]
impl LoginAttempts for PostgresLoginAttempts {
    async fn begin(
        &self,
        user: &str,
        now: u64,
        max: usize,
        window: u64,
    ) -> Result<Option<u64>, AuthError> {
        let refused = self.bounded(self.count(user, now, max, window)).await?;
        // Housekeeping: its failure refuses no login.
        let cut = secs(now.saturating_sub(window));
        if let Err(error) = self.bounded(self.purge(cut)).await {
            tracing::debug!(%error, "old login attempts not purged this time");
        }
        Ok(refused)
    }

    async fn release(&self, user: &str, at: u64) -> Result<(), AuthError> {
        self.bounded(self.hand_back(user, at)).await
    }
}
