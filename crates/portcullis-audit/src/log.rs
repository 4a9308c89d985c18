//! [`AuditLog`]: the durable sink. Callers' events are sealed into the hash chain and written
//! in batches by one writer task (group commit): concurrent `record` calls share one fsync or
//! transaction, and each caller is answered only after its batch is durable.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::chain::ChainHead;
use crate::event::{canonical_json, check_event_strings, check_strings};
use crate::redact::lookup;
use crate::storage::PreparedEvent;
use crate::verify::{Verifier, VerifyReport, Violation};
use crate::{
    AuditError, AuditEvent, AuditPage, AuditQuery, AuditRecord, AuditSink, AuditStorage, Batch,
    Checkpoint, CheckpointSigner, Receipt, RecordIndex, Redactor, WithOutcome,
};

/// Options common to every storage.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuditOptions {
    /// Events larger than this (as JSON) are refused. Default 64 KiB.
    pub max_event_bytes: usize,
    /// The most events one batch (one fsync or transaction) takes. Default 1024.
    pub max_batch: usize,
    /// HMACs the configured fields before anything is written.
    pub redactor: Option<Redactor>,
    /// How long a batch of nothing but outcomes may wait for another event to share its
    /// write. Default zero: written at once. An outcome follows an action that has already
    /// happened, so a service that does not wait for it (it records the outcome after
    /// answering) can let it ride along with the next request's intent: one sync where
    /// there were two, and no intent queued behind an outcome's sync. The caller of
    /// `record` still returns only once the outcome is durable.
    pub outcome_linger: std::time::Duration,
    /// How many of the newest stored records opening checks before anything is appended:
    /// each one's hash against its content, its link to the record before it and, on
    /// SQLite and PostgreSQL, its indexed columns against its line (the `hash` column new
    /// records are chained to among them). A log whose head does not verify is refused with
    /// [`AuditError::HeadNotVerified`]. Default [`VERIFY_ON_OPEN`] (64): opening reads that
    /// many records, whatever the log's size. At least one is checked, whatever this says;
    /// `usize::MAX` checks the whole log (a JSONL log is then read into memory).
    pub verify_on_open: usize,
    /// The most [submitted](AuditSink::submit) events kept for another attempt after their
    /// batch failed for a transient reason ([`AuditError::is_transient`]: a lost
    /// connection, a pool timeout, a deadlock). They are written again, in order, with the
    /// next batch or after a backoff (50 ms doubling to 5 s), until they are written; when
    /// the log closes, three more attempts are made. An event that finds this queue full,
    /// or is still unwritten after those attempts, is logged as lost. Default
    /// [`RETRY_QUEUE`] (65,536).
    pub retry_queue: usize,
}

/// Setters, so that options built outside this crate keep compiling as fields are added
/// (the struct is `#[non_exhaustive]`): `AuditOptions::default().with_…(…)`.
impl AuditOptions {
    /// Sets [`max_event_bytes`](Self::max_event_bytes).
    #[must_use]
    pub fn with_max_event_bytes(mut self, max_event_bytes: usize) -> Self {
        self.max_event_bytes = max_event_bytes;
        self
    }

    /// Sets [`max_batch`](Self::max_batch).
    #[must_use]
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Sets [`redactor`](Self::redactor).
    #[must_use]
    pub fn with_redactor(mut self, redactor: Option<Redactor>) -> Self {
        self.redactor = redactor;
        self
    }

    /// Sets [`outcome_linger`](Self::outcome_linger).
    #[must_use]
    pub fn with_outcome_linger(mut self, outcome_linger: std::time::Duration) -> Self {
        self.outcome_linger = outcome_linger;
        self
    }

    /// Sets [`retry_queue`](Self::retry_queue).
    #[must_use]
    pub fn with_retry_queue(mut self, retry_queue: usize) -> Self {
        self.retry_queue = retry_queue;
        self
    }

    /// Sets [`verify_on_open`](Self::verify_on_open).
    #[must_use]
    pub fn with_verify_on_open(mut self, verify_on_open: usize) -> Self {
        self.verify_on_open = verify_on_open;
        self
    }
}

/// How many of the newest records opening a log checks by default
/// ([`AuditOptions::verify_on_open`]).
pub const VERIFY_ON_OPEN: usize = 64;

