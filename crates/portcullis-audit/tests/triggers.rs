//! The outside finding: a trigger that drops inserts (`RAISE(IGNORE)`), added by whoever can
//! write the audit database, switched the log off silently: every record was acknowledged
//! and none was stored. An insert the database reports fewer rows for is now a failed write.
#![cfg(feature = "sqlite")]

mod common;

use common::{intent, temp_dir};
use portcullis_audit::{AuditLog, AuditSink};

#[tokio::test]
async fn a_trigger_that_drops_records_fails_the_write() {
    let dir = temp_dir("trigger");
    let url = format!("sqlite://{}", dir.join("audit.db").display());
    let log = AuditLog::sqlite(&url, Default::default()).await.unwrap();
    log.record(intent("alice", "env:checkout")).await.unwrap();

    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER swallow BEFORE INSERT ON portcullis_audit_records \
         BEGIN SELECT RAISE(IGNORE); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let refused = log.record(intent("bob", "env:checkout")).await;
    assert!(refused.is_err(), "a dropped record was acknowledged");
    assert!(
        refused.unwrap_err().to_string().contains("stored 0 of 1"),
        "the error says what happened"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM portcullis_audit_records")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let _ = std::fs::remove_dir_all(&dir);
}
