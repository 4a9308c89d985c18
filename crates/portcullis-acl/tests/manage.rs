//! The management rules and what decisions say (the refresher: `tests/refresher.rs`).
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap, index or panic is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use portcullis_acl::{
    Acl, AclError, AclPolicy, MemoryAclStore, PageRequest, RoleName, Roles, Subject, SubjectKind,
};
use portcullis_core::{
    Action, AuthMethod, Authorizer, Effect, ManualClock, Principal, PrincipalKind, Resource,
};

fn user(name: &str, groups: &[&str]) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .groups(groups.iter().copied())
        .build()
        .unwrap()
}

fn r(text: &str) -> Resource {
    text.parse().unwrap()
}

async fn acl_with(lines: &[&str], policy: AclPolicy) -> Acl {
    let bindings = lines.iter().map(|l| l.parse().unwrap());
    let store = MemoryAclStore::with_bindings(bindings).unwrap();
    Acl::open(Arc::new(store), policy).await.unwrap()
}

#[tokio::test]
async fn only_an_admin_of_the_resource_manages_its_roles() {
    let acl = acl_with(
        &[
            "user:ann env:checkout ADMIN",
            "user:ben env:checkout OPERATOR",
            "group:platform system:* ADMIN",
        ],
        AclPolicy::teletraan(),
    )
    .await;
    let (ann, ben, pat) = (
        user("ann", &[]),
        user("ben", &[]),
        user("pat", &["platform"]),
    );

    // An env admin manages the env and its stages, not other envs.
    acl.grant(&ann, "user:cat env:checkout READER".parse().unwrap())
        .await
        .unwrap();
    acl.grant(
        &ann,
        "user:cat env_stage:checkout/prod OPERATOR".parse().unwrap(),
    )
    .await
    .unwrap();
    let err = acl
        .grant(&ann, "user:cat env:search READER".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, AclError::Forbidden { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("manage_roles on env:search needs ADMIN"),
        "{err}"
    );

    // An operator may not manage roles at all.
    let err = acl
        .grant(&ben, "user:dan env:checkout READER".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, AclError::Forbidden { .. }), "{err}");

    // A system admin (through a group) manages everything.
    acl.grant(&pat, "user:dan env:search OPERATOR".parse().unwrap())
        .await
        .unwrap();

    // Duplicates are refused; change is the way to alter a role.
    assert!(matches!(
        acl.grant(&ann, "user:cat env:checkout OPERATOR".parse().unwrap())
            .await,
        Err(AclError::DuplicateBinding { .. })
    ));
    let cat = Subject::user("cat").unwrap();
    let previous = acl
        .change(&ann, &cat, &r("env:checkout"), RoleName::OPERATOR)
        .await
        .unwrap();
    assert_eq!(previous.role, RoleName::READER);
    let removed = acl.revoke(&ann, &cat, &r("env:checkout")).await.unwrap();
    assert_eq!(removed.role, RoleName::OPERATOR);
    assert!(matches!(
        acl.revoke(&ann, &cat, &r("env:checkout")).await,
        Err(AclError::BindingNotFound { .. })
    ));
    assert!(matches!(
        acl.grant(&ann, "user:cat env:checkout ROOT".parse().unwrap())
            .await,
        Err(AclError::UnknownRole { .. })
    ));
}