/// How many submitted events a log keeps for another attempt by default
/// ([`AuditOptions::retry_queue`]).
pub const RETRY_QUEUE: usize = 64 * 1024;

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            max_event_bytes: 64 * 1024,
            max_batch: 1024,
            redactor: None,
            outcome_linger: std::time::Duration::ZERO,
            verify_on_open: VERIFY_ON_OPEN,
            retry_queue: RETRY_QUEUE,
        }
    }
}

/// What the writer task is asked to do, in queue order.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every job is a write; boxing it would allocate once more per event"
)]
enum Job {
    /// Write an event.
    Write {
        prepared: PreparedEvent,
        /// Who waits for the receipt; `None` for a [submitted](AuditSink::submit) event,
        /// whose failure the writer logs instead.
        respond: Option<oneshot::Sender<Result<Receipt, AuditError>>>,
        /// An outcome: it may wait `outcome_linger` for company.
        outcome: bool,
    },
    /// Answer once everything queued before is written (or has failed).
    Flush(oneshot::Sender<()>),
}

impl Job {
    fn is_outcome(&self) -> bool {
        matches!(self, Job::Write { outcome: true, .. })
    }
}

/// A durable, tamper-evident audit log over one [storage](AuditStorage): JSONL files,
/// SQLite, PostgreSQL, or one of your own ([`with_storage`](AuditLog::with_storage)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use portcullis_audit::{AuditEvent, AuditLog, AuditSink, AuditQuery};
/// use portcullis_core::{Action, AuthMethod, Decision, Principal, PrincipalKind};
///
/// let log = AuditLog::sqlite("sqlite::memory:", Default::default()).await?;
/// let bob = Principal::builder(PrincipalKind::User, "bob", AuthMethod::OIDC).build()?;
/// let refused = AuditEvent::decision(&bob, Action::DEPLOY, "env:checkout".parse()?,
///     Decision::not_applicable("bob holds no role on env:checkout"))?;
/// let receipt = log.record(refused).await?;   // returns once committed
/// assert_eq!(receipt.seq, 1);
/// assert_eq!(log.query(&AuditQuery::all(10)).await?.records.len(), 1);
/// assert_eq!(log.verify(&[], &[]).await?.map(|r| r.records).ok(), Some(1));
/// # Ok(()) }
/// ```
pub struct AuditLog {
    writer: tokio::task::JoinHandle<()>,
    jobs: mpsc::Sender<Job>,
    /// Submitted events queued or being written: reads flush first while there are any.
    submitted: Arc<AtomicUsize>,
    storage: Arc<dyn AuditStorage>,
    max_event_bytes: usize,
    redactor: Option<Arc<Redactor>>,
    /// Whether prepared events carry their index ([`AuditStorage::wants_index`]).
    index: bool,
    /// [`AuditStorage::is_durable`], asked once.
    durable: bool,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("storage", &self.storage)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("redactor", &self.redactor)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// A log of JSONL files in `dir` (created if missing): appended and fsync'd per batch,
    /// rotated by size, the chain continuing across files. Opening checks the newest
    /// records ([`AuditOptions::verify_on_open`]) before anything is appended; then a torn
    /// last line left by a crash is cut off.
    ///
    /// # Errors
    ///
    /// [`AuditError::Io`] if the folder cannot be created or read,
    /// [`AuditError::Invalid`] if another log holds the folder's lock for more than 2 s, or
    /// [`AuditError::HeadNotVerified`] if its newest records do not verify (nothing is cut
    /// or changed then).
    pub async fn jsonl(
        dir: impl AsRef<Path>,
        options: crate::JsonlOptions,
    ) -> Result<Self, AuditError> {
        Self::jsonl_with(dir, options, AuditOptions::default()).await
    }

    /// As [`jsonl`](AuditLog::jsonl), with common options.
    ///
    /// # Errors
    ///
    /// As [`jsonl`](AuditLog::jsonl).
    pub async fn jsonl_with(
        dir: impl AsRef<Path>,
        jsonl: crate::JsonlOptions,
        options: AuditOptions,
    ) -> Result<Self, AuditError> {
        let storage = crate::sink::jsonl::JsonlBackend::open(
            dir.as_ref().to_path_buf(),
            jsonl,
            options.verify_on_open,
        )
        .await?;
        Ok(AuditLog::start(Arc::new(storage), options))
    }

