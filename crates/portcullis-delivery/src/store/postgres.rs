//! [`PostgresPipelineStore`]: pipeline state and history in PostgreSQL, shared by several
//! delivery instances.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use portcullis_policy::ArtifactState;
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{Connection as _, PgPool, Postgres, Row, Transaction};

use super::rows as read;
use super::{
    Change, ChangeLock, EventRecord, FetchRecord, HostCounts, HostStatus, PipelineStore, Pruned,
    Retention, RevisionRecord,
};
use crate::group::GroupCommit;
use crate::{DeliveryError, RevisionId};

/// The `NOTIFY` channel every committed pipeline change is announced on (at commit, by a
/// trigger on the version row): hand [`PostgresPipelineStore::listen`]'s wake-up to
/// [`Pipeline::spawn_refresher`](crate::Pipeline::spawn_refresher).
pub const CHANGE_CHANNEL: &str = "portcullis_delivery";

/// Instances starting together take turns migrating.
const MIGRATION_LOCK: i64 = 7_283_901_234_567_301;
/// Held (session-level) by the instance that leads.
const LEADER_LOCK: i64 = 7_283_901_234_567_302;

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"CREATE TABLE delivery_revisions (
        artifact TEXT COLLATE "C" NOT NULL,
        revision TEXT COLLATE "C" NOT NULL,
        bundle_revision TEXT NOT NULL,
        size BIGINT NOT NULL,
        published_by TEXT NOT NULL,
        published_at_ms BIGINT NOT NULL,
        PRIMARY KEY (artifact, revision)
    );
    CREATE TABLE delivery_states (
        artifact TEXT COLLATE "C" PRIMARY KEY,
        state TEXT NOT NULL
    );
    CREATE TABLE delivery_events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        artifact TEXT COLLATE "C" NOT NULL,
        revision TEXT,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX delivery_events_artifact ON delivery_events (artifact, id);
    CREATE TABLE delivery_host_status (
        spiffe_id TEXT COLLATE "C" NOT NULL,
        bundle TEXT COLLATE "C" NOT NULL,
        active_revision TEXT,
        error TEXT,
        reported_at_ms BIGINT NOT NULL,
        PRIMARY KEY (spiffe_id, bundle)
    );
    CREATE INDEX delivery_host_status_bundle ON delivery_host_status (bundle, spiffe_id);
    CREATE TABLE delivery_fetches (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        spiffe_id TEXT COLLATE "C" NOT NULL,
        artifact TEXT COLLATE "C" NOT NULL,
        revision TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX delivery_fetches_artifact ON delivery_fetches (artifact, id);
    CREATE INDEX delivery_fetches_host ON delivery_fetches (artifact, revision, spiffe_id);
    -- One row: locked (FOR UPDATE) by the instance changing pipeline state, moved on by
    -- every change, and announced on the change channel at commit.
    CREATE TABLE delivery_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    );
    INSERT INTO delivery_version (id, version) VALUES (1, 0);
    CREATE OR REPLACE FUNCTION portcullis_delivery_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('portcullis_delivery', '');
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER portcullis_delivery_notify
        AFTER UPDATE ON delivery_version
        FOR EACH STATEMENT EXECUTE FUNCTION portcullis_delivery_notify();"#,
    ),
    // Each host's own counts for a candidate in a step, judged besides their sum.
    (
        2,
        r#"CREATE TABLE delivery_host_counts (
        artifact TEXT COLLATE "C" NOT NULL,
        revision TEXT COLLATE "C" NOT NULL,
        step BIGINT NOT NULL,
        spiffe_id TEXT COLLATE "C" NOT NULL,
        decisions BIGINT NOT NULL,
        denies BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        PRIMARY KEY (artifact, revision, step, spiffe_id)
    );"#,
    ),
];

/// Pipeline state and history in PostgreSQL (`postgres://…`), for several delivery
/// instances on one database. The tables and their meaning are `SqlitePipelineStore`'s;
/// besides:
///
/// - every change takes the version row `FOR UPDATE` in its transaction
///   ([`lock_for_change`](PipelineStore::lock_for_change)), so changes from all instances
///   are applied one at a time, each to the state the previous one stored;
/// - every commit moves the [`version`](PipelineStore::version) on and notifies
///   [`CHANGE_CHANNEL`] ([`listen`](PostgresPipelineStore::listen));
/// - one instance [leads](PipelineStore::lead): the one holding a session-level advisory
///   lock on a connection of its own, released when that instance's connection ends.
///
/// Hosts' downloads and status reports are written with group commit, as SQLite's are.
#[derive(Debug, Clone)]
pub struct PostgresPipelineStore {
    pool: PgPool,
    writes: Arc<GroupCommit<HostWrite, ()>>,
    /// The connection holding (or trying for) the leader lock, and whether it holds it.
    leader: Arc<tokio::sync::Mutex<Option<(PgConnection, bool)>>>,
}

