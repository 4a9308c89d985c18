//! The configuration file: a full example, the defaults, and bad input.
#![cfg(feature = "toml")]
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use portcullis_acl::{AclConfig, AclError, AclSnapshot, RoleAuthorizer};
use portcullis_core::{Action, AuthMethod, Authorizer, Principal, PrincipalKind, ResourceKind};

const FULL: &str = r#"
roles = [
  { name = "READER", tier = 0 },
  { name = "OPERATOR", tier = 10 },
  { name = "ADMIN", tier = 20 },
]

[requirements.any]
read = "READER"
deploy = "OPERATOR"
manage_roles = "ADMIN"

[requirements.kinds.env_stage]
deploy = "ADMIN"

[hierarchy]
rules = [{ child = "env_stage", parent = "env", separator = "/" }]
edges = [{ child = "group:web", parent = "env:checkout" }]

[bindings]
lines = ["group:platform system:* ADMIN", "group:deployers env:checkout OPERATOR"]
tables = [{ subject = "user:rita", resource = "group:web", role = "READER" }]
"#;

fn user(name: &str, groups: &[&str]) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .groups(groups.iter().copied())
        .build()
        .unwrap()
}

#[test]
fn a_full_file_loads_and_means_what_it_says() {
    let loaded = AclConfig::from_toml(FULL).unwrap().load().unwrap();
    assert_eq!(loaded.bindings.len(), 3);
    assert_eq!(
        loaded
            .policy
            .required_role(&ResourceKind::ENV_STAGE, &Action::DEPLOY)
            .unwrap()
            .name()
            .as_str(),
        "ADMIN"
    );
    let rbac = RoleAuthorizer::fixed(
        AclSnapshot::build(Arc::new(loaded.policy), 1, loaded.bindings).unwrap(),
    );
    let alice = user("alice", &["deployers"]);
    assert!(
        rbac.check(&alice, &Action::DEPLOY, &"env:checkout".parse().unwrap())
            .is_allowed()
    );
    assert!(
        !rbac
            .check(
                &alice,
                &Action::DEPLOY,
                &"env_stage:checkout/prod".parse().unwrap()
            )
            .is_allowed(),
        "stages need ADMIN in this file"
    );
    // The explicit edge: group:web is inside env:checkout, so deployers may deploy it.
    assert!(
        rbac.check(&alice, &Action::DEPLOY, &"group:web".parse().unwrap())
            .is_allowed()
    );
    assert!(
        rbac.check(
            &user("rita", &[]),
            &Action::READ,
            &"group:web".parse().unwrap()
        )
        .is_allowed()
    );
}

#[test]
fn an_empty_file_is_teletraan_with_nothing_granted() {
    let loaded = AclConfig::from_toml("").unwrap().load().unwrap();
    assert!(loaded.bindings.is_empty());
    assert_eq!(loaded.policy.roles().iter().count(), 5);
    let rbac = RoleAuthorizer::fixed(AclSnapshot::empty(Arc::new(loaded.policy)));
    assert!(
        !rbac
            .check(&user("a", &[]), &Action::READ, &"env:x".parse().unwrap())
            .is_allowed()
    );
}

#[test]
fn bad_input_gets_typed_errors() {
    /// Input, the error it must give, and words its message must hold.
    type Case = (&'static str, fn(&AclError) -> bool, &'static str);
    let cases: &[Case] = &[
        (
            r#"bindings = { lines = ["user:a env:x ROOT"] }"#,
            |e| matches!(e, AclError::UnknownRole { .. }),
            "unknown role `ROOT`",
        ),
        (
            r#"bindings = { lines = ["user: env:x READER"] }"#,
            |e| matches!(e, AclError::Vocabulary(_)),
            "must not be empty",
        ),
        (
            // A TOML escape, so the control character reaches the binding parser.
            r#"bindings = { lines = ["user:a e\u0007nv:x READER"] }"#,
            |e| matches!(e, AclError::Vocabulary(_)),
            "resource kind",
        ),
        (
            r#"bindings = { lines = ["user:a env:x READER", "user:a env:x ADMIN"] }"#,
            |e| matches!(e, AclError::DuplicateBinding { .. }),
            "already has a role",
        ),
        (
            r#"roles = [{ name = "VIEWER", tier = 0 }]"#,
            |e| matches!(e, AclError::Config { .. }),
            "[requirements]",
        ),
        (
            r#"roles = [{ name = "A", tier = 0 }, { name = "a", tier = 1 }]
               requirements = { any = { read = "A" } }"#,
            |e| matches!(e, AclError::DuplicateRole { .. }),
            "defined twice",
        ),
        (
            r#"requirements = { any = { read = "SUPREME" } }"#,
            |e| matches!(e, AclError::UnknownRole { .. }),
            "SUPREME",
        ),
        (
            r#"hierarchy = { edges = [{ child = "env:a", parent = "env:b" }, { child = "env:b", parent = "env:a" }] }"#,
            |e| matches!(e, AclError::InvalidHierarchy { .. }),
            "cycle",
        ),
        (
            r#"surprise = 1"#,
            |e| matches!(e, AclError::Config { .. }),
            "unknown field",
        ),
        (
            r#"bindings = { lines = ["user:a env:x"] }"#,
            |e| matches!(e, AclError::InvalidBinding { .. }),
            "SUBJECT RESOURCE ROLE",
        ),
    ];
    for (text, is_expected, needle) in cases {
        let err = AclConfig::from_toml(text)
            .and_then(AclConfig::load)
            .unwrap_err();
        assert!(is_expected(&err), "{text}: got {err:?}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}
