//! [`Approvals`]: making requests, casting votes through a second factor, issuing and
//! redeeming receipts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::hmac;
use portcullis_core::{
    Action, Authorizer, Clock, Field, Principal, PrincipalKind, Resource, SystemClock,
};
use serde_json::Value;

use crate::model::unix;
use crate::{
    ApprovalError, ApprovalReceipt, ApprovalRecord, ApprovalRequest, ApprovalRule, ApprovalStore,
    Approvers, Confirmation, FactorOutcome, Prompt, RequestState, SecondFactor, Vote, VoteDecision,
};

/// What a requester asks for.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    /// Who asks (authenticated by the embedding service).
    pub requester: &'a Principal,
    /// The action.
    pub action: Action,
    /// The resource.
    pub resource: Resource,
    /// The action's parameters (e.g. `{"build_id": "12345"}`); the approval covers exactly
    /// these.
    pub params: &'a Value,
    /// Why.
    pub reason: &'a str,
    /// Chosen approvers, or `None` for the rule's approver group.
    pub approvers: Option<Approvers>,
}

/// Four-eyes approvals over a store, rules, an [`Authorizer`] for approver eligibility and
/// named second factors.
///
/// The requester can never approve their own request: the check compares subjects before
/// anything else and has no switch.
pub struct Approvals {
    store: Arc<dyn ApprovalStore>,
    rules: Vec<ApprovalRule>,
    authorizer: Arc<dyn Authorizer>,
    factors: HashMap<String, Arc<dyn SecondFactor>>,
    receipt_key: hmac::Key,
    receipt_ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Votes are decided one at a time, so concurrent votes cannot both see "one short".
    voting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("store", &self.store)
            .field("rules", &self.rules)
            .field("authorizer", &self.authorizer.name())
            .field("factors", &self.factors.keys().collect::<Vec<_>>())
            .field("receipt_ttl", &self.receipt_ttl)
            .finish_non_exhaustive()
    }
}

const MAX_REASON: usize = 1000;
/// The longest a request may wait or a receipt may live.
const MAX_WAIT: Duration = Duration::from_secs(30 * 86_400);

/// The people a request acts for: its requester's subject, and for a script token or service
/// the person who owns it (its `owner` claim, as `portcullis-token` sets it). None of them
/// may approve it: whoever holds a token does not approve what the token asked for.
fn acting_for(requester: &Principal) -> Vec<&str> {
    let mut people = vec![requester.subject()];
    if requester.kind() != PrincipalKind::User
        && let Some(owner) = requester.claim("owner").and_then(Value::as_str)
    {
        people.push(owner);
    }
    people
}

