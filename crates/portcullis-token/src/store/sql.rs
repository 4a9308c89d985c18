//! SQL token stores. SQLite and PostgreSQL share every query; one macro instantiates each.
//! Schema versions are recorded in `portcullis_token_schema`, a table of this crate's own.

use super::{TokenHash, TokenId, TokenRecord, TokenScope, from_secs, to_secs};
use crate::{AuthError, TokenKind};

const COLUMNS: &str = "id, hash, kind, name, owner, scope_resource, scope_role, created_at, expires_at, last_used_at, revoked_at";

type Row = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

fn to_record(row: Row) -> Result<TokenRecord, AuthError> {
    let (id, hash, kind, name, owner, scope_resource, scope_role, created, expires, used, revoked) =
        row;
    let corrupt = |e: &dyn std::fmt::Display| AuthError::Store(format!("token row {id}: {e}"));
    let scope = match (scope_resource, scope_role) {
        (Some(resource), Some(role)) => Some(TokenScope {
            resource: resource.parse().map_err(|e| corrupt(&e))?,
            role,
        }),
        (None, None) => None,
        _ => {
            return Err(corrupt(
                &"scope resource and role must be both set or both empty",
            ));
        }
    };
    Ok(TokenRecord {
        id: id.parse().map_err(|e| corrupt(&e))?,
        kind: TokenKind::from_name(&kind)?,
        name,
        owner,
        scope,
        created_at: from_secs(created),
        expires_at: from_secs(expires),
        last_used_at: used.map(from_secs),
        revoked_at: revoked.map(from_secs),
        hash: TokenHash::from_hex(&hash)?,
    })
}

/// The unique indexes on active tokens' names (PostgreSQL, migration 3).
const NAME_INDEXES: [&str; 2] = [
    "portcullis_tokens_script_name",
    "portcullis_tokens_personal_name",
];

fn conflict_or_store(err: sqlx::Error, record: &TokenRecord) -> AuthError {
    match &err {
        sqlx::Error::Database(db)
            if db.is_unique_violation()
                && db.constraint().is_some_and(|c| NAME_INDEXES.contains(&c)) =>
        {
            // What `Tokens::issue` says when it sees the name taken itself.
            AuthError::Conflict(format!(
                "an active {} token named `{}` exists",
                record.kind.as_str(),
                record.name
            ))
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            AuthError::Conflict(format!("token {} exists", record.id))
        }
        _ => AuthError::from(err),
    }
}

