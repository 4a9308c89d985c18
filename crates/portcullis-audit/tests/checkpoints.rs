//! Signed checkpoints written beside a log ([`CheckpointFile`]) catch what opening cannot: a
//! log truncated to an earlier, consistent head, or its newest record rewritten and chained
//! anew. `verify_since` reads only from the checkpoint on; `portcullis-audit verify` with
//! the file and its public key reports the same.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap or index is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};

use common::{intent, rehashed, temp_dir};
use portcullis_audit::{
    AuditError, AuditLog, AuditSink, CheckpointFile, CheckpointSigner, Violation,
};

/// Where a log lives, and how to tamper with it while it is closed.
enum Store {
    Jsonl(PathBuf),
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    Sql(String),
}

impl Store {
    async fn open(&self) -> AuditLog {
        match self {
            Store::Jsonl(dir) => AuditLog::jsonl(dir, Default::default()).await.unwrap(),
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Store::Sql(url) => AuditLog::open(url, Path::new("."), Default::default())
                .await
                .unwrap(),
        }
    }

    /// What `portcullis-audit verify` takes.
    fn target(&self) -> String {
        match self {
            Store::Jsonl(dir) => dir.display().to_string(),
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Store::Sql(url) => url.clone(),
        }
    }

    /// Deletes every record after `keep`.
    async fn truncate(&self, keep: u64) {
        match self {
            Store::Jsonl(dir) => {
                let file = dir.join("audit-00000001.jsonl");
                let text = std::fs::read_to_string(&file).unwrap();
                let kept: String = text
                    .lines()
                    .take(usize::try_from(keep).unwrap())
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(&file, kept).unwrap();
            }
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Store::Sql(url) => {
                let db = common::Db::connect(url).await;
                db.execute(&format!(
                    "DELETE FROM portcullis_audit_records WHERE seq > {keep}"
                ))
                .await;
                db.close().await;
            }
        }
    }

    /// Rewrites record `seq` (a field no column indexes) and computes its hash again: it
    /// still links to the record before it, so only a checkpoint covering it tells.
    async fn rechain(&self, seq: u64) {
        let edit = |record: &mut serde_json::Value| record["event"]["fields"]["n"] = 99.into();
        match self {
            Store::Jsonl(dir) => {
                let file = dir.join("audit-00000001.jsonl");
                let text = std::fs::read_to_string(&file).unwrap();
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                let at = usize::try_from(seq - 1).unwrap();
                lines[at] = rehashed(&lines[at], edit).0;
                std::fs::write(&file, lines.join("\n") + "\n").unwrap();
            }
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Store::Sql(url) => {
                let db = common::Db::connect(url).await;
                let (line, hash) = rehashed(&db.line(seq).await, edit);
                let changed = db
                    .execute(&format!(
                        "UPDATE portcullis_audit_records SET line = '{}', hash = '{hash}' \
                         WHERE seq = {seq}",
                        line.replace('\'', "''")
                    ))
                    .await;
                assert_eq!(changed, 1);
                db.close().await;
            }
        }
    }
}

async fn record(log: &AuditLog, n: u64) {
    log.record(intent(&format!("u{n}"), "env:a").with_field("n", n.into()))
        .await
        .unwrap();
}

