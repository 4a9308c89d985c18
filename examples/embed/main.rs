//! Embedding Portcullis: a small data-access broker assembled from the crates' traits.
//!
//! `GET /v1/datasets/{name}` serves a dataset to whoever the gate lets through: personal
//! tokens authenticate (`Tokens` on a memory store), the ACL grants `READER` per dataset,
//! a rule of the service's own vetoes PII datasets without `?ticket=DATA-<number>` (the
//! ticket reaches the rule through the request context), and every read is recorded in
//! the audit log before the handler runs.
//!
//! ```sh
//! cargo run --example embed            # prints two tokens and curl commands
//! cargo test --example embed --features mock
//! ```
#![expect(
    clippy::print_stdout,
    reason = "a command-line example prints its tokens"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use portcullis::acl::{Acl, AclPolicy, MemoryAclStore};
use portcullis::audit::{AuditLog, AuditSink};
use portcullis::gate::Gate;
use portcullis::http::{EdgeLayer, guard};
use portcullis::token::{
    AuthChain, Authenticator, IssueRequest, MemoryTokenStore, TokenAuthenticator, TokenKey,
    TokenKind, TokenOptions, Tokens,
};
use portcullis::{AccessRequest, Action, Authorizer, Decision, DenyOverrides, Resource, from_fn};
use serde_json::{Value, json};

type Datasets = Arc<BTreeMap<&'static str, Value>>;

