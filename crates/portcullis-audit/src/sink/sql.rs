//! The SQL storages. SQLite and PostgreSQL share every query (`QueryBuilder` writes each
//! one's placeholders); one macro instantiates the storage for each.
//!
//! Rows go in by multi-row `INSERT`s of at most `INSERT_CHUNK` rows, padded to one of 20 row
//! counts (`portcullis_sql::padded_rows`): a statement per exact count would be more than a
//! connection's statement cache holds, and the largest would be parsed again and again.
//!
//! Opening checks the newest records (`check_tail`: lines, links, indexed columns) and
//! refuses a head that does not verify; the head it ends in is the first one remembered.
//!
//! A batch is written in one of two ways. The backend remembers the head it last wrote (or
//! checked on open); when it has one and the batch fits one `INSERT`, the batch is sealed on
//! that head and written by that statement alone (atomic on its own: one round trip and one
//! commit). The `seq` primary key is the guard: if anything else advanced the chain
//! meanwhile (another process, or a restore), the insert fails as a duplicate `seq` and
//! nothing is written. Then, and when no head is remembered, the batch is one transaction:
//! (lock,) read the head and check its newest record as opening does, seal, insert, commit;
//! that too is sealed again if a writer on the fast path took its sequence numbers first.
//! Any error forgets the remembered head. On PostgreSQL, which other instances may share,
//! every batch takes the locked transaction: with every writer under the lock, none can take
//! the sequence numbers another sealed between reading the head and inserting. (An instance
//! that had not yet seen a conflict kept the unlocked fast path and could starve one that
//! had: 8 of 1,600 events refused after 16 attempts in one CI run.) SQLite, one file on one
//! host, keeps the fast path.
//!
//! Batches go through one connection taken out of the pool and kept between them, so a
//! batch is one trip to one warm connection; reads use the pool. Any error but a key
//! conflict drops that connection, and the next batch takes a new one.
//!
//! A lost or terminated connection, a pool timeout, a serialization failure, deadlock or
//! locked database, and conflicts that outlast `CONFLICT_RETRIES` are
//! [`AuditError::Unavailable`]: the log writes the submitted events of such a batch again.
//! A commit whose answer was lost may have landed; `holds` reads the batch's first event by
//! its id (the head the next write reads would not tell whose records it ends in), and the
//! log writes the batch again only if it is not there. Conflicts that outlast the retries
//! because an event's id is stored already are refused for good ([`AuditError::Database`]).

use crate::chain::{ChainHead, decode};
use crate::storage::effect_name;
use crate::{Appended, AuditError, Batch, PreparedEvent, Receipt, RecordIndex};

mod columns;

use columns::StoredRow;

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const PAGE: i64 = 1000;

/// One sealed record ready to insert: its receipt, indexed columns and stored line. The
/// line is moved into the statement's arguments (SQLite's would otherwise copy it).
type Row<'a> = (&'a Receipt, &'a RecordIndex, String);

/// The rows of a sealed batch: its receipts, its events' indexed columns and its lines.
fn rows<'a>(
    receipts: &'a [Receipt],
    events: &'a [PreparedEvent],
    lines: impl ExactSizeIterator<Item = String>,
) -> impl ExactSizeIterator<Item = Row<'a>> {
    receipts
        .iter()
        .zip(events)
        .zip(lines)
        .map(|((receipt, event), line)| (receipt, event.index(), line))
}

/// How many of the newest records a write that reads the head, and [`head`], check: the
/// newest, and its link to the one before.
///
/// [`head`]: crate::AuditStorage::head
const HEAD_CHECK: usize = 1;

/// How often a batch is sealed again after another writer took its sequence numbers.
const CONFLICT_RETRIES: u32 = 16;

/// Why a write did not land.
enum Failure {
    /// A unique key was taken: another writer moved the head (or the event id exists).
    Conflict(sqlx::Error),
    /// Anything else.
    Other(AuditError),
}

/// An `INSERT` the database reports fewer rows for than it was given did not write them
/// all — a trigger (`RAISE(IGNORE)`), a rule or a policy dropped some silently — so nothing
/// is acknowledged.
fn all_written(rows: u64, expected: usize) -> Result<(), Failure> {
    if usize::try_from(rows).ok() == Some(expected) {
        return Ok(());
    }
    Err(Failure::Other(AuditError::Database(format!(
        "the database stored {rows} of {expected} audit records (a trigger, rule or policy on \
         the audit table dropped the rest); nothing was acknowledged"
    ))))
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(e) if e.is_unique_violation() => Failure::Conflict(err),
            _ => Failure::Other(err.into()),
        }
    }
}

