//! [`PostgresSpentIds`]: single-use ids spent once across every instance.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_core::{Clock, SystemClock};

use super::{secs_of, to_secs};
use crate::AuthError;

/// How long a spent id is kept past its expiry before [`PostgresSpentIds::purge`] drops it.
/// A caller must refuse an id's token once it has expired, allowing less leeway than this,
/// so that an id can never be spent again after its row is gone.
pub const SPENT_ID_GRACE: Duration = Duration::from_secs(120);

/// Migrations of this table, in `portcullis_spent_id_schema`.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    include_str!("../../migrations/postgres_spent_ids_0001.sql"),
)];
/// Concurrent first starts take turns at migrating.
const MIGRATION_LOCK: i64 = 7_283_901_234_567_031;
/// The longest id accepted.
const MAX_ID_LEN: usize = 256;

/// Ids that may be used once — a broker token's `jti` — spent in a PostgreSQL table that
/// every instance shares: [`spend`](Self::spend) inserts the id if it is absent, and that
/// insert is the single atomic check, so of two instances spending the same id at the same
/// moment exactly one succeeds. Ids are kept until [`SPENT_ID_GRACE`] past their expiry,
/// then purged ([`spawn_purger`](Self::spawn_purger)).
///
/// A scope keeps the ids of different users of the table apart (one region's proxies, say).
/// The spend is committed before it answers: an id reported spent stays spent if the
/// database restarts.
#[derive(Debug, Clone)]
pub struct PostgresSpentIds {
    pool: sqlx::PgPool,
    scope: String,
    clock: Arc<dyn Clock>,
}

impl PostgresSpentIds {
    /// Spends ids of `scope` in `pool`'s database, creating the table if needed.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for an empty or over-long scope; [`AuthError::Store`] if the
    /// migration fails.
    pub async fn from_pool(
        pool: sqlx::PgPool,
        scope: impl Into<String>,
    ) -> Result<Self, AuthError> {
        let scope = scope.into();
        if scope.is_empty() || scope.len() > MAX_ID_LEN || scope.chars().any(char::is_control) {
            return Err(AuthError::Config(
                "a spent-id scope is 1 to 256 characters, none of them control characters".into(),
            ));
        }
        portcullis_sql::postgres::migrate(
            &pool,
            "portcullis_spent_id_schema",
            Some(MIGRATION_LOCK),
            MIGRATIONS,
        )
        .await?;
        Ok(PostgresSpentIds {
            pool,
            scope,
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for [`purge`](Self::purge)'s idea of now.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Spends `id`, which stops counting at `expires_at`: true the first time, false if any
    /// instance spent it before.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidRequest`] for an empty or over-long id; [`AuthError::Store`] if
    /// the database cannot be reached — the caller must then refuse (the id's first use
    /// cannot be proved).
    pub async fn spend(&self, id: &str, expires_at: SystemTime) -> Result<bool, AuthError> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(AuthError::InvalidRequest(
                "a single-use id is 1 to 256 bytes".into(),
            ));
        }
        let done = sqlx::query(
            "INSERT INTO portcullis_spent_ids (scope, id, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.scope)
        .bind(id)
        .bind(to_secs(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Drops the ids (of every scope) that expired more than [`SPENT_ID_GRACE`] ago; how many.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`] if the database fails.
    pub async fn purge(&self) -> Result<u64, AuthError> {
        let before = to_secs(self.clock.now()) - secs_of(SPENT_ID_GRACE);
        let done = sqlx::query("DELETE FROM portcullis_spent_ids WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Purges every `every` (at least a second) from a task of its own, until the returned
    /// guard is dropped. Failures are logged and retried at the next tick.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn_purger(&self, every: Duration) -> SpentIdPurger {
        let spent = self.clone();
        let every = every.max(Duration::from_secs(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match spent.purge().await {
                    Ok(n) if n > 0 => tracing::debug!(purged = n, "expired single-use ids purged"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "purging expired single-use ids failed"),
                }
            }
        });
        SpentIdPurger { task }
    }
}

/// The task [`PostgresSpentIds::spawn_purger`] started; it stops when this is dropped.
#[derive(Debug)]
pub struct SpentIdPurger {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SpentIdPurger {
    fn drop(&mut self) {
        self.task.abort();
    }
}
