//! The indexed columns stored beside each chained line, and the check that they still say
//! what the line says. The line is the record (hashed and chained); the columns are only an
//! index derived from it, so a column changed in the database would make queries miss or
//! misattribute a record while the chain still verifies. Verification compares them.

use serde_json::Value;

use crate::chain::Decoded;
use crate::verify::Violation;

/// The indexed columns of a record. They come from the *redacted* event that is stored, so
/// a field configured for HMAC is indexed as its fingerprint, never in clear. Computed when
/// the event is prepared, by the caller's task, not by the one writer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Columns {
    pub(super) time_ms: u64,
    pub(super) kind: String,
    pub(super) actor: String,
    pub(super) action: String,
    pub(super) resource: String,
    pub(super) effect: Option<String>,
    pub(super) correlation_id: Option<String>,
    pub(super) outcome_of: Option<String>,
}

impl Columns {
    /// The columns of a redacted event, read from its JSON value.
    pub(crate) fn of(event: &Value) -> Self {
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        let at = |path: &str| text(crate::redact::lookup(event, path));
        Columns {
            time_ms: event.get("time_ms").and_then(Value::as_u64).unwrap_or(0),
            kind: at("kind").unwrap_or_default(),
            actor: at("actor.subject").unwrap_or_default(),
            action: at("action").unwrap_or_default(),
            resource: match (at("resource.kind"), at("resource.id")) {
                (Some(kind), Some(id)) => format!("{kind}:{id}"),
                // A redacted resource is stored as its fingerprint string.
                _ => at("resource").unwrap_or_default(),
            },
            effect: at("decision.effect"),
            correlation_id: at("correlation_id"),
            outcome_of: at("outcome_of"),
        }
    }

    /// The columns of an event stored as it is (no redactor): what [`Columns::of`] reads
    /// from its value, taken from the struct.
    pub(crate) fn of_event(event: &crate::AuditEvent) -> Self {
        Columns {
            time_ms: event.time_ms,
            kind: event.kind.as_str().to_owned(),
            actor: event.actor.subject.clone(),
            action: event.action.as_str().to_owned(),
            resource: format!("{}:{}", event.resource.kind().as_str(), event.resource.id()),
            effect: event
                .decision
                .as_ref()
                .map(|d| effect_name(d.effect()).to_owned()),
            correlation_id: event.correlation_id.clone(),
            outcome_of: event.outcome_of.clone(),
        }
    }
}

/// The JSON name of an effect, as the `effect` column holds it.
pub(super) fn effect_name(effect: portcullis_core::Effect) -> &'static str {
    match effect {
        portcullis_core::Effect::Allow => "allow",
        portcullis_core::Effect::Deny => "deny",
        portcullis_core::Effect::NotApplicable => "not_applicable",
    }
}

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
    let Columns {
        time_ms,
        kind,
        actor,
        action,
        resource,
        effect,
        correlation_id,
        outcome_of,
    } = Columns::of(&decoded.event);
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
