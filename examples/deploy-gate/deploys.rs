//! The deploy records: what was asked to ship where, by whom, and where it stands. This
//! service records deploys; it does not run them.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

/// Where a deploy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeployState {
    /// Waiting for a production approval.
    PendingApproval,
    /// Admitted and recorded (a real deploy service would start it now).
    Accepted,
    /// An approver denied it.
    Rejected,
    /// Nobody approved it in time.
    Expired,
    /// Approved, but the gate refused it when it was to proceed (e.g. roles changed).
    Failed,
}

impl DeployState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeployState::PendingApproval => "pending_approval",
            DeployState::Accepted => "accepted",
            DeployState::Rejected => "rejected",
            DeployState::Expired => "expired",
            DeployState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        Ok(match text {
            "pending_approval" => DeployState::PendingApproval,
            "accepted" => DeployState::Accepted,
            "rejected" => DeployState::Rejected,
            "expired" => DeployState::Expired,
            "failed" => DeployState::Failed,
            other => {
                return Err(sqlx::Error::Decode(
                    format!("unknown deploy state `{other}`").into(),
                ));
            }
        })
    }
}

/// One deploy.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Deploy {
    /// `dep_…`.
    pub(crate) id: String,
    /// The environment.
    pub(crate) env: String,
    /// The stage.
    pub(crate) stage: String,
    /// The build to ship.
    pub(crate) build_id: String,
    /// Free text.
    pub(crate) description: String,
    /// Where it stands.
    pub(crate) state: DeployState,
    /// Who asked.
    pub(crate) operator: String,
    /// The production approval, if one was needed.
    pub(crate) approval_id: Option<String>,
    /// Why it failed, for `failed`.
    pub(crate) detail: Option<String>,
    /// Milliseconds since the epoch.
    pub(crate) created_at: u64,
    /// Milliseconds since the epoch.
    pub(crate) updated_at: u64,
}

/// The deploy table: in SQLite beside the other stores (one instance), or in PostgreSQL
/// shared by a fleet (`[store] url`).
#[derive(Debug, Clone)]
pub(crate) enum Deploys {
    /// `data_dir/deploy-gate.db`.
    Sqlite(SqliteDeploys),
    /// `deploy_gate_deploys` in the `[store]` database.
    #[cfg(feature = "postgres")]
    Postgres(crate::fleet::PgDeploys),
}

/// The deploy table in SQLite.
#[derive(Debug, Clone)]
pub(crate) struct SqliteDeploys {
    /// One connection: SQLite has one writer at a time, and writers queued here wait in
    /// order instead of sleeping in SQLite's busy handler.
    writer: SqlitePool,
    readers: SqlitePool,
    /// New deploys go through one task that inserts whatever is queued with one statement.
    inserts: mpsc::Sender<Insert>,
    /// Checkpoints the WAL beside the writer.
    _checkpointer: Arc<portcullis_sql::sqlite::Checkpointer>,
}

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A deploy to insert, and where to hand it back once it is (or why it is not).
type Insert = (Deploy, oneshot::Sender<Result<Deploy, String>>);

/// The most deploys inserted by one statement.
const MAX_BATCH: usize = 256;

/// Inserts queued deploys in batches: one statement (and one trip to SQLite's thread) for
/// everything that arrived while the previous batch was written.
async fn insert_batches(pool: SqlitePool, mut queue: mpsc::Receiver<Insert>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = insert_all(&pool, &batch).await.map_err(|e| e.to_string());
        for (deploy, reply) in batch.drain(..) {
            let _ = reply.send(result.clone().map(|()| deploy));
        }
    }
}

