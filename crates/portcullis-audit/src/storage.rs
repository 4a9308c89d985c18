//! [`AuditStorage`]: where an [`AuditLog`](crate::AuditLog) keeps its records. The log does
//! everything that makes a record trustworthy (checks, redaction, group commit, the hash
//! chain, verification, checkpoints); a storage keeps sealed lines, in order, durably, and
//! reads them back. JSONL files, SQLite and PostgreSQL are storages; so is
//! [`MemoryStorage`], and so is whatever an embedder writes (Kafka, an object-lock bucket).

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;

use crate::chain::{ChainHead, Decoded, decode};
use crate::verify::{Verifier, Violation};
use crate::{AuditError, AuditPage, AuditQuery, AuditRecord, WithOutcome};

mod batch;
mod index;
mod memory;

pub use batch::{Appended, Batch, PreparedEvent, Sealed, SealedRecord};
pub use index::RecordIndex;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use index::effect_name;
pub use memory::MemoryStorage;

/// How many stored lines the default reads ask [`scan`](AuditStorage::scan) for at a time.
pub(crate) const SCAN_PAGE: usize = 1000;

/// What a read calls on each decoded record, in order; it returns `false` to stop the read.
pub type Visit<'a> = dyn FnMut(Decoded) -> Result<bool, AuditError> + Send + 'a;

