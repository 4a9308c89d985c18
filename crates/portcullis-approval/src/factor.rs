//! Second factors: ask a named approver to confirm a described action.

use std::fmt;

use async_trait::async_trait;
use portcullis_core::{Principal, PrincipalKind};

/// What the approver is asked to confirm; shown in a Duo push, an app screen or a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The approval request's id.
    pub request_id: String,
    /// Who asked.
    pub requester: String,
    /// The action, e.g. `deploy`.
    pub action: String,
    /// The resource, e.g. `env_stage:checkout/prod`.
    pub resource: String,
    /// The requester's reason.
    pub reason: String,
}

/// The outcome of asking a second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FactorOutcome {
    /// The approver confirmed.
    Allow,
    /// The approver refused.
    Deny,
    /// No answer in time.
    Timeout,
    /// The factor failed (network, provider error, malformed answer).
    Error(String),
    /// The factor's store could not answer (a database down): nothing was checked, and the
    /// vote is refused as [`ApprovalError::Store`](crate::ApprovalError::Store), so a
    /// service can answer "unavailable" rather than "refused".
    Unavailable(String),
}

impl fmt::Display for FactorOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FactorOutcome::Allow => f.write_str("allowed"),
            FactorOutcome::Deny => f.write_str("denied"),
            FactorOutcome::Timeout => f.write_str("timed out"),
            FactorOutcome::Error(e) => write!(f, "error: {e}"),
            FactorOutcome::Unavailable(e) => write!(f, "unavailable: {e}"),
        }
    }
}

/// One confirmation: who is asked, about what, and any code they typed (TOTP).
#[derive(Debug, Clone, Copy)]
pub struct Confirmation<'a> {
    /// The approver, as the embedding service authenticated them.
    pub approver: &'a Principal,
    /// What they confirm.
    pub prompt: &'a Prompt,
    /// A one-time code they entered, for code-based factors.
    pub code: Option<&'a str>,
}

/// A second factor. Async, object safe. Anything but [`FactorOutcome::Allow`] is not an
/// approval.
#[async_trait]
pub trait SecondFactor: Send + Sync + fmt::Debug {
    /// The name votes record (`duo`, `totp`, `in_app`).
    fn name(&self) -> &str;

    /// Asks the approver to confirm.
    async fn confirm(&self, confirmation: Confirmation<'_>) -> FactorOutcome;
}

/// The approver confirms through the embedding service's own API (e.g.
/// `POST /v1/approvals/{id}/approve` with their own credentials): the authenticated call is
/// the confirmation. Only people count — script tokens and services never approve — and only
/// principals whose authentication method is in the allowed list.
#[derive(Debug, Clone)]
pub struct InAppFactor {
    allowed_methods: Vec<portcullis_core::AuthMethod>,
}

impl InAppFactor {
    /// Accepts user principals authenticated by one of `methods` (e.g. OIDC and session
    /// JWTs, not long-lived personal tokens).
    pub fn new(methods: impl IntoIterator<Item = portcullis_core::AuthMethod>) -> Self {
        InAppFactor {
            allowed_methods: methods.into_iter().collect(),
        }
    }
}

#[async_trait]
impl SecondFactor for InAppFactor {
    fn name(&self) -> &str {
        "in_app"
    }

    async fn confirm(&self, confirmation: Confirmation<'_>) -> FactorOutcome {
        // A credential that cannot confirm is a failed confirmation, not the approver's
        // refusal: nothing is recorded, and the approver can vote again properly signed in.
        let approver = confirmation.approver;
        if approver.kind() != PrincipalKind::User {
            return FactorOutcome::Error("only people confirm in the app".into());
        }
        if !self.allowed_methods.contains(approver.auth_method()) {
            return FactorOutcome::Error(format!(
                "a {} credential cannot confirm an approval; sign in with one of: {}",
                approver.auth_method(),
                self.allowed_methods
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        FactorOutcome::Allow
    }
}
