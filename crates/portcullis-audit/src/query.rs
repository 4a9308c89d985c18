//! Finding events again: filters, cursor paging, an event with its outcome.

use portcullis_core::{Action, Effect, Resource, ResourceKind};
use serde::{Deserialize, Serialize};

use crate::{AuditError, AuditRecord, EventKind};

/// The largest page a query returns.
pub const MAX_QUERY_LIMIT: u32 = 1000;

/// The most child kinds a [`ResourceScope`] may name.
pub const MAX_SCOPE_CHILDREN: usize = 16;

/// What separates a parent's id from the rest of a child's id: `/`, as in
/// `env_stage:checkout/prod` under `env:checkout`.
pub const SCOPE_SEPARATOR: char = '/';

/// The character right after [`SCOPE_SEPARATOR`] (one byte, in byte order too).
#[cfg(any(test, feature = "sqlite", feature = "postgres"))]
const AFTER_SEPARATOR: char = '0';

/// A resource and everything under it, for [`AuditQuery::within`].
///
/// A record is within the scope when its resource is [`resource`](Self::resource) itself, or
/// is of one of the [`children`](Self::children) kinds and its id starts with the scope
/// resource's id followed by [`SCOPE_SEPARATOR`]. Which kinds lie under which is a policy
/// choice (`portcullis-core` leaves it to the authorizer), so the scope names them: an
/// environment and its stages are `ResourceScope::new(env).with_children(ResourceKind::ENV_STAGE)`.
///
/// ```
/// use portcullis_audit::ResourceScope;
/// use portcullis_core::{Resource, ResourceKind};
/// let env = ResourceScope::new("env:checkout".parse()?).with_children(ResourceKind::ENV_STAGE);
/// let inside = |r: &str| Ok::<_, portcullis_core::Error>(env.contains(&r.parse::<Resource>()?));
/// assert!(inside("env:checkout")?);
/// assert!(inside("env_stage:checkout/prod")?);
/// assert!(inside("env_stage:checkout/canary/eu")?, "any depth: a prefix of the id");
/// assert!(!inside("env_stage:checkout-2/prod")?, "a longer id is another resource");
/// assert!(!inside("env:checkout/prod")?, "env is not one of the child kinds");
/// assert!(!inside("env_stage:checkout")?);
/// # Ok::<(), portcullis_core::Error>(())
/// ```
///
/// The match is on the id's prefix, so it takes every depth: it holds what
/// `portcullis-acl`'s `Hierarchy::teletraan()` places under an environment, and also a stage
/// whose own id holds a `/`. `system:*` is matched like any resource (by its id `*`), not as
/// "everything": leave the filter off for that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceScope {
    /// The resource itself, matched exactly.
    pub resource: Resource,
    /// The kinds of the resources under it (at most [`MAX_SCOPE_CHILDREN`]); none matches
    /// `resource` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ResourceKind>,
}

impl ResourceScope {
    /// `resource` alone; add the kinds under it with [`with_children`](Self::with_children).
    #[must_use]
    pub fn new(resource: Resource) -> Self {
        ResourceScope {
            resource,
            children: Vec::new(),
        }
    }

    /// Adds `kind` to the kinds under the resource.
    #[must_use]
    pub fn with_children(mut self, kind: ResourceKind) -> Self {
        if !self.children.contains(&kind) {
            self.children.push(kind);
        }
        self
    }

    /// Whether `resource` is within this scope.
    #[must_use]
    pub fn contains(&self, resource: &Resource) -> bool {
        *resource == self.resource
            || (self.children.contains(resource.kind())
                && resource
                    .id()
                    .strip_prefix(self.resource.id())
                    .is_some_and(|rest| rest.starts_with(SCOPE_SEPARATOR)))
    }