    /// A log in SQLite at `url` (`sqlite://audit.db`; WAL journal, full sync). Opening
    /// checks the newest records ([`AuditOptions::verify_on_open`]) before anything is
    /// appended.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`] if it cannot be opened or migrated,
    /// [`AuditError::HeadNotVerified`] if its newest records do not verify.
    #[cfg(feature = "sqlite")]
    pub async fn sqlite(url: &str, options: AuditOptions) -> Result<Self, AuditError> {
        let storage = crate::sink::sql::SqliteBackend::connect(url, options.verify_on_open).await?;
        Ok(AuditLog::start(Arc::new(storage), options))
    }

    /// A log in PostgreSQL at `url`. Any number of instances may share it and the chain
    /// stays one chain: an instance that knows the head writes a batch in one statement,
    /// and the `seq` primary key refuses it if another instance got there first; the
    /// batch is then sealed again after the head read under an advisory lock. Opening checks
    /// the newest records ([`AuditOptions::verify_on_open`]) before anything is appended,
    /// and so does each write that reads the head (the newest record and its link).
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`] if it cannot be reached or migrated,
    /// [`AuditError::HeadNotVerified`] if its newest records do not verify.
    #[cfg(feature = "postgres")]
    pub async fn postgres(url: &str, options: AuditOptions) -> Result<Self, AuditError> {
        let storage =
            crate::sink::sql::PostgresBackend::connect(url, options.verify_on_open).await?;
        Ok(AuditLog::start(Arc::new(storage), options))
    }

    /// The log a URL names: `sqlite://FILE`, `jsonl://DIR` or `postgres://…` (with the
    /// `sqlite` and `postgres` features); a relative `FILE` or `DIR` is taken from `base`.
    /// A service's configuration can then choose its audit storage with one setting.
    ///
    /// # Errors
    ///
    /// [`AuditError::Invalid`] for any other URL (or a storage not compiled in); as the
    /// storage's own constructor otherwise.
    pub async fn open(url: &str, base: &Path, options: AuditOptions) -> Result<Self, AuditError> {
        if let Some(folder) = url.strip_prefix("jsonl://") {
            return AuditLog::jsonl_with(
                base.join(folder),
                crate::JsonlOptions::default(),
                options,
            )
            .await;
        }
        #[cfg(feature = "sqlite")]
        if let Some(file) = url.strip_prefix("sqlite://") {
            let url = format!("sqlite://{}", base.join(file).display());
            return AuditLog::sqlite(&url, options).await;
        }
        #[cfg(feature = "postgres")]
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return AuditLog::postgres(url, options).await;
        }
        let known = [
            "jsonl://DIR",
            #[cfg(feature = "sqlite")]
            "sqlite://FILE",
            #[cfg(feature = "postgres")]
            "postgres://…",
        ];
        Err(AuditError::Invalid(format!(
            "an audit log URL is one of {}, not {url:?}",
            known.join(", ")
        )))
    }

    /// A log over `storage`, one of your own (see [`AuditStorage`]): it gets what the
    /// built-in logs have, the hash chain (each record sealed, receipts with its hash),
    /// group commit, the checks and redaction of [`AuditOptions`], checkpoints and
    /// verification. It is [durable](AuditSink::is_durable) if the storage says it is.
    ///
    /// Opening checks the newest records first ([`AuditStorage::verify_tail`], the last
    /// [`AuditOptions::verify_on_open`] of them), and a log whose head does not verify is
    /// refused: nothing is appended to it. Must run inside a Tokio runtime (it starts the
    /// log's writer task).
    ///
    /// # Errors
    ///
    /// [`AuditError::HeadNotVerified`] if the newest records do not verify; a read failure.
    pub async fn with_storage(
        storage: impl AuditStorage,
        options: AuditOptions,
    ) -> Result<Self, AuditError> {
        storage
            .verify_tail(options.verify_on_open)
            .await?
            .map_err(AuditError::HeadNotVerified)?;
        Ok(AuditLog::start(Arc::new(storage), options))
    }

    /// A log over `storage`, whose newest records its opening has checked already.
    fn start(storage: Arc<dyn AuditStorage>, options: AuditOptions) -> Self {
        let (jobs, receiver) = mpsc::channel(options.max_batch.max(1) * 4);
        let submitted = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn(writer(
            storage.clone(),
            receiver,
            WriterOptions {
                max_batch: options.max_batch.max(1),
                outcome_linger: options.outcome_linger,
                retry_queue: options.retry_queue,
            },
            submitted.clone(),
        ));
        AuditLog {
            writer,
            jobs,
            submitted,
            index: storage.wants_index(),
            durable: storage.is_durable(),
            storage,
            max_event_bytes: options.max_event_bytes,
            redactor: options.redactor.map(Arc::new),
        }
    }

    /// Why the log refuses every write, if it does: its storage reported an earlier write
    /// that could not be undone ([`AuditError::Poisoned`], [`AuditStorage::poisoned`]); only
    /// reopening the log clears it. Cheap (no I/O): for health checks, which should fail
    /// while it answers `Some`.
    #[must_use]
    pub fn poisoned(&self) -> Option<String> {
        self.storage.poisoned()
    }

    /// Writes what is queued, stops the writer and releases the log (the JSONL folder lock,
    /// the database pool). Dropping the log does the same, but in the background.
    /// Submitted events still waiting for another attempt after a transient failure get
    /// three more, a backoff apart (at most 5 s each);
    /// those still unwritten are then logged as lost.
    ///
    /// # Errors
    ///
    /// [`AuditError::Closed`] if the writer task had failed.
    pub async fn close(self) -> Result<(), AuditError> {
        let AuditLog {
            writer,
            jobs,
            storage,
            ..
        } = self;
        drop(jobs);
        drop(storage);
        writer.await.map_err(|_| AuditError::Closed)
    }

    /// Waits until every event queued before this call, [submitted](AuditSink::submit) ones
    /// included, has been written (or has failed: a submitted event's failure is logged, or,
    /// for a transient failure, the event waits for another attempt).
    /// A service that submits events flushes before it exits.
    ///
    /// Reads (`query`, `get`, `outcomes_of`, `head`, `verify`, `find_redacted`) flush
    /// first while submitted events are pending, so they see every event whose `submit`
    /// has returned.
    ///
    /// # Errors
    ///
    /// [`AuditError::Closed`] if the writer task has stopped.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job::Flush(done))
            .await
            .map_err(|_| AuditError::Closed)?;
        wait.await.map_err(|_| AuditError::Closed)
    }

    /// Flushes if submitted events are pending, so a read sees them.
    async fn settle(&self) -> Result<(), AuditError> {
        if self.submitted.load(Ordering::Acquire) > 0 {
            self.flush().await?;
        }
        Ok(())
    }

    /// Records matching `query`, in sequence order.
    ///
    /// The SQL storages use their indexes. A JSONL log reads from the file that holds the
    /// record after the cursor, in one pass, and filters as it reads: a page near the end
    /// is cheap, a filter that matches nothing reads to the end.
    ///
    /// # Errors
    ///
    /// A bad limit, or a read failure.
    pub async fn query(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        query.validate()?;
        self.settle().await?;
        self.storage.query(query).await
    }

    /// The event with `id`, and its outcome if it has one (for an access broker's retry).
    ///
    /// A JSONL log has no index on ids: this reads the log until both are found (to its
    /// end when there is no outcome), decoding only the lines that contain the id.
    ///
    /// # Errors
    ///
    /// A read failure.
    pub async fn get(&self, id: &str) -> Result<Option<WithOutcome>, AuditError> {
        self.settle().await?;
        self.storage.get(id).await
    }

    /// The outcome of each intent among `records` (a page from [`query`](Self::query), say),
    /// keyed by the intent's id: one read for the whole page rather than a
    /// [`get`](Self::get) per record. Intents without an outcome yet are absent; records
    /// that are not intents are ignored.
    ///
    /// # Errors
    ///
    /// A read failure.
    pub async fn outcomes_of(
        &self,
        records: &[AuditRecord],
    ) -> Result<std::collections::HashMap<String, AuditRecord>, AuditError> {
        let intents: Vec<&AuditRecord> = records
            .iter()
            .filter(|r| r.event.kind == crate::EventKind::Intent)
            .collect();
        let Some(first) = intents.iter().map(|r| r.seq).min() else {
            return Ok(std::collections::HashMap::new());
        };
        let ids: Vec<&str> = intents.iter().map(|r| r.event.id.as_str()).collect();
        self.settle().await?;
        // An outcome is always written after its intent.
        let outcomes = self.storage.outcomes_of(&ids, first).await?;
        Ok(outcomes
            .into_iter()
            .filter_map(|o| Some((o.event.outcome_of.clone()?, o)))
            .collect())
    }

    /// The current end of the chain. On SQLite and PostgreSQL it is read from the database,
    /// and its newest record must verify (its line, its link to the one before, its indexed
    /// columns), so that a checkpoint never signs a head that is not what was written.
    ///
    /// # Errors
    ///
    /// A read failure; [`AuditError::HeadNotVerified`] if the newest record does not verify.
    pub async fn head(&self) -> Result<ChainHead, AuditError> {
        self.settle().await?;
        self.storage.head().await
    }

    /// Signs the current head ([`head`](Self::head)); export the checkpoint somewhere this
    /// log's writer cannot rewrite (another system, a SIEM), so a verifier can detect a
    /// truncated tail.
    ///
    /// # Errors
    ///
    /// As [`head`](Self::head).
    pub async fn checkpoint(&self, signer: &CheckpointSigner) -> Result<Checkpoint, AuditError> {
        Ok(signer.sign(&self.head().await?, crate::event::now_ms()))
    }

    /// Verifies the whole log, and `checkpoints` signed by `trusted_key`. The outer error is
    /// a failure to read; the inner one is the first violation found.
    ///
    /// # Errors
    ///
    /// A read failure.
    pub async fn verify(
        &self,
        checkpoints: &[Checkpoint],
        trusted_key: &[u8],
    ) -> Result<Result<VerifyReport, Violation>, AuditError> {
        self.settle().await?;
        let verifier = Verifier::with_checkpoints(checkpoints);
        Ok(match self.storage.verify(0, verifier).await? {
            Ok(verifier) => verifier.finish(checkpoints, trusted_key),
            Err(violation) => Err(violation),
        })
    }

    /// Verifies the log from a trusted `checkpoint` (signed by `trusted_key`) to its end:
    /// the record at the checkpoint's `seq` must have the signed hash, and every record
    /// after it must follow and link as [`verify`](Self::verify) checks (on SQL, indexed
    /// columns included); a log that ends before the checkpoint was truncated. Reads only
    /// the records from the checkpoint on, so a service can check, at start or before it
    /// signs the next checkpoint, that nothing it signed was since rewritten, cut off or
    /// chained anew. A checkpoint at `seq` 0 verifies the whole log.
    ///
    /// The report counts the log's records up to its head, as `verify` does.
    ///
    /// # Errors
    ///
    /// A read failure.
    pub async fn verify_since(
        &self,
        checkpoint: &Checkpoint,
        trusted_key: &[u8],
    ) -> Result<Result<VerifyReport, Violation>, AuditError> {
        let checkpoints = std::slice::from_ref(checkpoint);
        if let Err(e) = checkpoint.verify(trusted_key) {
            return Ok(Err(Violation::BadCheckpoint {
                seq: checkpoint.seq,
                reason: e.to_string(),
            }));
        }
        self.settle().await?;
        let Some(before) = checkpoint.seq.checked_sub(1) else {
            return self.verify(checkpoints, trusted_key).await;
        };
        let verifier = Verifier::resuming(before, checkpoints);
        let verifier = match self.storage.verify(before, verifier).await? {
            Ok(verifier) => verifier,
            Err(violation) => return Ok(Err(violation)),
        };
        if verifier.head().seq == 0 {
            // Nothing at or after the checkpoint: the log ends before it.
            return Ok(Err(Violation::Truncated {
                checkpoint_seq: checkpoint.seq,
                last_seq: self.storage.head().await?.seq,
            }));
        }
        Ok(verifier.finish(checkpoints, trusted_key))
    }

    /// The sequence numbers of records whose redacted field at `path` holds `value`.
    ///
    /// # Errors
    ///
    /// [`AuditError::Invalid`] if no redactor is configured; a read failure.
    pub async fn find_redacted(&self, path: &str, value: &Value) -> Result<Vec<u64>, AuditError> {
        let redactor = self
            .redactor
            .as_ref()
            .ok_or_else(|| AuditError::Invalid("this log has no redactor (HMAC key)".into()))?;
        self.settle().await?;
        let mut found = Vec::new();
        self.storage
            .for_each_decoded(0, &mut |decoded| {
                if lookup(&decoded.event, path)
                    .and_then(Value::as_str)
                    .is_some_and(|stored| redactor.matches(stored, value))
                {
                    found.push(decoded.seq);
                }
                Ok(true)
            })
            .await?;
        Ok(found)
    }

    /// Checks, redacts and serializes `event` (and indexes it, for a storage that wants
    /// that), on the caller's task.
    fn prepare(&self, event: AuditEvent) -> Result<PreparedEvent, AuditError> {
        let (json, index) = match &self.redactor {
            // Stored as it is: checked and serialized straight from the struct.
            None => {
                check_event_strings(&event)?;
                let json = canonical_json(&event)?;
                (json, self.index.then(|| RecordIndex::of_event(&event)))
            }
            // Redacted on its JSON value, which the index is then read from.
            Some(redactor) => {
                let mut value = serde_json::to_value(&event)
                    .map_err(|e| AuditError::Malformed(e.to_string()))?;
                check_strings(&value, &mut String::new())?;
                redactor.apply(&mut value);
                let json = serde_json::to_string(&value)
                    .map_err(|e| AuditError::Malformed(e.to_string()))?;
                (json, self.index.then(|| RecordIndex::of_value(&value)))
            }
        };
        if json.len() > self.max_event_bytes {
            return Err(AuditError::TooLarge {
                size: json.len(),
                max: self.max_event_bytes,
            });
        }
        Ok(PreparedEvent::new(event.id, json, index))
    }
}

