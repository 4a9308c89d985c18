//! Finding events again: filters, cursor paging, an event with its outcome.

use portcullis_core::{Action, Effect, Resource};
use serde::{Deserialize, Serialize};

use crate::{AuditError, AuditRecord, EventKind};

/// The largest page a query returns.
pub const MAX_QUERY_LIMIT: u32 = 1000;

/// Which events to return; fields left `None` match everything. Results come in sequence
/// order, after `after_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only this actor (subject id).
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<Action>,
    /// Only this resource.
    pub resource: Option<Resource>,
    /// Only decisions with this effect.
    pub effect: Option<Effect>,
    /// Only events of this kind.
    pub kind: Option<EventKind>,
    /// Only events at or after this time (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Only events before this time.
    pub to_ms: Option<u64>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Start after this sequence number (the cursor).
    pub after_seq: Option<u64>,
    /// At most this many, 1..=[`MAX_QUERY_LIMIT`].
    pub limit: u32,
}

impl AuditQuery {
    /// A query for everything, `limit` at a time.
    #[must_use]
    pub fn all(limit: u32) -> Self {
        AuditQuery {
            limit,
            ..AuditQuery::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), AuditError> {
        if (1..=MAX_QUERY_LIMIT).contains(&self.limit) {
            Ok(())
        } else {
            Err(AuditError::Invalid(format!(
                "query limit {} is out of range 1..={MAX_QUERY_LIMIT}",
                self.limit
            )))
        }
    }

    /// Whether `record` passes the filters (not the cursor).
    #[must_use]
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let e = &record.event;
        self.actor.as_ref().is_none_or(|a| a == &e.actor.subject)
            && self.action.as_ref().is_none_or(|a| a == &e.action)
            && self.resource.as_ref().is_none_or(|r| r == &e.resource)
            && self
                .effect
                .is_none_or(|x| e.decision.as_ref().is_some_and(|d| d.effect() == x))
            && self.kind.is_none_or(|k| k == e.kind)
            && self.from_ms.is_none_or(|t| e.time_ms >= t)
            && self.to_ms.is_none_or(|t| e.time_ms < t)
            && self
                .correlation_id
                .as_ref()
                .is_none_or(|c| e.correlation_id.as_ref() == Some(c))
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    /// The records, in sequence order.
    pub records: Vec<AuditRecord>,
    /// The cursor for the next page (`after_seq`), if there may be more.
    pub next_after: Option<u64>,
}

impl AuditPage {
    pub(crate) fn from_fetched(mut records: Vec<AuditRecord>, limit: u32) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = records.len() > limit;
        records.truncate(limit);
        let next_after = if more {
            records.last().map(|r| r.seq)
        } else {
            None
        };
        AuditPage {
            records,
            next_after,
        }
    }
}

/// An event and, if it was an intent that finished, its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct WithOutcome {
    /// The event.
    pub event: AuditRecord,
    /// Its outcome, if recorded.
    pub outcome: Option<AuditRecord>,
}
