//! Property tests of the RBAC laws, over random bindings in a small universe, including
//! equivalence with a naive reference implementation.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use portcullis_acl::{AclPolicy, AclSnapshot, RoleAuthorizer, RoleBinding, RoleName, Subject};
use portcullis_core::{Action, AuthMethod, Authorizer, Principal, PrincipalKind, Resource};
use proptest::prelude::*;

const USERS: &[&str] = &["ann", "ben", "cat"];
const GROUPS: &[&str] = &["dev", "ops", "sec"];
const TOKENS: &[&str] = &["ci"];
const RESOURCES: &[&str] = &[
    "system:*",
    "env:a",
    "env:b",
    "env_stage:a/prod",
    "env_stage:a/dev",
    "env_stage:b/prod",
    "build:a-1",
];
const ROLES: &[&str] = &["READER", "PINGER", "PUBLISHER", "OPERATOR", "ADMIN"];
const ACTIONS: &[&str] = &[
    "read",
    "ping",
    "publish_build",
    "deploy",
    "manage_roles",
    "manage_tokens",
    "unknown_action",
];

fn subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        prop::sample::select(USERS).prop_map(|n| Subject::user(n).unwrap()),
        prop::sample::select(GROUPS).prop_map(|n| Subject::group(n).unwrap()),
        prop::sample::select(TOKENS).prop_map(|n| Subject::token(n).unwrap()),
    ]
}

fn binding() -> impl Strategy<Value = RoleBinding> {
    (
        subject(),
        prop::sample::select(RESOURCES),
        prop::sample::select(ROLES),
    )
        .prop_map(|(s, r, role)| RoleBinding::new(s, r.parse().unwrap(), role.parse().unwrap()))
}

/// A set of bindings with at most one per (subject, resource).
fn bindings() -> impl Strategy<Value = Vec<RoleBinding>> {
    prop::collection::vec(binding(), 0..24).prop_map(|all| {
        let mut unique = BTreeMap::new();
        for b in all {
            unique.insert((b.subject.clone(), b.resource.clone()), b);
        }
        unique.into_values().collect()
    })
}

fn principal() -> impl Strategy<Value = Principal> {
    prop_oneof![
        (
            prop::sample::select(USERS),
            prop::sample::subsequence(GROUPS, 0..=GROUPS.len())
        )
            .prop_map(|(u, groups)| {
                Principal::builder(PrincipalKind::User, u, AuthMethod::OIDC)
                    .groups(groups)
                    .build()
                    .unwrap()
            }),
        prop::sample::select(TOKENS).prop_map(|t| {
            Principal::builder(PrincipalKind::ScriptToken, t, AuthMethod::SCRIPT_TOKEN)
                .build()
                .unwrap()
        }),
    ]
}

fn rbac(bindings: &[RoleBinding]) -> RoleAuthorizer {
    let snapshot =
        AclSnapshot::build(Arc::new(AclPolicy::teletraan()), 1, bindings.to_vec()).unwrap();
    RoleAuthorizer::fixed(snapshot)
}

fn allowed(authz: &RoleAuthorizer, p: &Principal, action: &str, resource: &str) -> bool {
    authz
        .check(
            p,
            &action.parse::<Action>().unwrap(),
            &resource.parse().unwrap(),
        )
        .is_allowed()
}

/// Every (principal-independent) question in the universe.
fn questions() -> impl Iterator<Item = (&'static str, &'static str)> {
    ACTIONS
        .iter()
        .flat_map(|a| RESOURCES.iter().map(move |r| (*a, *r)))
}

fn tier(role: &str) -> u32 {
    match role {
        "READER" => 0,
        "PINGER" | "PUBLISHER" => 1,
        "OPERATOR" => 10,
        _ => 20,
    }
}

