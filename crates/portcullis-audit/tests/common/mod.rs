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
