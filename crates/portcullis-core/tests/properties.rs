//! Property tests: parse/display round-trips for the vocabulary, and the laws the
//! combinators promise.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use portcullis_core::{
    Action, AllOf, AnyOf, AuthMethod, Authorizer, Decision, DenyOverrides, Effect, Principal,
    PrincipalKind, Resource, ResourceKind, from_fn,
};
use proptest::prelude::*;

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_.-]{0,63}"
}

/// Names: printable, no whitespace, including non-ASCII and the separators `:` and `/`,
/// without `.` or `..` segments (which the name grammar refuses).
fn name() -> impl Strategy<Value = String> {
    "[!-~é日ß]{1,48}".prop_filter("no `.` or `..` segments", |n| {
        n.split('/')
            .all(|segment| segment != "." && segment != "..")
    })
}

fn resource() -> impl Strategy<Value = Resource> {
    prop_oneof![
        1 => Just(Resource::SYSTEM),
        8 => (ident(), name())
            .prop_filter("system and * go together", |(kind, id)| {
                !kind.eq_ignore_ascii_case("system") && id != "*"
            })
            .prop_map(|(kind, id)| Resource::new(kind.parse().unwrap(), id).unwrap()),
    ]
}

fn principal() -> impl Strategy<Value = Principal> {
    (
        prop_oneof![
            Just(PrincipalKind::User),
            Just(PrincipalKind::Service),
            Just(PrincipalKind::ScriptToken)
        ],
        name(),
        ident(),
        proptest::collection::vec(name(), 0..5),
        proptest::option::of(0u64..=4_102_444_800),
        proptest::collection::btree_map(name(), any::<i64>(), 0..4),
    )
        .prop_map(|(kind, subject, method, groups, expiry, claims)| {
            let mut builder =
                Principal::builder(kind, subject, method.parse().unwrap()).groups(groups);
            if let Some(secs) = expiry {
                builder = builder
                    .expires_at(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
            }
            for (k, v) in claims {
                builder = builder.claim(k, v.into());
            }
            builder.build().unwrap()
        })
}

proptest! {
    #[test]
    fn resource_display_parse_round_trips(r in resource()) {
        let text = r.to_string();
        prop_assert_eq!(text.parse::<Resource>().unwrap(), r.clone());
        let json = serde_json::to_string(&r).unwrap();
        prop_assert_eq!(serde_json::from_str::<Resource>(&json).unwrap(), r.clone());
        let as_string = serde_json::to_string(&text).unwrap();
        prop_assert_eq!(serde_json::from_str::<Resource>(&as_string).unwrap(), r);
    }

    #[test]
    fn any_parsed_resource_round_trips(input in "\\PC{0,40}") {
        if let Ok(r) = input.parse::<Resource>() {
            prop_assert_eq!(r.to_string().parse::<Resource>().unwrap(), r);
        }
    }

    #[test]
    fn identifiers_round_trip_in_canonical_form(raw in ident()) {
        let action: Action = raw.parse().unwrap();
        prop_assert_eq!(action.as_str(), raw.to_ascii_lowercase());
        prop_assert_eq!(action.to_string().parse::<Action>().unwrap(), action);
        let kind: ResourceKind = raw.parse().unwrap();
        prop_assert_eq!(kind.to_string().parse::<ResourceKind>().unwrap(), kind);
        let method: AuthMethod = raw.parse().unwrap();
        prop_assert_eq!(method.to_string().parse::<AuthMethod>().unwrap(), method);
    }

    #[test]
    fn principal_json_round_trips(p in principal()) {
        let json = serde_json::to_string(&p).unwrap();
        prop_assert_eq!(Principal::from_json(&json).unwrap(), p);
    }

    #[test]
    fn principal_json_never_panics(input in "\\PC{0,80}") {
        let _ = Principal::from_json(&input);
    }
}

/// A tree of combinators over fixed-effect leaves.
#[derive(Debug, Clone)]
enum Tree {
    Leaf(Effect),
    All(Vec<Tree>),
    Any(Vec<Tree>),
    DenyOverrides(Vec<Tree>),
}

fn effect() -> impl Strategy<Value = Effect> {
    prop_oneof![
        Just(Effect::Allow),
        Just(Effect::Deny),
        Just(Effect::NotApplicable)
    ]
}

fn tree(with_any: bool) -> impl Strategy<Value = Tree> {
    effect()
        .prop_map(Tree::Leaf)
        .prop_recursive(4, 32, 5, move |inner| {
            let members = proptest::collection::vec(inner, 0..5);
            if with_any {
                prop_oneof![
                    members.clone().prop_map(Tree::All),
                    members.clone().prop_map(Tree::Any),
                    members.prop_map(Tree::DenyOverrides),
                ]
                .boxed()
            } else {
                prop_oneof![
                    members.clone().prop_map(Tree::All),
                    members.prop_map(Tree::DenyOverrides),
                ]
                .boxed()
            }
        })
}

fn build(tree: &Tree) -> Arc<dyn Authorizer> {
    match tree {
        Tree::Leaf(effect) => {
            let effect = *effect;
            Arc::new(from_fn("leaf", move |_| Decision::new(effect, "fixed")))
        }
        Tree::All(members) => Arc::new(members.iter().map(build).collect::<AllOf>()),
        Tree::Any(members) => Arc::new(members.iter().map(build).collect::<AnyOf>()),
        Tree::DenyOverrides(members) => {
            Arc::new(members.iter().map(build).collect::<DenyOverrides>())
        }
    }
}

fn leaves(tree: &Tree) -> Vec<Effect> {
    match tree {
        Tree::Leaf(effect) => vec![*effect],
        Tree::All(m) | Tree::Any(m) | Tree::DenyOverrides(m) => m.iter().flat_map(leaves).collect(),
    }
}

fn judge(authz: &dyn Authorizer) -> Decision {
    let p = Principal::builder(PrincipalKind::User, "p", AuthMethod::OIDC)
        .build()
        .unwrap();
    authz.check(&p, &Action::DEPLOY, &Resource::SYSTEM)
}

fn flat(members: &[Effect]) -> Vec<Arc<dyn Authorizer>> {
    members.iter().map(|e| build(&Tree::Leaf(*e))).collect()
}

proptest! {
    #[test]
    fn deny_overrides_never_allows_when_a_member_denies(members in proptest::collection::vec(effect(), 0..8)) {
        let d = judge(&flat(&members).into_iter().collect::<DenyOverrides>());
        if members.contains(&Effect::Deny) {
            prop_assert_eq!(d.effect(), Effect::Deny);
        } else if members.contains(&Effect::Allow) {
            prop_assert_eq!(d.effect(), Effect::Allow);
        } else {
            prop_assert_eq!(d.effect(), Effect::NotApplicable);
        }
    }

    #[test]
    fn all_of_allows_only_when_every_member_allows(members in proptest::collection::vec(effect(), 0..8)) {
        let d = judge(&flat(&members).into_iter().collect::<AllOf>());
        let all_allow = !members.is_empty() && members.iter().all(|e| *e == Effect::Allow);
        prop_assert_eq!(d.is_allowed(), all_allow);
        if members.contains(&Effect::Deny) {
            prop_assert_eq!(d.effect(), Effect::Deny);
        }
    }

    #[test]
    fn any_of_allows_when_some_member_allows(members in proptest::collection::vec(effect(), 0..8)) {
        let d = judge(&flat(&members).into_iter().collect::<AnyOf>());
        prop_assert_eq!(d.is_allowed(), members.contains(&Effect::Allow));
        if !members.contains(&Effect::Allow) && members.contains(&Effect::Deny) {
            prop_assert_eq!(d.effect(), Effect::Deny);
        }
    }

    /// Nesting all-of and deny-overrides never loses a deny, however deep it sits.
    #[test]
    fn nested_deny_is_never_lost(t in tree(false)) {
        if leaves(&t).contains(&Effect::Deny) {
            prop_assert_eq!(judge(&*build(&t)).effect(), Effect::Deny);
        }
    }

    /// No combinator turns "nobody allowed" into an allow.
    #[test]
    fn no_allow_out_of_nothing(t in tree(true)) {
        if !leaves(&t).contains(&Effect::Allow) {
            prop_assert!(!judge(&*build(&t)).is_allowed());
        }
    }
}
