#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

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

/// The row count a multi-row statement for `rows` rows is built for: `rows` itself up to 4,
/// then the next of 6, 8, 12, 16, 24, 32, … (powers of two and one and a half times them).
///
/// A database caches prepared statements by their text, and a multi-row `INSERT` has one
/// text per row count. Batches whose size follows the load would each need a statement of
/// their own: more than a connection's cache holds (100 in sqlx), so large statements are
/// parsed again and again. Rounded up to these counts, batches of 1 to 1,024 rows share 20
/// statements, and at most a third of any statement's rows is padding.
///
/// ```
/// assert_eq!(portcullis_sql::padded_rows(3), 3);
/// assert_eq!(portcullis_sql::padded_rows(5), 6);
/// assert_eq!(portcullis_sql::padded_rows(7), 8);
/// assert_eq!(portcullis_sql::padded_rows(100), 128);
/// assert_eq!(portcullis_sql::padded_rows(129), 192);
/// ```
#[must_use]
pub fn padded_rows(rows: usize) -> usize {
    if rows <= 4 {
        return rows;
    }
    let Some(power) = rows.checked_next_power_of_two() else {
        return rows;
    };
    let between = power / 4 * 3;
    if rows <= between { between } else { power }
}

/// Appends `INSERT INTO {into} SELECT * FROM (VALUES …) AS padded WHERE column1 IS NOT NULL`
/// to `q`: one statement for all of `rows`, padded to [`padded_rows`] rows so that its text
/// is shared by batches of similar size. `push_row` binds one row's values; `push_padding`
/// binds one padding row, whose *first* value must be NULL (and typed, for PostgreSQL) —
/// the `WHERE` drops exactly those rows, so the first column of a real row must never be
/// NULL. Both databases name the columns of a `VALUES` list `column1`, `column2`, ….
/// `rows` must not be empty: an empty `VALUES` list is not SQL, and the database refuses it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub fn push_padded_insert<'args, DB, T>(
    q: &mut sqlx::QueryBuilder<'args, DB>,
    into: &str,
    rows: impl ExactSizeIterator<Item = T>,
    mut push_row: impl FnMut(sqlx::query_builder::Separated<'_, 'args, DB, &'static str>, T),
    mut push_padding: impl FnMut(sqlx::query_builder::Separated<'_, 'args, DB, &'static str>),
) where
    DB: sqlx::Database,
{
    let padding = padded_rows(rows.len()) - rows.len();
    q.push("INSERT INTO ").push(into).push(" SELECT * FROM (");
    q.push_values(
        rows.map(Some)
            .chain(std::iter::repeat_with(|| None).take(padding)),
        |row, item| match item {
            Some(item) => push_row(row, item),
            None => push_padding(row),
        },
    );
    q.push(") AS padded WHERE column1 IS NOT NULL");
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

    /// Options for a database whose WAL is checkpointed by a [`Checkpointer`] instead of
    /// by its writers: SQLite's automatic checkpoint is off on every connection.
    #[must_use]
    pub fn without_auto_checkpoint(options: SqliteConnectOptions) -> SqliteConnectOptions {
        options.pragma("wal_autocheckpoint", "0")
    }

    /// Checkpoints a WAL database from a task of its own.
    ///
    /// By default SQLite checkpoints inside the commit that takes the WAL past 1,000 pages:
    /// that commit, and every writer queued behind it, waits while pages are copied into
    /// the database file and it is synced. With the automatic checkpoint off
    /// ([`without_auto_checkpoint`]) and this task running, commits only append to the WAL;
    /// the task runs a `PASSIVE` checkpoint every `every`, on a pooled connection, alongside
    /// the writers (a passive checkpoint never blocks them). SQLite starts the WAL over
    /// once a checkpoint has copied all of it, so it stays about as large as what is
    /// written between two checkpoints.
    ///
    /// Stops when dropped. Checkpoint errors are logged (`tracing`) and retried at the
    /// next tick; the data stays safe in the WAL meanwhile.
    #[derive(Debug)]
    pub struct Checkpointer {
        task: tokio::task::JoinHandle<()>,
    }

    impl Checkpointer {
        /// Starts checkpointing `pool`'s database every `every` (at least 1 ms).
        ///
        /// # Panics
        ///
        /// Outside a Tokio runtime, as [`tokio::spawn`] does.
        pub fn start(pool: sqlx::SqlitePool, every: std::time::Duration) -> Self {
            let every = every.max(std::time::Duration::from_millis(1));
            let task = tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if pool.is_closed() {
                        return;
                    }
                    if let Err(error) = checkpoint(&pool).await {
                        tracing::warn!(%error, "a WAL checkpoint failed; retrying at the next tick");
                    }
                }
            });
            Checkpointer { task }
        }
    }

    impl Drop for Checkpointer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Runs one `PASSIVE` checkpoint: copies what it can of the WAL into the database
    /// without waiting for readers or writers. Returns the WAL's size in frames and how
    /// many of them are now in the database.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn checkpoint(pool: &sqlx::SqlitePool) -> Result<(i64, i64), sqlx::Error> {
        let (_busy, log, checkpointed): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(pool)
                .await?;
        Ok((log, checkpointed))
    }
}

