//! Verifying a chain of records, and checkpoints against it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::chain::{ChainHead, Decoded, Hash, decode, stored_bytes_hash_to};
use crate::{AuditError, Checkpoint};

/// The first thing wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Violation {
    /// Record number `index` (1-based, in storage order) does not decode.
    Malformed {
        /// Its position in storage order.
        index: u64,
        /// Why.
        reason: String,
    },
    /// A record's content does not match its hash: it was altered.
    Altered {
        /// Its sequence number.
        seq: u64,
    },
    /// A record appears where another was expected: records were deleted, inserted or
    /// reordered.
    OutOfSequence {
        /// The sequence number that should come next.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// A record does not link to the one before it: the earlier record was replaced.
    BrokenLink {
        /// The record whose `prev` does not match.
        seq: u64,
    },
    /// The log ends before a signed checkpoint: its tail was truncated.
    Truncated {
        /// The checkpoint's sequence number.
        checkpoint_seq: u64,
        /// The log's last.
        last_seq: u64,
    },
    /// The record at a checkpoint's position does not have the signed hash.
    CheckpointMismatch {
        /// The checkpoint's sequence number.
        seq: u64,
    },
    /// A SQL row's indexed column does not hold what its record's chained line says: the
    /// column was changed in the database, so queries by it miss or misattribute the record.
    /// The line itself is intact (it was checked first).
    IndexMismatch {
        /// The record's sequence number, as its line says.
        seq: u64,
        /// The column (`resource`, `correlation_id`, …).
        column: String,
        /// What the column holds (`None` for SQL `NULL`).
        stored: Option<String>,
        /// What the line says it must hold (`None` for `NULL`).
        expected: Option<String>,
    },
    /// A storage's head is not its last record as stored
    /// ([`AuditStorage::verify_tail`](crate::AuditStorage::verify_tail)): new records would
    /// be chained onto something that is not what was written.
    HeadMismatch {
        /// The sequence number of the head the storage reports.
        claimed: u64,
        /// The sequence number of its last record as read (the same when only the hash
        /// differs).
        last: u64,
    },
    /// A checkpoint whose signature does not verify.
    BadCheckpoint {
        /// Its sequence number.
        seq: u64,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Malformed { index, reason } => {
                write!(f, "record #{index} (storage order) is malformed: {reason}")
            }
            Violation::Altered { seq } => write!(
                f,
                "record {seq} was altered (its hash does not match its content)"
            ),
            Violation::OutOfSequence { expected, found } => write!(
                f,
                "expected record {expected}, found {found}: records were deleted, inserted or reordered"
            ),
            Violation::BrokenLink { seq } => write!(
                f,
                "record {seq} does not link to record {}: that record was replaced",
                seq.saturating_sub(1)
            ),
            Violation::Truncated {
                checkpoint_seq,
                last_seq,
            } => write!(
                f,
                "the log ends at record {last_seq}, but a signed checkpoint covers {checkpoint_seq}: its tail was truncated"
            ),
            Violation::CheckpointMismatch { seq } => {
                write!(f, "record {seq} differs from the signed checkpoint")
            }
            Violation::IndexMismatch {
                seq,
                column,
                stored,
                expected,
            } => write!(
                f,
                "record {seq}: its indexed column `{column}` holds {}, but the record says {}: \
                 the index was altered, so queries by `{column}` miss or misattribute the record",
                Shown(stored.as_deref()),
                Shown(expected.as_deref())
            ),
            Violation::HeadMismatch { claimed, last } if claimed == last => write!(
                f,
                "the storage's head names record {claimed} with a hash that record does not have"
            ),
            Violation::HeadMismatch { claimed, last } => write!(
                f,
                "the storage's head is record {claimed}, but its records end at record {last}"
            ),
            Violation::BadCheckpoint { seq, reason } => {
                write!(f, "checkpoint {seq} is not valid: {reason}")
            }
        }
    }
}

/// A column value as a violation shows it: quoted with control characters escaped (the value
/// comes from a database an attacker may have written), `NULL` for none, cut after
/// [`SHOWN_CHARS`] characters.
struct Shown<'a>(Option<&'a str>);

/// How much of a column value a violation message shows.
const SHOWN_CHARS: usize = 100;

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(text) = self.0 else {
            return f.write_str("NULL");
        };
        match text.char_indices().nth(SHOWN_CHARS) {
            Some((cut, _)) => write!(f, "{:?}…", text.get(..cut).unwrap_or_default()),
            None => write!(f, "{text:?}"),
        }
    }
}

/// What a clean verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many records.
    pub records: u64,
    /// The chain head.
    pub head: ChainHead,
    /// How many checkpoints were checked.
    pub checkpoints: usize,
}

