//! [`SqlitePipelineStore`]: pipeline state and history in one SQLite file.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use portcullis_policy::ArtifactState;
use sqlx::{Row, SqlitePool};

use super::rows as read;
use super::{
    Change, EventRecord, FetchRecord, HostCounts, HostStatus, PipelineStore, Pruned, Retention,
    RevisionRecord,
};
use crate::group::GroupCommit;
use crate::{DeliveryError, RevisionId};

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE delivery_revisions (
        artifact TEXT NOT NULL,
        revision TEXT NOT NULL,
        bundle_revision TEXT NOT NULL,
        size BIGINT NOT NULL,
        published_by TEXT NOT NULL,
        published_at_ms BIGINT NOT NULL,
        PRIMARY KEY (artifact, revision)
    );
    CREATE TABLE delivery_states (
        artifact TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    CREATE TABLE delivery_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms BIGINT NOT NULL,
        artifact TEXT NOT NULL,
        revision TEXT,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX delivery_events_artifact ON delivery_events (artifact, id);
    CREATE TABLE delivery_host_status (
        spiffe_id TEXT NOT NULL,
        bundle TEXT NOT NULL,
        active_revision TEXT,
        error TEXT,
        reported_at_ms BIGINT NOT NULL,
        PRIMARY KEY (spiffe_id, bundle)
    );
    CREATE TABLE delivery_fetches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms BIGINT NOT NULL,
        spiffe_id TEXT NOT NULL,
        artifact TEXT NOT NULL,
        revision TEXT NOT NULL
    );
    CREATE INDEX delivery_fetches_artifact ON delivery_fetches (artifact, id);",
    ),
    // One bundle's reports, for the hosts of one artifact, without reading every bundle's.
    (
        2,
        "CREATE INDEX delivery_host_status_bundle ON delivery_host_status (bundle, spiffe_id);",
    ),
    // Each host's own counts for a candidate in a step, judged besides their sum.
    (
        3,
        "CREATE TABLE delivery_host_counts (
        artifact TEXT NOT NULL,
        revision TEXT NOT NULL,
        step BIGINT NOT NULL,
        spiffe_id TEXT NOT NULL,
        decisions BIGINT NOT NULL,
        denies BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        PRIMARY KEY (artifact, revision, step, spiffe_id)
    );",
    ),
];

