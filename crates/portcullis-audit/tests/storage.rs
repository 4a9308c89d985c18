//! A storage written outside the crate, as an embedder writes one (a Kafka topic, an
//! object-lock bucket): an [`AuditLog`] over it gets the hash chain, group commit,
//! redaction, checkpoints and verification, and tampering with what it stored is found.
//! A sink that does not say it is durable cannot guard an action.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use common::{intent, refusal, rehashed, temp_dir};
use portcullis_audit::{
    Appended, AuditError, AuditEvent, AuditLog, AuditOptions, AuditQuery, AuditSink, AuditStorage,
    Batch, ChainHead, CheckpointFile, CheckpointSigner, MemoryStorage, Receipt, Redactor,
    Violation, WriteAhead,
};
use serde_json::json;

/// Lines in memory, shared with the test so that it can tamper with them.
#[derive(Debug, Default)]
struct Shelf {
    lines: Vec<String>,
    head: ChainHead,
    /// How many batches were appended.
    appends: usize,
    /// The receipts of the first batch, kept to hand back for a later one (a broken
    /// storage).
    stale: Option<Appended>,
}

#[derive(Debug, Clone, Default)]
struct Lines {
    shelf: Arc<Mutex<Shelf>>,
    durable: bool,
    /// Answer every append after the first with the first batch's receipts.
    answer_stale: bool,
}

impl Lines {
    fn durable() -> Self {
        Lines {
            durable: true,
            ..Lines::default()
        }
    }

    fn shelf(&self) -> MutexGuard<'_, Shelf> {
        self.shelf.lock().unwrap()
    }
}

#[async_trait]
impl AuditStorage for Lines {
    async fn append(&self, batch: &Batch) -> Result<Appended, AuditError> {
        let mut shelf = self.shelf();
        let sealed = batch.seal(shelf.head)?;
        shelf
            .lines
            .extend(sealed.records().map(|r| r.line().to_owned()));
        shelf.head = sealed.head();
        shelf.appends += 1;
        if self.answer_stale {
            if let Some(stale) = shelf.stale.take() {
                return Ok(stale);
            }
            shelf.stale = Some(sealed.into());
            return Err(AuditError::Database("kept for later".into()));
        }
        Ok(sealed.into())
    }

    async fn head(&self) -> Result<ChainHead, AuditError> {
        Ok(self.shelf().head)
    }

    async fn scan(&self, after_seq: u64, limit: usize) -> Result<Vec<String>, AuditError> {
        let shelf = self.shelf();
        let from = usize::try_from(after_seq).unwrap();
        Ok(shelf.lines.iter().skip(from).take(limit).cloned().collect())
    }

    fn is_durable(&self) -> bool {
        self.durable
    }
}

