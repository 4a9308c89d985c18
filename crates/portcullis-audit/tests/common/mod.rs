//! Helpers shared by the audit tests.
#![allow(dead_code, reason = "each test file uses a different subset")]
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis_audit::AuditEvent;
use portcullis_core::{Action, AuthMethod, Decision, Principal, PrincipalKind, Resource};

/// A fresh, empty folder under the system temp dir.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "portcullis-audit-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn user(name: &str) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .build()
        .unwrap()
}

pub(crate) fn intent(actor: &str, resource: &str) -> AuditEvent {
    AuditEvent::intent(
        &user(actor),
        Action::DEPLOY,
        resource.parse::<Resource>().unwrap(),
        Decision::allow("OPERATOR"),
    )
    .unwrap()
}

pub(crate) fn refusal(actor: &str, resource: &str) -> AuditEvent {
    AuditEvent::decision(
        &user(actor),
        Action::DEPLOY,
        resource.parse::<Resource>().unwrap(),
        Decision::not_applicable("no role"),
    )
    .unwrap()
}

/// A fresh database on the test PostgreSQL (`scripts/with-services` starts one). A test
/// calling it first skips, or fails, by `service_or_skip!` when there is none.
#[cfg(feature = "postgres")]
#[allow(
    clippy::expect_used,
    reason = "tests: without the server URL the test must fail, saying how to run it"
)]
pub(crate) async fn fresh_postgres(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let admin = std::env::var("PORTCULLIS_TEST_POSTGRES_URL").expect(
        "PORTCULLIS_TEST_POSTGRES_URL is not set: run the tests through scripts/test or \
         scripts/with-services, which start a PostgreSQL on 127.0.0.1",
    );
    let name = format!(
        "audit_{tag}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// `line` (a stored record) with `edit` applied to it and its `hash` computed again: a
/// record consistent in itself, as someone who can write the log and knows the format can
/// make one. Returns the line and its hash.
pub(crate) fn rehashed(line: &str, edit: impl FnOnce(&mut serde_json::Value)) -> (String, String) {
    let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
    edit(&mut record);
    let object = record.as_object_mut().unwrap();
    object.remove("hash");
    let canonical = serde_json::to_vec(&object).unwrap();
    let hash =
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical).as_ref());
    object.insert("hash".into(), hash.clone().into());
    (serde_json::to_string(&record).unwrap(), hash)
}

/// A database beside an open or closed log, to tamper with: the same SQL on SQLite and
/// PostgreSQL.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[allow(clippy::panic, reason = "tests: a URL of no backend is a broken test")]
impl Db {
    pub(crate) async fn connect(url: &str) -> Db {
        #[cfg(feature = "sqlite")]
        if url.starts_with("sqlite:") {
            return Db::Sqlite(sqlx::SqlitePool::connect(url).await.unwrap());
        }
        #[cfg(feature = "postgres")]
        if url.starts_with("postgres") {
            return Db::Postgres(sqlx::PgPool::connect(url).await.unwrap());
        }
        panic!("no backend for {url}")
    }

    /// Runs `sql`; returns how many rows it changed.
    pub(crate) async fn execute(&self, sql: &str) -> u64 {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
            #[cfg(feature = "postgres")]
            Db::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
        }
    }

    /// The stored line of record `seq`.
    pub(crate) async fn line(&self, seq: u64) -> String {
        let sql = format!("SELECT line FROM portcullis_audit_records WHERE seq = {seq}");
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap(),
            #[cfg(feature = "postgres")]
            Db::Postgres(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap(),
        }
    }

    pub(crate) async fn close(self) {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => pool.close().await,
            #[cfg(feature = "postgres")]
            Db::Postgres(pool) => pool.close().await,
        }
    }
}