    /// The resource strings (`kind:id`, as the SQL `resource` column holds them) within the
    /// scope: the resource's own, and for each child kind the half-open range of strings
    /// that start with `kind:id/`. The upper bound is the prefix with its last byte, `/`,
    /// raised by one (`0`): in byte order, a string lies in `[kind:id/, kind:id0)` exactly
    /// when it starts with `kind:id/`, so an index on the column serves the range.
    #[cfg(any(test, feature = "sqlite", feature = "postgres"))]
    pub(crate) fn sql_ranges(&self) -> (String, impl Iterator<Item = (String, String)> + '_) {
        let id = self.resource.id();
        let ranges = self.children.iter().map(move |kind| {
            (
                format!("{kind}:{id}{SCOPE_SEPARATOR}"),
                format!("{kind}:{id}{AFTER_SEPARATOR}"),
            )
        });
        (self.resource.to_string(), ranges)
    }
}

/// Which events to return; fields left `None` match everything. Results come in sequence
/// order, after `after_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only this actor (subject id).
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<Action>,
    /// Only this resource, exactly (its stages or other children are other resources: see
    /// [`within`](Self::within)).
    pub resource: Option<Resource>,
    /// Only this resource and the resources under it (an environment and its stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<ResourceScope>,
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
        if !(1..=MAX_QUERY_LIMIT).contains(&self.limit) {
            return Err(AuditError::Invalid(format!(
                "query limit {} is out of range 1..={MAX_QUERY_LIMIT}",
                self.limit
            )));
        }
        if let Some(scope) = &self.within
            && scope.children.len() > MAX_SCOPE_CHILDREN
        {
            return Err(AuditError::Invalid(format!(
                "a resource scope names {} child kinds, above the limit of {MAX_SCOPE_CHILDREN}",
                scope.children.len()
            )));
        }
        Ok(())
    }

    /// Whether `record` passes the filters (not the cursor).
    #[must_use]
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let e = &record.event;
        self.actor.as_ref().is_none_or(|a| a == &e.actor.subject)
            && self.action.as_ref().is_none_or(|a| a == &e.action)
            && self.resource.as_ref().is_none_or(|r| r == &e.resource)
            && self.within.as_ref().is_none_or(|s| s.contains(&e.resource))
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
    /// A page from the records a storage found for a query of `limit`, in sequence order:
    /// up to `limit + 1` of them, the one past the limit only telling that more may follow
    /// (the page then ends at `limit` and its cursor is the last record's `seq`).
    #[must_use]
    pub fn from_fetched(mut records: Vec<AuditRecord>, limit: u32) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_upper_bound_is_the_byte_after_the_separator() {
        assert_eq!(u32::from(AFTER_SEPARATOR), u32::from(SCOPE_SEPARATOR) + 1);
        assert!(SCOPE_SEPARATOR.is_ascii() && AFTER_SEPARATOR.is_ascii());
    }

    proptest! {
        /// What the SQL backends select (the resource string equal to the scope's, or in one
        /// of its byte-order ranges) is exactly what `contains` (the JSONL scan) accepts.
        #[test]
        fn the_sql_ranges_hold_exactly_the_resources_within(
            scope_id in "[a-c/+0~é]{1,4}",
            id in "[a-c/+0~é]{1,6}",
            kind in 0..3usize,
            children in proptest::collection::vec(0..3usize, 0..3),
        ) {
            let kinds = [ResourceKind::ENV, ResourceKind::ENV_STAGE, ResourceKind::BUILD];
            let kind_at = |i: usize| kinds.get(i).cloned().unwrap_or(ResourceKind::ENV);
            let mut scope = ResourceScope::new(Resource::new(ResourceKind::ENV, scope_id).unwrap());
            for child in children {
                scope = scope.with_children(kind_at(child));
            }
            let resource = Resource::new(kind_at(kind), id).unwrap();
            let text = resource.to_string();
            let (exact, mut ranges) = scope.sql_ranges();
            let selected = text == exact
                || ranges.any(|(from, to)| from.as_str() <= text.as_str() && text.as_str() < to.as_str());
            prop_assert_eq!(selected, scope.contains(&resource), "{} within {:?}", text, scope);
        }
    }
}
