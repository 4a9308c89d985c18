//! `[store] url = "postgres://…"`: several instances of the service on one PostgreSQL. What
//! the stores of the crates do not cover lives here: the deploy table, the service's keys
//! (sealed under the configured store key), and the lock instances take turns under while
//! they start, so two starting together create one set of keys and one bootstrap token.

use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::Store;
use crate::deploys::{COLUMNS, Deploy, DeployState, NewDeploy, Row, from_row, new_deploy, to_i64};

/// Instances starting together take turns from connecting to serving (the key is this
/// service's own; the crates' migrations use theirs).
const STARTUP_LOCK: i64 = 7_283_901_234_567_101;

/// `[store] refresh_seconds` when not set.
pub(crate) const DEFAULT_REFRESH_SECONDS: u64 = 30;
/// `[store] max_staleness_seconds` when not set.
pub(crate) const DEFAULT_MAX_STALENESS_SECONDS: u64 = 60;
/// `[store] max_connections` when not set.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// Why fleet mode could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FleetError {
    /// The configuration is wrong.
    #[error("[store] {0}")]
    Config(String),
    /// The database failed.
    #[error("the store database: {0}")]
    Database(#[from] sqlx::Error),
    /// The keys in the database could not be opened or sealed.
    #[error(
        "the keys kept in the store database cannot be opened with the configured store key \
         (a different key_file/key_env than the first instance's, or the row was altered); \
         nothing was started"
    )]
    Sealed,
}

/// The key that seals the service's keys in the database (AES-256-GCM).
pub(crate) struct StoreKey(LessSafeKey);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

/// Binds the sealed row to its purpose.
const AAD: &[u8] = b"deploy-gate keys v1";

impl StoreKey {
    /// From `[store] key_file` or `key_env`: 64 hex digits.
    pub(crate) fn load(store: &Store) -> Result<StoreKey, FleetError> {
        let text = match (&store.key_file, &store.key_env) {
            (Some(file), None) => std::fs::read_to_string(file)
                .map_err(|e| FleetError::Config(format!("key_file {}: {e}", file.display())))?,
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                FleetError::Config(format!("key_env: environment variable `{var}` is not set"))
            })?,
            _ => {
                return Err(FleetError::Config(
                    "name exactly one of key_file and key_env: the key (64 hex digits) that \
                     seals the service's keys in the database, the same on every instance \
                     (make one with `openssl rand -hex 32`)"
                        .into(),
                ));
            }
        };
        let bytes = hex::decode(text.trim())
            .map_err(|_| FleetError::Config("the store key is not hex".into()))?;
        if bytes.len() != 32 {
            return Err(FleetError::Config(format!(
                "the store key is {} bytes; it must be 32 (64 hex digits)",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| FleetError::Sealed)?;
        Ok(StoreKey(LessSafeKey::new(key)))
    }

    fn seal(&self, plain: &str) -> Result<Vec<u8>, FleetError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| FleetError::Sealed)?;
        let mut data = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut data,
            )
            .map_err(|_| FleetError::Sealed)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(out)
    }

    fn open(&self, sealed: &[u8]) -> Result<String, FleetError> {
        let (nonce, data) = sealed
            .split_at_checked(NONCE_LEN)
            .ok_or(FleetError::Sealed)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| FleetError::Sealed)?;
        let mut data = data.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(AAD), &mut data)
            .map_err(|_| FleetError::Sealed)?;
        String::from_utf8(plain.to_vec()).map_err(|_| FleetError::Sealed)
    }
}

/// `[store]` checked, with its defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Periodic reloads of roles and tokens (behind the notifications).
    pub(crate) refresh: Duration,
    /// Past this without a successful reload, roles and tokens refuse.
    pub(crate) max_staleness: Duration,
    /// Connections per pool.
    pub(crate) max_connections: u32,
}

impl Timing {
    pub(crate) fn of(store: &Store) -> Result<Timing, FleetError> {
        let refresh = store.refresh_seconds.unwrap_or(DEFAULT_REFRESH_SECONDS);
        if !(1..=3600).contains(&refresh) {
            return Err(FleetError::Config(format!(
                "refresh_seconds = {refresh} is not between 1 and 3600"
            )));
        }
        let staleness = store
            .max_staleness_seconds
            .unwrap_or(DEFAULT_MAX_STALENESS_SECONDS.max(2 * refresh));
        if staleness < 2 * refresh || staleness > 86_400 {
            return Err(FleetError::Config(format!(
                "max_staleness_seconds = {staleness} must be at least twice refresh_seconds \
                 ({refresh}) and at most 86400"
            )));
        }
        let max_connections = store.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=100).contains(&max_connections) {
            return Err(FleetError::Config(format!(
                "max_connections = {max_connections} is not between 1 and 100"
            )));
        }
        Ok(Timing {
            refresh: Duration::from_secs(refresh),
            max_staleness: Duration::from_secs(staleness),
            max_connections,
        })
    }
}

/// The service's own connection to the store database, and its turn at starting.
#[derive(Debug)]
pub(crate) struct Fleet {
    pool: PgPool,
    /// Holds the startup lock until [`Fleet::started`]: a connection of its own, closed
    /// (releasing the lock) if start-up fails, never returned to the pool still locked.
    turn: Option<sqlx::PgConnection>,
}

