//! `RegoAuthorizer`: how rule results map to decisions, and that every failure denies.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::sync::Arc;

use portcullis_core::{
    AccessRequest, Action, AuthMethod, Authorizer, Context, Decision, DenyOverrides, Effect,
    Principal, PrincipalKind, Resource, from_fn,
};
use portcullis_policy::{Bundle, EvalLimits, PolicyStore, RegoAuthorizer};
use serde_json::json;

const POLICY: &str = r#"
package deploy

import rego.v1

# A boolean rule: release managers deploy anywhere but production stages.
allow if {
    input.action == "deploy"
    "release-managers" in input.principal.groups
    not endswith(input.resource.id, "/prod")
}

# An object rule with reasons; a change freeze in the context vetoes everything.
decision := {"deny": true, "reason": "change freeze"} if input.context.freeze == true
else := {"allow": true, "reason": sprintf("%s owns %s", [input.principal.subject, input.resource.id])} if {
    input.resource.id in data.deploy.owners[input.principal.subject]
}
else := {"allow": false}

not_a_decision := 42
bad_flag := {"allow": "yes"}
broken := x if x := 1 / 0
"#;

fn store() -> Arc<PolicyStore> {
    store_with(EvalLimits::default())
}

fn store_with(limits: EvalLimits) -> Arc<PolicyStore> {
    let store = Arc::new(PolicyStore::in_memory(limits));
    store
        .activate(
            Bundle::from_files(
                "deploy",
                [
                    ("deploy.rego".to_owned(), POLICY.as_bytes().to_vec()),
                    (
                        "deploy/data.json".to_owned(),
                        br#"{"owners": {"carol": ["checkout/prod"]}}"#.to_vec(),
                    ),
                ],
            )
            .unwrap(),
        )
        .unwrap();
    store
}

fn user(name: &str, groups: &[&str]) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .groups(groups.iter().copied())
        .build()
        .unwrap()
}

fn stage(id: &str) -> Resource {
    format!("env_stage:{id}").parse().unwrap()
}

#[test]
fn a_boolean_rule_allows_or_grants_nothing() {
    let authorizer = RegoAuthorizer::new(store(), "deploy/allow").unwrap();
    let alice = user("alice", &["release-managers"]);
    let decision = authorizer.check(&alice, &Action::DEPLOY, &stage("checkout/staging"));
    assert_eq!(decision.effect(), Effect::Allow, "{}", decision.reason());
    assert_eq!(decision.reason(), "rego data.deploy.allow: allowed");
    // false and undefined both grant nothing: other authorizers may still allow.
    let prod = authorizer.check(&alice, &Action::DEPLOY, &stage("checkout/prod"));
    assert_eq!(prod.effect(), Effect::NotApplicable);
    let bob = authorizer.check(
        &user("bob", &[]),
        &Action::DEPLOY,
        &stage("checkout/staging"),
    );
    assert_eq!(bob.effect(), Effect::NotApplicable);
}

#[test]
fn an_object_rule_gives_reasons_and_its_deny_wins() {
    let authorizer = RegoAuthorizer::new(store(), "data.deploy.decision").unwrap();
    let carol = user("carol", &[]);
    let prod = stage("checkout/prod");
    let allowed = authorizer.check(&carol, &Action::DEPLOY, &prod);
    assert_eq!(allowed.effect(), Effect::Allow);
    assert_eq!(
        allowed.reason(),
        "rego data.deploy.decision: carol owns checkout/prod"
    );

    let freeze = Context::new().with("freeze", json!(true));
    let frozen = authorizer
        .authorize(&AccessRequest::new(&carol, &Action::DEPLOY, &prod).with_context(&freeze));
    assert_eq!(frozen.effect(), Effect::Deny);
    assert_eq!(frozen.reason(), "rego data.deploy.decision: change freeze");

    let dave = authorizer.check(&user("dave", &[]), &Action::DEPLOY, &prod);
    assert_eq!(dave.effect(), Effect::NotApplicable);

    // Combined: the Rego veto overrides an allow from elsewhere.
    let combined = DenyOverrides::new()
        .with(from_fn("everyone", |_| Decision::allow("open")))
        .with(authorizer);
    assert_eq!(
        combined
            .authorize(&AccessRequest::new(&carol, &Action::DEPLOY, &prod).with_context(&freeze))
            .effect(),
        Effect::Deny
    );
}

#[test]
fn anything_unexpected_denies() {
    let store = store();
    let alice = user("alice", &["release-managers"]);
    let staging = stage("checkout/staging");
    for rule in ["deploy/not_a_decision", "deploy/bad_flag"] {
        let authorizer = RegoAuthorizer::new(store.clone(), rule).unwrap();
        let decision = authorizer.check(&alice, &Action::DEPLOY, &staging);
        assert_eq!(
            decision.effect(),
            Effect::Deny,
            "{rule}: {}",
            decision.reason()
        );
    }
    // A built-in error (1 / 0) leaves the rule undefined, as in OPA: never an allow.
    let broken = RegoAuthorizer::new(store.clone(), "deploy/broken").unwrap();
    let decision = broken.check(&alice, &Action::DEPLOY, &staging);
    assert_eq!(
        decision.effect(),
        Effect::NotApplicable,
        "{}",
        decision.reason()
    );
    // With strict built-in errors it is an evaluation error, which denies.
    let strict = store_with(EvalLimits::default().with_strict_builtin_errors(true));
    let broken = RegoAuthorizer::new(strict, "deploy/broken").unwrap();
    let decision = broken.check(&alice, &Action::DEPLOY, &staging);
    assert_eq!(decision.effect(), Effect::Deny, "{}", decision.reason());
    // Nothing active: deny, never an implicit allow.
    let empty = Arc::new(PolicyStore::in_memory(EvalLimits::default()));
    let authorizer = RegoAuthorizer::new(empty, "deploy/allow").unwrap();
    let decision = authorizer.check(&alice, &Action::DEPLOY, &staging);
    assert_eq!(decision.effect(), Effect::Deny);
    assert!(
        decision.reason().contains("no policy bundle is active"),
        "{}",
        decision.reason()
    );
    // A rule path that is not one is refused when the authorizer is built.
    assert!(RegoAuthorizer::new(store, "deploy/../allow").is_err());
}

#[test]
fn the_input_document_carries_the_whole_request() {
    let alice = Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
        .group("release-managers")
        .claim("email", json!("alice@example.com"))
        .build()
        .unwrap();
    let context = Context::new().with("ip", json!("10.0.0.7"));
    let resource = stage("checkout/prod");
    let deploy = Action::DEPLOY;
    let request = AccessRequest::new(&alice, &deploy, &resource).with_context(&context);
    let input = RegoAuthorizer::<PolicyStore>::input(&request);
    assert_eq!(input["action"], "deploy");
    assert_eq!(
        input["resource"],
        json!({"kind": "env_stage", "id": "checkout/prod"})
    );
    assert_eq!(input["principal"]["subject"], "alice");
    assert_eq!(input["principal"]["groups"], json!(["release-managers"]));
    assert_eq!(input["context"]["ip"], "10.0.0.7");
}