/// Inserts a whole batch with one statement: atomic on its own, so one trip to the
/// database's thread and no transaction around it (11 columns × `MAX_BATCH` rows = 2,816
/// parameters, under the bundled SQLite's limit of 32,766). Padded to one of a few row
/// counts, so every batch size reuses a cached statement instead of parsing a new one.
async fn insert_all(pool: &SqlitePool, batch: &[Insert]) -> Result<(), sqlx::Error> {
    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
    portcullis_sql::push_padded_insert(
        &mut q,
        "deploys (id, env, stage, build_id, description, state, operator, approval_id, detail, created_at, updated_at)",
        batch.iter(),
        |mut row, (d, _)| {
            row.push_bind(&d.id)
                .push_bind(&d.env)
                .push_bind(&d.stage)
                .push_bind(&d.build_id)
                .push_bind(&d.description)
                .push_bind(d.state.as_str())
                .push_bind(&d.operator)
                .push_bind(&d.approval_id)
                .push_bind(&d.detail)
                .push_bind(to_i64(d.created_at))
                .push_bind(to_i64(d.updated_at));
        },
        // id first: NULL marks the row as padding.
        |mut row| {
            for _ in 0..11 {
                row.push_bind(None::<&str>);
            }
        },
    );
    q.build().execute(pool).await.map(drop)
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS deploys (
    id TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    stage TEXT NOT NULL,
    build_id TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    operator TEXT NOT NULL,
    approval_id TEXT,
    detail TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deploys_by_stage ON deploys (env, stage, created_at);
-- Partial: most deploys need no approval, and a unique index would hold a NULL for each.
-- (A table created before this kept its column constraint, which enforces the same.)
CREATE UNIQUE INDEX IF NOT EXISTS deploys_by_approval ON deploys (approval_id)
    WHERE approval_id IS NOT NULL;";

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `dep_` + milliseconds (hex) + 64 random bits: ids sort by creation, so inserts append to
/// the primary-key index instead of landing on random pages.
pub(crate) fn new_id(now_ms: u64) -> Result<String, sqlx::Error> {
    let bytes: [u8; 8] =
        portcullis_core::unique_bytes().map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    Ok(format!("dep_{now_ms:012x}{}", hex::encode(bytes)))
}

pub(crate) fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

pub(crate) type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

pub(crate) const COLUMNS: &str = "id, env, stage, build_id, description, state, operator, approval_id, detail, created_at, updated_at";

pub(crate) fn from_row(row: Row) -> Result<Deploy, sqlx::Error> {
    let (id, env, stage, build_id, description, state, operator, approval_id, detail, c, u) = row;
    Ok(Deploy {
        id,
        env,
        stage,
        build_id,
        description,
        state: DeployState::parse(&state)?,
        operator,
        approval_id,
        detail,
        created_at: u64::try_from(c).unwrap_or(0),
        updated_at: u64::try_from(u).unwrap_or(0),
    })
}

/// What a new deploy is.
#[derive(Debug, Clone)]
pub(crate) struct NewDeploy<'a> {
    /// The environment.
    pub(crate) env: &'a str,
    /// The stage.
    pub(crate) stage: &'a str,
    /// The build.
    pub(crate) build_id: &'a str,
    /// Free text.
    pub(crate) description: &'a str,
    /// Who asked.
    pub(crate) operator: &'a str,
    /// Its state.
    pub(crate) state: DeployState,
    /// The approval it waits for or was admitted with.
    pub(crate) approval_id: Option<&'a str>,
}

impl Deploys {
    /// Opens (creating) the SQLite database at `url`.
    pub(crate) async fn open(url: &str) -> Result<Self, sqlx::Error> {
        SqliteDeploys::open(url).await.map(Deploys::Sqlite)
    }

    /// Records a new deploy.
    pub(crate) async fn insert(&self, new: NewDeploy<'_>) -> Result<Deploy, sqlx::Error> {
        match self {
            Deploys::Sqlite(d) => d.insert(new).await,
            #[cfg(feature = "postgres")]
            Deploys::Postgres(d) => d.insert(new).await,
        }
    }

    /// Moves a deploy out of `pending_approval`; `None` if it was not pending (another
    /// request, here or on another instance, decided it first).
    pub(crate) async fn settle(
        &self,
        id: &str,
        state: DeployState,
        detail: Option<&str>,
    ) -> Result<Option<Deploy>, sqlx::Error> {
        match self {
            Deploys::Sqlite(d) => d.settle(id, state, detail).await,
            #[cfg(feature = "postgres")]
            Deploys::Postgres(d) => d.settle(id, state, detail).await,
        }
    }

    /// One deploy.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<Deploy>, sqlx::Error> {
        match self {
            Deploys::Sqlite(d) => d.get(id).await,
            #[cfg(feature = "postgres")]
            Deploys::Postgres(d) => d.get(id).await,
        }
    }

    /// The deploy waiting for (or admitted with) `approval_id`.
    pub(crate) async fn by_approval(
        &self,
        approval_id: &str,
    ) -> Result<Option<Deploy>, sqlx::Error> {
        match self {
            Deploys::Sqlite(d) => d.by_approval(approval_id).await,
            #[cfg(feature = "postgres")]
            Deploys::Postgres(d) => d.by_approval(approval_id).await,
        }
    }

    /// The newest deploys of a stage, newest first.
    pub(crate) async fn list(
        &self,
        env: &str,
        stage: &str,
        limit: u32,
    ) -> Result<Vec<Deploy>, sqlx::Error> {
        match self {
            Deploys::Sqlite(d) => d.list(env, stage, limit).await,
            #[cfg(feature = "postgres")]
            Deploys::Postgres(d) => d.list(env, stage, limit).await,
        }
    }
}