#[tokio::test]
async fn nobody_grants_a_role_higher_than_their_own() {
    // OWNER sits above ADMIN; ADMINs manage roles but cannot hand out or touch OWNER.
    let roles = Roles::new([
        ("READER", 0),
        ("OPERATOR", 10),
        ("ADMIN", 20),
        ("OWNER", 30),
    ])
    .unwrap();
    let policy = AclPolicy::builder(roles)
        .require(Action::READ, "READER")
        .unwrap()
        .require(Action::MANAGE_ROLES, "ADMIN")
        .unwrap()
        .require(Action::MANAGE_TOKENS, "ADMIN")
        .unwrap()
        .build();
    let acl = acl_with(&["user:ann env:x ADMIN", "user:olga env:x OWNER"], policy).await;
    let (ann, olga) = (user("ann", &[]), user("olga", &[]));
    let err = acl
        .grant(&ann, "user:bob env:x OWNER".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("higher than their own"), "{err}");
    acl.grant(&ann, "user:bob env:x ADMIN".parse().unwrap())
        .await
        .unwrap();
    let olga_subject = Subject::user("olga").unwrap();
    assert!(matches!(
        acl.revoke(&ann, &olga_subject, &r("env:x")).await,
        Err(AclError::Forbidden { .. })
    ));
    assert!(matches!(
        acl.change(&ann, &olga_subject, &r("env:x"), "READER".parse().unwrap())
            .await,
        Err(AclError::Forbidden { .. })
    ));
    acl.grant(&olga, "user:bob env:y OWNER".parse().unwrap())
        .await
        .unwrap_err();
    acl.change(
        &olga,
        &Subject::user("bob").unwrap(),
        &r("env:x"),
        "OWNER".parse().unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn token_bindings_need_manage_tokens() {
    let policy = AclPolicy::builder(Roles::teletraan())
        .require(Action::MANAGE_ROLES, "OPERATOR")
        .unwrap()
        .require(Action::MANAGE_TOKENS, "ADMIN")
        .unwrap()
        .build();
    let acl = acl_with(&["user:ops env:x OPERATOR"], policy).await;
    let ops = user("ops", &[]);
    acl.grant(&ops, "user:new env:x READER".parse().unwrap())
        .await
        .unwrap();
    let err = acl
        .grant(&ops, "token:ci env:x READER".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("manage_tokens"), "{err}");
}

#[tokio::test]
async fn listing_needs_read_and_pages() {
    let acl = acl_with(
        &[
            "user:a env:x READER",
            "user:b env:x READER",
            "group:g env:x OPERATOR",
            "token:t env:x PINGER",
        ],
        AclPolicy::teletraan(),
    )
    .await;
    let outsider = user("zed", &[]);
    assert!(matches!(
        acl.list(&outsider, &r("env:x"), None, &PageRequest::first(10))
            .await,
        Err(AclError::Forbidden { .. })
    ));
    let a = user("a", &[]);
    let users = acl
        .list(
            &a,
            &r("env:x"),
            Some(SubjectKind::User),
            &PageRequest::first(1),
        )
        .await
        .unwrap();
    assert_eq!(users.bindings.len(), 1);
    let more = acl
        .list(
            &a,
            &r("env:x"),
            Some(SubjectKind::User),
            &users.next.unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(more.bindings[0].subject.to_string(), "user:b");
    assert!(more.next.is_none());
    let all = acl
        .list(&a, &r("env:x"), None, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(all.bindings.len(), 4);
}

#[tokio::test]
async fn decisions_explain_themselves() {
    let acl = acl_with(
        &[
            "group:deployers env:checkout OPERATOR",
            "user:rita env:checkout READER",
        ],
        AclPolicy::teletraan(),
    )
    .await;
    let rbac = acl.authorizer();
    let stage = r("env_stage:checkout/prod");

    let d = rbac.check(&user("alice", &["deployers"]), &Action::DEPLOY, &stage);
    assert!(d.is_allowed());
    assert_eq!(
        d.reason(),
        "user:alice is in group:deployers, which holds OPERATOR on env:checkout; deploy on env_stage:checkout/prod needs OPERATOR"
    );

    let d = rbac.check(&user("rita", &[]), &Action::DEPLOY, &stage);
    assert_eq!(d.effect(), Effect::NotApplicable);
    assert!(d.reason().contains("needs OPERATOR"), "{d}");
    assert!(
        d.reason()
            .contains("user:rita holds READER on env:checkout"),
        "{d}"
    );

    let d = rbac.check(&user("nobody", &[]), &Action::READ, &stage);
    assert!(d.reason().contains("holds no role"), "{d}");

    let d = rbac.check(
        &user("alice", &["deployers"]),
        &"launch_missiles".parse().unwrap(),
        &stage,
    );
    assert!(!d.is_allowed());
    assert!(
        d.reason()
            .contains("no role requirement is defined for `launch_missiles`"),
        "{d}"
    );
}

#[tokio::test]
async fn expired_principals_are_denied() {
    let store =
        MemoryAclStore::with_bindings(["user:eve system:* ADMIN".parse().unwrap()]).unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
    let acl = Acl::open_with_clock(Arc::new(store), AclPolicy::teletraan(), clock.clone())
        .await
        .unwrap();
    let eve = Principal::builder(PrincipalKind::User, "eve", AuthMethod::OIDC)
        .expires_at(UNIX_EPOCH + Duration::from_secs(1_060))
        .build()
        .unwrap();
    let rbac = acl.authorizer();
    assert!(
        rbac.check(&eve, &Action::READ, &Resource::SYSTEM)
            .is_allowed()
    );
    clock.advance(Duration::from_secs(60));
    let d = rbac.check(&eve, &Action::READ, &Resource::SYSTEM);
    assert!(d.is_denied());
    assert!(d.reason().contains("expired"), "{d}");
}
