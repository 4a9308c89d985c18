//! [`PostgresLoginAttempts`]: failed password logins counted for every instance.

use crate::{AuthError, LoginAttempts};

const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    include_str!("../../migrations/postgres_login_failures_0001.sql"),
)];
/// Concurrent first starts take turns at migrating.
const MIGRATION_LOCK: i64 = 7_283_901_234_567_034;

/// Failed password logins in a PostgreSQL table every instance shares, for
/// [`PasswordLogin::with_attempt_store`](crate::PasswordLogin::with_attempt_store): five
/// failures of a name in five minutes lock it out of every instance, not of one. Names are
/// kept as their SHA-256; failures older than the window are dropped as new ones come.
///
/// Two instances checking the same name at the same moment may each let one more guess
/// through than the limit: the bound holds up to the number of logins in flight at once.
#[derive(Debug, Clone)]
pub struct PostgresLoginAttempts {
    pool: sqlx::PgPool,
}

fn user_hash(user: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, user.as_bytes()))
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
        Ok(PostgresLoginAttempts { pool })
    }
}

#[async_trait::async_trait]
impl LoginAttempts for PostgresLoginAttempts {
    async fn recent_failures(
        &self,
        user: &str,
        since: u64,
        max: usize,
    ) -> Result<Vec<u64>, AuthError> {
        let times: Vec<i64> = sqlx::query_scalar(
            "SELECT at FROM portcullis_login_failures WHERE user_hash = $1 AND at > $2 \
             ORDER BY at DESC LIMIT $3",
        )
        .bind(user_hash(user))
        .bind(secs(since))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(times.into_iter().map(i64::unsigned_abs).collect())
    }

    async fn note_failure(&self, user: &str, at: u64, forget_before: u64) -> Result<(), AuthError> {
        sqlx::query("INSERT INTO portcullis_login_failures (user_hash, at) VALUES ($1, $2)")
            .bind(user_hash(user))
            .bind(secs(at))
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM portcullis_login_failures WHERE at <= $1")
            .bind(secs(forget_before))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