#[async_trait]
impl AuditSink for AuditLog {
    async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        let outcome = event.kind == crate::EventKind::Outcome;
        let prepared = self.prepare(event)?;
        let (respond, answer) = oneshot::channel();
        self.jobs
            .send(Job::Write {
                prepared,
                respond: Some(respond),
                outcome,
            })
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// Checks, redacts and serializes `event` now, and queues it for the writer: it goes
    /// out with the next batch. Waits only for room in the queue. A batch that fails for a
    /// transient reason ([`AuditError::is_transient`]) is written again, in order and never
    /// twice ([`AuditOptions::retry_queue`] says for how long); a write that fails for good,
    /// or is given up, is logged (`tracing`, target `portcullis_audit`), with the event's id.
    async fn submit(&self, event: AuditEvent) -> Result<(), AuditError> {
        let outcome = event.kind == crate::EventKind::Outcome;
        let prepared = self.prepare(event)?;
        self.submitted.fetch_add(1, Ordering::AcqRel);
        let queued = self
            .jobs
            .send(Job::Write {
                prepared,
                respond: None,
                outcome,
            })
            .await;
        if queued.is_err() {
            self.submitted.fetch_sub(1, Ordering::AcqRel);
            return Err(AuditError::Closed);
        }
        Ok(())
    }