/// Checks records one at a time, in storage order.
///
/// ```
/// use portcullis_audit::Verifier;
/// let verifier = Verifier::new();
/// let report = verifier.finish(&[], &[]).unwrap();
/// assert_eq!(report.records, 0);
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    head: ChainHead,
    index: u64,
    /// Set for a verifier of a log's newest records ([`Verifier::resuming`]): the next line
    /// is the first it sees, so its sequence number and `prev` are taken as they are.
    resuming: bool,
    /// Hashes seen at the sequence numbers checkpoints name.
    wanted: BTreeMap<u64, Option<Hash>>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl Verifier {
    /// A verifier for a log from its first record.
    #[must_use]
    pub fn new() -> Self {
        Verifier {
            head: ChainHead::EMPTY,
            index: 0,
            resuming: false,
            wanted: BTreeMap::new(),
        }
    }

    /// A verifier of a log's newest records, from a record whose predecessors it does not
    /// read (what opening a log checks before appending to it). The first line fed is the
    /// anchor: its hash must match its content, but its sequence number and `prev` are
    /// taken as they are; every later line must follow it as in [`feed`](Verifier::feed).
    /// `index_before` is the storage position before the anchor, as far as the caller
    /// knows it, for the `index` of a [`Violation::Malformed`]; `checkpoints` are checked
    /// in [`finish`](Verifier::finish), as [`with_checkpoints`](Verifier::with_checkpoints)
    /// does (only those at or after the anchor can match).
    ///
    /// ```
    /// use portcullis_audit::Verifier;
    /// // Records 1 to 10 were checked before; 11 is the anchor, 12 on must follow it.
    /// let verifier = Verifier::resuming(10, &[]);
    /// assert_eq!(verifier.head().seq, 0); // nothing fed yet
    /// ```
    #[must_use]
    pub fn resuming(index_before: u64, checkpoints: &[Checkpoint]) -> Self {
        Verifier {
            index: index_before,
            resuming: true,
            ..Verifier::with_checkpoints(checkpoints)
        }
    }

    /// A verifier that will also check `checkpoints` in [`finish`](Verifier::finish).
    #[must_use]
    pub fn with_checkpoints(checkpoints: &[Checkpoint]) -> Self {
        let mut verifier = Verifier::new();
        verifier.wanted = checkpoints.iter().map(|c| (c.seq, None)).collect();
        verifier
    }

    /// Checks the next stored line.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub fn feed(&mut self, line: &[u8]) -> Result<(), Violation> {
        self.feed_decoded(line).map(drop)
    }

    /// As [`feed`](Verifier::feed), and returns the line decoded (its hash and link
    /// checked), for a storage that checks more against it (its index:
    /// [`RecordIndex::of`](crate::RecordIndex::of)).
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub fn feed_decoded(&mut self, line: &[u8]) -> Result<Decoded, Violation> {
        self.index = self.index.saturating_add(1);
        let decoded = decode(line).map_err(|e| Violation::Malformed {
            index: self.index,
            reason: match e {
                AuditError::Malformed(reason) => reason,
                other => other.to_string(),
            },
        })?;
        let anchor = std::mem::take(&mut self.resuming);
        // Checked: after an anchor, the head's seq is whatever a line claimed.
        let expected = self.head.seq.checked_add(1);
        if expected != Some(decoded.seq) && !anchor {
            return Err(Violation::OutOfSequence {
                expected: expected.unwrap_or(u64::MAX),
                found: decoded.seq,
            });
        }
        if decoded.computed_hash != decoded.stored_hash
            || !stored_bytes_hash_to(line, &decoded.stored_hash)
        {
            return Err(Violation::Altered { seq: decoded.seq });
        }
        if decoded.prev != self.head.hash && !anchor {
            return Err(Violation::BrokenLink { seq: decoded.seq });
        }
        if let Some(slot) = self.wanted.get_mut(&decoded.seq) {
            *slot = Some(decoded.stored_hash);
        }
        self.head = ChainHead {
            seq: decoded.seq,
            hash: decoded.stored_hash,
        };
        Ok(decoded)
    }

    /// The head so far.
    #[must_use]
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// Checks `checkpoints` (which must have been given to
    /// [`with_checkpoints`](Verifier::with_checkpoints)) against what was fed, each signed by
    /// `trusted_key`.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub fn finish(
        self,
        checkpoints: &[Checkpoint],
        trusted_key: &[u8],
    ) -> Result<VerifyReport, Violation> {
        for checkpoint in checkpoints {
            checkpoint
                .verify(trusted_key)
                .map_err(|e| Violation::BadCheckpoint {
                    seq: checkpoint.seq,
                    reason: e.to_string(),
                })?;
            if checkpoint.seq > self.head.seq {
                return Err(Violation::Truncated {
                    checkpoint_seq: checkpoint.seq,
                    last_seq: self.head.seq,
                });
            }
            let signed = checkpoint
                .head_hash()
                .map_err(|e| Violation::BadCheckpoint {
                    seq: checkpoint.seq,
                    reason: e.to_string(),
                })?;
            let seen = self.wanted.get(&checkpoint.seq).copied().flatten();
            if checkpoint.seq == 0 {
                continue;
            }
            if seen != Some(signed) {
                return Err(Violation::CheckpointMismatch {
                    seq: checkpoint.seq,
                });
            }
        }
        Ok(VerifyReport {
            records: self.head.seq,
            head: self.head,
            checkpoints: checkpoints.len(),
        })
    }
}

/// Verifies a whole sequence of stored lines.
///
/// # Errors
///
/// The first [`Violation`].
pub fn verify_lines<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    checkpoints: &[Checkpoint],
    trusted_key: &[u8],
) -> Result<VerifyReport, Violation> {
    let mut verifier = Verifier::with_checkpoints(checkpoints);
    for line in lines {
        verifier.feed(line)?;
    }
    verifier.finish(checkpoints, trusted_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column value comes from the database: shown quoted, escaped and cut, never raw.
    #[test]
    fn an_index_mismatch_shows_values_escaped_and_cut() {
        let violation = Violation::IndexMismatch {
            seq: 7,
            column: "actor".into(),
            stored: Some(format!("evil\u{1b}[2J{}", "x".repeat(500))),
            expected: None,
        };
        let text = violation.to_string();
        assert!(
            text.starts_with("record 7: its indexed column `actor` holds \"evil\\u{1b}[2J"),
            "{text}"
        );
        assert!(text.contains("xxx\"…, but the record says NULL"), "{text}");
        assert!(!text.contains('\u{1b}') && text.len() < 300, "{text}");
    }
}