/// PostgreSQL migrations, and [`ChangeListener`](postgres::ChangeListener): the
/// `LISTEN`/`NOTIFY` wake-up that lets instances sharing a database see each other's changes
/// at once.
#[cfg(feature = "postgres")]
pub mod postgres {
    use std::sync::Arc;
    use std::time::Duration;

    use sqlx::postgres::PgListener;
    use tokio::sync::Notify;

    migrate_fn!(
        sqlx::Postgres,
        sqlx::PgPool,
        Some("SELECT pg_advisory_xact_lock($1)"),
        // Row locks and the advisory lock already make writers wait their turn.
        "BEGIN"
    );

    /// How often a [`ChangeListener`] wakes its subscriber while it cannot listen (its
    /// connection is lost and reconnecting fails): the subscriber then polls at this pace
    /// until notifications flow again, so a change is never missed for longer.
    pub const POLL_WHILE_DISCONNECTED: Duration = Duration::from_secs(1);

    /// Listens on one `NOTIFY` channel on a connection of its own and wakes a
    /// [`Notify`] for every notification: a store whose writes `NOTIFY` (in the same
    /// transaction, so the notification is delivered only once the change is committed and
    /// visible) hands this to a refresher, which then reloads within milliseconds of a
    /// change made by any instance, instead of polling tightly.
    ///
    /// Nothing is missed silently:
    /// - the subscriber is woken once as soon as `LISTEN` is in place (a change committed
    ///   between the caller's first load and then is picked up);
    /// - when the connection is lost it is woken too (notifications sent meanwhile are gone),
    ///   and the next wait reconnects and listens again;
    /// - while reconnecting fails it is woken every [`POLL_WHILE_DISCONNECTED`], so it polls
    ///   the database until notifications flow again.
    ///
    /// [`Notify`] keeps one permit: a notification arriving while the subscriber is busy
    /// reloading makes it reload once more afterwards, never zero times. The task stops when
    /// the listener is dropped or the pool is closed.
    #[derive(Debug)]
    pub struct ChangeListener {
        wake: Arc<Notify>,
        channel: String,
        task: tokio::task::JoinHandle<()>,
    }

    impl ChangeListener {
        /// Connects (with `pool`'s options, outside the pool) and runs `LISTEN channel`
        /// before returning, so every change committed from now on wakes the subscriber.
        ///
        /// # Errors
        ///
        /// If the connection or the `LISTEN` fails.
        pub async fn start(pool: &sqlx::PgPool, channel: &str) -> Result<Self, sqlx::Error> {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen(channel).await?;
            let wake = Arc::new(Notify::new());
            // Whatever changed between the caller's first load and the `LISTEN`.
            wake.notify_one();
            let task = tokio::spawn(listen(listener, wake.clone(), channel.to_owned()));
            Ok(ChangeListener {
                wake,
                channel: channel.to_owned(),
                task,
            })
        }

        /// What is woken on a change: hand it to a refresher.
        #[must_use]
        pub fn wakeup(&self) -> Arc<Notify> {
            self.wake.clone()
        }

        /// The channel listened on.
        #[must_use]
        pub fn channel(&self) -> &str {
            &self.channel
        }
    }

    impl Drop for ChangeListener {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn listen(mut listener: PgListener, wake: Arc<Notify>, channel: String) {
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => wake.notify_one(),
                // The connection was lost (the next call reconnects and listens again):
                // whatever was notified meanwhile is gone, so look for it.
                Ok(None) => {
                    tracing::warn!(%channel, "the LISTEN connection was lost; reconnecting");
                    wake.notify_one();
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::warn!(%channel, %error, "cannot LISTEN; polling every second until it can");
                    wake.notify_one();
                    tokio::time::sleep(POLL_WHILE_DISCONNECTED).await;
                }
            }
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::SqliteConnectOptions;

    use crate::sqlite::{Checkpointer, checkpoint, without_auto_checkpoint};

    #[test]
    fn padded_rows_round_up_to_few_sizes_with_little_padding() {
        let mut sizes = std::collections::BTreeSet::new();
        for rows in 1..=1024 {
            let padded = crate::padded_rows(rows);
            assert!(padded >= rows, "{rows} rounds to {padded}");
            assert!(3 * (padded - rows) <= padded, "{rows} rounds to {padded}");
            sizes.insert(padded);
        }
        assert_eq!(sizes.len(), 20, "{sizes:?}");
        assert_eq!(crate::padded_rows(1024), 1024);
    }