impl Fleet {
    /// Connects and waits for this instance's turn to start (another instance starting
    /// at the same moment finishes first; a `kill -9` releases the turn with its
    /// connection).
    pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<Fleet, FleetError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(FleetError::Config(
                "url must be postgres://… (leave [store] out for SQLite in data_dir)".into(),
            ));
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(url)
            .await?;
        let mut turn = pool.acquire().await?.detach();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(STARTUP_LOCK)
            .execute(&mut turn)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut turn).await?;
        Ok(Fleet {
            pool,
            turn: Some(turn),
        })
    }

    /// The service's keys (TOML text), sealed in the database under `key`: read, or — at
    /// the first start of the first instance — made by `generate` and stored.
    pub(crate) async fn keys(
        &mut self,
        key: &StoreKey,
        generate: impl FnOnce() -> Result<String, String>,
    ) -> Result<String, FleetError> {
        // On the connection that holds the turn: a pool of one has no other.
        let Some(conn) = self.turn.as_mut() else {
            return Err(FleetError::Config(
                "the keys are read only while starting".into(),
            ));
        };
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT sealed FROM deploy_gate_keys WHERE id = 1")
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(sealed) = stored {
            return key.open(&sealed);
        }
        let text = generate().map_err(FleetError::Config)?;
        let sealed = key.seal(&text)?;
        // Under the startup lock nobody else inserts; the conflict clause is a second guard.
        let inserted = sqlx::query(
            "INSERT INTO deploy_gate_keys (id, sealed) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(sealed)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            let sealed: Vec<u8> =
                sqlx::query_scalar("SELECT sealed FROM deploy_gate_keys WHERE id = 1")
                    .fetch_one(&mut *conn)
                    .await?;
            return key.open(&sealed);
        }
        Ok(text)
    }

    /// The pool, for the stores that share it (failed-login and TOTP attempt counts).
    pub(crate) fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    /// The deploy table.
    pub(crate) fn deploys(&self) -> PgDeploys {
        PgDeploys {
            pool: self.pool.clone(),
        }
    }

    /// This instance has started (keys read, bootstrap done): the next may.
    pub(crate) async fn started(&mut self) -> Result<(), FleetError> {
        if let Some(mut turn) = self.turn.take() {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(STARTUP_LOCK)
                .execute(&mut turn)
                .await?;
            sqlx::Connection::close(turn).await?;
        }
        Ok(())
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS deploy_gate_keys (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sealed BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS deploy_gate_deploys (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    env TEXT NOT NULL,
    stage TEXT NOT NULL,
    build_id TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    operator TEXT NOT NULL,
    approval_id TEXT,
    detail TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS deploy_gate_deploys_by_stage
    ON deploy_gate_deploys (env, stage, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS deploy_gate_deploys_by_approval
    ON deploy_gate_deploys (approval_id) WHERE approval_id IS NOT NULL;";

/// The deploy table in PostgreSQL: each insert is its own statement and commit (the
/// database group-commits concurrent ones), so a deploy answered 201 is in the table.
#[derive(Debug, Clone)]
pub(crate) struct PgDeploys {
    pool: PgPool,
}

impl PgDeploys {
    pub(crate) async fn insert(&self, new: NewDeploy<'_>) -> Result<Deploy, sqlx::Error> {
        let d = new_deploy(new)?;
        sqlx::query(&format!(
            "INSERT INTO deploy_gate_deploys ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&d.id)
        .bind(&d.env)
        .bind(&d.stage)
        .bind(&d.build_id)
        .bind(&d.description)
        .bind(d.state.as_str())
        .bind(&d.operator)
        .bind(&d.approval_id)
        .bind(&d.detail)
        .bind(to_i64(d.created_at))
        .bind(to_i64(d.updated_at))
        .execute(&self.pool)
        .await?;
        Ok(d)
    }

    pub(crate) async fn settle(
        &self,
        id: &str,
        state: DeployState,
        detail: Option<&str>,
    ) -> Result<Option<Deploy>, sqlx::Error> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "UPDATE deploy_gate_deploys SET state = $1, detail = $2, updated_at = $3 \
             WHERE id = $4 AND state = 'pending_approval' RETURNING {COLUMNS}"
        ))
        .bind(state.as_str())
        .bind(detail)
        .bind(to_i64(crate::deploys::now_ms()))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(from_row).transpose()
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<Deploy>, sqlx::Error> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM deploy_gate_deploys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(from_row).transpose()
    }

    pub(crate) async fn by_approval(
        &self,
        approval_id: &str,
    ) -> Result<Option<Deploy>, sqlx::Error> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM deploy_gate_deploys WHERE approval_id = $1"
        ))
        .bind(approval_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(from_row).transpose()
    }

    pub(crate) async fn list(
        &self,
        env: &str,
        stage: &str,
        limit: u32,
    ) -> Result<Vec<Deploy>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM deploy_gate_deploys WHERE env = $1 AND stage = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(env)
        .bind(stage)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(from_row).collect()
    }
}
