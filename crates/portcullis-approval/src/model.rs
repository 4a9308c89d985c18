//! Approval requests, rules, votes and receipts.

use std::time::{Duration, SystemTime};

use portcullis_core::{Action, Principal, Resource, ResourceKind};
use serde::{Deserialize, Serialize};

/// Who may approve a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approvers {
    /// These people, chosen by the requester.
    Named(Vec<String>),
    /// Any member of this group.
    Group(String),
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for votes.
    Pending,
    /// Enough distinct approvals.
    Approved,
    /// Denied by an approver.
    Rejected,
    /// Not decided in time.
    Expired,
}

impl RequestState {
    /// `pending`, `approved`, `rejected` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Rejected => "rejected",
            RequestState::Expired => "expired",
        }
    }
}

/// A request for approval of one action on one resource with exact parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Its id (`apr_` + 32 hex digits).
    pub id: String,
    /// Who asks.
    pub requester: Principal,
    /// What they want to do.
    pub action: Action,
    /// Where.
    pub resource: Resource,
    /// SHA-256 (hex) of the action's parameters, so the approval covers exactly them.
    pub params_hash: String,
    /// Why.
    pub reason: String,
    /// Who may approve.
    pub approvers: Approvers,
    /// How many distinct approvals are needed.
    pub required: u32,
    /// Whether one deny rejects the request.
    pub deny_rejects: bool,
    /// The action an approver must be allowed on the resource (checked by the `Authorizer`).
    pub approver_action: Action,
    /// The group every approver must be in, when the rule names one — also when the
    /// requester names approvers: a named person outside the group cannot approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_group: Option<String>,
    /// When it was made.
    #[serde(with = "secs")]
    pub created_at: SystemTime,
    /// When it expires if undecided.
    #[serde(with = "secs")]
    pub expires_at: SystemTime,
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteDecision {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

/// One vote cast: who, what, when, which factor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The approver's subject.
    pub approver: String,
    /// Approve or deny.
    pub decision: VoteDecision,
    /// The second factor that confirmed it.
    pub factor: String,
    /// When.
    #[serde(with = "secs")]
    pub at: SystemTime,
}

/// A request with its votes and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// The request.
    pub request: ApprovalRequest,
    /// Votes in the order cast.
    pub votes: Vec<Vote>,
    /// Its state as stored (an undecided request past its expiry reads as expired).
    pub state: RequestState,
    /// Whether its receipt has been redeemed.
    pub receipt_used: bool,
}

/// When an action needs approval and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    /// The action that needs approval.
    pub action: Action,
    /// The kind of resource (all of that kind unless `resource_ids` narrows it).
    pub resource_kind: ResourceKind,
    /// Only these resource ids (e.g. the production stages); empty means every one. A `*`
    /// matches any run of characters, so `*/prod` covers the `prod` stage of every
    /// environment.
    pub resource_ids: Vec<String>,
    /// Distinct approvals needed (N of M).
    pub required: u32,
    /// Approvers must be in this group, if set.
    pub approver_group: Option<String>,
    /// Approvers must be allowed this action on the resource by the `Authorizer`.
    pub approver_action: Action,
    /// How long a request waits.
    pub timeout: Duration,
    /// Whether a single deny rejects.
    pub deny_rejects: bool,
}

impl ApprovalRule {
    /// One approval by someone allowed `approver_action` on the resource, within 30 minutes;
    /// a deny rejects.
    pub fn new(action: Action, resource_kind: ResourceKind, approver_action: Action) -> Self {
        ApprovalRule {
            action,
            resource_kind,
            resource_ids: Vec::new(),
            required: 1,
            approver_group: None,
            approver_action,
            timeout: Duration::from_secs(30 * 60),
            deny_rejects: true,
        }
    }

    /// Whether this rule covers `action` on `resource`.
    pub fn covers(&self, action: &Action, resource: &Resource) -> bool {
        self.action == *action
            && *resource.kind() == self.resource_kind
            && (self.resource_ids.is_empty()
                || self
                    .resource_ids
                    .iter()
                    .any(|pattern| glob_matches(pattern, resource.id())))
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*`: the whole text must equal the pattern.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = rest.get(at + piece.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs() {
        for (pattern, text, expected) in [
            ("checkout/prod", "checkout/prod", true),
            ("checkout/prod", "checkout/prod2", false),
            ("*/prod", "checkout/prod", true),
            ("*/prod", "checkout/production", false),
            ("*/prod*", "checkout/production", true),
            ("*", "anything", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} vs {text}");
        }
    }
}

/// Proof that a request was approved: bound to the request's id, action, resource and
/// parameter hash, valid until `expires_at`, usable once. Its MAC is keyed by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalReceipt {
    /// The approved request.
    pub request_id: String,
    /// The approved action.
    pub action: Action,
    /// On this resource.
    pub resource: Resource,
    /// With these parameters (SHA-256 hex).
    pub params_hash: String,
    /// Until.
    #[serde(with = "secs")]
    pub expires_at: SystemTime,
    /// HMAC-SHA256 (hex) over the fields above.
    pub mac: String,
}

pub(crate) mod secs {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(UNIX_EPOCH + Duration::from_secs(u64::deserialize(d)?))
    }
}

/// Seconds since the epoch.
pub(crate) fn unix(time: SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