/// A new deploy's record, stamped now with a fresh id.
pub(crate) fn new_deploy(new: NewDeploy<'_>) -> Result<Deploy, sqlx::Error> {
    let now = now_ms();
    Ok(Deploy {
        id: new_id(now)?,
        env: new.env.to_owned(),
        stage: new.stage.to_owned(),
        build_id: new.build_id.to_owned(),
        description: new.description.to_owned(),
        state: new.state,
        operator: new.operator.to_owned(),
        approval_id: new.approval_id.map(str::to_owned),
        detail: None,
        created_at: now,
        updated_at: now,
    })
}

impl SqliteDeploys {
    /// Opens (creating) `url`.
    async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let options: SqliteConnectOptions = url
            .parse::<SqliteConnectOptions>()?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The audit log (synchronous FULL) is the durable record of every decision and
            // is written before this table; a deploy record lost to a power cut is visible
            // there as an intent without a deploy. NORMAL in WAL mode survives process
            // crashes and spares one fsync per deploy.
            .synchronous(SqliteSynchronous::Normal);
        // Checkpoints run beside the writer, not inside the commit deploys wait for.
        let options = portcullis_sql::sqlite::without_auto_checkpoint(options);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.clone().read_only(true))
            .await?;
        let (inserts, queue) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(insert_batches(writer.clone(), queue));
        // A connection of its own: the writer's would hold inserts back while it copies.
        let checkpoints = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let checkpointer = Arc::new(portcullis_sql::sqlite::Checkpointer::start(
            checkpoints,
            CHECKPOINT_EVERY,
        ));
        Ok(SqliteDeploys {
            writer,
            readers,
            inserts,
            _checkpointer: checkpointer,
        })
    }

    async fn insert(&self, new: NewDeploy<'_>) -> Result<Deploy, sqlx::Error> {
        let deploy = new_deploy(new)?;
        let (reply, answer) = oneshot::channel();
        let closed = || sqlx::Error::PoolClosed;
        // Handed over and back rather than cloned: the insert copies what it binds.
        self.inserts
            .send((deploy, reply))
            .await
            .map_err(|_| closed())?;
        answer
            .await
            .map_err(|_| closed())?
            .map_err(sqlx::Error::Protocol)
    }

    async fn settle(
        &self,
        id: &str,
        state: DeployState,
        detail: Option<&str>,
    ) -> Result<Option<Deploy>, sqlx::Error> {
        let changed = sqlx::query(
            "UPDATE deploys SET state = ?, detail = ?, updated_at = ? WHERE id = ? AND state = 'pending_approval'",
        )
        .bind(state.as_str())
        .bind(detail)
        .bind(to_i64(now_ms()))
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        self.get(id).await
    }

    async fn get(&self, id: &str) -> Result<Option<Deploy>, sqlx::Error> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM deploys WHERE id = ?"))
                .bind(id)
                .fetch_optional(&self.readers)
                .await?;
        row.map(from_row).transpose()
    }

    async fn by_approval(&self, approval_id: &str) -> Result<Option<Deploy>, sqlx::Error> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM deploys WHERE approval_id = ?"
        ))
        .bind(approval_id)
        .fetch_optional(&self.readers)
        .await?;
        row.map(from_row).transpose()
    }

    async fn list(&self, env: &str, stage: &str, limit: u32) -> Result<Vec<Deploy>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM deploys WHERE env = ? AND stage = ? ORDER BY created_at DESC, id DESC LIMIT ?"
        ))
        .bind(env)
        .bind(stage)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(from_row).collect()
    }
}
