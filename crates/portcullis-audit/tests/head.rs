//! Opening a log checks its newest records before anything is appended: a head changed
//! while the log was closed (a record's line, its `prev`, the `hash` column new records are
//! chained to, another indexed column, a deleted row) is refused with a typed error naming
//! the record, rather than chained onto, which would blame the next genuine record for the
//! break. An untouched log reopens and appends; `portcullis-audit verify` still reads a
//! refused log.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap, index or expectation is a failed test"
)]

mod common;

use common::{intent, temp_dir};
use portcullis_audit::{AuditError, AuditLog, AuditOptions, AuditSink, Violation};

/// Records each log holds before it is tampered with.
const RECORDS: u64 = 10;

async fn fill(log: &AuditLog) {
    for i in 0..RECORDS {
        log.record(intent(&format!("u{i}"), "env:a")).await.unwrap();
    }
}

/// `line` with its `prev` changed to another record's hash, and its own `hash` computed
/// again when `rehash`: a record consistent in itself, whose link alone is wrong.
fn relinked(line: &str, rehash: bool) -> (String, String) {
    let edit = |record: &mut serde_json::Value| record["prev"] = "ab".repeat(32).into();
    if rehash {
        return common::rehashed(line, edit);
    }
    let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
    edit(&mut record);
    let hash = record["hash"].as_str().unwrap().to_owned();
    (serde_json::to_string(&record).unwrap(), hash)
}

/// The error of an open that must fail, with its violation.
fn refused(opened: Result<AuditLog, AuditError>, case: &str) -> (Violation, String) {
    match opened {
        Ok(_) => panic!("{case}: the log opened"),
        Err(AuditError::HeadNotVerified(violation)) => {
            let text = AuditError::HeadNotVerified(violation.clone()).to_string();
            assert!(text.contains("does not verify"), "{case}: {text}");
            (violation, text)
        }
        Err(other) => panic!("{case}: refused with another error: {other}"),
    }
}

/// A small window, for the cases about its bound.
fn window(records: usize) -> AuditOptions {
    AuditOptions::default().with_verify_on_open(records)
}

mod jsonl {
    use super::*;
    use portcullis_audit::JsonlOptions;
    use std::path::{Path, PathBuf};

    async fn open(
        dir: &Path,
        jsonl: JsonlOptions,
        options: AuditOptions,
    ) -> Result<AuditLog, AuditError> {
        AuditLog::jsonl_with(dir, jsonl, options).await
    }