impl From<AuditError> for Failure {
    fn from(err: AuditError) -> Self {
        Failure::Other(err)
    }
}

/// Ids per `outcome_of IN (…)` lookup.
const OUTCOMES_CHUNK: usize = 500;

/// Rows per INSERT statement (one of the padded counts): 12 binds each, so 12,288 at most,
/// under SQLite's limit of 32,766 and PostgreSQL's of 65,535. A batch up to the default `max_batch` is one statement,
/// and so one trip to the database: a batch split over several statements needs a
/// transaction around them, three more trips, and under load each trip waits for a thread.
const INSERT_CHUNK: usize = 1024;

macro_rules! sql_backend {
    (
        $backend:ident, $db:ty, $pool:ty,
        migrations: [$(($version:literal, $sql:expr)),* $(,)?],
        sql: $sqlmod:ident,
        lock: $lock:expr
    ) => {
        #[derive(Debug)]
        pub(crate) struct $backend {
            pool: $pool,
            /// The connection batches are written on, kept between batches (taken out of
            /// the pool). A pooled connection is pinged each time it goes back (sqlx): one
            /// more trip to its thread per batch, spread over every connection's thread.
            /// Dropped after any error but a key conflict, and taken anew from the pool.
            writer: tokio::sync::Mutex<Option<<$db as sqlx::Database>::Connection>>,
            /// The head this backend last wrote or read, if no error came since.
            known_head: std::sync::Mutex<Option<ChainHead>>,
            /// Set once another writer took a sequence number this backend sealed for: the
            /// log is shared, so every later batch takes the locked path. (A writer that
            /// kept inserting on its remembered head without the lock would keep beating
            /// the locked writer between its head read and its insert, until it gave up.)
            shared: std::sync::atomic::AtomicBool,
            /// What runs beside the database for this backend (SQLite's WAL checkpointer),
            /// stopped when the backend is dropped.
            _beside: Option<Box<dyn std::fmt::Debug + Send + Sync>>,
        }

        impl $backend {
            /// A backend on `pool` to append to: the schema migrated, and the newest
            /// `verify_on_open` records checked ([`check_tail`](Self::check_tail)); the
            /// head they end in is where the first batch continues.
            pub(crate) async fn from_pool(pool: $pool, verify_on_open: usize) -> Result<Self, AuditError> {
                let backend = Self::unmigrated(pool);
                backend.migrate().await?;
                let head = Self::check_tail(&backend.pool, verify_on_open)
                    .await?
                    .map_err(AuditError::HeadNotVerified)?;
                backend.remember(Some(head));
                Ok(backend)
            }

            /// A backend on `pool` as it is, for reading only: nothing migrated or checked.
            pub(crate) fn unmigrated(pool: $pool) -> Self {
                $backend {
                    pool,
                    writer: tokio::sync::Mutex::new(None),
                    known_head: std::sync::Mutex::new(None),
                    shared: std::sync::atomic::AtomicBool::new(false),
                    _beside: None,
                }
            }

            /// Checks the newest `window` records (at least one), read with the record
            /// before them, whose hash the first of them must link to: each line's hash
            /// against its content, each link and sequence number, and each row's indexed
            /// columns against its line. A window that reaches the first row checks that it
            /// is record 1, linked to nothing. Returns the head they end in, or the first
            /// violation.
            async fn check_tail<'c, E>(
                executor: E,
                window: usize,
            ) -> Result<Result<ChainHead, crate::verify::Violation>, AuditError>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                let window = window.max(1);
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT ");
                q.push(columns::SELECT_ROW)
                    .push(" FROM portcullis_audit_records ORDER BY seq DESC LIMIT ")
                    .push_bind(i64::try_from(window).unwrap_or(i64::MAX).saturating_add(1));
                let mut rows: Vec<StoredRow> = q.build_query_as().fetch_all(executor).await?;
                rows.reverse();
                let mut verifier = if rows.len() <= window {
                    crate::verify::Verifier::new()
                } else {
                    // Where the anchor is in storage order, as far as its seq column says.
                    let before = rows
                        .first()
                        .and_then(|row| row.1.as_deref())
                        .and_then(|seq| seq.parse::<u64>().ok())
                        .map_or(0, |seq| seq.saturating_sub(1));
                    crate::verify::Verifier::resuming(before, &[])
                };
                for row in rows {
                    let checked = verifier
                        .feed_decoded(row.0.as_bytes())
                        .and_then(|decoded| columns::check_row(&decoded, row));
                    if let Err(violation) = checked {
                        return Ok(Err(violation));
                    }
                }
                Ok(Ok(verifier.head()))
            }

            fn remembered(&self) -> Option<ChainHead> {
                *self.known_head.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
            }

            fn remember(&self, head: Option<ChainHead>) {
                *self.known_head.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = head;
            }

            /// One `INSERT` for `rows`, padded ([`portcullis_sql::padded_rows`]) so that
            /// batches of similar size share one prepared statement.
            fn insert<'q>(rows: impl ExactSizeIterator<Item = Row<'q>>) -> sqlx::QueryBuilder<'q, $db> {
                let mut q = sqlx::QueryBuilder::<$db>::new("");
                portcullis_sql::push_padded_insert(
                    &mut q,
                    "portcullis_audit_records (seq, id, time_ms, kind, actor, action, resource, effect, correlation_id, outcome_of, hash, line)",
                    rows,
                    |mut b, (receipt, cols, line)| {
                        b.push_bind(as_i64(receipt.seq))
                            .push_bind(receipt.id.as_str())
                            .push_bind(as_i64(cols.time_ms))
                            .push_bind(cols.kind.as_str())
                            .push_bind(cols.actor.as_str())
                            .push_bind(cols.action.as_str())
                            .push_bind(cols.resource.as_str())
                            .push_bind(cols.effect.as_deref())
                            .push_bind(cols.correlation_id.as_deref())
                            .push_bind(cols.outcome_of.as_deref())
                            .push_bind(receipt.hash.as_str())
                            .push_bind(line);
                    },
                    // seq first: NULL marks the row as padding.
                    |mut b| {
                        b.push_bind(None::<i64>)
                            .push_bind(None::<&str>)
                            .push_bind(None::<i64>);
                        for _ in 0..9 {
                            b.push_bind(None::<&str>);
                        }
                    },
                );
                q
            }

            /// Writes `batch` sealed on `head` by one `INSERT`; or, with no head or a batch too
            /// large for one statement, as one transaction that reads the head under the
            /// writer lock. Returns the receipts and the new head.
            async fn write(
                &self,
                head: Option<ChainHead>,
                batch: &Batch,
            ) -> Result<Appended, Failure> {
                let mut held = self.writer.lock().await;
                let connection = match &mut *held {
                    Some(connection) => connection,
                    None => held.insert(self.pool.acquire().await?.detach()),
                };
                let written = Self::write_on(connection, head, batch).await;
                if let Err(Failure::Other(_)) = written {
                    // The connection may be what failed: the next batch takes a new one.
                    *held = None;
                }
                written
            }

            async fn write_on(
                connection: &mut <$db as sqlx::Database>::Connection,
                head: Option<ChainHead>,
                batch: &Batch,
            ) -> Result<Appended, Failure> {
                use sqlx::Connection as _;
                // PostgreSQL may have other instances: an unlocked insert there could keep
                // taking the sequence numbers a locked writer sealed (starving it), so only a
                // backend without a lock takes the fast path.
                let lockless = ($lock).is_none();
                if let Some(head) = head.filter(|_| lockless && batch.len() <= INSERT_CHUNK) {
                    let (lines, appended) = batch.seal(head)?.into_lines();
                    let done =
                        Self::insert(rows(appended.receipts(), batch.events(), lines.into_iter()))
                            .build()
                            .execute(&mut *connection)
                            .await?;
                    all_written(done.rows_affected(), appended.receipts().len())?;
                    return Ok(appended);
                }
                let mut tx = connection.begin_with(portcullis_sql::$sqlmod::BEGIN_WRITE).await?;
                if let Some(key) = $lock {
                    // One locked writer at a time across every instance.
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
                // The head as stored, checked as opening checks it: never chain onto a record
                // (or `hash` column) changed since it was written.
                let head = Self::check_tail(&mut *tx, HEAD_CHECK)
                    .await?
                    .map_err(AuditError::HeadNotVerified)?;
                let (lines, appended) = batch.seal(head)?.into_lines();
                let mut lines = lines.into_iter();
                let chunks = appended
                    .receipts()
                    .chunks(INSERT_CHUNK)
                    .zip(batch.events().chunks(INSERT_CHUNK));
                for (receipts, events) in chunks {
                    let chunk = rows(receipts, events, lines.by_ref().take(receipts.len()));
                    let done = Self::insert(chunk).build().execute(&mut *tx).await?;
                    all_written(done.rows_affected(), receipts.len())?;
                }
                tx.commit().await?;
                Ok(appended)
            }

            /// The first id of `batch`'s events that a stored record has.
            async fn first_stored(&self, batch: &Batch) -> Result<Option<String>, AuditError> {
                for chunk in batch.events().chunks(OUTCOMES_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT id FROM portcullis_audit_records WHERE id IN (",
                    );
                    let mut list = q.separated(", ");
                    for event in chunk {
                        list.push_bind(event.id());
                    }
                    q.push(") LIMIT 1");
                    let found: Option<String> =
                        q.build_query_scalar().fetch_optional(&self.pool).await?;
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                Ok(None)
            }

            async fn migrate(&self) -> Result<(), AuditError> {
                const MIGRATIONS: &[(i64, &str)] = &[$(($version, $sql)),*];
                portcullis_sql::$sqlmod::migrate(&self.pool, "portcullis_audit_schema", $lock, MIGRATIONS).await?;
                Ok(())
            }

            /// Pushes onto `q` the `SELECT` of the lines `query` asks for: one more than its
            /// limit, to tell whether more follow.
            pub(crate) fn push_select(q: &mut sqlx::QueryBuilder<'_, $db>, query: &crate::AuditQuery) {
                q.push("SELECT line FROM portcullis_audit_records WHERE seq > ");
                q.push_bind(as_i64(query.after_seq.unwrap_or(0)));
                if let Some(actor) = &query.actor {
                    q.push(" AND actor = ").push_bind(actor.clone());
                }
                if let Some(action) = &query.action {
                    q.push(" AND action = ").push_bind(action.to_string());
                }
                if let Some(resource) = &query.resource {
                    q.push(" AND resource = ").push_bind(resource.to_string());
                }
                if let Some(scope) = &query.within {
                    // Equality and byte-order ranges on `resource` (PostgreSQL's column
                    // collates as "C"), each served by the (resource, seq) index.
                    let (exact, ranges) = scope.sql_ranges();
                    q.push(" AND (resource = ").push_bind(exact);
                    for (from, to) in ranges {
                        q.push(" OR (resource >= ")
                            .push_bind(from)
                            .push(" AND resource < ")
                            .push_bind(to)
                            .push(")");
                    }
                    q.push(")");
                }
                if let Some(effect) = query.effect {
                    q.push(" AND effect = ").push_bind(effect_name(effect));
                }
                if let Some(kind) = query.kind {
                    q.push(" AND kind = ").push_bind(kind.as_str());
                }
                if let Some(from) = query.from_ms {
                    q.push(" AND time_ms >= ").push_bind(as_i64(from));
                }
                if let Some(to) = query.to_ms {
                    q.push(" AND time_ms < ").push_bind(as_i64(to));
                }
                if let Some(correlation) = &query.correlation_id {
                    q.push(" AND correlation_id = ").push_bind(correlation.clone());
                }
                q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(query.limit) + 1);
            }

            async fn lines_after(&self, after_seq: u64, limit: i64) -> Result<Vec<String>, AuditError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT line FROM portcullis_audit_records WHERE seq > ",
                );
                q.push_bind(as_i64(after_seq))
                    .push(" ORDER BY seq LIMIT ")
                    .push_bind(limit);
                Ok(q.build_query_scalar().fetch_all(&self.pool).await?)
            }
        }

        #[async_trait::async_trait]
        impl crate::AuditStorage for $backend {
            async fn append(&self, batch: &Batch) -> Result<Appended, AuditError> {
                use std::sync::atomic::Ordering;
                let mut head = self.remembered().filter(|_| !self.shared.load(Ordering::Relaxed));
                // Forgotten until this write is known to have landed.
                self.remember(None);
                let mut attempt = 0;
                loop {
                    match self.write(head, batch).await {
                        Ok(appended) => {
                            self.remember(Some(appended.head()));
                            return Ok(appended);
                        }
                        // Someone else wrote this seq: read the real head and seal again.
                        Err(Failure::Conflict(_)) if attempt < CONFLICT_RETRIES => {
                            attempt += 1;
                            head = None;
                            self.shared.store(true, Ordering::Relaxed);
                        }
                        Err(Failure::Conflict(e)) => {
                            // An event id already stored conflicts on every attempt: that
                            // batch is refused for good. Otherwise other writers kept winning,
                            // which passes.
                            if let Some(id) = self.first_stored(batch).await? {
                                return Err(AuditError::Database(format!(
                                    "an audit record with the id {id:?} is stored already: {e}"
                                )));
                            }
                            return Err(AuditError::Unavailable(format!(
                                "still conflicting with other writers after {CONFLICT_RETRIES} attempts: {e}"
                            )));
                        }
                        Err(Failure::Other(e)) => return Err(e),
                    }
                }
            }

            /// The row with the event's id, by its index.
            async fn holds(&self, event: &PreparedEvent) -> Result<bool, AuditError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT line FROM portcullis_audit_records WHERE id = ",
                );
                q.push_bind(event.id().to_owned());
                let line: Option<String> = q.build_query_scalar().fetch_optional(&self.pool).await?;
                let Some(line) = line else { return Ok(false) };
                Ok(decode(line.as_bytes())?.event == crate::storage::prepared_value(event)?)
            }

            /// Committed with full sync (SQLite) or by PostgreSQL's commit.
            fn is_durable(&self) -> bool {
                true
            }

            /// The indexed columns are inserted beside each line.
            fn wants_index(&self) -> bool {
                true
            }

            async fn head(&self) -> Result<ChainHead, AuditError> {
                Self::check_tail(&self.pool, HEAD_CHECK)
                    .await?
                    .map_err(AuditError::HeadNotVerified)
            }

            /// Indexed columns included.
            async fn verify_tail(
                &self,
                window: usize,
            ) -> Result<Result<ChainHead, crate::verify::Violation>, AuditError> {
                Self::check_tail(&self.pool, window).await
            }

            async fn scan(&self, after_seq: u64, limit: usize) -> Result<Vec<String>, AuditError> {
                self.lines_after(after_seq, i64::try_from(limit).unwrap_or(PAGE)).await
            }

            async fn verify(
                &self,
                after_seq: u64,
                mut verifier: crate::verify::Verifier,
            ) -> Result<Result<crate::verify::Verifier, crate::verify::Violation>, AuditError> {
                // Storage order is sequence order here; a missing row, or one whose seq
                // column disagrees with its line, shows as a broken sequence or link, or as
                // a mismatch of the seq column. Each row's other indexed columns must hold
                // what its line says: queries find records by them.
                let mut after = after_seq;
                loop {
                    let mut q = sqlx::QueryBuilder::<$db>::new("SELECT ");
                    q.push(columns::SELECT_ROW)
                        .push(" FROM portcullis_audit_records WHERE seq > ")
                        .push_bind(as_i64(after))
                        .push(" ORDER BY seq LIMIT ")
                        .push_bind(PAGE);
                    let rows: Vec<StoredRow> = q.build_query_as().fetch_all(&self.pool).await?;
                    if rows.is_empty() {
                        return Ok(Ok(verifier));
                    }
                    for row in rows {
                        let checked = verifier
                            .feed_decoded(row.0.as_bytes())
                            .and_then(|decoded| columns::check_row(&decoded, row));
                        if let Err(v) = checked {
                            return Ok(Err(v));
                        }
                    }
                    after = verifier.head().seq;
                }
            }

            async fn query(&self, query: &crate::AuditQuery) -> Result<crate::AuditPage, AuditError> {
                let mut q = sqlx::QueryBuilder::<$db>::new("");
                Self::push_select(&mut q, query);
                let lines: Vec<String> = q.build_query_scalar().fetch_all(&self.pool).await?;
                let records = lines
                    .iter()
                    .map(|l| decode(l.as_bytes())?.into_record())
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(crate::AuditPage::from_fetched(records, query.limit))
            }

            async fn outcomes_of(
                &self,
                ids: &[&str],
                after_seq: u64,
            ) -> Result<Vec<crate::AuditRecord>, AuditError> {
                let mut found = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for chunk in ids.chunks(OUTCOMES_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT line FROM portcullis_audit_records WHERE seq > ",
                    );
                    q.push_bind(as_i64(after_seq)).push(" AND outcome_of IN (");
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    q.push(") ORDER BY seq");
                    let lines: Vec<String> = q.build_query_scalar().fetch_all(&self.pool).await?;
                    for line in lines {
                        let record = decode(line.as_bytes())?.into_record()?;
                        // The first outcome of each intent, as `get` answers.
                        if let Some(of) = record.event.outcome_of.clone()
                            && seen.insert(of)
                        {
                            found.push(record);
                        }
                    }
                }
                Ok(found)
            }

            async fn get(&self, id: &str) -> Result<Option<crate::WithOutcome>, AuditError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT line FROM portcullis_audit_records WHERE id = ",
                );
                q.push_bind(id.to_owned());
                let line: Option<String> = q.build_query_scalar().fetch_optional(&self.pool).await?;
                let Some(line) = line else { return Ok(None) };
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT line FROM portcullis_audit_records WHERE outcome_of = ",
                );
                q.push_bind(id.to_owned()).push(" ORDER BY seq LIMIT 1");
                let outcome: Option<String> = q.build_query_scalar().fetch_optional(&self.pool).await?;
                Ok(Some(crate::WithOutcome {
                    event: decode(line.as_bytes())?.into_record()?,
                    outcome: outcome.map(|l| decode(l.as_bytes())?.into_record()).transpose()?,
                }))
            }
        }
    };
}