/// SHA-256 (hex) of `params` with object keys sorted at every level.
pub fn params_hash(params: &Value) -> String {
    fn canonical(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let keys: BTreeSet<&String> = map.keys().collect();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    if let Some(v) = map.get(key) {
                        canonical(v, out);
                    }
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut text = String::new();
    canonical(params, &mut text);
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

impl Approvals {
    /// Approvals over `store`, with approver eligibility checked by `authorizer` and
    /// receipts MACed with `receipt_key` (at least 32 bytes; shared by every instance that
    /// redeems receipts).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Config`] for a short key.
    pub fn new(
        store: Arc<dyn ApprovalStore>,
        authorizer: Arc<dyn Authorizer>,
        receipt_key: &[u8],
    ) -> Result<Self, ApprovalError> {
        if receipt_key.len() < 32 {
            return Err(ApprovalError::Config(
                "the receipt key needs at least 32 bytes".into(),
            ));
        }
        Ok(Approvals {
            store,
            rules: Vec::new(),
            authorizer,
            factors: HashMap::new(),
            receipt_key: hmac::Key::new(hmac::HMAC_SHA256, receipt_key),
            receipt_ttl: Duration::from_secs(600),
            clock: Arc::new(SystemClock),
            voting: tokio::sync::Mutex::new(()),
        })
    }

    /// Adds a rule.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Config`] if it needs no approvals, or its timeout is zero.
    pub fn rule(mut self, rule: ApprovalRule) -> Result<Self, ApprovalError> {
        if rule.required == 0 || rule.timeout.is_zero() || rule.timeout > MAX_WAIT {
            return Err(ApprovalError::Config(
                "an approval rule needs at least one approval and a timeout of at most 30 days"
                    .into(),
            ));
        }
        self.rules.push(rule);
        Ok(self)
    }

    /// Adds a second factor under its name.
    #[must_use]
    pub fn factor(mut self, factor: Arc<dyn SecondFactor>) -> Self {
        self.factors.insert(factor.name().to_owned(), factor);
        self
    }

    /// Uses `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a receipt stays valid (default 10 minutes).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Config`] for zero or more than 30 days.
    pub fn with_receipt_ttl(mut self, ttl: Duration) -> Result<Self, ApprovalError> {
        if ttl.is_zero() || ttl > MAX_WAIT {
            return Err(ApprovalError::Config(
                "a receipt lifetime is between 1 s and 30 days".into(),
            ));
        }
        self.receipt_ttl = ttl;
        Ok(self)
    }

    /// The rule covering `action` on `resource`, if the action needs approval.
    pub fn rule_for(&self, action: &Action, resource: &Resource) -> Option<&ApprovalRule> {
        self.rules.iter().find(|r| r.covers(action, resource))
    }

    /// Creates a pending request.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::InvalidRequest`] when no rule covers the action, the reason is empty
    /// or too long, or fewer approvers are named than the rule needs;
    /// [`ApprovalError::SelfApproval`] when the requester names themself;
    /// [`ApprovalError::Store`].
    pub async fn request(&self, new: NewRequest<'_>) -> Result<ApprovalRequest, ApprovalError> {
        let invalid = |m: String| Err(ApprovalError::InvalidRequest(m));
        let Some(rule) = self.rule_for(&new.action, &new.resource) else {
            return invalid(format!(
                "no approval rule covers {} on {}",
                new.action, new.resource
            ));
        };
        let reason = new.reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return invalid(format!(
                "a reason of 1 to {MAX_REASON} characters without control characters is required"
            ));
        }
        let approvers = match (new.approvers, &rule.approver_group) {
            (None, Some(group)) => Approvers::Group(group.clone()),
            (None, None) => return invalid("name the approvers".into()),
            (Some(Approvers::Group(g)), Some(required)) if g != *required => {
                return invalid(format!("approvers must come from group `{required}`"));
            }
            (Some(Approvers::Group(g)), _) => {
                portcullis_core::validate_name(Field::Group, &g)?;
                Approvers::Group(g)
            }
            (Some(Approvers::Named(names)), _) => {
                let mut unique = BTreeSet::new();
                let requesters = acting_for(new.requester);
                for name in names {
                    portcullis_core::validate_name(Field::Subject, &name)?;
                    if requesters.contains(&name.as_str()) {
                        return Err(ApprovalError::SelfApproval);
                    }
                    unique.insert(name);
                }
                if unique.len() < rule.required as usize {
                    return invalid(format!(
                        "{} distinct approvers are needed; {} named",
                        rule.required,
                        unique.len()
                    ));
                }
                Approvers::Named(unique.into_iter().collect())
            }
        };
        let now = self.clock.now();
        let mut id = [0u8; 16];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut id)
            .map_err(|_| ApprovalError::Crypto("the system random source failed".into()))?;
        let request = ApprovalRequest {
            id: format!("apr_{}", hex::encode(id)),
            requester: new.requester.clone(),
            action: new.action,
            resource: new.resource,
            params_hash: params_hash(new.params),
            reason: reason.to_owned(),
            approvers,
            required: rule.required,
            deny_rejects: rule.deny_rejects,
            approver_action: rule.approver_action.clone(),
            approver_group: rule.approver_group.clone(),
            created_at: now,
            expires_at: now + rule.timeout,
        };
        self.store
            .create(&ApprovalRecord {
                request: request.clone(),
                votes: Vec::new(),
                state: RequestState::Pending,
                receipt_used: false,
            })
            .await?;
        tracing::info!(id = %request.id, requester = %request.requester, action = %request.action, resource = %request.resource, "approval requested");
        Ok(request)
    }

    /// A request with its votes; an undecided request past its expiry is marked expired.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::UnknownRequest`], [`ApprovalError::Store`].
    pub async fn status(&self, id: &str) -> Result<ApprovalRecord, ApprovalError> {
        let mut record = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| ApprovalError::UnknownRequest(id.to_owned()))?;
        if record.state == RequestState::Pending {
            // Votes cast concurrently by another instance each saw one vote fewer; the votes
            // themselves are the truth, so a pending request is re-decided from them.
            let decided = decide(&record.request, &record.votes);
            let state = if decided == RequestState::Pending
                && self.clock.now() >= record.request.expires_at
            {
                RequestState::Expired
            } else {
                decided
            };
            if state != RequestState::Pending {
                self.store.set_state(id, state).await?;
                record.state = state;
            }
        }
        Ok(record)
    }

    /// Casts `approver`'s vote, confirmed by the second factor named `factor` (`code` for
    /// code-based factors). Returns the request after the vote.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::SelfApproval`], [`ApprovalError::NotEligible`],
    /// [`ApprovalError::AlreadyVoted`], [`ApprovalError::NotPending`],
    /// [`ApprovalError::UnknownFactor`], or [`ApprovalError::FactorFailed`] when the factor
    /// timed out or failed — in which case nothing was recorded.
    pub async fn vote(
        &self,
        id: &str,
        approver: &Principal,
        decision: VoteDecision,
        factor: &str,
        code: Option<&str>,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let _one_at_a_time = self.voting.lock().await;
        let record = self.status(id).await?;
        let request = &record.request;
        if record.state != RequestState::Pending {
            return Err(ApprovalError::NotPending(record.state.as_str()));
        }
        // First and unconditional: nobody approves their own request, nor one their own
        // token made.
        if acting_for(&request.requester).contains(&approver.subject()) {
            return Err(ApprovalError::SelfApproval);
        }
        if approver.kind() != PrincipalKind::User {
            return Err(ApprovalError::NotEligible(
                "only people approve; tokens and services cannot".into(),
            ));
        }
        let listed = match &request.approvers {
            Approvers::Named(names) => names.iter().any(|n| n == approver.subject()),
            Approvers::Group(group) => approver.in_group(group),
        };
        if !listed {
            return Err(ApprovalError::NotEligible(format!(
                "{} is not among the request's approvers",
                approver.subject()
            )));
        }
        if let Some(group) = &request.approver_group
            && !approver.in_group(group)
        {
            return Err(ApprovalError::NotEligible(format!(
                "approvers must be in group `{group}`; {} is not",
                approver.subject()
            )));
        }
        let allowed = self
            .authorizer
            .check(approver, &request.approver_action, &request.resource);
        if !allowed.is_allowed() {
            return Err(ApprovalError::NotEligible(allowed.reason().to_owned()));
        }
        if record
            .votes
            .iter()
            .any(|v| v.approver == approver.subject())
        {
            return Err(ApprovalError::AlreadyVoted(approver.subject().to_owned()));
        }
        let second = self
            .factors
            .get(factor)
            .ok_or_else(|| ApprovalError::UnknownFactor(factor.to_owned()))?;
        let prompt = Prompt {
            request_id: request.id.clone(),
            requester: request.requester.subject().to_owned(),
            action: request.action.to_string(),
            resource: request.resource.to_string(),
            reason: request.reason.clone(),
        };
        let outcome = second
            .confirm(Confirmation {
                approver,
                prompt: &prompt,
                code,
            })
            .await;
        let decision = match (decision, &outcome) {
            (VoteDecision::Approve, FactorOutcome::Allow) => VoteDecision::Approve,
            (_, FactorOutcome::Allow | FactorOutcome::Deny) => VoteDecision::Deny,
            (_, FactorOutcome::Unavailable(why)) => {
                return Err(ApprovalError::Store(format!(
                    "second factor `{factor}`: {why}"
                )));
            }
            (_, FactorOutcome::Timeout | FactorOutcome::Error(_)) => {
                return Err(ApprovalError::FactorFailed {
                    factor: factor.to_owned(),
                    outcome: outcome.to_string(),
                });
            }
        };
        let vote = Vote {
            approver: approver.subject().to_owned(),
            decision,
            factor: factor.to_owned(),
            at: self.clock.now(),
        };
        let mut votes = record.votes.clone();
        votes.push(vote.clone());
        let state = decide(request, &votes);
        self.store.add_vote(id, &vote, state).await?;
        tracing::info!(id, approver = %vote.approver, decision = ?vote.decision, factor, state = state.as_str(), "approval vote");
        self.status(id).await
    }

    fn mac(&self, r: &ApprovalReceipt) -> String {
        let text = format!(
            "portcullis-approval-receipt-v1\n{}\n{}\n{}\n{}\n{}",
            r.request_id,
            r.action,
            r.resource,
            r.params_hash,
            unix(r.expires_at)
        );
        hex::encode(hmac::sign(&self.receipt_key, text.as_bytes()))
    }

    /// The receipt of an approved request, for the action to present.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::NotPending`] style errors when the request is not approved (pending,
    /// rejected, expired) or its receipt was used.
    pub async fn receipt(&self, id: &str) -> Result<ApprovalReceipt, ApprovalError> {
        let record = self.status(id).await?;
        if record.state != RequestState::Approved {
            return Err(ApprovalError::InvalidReceipt(format!(
                "the request is {}",
                record.state.as_str()
            )));
        }
        if record.receipt_used {
            return Err(ApprovalError::ReceiptUsed);
        }
        let now = self.clock.now();
        let expires = std::time::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(unix(now + self.receipt_ttl)).unwrap_or(0));
        let mut receipt = ApprovalReceipt {
            request_id: record.request.id.clone(),
            action: record.request.action.clone(),
            resource: record.request.resource.clone(),
            params_hash: record.request.params_hash.clone(),
            expires_at: expires,
            mac: String::new(),
        };
        receipt.mac = self.mac(&receipt);
        Ok(receipt)
    }

    /// Checks that `receipt` approves exactly this action, resource and parameters, and uses
    /// it up. Call it right before acting; a second call with the same receipt fails.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::InvalidReceipt`] for a forged, expired or mismatched receipt;
    /// [`ApprovalError::ReceiptUsed`] if it was redeemed before.
    pub async fn redeem(
        &self,
        receipt: &ApprovalReceipt,
        action: &Action,
        resource: &Resource,
        params: &Value,
    ) -> Result<(), ApprovalError> {
        let expected = self.mac(receipt);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            receipt.mac.as_bytes(),
        )) {
            return Err(ApprovalError::InvalidReceipt(
                "its MAC does not verify".into(),
            ));
        }
        if receipt.action != *action
            || receipt.resource != *resource
            || receipt.params_hash != params_hash(params)
        {
            return Err(ApprovalError::InvalidReceipt(
                "it approves a different action, resource or parameters".into(),
            ));
        }
        if self.clock.now() >= receipt.expires_at {
            return Err(ApprovalError::InvalidReceipt("it has expired".into()));
        }
        if !self.store.consume_receipt(&receipt.request_id).await? {
            return Err(ApprovalError::ReceiptUsed);
        }
        Ok(())
    }

    /// Pending requests, oldest first (expired ones are marked as such first).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    pub async fn pending(&self) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        let mut out = Vec::new();
        for record in self.store.list(RequestState::Pending).await? {
            let record = self.status(&record.request.id).await?;
            if record.state == RequestState::Pending {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// The current time, for callers that display expiry.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }
}

/// The state `votes` lead to. Only distinct approvers other than the requester count.
pub(crate) fn decide(request: &ApprovalRequest, votes: &[Vote]) -> RequestState {
    let requesters = acting_for(&request.requester);
    let counted = |d: VoteDecision| {
        votes
            .iter()
            .filter(|v| v.decision == d && !requesters.contains(&v.approver.as_str()))
            .map(|v| v.approver.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    };
    if request.deny_rejects && counted(VoteDecision::Deny) > 0 {
        RequestState::Rejected
    } else if counted(VoteDecision::Approve) >= request.required as usize {
        RequestState::Approved
    } else {
        RequestState::Pending
    }
}
