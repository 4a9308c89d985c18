//! The gate and its axum layers, in-process: every refusal maps to its status, approvals
//! are bound to the exact request and used once, and nothing runs when the audit log cannot
//! record the intent.
#![cfg(all(feature = "gate", feature = "axum"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::routing::post;
use axum::{Extension, Router};
use portcullis::approval::{
    ApprovalRule, Approvals, Approvers, InAppFactor, MemoryApprovalStore, VoteDecision,
};
use portcullis::audit::{AuditError, AuditEvent, AuditLog, AuditQuery, AuditSink, Receipt};
use portcullis::gate::{Gate, GateError, GateRequest};
use portcullis::http::{AuditIntentId, CorrelationId, guard};
use portcullis::token::{
    AuthChain, IssueRequest, MemoryTokenStore, TokenAuthenticator, TokenKey, TokenKind,
    TokenOptions, Tokens,
};
use portcullis::{
    AccessRequest, Action, AuthMethod, Decision, Principal, PrincipalKind, Resource, ResourceKind,
    from_fn,
};

/// A durable sink that can be switched off: a real `AuditLog` behind a fault switch.
#[derive(Debug)]
struct Switchable {
    log: Arc<AuditLog>,
    down: AtomicBool,
}

#[async_trait]
impl AuditSink for Switchable {
    async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AuditError::Database("the audit database is down".into()));
        }
        self.log.record(event).await
    }

    async fn submit(&self, event: AuditEvent) -> Result<(), AuditError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AuditError::Database("the audit database is down".into()));
        }
        self.log.submit(event).await
    }

    fn is_durable(&self) -> bool {
        self.log.is_durable()
    }
}

struct World {
    gate: Arc<Gate>,
    audit: Arc<Switchable>,
    tokens: Arc<Tokens>,
    log: Arc<AuditLog>,
}

fn user(name: &str) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .build()
        .unwrap()
}

/// alice and bob may deploy anything and approve; production stages (`*/prod`) need one
/// in-app approval.
async fn world() -> World {
    let log = Arc::new(
        AuditLog::sqlite("sqlite::memory:", Default::default())
            .await
            .unwrap(),
    );
    let audit = Arc::new(Switchable {
        log: log.clone(),
        down: AtomicBool::new(false),
    });
    let (key, _) = TokenKey::generate().unwrap();
    let tokens = Arc::new(
        Tokens::open(
            Arc::new(MemoryTokenStore::new()),
            key,
            TokenOptions::default(),
        )
        .await
        .unwrap(),
    );
    let authorizer = Arc::new(from_fn("team", |r: &AccessRequest<'_>| {
        if ["alice", "bob", "ci"].contains(&r.principal.subject()) && r.action == &Action::DEPLOY {
            Decision::allow("on the team")
        } else {
            Decision::not_applicable("not on the team")
        }
    }));
    let mut rule = ApprovalRule::new(Action::DEPLOY, ResourceKind::ENV_STAGE, Action::DEPLOY);
    rule.resource_ids = vec!["*/prod".into()];
    let approvals = Approvals::new(
        Arc::new(MemoryApprovalStore::new()),
        authorizer.clone(),
        &[7u8; 32],
    )
    .unwrap()
    .rule(rule)
    .unwrap()
    .factor(Arc::new(InAppFactor::new([AuthMethod::OIDC])));
    let chain = AuthChain::new(vec![Arc::new(TokenAuthenticator::new(
        tokens.clone(),
        TokenKind::Script,
    ))]);
    let gate = Gate::builder()
        .authenticator(Arc::new(chain))
        .authorizer(authorizer)
        .approvals(Arc::new(approvals))
        .audit(audit.clone())
        .build()
        .unwrap();
    World {
        gate: Arc::new(gate),
        audit,
        tokens,
        log,
    }
}

fn stage(id: &str) -> Resource {
    Resource::new(ResourceKind::ENV_STAGE, id).unwrap()
}