async fn log_over(storage: &Lines) -> AuditLog {
    AuditLog::with_storage(storage.clone(), AuditOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_custom_storage_gets_the_chain_and_group_commit() {
    let storage = Lines::durable();
    let log = Arc::new(log_over(&storage).await);
    // Queued together (the writer runs once the test task waits): few appends, many events.
    let writers: Vec<_> = (0..16)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move { log.record(intent(&format!("u{n}"), "env:checkout")).await })
        })
        .collect();
    let mut receipts: Vec<Receipt> = Vec::new();
    for writer in writers {
        receipts.push(writer.await.unwrap().unwrap());
    }
    receipts.sort_by_key(|r| r.seq);
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=16).collect::<Vec<_>>()
    );
    let appends = storage.shelf().appends;
    assert!(appends < 16, "{appends} appends for 16 events");
    // Each receipt names its record's hash as stored.
    let lines = storage.shelf().lines.clone();
    for receipt in &receipts {
        assert_eq!(receipt.hash.len(), 64);
        let line = &lines[usize::try_from(receipt.seq).unwrap() - 1];
        assert!(
            line.contains(&format!("\"hash\":\"{}\"", receipt.hash)),
            "{line}"
        );
    }
    let report = log.verify(&[], &[]).await.unwrap().unwrap();
    assert_eq!(report.records, 16);
    assert_eq!(hex::encode(report.head.hash), receipts[15].hash);
    assert_eq!(log.head().await.unwrap(), report.head);

    // Reads through the defaults built on `scan`.
    let page = log
        .query(&AuditQuery {
            actor: Some("u3".into()),
            ..AuditQuery::all(10)
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1);
    let id = page.records[0].event.id.clone();
    assert_eq!(
        log.get(&id).await.unwrap().unwrap().event.seq,
        page.records[0].seq
    );
    assert!(log.outcomes_of(&page.records).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_are_checked_and_redacted_before_they_reach_the_storage() {
    let storage = Lines::durable();
    let options = AuditOptions::default()
        .with_redactor(Some(
            Redactor::new(b"a per-log key of 32 bytes or so..", ["fields.ticket"]).unwrap(),
        ))
        .with_max_event_bytes(2048);
    let log = AuditLog::with_storage(storage.clone(), options)
        .await
        .unwrap();
    log.record(intent("alice", "env:checkout").with_field("ticket", json!("CHG-4711")))
        .await
        .unwrap();
    let line = storage.shelf().lines[0].clone();
    assert!(
        !line.contains("CHG-4711") && line.contains("hmac-sha256:"),
        "{line}"
    );
    assert_eq!(
        log.find_redacted("fields.ticket", &json!("CHG-4711"))
            .await
            .unwrap(),
        vec![1]
    );
    // Refused before the storage sees them: a control character, an oversized event.
    let bad = intent("alice", "env:checkout").with_field("note", json!("a\u{1b}[2J"));
    assert!(matches!(
        log.record(bad).await,
        Err(AuditError::ControlCharacter { .. })
    ));
    let big = intent("alice", "env:checkout").with_field("blob", json!("x".repeat(4096)));
    assert!(matches!(
        log.record(big).await,
        Err(AuditError::TooLarge { .. })
    ));
    assert_eq!(storage.shelf().lines.len(), 1);
    assert!(log.verify(&[], &[]).await.unwrap().is_ok());
}

#[tokio::test]
async fn tampering_with_the_storage_is_found() {
    let storage = Lines::durable();
    let log = log_over(&storage).await;
    for n in 0..4 {
        log.record(refusal(&format!("u{n}"), "env:checkout"))
            .await
            .unwrap();
    }
    let (signer, _) = CheckpointSigner::generate().unwrap();
    let checkpoint = log.checkpoint(&signer).await.unwrap();
    assert_eq!(checkpoint.seq, 4);
    let key = signer.public_key().to_vec();
    assert!(
        log.verify(std::slice::from_ref(&checkpoint), &key)
            .await
            .unwrap()
            .is_ok()
    );
    let original = storage.shelf().lines.clone();

    // An event changed in place.
    storage.shelf().lines[1] = original[1].replace("\"u1\"", "\"mallory\"");
    assert_eq!(
        log.verify(&[], &[]).await.unwrap(),
        Err(Violation::Altered { seq: 2 })
    );
    // A record deleted.
    storage.shelf().lines = [&original[..1], &original[2..]].concat();
    assert_eq!(
        log.verify(&[], &[]).await.unwrap(),
        Err(Violation::OutOfSequence {
            expected: 2,
            found: 3
        })
    );
    // The newest record rewritten and hashed anew: consistent in itself, but the signed
    // checkpoint names the hash it had.
    let (forged, hash) = rehashed(&original[3], |record| {
        record["event"]["actor"]["subject"] = json!("mallory");
    });
    storage.shelf().lines = [&original[..3], &[forged][..]].concat();
    storage.shelf().head.hash = hex::decode(&hash).unwrap().try_into().unwrap();
    assert!(log.verify(&[], &[]).await.unwrap().is_ok());
    assert_eq!(
        log.verify_since(&checkpoint, &key).await.unwrap(),
        Err(Violation::CheckpointMismatch { seq: 4 })
    );
    // Cut back to a consistent earlier head: only the checkpoint tells.
    {
        let mut shelf = storage.shelf();
        shelf.lines = original[..2].to_vec();
        shelf.head = log_head(&original[..2]);
    }
    assert!(log.verify(&[], &[]).await.unwrap().is_ok());
    assert_eq!(
        log.verify(std::slice::from_ref(&checkpoint), &key)
            .await
            .unwrap(),
        Err(Violation::Truncated {
            checkpoint_seq: 4,
            last_seq: 2
        })
    );
    log.close().await.unwrap();

    // Opening checks the newest records before anything is appended: an altered one, or a
    // head that is not the last record, is refused.
    storage.shelf().lines = original.clone();
    storage.shelf().lines[3] = original[3].replace("\"u3\"", "\"mallory\"");
    let refused = AuditLog::with_storage(storage.clone(), AuditOptions::default()).await;
    assert!(
        matches!(
            refused,
            Err(AuditError::HeadNotVerified(Violation::Altered { seq: 4 }))
        ),
        "{refused:?}"
    );
    storage.shelf().lines = original[..3].to_vec();
    let refused = AuditLog::with_storage(storage.clone(), AuditOptions::default()).await;
    assert!(
        matches!(
            refused,
            Err(AuditError::HeadNotVerified(Violation::HeadMismatch {
                claimed: 2,
                last: 3
            }))
        ),
        "{refused:?}"
    );
    // Intact again: it opens, and the chain continues.
    storage.shelf().lines = original.clone();
    storage.shelf().head = log_head(&original);
    let log = log_over(&storage).await;
    assert_eq!(log.record(refusal("u5", "env:x")).await.unwrap().seq, 5);
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 5);
}

/// The head of `lines`, as a verifier reads it.
fn log_head(lines: &[String]) -> ChainHead {
    let mut verifier = portcullis_audit::Verifier::new();
    for line in lines {
        verifier.feed(line.as_bytes()).unwrap();
    }
    verifier.head()
}

#[tokio::test]
async fn a_checkpoint_file_signs_and_checks_a_custom_storage() {
    let storage = Lines::durable();
    let log = log_over(&storage).await;
    let dir = temp_dir("storage-checkpoints");
    let (signer, _) = CheckpointSigner::generate().unwrap();
    let anchor = CheckpointFile::open(&dir, signer).unwrap();
    log.record(intent("alice", "env:checkout")).await.unwrap();
    log.record(intent("bob", "env:checkout")).await.unwrap();
    let written = anchor.write(&log).await.unwrap().unwrap().unwrap();
    assert_eq!(written.seq, 2);
    log.record(intent("carol", "env:checkout")).await.unwrap();
    assert_eq!(anchor.check(&log).await.unwrap().unwrap().records, 3);
    // Record 2, which the checkpoint covers, rewritten and hashed anew, the record after it
    // dropped: a chain consistent in itself up to its new head.
    let original = storage.shelf().lines.clone();
    let (forged, _) = rehashed(&original[1], |record| {
        record["event"]["actor"]["subject"] = json!("mallory");
    });
    {
        let mut shelf = storage.shelf();
        shelf.lines = vec![original[0].clone(), forged];
        shelf.head = log_head(&shelf.lines);
    }
    assert!(log.verify(&[], &[]).await.unwrap().is_ok());
    let found = anchor.check(&log).await.unwrap();
    assert!(
        matches!(found, Err(Violation::CheckpointMismatch { seq: 2 })),
        "{found:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Forwards to a log, but says nothing about durability.
#[derive(Debug)]
struct Forwarding(Arc<AuditLog>);

#[async_trait]
impl AuditSink for Forwarding {
    async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        self.0.record(event).await
    }
}

#[tokio::test]
async fn only_a_sink_that_says_it_is_durable_guards_an_action() {
    let durable = Arc::new(log_over(&Lines::durable()).await);
    assert!(durable.is_durable());
    let gate = WriteAhead::new(durable.clone()).unwrap();
    let intent = gate.intent(intent("alice", "env:checkout")).await.unwrap();
    assert_eq!(intent.receipt().hash.len(), 64);
    intent
        .run(|_| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    assert_eq!(durable.head().await.unwrap().seq, 2);

    // A sink that does not override `is_durable` is not durable.
    let forwarding = Arc::new(Forwarding(durable.clone()));
    assert!(!forwarding.is_durable());
    assert!(matches!(
        WriteAhead::new(forwarding),
        Err(AuditError::NotDurable(_))
    ));
    // Nor is a log over a storage that does not say it is.
    for log in [
        log_over(&Lines::default()).await,
        AuditLog::with_storage(MemoryStorage::new(), AuditOptions::default())
            .await
            .unwrap(),
    ] {
        assert!(!log.is_durable());
        assert!(matches!(
            WriteAhead::new(Arc::new(log)),
            Err(AuditError::NotDurable(_))
        ));
    }
}

#[tokio::test]
async fn receipts_must_come_from_sealing_the_batch_appended() {
    let storage = Lines {
        durable: true,
        answer_stale: true,
        ..Lines::default()
    };
    let log = log_over(&storage).await;
    assert!(log.record(intent("alice", "env:x")).await.is_err());
    let err = log.record(intent("bob", "env:x")).await.unwrap_err();
    assert!(matches!(err, AuditError::Poisoned(_)), "{err}");
    assert!(err.to_string().contains("another batch"), "{err}");
}
