//! The composition of the crates for one request: authenticate → authorize → approval (if a
//! rule covers the action) → record the intent (fail closed) → act → record the outcome.
//!
//! The intent is durable before the action runs; the outcome is handed to the audit log and
//! written with its next batch, without the answer waiting for it ([`Admitted::finish`]).
//!
//! A [`Gate`] built with nothing is closed: no authentication method (every request is
//! 401), no authorizer (every action is refused), no audit log (every action is 503). Each
//! part has to be configured to open it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portcullis_approval::{
    ApprovalError, ApprovalRecord, ApprovalRequest, ApprovalRule, Approvals, Approvers, NewRequest,
    RequestState, VoteDecision,
};
use portcullis_audit::{
    AuditError, AuditEvent, AuditSink, Intent, Outcome, Receipt, RequestSummary, WriteAhead,
};
use portcullis_core::{
    AccessRequest, Action, Authorizer, Context, Decision, DenyAll, Principal, Resource,
};
use portcullis_token::{AuthChain, AuthError, Authenticator, Credential};
use serde_json::Value;

/// The action recorded for an approving vote.
pub const APPROVE: Action = Action::from_static("approve");
/// The action recorded for a denying vote.
pub const DENY: Action = Action::from_static("deny");

const DEFAULT_AUDIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `WWW-Authenticate` challenge sent with a 401: both accepted schemes.
pub const CHALLENGE: &str = "Bearer realm=\"portcullis\", Token realm=\"portcullis\"";

/// Why the gate refused, with the HTTP status an API should answer with
/// ([`GateError::status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// The credential is missing, malformed, unknown, expired or revoked (401).
    #[error("authentication failed: {0}")]
    Unauthenticated(AuthError),
    /// The identity provider or token store could not be asked (503).
    #[error("authentication is unavailable: {0}")]
    AuthUnavailable(AuthError),
    /// The authorizer did not allow the action (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The action needs an approval and none was presented (428).
    #[error("approval required: {0}")]
    ApprovalRequired(String),
    /// The presented approval is still waiting for votes (202).
    #[error("approval `{0}` is pending")]
    ApprovalPending(String),
    /// The approval was rejected, expired, already used, or belongs to another request (403).
    #[error("approval refused: {0}")]
    ApprovalRefused(String),
    /// The approval request or vote is invalid (400), or names an unknown request (404).
    #[error(transparent)]
    Approval(ApprovalError),
    /// The audit log could not record the intent, so nothing was done (503).
    #[error("audit log unavailable, nothing was done: {0}")]
    AuditUnavailable(String),
    /// The request itself is unusable: its parameters cannot be recorded as sent (a control
    /// character, or larger than the audit log's cap), so nothing was done (400). The
    /// refusal is recorded without the offending parameters.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl GateError {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            GateError::Unauthenticated(_) => 401,
            GateError::BadRequest(_) => 400,
            GateError::Forbidden(_) | GateError::ApprovalRefused(_) => 403,
            GateError::ApprovalRequired(_) => 428,
            GateError::ApprovalPending(_) => 202,
            GateError::AuthUnavailable(_) | GateError::AuditUnavailable(_) => 503,
            GateError::Approval(err) => match err {
                ApprovalError::UnknownRequest(_) => 404,
                ApprovalError::SelfApproval | ApprovalError::NotEligible(_) => 403,
                ApprovalError::AlreadyVoted(_) | ApprovalError::NotPending(_) => 409,
                ApprovalError::FactorFailed { .. } => 403,
                ApprovalError::Store(_) | ApprovalError::Crypto(_) => 503,
                ApprovalError::Config(_) => 500,
                _ => 400,
            },
        }
    }

    /// A short machine-readable code (`unauthenticated`, `forbidden`, `approval_pending`…).
    pub fn code(&self) -> &'static str {
        match self {
            GateError::Unauthenticated(_) => "unauthenticated",
            GateError::AuthUnavailable(_) => "authentication_unavailable",
            GateError::Forbidden(_) => "forbidden",
            GateError::ApprovalRequired(_) => "approval_required",
            GateError::ApprovalPending(_) => "approval_pending",
            GateError::ApprovalRefused(_) => "approval_refused",
            GateError::Approval(_) => "approval_error",
            GateError::AuditUnavailable(_) => "audit_unavailable",
            GateError::BadRequest(_) => "bad_request",
        }
    }

    fn from_auth(err: AuthError) -> Self {
        match err {
            AuthError::Provider(_) | AuthError::Store(_) => GateError::AuthUnavailable(err),
            other => GateError::Unauthenticated(other),
        }
    }

    fn from_audit(err: &AuditError) -> Self {
        if rejects_input(err) {
            GateError::BadRequest(err.to_string())
        } else {
            GateError::AuditUnavailable(err.to_string())
        }
    }
}