#[tokio::test]
async fn a_gate_built_with_nothing_is_closed() {
    let gate = Gate::builder().build().unwrap();
    let err = gate
        .authenticate(Some(b"token pcs_anything"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 401);
    let err = gate
        .admit(
            &user("alice"),
            &GateRequest::new(Action::DEPLOY, stage("a/b")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403, "no authorizer: DenyAll");

    let open = Gate::builder()
        .authorizer(Arc::new(portcullis::danger::AllowAll))
        .build()
        .unwrap();
    let err = open
        .admit(
            &user("alice"),
            &GateRequest::new(Action::DEPLOY, stage("a/b")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GateError::AuditUnavailable(_)), "{err}");
    assert_eq!(err.status(), 503);
}

#[tokio::test]
async fn nothing_runs_when_the_intent_cannot_be_recorded() {
    let w = world().await;
    let ran = AtomicUsize::new(0);
    let request = GateRequest::new(Action::DEPLOY, stage("checkout/staging"));
    let alice = user("alice");
    let done = w
        .gate
        .run(&alice, &request, |_| async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        })
        .await;
    assert!(done.is_ok());
    w.audit.down.store(true, Ordering::SeqCst);
    let refused = w
        .gate
        .run(&alice, &request, |_| async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        })
        .await;
    assert!(matches!(
        refused,
        Err(portcullis::gate::RunError::Refused(
            GateError::AuditUnavailable(_)
        ))
    ));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// The outcome of a run is handed to the log without the caller waiting for its write, and
/// the log's reads see it at once; `finish_durable` waits, and says when it could not.
#[tokio::test]
async fn outcomes_are_submitted_and_seen_by_reads() {
    let w = world().await;
    let alice = user("alice");
    let request = GateRequest::new(Action::DEPLOY, stage("checkout/staging"));
    let intent_id = w
        .gate
        .run(&alice, &request, |receipt| {
            let id = receipt.id.clone();
            async move { Ok::<_, std::io::Error>(id) }
        })
        .await
        .unwrap();
    let found = w.log.get(&intent_id).await.unwrap().unwrap();
    let outcome = found.outcome.expect("the submitted outcome is visible");
    assert_eq!(outcome.seq, found.event.seq + 1);
    assert_eq!(outcome.event.outcome.unwrap().detail, "completed");

    // A failed action's outcome says so.
    let failed = w
        .gate
        .run(&alice, &request, |_| async {
            Err::<(), _>(std::io::Error::other("disk full"))
        })
        .await;
    assert!(matches!(failed, Err(portcullis::gate::RunError::Action(_))));
    let page = w.log.query(&AuditQuery::all(10)).await.unwrap().records;
    let last = page.last().unwrap().event.outcome.clone().unwrap();
    assert_eq!(last.detail, "disk full");

    // Waiting for the outcome: its receipt, right after the intent.
    let admitted = w.gate.admit(&alice, &request).await.unwrap();
    let intent_seq = admitted.receipt().seq;
    let receipt = admitted
        .finish_durable(portcullis::audit::Outcome::succeeded("shipped"))
        .await
        .unwrap();
    assert_eq!(receipt.seq, intent_seq + 1);

    // The log goes down after the intent: `finish_durable` reports it (503), while
    // `finish` only logs it, since the action has happened either way.
    let admitted = w.gate.admit(&alice, &request).await.unwrap();
    w.audit.down.store(true, Ordering::SeqCst);
    let err = admitted
        .finish_durable(portcullis::audit::Outcome::succeeded("shipped"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 503, "{err}");
    w.audit.down.store(false, Ordering::SeqCst);
    let admitted = w.gate.admit(&alice, &request).await.unwrap();
    let lost = admitted.receipt().id.clone();
    w.audit.down.store(true, Ordering::SeqCst);
    admitted
        .finish(portcullis::audit::Outcome::succeeded("shipped"))
        .await;
    w.audit.down.store(false, Ordering::SeqCst);
    assert!(w.log.get(&lost).await.unwrap().unwrap().outcome.is_none());
}

#[tokio::test]
async fn approvals_are_bound_to_the_request_and_used_once() {
    let w = world().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let prod = GateRequest::new(Action::DEPLOY, stage("checkout/prod")).param("build_id", "1");

    let err = w.gate.admit(&alice, &prod).await.unwrap_err();
    assert_eq!(err.status(), 428);
    let approval = w
        .gate
        .request_approval(
            &alice,
            &prod,
            Some(Approvers::Named(vec!["bob".into()])),
            "ship 1",
        )
        .await
        .unwrap();
    let presented = prod.clone().approval(approval.id.clone());
    let err = w.gate.admit(&alice, &presented).await.unwrap_err();
    assert_eq!(err.status(), 202, "{err}");

    // Self-approval is impossible; bob's vote approves.
    let err = w
        .gate
        .vote(
            &approval.id,
            &alice,
            VoteDecision::Approve,
            "in_app",
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403);
    w.gate
        .vote(
            &approval.id,
            &bob,
            VoteDecision::Approve,
            "in_app",
            None,
            None,
        )
        .await
        .unwrap();

    // Another build, or another requester, cannot use it.
    let other_build = GateRequest::new(Action::DEPLOY, stage("checkout/prod"))
        .param("build_id", "2")
        .approval(approval.id.clone());
    assert_eq!(
        w.gate
            .admit(&alice, &other_build)
            .await
            .unwrap_err()
            .status(),
        403
    );
    assert_eq!(
        w.gate.admit(&bob, &presented).await.unwrap_err().status(),
        403
    );

    // With the audit log down, the receipt is not burnt.
    w.audit.down.store(true, Ordering::SeqCst);
    assert_eq!(
        w.gate.admit(&alice, &presented).await.unwrap_err().status(),
        503
    );
    w.audit.down.store(false, Ordering::SeqCst);

    let admitted = w.gate.admit(&alice, &presented).await.unwrap();
    admitted
        .finish(portcullis::audit::Outcome::succeeded("deployed"))
        .await;
    let again = w.gate.admit(&alice, &presented).await.unwrap_err();
    assert_eq!(again.status(), 403, "{again}");
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn the_guard_layer_maps_every_refusal_to_its_status() {
    let w = world().await;
    let ci = w
        .tokens
        .issue(IssueRequest {
            kind: TokenKind::Script,
            name: "ci".into(),
            owner: "alice".into(),
            scope: None,
            ttl: None,
        })
        .await
        .unwrap();
    let outsider = w
        .tokens
        .issue(IssueRequest {
            kind: TokenKind::Script,
            name: "outsider".into(),
            owner: "alice".into(),
            scope: None,
            ttl: None,
        })
        .await
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let app = Router::new()
        .route(
            "/deploy/{env}/{stage}",
            post(
                move |Extension(who): Extension<Principal>,
                      Extension(id): Extension<CorrelationId>,
                      Extension(intent): Extension<AuditIntentId>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        format!("{} {} {}", who.subject(), id.0, intent.0)
                    }
                },
            ),
        )
        .route_layer(
            guard(w.gate.clone(), Action::DEPLOY, |p| {
                Resource::new(
                    ResourceKind::ENV_STAGE,
                    format!("{}/{}", p.path("env")?, p.path("stage")?),
                )
                .map_err(|e| e.to_string())
            })
            .params(["build_id"]),
        );
    let base = serve(app).await;
    let http = reqwest::Client::new();
    let post = |path: &str, auth: Option<String>| {
        let mut r = http
            .post(format!("{base}{path}"))
            .header("x-request-id", "req-test-1");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let ci_auth = Some(format!("token {}", ci.secret.expose()));

    let r = post("/deploy/checkout/staging?build_id=1", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    let r = post(
        "/deploy/checkout/staging?build_id=1",
        Some(format!("token {}", outsider.secret.expose())),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("not on the team"));

    let r = post("/deploy/checkout/staging?build_id=1", ci_auth.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-test-1");
    let body = r.text().await.unwrap();
    assert!(body.starts_with("ci req-test-1 "), "{body}");

    let r = post("/deploy/checkout/prod?build_id=1", ci_auth.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 428);

    let ci_principal = w
        .gate
        .authenticate(ci_auth.as_deref().map(str::as_bytes))
        .await
        .unwrap();
    let approval = w
        .gate
        .request_approval(
            &ci_principal,
            &GateRequest::new(Action::DEPLOY, stage("checkout/prod")).param("build_id", "1"),
            Some(Approvers::Named(vec!["bob".into()])),
            "ship",
        )
        .await
        .unwrap();
    let with_approval = format!(
        "/deploy/checkout/prod?build_id=1&approval_id={}",
        approval.id
    );
    let r = post(&with_approval, ci_auth.clone()).await.unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["approval_id"], approval.id.as_str());
    w.gate
        .vote(
            &approval.id,
            &user("bob"),
            VoteDecision::Approve,
            "in_app",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        post(&with_approval, ci_auth.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(&with_approval, ci_auth.clone())
            .await
            .unwrap()
            .status(),
        403
    );

    w.audit.down.store(true, Ordering::SeqCst);
    let r = post("/deploy/checkout/staging?build_id=2", ci_auth.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    w.audit.down.store(false, Ordering::SeqCst);
    assert_eq!(
        handled.load(Ordering::SeqCst),
        2,
        "only admitted requests reached the handler"
    );

    // Each admitted request left an intent and an outcome with the HTTP status.
    let mut query = AuditQuery::all(100);
    query.correlation_id = Some("req-test-1".into());
    let page = w.log.query(&query).await.unwrap();
    let outcomes: Vec<_> = page
        .records
        .iter()
        .filter_map(|r| r.event.outcome.as_ref())
        .map(|o| o.detail.clone())
        .collect();
    assert!(outcomes.contains(&"HTTP 200".to_owned()), "{outcomes:?}");
}

#[tokio::test]
async fn a_stranger_presenting_an_approval_is_refused_without_touching_it() {
    let w = world().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let prod = GateRequest::new(Action::DEPLOY, stage("checkout/prod")).param("build_id", "9");
    let approval = w
        .gate
        .request_approval(
            &alice,
            &prod,
            Some(Approvers::Named(vec!["bob".into()])),
            "ship 9",
        )
        .await
        .unwrap();
    let presented = prod.clone().approval(approval.id.clone());
    // bob (allowed to deploy) presents alice's approval: forbidden, not "refused", so a
    // caller cannot mistake it for a dead approval.
    let err = w.gate.admit(&bob, &presented).await.unwrap_err();
    assert!(matches!(err, GateError::Forbidden(_)), "{err}");
    // A script token named like the requester is not the requester either.
    let alias = Principal::builder(
        PrincipalKind::ScriptToken,
        "alice",
        AuthMethod::SCRIPT_TOKEN,
    )
    .build()
    .unwrap();
    let err = w.gate.admit(&alias, &presented).await.unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    // The approval still works for alice once bob approves.
    w.gate
        .vote(
            &approval.id,
            &bob,
            VoteDecision::Approve,
            "in_app",
            None,
            None,
        )
        .await
        .unwrap();
    assert!(w.gate.admit(&alice, &presented).await.is_ok());
}

#[tokio::test]
async fn unrecordable_input_is_a_400_and_its_refusal_is_recorded_redacted() {
    let w = world().await;
    let (alice, mallory) = (user("alice"), user("mallory"));
    let bad = GateRequest::new(Action::DEPLOY, stage("checkout/staging"))
        .param("note", "a\nb")
        .correlation_id("req-bad-input");
    // Allowed, but the intent cannot be recorded as sent: 400, not 503, and nothing runs.
    let err = w.gate.admit(&alice, &bad).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (400, "bad_request"), "{err}");
    // Refused by authorization with the same input: still a decision record.
    let err = w.gate.admit(&mallory, &bad).await.unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    // Too large for the log: the same.
    let huge = GateRequest::new(Action::DEPLOY, stage("checkout/staging"))
        .param("note", "x".repeat(200_000))
        .correlation_id("req-bad-input");
    assert_eq!(w.gate.admit(&alice, &huge).await.unwrap_err().status(), 400);
    assert_eq!(
        w.gate.admit(&mallory, &huge).await.unwrap_err().status(),
        403
    );

    let mut query = AuditQuery::all(100);
    query.correlation_id = Some("req-bad-input".into());
    let records = w.log.query(&query).await.unwrap().records;
    let actors: Vec<_> = records
        .iter()
        .map(|r| r.event.actor.subject.as_str())
        .collect();
    assert_eq!(
        actors,
        ["alice", "mallory", "alice", "mallory"],
        "{records:?}"
    );
    for record in &records {
        let event = &record.event;
        assert_ne!(
            event.decision.as_ref().unwrap().effect(),
            portcullis::Effect::Allow
        );
        let redacted = &event.fields["redacted"];
        assert_eq!(redacted["parameters_dropped"], serde_json::json!(["note"]));
        assert!(event.request.as_ref().unwrap().parameters.is_empty());
    }
}

/// Issue 31: the Gate passed an empty context to the authorizer, so an attribute rule (a
/// data steward reaching a dataset with a ticket) passed a hand-written pipeline and was
/// refused through `guard`. Declared parameters and headers now reach the authorizer.
#[cfg(feature = "policy")]
#[tokio::test]
async fn declared_request_attributes_reach_the_authorizer_through_the_guard() {
    use portcullis::policy::{Bundle, PolicyStore, RegoAuthorizer};
    let store = Arc::new(PolicyStore::in_memory(Default::default()));
    store
        .activate(
            Bundle::from_files(
                "data",
                [(
                    "steward.rego".to_owned(),
                    br#"package data
                        allow if {
                            input.action == "read"
                            "stewards" in input.principal.groups
                            regex.match(`^DATA-[0-9]+$`, input.context.ticket)
                            input.context.headers["x-purpose"] == "audit"
                        }"#
                    .to_vec(),
                )],
            )
            .unwrap(),
        )
        .unwrap();
    let rego: Arc<dyn portcullis::Authorizer> =
        Arc::new(RegoAuthorizer::new(store, "data.data.allow").unwrap());
    // The same rule written as a closure, composed with a veto as an ACL would be.
    let closure = portcullis::DenyOverrides::new()
        .with(from_fn("ticket", |r: &AccessRequest<'_>| {
            match r.context.get("ticket").and_then(|t| t.as_str()) {
                Some(t) if t.starts_with("DATA-") && r.principal.in_group("stewards") => {
                    Decision::allow("steward with a ticket")
                }
                _ => Decision::not_applicable("no ticket"),
            }
        }))
        .with(from_fn("blocklist", |r: &AccessRequest<'_>| {
            if r.principal.subject() == "mallory" {
                Decision::deny("blocked")
            } else {
                Decision::not_applicable("not blocked")
            }
        }));
    for authorizer in [rego, Arc::new(closure) as Arc<dyn portcullis::Authorizer>] {
        let log = Arc::new(
            AuditLog::sqlite("sqlite::memory:", Default::default())
                .await
                .unwrap(),
        );
        let gate = Arc::new(
            Gate::builder()
                .authorizer(authorizer)
                .audit(log.clone())
                .build()
                .unwrap(),
        );
        let steward = Principal::builder(PrincipalKind::User, "sam", AuthMethod::OIDC)
            .group("stewards")
            .build()
            .unwrap();
        // An outer layer authenticated the caller (as AuthenticateLayer does).
        let app = Router::new()
            .route("/datasets/{name}", axum::routing::get(|| async { "rows" }))
            .route_layer(
                guard(gate, "read".parse().unwrap(), |p| {
                    Resource::new("dataset".parse().unwrap(), p.path("name")?)
                        .map_err(|e| e.to_string())
                })
                .params(["ticket"])
                .context_headers(["x-purpose"]),
            )
            .layer(Extension(steward));
        let base = serve(app).await;
        let http = reqwest::Client::new();
        let get = |query: &str, purpose: Option<&str>| {
            let mut r = http.get(format!("{base}/datasets/payroll{query}"));
            if let Some(p) = purpose {
                r = r.header("x-purpose", p);
            }
            r.send()
        };
        let r = get("?ticket=DATA-42", Some("audit")).await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        assert_eq!(
            get("?ticket=NOPE", Some("audit")).await.unwrap().status(),
            403
        );
        assert_eq!(get("", Some("audit")).await.unwrap().status(), 403);
        // The decision rested on the context, so the intent records it.
        let page = log.query(&AuditQuery::all(10)).await.unwrap().records;
        let context = &page[0].event.fields["context"];
        assert_eq!(context["ticket"], "DATA-42", "{context}");
    }
}

/// Issue 31: the gate took only a concrete `AuthChain`; any `Authenticator` serves now.
#[tokio::test]
async fn the_gate_takes_any_authenticator() {
    #[derive(Debug)]
    struct HeaderIsName;

    #[async_trait]
    impl portcullis::token::Authenticator for HeaderIsName {
        fn name(&self) -> &str {
            "header-is-name"
        }
        async fn authenticate(
            &self,
            credential: &portcullis::token::Credential,
        ) -> Result<Principal, portcullis::token::AuthError> {
            let _ = credential;
            Ok(user("embedded"))
        }
    }

    let log = Arc::new(
        AuditLog::sqlite("sqlite::memory:", Default::default())
            .await
            .unwrap(),
    );
    let gate = Gate::builder()
        .authenticator(Arc::new(HeaderIsName))
        .audit(log)
        .build()
        .unwrap();
    let who = gate.authenticate(Some(b"Bearer anything")).await.unwrap();
    assert_eq!(who.subject(), "embedded");
    let missing = gate.authenticate(None).await.unwrap_err();
    assert_eq!(missing.status(), 401, "no credential, no anonymous default");
}

/// The outside finding (issue 34): a 503 from the approval store carried PostgreSQL's text
/// (`null value in column "zz" …`). Failures on the service's side now say what is
/// unavailable and no more; the detail is only logged. Other refusals keep their reasons.
#[tokio::test]
async fn store_failures_answer_without_database_internals() {
    use axum::response::IntoResponse as _;

    let leak = r#"null value in column "zz" of relation "portcullis_approvals" violates not-null constraint"#;
    for (err, code) in [
        (
            GateError::Approval(portcullis::approval::ApprovalError::Store(leak.into())),
            "approval_error",
        ),
        (
            GateError::AuthUnavailable(portcullis::token::AuthError::Store(leak.into())),
            "authentication_unavailable",
        ),
        (
            GateError::AuditUnavailable(leak.into()),
            "audit_unavailable",
        ),
    ] {
        let response = err.into_response();
        assert_eq!(response.status(), 503);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], code);
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("unavailable"), "{message}");
        for internal in ["zz", "null value", "portcullis_approvals", "constraint"] {
            assert!(!message.contains(internal), "{message}");
        }
    }
    let refused = GateError::Forbidden("scoped to env:checkout".into()).into_response();
    let body = axum::body::to_bytes(refused.into_body(), 1 << 16)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&body).contains("scoped to env:checkout"));
}
