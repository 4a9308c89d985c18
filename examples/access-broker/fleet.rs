//! `[store] url = "postgres://…"`: several brokers and several proxies per region on one
//! PostgreSQL, with the guarantees of one. What moves to the database:
//!
//! - the session keys and the broker-token keys (`portcullis-token`'s
//!   `PostgresSessionKeys`: shared, rotated, sealed under the store key), so a session from
//!   one broker works on every other, a restart signs nobody out, and every broker publishes
//!   the same JWKS;
//! - the key sealing request bodies kept for retry (sealed under the store key);
//! - bulk jobs ([`PgJobs`]): visible and cancellable from every broker;
//! - the region proxies' spent broker-token ids (`PostgresSpentIds`): a token replayed to a
//!   second proxy of the region is refused;
//! - the audit log, unless `audit_url` names another.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    not(feature = "postgres"),
    expect(dead_code, reason = "read only when built with the postgres feature")
)]
pub(crate) struct StoreConfig {
    /// `postgres://…`.
    pub(crate) url: String,
    /// A file holding the store key (64 hex digits) that seals the keys kept in the
    /// database; relative to the configuration file. Every broker needs the same one.
    pub(crate) key_file: Option<PathBuf>,
    /// Or the environment variable holding it.
    pub(crate) key_env: Option<String>,
    /// Connections in the pool (default 8).
    #[serde(default = "default_connections")]
    pub(crate) max_connections: u32,
    /// Seconds between the periodic reloads of the keys behind the notifications
    /// (default 30).
    #[serde(default = "default_refresh")]
    pub(crate) refresh_seconds: u64,
    /// Hours one session or broker-token key signs before the next takes over (default 24).
    #[serde(default = "default_rotation")]
    pub(crate) key_rotation_hours: u64,
}

fn default_connections() -> u32 {
    8
}
fn default_refresh() -> u64 {
    30
}
fn default_rotation() -> u64 {
    24
}

/// The audit log's URL: `audit_url`; with a `[store]`, the store's database unless
/// `audit_url` names another PostgreSQL. A log kept on this instance (`sqlite://`,
/// `jsonl://`) beside a `[store]` is refused: every instance would write a hash chain of its
/// own, and requests would never reach the shared one.
pub(crate) fn audit_url(
    audit_url: Option<&str>,
    store: Option<&StoreConfig>,
) -> Result<String, String> {
    match (audit_url, store) {
        (Some(url), None) => Ok(url.to_owned()),
        (None, Some(store)) => Ok(store.url.clone()),
        (Some(url), Some(_))
            if url.starts_with("postgres://") || url.starts_with("postgresql://") =>
        {
            Ok(url.to_owned())
        }
        (Some(url), Some(_)) => Err(format!(
            "[broker] audit_url = {url:?} keeps the audit log on this instance while [store] shares \
             everything else: it would split the audit log into one chain per instance. Leave \
             audit_url out (the log then goes to the store's database) or name a postgres:// URL"
        )),
        (None, None) => {
            Err("[broker] audit_url is required (or a [store] to keep the audit log in)".into())
        }
    }
}

impl StoreConfig {
    /// Paths made relative to the configuration's folder.
    pub(crate) fn resolve(mut self, base: &Path) -> Self {
        if let Some(file) = self.key_file.as_mut() {
            *file = base.join(&*file);
        }
        self
    }
}

#[cfg(not(feature = "postgres"))]
pub(crate) fn unsupported() -> String {
    "[store] needs PostgreSQL support: build with `--features postgres`".into()
}

#[cfg(feature = "postgres")]
pub(crate) use pg::*;

#[cfg(feature = "postgres")]
mod pg {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use portcullis::token::fleet::{KeyRefresher, SpentIdPurger};
    use portcullis::token::{
        ChangeListener, PostgresSessionKeys, PostgresSpentIds, SealingKey, SessionAlgorithm,
        SessionKeyPolicy, SessionKeyRing,
    };
    use serde_json::{Value, json};
    use sqlx::PgPool;
    use sqlx::postgres::PgPoolOptions;

