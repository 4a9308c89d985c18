//! Submitted events survive transient storage failures: a batch that fails because the
//! database connection was terminated, or the database stayed locked, is written again, in
//! order and exactly once, and the chain verifies (issue 34).
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap or index is a failed test"
)]

mod common;

use std::collections::HashMap;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::intent;
use portcullis_audit::{
    Appended, AuditError, AuditLog, AuditOptions, AuditQuery, AuditSink, AuditStorage, Batch,
    ChainHead, MemoryStorage,
};

/// Every stored record's event id and seq, read through a log opened anew on `open`.
async fn stored(log: &AuditLog) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut after = None;
    loop {
        let mut query = AuditQuery::all(1000);
        query.after_seq = after;
        let page = log.query(&query).await.unwrap();
        found.extend(page.records.iter().map(|r| (r.event.id.clone(), r.seq)));
        match page.records.last() {
            Some(last) if page.next_after.is_some() => after = Some(last.seq),
            _ => return found,
        }
    }
}

/// `ids` (submitted in this order) are each stored exactly once, in this order, and the
/// whole chain verifies.
async fn each_written_once_in_order(log: &AuditLog, ids: &[String]) {
    let records = stored(log).await;
    let mut seqs: HashMap<&str, Vec<u64>> = HashMap::new();
    for (id, seq) in &records {
        seqs.entry(id.as_str()).or_default().push(*seq);
    }
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !seqs.contains_key(id.as_str()))
        .collect();
    let twice: Vec<&String> = ids
        .iter()
        .filter(|id| seqs.get(id.as_str()).is_some_and(|s| s.len() > 1))
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{} of {} submitted events missing, {} stored twice",
        missing.len(),
        ids.len(),
        twice.len()
    );
    let order: Vec<u64> = ids.iter().map(|id| seqs[id.as_str()][0]).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "submitted events stored out of order"
    );
    let report = log.verify(&[], &[]).await.unwrap().unwrap();
    assert_eq!(report.records, records.len() as u64);
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::atomic::{AtomicBool, Ordering};

    use sqlx::Connection as _;

    use super::*;
    use common::fresh_postgres;

    /// The attack of issue 34: the log's PostgreSQL connections are terminated again and
    /// again while events are submitted. Batches fail ("terminating connection due to
    /// administrator command", a broken pipe); their submitted events are written again on
    /// a fresh connection, never twice, in the order they were submitted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submitted_events_survive_terminated_connections() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        let url = fresh_postgres("retry_terminated").await;
        let log = Arc::new(
            AuditLog::postgres(&url, AuditOptions::default())
                .await
                .unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let killer = {
            let url = url.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
                let mut terminated = 0_usize;
                while !stop.load(Ordering::Acquire) {
                    let killed: Vec<bool> = sqlx::query_scalar(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                    .fetch_all(&mut admin)
                    .await
                    .unwrap();
                    terminated += killed.into_iter().filter(|k| *k).count();
                    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
                }
                terminated
            })
        };
        let mut ids = Vec::new();
        for i in 0..400 {
            let event = intent(&format!("u{i}"), "env:checkout");
            ids.push(event.id.clone());
            log.submit(event).await.unwrap();
            if i % 4 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
        stop.store(true, Ordering::Release);
        let terminated = killer.await.unwrap();
        assert!(terminated > 0, "no connection was terminated");
        // Closing writes what waits for a retry: nothing terminates connections any more.
        Arc::into_inner(log).unwrap().close().await.unwrap();

        let log = AuditLog::postgres(&url, AuditOptions::default())
            .await
            .unwrap();
        each_written_once_in_order(&log, &ids).await;
    }
}

/// What the next append of a [`Flaky`] storage does.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// Stores the batch, then answers as if the connection was lost before the commit's
    /// answer came.
    LandThenFail,
    /// Fails before anything is stored, for a reason that passes.
    FailBefore,
    /// Fails for good.
    Refuse,
    /// Stores the batch.
    Store,
}

/// Memory storage whose appends fail as scripted; then succeed.
#[derive(Debug)]
struct Flaky {
    inner: Arc<MemoryStorage>,
    script: Mutex<VecDeque<Next>>,
}

impl Flaky {
    fn new(inner: Arc<MemoryStorage>, script: impl IntoIterator<Item = Next>) -> Self {
        Flaky {
            inner,
            script: Mutex::new(script.into_iter().collect()),
        }
    }
}