/// Whether the audit log refused the event for what the request carried (not because the
/// log is down): the caller's input is at fault, and a version of the event without the
/// request's parameters can still be recorded.
fn rejects_input(err: &AuditError) -> bool {
    matches!(
        err,
        AuditError::ControlCharacter { .. } | AuditError::TooLarge { .. }
    )
}

/// One request to the gate: what is to be done to what, with which parameters.
///
/// The parameters are recorded in the audit intent and, for actions that need approval,
/// hashed into the approval, so an approval for `build_id=1` does not let `build_id=2` ship.
/// The [`Context`] is what the authorizer may consult besides who, what and where (a ticket
/// number, the client address, the time); it is recorded in the intent too (field
/// `context`), since the decision rests on it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GateRequest {
    /// The action.
    pub action: Action,
    /// The resource it acts on.
    pub resource: Resource,
    /// The parameters that define the action (bound into approvals, recorded in the audit).
    pub params: BTreeMap<String, Value>,
    /// The HTTP method and target, for the audit record.
    pub method: String,
    /// The HTTP target (path), for the audit record.
    pub target: String,
    /// A correlation id linking the audit records of this request.
    pub correlation_id: Option<String>,
    /// The approval presented for an action that needs one.
    pub approval_id: Option<String>,
    /// Attributes the authorizer may consult ([`AccessRequest::context`]).
    pub context: Context,
}

impl GateRequest {
    /// `action` on `resource` with no parameters.
    pub fn new(action: Action, resource: Resource) -> Self {
        GateRequest {
            action,
            resource,
            params: BTreeMap::new(),
            method: String::new(),
            target: String::new(),
            correlation_id: None,
            approval_id: None,
            context: Context::new(),
        }
    }

    /// Adds an attribute to the context the authorizer sees.
    #[must_use]
    pub fn context(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.context.insert(key, value.into());
        self
    }

    /// Adds a parameter.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }

    /// Sets the HTTP method and target recorded in the audit log.
    #[must_use]
    pub fn http(mut self, method: impl Into<String>, target: impl Into<String>) -> Self {
        self.method = method.into();
        self.target = target.into();
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Presents an approval.
    #[must_use]
    pub fn approval(mut self, id: impl Into<String>) -> Self {
        self.approval_id = Some(id.into());
        self
    }

    fn params_value(&self) -> Value {
        Value::Object(self.params.clone().into_iter().collect())
    }

    fn event(&self, principal: &Principal, decision: Decision) -> Result<AuditEvent, GateError> {
        let mut event = AuditEvent::intent(
            principal,
            self.action.clone(),
            self.resource.clone(),
            decision,
        )
        .map_err(|e| GateError::from_audit(&e))?
        .with_request(RequestSummary {
            method: self.method.clone(),
            target: self.target.clone(),
            parameters: self.params.clone(),
        });
        if let Some(id) = &self.correlation_id {
            event = event.with_correlation_id(id.clone());
        }
        if let Some(id) = &self.approval_id {
            event = event.with_field("approval_id", Value::String(id.clone()));
        }
        if !self.context.is_empty() {
            let context = self
                .context
                .iter()
                .map(|(k, v)| (k.to_owned(), v.clone()))
                .collect::<serde_json::Map<_, _>>();
            event = event.with_field("context", Value::Object(context));
        }
        Ok(event)
    }

    /// The event of `self` without its parameters or approval id, for when the audit log
    /// refused the full event for what the request carried (`why`): the record keeps who,
    /// what, where and the decision, names the parameters that were dropped, and says why.
    fn redacted_event(
        &self,
        principal: &Principal,
        decision: Decision,
        why: &AuditError,
    ) -> Result<AuditEvent, GateError> {
        let dropped: Vec<Value> = self
            .params
            .keys()
            .map(|k| Value::String(printable(k, 64)))
            .collect();
        let mut event = AuditEvent::intent(
            principal,
            self.action.clone(),
            self.resource.clone(),
            decision,
        )
        .map_err(|e| GateError::AuditUnavailable(e.to_string()))?
        .with_request(RequestSummary {
            method: self.method.clone(),
            target: printable(&self.target, 1024),
            parameters: BTreeMap::new(),
        })
        .with_field(
            "redacted",
            serde_json::json!({
                "reason": printable(&why.to_string(), 512),
                "parameters_dropped": dropped,
                "approval_id_dropped": self.approval_id.is_some(),
            }),
        );
        if let Some(id) = &self.correlation_id {
            event = event.with_correlation_id(printable(id, 128));
        }
        Ok(event)
    }
}

/// Why a best-effort audit record was not written.
#[derive(Debug)]
enum RecordError {
    Audit(AuditError),
    Other(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Audit(err) => err.fmt(f),
            RecordError::Other(message) => f.write_str(message),
        }
    }
}

