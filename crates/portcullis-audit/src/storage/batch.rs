//! What an [`AuditLog`](crate::AuditLog) hands its storage: a [`Batch`] of events, checked,
//! redacted and serialized; sealed into the chain by [`Batch::seal`], on the head the storage
//! names, into records to store ([`Sealed`]) and the receipts the storage returns
//! ([`Appended`]).

use std::sync::{Arc, OnceLock};

use crate::chain::{ChainHead, seal};
use crate::{AuditError, Receipt, RecordIndex};

/// One event of a [`Batch`]: checked (no control characters, within the size cap), redacted
/// and serialized in canonical form by the log, before its batch reached the storage.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    id: String,
    json: String,
    index: OnceLock<RecordIndex>,
}

impl PreparedEvent {
    /// An event `id` whose stored (redacted) form is `json`, canonical; `index`, if the log
    /// computed it already (on the caller's task).
    pub(crate) fn new(id: String, json: String, index: Option<RecordIndex>) -> Self {
        let computed = OnceLock::new();
        if let Some(index) = index {
            let _ = computed.set(index);
        }
        PreparedEvent {
            id,
            json,
            index: computed,
        }
    }

    /// The event's id, as the caller gave it (a redactor never changes it).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The event as it is stored (redacted), in canonical JSON: the `E` of its record line.
    #[must_use]
    pub fn json(&self) -> &str {
        &self.json
    }

    /// What the event is indexed by. Computed as the event was prepared, on the caller's
    /// task, for a storage that [wants it](crate::AuditStorage::wants_index); otherwise here,
    /// on first use, from [`json`](Self::json).
    pub fn index(&self) -> &RecordIndex {
        self.index.get_or_init(|| {
            let value = serde_json::from_str(&self.json).unwrap_or(serde_json::Value::Null);
            RecordIndex::of_value(&value)
        })
    }
}

/// Events for one [`append`](crate::AuditStorage::append), in the order they are to be
/// chained: everything the log's writer took from its queue at once (group commit), up to
/// [`AuditOptions::max_batch`](crate::AuditOptions::max_batch). Cloning is cheap: clones
/// share the events (for a storage that hands the batch to a blocking thread).
#[derive(Debug, Clone)]
pub struct Batch {
    events: Arc<Vec<PreparedEvent>>,
}

impl Batch {
    pub(crate) fn new(events: Vec<PreparedEvent>) -> Self {
        Batch {
            events: Arc::new(events),
        }
    }

    /// The events back, for another attempt (copied if the storage kept a clone).
    pub(crate) fn into_events(self) -> Vec<PreparedEvent> {
        Arc::try_unwrap(self.events).unwrap_or_else(|shared| (*shared).clone())
    }

    /// How many events.
    #[must_use]
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are none (the log never appends an empty batch).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, in chain order.
    #[must_use]
    pub fn events(&self) -> &[PreparedEvent] {
        &self.events
    }

    /// Seals the batch onto `after`, the head of the chain as stored: the first event becomes
    /// record `after.seq + 1`, linked to `after.hash`, and so on. Call it where the head is
    /// known to be current (under the storage's lock, inside its transaction); sealing again
    /// on another head (after a write conflict) is fine, only the records written count.
    ///
    /// # Errors
    ///
    /// [`AuditError::Invalid`] if the sequence numbers would pass `u64::MAX`.
    pub fn seal(&self, after: ChainHead) -> Result<Sealed, AuditError> {
        let len = u64::try_from(self.events.len()).unwrap_or(u64::MAX);
        if after.seq.checked_add(len).is_none() {
            return Err(AuditError::Invalid(format!(
                "a batch of {len} records after record {} would pass the largest sequence number",
                after.seq
            )));
        }
        let mut head = after;
        let mut receipts = Vec::with_capacity(self.events.len());
        let mut lines = Vec::with_capacity(self.events.len());
        for event in self.events.iter() {
            let sealed = seal(&head, event.id.clone(), &event.json);
            head = sealed.head;
            receipts.push(sealed.receipt);
            lines.push(sealed.line);
        }
        Ok(Sealed {
            events: self.events.clone(),
            after,
            head,
            receipts,
            lines,
        })
    }
}

/// A [`Batch`] sealed onto a chain head: one record per event, each with its line, the
/// record as stored. Write every line (all or none), then return [`Appended`] from
/// [`append`](crate::AuditStorage::append): `Ok(sealed.into())`, or
/// [`into_lines`](Self::into_lines) to hand the lines over by value.
#[derive(Debug)]
pub struct Sealed {
    events: Arc<Vec<PreparedEvent>>,
    after: ChainHead,
    head: ChainHead,
    receipts: Vec<Receipt>,
    lines: Vec<String>,
}

impl Sealed {
    /// The head the batch was sealed onto (its first record links to it).
    #[must_use]
    pub fn after(&self) -> ChainHead {
        self.after
    }

