//! A first look at Portcullis: compose a small deploy policy from authorizers and judge a few
//! requests, or one of your own.
//!
//! ```sh
//! cargo run --example quickstart
//! cargo run --example quickstart -- '{"subject":"dave","kind":"user","groups":["deployers"],"auth_method":"oidc"}' deploy env_stage:checkout/prod
//! ```
//!
//! The policy: members of `deployers` may deploy anywhere; `readers` may read; production
//! stages (ids ending in `/prod`) are frozen for everyone who is not in `release-managers`.
//! The freeze is a veto: `DenyOverrides` lets no allow beat it.
#![expect(
    clippy::print_stdout,
    reason = "a command-line example prints its results"
)]

use std::process::ExitCode;

use portcullis::{
    AccessRequest, Action, AuthMethod, Authorizer, Decision, DenyOverrides, Principal,
    PrincipalKind, Resource, from_fn,
};

fn policy() -> DenyOverrides {
    let deployers = from_fn("deployers-team", |r: &AccessRequest<'_>| {
        if r.action == &Action::DEPLOY && r.principal.in_group("deployers") {
            Decision::allow("deployers may deploy")
        } else {
            Decision::not_applicable("not a deploy by a deployer")
        }
    });
    let readers = from_fn("readers-team", |r: &AccessRequest<'_>| {
        if r.action == &Action::READ
            && (r.principal.in_group("readers") || r.principal.in_group("deployers"))
        {
            Decision::allow("readers and deployers may read")
        } else {
            Decision::not_applicable("not a read by a reader")
        }
    });
    let freeze = from_fn("prod-freeze", |r: &AccessRequest<'_>| {
        if r.action != &Action::READ
            && r.resource.id().ends_with("/prod")
            && !r.principal.in_group("release-managers")
        {
            Decision::deny("production is frozen; ask a release manager")
        } else {
            Decision::not_applicable("freeze does not apply")
        }
    });
    DenyOverrides::new()
        .with(deployers)
        .with(readers)
        .with(freeze)
        .named("quickstart-policy")
}

fn user(name: &str, groups: &[&str]) -> Result<Principal, portcullis::Error> {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .groups(groups.iter().copied())
        .build()
}

fn samples() -> Result<Vec<(Principal, Action, Resource)>, portcullis::Error> {
    let alice = user("alice", &["deployers"])?;
    let rita = user("rita", &["deployers", "release-managers"])?;
    let bob = user("bob", &["readers"])?;
    let staging: Resource = "env_stage:checkout/staging".parse()?;
    let prod: Resource = "env_stage:checkout/prod".parse()?;
    Ok(vec![
        (alice.clone(), Action::DEPLOY, staging.clone()),
        (alice.clone(), Action::DEPLOY, prod.clone()),
        (rita, Action::DEPLOY, prod.clone()),
        (bob.clone(), Action::READ, prod),
        (bob, Action::DEPLOY, staging),
        (alice, Action::MANAGE_ROLES, Resource::SYSTEM),
    ])
}

fn judge(policy: &dyn Authorizer, principal: &Principal, action: &Action, resource: &Resource) {
    let decision = policy.check(principal, action, resource);
    let verdict = if decision.is_allowed() {
        "ALLOW"
    } else {
        "DENY "
    };
    println!("{verdict} {principal} {action} {resource}\n      {decision}");
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let policy = policy();
    match args {
        [] => {
            for (principal, action, resource) in samples()? {
                judge(&policy, &principal, &action, &resource);
            }
            Ok(())
        }
        [principal, action, resource] => {
            let principal = Principal::from_json(principal)?;
            judge(&policy, &principal, &action.parse()?, &resource.parse()?);
            Ok(())
        }
        _ => Err("usage: quickstart [PRINCIPAL_JSON ACTION KIND:ID]".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