/// `text` with control and other non-printing characters escaped (`\u{a}`), cut to at most
/// `max` characters: safe to record whatever the request held.
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for ch in text.chars().take(max) {
        if ch.is_control() || ch.is_whitespace() && ch != ' ' {
            out.extend(ch.escape_unicode());
        } else {
            out.push(ch);
        }
    }
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Builds a [`Gate`]. Every part left out stays closed.
#[derive(Default)]
pub struct GateBuilder {
    chain: Option<Arc<dyn Authenticator>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    approvals: Option<Arc<Approvals>>,
    audit: Option<Arc<dyn AuditSink>>,
    audit_timeout: Option<Duration>,
}

impl std::fmt::Debug for GateBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateBuilder")
            .field("chain", &self.chain)
            .field(
                "authorizer",
                &self.authorizer.as_ref().map(|a| a.name().to_owned()),
            )
            .field("approvals", &self.approvals)
            .field("audit", &self.audit.as_ref().map(|s| s.name().to_owned()))
            .finish()
    }
}

impl GateBuilder {
    /// Authenticates with `authenticator`: an [`AuthChain`] of the methods a service
    /// enabled, or any one [`Authenticator`] (an embedder's own included).
    #[must_use]
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.chain = Some(authenticator);
        self
    }

    /// Authorizes with `authorizer`.
    #[must_use]
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Requires approvals where `approvals` has a rule.
    #[must_use]
    pub fn approvals(mut self, approvals: Arc<Approvals>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// Records intents and outcomes in `sink`, which must be durable.
    #[must_use]
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// How long to wait for the audit log to acknowledge an event (default 5 s).
    #[must_use]
    pub fn audit_timeout(mut self, timeout: Duration) -> Self {
        self.audit_timeout = Some(timeout);
        self
    }

    /// Builds the gate.
    ///
    /// # Errors
    ///
    /// [`AuditError::NotDurable`] if the audit sink cannot promise durability.
    pub fn build(self) -> Result<Gate, AuditError> {
        let audit_timeout = self.audit_timeout.unwrap_or(DEFAULT_AUDIT_TIMEOUT);
        let audit = match &self.audit {
            Some(sink) => Some(WriteAhead::new(sink.clone())?.with_timeout(audit_timeout)),
            None => None,
        };
        Ok(Gate {
            chain: self
                .chain
                .unwrap_or_else(|| Arc::new(AuthChain::new(Vec::new()))),
            authorizer: self.authorizer.unwrap_or_else(|| Arc::new(DenyAll)),
            approvals: self.approvals,
            audit,
            sink: self.audit,
            audit_timeout,
        })
    }
}

/// An action the gate has let through: its intent is durable and any approval was redeemed.
/// Finish it with [`Admitted::finish`] (or let [`Gate::run`] do it).
#[derive(Debug)]
#[must_use = "an admitted action must record its outcome"]
pub struct Admitted {
    intent: Intent,
    decision: Decision,
}

impl Admitted {
    /// The audit receipt of the intent (its id links the outcome).
    pub fn receipt(&self) -> &Receipt {
        self.intent.receipt()
    }