/// Where an [`AuditLog`](crate::AuditLog) keeps its records: the extension point for
/// storing an audit log somewhere new. Build the log with
/// [`AuditLog::with_storage`](crate::AuditLog::with_storage); it keeps the hash chain, group
/// commit, redaction, checks, checkpoints and verification, and calls this for the I/O.
///
/// Three methods are required:
///
/// - [`append`](Self::append) seals a [`Batch`] onto the head as stored
///   ([`Batch::seal`]), writes every record line durably, all or nothing, and returns the
///   receipts ([`Appended`]). The log calls it from one task, one batch at a time; a
///   storage that several logs (or processes) write must itself make reading the head,
///   sealing and writing one atomic step (a lock, a transaction, a conditional write), or
///   the chain forks.
/// - [`head`](Self::head): the last stored record's sequence number and hash.
/// - [`scan`](Self::scan): stored lines after a sequence number, in order.
///
/// Everything else has a default built on those three; override a method to use an index.
/// Storage order is sequence order: record `n` is the `n`th line, from 1, with no gaps.
/// A storage never changes or removes a stored line; a verifier reports it if one does.
///
/// A storage is not [durable](Self::is_durable) unless it says so, and
/// [`WriteAhead`](crate::WriteAhead) refuses a log over one that does not.
#[async_trait]
pub trait AuditStorage: Send + Sync + fmt::Debug + 'static {
    /// Seals `batch` after the stored head ([`Batch::seal`]) and writes its lines, all or
    /// none, returning only once they are durable: `Ok(sealed.into())`. On an error nothing
    /// of the batch may be stored; if that cannot be known (a write that failed halfway and
    /// could not be undone), refuse every later append too ([`AuditError::Poisoned`]).
    ///
    /// # Errors
    ///
    /// Anything that kept the batch from being durable; its events' callers get the error.
    async fn append(&self, batch: &Batch) -> Result<Appended, AuditError>;

    /// The stored head: the last record's sequence number and hash, [`ChainHead::EMPTY`]
    /// for an empty log. A storage other writers share reads it from storage.
    ///
    /// # Errors
    ///
    /// A read failure.
    async fn head(&self) -> Result<ChainHead, AuditError>;

    /// Up to `limit` stored lines (byte for byte as [`SealedRecord::line`] gave them,
    /// without a newline) of the records after `after_seq`, in sequence order; none after
    /// the last.
    ///
    /// # Errors
    ///
    /// A read failure.
    async fn scan(&self, after_seq: u64, limit: usize) -> Result<Vec<String>, AuditError>;

    /// Whether `event` is stored: a record with its id whose event is this one. The log asks
    /// before it appends again the [submitted](crate::AuditSink::submit) events of a batch
    /// whose append failed with [`AuditError::Unavailable`]: a connection lost around a
    /// commit leaves unknown whether the batch landed, and a batch is all or none, so its
    /// first event answers for it. A storage that can return `Unavailable` after its write
    /// may have landed must answer this truly, or those events are written twice. The
    /// default reads the records whose line holds the id.
    ///
    /// # Errors
    ///
    /// A read failure.
    async fn holds(&self, event: &PreparedEvent) -> Result<bool, AuditError> {
        let wanted = prepared_value(event)?;
        let needles = [as_written(event.id())?];
        let mut found = false;
        self.for_each_decoded_containing(0, &needles, &mut |decoded| {
            found = decoded.event == wanted;
            Ok(!found)
        })
        .await?;
        Ok(found)
    }

    /// Whether a record [`append`](Self::append) has returned for survives a crash
    /// (fsync'd, committed, acknowledged by a quorum). Default `false`.
    fn is_durable(&self) -> bool {
        false
    }

    /// Why the storage refuses every append ([`AuditError::Poisoned`]: an earlier write
    /// could not be undone), if it does; cheap, for health checks. Default `None`.
    fn poisoned(&self) -> Option<String> {
        None
    }

    /// Whether [`append`](Self::append) reads each event's [`RecordIndex`]. If so, the log
    /// computes it as it prepares each event, on the caller's task, rather than on its one
    /// writer. Default `false` ([`PreparedEvent::index`] still works, computed on use).
    fn wants_index(&self) -> bool {
        false
    }

    /// Checks the newest `window` records (at least one), and the one before them whose
    /// hash they link to, before the log appends anything: each one's hash against its
    /// content, its sequence number and link; a window that reaches the first record checks
    /// that it is record 1, linked to nothing. Returns the head they end in, or the first
    /// violation ([`Violation::HeadMismatch`] if it is not [`head`](Self::head)). A storage
    /// with an index checks that too.
    ///
    /// # Errors
    ///
    /// A read failure.
    async fn verify_tail(&self, window: usize) -> Result<Result<ChainHead, Violation>, AuditError> {
        let claimed = self.head().await?;
        let window = u64::try_from(window.max(1)).unwrap_or(u64::MAX);
        let (after, verifier) = match claimed.seq.checked_sub(window.saturating_add(1)) {
            Some(before) => (before, Verifier::resuming(before, &[])),
            None => (0, Verifier::new()),
        };
        let found = match verify_pages(self, after, verifier).await? {
            Ok(verifier) => verifier.head(),
            Err(violation) => return Ok(Err(violation)),
        };
        if found != claimed {
            return Ok(Err(Violation::HeadMismatch {
                claimed: claimed.seq,
                last: found.seq,
            }));
        }
        Ok(Ok(found))
    }

    /// Feeds every stored line after `after_seq`, in order, to `verifier`, stopping at the
    /// first violation: from the start for an `after_seq` of 0 (a `verifier` from
    /// [`Verifier::new`] or [`Verifier::with_checkpoints`]), else from the record after it
    /// (a `verifier` that is [resuming](Verifier::resuming)). A storage with an index
    /// checks each record's index against its line ([`Verifier::feed_decoded`],
    /// [`RecordIndex::of`]).
    ///
    /// # Errors
    ///
    /// A read failure.
    async fn verify(
        &self,
        after_seq: u64,
        verifier: Verifier,
    ) -> Result<Result<Verifier, Violation>, AuditError> {
        verify_pages(self, after_seq, verifier).await
    }

    /// Calls `visit` on every record after `after_seq`, decoded, in order, until it returns
    /// `false`.
    ///
    /// # Errors
    ///
    /// A read failure, a line that does not decode, or `visit`'s error.
    async fn for_each_decoded(
        &self,
        after_seq: u64,
        visit: &mut Visit<'_>,
    ) -> Result<(), AuditError> {
        let mut after = after_seq;
        loop {
            let lines = self.scan(after, SCAN_PAGE).await?;
            if lines.is_empty() {
                return Ok(());
            }
            for line in &lines {
                let decoded = decode(line.as_bytes())?;
                if decoded.seq <= after {
                    return Err(AuditError::Malformed(format!(
                        "reading after record {after}, the storage returned record {}",
                        decoded.seq
                    )));
                }
                after = decoded.seq;
                if !visit(decoded)? {
                    return Ok(());
                }
            }
        }
    }

    /// As [`for_each_decoded`](Self::for_each_decoded), where only records whose stored
    /// line contains one of `needles` (bytes) can matter to `visit`: a storage may skip the
    /// others without decoding them. The default visits every record; `visit` checks.
    ///
    /// # Errors
    ///
    /// As [`for_each_decoded`](Self::for_each_decoded).
    async fn for_each_decoded_containing(
        &self,
        after_seq: u64,
        needles: &[Vec<u8>],
        visit: &mut Visit<'_>,
    ) -> Result<(), AuditError> {
        let _ = needles;
        self.for_each_decoded(after_seq, visit).await
    }

    /// Records matching `query` (already validated), in sequence order; at most
    /// `query.limit` ([`AuditPage::from_fetched`] cuts one more to set the cursor). The
    /// default reads from the cursor on and filters ([`AuditQuery::matches`]).
    ///
    /// # Errors
    ///
    /// A read failure.
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let wanted = usize::try_from(query.limit).unwrap_or(usize::MAX) + 1;
        let mut found = Vec::new();
        self.for_each_decoded(query.after_seq.unwrap_or(0), &mut |decoded| {
            let record = decoded.into_record()?;
            if query.matches(&record) {
                found.push(record);
            }
            Ok(found.len() < wanted)
        })
        .await?;
        Ok(AuditPage::from_fetched(found, query.limit))
    }

    /// The event with `id`, and its first outcome. The default reads the records whose line
    /// holds the id as the log writes it (a JSON string) until it has found both.
    ///
    /// # Errors
    ///
    /// A read failure.
    async fn get(&self, id: &str) -> Result<Option<WithOutcome>, AuditError> {
        let needles = [as_written(id)?];
        let mut event = None;
        let mut outcome = None;
        self.for_each_decoded_containing(0, &needles, &mut |decoded| {
            let record = decoded.into_record()?;
            if record.event.id == id {
                event.get_or_insert(record);
            } else if record.event.outcome_of.as_deref() == Some(id) {
                outcome.get_or_insert(record);
            }
            // An outcome is written after its intent: once both are found, nothing is left.
            Ok(event.is_none() || outcome.is_none())
        })
        .await?;
        Ok(event.map(|event| WithOutcome { event, outcome }))
    }

    /// The first outcome recorded for each of `ids`, all of them recorded after `after_seq`
    /// (an outcome is always written after its intent). The default is one read from there.
    ///
    /// # Errors
    ///
    /// A read failure.
    async fn outcomes_of(
        &self,
        ids: &[&str],
        after_seq: u64,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let wanted: HashSet<&str> = ids.iter().copied().collect();
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        // An outcome's line holds the intent's id (as its `outcome_of`).
        let needles = ids
            .iter()
            .map(|id| as_written(id))
            .collect::<Result<Vec<_>, _>>()?;
        self.for_each_decoded_containing(after_seq, &needles, &mut |decoded| {
            let record = decoded.into_record()?;
            if let Some(of) = record.event.outcome_of.as_deref()
                && wanted.contains(of)
                && seen.insert(of.to_owned())
            {
                found.push(record);
            }
            Ok(seen.len() < wanted.len())
        })
        .await?;
        Ok(found)
    }
}

