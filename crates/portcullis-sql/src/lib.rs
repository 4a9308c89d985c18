#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

/// A schema table name is interpolated into SQL, so only `[a-z_]` is accepted.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn check_table(table: &str) -> Result<(), sqlx::Error> {
    if table.is_empty() || !table.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(sqlx::Error::Configuration(
            format!("schema table name `{table}` must be lower-case letters and `_`").into(),
        ));
    }
    Ok(())
}

/// One implementation of the migration runner for each backend (the queries are the same;
/// only the placeholder syntax and the lock differ).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! migrate_fn {
    ($db:ty, $pool:ty, $lock:expr, $begin_write:literal) => {
        /// The statement that opens a transaction which will write. On SQLite it takes the
        /// write lock up front (`BEGIN IMMEDIATE`), waiting out the busy timeout for another
        /// writer; a plain `BEGIN` would take it only at the first write, and a transaction
        /// that has read by then fails at once with "database is locked" instead of
        /// waiting. Every read-then-write transaction must begin with this.
        pub const BEGIN_WRITE: &str = $begin_write;

        /// Applies every migration newer than the highest version recorded in `table`, in
        /// one transaction, recording each version. `advisory_lock` (PostgreSQL only) is
        /// taken first so concurrent starts take turns.
        ///
        /// # Errors
        ///
        /// The database error of the first failing statement; nothing is applied then.
        pub async fn migrate(
            pool: &$pool,
            table: &str,
            advisory_lock: Option<i64>,
            migrations: &[(i64, &str)],
        ) -> Result<(), sqlx::Error> {
            crate::check_table(table)?;
            let mut tx = pool.begin_with(BEGIN_WRITE).await?;
            if let Some(key) = advisory_lock {
                let lock: Option<&str> = $lock;
                if let Some(lock) = lock {
                    sqlx::query(lock).bind(key).execute(&mut *tx).await?;
                }
            }
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY)"
            ))
            .execute(&mut *tx)
            .await?;
            let applied: Option<i64> =
                sqlx::query_scalar(&format!("SELECT MAX(version) FROM {table}"))
                    .fetch_one(&mut *tx)
                    .await?;
            for (version, sql) in migrations {
                if applied.is_some_and(|applied| applied >= *version) {
                    continue;
                }
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                let mut record = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO {table} (version) VALUES ("
                ));
                record.push_bind(*version).push(")");
                record.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
    };
}

/// SQLite pools and migrations.
#[cfg(feature = "sqlite")]
pub mod sqlite {
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    /// Whether `url` names an in-memory database.
    pub fn is_in_memory(url: &str) -> bool {
        url.contains(":memory:") || url.contains("mode=memory")
    }

    /// Opens (creating if missing) the database at `url` (`sqlite://path.db` or
    /// `sqlite::memory:`): WAL journal and up to 4 connections for a file, one connection
    /// kept open for a memory database. `tune` adjusts the options (synchronous level,
    /// pragmas) before connecting.
    ///
    /// # Errors
    ///
    /// An invalid URL or a database that cannot be opened.
    pub async fn pool(
        url: &str,
        tune: impl FnOnce(SqliteConnectOptions) -> SqliteConnectOptions,
    ) -> Result<sqlx::SqlitePool, sqlx::Error> {
        let in_memory = is_in_memory(url);
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if in_memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            });
        // Every connection to `:memory:` is a database of its own: keep exactly one.
        SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(u32::from(in_memory))
            .idle_timeout(None)
            .max_lifetime(None)
            // A local file does not drop connections: skip the round trip to the
            // connection's thread that a health check costs on every acquire.
            .test_before_acquire(false)
            .connect_with(tune(options))
            .await
    }

    migrate_fn!(sqlx::Sqlite, sqlx::SqlitePool, None, "BEGIN IMMEDIATE");
}

/// PostgreSQL migrations.
#[cfg(feature = "postgres")]
pub mod postgres {
    migrate_fn!(
        sqlx::Postgres,
        sqlx::PgPool,
        Some("SELECT pg_advisory_xact_lock($1)"),
        // Row locks and the advisory lock already make writers wait their turn.
        "BEGIN"
    );
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    #[tokio::test]
    async fn migrations_apply_once_in_order() {
        let pool = crate::sqlite::pool("sqlite::memory:", |o| o)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let first = [(1, "CREATE TABLE a (x BIGINT)")];
        crate::sqlite::migrate(&pool, "t_schema", None, &first)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let both = [
            (1, "CREATE TABLE a (x BIGINT)"),
            (2, "CREATE TABLE b (y BIGINT)"),
        ];
        crate::sqlite::migrate(&pool, "t_schema", None, &both)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM t_schema ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(versions, [1, 2]);
        let broken = [(3, "CREATE TABLE c ("), (4, "CREATE TABLE d (z BIGINT)")];
        assert!(
            crate::sqlite::migrate(&pool, "t_schema", None, &broken)
                .await
                .is_err()
        );
        assert!(
            crate::sqlite::migrate(&pool, "bad; DROP", None, &both)
                .await
                .is_err()
        );
    }
}