/// The reference: Teletraan's rules written as plainly as possible.
fn reference(bindings: &[RoleBinding], p: &Principal, action: &str, resource: &str) -> bool {
    let needed = match action {
        "read" => "READER",
        "ping" => "PINGER",
        "publish_build" => "PUBLISHER",
        "deploy" => "OPERATOR",
        "manage_roles" | "manage_tokens" => "ADMIN",
        _ => return false,
    };
    let mut chain = vec![resource.to_owned()];
    if let Some(rest) = resource.strip_prefix("env_stage:") {
        let (env, _) = rest.rsplit_once('/').unwrap();
        chain.push(format!("env:{env}"));
    }
    chain.push("system:*".to_owned());
    bindings.iter().any(|b| {
        let holds = match b.subject.kind() {
            portcullis_acl::SubjectKind::User => {
                p.kind() == PrincipalKind::User && p.subject() == b.subject.name()
            }
            portcullis_acl::SubjectKind::Token => {
                p.kind() == PrincipalKind::ScriptToken && p.subject() == b.subject.name()
            }
            portcullis_acl::SubjectKind::Group => p.in_group(b.subject.name()),
            // A kind this model does not know holds nothing here.
            _ => false,
        };
        let role = b.role.as_str();
        holds
            && chain.contains(&b.resource.to_string())
            && (role == needed || tier(role) > tier(needed))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn agrees_with_the_reference(bs in bindings(), p in principal()) {
        let authz = rbac(&bs);
        for (action, resource) in questions() {
            prop_assert_eq!(
                allowed(&authz, &p, action, resource),
                reference(&bs, &p, action, resource),
                "{} {} {} with {:?}", p, action, resource, bs
            );
        }
    }

    #[test]
    fn adding_a_binding_never_removes_access(bs in bindings(), extra in binding(), p in principal()) {
        let before = rbac(&bs);
        let mut more = bs.clone();
        if !more.iter().any(|b| b.subject == extra.subject && b.resource == extra.resource) {
            more.push(extra);
        }
        let after = rbac(&more);
        for (action, resource) in questions() {
            if allowed(&before, &p, action, resource) {
                prop_assert!(allowed(&after, &p, action, resource));
            }
        }
    }

    #[test]
    fn removing_a_binding_never_adds_access(bs in bindings(), index in any::<prop::sample::Index>(), p in principal()) {
        prop_assume!(!bs.is_empty());
        let before = rbac(&bs);
        let mut fewer = bs.clone();
        fewer.remove(index.index(bs.len()));
        let after = rbac(&fewer);
        for (action, resource) in questions() {
            if allowed(&after, &p, action, resource) {
                prop_assert!(allowed(&before, &p, action, resource));
            }
        }
    }

    #[test]
    fn a_role_never_satisfies_a_strictly_higher_requirement(
        held in prop::sample::select(ROLES),
        resource in prop::sample::select(RESOURCES),
    ) {
        let ann = Principal::builder(PrincipalKind::User, "ann", AuthMethod::OIDC).build().unwrap();
        let authz = rbac(&[RoleBinding::new(
            Subject::user("ann").unwrap(), "system:*".parse().unwrap(), held.parse().unwrap(),
        )]);
        for (action, needed) in [("read", "READER"), ("ping", "PINGER"), ("publish_build", "PUBLISHER"), ("deploy", "OPERATOR"), ("manage_roles", "ADMIN")] {
            let ok = allowed(&authz, &ann, action, resource);
            if tier(needed) > tier(held) {
                prop_assert!(!ok, "{held} must not satisfy {needed}");
            }
            if needed != held && tier(needed) == tier(held) {
                prop_assert!(!ok, "{held} and {needed} are equal tiers that do not satisfy each other");
            }
            if needed == held || tier(held) > tier(needed) {
                prop_assert!(ok, "{held} must satisfy {needed}");
            }
        }
    }

    #[test]
    fn a_group_grant_reaches_every_member_and_no_one_else(
        group in prop::sample::select(GROUPS),
        resource in prop::sample::select(RESOURCES),
        p in principal(),
    ) {
        let authz = rbac(&[RoleBinding::new(
            Subject::group(group).unwrap(), resource.parse().unwrap(), RoleName::ADMIN,
        )]);
        prop_assert_eq!(allowed(&authz, &p, "manage_roles", resource), p.in_group(group));
    }

    #[test]
    fn system_grants_reach_every_resource(p in principal(), role in prop::sample::select(ROLES)) {
        let subject = Subject::of_principal(&p).unwrap();
        let authz = rbac(&[RoleBinding::new(subject, Resource::SYSTEM, role.parse().unwrap())]);
        for resource in RESOURCES {
            prop_assert!(allowed(&authz, &p, "read", resource));
            prop_assert_eq!(allowed(&authz, &p, "deploy", resource), tier(role) >= 10);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The reverse queries agree with the check: a principal may do an action on a resource
    /// exactly when `holders_of` lists it (or one of its groups), and exactly when one of its
    /// `permissions_of` is on the resource's chain and lists the action.
    #[test]
    fn reverse_queries_agree_with_the_check(bs in bindings(), p in principal()) {
        let authz = rbac(&bs);
        let snapshot = authz.snapshot();
        let mine: Vec<Subject> = Subject::of_principal(&p)
            .into_iter()
            .chain(p.groups().map(|g| Subject::group(g).unwrap()))
            .collect();
        let permissions = snapshot.permissions_of(&p);
        for (action, resource) in questions() {
            let action_id: Action = action.parse().unwrap();
            let resource_id: Resource = resource.parse().unwrap();
            let allowed = allowed(&authz, &p, action, resource);
            let holders = snapshot.holders_of(&action_id, &resource_id);
            prop_assert_eq!(
                allowed,
                holders.iter().any(|h| mine.contains(&h.binding.subject)),
                "holders_of: {} {} {} with {:?}", p, action, resource, bs
            );
            let chain = snapshot.policy().hierarchy().ancestors(&resource_id);
            // A permission lists the actions of its own resource's kind; the check uses the
            // kind asked about, the same in Teletraan's policy (one table for every kind).
            prop_assert_eq!(
                allowed,
                permissions.iter().any(|perm| chain.contains(&perm.binding.resource)
                    && perm.actions.contains(&action_id)),
                "permissions_of: {} {} {} with {:?}", p, action, resource, bs
            );
        }
    }
}
