//! The SQL stores. SQLite and PostgreSQL share every query (built with `QueryBuilder`, which
//! writes each backend's placeholders); one macro instantiates the store for each.
//!
//! Schema versions are recorded in `portcullis_approval_schema`, a table of this crate's own;
//! each backend has its own migration files, numbered alike (`migrations/NNNN_BACKEND_*.sql`).

use super::{ApprovalStore, StoredTotpSecret, TotpEnrollmentState, TotpStore};
use crate::{
    ApprovalError, ApprovalRecord, ApprovalRequest, RequestState, SealedTotpSecret, TotpError, Vote,
};

/// A request row: its JSON body, state and whether its receipt was used.
type Row = (String, String, bool);

fn state_of(text: &str) -> Result<RequestState, ApprovalError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| ApprovalError::Store(format!("unknown stored state `{text}`")))
}

fn corrupt(e: serde_json::Error) -> ApprovalError {
    ApprovalError::Store(format!("stored approval is not valid JSON: {e}"))
}

/// Steps are stored as `BIGINT`.
fn step_value(step: u64) -> Result<i64, ApprovalError> {
    i64::try_from(step)
        .map_err(|_| ApprovalError::Store(format!("TOTP step {step} is beyond a BIGINT")))
}

fn stored_secret(sealed: Vec<u8>, confirmed: bool) -> StoredTotpSecret {
    StoredTotpSecret::new(
        SealedTotpSecret::from_bytes(sealed),
        if confirmed {
            TotpEnrollmentState::Confirmed
        } else {
            TotpEnrollmentState::Pending
        },
    )
}

/// Maps a failed vote insert to what it means.
fn vote_error(err: sqlx::Error, id: &str, approver: &str) -> ApprovalError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApprovalError::AlreadyVoted(approver.to_owned())
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            ApprovalError::UnknownRequest(id.to_owned())
        }
        _ => ApprovalError::from(err),
    }
}

