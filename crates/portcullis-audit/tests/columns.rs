//! The SQL backends store indexed columns beside each chained line. A column changed in the
//! database, its line left as it was, hides the record from queries by that column (or
//! misattributes it): `verify` must report it, naming the record and the column.
#![cfg(any(feature = "sqlite", feature = "postgres"))]
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use common::{intent, refusal};
use portcullis_audit::{
    AuditEvent, AuditLog, AuditOptions, AuditSink, Outcome, Redactor, Violation,
};

/// One tampering: the record, the column, and the `SET` clause that changes it.
struct Case {
    seq: u64,
    column: &'static str,
    set: &'static str,
}

/// Every indexed column, changed in each way it can be: a value replaced, a value added
/// where the line has none, a value removed where the line has one.
const CASES: &[Case] = &[
    Case {
        seq: 1,
        column: "id",
        set: "id = 'forged-id'",
    },
    Case {
        seq: 1,
        column: "time_ms",
        set: "time_ms = time_ms + 1",
    },
    Case {
        seq: 1,
        column: "kind",
        set: "kind = 'decision'",
    },
    Case {
        seq: 1,
        column: "actor",
        set: "actor = 'mallory'",
    },
    Case {
        seq: 1,
        column: "action",
        set: "action = 'read'",
    },
    Case {
        seq: 1,
        column: "resource",
        set: "resource = 'env:elsewhere'",
    },
    Case {
        seq: 1,
        column: "effect",
        set: "effect = 'deny'",
    },
    Case {
        seq: 2,
        column: "effect",
        set: "effect = 'allow'",
    },
    Case {
        seq: 3,
        column: "effect",
        set: "effect = NULL",
    },
    Case {
        seq: 1,
        column: "correlation_id",
        set: "correlation_id = 'req-9'",
    },
    Case {
        seq: 3,
        column: "correlation_id",
        set: "correlation_id = 'req-1'",
    },
    Case {
        seq: 2,
        column: "correlation_id",
        set: "correlation_id = NULL",
    },
    Case {
        seq: 2,
        column: "outcome_of",
        set: "outcome_of = NULL",
    },
    Case {
        seq: 1,
        column: "outcome_of",
        set: "outcome_of = 'x'",
    },
    Case {
        seq: 2,
        column: "hash",
        set: "hash = '0000000000000000000000000000000000000000000000000000000000000000'",
    },
    // The last row: a higher seq column keeps the storage order, and the next write would
    // then leave a gap in the chain.
    Case {
        seq: 3,
        column: "seq",
        set: "seq = 10",
    },
];

/// Three records: an intent, its outcome, a refusal.
async fn write(log: &AuditLog) {
    let started = intent("alice", "env:a").with_correlation_id("req-1");
    log.record(started.clone()).await.unwrap();
    log.record(AuditEvent::outcome_of(&started, Outcome::succeeded("done")).unwrap())
        .await
        .unwrap();
    log.record(refusal("bob", "env_stage:a/prod"))
        .await
        .unwrap();
}

/// Checks that `log`, tampered as `case` says, fails verification on that record and column.
async fn reports(log: &AuditLog, case: &Case) {
    let violation = log.verify(&[], &[]).await.unwrap().unwrap_err();
    assert!(
        matches!(
            &violation,
            Violation::IndexMismatch { seq, column, .. }
                if *seq == case.seq && column == case.column
        ),
        "{}: expected a mismatch of record {} column `{}`, got: {violation}",
        case.set,
        case.seq,
        case.column
    );
    let text = violation.to_string();
    assert!(
        text.contains(&format!("record {}", case.seq)) && text.contains(case.column),
        "{text}"
    );
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use common::temp_dir;

    async fn tampered(case: &Case) -> (AuditLog, String) {
        let url = format!("sqlite://{}", temp_dir("columns").join("a.db").display());
        let log = AuditLog::sqlite(&url, AuditOptions::default())
            .await
            .unwrap();
        write(&log).await;
        assert!(log.verify(&[], &[]).await.unwrap().is_ok());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(&format!(
            "UPDATE portcullis_audit_records SET {} WHERE seq = {}",
            case.set, case.seq
        ))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        (log, url)
    }

    #[tokio::test]
    async fn a_changed_indexed_column_fails_verification() {
        for case in CASES {
            let (log, _) = tampered(case).await;
            reports(&log, case).await;
        }
    }

    /// Columns that hold HMAC fingerprints (a redactor on indexed fields) verify; the clear
    /// value written into one does not.
    #[tokio::test]
    async fn redacted_columns_verify_and_a_clear_value_does_not() {
        let url = format!(
            "sqlite://{}",
            temp_dir("columns-hmac").join("a.db").display()
        );
        let options = AuditOptions::default().with_redactor(Some(
            Redactor::new(
                b"per-log key, sixteen+ bytes",
                ["actor.subject", "correlation_id", "resource.id"],
            )
            .unwrap(),
        ));
        let log = AuditLog::sqlite(&url, options).await.unwrap();
        write(&log).await;
        assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 3);
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("UPDATE portcullis_audit_records SET actor = 'alice' WHERE seq = 1")
            .execute(&pool)
            .await
            .unwrap();
        let violation = log.verify(&[], &[]).await.unwrap().unwrap_err();
        assert!(
            matches!(&violation, Violation::IndexMismatch { seq: 1, column, expected: Some(fingerprint), .. }
                if column == "actor" && fingerprint.starts_with("hmac-sha256:")),
            "{violation}"
        );
    }

    #[tokio::test]
    async fn the_cli_names_the_record_and_the_column() {
        let case = CASES.iter().find(|c| c.column == "resource").unwrap();
        let (log, url) = tampered(case).await;
        log.close().await.unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-audit"))
            .args(["verify", &url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("record 1")
                && text.contains("`resource`")
                && text.contains("env:elsewhere"),
            "{text}"
        );
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use common::fresh_postgres;

    #[tokio::test]
    async fn a_changed_indexed_column_fails_verification() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        for case in CASES {
            let url = fresh_postgres("columns").await;
            let log = AuditLog::postgres(&url, AuditOptions::default())
                .await
                .unwrap();
            write(&log).await;
            assert!(log.verify(&[], &[]).await.unwrap().is_ok());
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(&format!(
                "UPDATE portcullis_audit_records SET {} WHERE seq = {}",
                case.set, case.seq
            ))
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
            reports(&log, case).await;
            log.close().await.unwrap();
        }
    }
}