/// Feeds `verifier` the lines after `after_seq`, a page of [`AuditStorage::scan`] at a time.
async fn verify_pages<S: AuditStorage + ?Sized>(
    storage: &S,
    after_seq: u64,
    mut verifier: Verifier,
) -> Result<Result<Verifier, Violation>, AuditError> {
    let mut after = after_seq;
    loop {
        let lines = storage.scan(after, SCAN_PAGE).await?;
        if lines.is_empty() {
            return Ok(Ok(verifier));
        }
        for line in &lines {
            if let Err(violation) = verifier.feed(line.as_bytes()) {
                return Ok(Err(violation));
            }
        }
        // Every line but a resumed verifier's first follows the one before; that one says
        // where it is, and the next page starts after the last.
        let last = verifier.head().seq;
        if last <= after {
            return Ok(Err(Violation::OutOfSequence {
                expected: after.saturating_add(1),
                found: last,
            }));
        }
        after = last;
    }
}

/// The event `prepared` holds, as a stored line's `event` decodes.
pub(crate) fn prepared_value(prepared: &PreparedEvent) -> Result<serde_json::Value, AuditError> {
    serde_json::from_str(prepared.json()).map_err(|e| AuditError::Malformed(e.to_string()))
}

/// `text` as a stored line holds it: a JSON string, quotes and escapes included.
fn as_written(text: &str) -> Result<Vec<u8>, AuditError> {
    serde_json::to_vec(text).map_err(|e| AuditError::Invalid(format!("event id: {e}")))
}