    /// The head once the batch is stored: its last record.
    #[must_use]
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// How many records.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The records, in chain order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = SealedRecord<'_>> {
        self.events
            .iter()
            .zip(&self.receipts)
            .zip(&self.lines)
            .map(|((event, receipt), line)| SealedRecord {
                event,
                receipt,
                line,
            })
    }

    /// The lines, by value, in chain order (for a storage that would otherwise copy them),
    /// and what [`append`](crate::AuditStorage::append) returns once they are written.
    #[must_use]
    pub fn into_lines(self) -> (Vec<String>, Appended) {
        let Sealed {
            events,
            head,
            receipts,
            lines,
            ..
        } = self;
        (
            lines,
            Appended {
                events,
                head,
                receipts,
            },
        )
    }
}

/// One record of a [`Sealed`] batch.
#[derive(Debug, Clone, Copy)]
pub struct SealedRecord<'a> {
    event: &'a PreparedEvent,
    receipt: &'a Receipt,
    line: &'a str,
}

impl<'a> SealedRecord<'a> {
    /// Its sequence number.
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.receipt.seq
    }

    /// Its hash, 64 lower-case hex digits.
    #[must_use]
    pub fn hash(&self) -> &'a str {
        &self.receipt.hash
    }

    /// The event's id.
    #[must_use]
    pub fn id(&self) -> &'a str {
        &self.event.id
    }

    /// The record line to store (no trailing newline): `{"event":…,"hash":…,"prev":…,
    /// "seq":…,"v":1}`. Store these bytes as they are: the verifier hashes the bytes read
    /// back, so a line re-encoded (even with the same content) reads as altered.
    #[must_use]
    pub fn line(&self) -> &'a str {
        self.line
    }

    /// The event: its id, stored JSON and index.
    #[must_use]
    pub fn event(&self) -> &'a PreparedEvent {
        self.event
    }

    /// What the record is indexed by ([`PreparedEvent::index`]).
    pub fn index(&self) -> &'a RecordIndex {
        self.event.index()
    }
}

/// What [`append`](crate::AuditStorage::append) returns once a sealed batch is durable: its
/// receipts. Only sealing the batch makes one (`Appended::from(sealed)`,
/// [`Sealed::into_lines`]), so every receipt the log hands out names the record's hash as
/// sealed, and the log checks that it is the receipt of the batch it asked to append.
#[derive(Debug)]
pub struct Appended {
    events: Arc<Vec<PreparedEvent>>,
    head: ChainHead,
    receipts: Vec<Receipt>,
}

impl Appended {
    /// The head after the batch.
    #[must_use]
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// One receipt per record, in chain order.
    #[must_use]
    pub fn receipts(&self) -> &[Receipt] {
        &self.receipts
    }

    /// Whether these are the receipts of `batch` (sealed from it, not from another).
    pub(crate) fn is_of(&self, batch: &Batch) -> bool {
        Arc::ptr_eq(&self.events, &batch.events)
    }

    pub(crate) fn into_receipts(self) -> Vec<Receipt> {
        self.receipts
    }
}

impl From<Sealed> for Appended {
    fn from(sealed: Sealed) -> Self {
        sealed.into_lines().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::decode;

    fn batch(n: usize) -> Batch {
        Batch::new(
            (0..n)
                .map(|i| PreparedEvent::new(format!("id-{i}"), format!("{{\"n\":{i}}}"), None))
                .collect(),
        )
    }

    #[test]
    fn a_sealed_batch_chains_its_records_onto_the_head() {
        let batch = batch(3);
        let after = ChainHead {
            seq: 7,
            hash: [9; 32],
        };
        let sealed = batch.seal(after).unwrap();
        assert_eq!((sealed.len(), sealed.after()), (3, after));
        let mut prev = after;
        for (i, record) in sealed.records().enumerate() {
            let decoded = decode(record.line().as_bytes()).unwrap();
            assert_eq!(decoded.computed_hash, decoded.stored_hash);
            assert_eq!((decoded.seq, decoded.prev), (prev.seq + 1, prev.hash));
            assert_eq!(record.seq(), decoded.seq);
            assert_eq!(record.hash(), hex::encode(decoded.stored_hash));
            assert_eq!(record.id(), format!("id-{i}"));
            prev = ChainHead {
                seq: decoded.seq,
                hash: decoded.stored_hash,
            };
        }
        assert_eq!(sealed.head(), prev);
        let appended = Appended::from(sealed);
        assert!(appended.is_of(&batch) && !appended.is_of(&self::batch(3)));
        assert_eq!(appended.receipts().len(), 3);
    }

    #[test]
    fn an_index_not_computed_ahead_is_read_from_the_json() {
        let event = PreparedEvent::new(
            "id".into(),
            r#"{"actor":{"subject":"alice"},"kind":"intent","time_ms":5}"#.into(),
            None,
        );
        assert_eq!(event.index().actor, "alice");
        assert_eq!(event.index().time_ms, 5);
    }

    #[test]
    fn sealing_past_the_largest_sequence_number_is_refused() {
        let full = ChainHead {
            seq: u64::MAX - 1,
            hash: [0; 32],
        };
        assert!(batch(1).seal(full).is_ok());
        assert!(matches!(batch(2).seal(full), Err(AuditError::Invalid(_))));
    }
}
