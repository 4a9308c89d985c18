//! The indexed columns stored beside each chained line, and the check that they still say
//! what the line says. The line is the record (hashed and chained); the columns are only an
//! index derived from it, so a column changed in the database would make queries miss or
//! misattribute a record while the chain still verifies. Verification compares them.

use serde_json::Value;

use crate::RecordIndex;
use crate::chain::Decoded;
use crate::verify::Violation;

/// The indexed columns, in table order, as a row is checked against its line.
const NAMES: [&str; 11] = [
    "seq",
    "id",
    "time_ms",
    "kind",
    "actor",
    "action",
    "resource",
    "effect",
    "correlation_id",
    "outcome_of",
    "hash",
];

/// What verification selects of each row: the line, then every indexed column read as text.
/// As text, a value of another type written into the database (SQLite keeps whatever it is
/// given) is reported as a mismatch rather than failing to decode. Each is renamed: PostgreSQL
/// names `CAST(seq AS TEXT)` `seq`, and `ORDER BY seq` would then sort by that text.
pub(super) const SELECT_ROW: &str = "line, \
     CAST(seq AS TEXT) AS seq_text, CAST(id AS TEXT) AS id_text, \
     CAST(time_ms AS TEXT) AS time_ms_text, CAST(kind AS TEXT) AS kind_text, \
     CAST(actor AS TEXT) AS actor_text, CAST(action AS TEXT) AS action_text, \
     CAST(resource AS TEXT) AS resource_text, CAST(effect AS TEXT) AS effect_text, \
     CAST(correlation_id AS TEXT) AS correlation_id_text, \
     CAST(outcome_of AS TEXT) AS outcome_of_text, CAST(hash AS TEXT) AS hash_text";

/// A row as [`SELECT_ROW`] reads it (`None` for `NULL`).
pub(super) type StoredRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A number as a `BIGINT` column holds it, as text.
fn bigint_text(n: u64) -> String {
    i64::try_from(n).unwrap_or(i64::MAX).to_string()
}

/// Checks that every indexed column of `row` holds what `decoded`, the record read from the
/// row's line (already verified), says it must: what the writer derived from the same line.
///
/// # Errors
///
/// [`Violation::IndexMismatch`] for the first column that differs.
pub(super) fn check_row(decoded: &Decoded, row: StoredRow) -> Result<(), Violation> {
    // Destructured whole: a new field does not compile until it is checked here too.
    let RecordIndex {
        time_ms,
        kind,
        actor,
        action,
        resource,
        effect,
        correlation_id,
        outcome_of,
    } = RecordIndex::of(decoded);
    let expected = [
        Some(bigint_text(decoded.seq)),
        // The id column is the event's id as the caller gave it; the line holds the same
        // (a redactor may not touch `id`).
        decoded
            .event
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Some(bigint_text(time_ms)),
        Some(kind),
        Some(actor),
        Some(action),
        Some(resource),
        effect,
        correlation_id,
        outcome_of,
        Some(hex::encode(decoded.stored_hash)),
    ];
    let (_line, seq, id, time_ms, kind, actor, action, resource, effect, correlation, of, hash) =
        row;
    let stored = [
        seq,
        id,
        time_ms,
        kind,
        actor,
        action,
        resource,
        effect,
        correlation,
        of,
        hash,
    ];
    for ((column, stored), expected) in NAMES.into_iter().zip(stored).zip(expected) {
        if stored != expected {
            return Err(Violation::IndexMismatch {
                seq: decoded.seq,
                column: column.to_owned(),
                stored,
                expected,
            });
        }
    }
    Ok(())
}
