//! A writer process killed with SIGKILL mid-stream: on reopening, the log repairs its tail
//! and verifies, and holds every event that was acknowledged.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::temp_dir;
use portcullis_audit::{AuditLog, AuditQuery, JsonlOptions};

fn kill_writer_after(target: &str, acknowledged: usize) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis-audit"))
        .args([
            "write-load",
            target,
            "--count",
            "1000000",
            "--concurrency",
            "8",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut highest = 0;
    // Kept open until the kill: a writer that found its pipe closed would stop on its own
    // instead of being killed mid-stream.
    let mut lines = BufReader::new(stdout).lines();
    for (n, line) in lines.by_ref().enumerate() {
        highest = highest.max(line.unwrap().trim().parse::<u64>().unwrap());
        if n + 1 == acknowledged {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(lines);
    highest
}

#[tokio::test]
async fn jsonl_survives_kill_9() {
    let dir = temp_dir("crash");
    let acked = kill_writer_after(dir.to_str().unwrap(), 3_000);
    let log = AuditLog::jsonl(&dir, JsonlOptions::default())
        .await
        .unwrap();
    let report = log.verify(&[], &[]).await.unwrap().unwrap();
    assert!(
        report.records >= acked,
        "acknowledged up to {acked}, the log holds {}",
        report.records
    );
    let after = log
        .query(&AuditQuery {
            after_seq: Some(acked - 1),
            ..AuditQuery::all(1)
        })
        .await
        .unwrap();
    assert_eq!(after.records[0].seq, acked);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_survives_kill_9() {
    let dir = temp_dir("crash-sqlite");
    let url = format!("sqlite://{}", dir.join("audit.db").display());
    let acked = kill_writer_after(&url, 3_000);
    let log = AuditLog::sqlite(&url, Default::default()).await.unwrap();
    let report = log.verify(&[], &[]).await.unwrap().unwrap();
    assert!(
        report.records >= acked,
        "acknowledged {acked}, holds {}",
        report.records
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