/// A ticket is `DATA-` and digits.
fn is_ticket(text: &str) -> bool {
    text.strip_prefix("DATA-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The service's policy: what the ACL grants, except PII without a ticket (a veto).
fn policy(grants: Arc<dyn Authorizer>) -> DenyOverrides {
    let pii = from_fn("pii-needs-ticket", |r: &AccessRequest<'_>| {
        if !r.resource.id().starts_with("pii-") {
            return Decision::not_applicable("not a PII dataset");
        }
        match r.context.get("ticket").and_then(Value::as_str) {
            Some(ticket) if is_ticket(ticket) => Decision::not_applicable("ticket given"),
            _ => Decision::deny("PII datasets need ?ticket=DATA-<number>"),
        }
    });
    DenyOverrides::new()
        .with_arc(grants)
        .with(pii)
        .named("broker-policy")
}

/// The gate from its three parts; `main` passes real ones, the tests mocks.
fn gate(
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
    audit: Arc<dyn AuditSink>,
) -> Result<Arc<Gate>, Box<dyn std::error::Error>> {
    let gate = Gate::builder()
        .authenticator(authenticator)
        .authorizer(authorizer)
        .audit(audit)
        .build()?;
    Ok(Arc::new(gate))
}

/// `GET /v1/datasets/{name}`: read access to `dataset:{name}`, with `ticket` in the context.
fn router(gate: Arc<Gate>, datasets: Datasets) -> Router {
    let dataset = |p: &portcullis::http::RouteParams| {
        format!("dataset:{}", p.path("name")?)
            .parse::<Resource>()
            .map_err(|e| e.to_string())
    };
    Router::new()
        .route("/v1/datasets/{name}", get(read))
        .route_layer(guard(gate, Action::READ, dataset).params(["ticket"]))
        .layer(EdgeLayer::new())
        .with_state(datasets)
}

async fn read(
    State(datasets): State<Datasets>,
    Path(name): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    datasets
        .get(name.as_str())
        .cloned()
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (key, _) = TokenKey::generate()?;
    let store = Arc::new(MemoryTokenStore::new());
    let tokens = Arc::new(Tokens::open(store, key, TokenOptions::default()).await?);
    let mut secrets = Vec::new();
    for user in ["alice", "bob"] {
        let request = IssueRequest {
            kind: TokenKind::Personal,
            name: "laptop".into(),
            owner: user.into(),
            scope: None,
            ttl: None,
        };
        secrets.push((user, tokens.issue(request).await?.secret));
    }
    let chain = AuthChain::new(vec![Arc::new(TokenAuthenticator::new(
        tokens,
        TokenKind::Personal,
    ))]);
    let bindings = [
        "user:alice dataset:sales READER".parse()?,
        "user:bob dataset:sales READER".parse()?,
        "user:bob dataset:pii-customers READER".parse()?,
    ];
    let store = MemoryAclStore::with_bindings(bindings)?;
    let acl = Acl::open(Arc::new(store), AclPolicy::teletraan()).await?;
    let dir = std::env::temp_dir().join(format!("portcullis-embed-{}", std::process::id()));
    let audit = AuditLog::jsonl(&dir, Default::default()).await?;
    let policy = policy(Arc::new(acl.authorizer()));
    let gate = gate(Arc::new(chain), Arc::new(policy), Arc::new(audit))?;
    let datasets: Datasets = Arc::new(BTreeMap::from([
        ("sales", json!([{"region": "emea", "total": 1200}])),
        (
            "pii-customers",
            json!([{"name": "Ada", "email": "ada@example.com"}]),
        ),
    ]));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8090").await?;
    println!("audit log: {}", dir.display());
    for (user, secret) in &secrets {
        println!(
            "{user}: curl -H 'Authorization: token {}' \\",
            secret.expose()
        );
        println!("  'http://127.0.0.1:8090/v1/datasets/pii-customers?ticket=DATA-42'");
    }
    axum::serve(listener, router(gate, datasets))
        .with_graceful_shutdown(portcullis::http::shutdown_signal())
        .await?;
    Ok(())
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    //! Unit tests of the broker's wiring with mockall mocks: no token store, ACL or disk.
    #![expect(
        clippy::unwrap_used,
        reason = "tests: a failed unwrap is a failed test"
    )]

    use axum::body::Body;
    use axum::http::Request;
    use portcullis::audit::mock::MockAuditSink;
    use portcullis::audit::{AuditError, Receipt};
    use portcullis::mock::MockAuthorizer;
    use portcullis::token::mock::MockAuthenticator;
    use portcullis::{AuthMethod, Principal, PrincipalKind};
    use tower::ServiceExt as _;

    use super::*;

    fn bob() -> MockAuthenticator {
        let mut authenticator = MockAuthenticator::new();
        authenticator.expect_authenticate().returning(|_| {
            Ok(
                Principal::builder(PrincipalKind::User, "bob", AuthMethod::PERSONAL_TOKEN)
                    .build()?,
            )
        });
        authenticator
    }

    fn audit(works: bool) -> MockAuditSink {
        let mut sink = MockAuditSink::new();
        sink.expect_is_durable().return_const(true);
        sink.expect_record().returning(move |event| {
            if works {
                Ok(Receipt {
                    id: event.id,
                    seq: 1,
                    hash: "00".repeat(32),
                })
            } else {
                Err(AuditError::Database("disk full".into()))
            }
        });
        sink.expect_submit().returning(|_| Ok(()));
        sink
    }

    async fn get(gate: Arc<Gate>, target: &str) -> StatusCode {
        let datasets: Datasets = Arc::new(BTreeMap::from([("pii-customers", json!([]))]));
        let request = Request::get(target)
            .header("authorization", "token anything")
            .body(Body::empty())
            .unwrap();
        router(gate, datasets)
            .oneshot(request)
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn the_ticket_reaches_the_authorizer_and_the_read_is_audited_first() {
        let mut authorizer = MockAuthorizer::new();
        authorizer
            .expect_authorize()
            .withf(|r| r.context.get("ticket") == Some(&json!("DATA-42")))
            .times(1)
            .returning(|_| Decision::allow("bob reads with a ticket"));
        let gate = gate(Arc::new(bob()), Arc::new(authorizer), Arc::new(audit(true))).unwrap();
        let status = get(gate, "/v1/datasets/pii-customers?ticket=DATA-42").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn no_audit_record_no_read() {
        let mut authorizer = MockAuthorizer::new();
        authorizer
            .expect_authorize()
            .returning(|_| Decision::allow("allowed"));
        let gate = gate(
            Arc::new(bob()),
            Arc::new(authorizer),
            Arc::new(audit(false)),
        )
        .unwrap();
        let status = get(gate, "/v1/datasets/pii-customers?ticket=DATA-42").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn pii_needs_a_well_formed_ticket_even_when_the_acl_grants() {
        let mut grants = MockAuthorizer::new();
        grants
            .expect_authorize()
            .returning(|_| Decision::allow("READER"));
        let policy = policy(Arc::new(grants));
        let bob = Principal::builder(PrincipalKind::User, "bob", AuthMethod::PERSONAL_TOKEN)
            .build()
            .unwrap();
        let pii: Resource = "dataset:pii-customers".parse().unwrap();
        let ask = |ticket: Option<&str>| {
            let context = match ticket {
                Some(t) => portcullis::Context::default().with("ticket", json!(t)),
                None => portcullis::Context::default(),
            };
            policy.authorize(&AccessRequest::new(&bob, &Action::READ, &pii).with_context(&context))
        };
        assert!(ask(Some("DATA-42")).is_allowed());
        assert!(ask(None).is_denied());
        assert!(ask(Some("DATA-")).is_denied());
        assert!(ask(Some("JIRA-42")).is_denied());
    }
}