    #[tokio::test]
    async fn padded_inserts_write_exactly_the_rows() {
        let pool = crate::sqlite::pool("sqlite::memory:", |o| o)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::raw_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n BIGINT)")
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut next = 1_i64;
        for batch in [1_usize, 5, 7, 100, 129, 1000] {
            let rows: Vec<(i64, String, Option<i64>)> = (0..batch)
                .map(|k| {
                    next += 1;
                    (next, format!("row {next}"), (k % 2 == 0).then_some(next))
                })
                .collect();
            let mut q = sqlx::QueryBuilder::new("");
            crate::push_padded_insert(
                &mut q,
                "t (id, name, n)",
                rows.iter(),
                |mut row, (id, name, n)| {
                    row.push_bind(*id).push_bind(name.as_str()).push_bind(*n);
                },
                |mut row| {
                    row.push_bind(None::<i64>)
                        .push_bind(None::<&str>)
                        .push_bind(None::<i64>);
                },
            );
            let done = q
                .build()
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(done.rows_affected(), batch as u64);
            let stored: Vec<(i64, String, Option<i64>)> =
                sqlx::query_as("SELECT id, name, n FROM t WHERE id >= ? ORDER BY id")
                    .bind(rows.first().map_or(0, |r| r.0))
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(stored, rows, "a batch of {batch}");
        }
    }

    /// A fresh file database in a directory of its own, its pool tuned by `tune`.
    #[allow(clippy::panic, reason = "a test helper: a failed setup fails the test")]
    async fn file_pool(
        name: &str,
        tune: impl FnOnce(SqliteConnectOptions) -> SqliteConnectOptions,
    ) -> (std::path::PathBuf, sqlx::SqlitePool) {
        let dir =
            std::env::temp_dir().join(format!("portcullis-sql-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("db.sqlite");
        let url = format!("sqlite://{}", file.display());
        let pool = crate::sqlite::pool(&url, tune)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::raw_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (file, pool)
    }

    /// Commits about `pages` pages (4 KiB each) of new rows in one transaction.
    #[allow(clippy::panic, reason = "a test helper: a failed setup fails the test")]
    async fn write_pages(pool: &sqlx::SqlitePool, pages: i64) {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
             INSERT INTO t (data) SELECT randomblob(4000) FROM n",
        )
        .bind(pages)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn size(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    const MIB: u64 = 1 << 20;

    /// Closes `pool` and removes the directory `file_pool` made for it (megabytes of pages).
    async fn remove(file: &std::path::Path, pool: sqlx::SqlitePool) {
        pool.close().await;
        if let Some(dir) = file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[tokio::test]
    async fn without_auto_checkpoint_commits_stay_in_the_wal() {
        // By default the commit that takes the WAL past 1,000 pages copies them over.
        let (file, pool) = file_pool("auto", |o| o).await;
        write_pages(&pool, 2000).await;
        assert!(size(&file) > 4 * MIB, "database {} bytes", size(&file));
        remove(&file, pool).await;

        let (file, pool) = file_pool("manual", without_auto_checkpoint).await;
        write_pages(&pool, 2000).await;
        let wal = file.with_extension("sqlite-wal");
        assert!(size(&file) < MIB, "database {} bytes", size(&file));
        assert!(size(&wal) > 4 * MIB, "WAL {} bytes", size(&wal));
        // The data is there all the same, and a checkpoint copies all of it.
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows, 2000);
        let (log, copied) = checkpoint(&pool).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(log >= 2000 && copied == log, "{copied} of {log} frames");
        assert!(size(&file) > 4 * MIB, "database {} bytes", size(&file));
        remove(&file, pool).await;
    }

    /// Waits until the database file holds every page its readers see (WAL included).
    #[allow(clippy::panic, reason = "a test helper: a failed setup fails the test")]
    async fn wait_until_checkpointed(file: &std::path::Path, pool: &sqlx::SqlitePool) {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while size(file) < bytes.unsigned_abs() {
            assert!(
                std::time::Instant::now() < deadline,
                "not checkpointed in 20 s: database {} of {bytes} bytes",
                size(file)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_checkpointer_keeps_the_wal_small_until_dropped() {
        let (file, pool) = file_pool("checkpointer", without_auto_checkpoint).await;
        let wal = file.with_extension("sqlite-wal");
        let checkpointer = Checkpointer::start(pool.clone(), Duration::from_millis(10));
        // 2,000 pages in twenty commits. Each time the checkpointer has copied all of the
        // WAL, the next commit starts it over from its beginning, so the file stays about
        // one commit long instead of growing to hold all twenty.
        for _ in 0..20 {
            write_pages(&pool, 100).await;
            wait_until_checkpointed(&file, &pool).await;
            // The copy is recorded in the WAL index just after the database is synced.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(size(&wal) < 2 * MIB, "WAL {} bytes", size(&wal));

        drop(checkpointer);
        tokio::task::yield_now().await;
        let before = size(&file);
        write_pages(&pool, 500).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            size(&file),
            before,
            "checkpointed after the checkpointer was dropped"
        );
        remove(&file, pool).await;
    }

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