    use super::StoreConfig;

    /// The example's own tables (the crates' stores make theirs).
    const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS access_broker_secrets (
    name TEXT PRIMARY KEY,
    sealed BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS access_broker_bulk_jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    request_id TEXT NOT NULL,
    ids JSONB NOT NULL,
    total INTEGER NOT NULL,
    started INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    runner TEXT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE TABLE IF NOT EXISTS access_broker_bulk_results (
    job_id TEXT NOT NULL REFERENCES access_broker_bulk_jobs (id) ON DELETE CASCADE,
    pos BIGINT GENERATED ALWAYS AS IDENTITY,
    item TEXT NOT NULL,
    status INTEGER NOT NULL,
    bytes BIGINT NOT NULL,
    error TEXT,
    PRIMARY KEY (job_id, pos)
);
";
    /// Brokers starting together take turns at making the schema and the retry key.
    const SCHEMA_LOCK: i64 = 7_283_901_234_567_201;
    /// How often a running job says its runner is alive.
    const HEARTBEAT: Duration = Duration::from_secs(5);
    /// A running job whose runner has not been heard from for this long is interrupted: its
    /// broker died (or lost the database) mid-run.
    const STALE: Duration = Duration::from_secs(30);
    /// Finished jobs are kept this long for their owners to read.
    const KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

    fn now_secs() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn db(e: impl std::fmt::Display) -> String {
        format!("the store database: {e}")
    }

    /// Connects to `[store] url`.
    pub(crate) async fn connect(store: &StoreConfig) -> Result<PgPool, String> {
        if !(store.url.starts_with("postgres://") || store.url.starts_with("postgresql://")) {
            return Err(
                "[store] url must be postgres://… (leave [store] out for one broker \
                        on the embedded defaults)"
                    .into(),
            );
        }
        if !(1..=100).contains(&store.max_connections) {
            return Err("[store] max_connections is 1 to 100".into());
        }
        PgPoolOptions::new()
            .max_connections(store.max_connections)
            .connect(&store.url)
            .await
            .map_err(db)
    }

    /// The store key, from `key_file` or `key_env` (never logged).
    pub(crate) fn sealing_key(store: &StoreConfig) -> Result<SealingKey, String> {
        match (&store.key_file, &store.key_env) {
            (Some(file), None) => SealingKey::from_file(file),
            (None, Some(name)) => SealingKey::from_env(name),
            _ => {
                return Err(
                    "[store] names exactly one of key_file and key_env: the key (64 \
                            hex digits, `openssl rand -hex 32`) that seals the keys kept in \
                            the database, the same for every broker"
                        .into(),
                );
            }
        }
        .map_err(|e| format!("[store] {e}"))
    }

    /// Makes the example's tables, once, whoever starts first.
    pub(crate) async fn schema(pool: &PgPool) -> Result<(), String> {
        let mut tx = pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// A secret of 32 random bytes kept in the database under `name`, sealed under `key`:
    /// made by the first broker to ask, read by the others.
    pub(crate) async fn shared_secret(
        pool: &PgPool,
        key: &SealingKey,
        name: &str,
    ) -> Result<Vec<u8>, String> {
        let context = format!("access-broker secret v1\0{name}");
        let mut fresh = [0u8; 32];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut fresh)
            .map_err(|_| "the system random source failed".to_owned())?;
        let sealed = key
            .seal(context.as_bytes(), &fresh)
            .map_err(|e| e.to_string())?;
        sqlx::query(
            "INSERT INTO access_broker_secrets (name, sealed) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(sealed)
        .execute(pool)
        .await
        .map_err(db)?;
        let kept: Vec<u8> =
            sqlx::query_scalar("SELECT sealed FROM access_broker_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(pool)
                .await
                .map_err(db)?;
        key.open(context.as_bytes(), &kept).map_err(|_| {
            format!(
                "the {name} kept in the store database does not open with the configured store \
                 key (every broker needs the same key_file/key_env)"
            )
        })
    }

    /// A key set shared by every broker, kept fresh: the ring, and what keeps it so.
    pub(crate) struct SharedKeys {
        pub(crate) ring: SessionKeyRing,
        _listener: ChangeListener,
        _refresher: KeyRefresher,
    }

    /// The key set `name` for tokens living up to `token_ttl`.
    pub(crate) async fn shared_keys(
        pool: &PgPool,
        store: &StoreConfig,
        key: &SealingKey,
        name: &str,
        token_ttl: Duration,
    ) -> Result<SharedKeys, String> {
        if !(1..=24 * 366).contains(&store.key_rotation_hours) {
            return Err("[store] key_rotation_hours is 1 to 8784".into());
        }
        if !(1..=3600).contains(&store.refresh_seconds) {
            return Err("[store] refresh_seconds is 1 to 3600".into());
        }
        let rotation = Duration::from_secs(store.key_rotation_hours * 3600);
        // Published well ahead: a refresh period at the least (a missed notification),
        // never more than a quarter of the rotation.
        let ahead = Duration::from_secs((2 * store.refresh_seconds).max(600)).min(rotation / 4);
        let policy = SessionKeyPolicy::new(SessionAlgorithm::EdDSA, token_ttl)
            .with_rotate_every(rotation)
            .with_publish_ahead(ahead);
        let keys = PostgresSessionKeys::from_pool(pool.clone(), name, key.clone(), policy)
            .await
            .map_err(|e| format!("{name} keys: {e}"))?;
        let ring = keys.ring().await.map_err(|e| format!("{name} keys: {e}"))?;
        let listener = keys
            .listen()
            .await
            .map_err(|e| format!("{name} keys: {e}"))?;
        let refresher = keys.spawn_refresher(
            ring.clone(),
            Duration::from_secs(store.refresh_seconds),
            Some(listener.wakeup()),
        );
        Ok(SharedKeys {
            ring,
            _listener: listener,
            _refresher: refresher,
        })
    }

    /// The spent broker-token ids of one region, shared by its proxies, purged as they
    /// expire.
    pub(crate) struct SharedSpent {
        pub(crate) ids: PostgresSpentIds,
        _purger: SpentIdPurger,
    }

    pub(crate) async fn spent_ids(pool: PgPool, region: &str) -> Result<SharedSpent, String> {
        let ids = PostgresSpentIds::from_pool(pool, format!("access-broker/region/{region}"))
            .await
            .map_err(|e| format!("spent token ids: {e}"))?;
        let purger = ids.spawn_purger(Duration::from_secs(60));
        Ok(SharedSpent {
            ids,
            _purger: purger,
        })
    }

    /// Bulk jobs in the store database: any broker shows and cancels any job; the broker
    /// that accepted a job runs it.
    ///
    /// Before each id is sent, the runner claims it with one conditional `UPDATE` (the job
    /// still running, this broker still its runner, no cancel asked): a cancel from any
    /// broker stops the next id from starting, as on one broker. If the runner dies, the
    /// job stops there: its heartbeat goes stale, and after [`STALE`] it reads as
    /// `interrupted`, listing the ids never sent and those whose outcome is in doubt (sent,
    /// no result recorded: the audit log has them, under the job's correlation ids). No
    /// other broker resumes it — nothing is sent twice without someone deciding to.
    #[derive(Clone)]
    pub(crate) struct PgJobs {
        pool: PgPool,
        /// This broker's id, as the runner of the jobs it accepted.
        runner: String,
    }

    /// One job this broker runs.
    #[derive(Clone)]
    pub(crate) struct PgJob {
        jobs: PgJobs,
        pub(crate) id: String,
    }

    type JobRow = (String, String, String, Value, i32, i32, String, bool, i64);

    impl PgJobs {
        pub(crate) fn new(pool: PgPool) -> Result<Self, String> {
            let bytes: [u8; 8] = portcullis_core::unique_bytes()
                .map_err(|_| "the system random source failed".to_owned())?;
            Ok(PgJobs {
                pool,
                runner: hex::encode(bytes),
            })
        }

        /// Records a new job run by this broker.
        pub(crate) async fn create(
            &self,
            id: &str,
            owner: &str,
            request_id: &str,
            ids: &[String],
        ) -> Result<PgJob, String> {
            let now = now_secs();
            sqlx::query("DELETE FROM access_broker_bulk_jobs WHERE finished_at < $1")
                .bind(now - i64::try_from(KEPT.as_secs()).unwrap_or(i64::MAX))
                .execute(&self.pool)
                .await
                .map_err(db)?;
            let total = i32::try_from(ids.len()).map_err(|_| "too many ids".to_owned())?;
            sqlx::query(
                "INSERT INTO access_broker_bulk_jobs \
                 (id, owner, request_id, ids, total, state, runner, heartbeat_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $7)",
            )
            .bind(id)
            .bind(owner)
            .bind(request_id)
            .bind(json!(ids))
            .bind(total)
            .bind(&self.runner)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db)?;
            Ok(PgJob {
                jobs: self.clone(),
                id: id.to_owned(),
            })
        }

        /// The job as its owner (or anyone, with `everyone`) sees it.
        pub(crate) async fn view(
            &self,
            id: &str,
            owner: &str,
            everyone: bool,
        ) -> Result<Option<Value>, String> {
            // A runner not heard from for too long died: its job is over.
            let now = now_secs();
            sqlx::query(
                "UPDATE access_broker_bulk_jobs SET state = 'interrupted', finished_at = $2 \
                 WHERE id = $1 AND state = 'running' AND heartbeat_at < $3",
            )
            .bind(id)
            .bind(now)
            .bind(now - i64::try_from(STALE.as_secs()).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(db)?;
            let row: Option<JobRow> = sqlx::query_as(
                "SELECT id, owner, request_id, ids, total, started, state, cancel_requested, \
                 heartbeat_at FROM access_broker_bulk_jobs \
                 WHERE id = $1 AND ($2 OR owner = $3)",
            )
            .bind(id)
            .bind(everyone)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
            let Some((id, owner, request_id, ids, total, started, state, _, _)) = row else {
                return Ok(None);
            };
            let results: Vec<(String, i32, i64, Option<String>)> = sqlx::query_as(
                "SELECT item, status, bytes, error FROM access_broker_bulk_results \
                 WHERE job_id = $1 ORDER BY pos",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let succeeded = results.iter().filter(|r| r.1 < 400).count();
            let total = usize::try_from(total).unwrap_or_default();
            let started = usize::try_from(started).unwrap_or_default().min(total);
            let shown: Vec<Value> = results
                .iter()
                .map(|(item, status, bytes, error)| {
                    let mut one = json!({ "id": item, "status": status, "bytes": bytes });
                    if let (Some(error), Some(map)) = (error, one.as_object_mut()) {
                        map.insert("error".into(), json!(error));
                    }
                    one
                })
                .collect();
            let mut view = json!({
                "id": id,
                "owner": owner,
                "request_id": request_id,
                "state": state,
                "total": total,
                "started": started,
                "not_started": total - started,
                "done": results.len(),
                "succeeded": succeeded,
                "failed": results.len() - succeeded,
                "results": shown,
            });
            if state == "interrupted"
                && let (Some(all), Some(map)) = (ids.as_array(), view.as_object_mut())
            {
                let finished: std::collections::HashSet<&str> =
                    results.iter().map(|r| r.0.as_str()).collect();
                let in_doubt: Vec<&Value> = all
                    .iter()
                    .take(started)
                    .filter(|v| !v.as_str().is_some_and(|s| finished.contains(s)))
                    .collect();
                let never_sent: Vec<&Value> = all.iter().skip(started).collect();
                map.insert("in_doubt".into(), json!(in_doubt));
                map.insert("never_sent".into(), json!(never_sent));
            }
            Ok(Some(view))
        }

        /// Asks the job's runner, wherever it runs, to start no more ids. `false` if there
        /// is no such job of the caller's.
        pub(crate) async fn cancel(
            &self,
            id: &str,
            owner: &str,
            everyone: bool,
        ) -> Result<bool, String> {
            let done = sqlx::query(
                "UPDATE access_broker_bulk_jobs SET cancel_requested = TRUE \
                 WHERE id = $1 AND ($2 OR owner = $3)",
            )
            .bind(id)
            .bind(everyone)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(db)?;
            Ok(done.rows_affected() == 1)
        }
    }

    impl PgJob {
        /// Claims the next id: true if it may be sent (the job still runs here and no
        /// cancel was asked), counting it as started.
        pub(crate) async fn begin_item(&self) -> Result<bool, String> {
            let claimed: Option<i32> = sqlx::query_scalar(
                "UPDATE access_broker_bulk_jobs SET started = started + 1, heartbeat_at = $3 \
                 WHERE id = $1 AND runner = $2 AND state = 'running' \
                 AND NOT cancel_requested AND started < total RETURNING started",
            )
            .bind(&self.id)
            .bind(&self.jobs.runner)
            .bind(now_secs())
            .fetch_optional(&self.jobs.pool)
            .await
            .map_err(db)?;
            Ok(claimed.is_some())
        }

        pub(crate) async fn record(
            &self,
            item: &str,
            status: u16,
            bytes: usize,
            error: Option<&str>,
        ) -> Result<(), String> {
            sqlx::query(
                "INSERT INTO access_broker_bulk_results (job_id, item, status, bytes, error) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&self.id)
            .bind(item)
            .bind(i32::from(status))
            .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
            .bind(error)
            .execute(&self.jobs.pool)
            .await
            .map_err(db)?;
            Ok(())
        }

        pub(crate) async fn finish(&self) -> Result<(), String> {
            sqlx::query(
                "UPDATE access_broker_bulk_jobs SET finished_at = $3, \
                 state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'done' END \
                 WHERE id = $1 AND runner = $2 AND state = 'running'",
            )
            .bind(&self.id)
            .bind(&self.jobs.runner)
            .bind(now_secs())
            .execute(&self.jobs.pool)
            .await
            .map_err(db)?;
            Ok(())
        }

        /// Says the runner is alive every few seconds, until dropped.
        pub(crate) fn heartbeat(&self) -> Heartbeat {
            let job = self.clone();
            let task = tokio::spawn(async move {
                let mut ticks = tokio::time::interval(HEARTBEAT);
                loop {
                    ticks.tick().await;
                    let beat = sqlx::query(
                        "UPDATE access_broker_bulk_jobs SET heartbeat_at = $3 \
                         WHERE id = $1 AND runner = $2 AND state = 'running'",
                    )
                    .bind(&job.id)
                    .bind(&job.jobs.runner)
                    .bind(now_secs())
                    .execute(&job.jobs.pool)
                    .await;
                    if let Err(error) = beat {
                        tracing::warn!(job = %job.id, %error, "a bulk job's heartbeat failed");
                    }
                }
            });
            Heartbeat { task }
        }
    }

    pub(crate) struct Heartbeat {
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Heartbeat {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{StoreConfig, audit_url};

    fn store() -> StoreConfig {
        toml::from_str("url = \"postgres://broker@db/broker\"\nkey_env = \"KEY\"").unwrap()
    }

    /// The outside finding (issue 34): with a `[store]`, a local audit log started, and its
    /// requests never reached the shared chain.
    #[test]
    fn a_local_audit_log_beside_a_store_is_refused() {
        let store = store();
        for local in ["sqlite://audit-local.db", "jsonl://audit", "audit.db"] {
            let err = audit_url(Some(local), Some(&store)).unwrap_err();
            assert!(
                err.contains("one chain per instance") && err.contains(local),
                "{err}"
            );
        }
        assert_eq!(audit_url(None, Some(&store)).unwrap(), store.url);
        for shared in ["postgres://audit@db/audit", "postgresql://audit@db/audit"] {
            assert_eq!(audit_url(Some(shared), Some(&store)).unwrap(), shared);
        }
        assert_eq!(
            audit_url(Some("sqlite://audit.db"), None).unwrap(),
            "sqlite://audit.db"
        );
        assert!(audit_url(None, None).is_err());
    }
}
