//! [`RecordIndex`]: the fields of a record a storage may index it by.

use serde_json::Value;

use crate::chain::Decoded;

/// The fields of a record that a storage may index it by (the SQL storages keep each in a
/// column beside the record's line). They are read from the *stored*, redacted event, so a
/// field configured for HMAC is indexed as its fingerprint (`hmac-sha256:…`), never in clear.
///
/// A value that is missing or not a string is `""` (`None` for the optional ones), a
/// `time_ms` that is not a non-negative integer 0. The event's id is not here: it is
/// [`PreparedEvent::id`](crate::PreparedEvent::id).
///
/// The line is the record (hashed and chained); an index derived from it is not, so a
/// storage whose queries use an index checks it against the line when it verifies: build the
/// index of a verified line with [`RecordIndex::of`] and compare.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordIndex {
    /// `event.time_ms`.
    pub time_ms: u64,
    /// `event.kind` (`intent`, `outcome`, `decision`, …).
    pub kind: String,
    /// `event.actor.subject`.
    pub actor: String,
    /// `event.action`.
    pub action: String,
    /// `event.resource.kind` `:` `event.resource.id`; a redacted resource's fingerprint.
    pub resource: String,
    /// `event.decision.effect` (`allow`, `deny`, `not_applicable`), if it has a decision.
    pub effect: Option<String>,
    /// `event.correlation_id`, if any.
    pub correlation_id: Option<String>,
    /// `event.outcome_of` (the intent's id), for an outcome.
    pub outcome_of: Option<String>,
}

impl RecordIndex {
    /// The index of a record read back (its [`Decoded::event`], as stored).
    #[must_use]
    pub fn of(decoded: &Decoded) -> Self {
        Self::of_value(&decoded.event)
    }

    /// The index of a stored event's JSON value.
    pub(crate) fn of_value(event: &Value) -> Self {
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        let at = |path: &str| text(crate::redact::lookup(event, path));
        RecordIndex {
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

    /// The index of an event stored as it is (no redactor): what [`of_value`](Self::of_value)
    /// reads from its value, taken from the struct.
    pub(crate) fn of_event(event: &crate::AuditEvent) -> Self {
        RecordIndex {
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

/// The JSON name of an effect, as [`RecordIndex::effect`] holds it.
pub(crate) fn effect_name(effect: portcullis_core::Effect) -> &'static str {
    match effect {
        portcullis_core::Effect::Allow => "allow",
        portcullis_core::Effect::Deny => "deny",
        portcullis_core::Effect::NotApplicable => "not_applicable",
    }
}