    /// The authorizer's decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Hands how the action ended to the audit log and returns without waiting for it to
    /// be durable ([`AuditSink::submit`]): the action has
    /// happened and nothing the caller answers depends on its outcome being stored, so the
    /// answer need not wait for another write. The log writes it with its next batch,
    /// after the intent; its own reads see it as soon as this returns. A failure to hand it
    /// over (or, later, to write it) is logged, not returned: the log then shows an intent
    /// without an outcome, as after a crash during the action. Flush the log
    /// ([`AuditLog::flush`](crate::audit::AuditLog::flush)) before the process exits.
    pub async fn finish(self, outcome: Outcome) {
        let id = self.intent.receipt().id.clone();
        if let Err(err) = self.intent.submit_outcome(outcome).await {
            tracing::error!(intent = %id, error = %err, "the outcome of an admitted action could not be recorded");
        }
    }

    /// Records how the action ended and waits until the record is durable, for a caller
    /// that must know it is stored.
    ///
    /// # Errors
    ///
    /// [`GateError::AuditUnavailable`] if the outcome could not be recorded (the action has
    /// happened: the log shows an intent without an outcome).
    pub async fn finish_durable(self, outcome: Outcome) -> Result<Receipt, GateError> {
        self.intent
            .outcome(outcome)
            .await
            .map_err(|e| GateError::from_audit(&e))
    }
}

/// Why [`Gate::run`] did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E> {
    /// The gate refused; the action did not run.
    #[error(transparent)]
    Refused(GateError),
    /// The action ran and failed (recorded as the outcome).
    #[error("{0}")]
    Action(E),
}

/// Authenticate → authorize → approval → audit intent → act → outcome, for any service.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use portcullis::audit::AuditLog;
/// use portcullis::gate::{Gate, GateError, GateRequest};
/// use portcullis::token::{AuthChain, IssueRequest, MemoryTokenStore, TokenAuthenticator, TokenKey, TokenKind, TokenOptions, Tokens};
/// use portcullis::{Action, Decision, from_fn};
///
/// let (key, _) = TokenKey::generate()?;
/// let tokens = Arc::new(Tokens::open(Arc::new(MemoryTokenStore::new()), key, TokenOptions::default()).await?);
/// let bot = tokens.issue(IssueRequest { kind: TokenKind::Script, name: "ci".into(), owner: "alice".into(), scope: None, ttl: None }).await?;
/// let dir = std::env::temp_dir().join(format!("portcullis-gate-doc-{}", std::process::id()));
///
/// let gate = Gate::builder()
///     .authenticator(Arc::new(AuthChain::new(vec![Arc::new(TokenAuthenticator::new(tokens, TokenKind::Script))])))
///     .authorizer(Arc::new(from_fn("ci may deploy staging", |r| {
///         if r.principal.subject() == "ci" && r.resource.id().ends_with("/staging") {
///             Decision::allow("ci deploys staging")
///         } else {
///             Decision::not_applicable("not ci on staging")
///         }
///     })))
///     .audit(Arc::new(AuditLog::jsonl(&dir, Default::default()).await?))
///     .build()?;
///
/// let header = format!("token {}", bot.secret.expose());
/// let ci = gate.authenticate(Some(header.as_bytes())).await?;
/// let staging = GateRequest::new(Action::DEPLOY, "env_stage:checkout/staging".parse()?).param("build_id", "42");
/// let deployed = gate.run(&ci, &staging, |_| async { Ok::<_, std::io::Error>("deploy-1") }).await?;
/// assert_eq!(deployed, "deploy-1");
///
/// let prod = GateRequest::new(Action::DEPLOY, "env_stage:checkout/prod".parse()?);
/// let refused = gate.admit(&ci, &prod).await.unwrap_err();
/// assert_eq!(refused.status(), 403);
/// assert!(matches!(gate.authenticate(None).await, Err(GateError::Unauthenticated(_))));
/// # std::fs::remove_dir_all(dir)?;
/// # Ok(()) }
/// ```
pub struct Gate {
    chain: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
    approvals: Option<Arc<Approvals>>,
    audit: Option<WriteAhead>,
    sink: Option<Arc<dyn AuditSink>>,
    audit_timeout: Duration,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("chain", &self.chain)
            .field("authorizer", &self.authorizer.name())
            .field("approvals", &self.approvals)
            .field("audit", &self.sink.as_ref().map(|s| s.name().to_owned()))
            .finish()
    }
}