/// Pipeline state and history in SQLite (`sqlite://FILE` or `sqlite::memory:`).
///
/// Hosts' downloads and status reports, thousands a second from a large fleet, are
/// written with group commit: each is durable before its call returns, and calls made
/// while a transaction is being written share the next one.
#[derive(Debug, Clone)]
pub struct SqlitePipelineStore {
    pool: SqlitePool,
    writes: Arc<GroupCommit<HostWrite, ()>>,
    /// Held by every write transaction. SQLite takes one writer at a time; a second one
    /// waits in its busy handler, which sleeps in steps of up to 100 ms and can lose to
    /// the next transaction again and again — pipeline changes behind a stream of host
    /// writes waited seconds. In this queue they take turns.
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// A host's download or status report, waiting for its transaction.
#[derive(Debug)]
enum HostWrite {
    Fetch(FetchRecord),
    Status(Vec<HostStatus>),
}

/// Rows per multi-row statement (one of [`portcullis_sql::padded_rows`]' counts): 5 binds
/// each, far under SQLite's limit of 32,766.
const ROWS_PER_STATEMENT: usize = 1024;

/// Writes `batch` in one transaction, a statement per table and 1,024 rows: each statement
/// is one trip to the connection's thread, and under load each trip waits for that thread
/// to be scheduled.
async fn write_batch(pool: &SqlitePool, batch: &[HostWrite]) -> Result<(), DeliveryError> {
    let mut fetches = Vec::new();
    let mut statuses = Vec::new();
    for write in batch {
        match write {
            HostWrite::Fetch(fetch) => fetches.push(fetch),
            // In the order they came: of two reports about one bundle, the later stays.
            HostWrite::Status(reported) => statuses.extend(reported),
        }
    }
    let mut tx = pool.begin_with(portcullis_sql::sqlite::BEGIN_WRITE).await?;
    for chunk in fetches.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
        portcullis_sql::push_padded_insert(
            &mut q,
            "delivery_fetches (at_ms, spiffe_id, artifact, revision)",
            chunk.iter(),
            |mut row, f| {
                row.push_bind(to_db(f.at_ms))
                    .push_bind(f.spiffe_id.as_str())
                    .push_bind(f.artifact.as_str())
                    .push_bind(f.revision.as_str());
            },
            // at_ms first: NULL marks the row as padding.
            |mut row| {
                row.push_bind(None::<i64>)
                    .push_bind(None::<&str>)
                    .push_bind(None::<&str>)
                    .push_bind(None::<&str>);
            },
        );
        q.build().execute(&mut *tx).await?;
    }
    for chunk in statuses.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
        portcullis_sql::push_padded_insert(
            &mut q,
            "delivery_host_status (spiffe_id, bundle, active_revision, error, reported_at_ms)",
            chunk.iter(),
            |mut row, s| {
                row.push_bind(s.spiffe_id.as_str())
                    .push_bind(s.bundle.as_str())
                    .push_bind(s.active_revision.as_deref())
                    .push_bind(s.error.as_deref())
                    .push_bind(to_db(s.reported_at_ms));
            },
            // spiffe_id first: NULL marks the row as padding.
            |mut row| {
                row.push_bind(None::<&str>)
                    .push_bind(None::<&str>)
                    .push_bind(None::<&str>)
                    .push_bind(None::<&str>)
                    .push_bind(None::<i64>);
            },
        );
        // Rows are upserted in order: of two reports in one statement, the later stays.
        q.push(
            " ON CONFLICT (spiffe_id, bundle) DO UPDATE \
             SET active_revision = excluded.active_revision, error = excluded.error, \
             reported_at_ms = excluded.reported_at_ms",
        );
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn to_db(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl SqlitePipelineStore {
    /// Opens (creating and migrating) the database at `url`.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if it cannot be opened or migrated.
    pub async fn open(url: &str) -> Result<SqlitePipelineStore, DeliveryError> {
        let pool = portcullis_sql::sqlite::pool(url, |options| options).await?;
        portcullis_sql::sqlite::migrate(&pool, "delivery_schema", None, MIGRATIONS).await?;
        Ok(SqlitePipelineStore {
            pool,
            writes: Arc::new(GroupCommit::default()),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Writes `write` in the next group-committed transaction; returns once it is durable.
    async fn host_write(&self, write: HostWrite) -> Result<(), DeliveryError> {
        let (batch, answer) = self.writes.submit(write).await;
        if let Some(batch) = batch {
            let (pool, writer) = (self.pool.clone(), self.writer.clone());
            // On a task of its own: a caller that goes away mid-write (its client hung up)
            // does not leave the others in its batch unanswered.
            tokio::spawn(async move {
                let writing = writer.lock().await;
                let written = write_batch(&pool, batch.items()).await;
                drop(writing);
                let count = batch.items().len();
                batch.answer(written.map(|()| vec![(); count]));
            });
        }
        answer.wait().await
    }
}

#[async_trait]
impl PipelineStore for SqlitePipelineStore {
    async fn load_states(&self) -> Result<BTreeMap<String, ArtifactState>, DeliveryError> {
        let rows = sqlx::query("SELECT artifact, state FROM delivery_states")
            .fetch_all(&self.pool)
            .await?;
        let mut states = BTreeMap::new();
        for row in rows {
            let artifact: String = row.try_get("artifact")?;
            let text: String = row.try_get("state")?;
            let state: ArtifactState = serde_json::from_str(&text).map_err(|e| {
                DeliveryError::Store(format!(
                    "the saved state of {artifact:?} does not parse: {e}"
                ))
            })?;
            states.insert(artifact, state);
        }
        Ok(states)
    }

    async fn commit(&self, change: Change) -> Result<(), DeliveryError> {
        let _writing = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with(portcullis_sql::sqlite::BEGIN_WRITE)
            .await?;
        if let Some(r) = &change.revision {
            let inserted = sqlx::query(
                "INSERT INTO delivery_revisions (artifact, revision, bundle_revision, size, \
                 published_by, published_at_ms) VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&r.artifact)
            .bind(r.revision.as_str())
            .bind(&r.bundle_revision)
            .bind(to_db(r.size))
            .bind(&r.published_by)
            .bind(to_db(r.published_at_ms))
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(DeliveryError::Exists {
                    artifact: r.artifact.clone(),
                    revision: r.revision.to_string(),
                });
            }
        }
        for (artifact, state) in &change.states {
            let text = serde_json::to_string(state)
                .map_err(|e| DeliveryError::Store(format!("state of {artifact:?}: {e}")))?;
            sqlx::query(
                "INSERT INTO delivery_states (artifact, state) VALUES (?, ?) \
                 ON CONFLICT (artifact) DO UPDATE SET state = excluded.state",
            )
            .bind(artifact)
            .bind(text)
            .execute(&mut *tx)
            .await?;
        }
        for e in &change.events {
            sqlx::query(
                "INSERT INTO delivery_events (at_ms, artifact, revision, kind, actor, message) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(to_db(e.at_ms))
            .bind(&e.artifact)
            .bind(&e.revision)
            .bind(&e.kind)
            .bind(&e.actor)
            .bind(&e.message)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in change.host_counts.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO delivery_host_counts \
                 (artifact, revision, step, spiffe_id, decisions, denies, errors) ",
            );
            q.push_values(chunk, |mut row, c| {
                row.push_bind(&c.artifact)
                    .push_bind(&c.revision)
                    .push_bind(i64::from(c.step))
                    .push_bind(&c.spiffe_id)
                    .push_bind(to_db(c.metrics.decisions))
                    .push_bind(to_db(c.metrics.denies))
                    .push_bind(to_db(c.metrics.errors));
            });
            q.push(
                " ON CONFLICT (artifact, revision, step, spiffe_id) DO UPDATE SET \
                 decisions = excluded.decisions, denies = excluded.denies, \
                 errors = excluded.errors",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn has_revision(
        &self,
        artifact: &str,
        revision: &RevisionId,
    ) -> Result<bool, DeliveryError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM delivery_revisions WHERE artifact = ? AND revision = ?",
        )
        .bind(artifact)
        .bind(revision.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn revisions(&self, artifact: &str) -> Result<Vec<RevisionRecord>, DeliveryError> {
        let rows = sqlx::query(
            "SELECT revision, bundle_revision, size, published_by, published_at_ms \
             FROM delivery_revisions WHERE artifact = ? ORDER BY published_at_ms, revision",
        )
        .bind(artifact)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| read::revision(artifact, row))
            .collect()
    }

    async fn events(
        &self,
        artifact: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, DeliveryError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, artifact, revision, kind, actor, message FROM delivery_events \
             WHERE ?1 IS NULL OR artifact = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(artifact)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut events = rows
            .iter()
            .map(read::event)
            .collect::<Result<Vec<_>, DeliveryError>>()?;
        events.reverse();
        Ok(events)
    }

    async fn record_status(&self, statuses: &[HostStatus]) -> Result<(), DeliveryError> {
        if statuses.is_empty() {
            return Ok(());
        }
        self.host_write(HostWrite::Status(statuses.to_vec())).await
    }

    async fn host_statuses(&self) -> Result<Vec<HostStatus>, DeliveryError> {
        let rows = sqlx::query(
            "SELECT spiffe_id, bundle, active_revision, error, reported_at_ms \
             FROM delivery_host_status ORDER BY spiffe_id, bundle",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read::host_status).collect()
    }

    async fn host_statuses_of(&self, bundle: &str) -> Result<Vec<HostStatus>, DeliveryError> {
        let rows = sqlx::query(
            "SELECT spiffe_id, bundle, active_revision, error, reported_at_ms \
             FROM delivery_host_status WHERE bundle = ? ORDER BY spiffe_id",
        )
        .bind(bundle)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read::host_status).collect()
    }

    async fn record_fetch(&self, fetch: &FetchRecord) -> Result<(), DeliveryError> {
        self.host_write(HostWrite::Fetch(fetch.clone())).await
    }

    async fn fetches(&self, artifact: &str) -> Result<Vec<FetchRecord>, DeliveryError> {
        let rows = sqlx::query(
            "SELECT at_ms, spiffe_id, artifact, revision FROM delivery_fetches \
             WHERE artifact = ? ORDER BY id",
        )
        .bind(artifact)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read::fetch).collect()
    }

    async fn host_counts(&self) -> Result<Vec<HostCounts>, DeliveryError> {
        let rows = sqlx::query(
            "SELECT artifact, revision, step, spiffe_id, decisions, denies, errors \
             FROM delivery_host_counts",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read::host_counts).collect()
    }

    async fn prune(&self, retention: &Retention) -> Result<Pruned, DeliveryError> {
        let mut pruned = Pruned::default();
        // Hosts' counts of revisions no longer in flight.
        {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "DELETE FROM delivery_host_counts WHERE 1 = 1",
            );
            for (artifact, revision) in &retention.keep_revisions {
                q.push(" AND NOT (artifact = ")
                    .push_bind(artifact.as_str())
                    .push(" AND revision = ")
                    .push_bind(revision.as_str())
                    .push(")");
            }
            let _writing = self.writer.lock().await;
            pruned.host_counts = q.build().execute(&self.pool).await?.rows_affected();
        }
        // Downloads: a chunk per transaction, so hosts' writes queued behind the writer
        // wait for one chunk at most.
        loop {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "DELETE FROM delivery_fetches WHERE id IN (SELECT id FROM delivery_fetches \
                 WHERE at_ms < ",
            );
            q.push_bind(to_db(retention.fetches_before_ms));
            for (artifact, revision) in &retention.keep_revisions {
                q.push(" AND NOT (artifact = ")
                    .push_bind(artifact.as_str())
                    .push(" AND revision = ")
                    .push_bind(revision.as_str())
                    .push(")");
            }
            q.push(" LIMIT ").push_bind(PRUNE_CHUNK).push(")");
            let deleted = {
                let _writing = self.writer.lock().await;
                q.build().execute(&self.pool).await?.rows_affected()
            };
            pruned.fetches = pruned.fetches.saturating_add(deleted);
            if deleted < u64::try_from(PRUNE_CHUNK).unwrap_or(u64::MAX) {
                break;
            }
        }
        if let Some(keep) = retention.events_per_artifact {
            let artifacts: Vec<String> =
                sqlx::query_scalar("SELECT DISTINCT artifact FROM delivery_events")
                    .fetch_all(&self.pool)
                    .await?;
            for artifact in artifacts {
                // The oldest event kept (keeping none: every event goes).
                let oldest_kept: Option<i64> = if keep == 0 {
                    Some(i64::MAX)
                } else {
                    sqlx::query_scalar(
                        "SELECT id FROM delivery_events WHERE artifact = ? \
                         ORDER BY id DESC LIMIT 1 OFFSET ?",
                    )
                    .bind(&artifact)
                    .bind(i64::from(keep.saturating_sub(1)))
                    .fetch_optional(&self.pool)
                    .await?
                };
                let Some(oldest_kept) = oldest_kept else {
                    continue;
                };
                let _writing = self.writer.lock().await;
                let deleted =
                    sqlx::query("DELETE FROM delivery_events WHERE artifact = ? AND id < ?")
                        .bind(&artifact)
                        .bind(oldest_kept)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                pruned.events = pruned.events.saturating_add(deleted);
            }
        }
        Ok(pruned)
    }
}

/// Rows deleted per transaction by [`PipelineStore::prune`].
const PRUNE_CHUNK: i64 = 10_000;