/// A host's download or status report, waiting for its transaction.
#[derive(Debug)]
enum HostWrite {
    Fetch(FetchRecord),
    Status(Vec<HostStatus>),
}

/// Rows per multi-row statement (one of [`portcullis_sql::padded_rows`]' counts): 5 binds
/// each, far under PostgreSQL's limit of 65,535.
const ROWS_PER_STATEMENT: usize = 1024;

fn to_db(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Writes `batch` in one transaction, a statement per table and 1,024 rows.
async fn write_batch(pool: &PgPool, batch: &[HostWrite]) -> Result<(), DeliveryError> {
    let mut fetches = Vec::new();
    // One row per (host, bundle), the last reported: PostgreSQL refuses a statement that
    // upserts one row twice.
    let mut statuses: Vec<&HostStatus> = Vec::new();
    let mut index: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::new();
    for write in batch {
        match write {
            HostWrite::Fetch(fetch) => fetches.push(fetch),
            HostWrite::Status(reported) => {
                for s in reported {
                    match index.entry((s.spiffe_id.as_str(), s.bundle.as_str())) {
                        std::collections::hash_map::Entry::Occupied(at) => {
                            if let Some(slot) = statuses.get_mut(*at.get()) {
                                *slot = s;
                            }
                        }
                        std::collections::hash_map::Entry::Vacant(at) => {
                            at.insert(statuses.len());
                            statuses.push(s);
                        }
                    }
                }
            }
        }
    }
    let mut tx = pool.begin().await?;
    for chunk in fetches.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<Postgres>::new("");
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
        let mut q = sqlx::QueryBuilder::<Postgres>::new("");
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

/// Writes `change` in `tx` and moves the version on (the trigger notifies at commit).
async fn write_change(tx: &mut PgConnection, change: &Change) -> Result<(), DeliveryError> {
    if let Some(r) = &change.revision {
        let inserted = sqlx::query(
            "INSERT INTO delivery_revisions (artifact, revision, bundle_revision, size, \
             published_by, published_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
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
            "INSERT INTO delivery_states (artifact, state) VALUES ($1, $2) \
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
             VALUES ($1, $2, $3, $4, $5, $6)",
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
    // One row per (artifact, revision, step, host) in a change (PostgreSQL refuses a
    // statement that updates a row twice): the pipeline sends each host's counts once.
    for chunk in change.host_counts.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
             decisions = excluded.decisions, denies = excluded.denies, errors = excluded.errors",
        );
        q.build().execute(&mut *tx).await?;
    }
    sqlx::query("UPDATE delivery_version SET version = version + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Rows deleted per statement by [`PipelineStore::prune`].
const PRUNE_CHUNK: i64 = 10_000;

/// The version row, locked in a transaction until it commits or is dropped.
#[derive(Debug)]
struct PgChangeLock {
    tx: Transaction<'static, Postgres>,
    version: i64,
}

#[async_trait]
impl ChangeLock for PgChangeLock {
    fn version(&self) -> Option<i64> {
        Some(self.version)
    }

    async fn commit(
        mut self: Box<Self>,
        _store: &dyn PipelineStore,
        change: Change,
    ) -> Result<(), DeliveryError> {
        write_change(&mut self.tx, &change).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

impl PostgresPipelineStore {
    /// Connects with at most `max_connections` (at least 2: a change holds one while it
    /// reads on another) and migrates the schema (instances starting together take turns).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if it cannot connect or migrate.
    pub async fn connect(
        url: &str,
        max_connections: u32,
    ) -> Result<PostgresPipelineStore, DeliveryError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            // With the database down, a request fails within seconds instead of holding its
            // host or operator for sqlx's default 30 s.
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await?;
        PostgresPipelineStore::from_pool(pool).await
    }

    /// Migrates the schema of `pool`'s database and uses it.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if the migration fails.
    pub async fn from_pool(pool: PgPool) -> Result<PostgresPipelineStore, DeliveryError> {
        portcullis_sql::postgres::migrate(
            &pool,
            "delivery_schema",
            Some(MIGRATION_LOCK),
            MIGRATIONS,
        )
        .await?;
        Ok(PostgresPipelineStore {
            pool,
            writes: Arc::new(GroupCommit::default()),
            leader: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// Listens for pipeline changes committed by any instance sharing the database
    /// ([`CHANGE_CHANNEL`]): hand its wake-up to
    /// [`Pipeline::spawn_refresher`](crate::Pipeline::spawn_refresher).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if the listening connection cannot be opened.
    pub async fn listen(&self) -> Result<crate::ChangeListener, DeliveryError> {
        Ok(crate::ChangeListener::start(&self.pool, CHANGE_CHANNEL).await?)
    }

    /// Gives the lead up (if this instance has it) and closes the connection that held it:
    /// another instance takes over at its next [`lead`](PipelineStore::lead). Also what
    /// happens when this instance ends, or loses its connection.
    pub async fn resign(&self) {
        if let Some((connection, _)) = self.leader.lock().await.take() {
            // Closing ends the session, which releases its advisory lock.
            let _ = connection.close().await;
        }
    }

    /// Writes `write` in the next group-committed transaction; returns once it is durable.
    async fn host_write(&self, write: HostWrite) -> Result<(), DeliveryError> {
        let (batch, answer) = self.writes.submit(write).await;
        if let Some(batch) = batch {
            let pool = self.pool.clone();
            // On a task of its own: a caller that goes away mid-write (its client hung up)
            // does not leave the others in its batch unanswered.
            tokio::spawn(async move {
                let written = write_batch(&pool, batch.items()).await;
                let count = batch.items().len();
                batch.answer(written.map(|()| vec![(); count]));
            });
        }
        answer.wait().await
    }
}

#[async_trait]
impl PipelineStore for PostgresPipelineStore {
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
        self.lock_for_change().await?.commit(self, change).await
    }

    async fn has_revision(
        &self,
        artifact: &str,
        revision: &RevisionId,
    ) -> Result<bool, DeliveryError> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM delivery_revisions WHERE artifact = $1 AND revision = $2",
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
             FROM delivery_revisions WHERE artifact = $1 ORDER BY published_at_ms, revision",
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
             WHERE $1::text IS NULL OR artifact = $1 ORDER BY id DESC LIMIT $2",
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
             FROM delivery_host_status WHERE bundle = $1 ORDER BY spiffe_id",
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
             WHERE artifact = $1 ORDER BY id",
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
        let kept = |q: &mut sqlx::QueryBuilder<'_, Postgres>| {
            for (artifact, revision) in &retention.keep_revisions {
                q.push(" AND NOT (artifact = ")
                    .push_bind(artifact.clone())
                    .push(" AND revision = ")
                    .push_bind(revision.clone())
                    .push(")");
            }
        };
        let mut pruned = Pruned::default();
        let mut q =
            sqlx::QueryBuilder::<Postgres>::new("DELETE FROM delivery_host_counts WHERE TRUE");
        kept(&mut q);
        pruned.host_counts = q.build().execute(&self.pool).await?.rows_affected();
        loop {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
                "DELETE FROM delivery_fetches WHERE id IN (SELECT id FROM delivery_fetches \
                 WHERE at_ms < ",
            );
            q.push_bind(to_db(retention.fetches_before_ms));
            kept(&mut q);
            q.push(" LIMIT ").push_bind(PRUNE_CHUNK).push(")");
            let deleted = q.build().execute(&self.pool).await?.rows_affected();
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
                        "SELECT id FROM delivery_events WHERE artifact = $1 \
                         ORDER BY id DESC LIMIT 1 OFFSET $2",
                    )
                    .bind(&artifact)
                    .bind(i64::from(keep.saturating_sub(1)))
                    .fetch_optional(&self.pool)
                    .await?
                };
                let Some(oldest_kept) = oldest_kept else {
                    continue;
                };
                let deleted =
                    sqlx::query("DELETE FROM delivery_events WHERE artifact = $1 AND id < $2")
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

    async fn has_fetched(
        &self,
        artifact: &str,
        revision: &str,
        spiffe_id: &str,
    ) -> Result<bool, DeliveryError> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM delivery_fetches \
             WHERE artifact = $1 AND revision = $2 AND spiffe_id = $3 LIMIT 1",
        )
        .bind(artifact)
        .bind(revision)
        .bind(spiffe_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn lock_for_change(&self) -> Result<Box<dyn ChangeLock>, DeliveryError> {
        let mut tx = self.pool.begin().await?;
        // Waits for any other instance's change to commit; then its writes are visible to
        // every statement from here on (READ COMMITTED), on any connection.
        let version: i64 =
            sqlx::query_scalar("SELECT version FROM delivery_version WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        Ok(Box::new(PgChangeLock { tx, version }))
    }

    async fn version(&self) -> Result<Option<i64>, DeliveryError> {
        let version: i64 = sqlx::query_scalar("SELECT version FROM delivery_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(version))
    }

    async fn lead(&self) -> Result<bool, DeliveryError> {
        let mut held = self.leader.lock().await;
        if let Some((connection, leading)) = held.as_mut() {
            let asked = if *leading {
                // Still the same session (and so still holding the lock)?
                sqlx::query_scalar::<_, bool>("SELECT TRUE")
                    .fetch_one(&mut *connection)
                    .await
            } else {
                sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                    .bind(LEADER_LOCK)
                    .fetch_one(&mut *connection)
                    .await
            };
            match asked {
                Ok(now) => {
                    *leading = now;
                    return Ok(now);
                }
                Err(error) => {
                    // The session is gone, and the lock with it: try again on a new one.
                    tracing::warn!(%error, "the leader lock's connection failed");
                    *held = None;
                }
            }
        }
        let mut connection = self.pool.acquire().await?.detach();
        let leading: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut connection)
            .await?;
        *held = Some((connection, leading));
        Ok(leading)
    }
}