    /// Whether its storage is durable ([`AuditStorage::is_durable`]): JSONL, SQLite and
    /// PostgreSQL are.
    fn is_durable(&self) -> bool {
        self.durable
    }

    fn name(&self) -> &str {
        "audit-log"
    }
}

/// The first wait before submitted events that failed for a transient reason are written
/// again; it doubles after each failure, up to [`RETRY_MAX`], and starts over after a write
/// succeeds. A batch of new events tries at once, taking the waiting events along.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);

/// The longest wait between attempts at submitted events that keep failing.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// How many more attempts submitted events still waiting for a retry get once the log is
/// closed (or dropped); after them they are logged as lost.
const CLOSE_ATTEMPTS: u32 = 3;

/// Submitted events waiting for another attempt after a transient failure
/// ([`AuditError::is_transient`]), oldest first. Every event submitted after them waits
/// behind them, so submitted events are written in the order they were submitted.
struct Retry {
    events: Vec<PreparedEvent>,
    /// How many of the first `events` were in a batch whose failure leaves unknown whether
    /// it landed (a connection lost around its commit): the storage is asked
    /// ([`AuditStorage::holds`]) before they are written again.
    unsure: usize,
    /// The wait before the next attempt.
    backoff: std::time::Duration,
    /// The most events kept ([`AuditOptions::retry_queue`]).
    cap: usize,
}