#[async_trait]
impl AuditStorage for Flaky {
    async fn append(&self, batch: &Batch) -> Result<Appended, AuditError> {
        let next = self.script.lock().unwrap().pop_front();
        match next {
            Some(Next::LandThenFail) => {
                self.inner.append(batch).await?;
                Err(AuditError::Unavailable("connection reset by peer".into()))
            }
            Some(Next::FailBefore) => Err(AuditError::Unavailable("pool timed out".into())),
            Some(Next::Refuse) => Err(AuditError::Database("permission denied".into())),
            Some(Next::Store) | None => self.inner.append(batch).await,
        }
    }

    async fn head(&self) -> Result<ChainHead, AuditError> {
        self.inner.head().await
    }

    async fn scan(&self, after_seq: u64, limit: usize) -> Result<Vec<String>, AuditError> {
        self.inner.scan(after_seq, limit).await
    }

    fn is_durable(&self) -> bool {
        true
    }
}

/// A batch whose commit went unanswered may have landed: its submitted events are looked
/// for before they are written again, so none is stored twice; one that never landed is
/// written again, in order; one refused for good is dropped as before; a waiting caller
/// gets the transient error and decides. (Time is paused, so no backoff ends by itself:
/// each attempt is the one a test step makes.)
#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_once_and_permanent_ones_are_not() {
    let memory = Arc::new(MemoryStorage::new());
    let script = [
        Next::LandThenFail,
        Next::FailBefore,
        Next::Store,
        Next::Refuse,
        Next::FailBefore,
    ];
    let log = AuditLog::with_storage(Flaky::new(memory.clone(), script), AuditOptions::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut submit = async |actor: &str, keep: bool| {
        let event = intent(actor, "env:a");
        let id = event.id.clone();
        if keep {
            ids.push(id.clone());
        }
        log.submit(event).await.unwrap();
        log.flush().await.unwrap();
        id
    };
    // Landed, though its writer was told otherwise: not written again.
    submit("landed", true).await;
    // Not landed: written again with the next batch, before the event submitted next.
    submit("again", true).await;
    submit("second", true).await;
    // Refused for good: dropped (and logged), as before.
    let refused = submit("refused", false).await;
    // A waiting caller hears of a transient failure, and nothing is retried for it.
    let err = log.record(intent("waiting", "env:a")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let last = intent("last", "env:a");
    ids.push(last.id.clone());
    let receipt = log.record(last).await.unwrap();
    assert_eq!(receipt.seq, 4, "landed, again, second, last");
    log.close().await.unwrap();

    let log = AuditLog::with_storage(Flaky::new(memory, []), AuditOptions::default())
        .await
        .unwrap();
    assert!(log.get(&refused).await.unwrap().is_none());
    each_written_once_in_order(&log, &ids).await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use sqlx::Connection as _;

    use super::*;
    use common::temp_dir;

    /// Another connection holds the SQLite database's write lock past the busy timeout:
    /// the batch fails (`database is locked`); its submitted events are written once the
    /// lock is released.
    #[tokio::test]
    async fn submitted_events_survive_a_locked_database() {
        let path = temp_dir("retry_locked").join("audit.db");
        let url = format!("sqlite://{}", path.display());
        let log = AuditLog::sqlite(&url, AuditOptions::default())
            .await
            .unwrap();
        let first = intent("first", "env:a");
        let mut ids = vec![first.id.clone()];
        log.record(first).await.unwrap();

        let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut holder)
            .await
            .unwrap();
        for i in 0..3 {
            let event = intent(&format!("locked{i}"), "env:a");
            ids.push(event.id.clone());
            log.submit(event).await.unwrap();
        }
        // Returns once the batch has been tried: it waited for the lock, then failed.
        log.flush().await.unwrap();
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        holder.close().await.unwrap();

        let after = intent("after", "env:a");
        ids.push(after.id.clone());
        let receipt = log.record(after).await.unwrap();
        assert_eq!(receipt.seq, 5, "the retried events went first");
        log.close().await.unwrap();

        let log = AuditLog::sqlite(&url, AuditOptions::default())
            .await
            .unwrap();
        each_written_once_in_order(&log, &ids).await;
    }
}