    /// Every record line of the folder, with the file holding it, in order.
    fn lines(dir: &Path) -> Vec<(PathBuf, String)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        files
            .into_iter()
            .flat_map(|file| {
                let text = std::fs::read_to_string(&file).unwrap();
                text.lines()
                    .map(|l| (file.clone(), l.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Replaces record `seq`'s line (or deletes it, for `None`), in whichever file holds it.
    fn rewrite(dir: &Path, seq: u64, line: Option<String>) {
        let all = lines(dir);
        let (file, old) = &all[usize::try_from(seq - 1).unwrap()];
        let text = std::fs::read_to_string(file).unwrap();
        let new = match line {
            Some(line) => text.replacen(&format!("{old}\n"), &format!("{line}\n"), 1),
            None => text.replacen(&format!("{old}\n"), "", 1),
        };
        assert_ne!(text, new);
        std::fs::write(file, new).unwrap();
    }

    fn line(dir: &Path, seq: u64) -> String {
        lines(dir)[usize::try_from(seq - 1).unwrap()].1.clone()
    }

    /// A closed log of [`RECORDS`] records, each in a file of its own when `rotate`.
    async fn written(rotate: bool) -> (PathBuf, JsonlOptions) {
        let dir = temp_dir("head-jsonl");
        let jsonl =
            JsonlOptions::default().with_max_file_bytes(if rotate { 1 } else { 64 * 1024 * 1024 });
        let log = open(&dir, jsonl.clone(), AuditOptions::default())
            .await
            .unwrap();
        fill(&log).await;
        log.close().await.unwrap();
        (dir, jsonl)
    }

    #[tokio::test]
    async fn a_tampered_head_is_refused_and_left_as_it_is() {
        type Tamper = fn(&Path);
        let cases: [(&str, Tamper, Violation); 6] = [
            (
                "the newest line edited",
                |dir| rewrite(dir, 10, Some(line(dir, 10).replace("\"u9\"", "\"u6\""))),
                Violation::Altered { seq: 10 },
            ),
            (
                "the newest prev changed",
                |dir| rewrite(dir, 10, Some(relinked(&line(dir, 10), false).0)),
                Violation::Altered { seq: 10 },
            ),
            (
                "the newest prev changed and the record rehashed",
                |dir| rewrite(dir, 10, Some(relinked(&line(dir, 10), true).0)),
                Violation::BrokenLink { seq: 10 },
            ),
            (
                "a record in the window rehashed",
                |dir| rewrite(dir, 6, Some(relinked(&line(dir, 6), true).0)),
                Violation::BrokenLink { seq: 6 },
            ),
            (
                "a record in the window deleted",
                |dir| rewrite(dir, 8, None),
                Violation::OutOfSequence {
                    expected: 8,
                    found: 9,
                },
            ),
            (
                "the first record deleted, inside the window",
                |dir| rewrite(dir, 1, None),
                Violation::OutOfSequence {
                    expected: 1,
                    found: 2,
                },
            ),
        ];
        for rotate in [false, true] {
            for (case, tamper, expected) in &cases {
                let (dir, jsonl) = written(rotate).await;
                tamper(&dir);
                let before = lines(&dir);
                let (violation, text) =
                    refused(open(&dir, jsonl, AuditOptions::default()).await, case);
                assert_eq!(&violation, expected, "{case} (rotated: {rotate}): {text}");
                assert_eq!(lines(&dir), before, "{case}: nothing was changed");
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }

    /// The window is bounded: a record before it (and its anchor) is not read at open, and
    /// is left to `verify`; its anchor, the record before it, is checked in itself.
    #[tokio::test]
    async fn only_the_window_and_its_anchor_are_read_at_open() {
        for rotate in [false, true] {
            let (dir, jsonl) = written(rotate).await;
            rewrite(&dir, 7, Some(line(&dir, 7).replace("\"u6\"", "\"u0\"")));
            let (violation, _) = refused(open(&dir, jsonl.clone(), window(3)).await, "anchor");
            assert_eq!(violation, Violation::Altered { seq: 7 });
            let log = open(&dir, jsonl, window(2)).await.unwrap();
            let found = log.verify(&[], &[]).await.unwrap().unwrap_err();
            assert_eq!(found, Violation::Altered { seq: 7 });
            log.close().await.unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[tokio::test]
    async fn an_untouched_log_reopens_and_appends() {
        for rotate in [false, true] {
            let (dir, jsonl) = written(rotate).await;
            for options in [AuditOptions::default(), window(1), window(usize::MAX)] {
                let log = open(&dir, jsonl.clone(), options).await.unwrap();
                let next = log.record(intent("next", "env:a")).await.unwrap();
                assert!(next.seq > RECORDS);
                let report = log.verify(&[], &[]).await.unwrap().unwrap();
                assert_eq!(report.records, next.seq);
                log.close().await.unwrap();
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

/// Tampering with a database beside the log: the same SQL on SQLite and PostgreSQL.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql {
    use super::*;
    pub(crate) use common::Db;

    /// One tampering of a closed log, and what opening it must report.
    pub(crate) enum Tamper {
        /// `UPDATE … SET {0} WHERE seq = {1}`.
        Set(&'static str, u64),
        /// Record `0`'s `prev` changed (and its hash computed again, line and column, when
        /// `1`).
        Relink(u64, bool),
        /// Row `0` deleted.
        Delete(u64),
    }

    pub(crate) fn cases() -> Vec<(&'static str, Tamper, Violation)> {
        let mismatch = |seq: u64, column: &str| Violation::IndexMismatch {
            seq,
            column: column.into(),
            stored: None,
            expected: None,
        };
        vec![
            (
                "the newest hash column",
                Tamper::Set(
                    "hash = 'ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff'",
                    10,
                ),
                mismatch(10, "hash"),
            ),
            (
                "the newest line edited",
                Tamper::Set("line = replace(line, '\"u9\"', '\"u6\"')", 10),
                Violation::Altered { seq: 10 },
            ),
            (
                "the newest prev changed",
                Tamper::Relink(10, false),
                Violation::Altered { seq: 10 },
            ),
            (
                "the newest prev changed and the record rehashed",
                Tamper::Relink(10, true),
                Violation::BrokenLink { seq: 10 },
            ),
            (
                "the newest actor column",
                Tamper::Set("actor = 'mallory'", 10),
                mismatch(10, "actor"),
            ),
            (
                "the newest seq column",
                Tamper::Set("seq = 12", 10),
                mismatch(10, "seq"),
            ),
            (
                "a resource column in the window",
                Tamper::Set("resource = 'env:elsewhere'", 5),
                mismatch(5, "resource"),
            ),
            (
                "a row in the window deleted",
                Tamper::Delete(8),
                Violation::OutOfSequence {
                    expected: 8,
                    found: 9,
                },
            ),
            (
                "the first row deleted, inside the window",
                Tamper::Delete(1),
                Violation::OutOfSequence {
                    expected: 1,
                    found: 2,
                },
            ),
        ]
    }

    pub(crate) async fn tamper(db: &Db, tamper: &Tamper) {
        let changed = match tamper {
            Tamper::Set(set, seq) => {
                db.execute(&format!(
                    "UPDATE portcullis_audit_records SET {set} WHERE seq = {seq}"
                ))
                .await
            }
            Tamper::Relink(seq, rehash) => {
                let (line, hash) = relinked(&db.line(*seq).await, *rehash);
                db.execute(&format!(
                    "UPDATE portcullis_audit_records SET line = '{}', hash = '{hash}' WHERE seq = {seq}",
                    line.replace('\'', "''")
                ))
                .await
            }
            Tamper::Delete(seq) => {
                db.execute(&format!(
                    "DELETE FROM portcullis_audit_records WHERE seq = {seq}"
                ))
                .await
            }
        };
        assert_eq!(changed, 1);
    }

    /// Same kind of violation on the same record (and column): the values are the
    /// database's.
    pub(crate) fn same(found: &Violation, expected: &Violation) -> bool {
        match (found, expected) {
            (
                Violation::IndexMismatch { seq, column, .. },
                Violation::IndexMismatch {
                    seq: s, column: c, ..
                },
            ) => seq == s && column == c,
            _ => found == expected,
        }
    }

    /// Every case, each on a fresh database `fresh` gives (a URL): written, closed,
    /// tampered with, opened again.
    pub(crate) async fn a_tampered_head_is_refused(fresh: impl AsyncFn() -> String) {
        for (case, change, expected) in cases() {
            let url = fresh().await;
            let base = std::path::Path::new(".");
            let log = AuditLog::open(&url, base, AuditOptions::default())
                .await
                .unwrap();
            fill(&log).await;
            log.close().await.unwrap();
            let db = Db::connect(&url).await;
            tamper(&db, &change).await;
            db.close().await;
            let (violation, text) = refused(
                AuditLog::open(&url, base, AuditOptions::default()).await,
                case,
            );
            assert!(same(&violation, &expected), "{case}: {text}");
            let seq = match &violation {
                Violation::OutOfSequence { expected, .. } => *expected,
                Violation::Altered { seq }
                | Violation::BrokenLink { seq }
                | Violation::IndexMismatch { seq, .. } => *seq,
                other => panic!("{case}: {other}"),
            };
            assert!(text.contains(&format!("record {seq}")), "{case}: {text}");
            // Read only, the log is still verified, and what opening found is what the
            // verifier reports.
            let read = portcullis_audit::verify_database(&url, &[], &[])
                .await
                .unwrap()
                .unwrap_err();
            assert!(same(&read, &expected), "{case}: {read}");
        }
    }

    /// A record before the window is not read at open (it is left to `verify`); the
    /// window's anchor, the record before it, is checked in itself.
    pub(crate) async fn only_the_window_and_its_anchor_are_read(fresh: impl AsyncFn() -> String) {
        let base = std::path::Path::new(".");
        // With a window of 3, records 8–10 are checked, and 7 as their anchor.
        for (altered, opens) in [(7, false), (6, true)] {
            let url = fresh().await;
            let log = AuditLog::open(&url, base, AuditOptions::default())
                .await
                .unwrap();
            fill(&log).await;
            log.close().await.unwrap();
            let db = Db::connect(&url).await;
            tamper(
                &db,
                &Tamper::Set("line = replace(line, '\"u', '\"x')", altered),
            )
            .await;
            db.close().await;
            let opened = AuditLog::open(&url, base, window(3)).await;
            if opens {
                let log = opened.unwrap();
                assert_eq!(
                    log.verify(&[], &[]).await.unwrap().unwrap_err(),
                    Violation::Altered { seq: altered }
                );
                log.close().await.unwrap();
            } else {
                let (violation, _) = refused(opened, "the anchor");
                assert_eq!(violation, Violation::Altered { seq: altered });
            }
        }
    }

    pub(crate) async fn an_untouched_log_reopens_and_appends(url: &str) {
        let base = std::path::Path::new(".");
        let log = AuditLog::open(url, base, AuditOptions::default())
            .await
            .unwrap();
        fill(&log).await;
        log.close().await.unwrap();
        for options in [AuditOptions::default(), window(1), window(usize::MAX)] {
            let log = AuditLog::open(url, base, options).await.unwrap();
            let next = log.record(intent("next", "env:a")).await.unwrap();
            assert!(next.seq > RECORDS);
            assert_eq!(
                log.verify(&[], &[]).await.unwrap().unwrap().records,
                next.seq
            );
            log.close().await.unwrap();
        }
    }

    /// While the log is open: a write that must read the head (another instance moved it)
    /// refuses a head changed in the database, and so do `head` and `checkpoint`; the
    /// instance that wrote the head itself continues from the head it wrote.
    pub(crate) async fn a_head_changed_while_open_is_not_chained_onto(url: &str) {
        let base = std::path::Path::new(".");
        let a = AuditLog::open(url, base, AuditOptions::default())
            .await
            .unwrap();
        fill(&a).await;
        let b = AuditLog::open(url, base, AuditOptions::default())
            .await
            .unwrap();
        let newest = a.record(intent("a", "env:a")).await.unwrap();
        let db = Db::connect(url).await;
        tamper(
            &db,
            &Tamper::Set(
                "hash = 'ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff'",
                newest.seq,
            ),
        )
        .await;
        let err = b.record(intent("b", "env:a")).await.unwrap_err();
        assert!(
            matches!(&err, AuditError::HeadNotVerified(Violation::IndexMismatch { seq, column, .. })
                if *seq == newest.seq && column == "hash"),
            "{err}"
        );
        assert!(matches!(
            b.head().await,
            Err(AuditError::HeadNotVerified(_))
        ));
        let (signer, _) = portcullis_audit::CheckpointSigner::generate().unwrap();
        assert!(matches!(
            b.checkpoint(&signer).await,
            Err(AuditError::HeadNotVerified(_))
        ));
        if url.starts_with("postgres") {
            // On PostgreSQL every batch checks the stored head under the lock: `a` refuses too.
            assert!(matches!(
                a.record(intent("a", "env:a")).await,
                Err(AuditError::HeadNotVerified(Violation::IndexMismatch { .. }))
            ));
        } else {
            // `a` links to the hash it wrote (SQLite's fast path on its remembered head), so
            // the break is blamed on the changed column.
            let next = a.record(intent("a", "env:a")).await.unwrap();
            assert_eq!(next.seq, newest.seq + 1);
        }
        let found = a.verify(&[], &[]).await.unwrap().unwrap_err();
        assert!(
            matches!(&found, Violation::IndexMismatch { seq, column, .. } if *seq == newest.seq && column == "hash"),
            "{found}"
        );
        db.close().await;
        a.close().await.unwrap();
        b.close().await.unwrap();
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::sql::*;
    use super::*;

    fn fresh_url() -> String {
        format!(
            "sqlite://{}",
            temp_dir("head-sqlite").join("audit.db").display()
        )
    }

    #[tokio::test]
    async fn a_tampered_head_is_refused() {
        sql::a_tampered_head_is_refused(async || fresh_url()).await;
    }

    #[tokio::test]
    async fn only_the_window_and_its_anchor_are_read() {
        sql::only_the_window_and_its_anchor_are_read(async || fresh_url()).await;
    }

    #[tokio::test]
    async fn an_untouched_log_reopens_and_appends() {
        sql::an_untouched_log_reopens_and_appends(&fresh_url()).await;
    }

    #[tokio::test]
    async fn a_head_changed_while_open_is_not_chained_onto() {
        sql::a_head_changed_while_open_is_not_chained_onto(&fresh_url()).await;
    }

    /// The CLI reads a log a writer refuses, and reports what is wrong.
    #[tokio::test]
    async fn the_cli_verifies_a_log_whose_head_does_not_verify() {
        let url = fresh_url();
        let log = AuditLog::sqlite(&url, AuditOptions::default())
            .await
            .unwrap();
        fill(&log).await;
        log.close().await.unwrap();
        let db = Db::connect(&url).await;
        tamper(
            &db,
            &Tamper::Set("line = replace(line, '\"u9\"', '\"u6\"')", 10),
        )
        .await;
        db.close().await;
        assert!(
            AuditLog::sqlite(&url, AuditOptions::default())
                .await
                .is_err()
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-audit"))
            .args(["verify", &url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("record 10 was altered"), "{text}");
        // A missing database is an error, not an empty log created in its place.
        let missing = format!(
            "sqlite://{}",
            temp_dir("head-missing").join("none.db").display()
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-audit"))
            .args(["verify", &missing])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use common::fresh_postgres;

    #[tokio::test]
    async fn a_tampered_head_is_refused() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        sql::a_tampered_head_is_refused(async || fresh_postgres("head").await).await;
    }

    #[tokio::test]
    async fn only_the_window_and_its_anchor_are_read() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        sql::only_the_window_and_its_anchor_are_read(async || fresh_postgres("window").await).await;
    }

    #[tokio::test]
    async fn an_untouched_log_reopens_and_appends() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        sql::an_untouched_log_reopens_and_appends(&fresh_postgres("reopen").await).await;
    }

    #[tokio::test]
    async fn a_head_changed_while_open_is_not_chained_onto() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        sql::a_head_changed_while_open_is_not_chained_onto(&fresh_postgres("live").await).await;
    }
}