impl Retry {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Keeps `events` (submitted, in order, none of them written) after those waiting,
    /// as far as the queue has room; logs the rest as lost. Returns how many were lost.
    fn keep(&mut self, events: impl IntoIterator<Item = PreparedEvent>, error: &str) -> usize {
        let mut lost = 0;
        for event in events {
            if self.events.len() < self.cap {
                self.events.push(event);
            } else {
                lost += 1;
                tracing::error!(
                    target: "portcullis_audit",
                    event = %event.id(),
                    error = %error,
                    "a submitted audit event could not be written, and the retry queue is full"
                );
            }
        }
        lost
    }

    /// Logs every waiting event as lost (`why`) and forgets them. Returns how many.
    fn give_up(&mut self, why: &str) -> usize {
        for event in &self.events {
            tracing::error!(
                target: "portcullis_audit",
                event = %event.id(),
                error = %why,
                "a submitted audit event could not be written"
            );
        }
        self.unsure = 0;
        std::mem::take(&mut self.events).len()
    }
}

/// The writer task: takes whatever is queued (up to `max_batch`), writes it as one batch, and
/// answers every caller in it. Submitted events whose batch failed for a transient reason
/// wait for the next batch, or for their backoff to pass; once the queue closes they get
/// [`CLOSE_ATTEMPTS`] more attempts.
async fn writer(
    storage: Arc<dyn AuditStorage>,
    mut jobs: mpsc::Receiver<Job>,
    options: WriterOptions,
    submitted: Arc<AtomicUsize>,
) {
    let WriterOptions {
        max_batch,
        outcome_linger,
        retry_queue,
    } = options;
    let mut batch = Vec::with_capacity(max_batch);
    let mut retry = Retry {
        events: Vec::new(),
        unsure: 0,
        backoff: RETRY_FIRST,
        cap: retry_queue,
    };
    let mut open = true;
    let mut closing_attempts = 0;
    loop {
        if retry.is_empty() {
            if !open || jobs.recv_many(&mut batch, max_batch).await == 0 {
                break;
            }
        } else if open {
            // New events, or the backoff's end, whichever comes first.
            tokio::select! {
                received = jobs.recv_many(&mut batch, max_batch) => open = received > 0,
                () = tokio::time::sleep(retry.backoff) => {}
            }
        }
        if !open && !retry.is_empty() {
            if closing_attempts == CLOSE_ATTEMPTS {
                let lost = retry.give_up("the audit log closed before the storage took it");
                submitted.fetch_sub(lost, Ordering::AcqRel);
                break;
            }
            closing_attempts += 1;
            tokio::time::sleep(retry.backoff).await;
        }
        // Callers answered by the previous batch are usually runnable right now, about to
        // queue their next event. Yielding once lets them do so, and they join this batch
        // instead of the next one: without it, a steady load splits into a batch of one
        // and a batch of the rest, paying two syncs where one would do. When nothing else
        // is runnable the yield returns at once, so an idle log adds no latency.
        if open && batch.len() < max_batch {
            tokio::task::yield_now().await;
            while batch.len() < max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        // Only outcomes: let them wait a little for an event to share the write with.
        if !outcome_linger.is_zero()
            && retry.is_empty()
            && batch.len() < max_batch
            && batch.iter().all(Job::is_outcome)
            && let Ok(Some(job)) = tokio::time::timeout(outcome_linger, jobs.recv()).await
        {
            batch.push(job);
            while batch.len() < max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        write_batch(&*storage, &mut batch, &submitted, &mut retry).await;
    }
}

/// What the writer task is given.
struct WriterOptions {
    max_batch: usize,
    outcome_linger: std::time::Duration,
    retry_queue: usize,
}

/// Who hears how a write went: a caller waiting for its receipt, or nobody (a submitted
/// event, whose failure is logged or retried).
enum Answer {
    Waiting(oneshot::Sender<Result<Receipt, AuditError>>),
    Submitted,
}

/// Writes the events waiting for a retry and those in `batch` (drained) as one append,
/// answers their callers, keeps the submitted ones for another attempt if it failed for a
/// transient reason (logs them as lost if it failed for good), then answers the flushes:
/// everything before them is written, has failed, or waits for another attempt.
async fn write_batch(
    storage: &dyn AuditStorage,
    batch: &mut Vec<Job>,
    submitted: &AtomicUsize,
    retry: &mut Retry,
) {
    let mut events = Vec::with_capacity(batch.len() + retry.events.len());
    let mut answers = Vec::with_capacity(events.capacity());
    let mut flushes = Vec::new();
    // Submitted events that may have landed with a batch whose commit went unanswered.
    if retry.unsure > 0
        && let Some(first) = retry.events.first()
    {
        match storage.holds(first).await {
            Ok(true) => {
                let landed = retry.events.drain(..retry.unsure).count();
                submitted.fetch_sub(landed, Ordering::AcqRel);
                retry.unsure = 0;
            }
            Ok(false) => retry.unsure = 0,
            Err(err) if err.is_transient() => {}
            // Unknown for good: dropped (logged) rather than perhaps written twice.
            Err(err) => {
                let unsure: Vec<PreparedEvent> = retry.events.drain(..retry.unsure).collect();
                retry.unsure = 0;
                for event in &unsure {
                    tracing::error!(
                        target: "portcullis_audit",
                        event = %event.id(),
                        error = %err,
                        "a submitted audit event may not have been written: whether its batch \
                         landed cannot be read"
                    );
                }
                submitted.fetch_sub(unsure.len(), Ordering::AcqRel);
            }
        }
    }
    // Still unknown: nothing queued after them may be written first, so this batch fails
    // as theirs did.
    let blocked = retry.unsure > 0;
    for event in retry.events.drain(..) {
        answers.push(Answer::Submitted);
        events.push(event);
    }
    for job in batch.drain(..) {
        match job {
            Job::Write {
                prepared, respond, ..
            } => {
                answers.push(match respond {
                    Some(respond) => Answer::Waiting(respond),
                    None => Answer::Submitted,
                });
                events.push(prepared);
            }
            Job::Flush(done) => flushes.push(done),
        }
    }
    if !events.is_empty() {
        let detached = answers
            .iter()
            .filter(|a| matches!(a, Answer::Submitted))
            .count();
        let appended = if blocked {
            Err(AuditError::Unavailable(
                "whether an earlier batch landed cannot be read yet".into(),
            ))
        } else {
            let batch = Batch::new(events);
            let appended = match storage.append(&batch).await {
                // Receipts the storage did not get by sealing this batch would name records
                // that may not be these events.
                Ok(appended) if !appended.is_of(&batch) => Err(AuditError::Poisoned(format!(
                    "the audit storage answered an append with the receipts of another \
                     batch; whether this one was written is unknown ({storage:?})"
                ))),
                other => other,
            };
            events = batch.into_events();
            appended
        };
        match appended {
            Ok(appended) => {
                let receipts = appended.into_receipts();
                for (answer, receipt) in answers.into_iter().zip(receipts) {
                    if let Answer::Waiting(respond) = answer {
                        let _ = respond.send(Ok(receipt));
                    }
                }
                retry.backoff = RETRY_FIRST;
                submitted.fetch_sub(detached, Ordering::AcqRel);
            }
            Err(err) => {
                let transient = err.is_transient();
                let message = err.to_string();
                let mut err = Some(err);
                let mut again = Vec::new();
                for (answer, event) in answers.into_iter().zip(events) {
                    match answer {
                        Answer::Waiting(respond) => {
                            let answer = err
                                .take()
                                .unwrap_or_else(|| AuditError::BatchFailed(message.clone()));
                            let _ = respond.send(Err(answer));
                        }
                        Answer::Submitted if transient => again.push(event),
                        Answer::Submitted => tracing::error!(
                            target: "portcullis_audit",
                            event = %event.id(),
                            error = %message,
                            "a submitted audit event could not be written"
                        ),
                    }
                }
                if transient {
                    if !again.is_empty() {
                        tracing::warn!(
                            target: "portcullis_audit",
                            events = again.len(),
                            error = %message,
                            retry_in = ?retry.backoff,
                            "submitted audit events could not be written yet; retrying"
                        );
                    }
                    let kept_before = retry.events.len();
                    let lost = retry.keep(again, &message);
                    // Everything that was in this batch may have landed with it (unless it
                    // never reached the storage); what waited behind an unknown batch did
                    // not.
                    if !blocked {
                        retry.unsure = retry.events.len() - kept_before;
                    }
                    retry.backoff = (retry.backoff * 2).min(RETRY_MAX);
                    submitted.fetch_sub(lost, Ordering::AcqRel);
                } else {
                    submitted.fetch_sub(detached, Ordering::AcqRel);
                }
            }
        }
    }
    for done in flushes {
        let _ = done.send(());
    }
}