impl Gate {
    /// Starts a closed gate.
    pub fn builder() -> GateBuilder {
        GateBuilder::default()
    }

    /// The approvals service, when configured.
    pub fn approvals(&self) -> Option<&Arc<Approvals>> {
        self.approvals.as_ref()
    }

    /// The authorizer.
    pub fn authorizer(&self) -> &Arc<dyn Authorizer> {
        &self.authorizer
    }

    /// Authenticates the raw `Authorization` header value (`None` when absent).
    ///
    /// # Errors
    ///
    /// [`GateError::Unauthenticated`], or [`GateError::AuthUnavailable`] when a provider or
    /// the token store failed.
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, GateError> {
        let authenticated = match header {
            None => self.chain.without_credential().await,
            Some(value) => match Credential::from_authorization(value) {
                Ok(credential) => self.chain.authenticate(&credential).await,
                Err(err) => Err(err),
            },
        };
        authenticated.map_err(GateError::from_auth)
    }

    /// Asks the authorizer about `request` ([`Authorizer::authorize`], with the request's
    /// context) and enforces its answer: a refusal is recorded in the audit log (best
    /// effort: a refusal needs no licence to act) and returned as [`GateError::Forbidden`].
    ///
    /// # Errors
    ///
    /// [`GateError::Forbidden`].
    pub async fn enforce(
        &self,
        principal: &Principal,
        request: &GateRequest,
    ) -> Result<Decision, GateError> {
        let decision = self.authorizer.authorize(
            &AccessRequest::new(principal, &request.action, &request.resource)
                .with_context(&request.context),
        );
        if decision.is_allowed() {
            return Ok(decision);
        }
        let reason = decision.reason().to_owned();
        self.record_refusal(principal, request, decision).await;
        Err(GateError::Forbidden(reason))
    }

    async fn record_refusal(
        &self,
        principal: &Principal,
        request: &GateRequest,
        decision: Decision,
    ) {
        let Some(sink) = &self.sink else { return };
        let recorded = match request.event(principal, decision.clone()) {
            Ok(mut event) => {
                event.kind = portcullis_audit::EventKind::Decision;
                self.record_within(sink, event).await
            }
            Err(err) => Err(RecordError::Other(err.to_string())),
        };
        // A refusal whose request cannot be recorded as sent (a control character, too
        // large) is recorded without its parameters, so every refusal leaves a record.
        if let Err(RecordError::Audit(err)) = &recorded
            && rejects_input(err)
        {
            let redacted = request
                .redacted_event(principal, decision, err)
                .map_err(|e| RecordError::Other(e.to_string()));
            let recorded = match redacted {
                Ok(mut event) => {
                    event.kind = portcullis_audit::EventKind::Decision;
                    self.record_within(sink, event).await
                }
                Err(err) => Err(err),
            };
            if let Err(err) = recorded {
                tracing::warn!(error = %err, "a refusal could not be recorded, even redacted");
            }
            return;
        }
        if let Err(err) = recorded {
            tracing::warn!(error = %err, "a refusal could not be recorded");
        }
    }

    async fn record_within(
        &self,
        sink: &Arc<dyn AuditSink>,
        event: AuditEvent,
    ) -> Result<(), RecordError> {
        match tokio::time::timeout(self.audit_timeout, sink.record(event)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(RecordError::Audit(err)),
            Err(_) => Err(RecordError::Other("not acknowledged in time".into())),
        }
    }

    /// Refuses `request` for a reason the caller found (not the authorizer: e.g. the caller is
    /// not the one who may resume it): the refusal is recorded in the audit log like the
    /// gate's own (best effort), and `error` is handed back to answer with.
    pub async fn refuse(
        &self,
        principal: &Principal,
        request: &GateRequest,
        error: GateError,
    ) -> GateError {
        self.record_refusal(principal, request, Decision::deny(error.to_string()))
            .await;
        error
    }

    /// The approval rule covering `request`, if it needs approval.
    pub fn approval_rule(&self, request: &GateRequest) -> Option<&ApprovalRule> {
        self.approvals
            .as_ref()
            .and_then(|a| a.rule_for(&request.action, &request.resource))
    }