/// Runs `portcullis-audit verify` with the anchor's checkpoints: its exit code and output.
fn cli_verify(store: &Store, anchor: &CheckpointFile) -> (Option<i32>, String) {
    let key = std::fs::read_to_string(anchor.public_key_path()).unwrap();
    assert_eq!(key.trim(), hex::encode(anchor.public_key()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-audit"))
        .arg("verify")
        .arg(store.target())
        .arg("--checkpoints")
        .arg(anchor.checkpoints_path())
        .args(["--public-key", key.trim()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

/// Eight records, checkpointed after the fifth and the eighth; the log closed.
async fn checkpointed(store: &Store) -> CheckpointFile {
    let (signer, _) = CheckpointSigner::generate().unwrap();
    let anchor = CheckpointFile::open(temp_dir("anchor"), signer).unwrap();
    let log = store.open().await;
    assert_eq!(anchor.write(&log).await.unwrap().unwrap(), None, "empty");
    for n in 1..=5 {
        record(&log, n).await;
    }
    let first = anchor.write(&log).await.unwrap().unwrap().unwrap();
    assert_eq!(first.seq, 5);
    assert_eq!(
        anchor.write(&log).await.unwrap().unwrap(),
        None,
        "not moved"
    );
    for n in 6..=8 {
        record(&log, n).await;
    }
    assert_eq!(anchor.write(&log).await.unwrap().unwrap().unwrap().seq, 8);
    assert_eq!(anchor.check(&log).await.unwrap().unwrap().records, 8);
    assert_eq!(
        log.verify_since(&first, anchor.public_key())
            .await
            .unwrap()
            .unwrap()
            .records,
        8
    );
    log.close().await.unwrap();
    assert_eq!(lines(&anchor.checkpoints_path()), 2);
    assert_eq!(cli_verify(store, &anchor).0, Some(0));
    anchor
}

async fn truncation_is_caught(store: Store) {
    let anchor = checkpointed(&store).await;
    store.truncate(6).await;
    // Consistent in itself: it opens, and verifies without checkpoints.
    let log = store.open().await;
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 6);
    let truncated = Violation::Truncated {
        checkpoint_seq: 8,
        last_seq: 6,
    };
    assert_eq!(anchor.check(&log).await.unwrap().unwrap_err(), truncated);
    assert_eq!(anchor.write(&log).await.unwrap().unwrap_err(), truncated);
    assert_eq!(lines(&anchor.checkpoints_path()), 2, "nothing signed");
    let (code, out) = cli_verify(&store, &anchor);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the log ends at record 6, but a signed checkpoint covers 8"),
        "{out}"
    );
    log.close().await.unwrap();
}

async fn rechaining_is_caught(store: Store) {
    let anchor = checkpointed(&store).await;
    store.rechain(8).await;
    let log = store.open().await;
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 8);
    let mismatch = Violation::CheckpointMismatch { seq: 8 };
    assert_eq!(anchor.check(&log).await.unwrap().unwrap_err(), mismatch);
    // A record appended after the rewritten one does not make it pass.
    record(&log, 9).await;
    assert_eq!(anchor.write(&log).await.unwrap().unwrap_err(), mismatch);
    assert_eq!(lines(&anchor.checkpoints_path()), 2, "nothing signed");
    let (code, out) = cli_verify(&store, &anchor);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("record 8 differs from the signed checkpoint"),
        "{out}"
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn jsonl_truncation_is_caught() {
    truncation_is_caught(Store::Jsonl(temp_dir("cp-jsonl"))).await;
}

#[tokio::test]
async fn jsonl_rechaining_is_caught() {
    rechaining_is_caught(Store::Jsonl(temp_dir("cp-jsonl"))).await;
}

#[cfg(feature = "sqlite")]
fn sqlite() -> Store {
    Store::Sql(format!(
        "sqlite://{}",
        temp_dir("cp-sqlite").join("audit.db").display()
    ))
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_truncation_is_caught() {
    truncation_is_caught(sqlite()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_rechaining_is_caught() {
    rechaining_is_caught(sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_truncation_is_caught() {
    portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    truncation_is_caught(Store::Sql(common::fresh_postgres("cp_trunc").await)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_rechaining_is_caught() {
    portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    rechaining_is_caught(Store::Sql(common::fresh_postgres("cp_rechain").await)).await;
}

/// The folder belongs to one key; its newest checkpoint is read back on open, and a torn
/// append is cut.
#[tokio::test]
async fn a_checkpoint_folder_is_bound_to_its_key() {
    let dir = temp_dir("cp-key");
    let log = AuditLog::jsonl(temp_dir("cp-key-log"), Default::default())
        .await
        .unwrap();
    record(&log, 1).await;
    let (signer, pkcs8) = CheckpointSigner::generate().unwrap();
    let anchor = CheckpointFile::open(&dir, signer).unwrap();
    let written = anchor.write(&log).await.unwrap().unwrap().unwrap();
    drop(anchor);

    let (other, _) = CheckpointSigner::generate().unwrap();
    let err = CheckpointFile::open(&dir, other).unwrap_err();
    assert!(
        matches!(&err, AuditError::Crypto(m) if m.contains("sign with that key")),
        "{err}"
    );

    let path = dir.join(portcullis_audit::CHECKPOINTS_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"seq\":2,\"he");
    std::fs::write(&path, &text).unwrap();
    let anchor = CheckpointFile::open(&dir, CheckpointSigner::from_pkcs8(&pkcs8).unwrap()).unwrap();
    assert_eq!(anchor.last().await, Some(written));
    assert_eq!(lines(&path), 1);
    assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
    record(&log, 2).await;
    assert_eq!(anchor.write(&log).await.unwrap().unwrap().unwrap().seq, 2);
    assert_eq!(lines(&path), 2);
    log.close().await.unwrap();
}