/// How often a SQLite log's WAL is checkpointed, beside the writer.
#[cfg(feature = "sqlite")]
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

#[cfg(feature = "sqlite")]
mod sqlite {
    use sqlx::sqlite::SqliteSynchronous;

    use super::*;

    sql_backend!(
        SqliteBackend, sqlx::Sqlite, sqlx::SqlitePool,
        migrations: [
            (1, include_str!("../../migrations/0001_records.sql")),
            (2, include_str!("../../migrations/0002_sqlite_rowid.sql")),
        ],
        sql: sqlite,
        // Takes the write lock before reading the head: a deferred transaction that read
        // first could not upgrade once another connection had written (SQLITE_BUSY_SNAPSHOT).
        lock: None::<i64>
    );

    impl SqliteBackend {
        pub(crate) async fn connect(url: &str, verify_on_open: usize) -> Result<Self, AuditError> {
            use portcullis_sql::sqlite::{Checkpointer, is_in_memory, without_auto_checkpoint};
            let pool = portcullis_sql::sqlite::pool(url, |options| {
                without_auto_checkpoint(options.synchronous(SqliteSynchronous::Full))
            })
            .await?;
            let mut backend = Self::from_pool(pool.clone(), verify_on_open).await?;
            // Commits only append to the WAL; copying it into the database (and syncing
            // that) happens beside them, not inside the commit every writer waits for.
            if !is_in_memory(url) {
                backend._beside = Some(Box::new(Checkpointer::start(pool, CHECKPOINT_EVERY)));
            }
            Ok(backend)
        }