    fn audit(&self) -> Result<&WriteAhead, GateError> {
        self.audit.as_ref().ok_or_else(|| {
            GateError::AuditUnavailable(
                "no audit log is configured, so every action is refused".into(),
            )
        })
    }

    async fn intent(
        &self,
        principal: &Principal,
        request: &GateRequest,
        decision: Decision,
    ) -> Result<Intent, GateError> {
        let audit = self.audit()?;
        let event = request.event(principal, decision)?;
        match audit.intent(event).await {
            Ok(intent) => Ok(intent),
            Err(err) if rejects_input(&err) => {
                // Nothing runs; the refusal is recorded without what could not be.
                let refusal = Decision::deny(format!(
                    "the request could not be recorded as sent, so it was refused: {err}"
                ));
                self.record_refusal(principal, request, refusal).await;
                Err(GateError::BadRequest(err.to_string()))
            }
            Err(err) => Err(GateError::from_audit(&err)),
        }
    }

    /// Everything before the action: authorize, check the approval (if a rule covers the
    /// action), record the intent durably, then redeem the approval receipt. Only an
    /// [`Admitted`] lets the action run.
    ///
    /// # Errors
    ///
    /// [`GateError::Forbidden`]; [`GateError::ApprovalRequired`] when a rule covers the action
    /// and no approval was presented; [`GateError::ApprovalPending`] or
    /// [`GateError::ApprovalRefused`] for the presented approval;
    /// [`GateError::AuditUnavailable`] when the intent could not be recorded.
    pub async fn admit(
        &self,
        principal: &Principal,
        request: &GateRequest,
    ) -> Result<Admitted, GateError> {
        let decision = self.enforce(principal, request).await?;
        let approval = match (self.approval_rule(request), &self.approvals) {
            (Some(_), Some(approvals)) => {
                let Some(id) = &request.approval_id else {
                    let required = GateError::ApprovalRequired(format!(
                        "{} on {} needs an approval by another person",
                        request.action, request.resource
                    ));
                    return Err(self.refuse(principal, request, required).await);
                };
                let checked = match approvals.status(id).await {
                    Ok(record) => approved_for(&record, principal, request),
                    Err(err) => Err(GateError::Approval(err)),
                };
                if let Err(err) = checked {
                    return Err(self.refuse(principal, request, err).await);
                }
                Some((approvals, id))
            }
            _ => None,
        };
        let intent = self.intent(principal, request, decision.clone()).await?;
        if let Some((approvals, id)) = approval {
            // Redeemed after the intent is durable, so an audit failure never burns a receipt.
            let redeemed = match approvals.receipt(id).await {
                Ok(receipt) => {
                    approvals
                        .redeem(
                            &receipt,
                            &request.action,
                            &request.resource,
                            &request.params_value(),
                        )
                        .await
                }
                Err(err) => Err(err),
            };
            if let Err(err) = redeemed {
                let refusal = GateError::ApprovalRefused(err.to_string());
                if let Err(e) = intent.outcome(Outcome::failed(refusal.to_string())).await {
                    tracing::error!(error = %e, "the outcome of a refused approval could not be recorded");
                }
                return Err(refusal);
            }
        }
        Ok(Admitted { intent, decision })
    }

    /// [`admit`](Gate::admit), then the action, then its outcome, handed to the audit log
    /// without waiting for its write ([`Admitted::finish`]).
    ///
    /// # Errors
    ///
    /// [`RunError::Refused`] if the gate refused (the action did not run);
    /// [`RunError::Action`] if the action failed.
    pub async fn run<F, Fut, T, E>(
        &self,
        principal: &Principal,
        request: &GateRequest,
        action: F,
    ) -> Result<T, RunError<E>>
    where
        F: FnOnce(&Receipt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let admitted = self
            .admit(principal, request)
            .await
            .map_err(RunError::Refused)?;
        let result = action(admitted.receipt()).await;
        let outcome = match &result {
            Ok(_) => Outcome::succeeded("completed"),
            Err(err) => Outcome::failed(err.to_string()),
        };
        admitted.finish(outcome).await;
        result.map_err(RunError::Action)
    }