macro_rules! sql_token_store {
    (
        $(#[$meta:meta])*
        $store:ident, $db:ty, $pool:ty,
        migrations: [$(($version:literal, $sql:expr)),* $(,)?],
        sql: $sqlmod:ident,
        lock: $lock:expr,
        unique_names: $unique_names:expr
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
            /// [`AuthError::Store`] if a migration fails.
            pub async fn from_pool(pool: $pool) -> Result<Self, AuthError> {
                portcullis_sql::$sqlmod::migrate(
                    &pool,
                    "portcullis_token_schema",
                    $lock,
                    &[$(($version, $sql)),*],
                )
                .await?;
                Ok($store { pool })
            }

            /// The connection pool.
            pub fn pool(&self) -> &$pool {
                &self.pool
            }
        }

        #[async_trait::async_trait]
        impl crate::store::TokenStore for $store {
            async fn insert(&self, record: &TokenRecord) -> Result<(), AuthError> {
                let mut tx = self.pool.begin_with(portcullis_sql::$sqlmod::BEGIN_WRITE).await?;
                if $unique_names {
                    // The index sees unrevoked rows only: a token of this name past its
                    // expiry no longer holds the name, so it is marked revoked at its expiry.
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE portcullis_tokens SET revoked_at = expires_at \
                         WHERE revoked_at IS NULL AND expires_at <= ",
                    );
                    q.push_bind(to_secs(record.created_at))
                        .push(" AND kind = ")
                        .push_bind(record.kind.as_str())
                        .push(" AND name = ")
                        .push_bind(record.name.clone());
                    match record.kind {
                        TokenKind::Script => q
                            .push(" AND COALESCE(scope_resource, '') = ")
                            .push_bind(
                                record
                                    .scope
                                    .as_ref()
                                    .map(|s| s.resource.to_string())
                                    .unwrap_or_default(),
                            ),
                        TokenKind::Personal => q.push(" AND owner = ").push_bind(record.owner.clone()),
                    };
                    q.build().execute(&mut *tx).await?;
                }
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO portcullis_tokens ({COLUMNS}) "
                ));
                q.push_values([record], |mut b, r| {
                    b.push_bind(r.id.as_str().to_owned())
                        .push_bind(r.hash.to_hex())
                        .push_bind(r.kind.as_str())
                        .push_bind(r.name.clone())
                        .push_bind(r.owner.clone())
                        .push_bind(r.scope.as_ref().map(|s| s.resource.to_string()))
                        .push_bind(r.scope.as_ref().map(|s| s.role.clone()))
                        .push_bind(to_secs(r.created_at))
                        .push_bind(to_secs(r.expires_at))
                        .push_bind(r.last_used_at.map(to_secs))
                        .push_bind(r.revoked_at.map(to_secs));
                });
                q.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| conflict_or_store(e, record))?;
                tx.commit().await?;
                Ok(())
            }

            async fn all(&self) -> Result<Vec<TokenRecord>, AuthError> {
                let rows: Vec<Row> =
                    sqlx::query_as(&format!("SELECT {COLUMNS} FROM portcullis_tokens ORDER BY id"))
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(to_record).collect()
            }

            async fn revoke(
                &self,
                id: &TokenId,
                at: std::time::SystemTime,
            ) -> Result<bool, AuthError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE portcullis_tokens SET revoked_at = ",
                );
                q.push_bind(to_secs(at))
                    .push(" WHERE revoked_at IS NULL AND id = ")
                    .push_bind(id.as_str().to_owned());
                Ok(q.build().execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn record_use(
                &self,
                uses: &[(TokenId, std::time::SystemTime)],
            ) -> Result<(), AuthError> {
                let mut tx = self.pool.begin_with(portcullis_sql::$sqlmod::BEGIN_WRITE).await?;
                for (id, at) in uses {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE portcullis_tokens SET last_used_at = ",
                    );
                    q.push_bind(to_secs(*at))
                        .push(" WHERE id = ")
                        .push_bind(id.as_str().to_owned())
                        .push(" AND (last_used_at IS NULL OR last_used_at < ")
                        .push_bind(to_secs(*at))
                        .push(")");
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn purge(&self, before: std::time::SystemTime) -> Result<u64, AuthError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "DELETE FROM portcullis_tokens WHERE expires_at < ",
                );
                q.push_bind(to_secs(before))
                    .push(" OR revoked_at < ")
                    .push_bind(to_secs(before));
                Ok(q.build().execute(&self.pool).await?.rows_affected())
            }
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    sql_token_store!(
        /// A [`TokenStore`](crate::TokenStore) in SQLite (WAL mode).
        SqliteTokenStore, sqlx::Sqlite, sqlx::SqlitePool,
        migrations: [(1, include_str!("../../migrations/0001_tokens.sql"))],
        sql: sqlite,
        lock: None,
        unique_names: false
    );

    impl SqliteTokenStore {
        /// Opens (creating if needed) the database at `url` (`sqlite://tokens.db`,
        /// `sqlite::memory:`) and migrates it.
        ///
        /// # Errors
        ///
        /// [`AuthError::Store`] if it cannot be opened or migrated.
        pub async fn connect(url: &str) -> Result<Self, AuthError> {
            let pool = portcullis_sql::sqlite::pool(url, |options| options).await?;
            Self::from_pool(pool).await
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::postgres::PgPoolOptions;

    use super::*;

    sql_token_store!(
        /// A [`TokenStore`](crate::TokenStore) in PostgreSQL, shared by a fleet. The database
        /// keeps names unique among active tokens (a unique index per kind), so instances
        /// issuing one name at once cannot both succeed: the later insert fails with
        /// [`AuthError::Conflict`], as the issuing instance's own check does.
        PostgresTokenStore, sqlx::Postgres, sqlx::PgPool,
        migrations: [
            (1, include_str!("../../migrations/0001_tokens.sql")),
            (2, include_str!("../../migrations/0002_postgres_notify.sql")),
            (3, include_str!("../../migrations/0003_postgres_unique_names.sql")),
        ],
        sql: postgres,
        lock: Some(7283901234567003_i64),
        unique_names: true
    );

    impl PostgresTokenStore {
        /// Connects with at most `max_connections` and migrates the schema.
        ///
        /// # Errors
        ///
        /// [`AuthError::Store`] if it cannot connect or migrate.
        pub async fn connect(url: &str, max_connections: u32) -> Result<Self, AuthError> {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .connect(url)
                .await?;
            Self::from_pool(pool).await
        }

        /// Listens for tokens issued, revoked or purged by any instance sharing the
        /// database (a trigger `NOTIFY`s channel [`CHANGE_CHANNEL`] at commit). Hand its
        /// [`wakeup`](portcullis_sql::postgres::ChangeListener::wakeup) to
        /// [`Tokens::spawn_notified_refresher`](crate::Tokens::spawn_notified_refresher),
        /// which then reloads within milliseconds of a change instead of at its next tick.
        ///
        /// # Errors
        ///
        /// [`AuthError::Store`] if the listening connection cannot be opened.
        pub async fn listen(&self) -> Result<crate::ChangeListener, AuthError> {
            Ok(crate::ChangeListener::start(&self.pool, CHANGE_CHANNEL).await?)
        }
    }

    /// The `NOTIFY` channel a token issued, revoked or purged is announced on.
    pub const CHANGE_CHANNEL: &str = "portcullis_tokens";
}

#[cfg(feature = "postgres")]
pub use postgres::{CHANGE_CHANNEL, PostgresTokenStore};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteTokenStore;