macro_rules! sql_approval_store {
    (
        $(#[$meta:meta])*
        $store:ident, $db:ty, $pool:ty,
        migrations: [$(($version:literal, $sql:expr)),* $(,)?],
        sql: $sqlmod:ident,
        lock: $lock:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $store {
            pool: $pool,
        }

        impl $store {
            /// Uses `pool`, bringing the schema up to date first.
            ///
            /// # Errors
            ///
            /// [`ApprovalError::Store`] if a migration fails.
            pub async fn from_pool(pool: $pool) -> Result<Self, ApprovalError> {
                portcullis_sql::$sqlmod::migrate(
                    &pool,
                    "portcullis_approval_schema",
                    $lock,
                    &[$(($version, $sql)),*],
                )
                .await?;
                Ok($store { pool })
            }

            /// The connection pool.
            #[must_use]
            pub fn pool(&self) -> &$pool {
                &self.pool
            }

            async fn votes(&self, id: &str) -> Result<Vec<Vote>, ApprovalError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT body FROM portcullis_approval_votes WHERE request_id = ",
                );
                q.push_bind(id).push(" ORDER BY seq");
                let rows: Vec<String> = q.build_query_scalar().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|b| serde_json::from_str(b).map_err(corrupt))
                    .collect()
            }

            async fn record(&self, (body, state, used): Row) -> Result<ApprovalRecord, ApprovalError> {
                let request: ApprovalRequest = serde_json::from_str(&body).map_err(corrupt)?;
                let votes = self.votes(&request.id).await?;
                Ok(ApprovalRecord {
                    request,
                    votes,
                    state: state_of(&state)?,
                    receipt_used: used,
                })
            }
        }

        #[async_trait::async_trait]
        impl ApprovalStore for $store {
            async fn create(&self, record: &ApprovalRecord) -> Result<(), ApprovalError> {
                let body = serde_json::to_string(&record.request).map_err(corrupt)?;
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO portcullis_approval_requests (id, body, state, receipt_used, created_at) VALUES (",
                );
                q.push_bind(record.request.id.as_str())
                    .push(", ")
                    .push_bind(body)
                    .push(", ")
                    .push_bind(record.state.as_str())
                    .push(", FALSE, ")
                    .push_bind(crate::model::unix(record.request.created_at))
                    .push(")");
                q.build().execute(&self.pool).await?;
                Ok(())
            }

            async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, ApprovalError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT body, state, receipt_used FROM portcullis_approval_requests WHERE id = ",
                );
                q.push_bind(id);
                let row: Option<Row> = q.build_query_as().fetch_optional(&self.pool).await?;
                match row {
                    Some(row) => Ok(Some(self.record(row).await?)),
                    None => Ok(None),
                }
            }

            async fn add_vote(
                &self,
                id: &str,
                vote: &Vote,
                state: RequestState,
            ) -> Result<(), ApprovalError> {
                let body = serde_json::to_string(vote).map_err(corrupt)?;
                let mut tx = self
                    .pool
                    .begin_with(portcullis_sql::$sqlmod::BEGIN_WRITE)
                    .await?;
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO portcullis_approval_votes (request_id, approver, body) VALUES (",
                );
                insert
                    .push_bind(id)
                    .push(", ")
                    .push_bind(vote.approver.as_str())
                    .push(", ")
                    .push_bind(body)
                    .push(")");
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| vote_error(e, id, &vote.approver))?;
                let mut update = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE portcullis_approval_requests SET state = ",
                );
                update
                    .push_bind(state.as_str())
                    .push(" WHERE id = ")
                    .push_bind(id);
                if update.build().execute(&mut *tx).await?.rows_affected() != 1 {
                    // Dropping the transaction rolls the vote back.
                    return Err(ApprovalError::UnknownRequest(id.to_owned()));
                }
                tx.commit().await?;
                Ok(())
            }

            async fn set_state(&self, id: &str, state: RequestState) -> Result<(), ApprovalError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE portcullis_approval_requests SET state = ",
                );
                q.push_bind(state.as_str()).push(" WHERE id = ").push_bind(id);
                q.build().execute(&self.pool).await?;
                Ok(())
            }

            async fn consume_receipt(&self, id: &str) -> Result<bool, ApprovalError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE portcullis_approval_requests SET receipt_used = TRUE WHERE receipt_used = FALSE AND state = 'approved' AND id = ",
                );
                q.push_bind(id);
                Ok(q.build().execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn list(&self, state: RequestState) -> Result<Vec<ApprovalRecord>, ApprovalError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT body, state, receipt_used FROM portcullis_approval_requests WHERE state = ",
                );
                q.push_bind(state.as_str()).push(" ORDER BY created_at, id");
                let rows: Vec<Row> = q.build_query_as().fetch_all(&self.pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    out.push(self.record(row).await?);
                }
                Ok(out)
            }
        }

        #[async_trait::async_trait]
        impl TotpStore for $store {
            async fn claim_step(&self, user: &str, step: u64) -> Result<bool, ApprovalError> {
                // One statement: the row is inserted, or updated only if the step is newer.
                // A refused update changes no row; concurrent claims queue on the row.
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO portcullis_approval_totp_steps (subject, last_step) VALUES (",
                );
                q.push_bind(user)
                    .push(", ")
                    .push_bind(step_value(step)?)
                    .push(
                        ") ON CONFLICT (subject) DO UPDATE SET last_step = excluded.last_step \
                         WHERE portcullis_approval_totp_steps.last_step < excluded.last_step",
                    );
                Ok(q.build().execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn put_pending_secret(
                &self,
                user: &str,
                sealed: &SealedTotpSecret,
            ) -> Result<(), ApprovalError> {
                // Replaces a pending secret, never a confirmed one: that row is left alone.
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO portcullis_approval_totp_secrets (subject, sealed, confirmed) VALUES (",
                );
                q.push_bind(user)
                    .push(", ")
                    .push_bind(sealed.as_bytes())
                    .push(
                        ", FALSE) ON CONFLICT (subject) DO UPDATE SET sealed = excluded.sealed \
                         WHERE portcullis_approval_totp_secrets.confirmed = FALSE",
                    );
                if q.build().execute(&self.pool).await?.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(TotpError::AlreadyEnrolled(user.to_owned()).into())
                }
            }

            async fn confirm_secret(
                &self,
                user: &str,
                sealed: &SealedTotpSecret,
            ) -> Result<bool, ApprovalError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE portcullis_approval_totp_secrets SET confirmed = TRUE WHERE confirmed = FALSE AND subject = ",
                );
                q.push_bind(user)
                    .push(" AND sealed = ")
                    .push_bind(sealed.as_bytes());
                Ok(q.build().execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn secret(&self, user: &str) -> Result<Option<StoredTotpSecret>, ApprovalError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT sealed, confirmed FROM portcullis_approval_totp_secrets WHERE subject = ",
                );
                q.push_bind(user);
                let row: Option<(Vec<u8>, bool)> =
                    q.build_query_as().fetch_optional(&self.pool).await?;
                Ok(row.map(|(sealed, confirmed)| stored_secret(sealed, confirmed)))
            }

            async fn remove_secret(&self, user: &str) -> Result<bool, ApprovalError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "DELETE FROM portcullis_approval_totp_secrets WHERE subject = ",
                );
                q.push_bind(user);
                Ok(q.build().execute(&self.pool).await?.rows_affected() == 1)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    sql_approval_store!(
        /// An [`ApprovalStore`] and [`TotpStore`] in SQLite (WAL). Requests and votes are
        /// stored as versionless JSON documents next to indexed columns; TOTP secrets only
        /// sealed.
        SqliteApprovalStore, sqlx::Sqlite, sqlx::SqlitePool,
        migrations: [
            (1, include_str!("../../migrations/0001_sqlite_approvals.sql")),
            (2, include_str!("../../migrations/0002_sqlite_totp.sql")),
        ],
        sql: sqlite,
        lock: None::<i64>
    );

    impl SqliteApprovalStore {
        /// Opens (creating if needed) the database at `url` (`sqlite://approvals.db`,
        /// `sqlite::memory:`) and migrates it.
        ///
        /// # Errors
        ///
        /// [`ApprovalError::Store`] if it cannot be opened or migrated.
        pub async fn connect(url: &str) -> Result<Self, ApprovalError> {
            let pool = portcullis_sql::sqlite::pool(url, |options| options).await?;
            Self::from_pool(pool).await
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::postgres::PgPoolOptions;

    use super::*;

    sql_approval_store!(
        /// An [`ApprovalStore`] and [`TotpStore`] in PostgreSQL, shared by a fleet: a TOTP
        /// code used on one instance is refused on every other.
        PostgresApprovalStore, sqlx::Postgres, sqlx::PgPool,
        migrations: [
            (1, include_str!("../../migrations/0001_postgres_approvals.sql")),
            (2, include_str!("../../migrations/0002_postgres_totp.sql")),
        ],
        // Instances starting together take turns migrating.
        sql: postgres,
        lock: Some(7283901234567004_i64)
    );

    impl PostgresApprovalStore {
        /// Connects to `url` (`postgres://user@host:port/db`) with a pool of up to
        /// `max_connections` and migrates the schema.
        ///
        /// # Errors
        ///
        /// [`ApprovalError::Store`] if the database is unreachable or a migration fails.
        pub async fn connect(url: &str, max_connections: u32) -> Result<Self, ApprovalError> {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .connect(url)
                .await?;
            Self::from_pool(pool).await
        }
    }
}

#[cfg(feature = "postgres")]
pub use postgres::PostgresApprovalStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteApprovalStore;