    /// Opens an approval request for `request` (which a rule must cover), after authorizing
    /// the requester and recording the request in the audit log.
    ///
    /// # Errors
    ///
    /// [`GateError::Forbidden`]; [`GateError::Approval`] for an invalid request (no rule, no
    /// approvers, self-approval); [`GateError::AuditUnavailable`].
    pub async fn request_approval(
        &self,
        principal: &Principal,
        request: &GateRequest,
        approvers: Option<Approvers>,
        reason: &str,
    ) -> Result<ApprovalRequest, GateError> {
        let Some(approvals) = &self.approvals else {
            return Err(GateError::Forbidden(
                "approvals are not configured, so actions that need one are refused".into(),
            ));
        };
        let decision = self.enforce(principal, request).await?;
        let intent = self.intent(principal, request, decision).await?;
        let created = approvals
            .request(NewRequest {
                requester: principal,
                action: request.action.clone(),
                resource: request.resource.clone(),
                params: &request.params_value(),
                reason,
                approvers,
            })
            .await;
        let outcome = match &created {
            Ok(r) => Outcome::succeeded(format!("approval {} requested", r.id)),
            Err(e) => Outcome::failed(e.to_string()),
        };
        if let Err(e) = intent.outcome(outcome).await {
            tracing::error!(error = %e, "the outcome of an approval request could not be recorded");
        }
        created.map_err(GateError::Approval)
    }

    /// Casts `approver`'s vote on approval `id` through `factor`, recording it in the audit
    /// log first (under `correlation_id`, the id of the request that carries the vote; the
    /// approval's id when `None`; the approval id is a parameter of the record either way).
    /// Returns the request after the vote.
    ///
    /// # Errors
    ///
    /// [`GateError::Approval`] (self-approval, not eligible, factor failed, not pending…);
    /// [`GateError::AuditUnavailable`].
    pub async fn vote(
        &self,
        id: &str,
        approver: &Principal,
        decision: VoteDecision,
        factor: &str,
        code: Option<&str>,
        correlation_id: Option<&str>,
    ) -> Result<ApprovalRecord, GateError> {
        let Some(approvals) = &self.approvals else {
            return Err(GateError::Forbidden("approvals are not configured".into()));
        };
        let record = approvals.status(id).await.map_err(GateError::Approval)?;
        let action = match decision {
            VoteDecision::Approve => APPROVE,
            VoteDecision::Deny => DENY,
        };
        let request = GateRequest::new(action, record.request.resource.clone())
            .param("approval_id", id)
            .param("factor", factor)
            .correlation_id(correlation_id.unwrap_or(id));
        let intent = self
            .intent(
                approver,
                &request,
                Decision::allow(format!("vote by {} on {id}", approver.subject())),
            )
            .await?;
        let voted = approvals.vote(id, approver, decision, factor, code).await;
        let outcome = match &voted {
            Ok(r) => Outcome::succeeded(format!("request is {}", r.state.as_str())),
            Err(e) => Outcome::failed(e.to_string()),
        };
        if let Err(e) = intent.outcome(outcome).await {
            tracing::error!(error = %e, "the outcome of a vote could not be recorded");
        }
        voted.map_err(GateError::Approval)
    }
}

/// Whether `record` approves exactly `request` by `principal`.
fn approved_for(
    record: &ApprovalRecord,
    principal: &Principal,
    request: &GateRequest,
) -> Result<(), GateError> {
    let r = &record.request;
    // Only the requester acts on their approval. Anyone else is refused before anything is
    // looked at further, and the refusal says nothing about the approval's state, so a
    // stranger holding an approval id learns nothing and changes nothing.
    if r.requester.subject() != principal.subject() || r.requester.kind() != principal.kind() {
        return Err(GateError::Forbidden(format!(
            "approval `{}` belongs to another requester; only they can act on it",
            r.id
        )));
    }
    if r.action != request.action
        || r.resource != request.resource
        || r.params_hash != portcullis_approval::params_hash(&request.params_value())
    {
        return Err(GateError::ApprovalRefused(
            "the approval was given for a different action, resource or parameters".into(),
        ));
    }
    match record.state {
        RequestState::Approved if record.receipt_used => Err(GateError::ApprovalRefused(
            "the approval was already used".into(),
        )),
        RequestState::Approved => Ok(()),
        RequestState::Pending => Err(GateError::ApprovalPending(r.id.clone())),
        other => Err(GateError::ApprovalRefused(format!(
            "the request is {}",
            other.as_str()
        ))),
    }
}