        /// The log at `url`, to read only: the file must exist; nothing is migrated,
        /// checked or written.
        pub(crate) async fn connect_read_only(url: &str) -> Result<Self, AuditError> {
            let pool =
                portcullis_sql::sqlite::pool(url, |options| options.create_if_missing(false))
                    .await?;
            Ok(Self::unmigrated(pool))
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::postgres::PgPoolOptions;

    use super::*;

    sql_backend!(
        PostgresBackend, sqlx::Postgres, sqlx::PgPool,
        migrations: [
            (1, include_str!("../../migrations/0001_records.sql")),
            (2, include_str!("../../migrations/0002_postgres_partial.sql")),
            (3, include_str!("../../migrations/0003_postgres_resource_bytes.sql")),
        ],
        // One writer at a time across every instance, so the chain stays a single chain.
        sql: postgres,
        lock: Some(7283901234567002_i64)
    );

    impl PostgresBackend {
        pub(crate) async fn connect(url: &str, verify_on_open: usize) -> Result<Self, AuditError> {
            let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
            Self::from_pool(pool, verify_on_open).await
        }

        /// The log at `url`, to read only: nothing is migrated, checked or written.
        pub(crate) async fn connect_read_only(url: &str) -> Result<Self, AuditError> {
            let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
            Ok(Self::unmigrated(pool))
        }
    }
}

#[cfg(feature = "postgres")]
pub(crate) use postgres::PostgresBackend;
#[cfg(feature = "sqlite")]
pub(crate) use sqlite::SqliteBackend;

#[cfg(test)]
mod tests;
