//! Hot-path costs of the core vocabulary: parsing a resource from a request path, parsing a
//! principal handed over as JSON, and a composed authorization check.

#![expect(
    clippy::expect_used,
    reason = "benches set up fixed, valid inputs; a failure is a broken bench"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::{
    Action, AuthMethod, Authorizer, Decision, DenyOverrides, Principal, PrincipalKind, Resource,
    from_fn,
};

fn parsing(c: &mut Criterion) {
    c.bench_function("core/resource_parse", |b| {
        b.iter(|| black_box("env_stage:checkout/prod").parse::<Resource>())
    });
    let json = r#"{"subject":"alice","kind":"user","groups":["deployers","eng","oncall"],
        "auth_method":"oidc","expires_at":1767225600,"claims":{"email":"alice@example.org"}}"#;
    c.bench_function("core/principal_from_json", |b| {
        b.iter(|| Principal::from_json(black_box(json)))
    });
}

fn composed_check(c: &mut Criterion) {
    let team = from_fn("deployers-team", |r| {
        if r.principal.in_group("deployers") {
            Decision::allow("member of deployers")
        } else {
            Decision::not_applicable("not a deployer")
        }
    });
    let freeze = from_fn("change-freeze", |r| {
        if r.resource.id().ends_with("/prod") && r.principal.in_group("frozen") {
            Decision::deny("frozen")
        } else {
            Decision::not_applicable("no freeze")
        }
    });
    let owner = from_fn("owner", |_| Decision::not_applicable("not the owner"));
    let gate = DenyOverrides::new().with(owner).with(freeze).with(team);
    let alice = Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
        .groups(["deployers", "eng", "oncall"])
        .build()
        .expect("valid principal");
    let bob = Principal::builder(PrincipalKind::User, "bob", AuthMethod::OIDC)
        .groups(["frozen"])
        .build()
        .expect("valid principal");
    let prod: Resource = "env_stage:checkout/prod".parse().expect("valid resource");

    c.bench_function("core/deny_overrides_3_allow", |b| {
        b.iter(|| gate.check(black_box(&alice), &Action::DEPLOY, &prod))
    });
    c.bench_function("core/deny_overrides_3_deny", |b| {
        b.iter(|| gate.check(black_box(&bob), &Action::DEPLOY, &prod))
    });
}

criterion_group!(benches, parsing, composed_check);
criterion_main!(benches);
