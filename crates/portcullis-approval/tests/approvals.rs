//! Four-eyes rules end to end over the memory and SQLite stores: self-approval is impossible,
//! N-of-M needs N distinct eligible approvers, a deny rejects, factor failures record nothing,
//! receipts are bound, single-use and expiring, and approvals — and spent TOTP codes —
//! survive a restart. PostgreSQL runs the same suite (feature `postgres`;
//! `scripts/with-services` sets `PORTCULLIS_TEST_POSTGRES_URL`; skipped without it).
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use portcullis_approval::{
    ApprovalError, ApprovalRule, ApprovalStore, Approvals, Approvers, Confirmation, FactorOutcome,
    InAppFactor, MemoryApprovalStore, NewRequest, RequestState, SecondFactor, VoteDecision,
};
use portcullis_core::{
    Action, AuthMethod, Authorizer, Decision, ManualClock, Principal, PrincipalKind, Resource,
    from_fn,
};
use proptest::prelude::*;
use serde_json::json;

const T0: u64 = 1_800_000_000;

fn user(name: &str, groups: &[&str]) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .groups(groups.iter().copied())
        .build()
        .unwrap()
}

fn prod() -> Resource {
    "env_stage:checkout/prod".parse().unwrap()
}

fn approve_action() -> Action {
    "approve".parse().unwrap()
}

/// Release managers may approve on any stage; nobody else.
fn authorizer() -> Arc<dyn Authorizer> {
    Arc::new(from_fn("release-managers", |r| {
        if r.principal.in_group("release-managers") {
            Decision::allow("release manager")
        } else {
            Decision::deny("not a release manager")
        }
    }))
}

/// A factor that always answers the same, counting calls.
#[derive(Debug)]
struct Scripted(FactorOutcome, std::sync::atomic::AtomicUsize);

#[async_trait]
impl SecondFactor for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn confirm(&self, _: Confirmation<'_>) -> FactorOutcome {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.clone()
    }
}

fn approvals(store: Arc<dyn ApprovalStore>, required: u32, clock: Arc<ManualClock>) -> Approvals {
    let mut rule = ApprovalRule::new(
        Action::DEPLOY,
        "env_stage".parse().unwrap(),
        approve_action(),
    );
    rule.required = required;
    rule.resource_ids = vec!["checkout/prod".into()];
    Approvals::new(store, authorizer(), &[7u8; 32])
        .unwrap()
        .rule(rule)
        .unwrap()
        .factor(Arc::new(InAppFactor::new([AuthMethod::OIDC])))
        .with_clock(clock)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)))
}

async fn ask(
    a: &Approvals,
    requester: &Principal,
    approvers: Option<Approvers>,
) -> Result<String, ApprovalError> {
    a.request(NewRequest {
        requester,
        action: Action::DEPLOY,
        resource: prod(),
        params: &json!({"build_id": "12345", "description": "foo"}),
        reason: "ship the fix",
        approvers,
    })
    .await
    .map(|r| r.id)
}

async fn suite(store: Arc<dyn ApprovalStore>) {
    let clock = clock();
    let a = approvals(store.clone(), 2, clock.clone());
    let alice = user("alice", &["release-managers"]);
    let bob = user("bob", &["release-managers"]);
    let carol = user("carol", &["release-managers"]);
    let dave = user("dave", &[]);
    let named = |n: &[&str]| {
        Some(Approvers::Named(
            n.iter().map(|s| (*s).to_owned()).collect(),
        ))
    };

    // Creating: no rule, self named, too few named.
    let staging: Resource = "env_stage:checkout/staging".parse().unwrap();
    assert!(matches!(
        a.request(NewRequest {
            requester: &alice,
            action: Action::DEPLOY,
            resource: staging,
            params: &json!({}),
            reason: "x",
            approvers: named(&["bob", "carol"])
        })
        .await,
        Err(ApprovalError::InvalidRequest(_))
    ));
    assert!(matches!(
        ask(&a, &alice, named(&["alice", "bob"])).await,
        Err(ApprovalError::SelfApproval)
    ));
    assert!(matches!(
        ask(&a, &alice, named(&["bob", "bob"])).await,
        Err(ApprovalError::InvalidRequest(_))
    ));

    // Two of bob, carol, dave.
    let id = ask(&a, &alice, named(&["bob", "carol", "dave"]))
        .await
        .unwrap();
    assert!(matches!(
        a.vote(&id, &alice, VoteDecision::Approve, "in_app", None)
            .await,
        Err(ApprovalError::SelfApproval)
    ));
    assert!(matches!(
        a.vote(&id, &dave, VoteDecision::Approve, "in_app", None)
            .await,
        Err(ApprovalError::NotEligible(_))
    ));
    let outsider = user("erin", &["release-managers"]);
    assert!(matches!(
        a.vote(&id, &outsider, VoteDecision::Approve, "in_app", None)
            .await,
        Err(ApprovalError::NotEligible(_))
    ));
    let token = Principal::builder(PrincipalKind::ScriptToken, "bob", AuthMethod::SCRIPT_TOKEN)
        .build()
        .unwrap();
    assert!(matches!(
        a.vote(&id, &token, VoteDecision::Approve, "in_app", None)
            .await,
        Err(ApprovalError::NotEligible(_))
    ));
    assert!(matches!(
        a.vote(&id, &bob, VoteDecision::Approve, "sms", None).await,
        Err(ApprovalError::UnknownFactor(_))
    ));
    assert!(
        matches!(a.receipt(&id).await, Err(ApprovalError::InvalidReceipt(_))),
        "pending"
    );

    let after_bob = a
        .vote(&id, &bob, VoteDecision::Approve, "in_app", None)
        .await
        .unwrap();
    assert_eq!(after_bob.state, RequestState::Pending, "one of two");
    assert!(matches!(
        a.vote(&id, &bob, VoteDecision::Approve, "in_app", None)
            .await,
        Err(ApprovalError::AlreadyVoted(_))
    ));
    let done = a
        .vote(&id, &carol, VoteDecision::Approve, "in_app", None)
        .await
        .unwrap();
    assert_eq!(done.state, RequestState::Approved);
    assert_eq!(done.votes.len(), 2);
    assert!(done.votes.iter().all(|v| v.factor == "in_app"));
    assert!(matches!(
        a.vote(&id, &dave, VoteDecision::Deny, "in_app", None).await,
        Err(ApprovalError::NotPending("approved"))
    ));

    // The receipt: exact request only, once, before it expires.
    let receipt = a.receipt(&id).await.unwrap();
    let params = json!({"description": "foo", "build_id": "12345"}); // key order does not matter
    assert!(matches!(
        a.redeem(
            &receipt,
            &Action::DEPLOY,
            &prod(),
            &json!({"build_id": "99999", "description": "foo"})
        )
        .await,
        Err(ApprovalError::InvalidReceipt(_))
    ));
    assert!(matches!(
        a.redeem(
            &receipt,
            &Action::DEPLOY,
            &"env_stage:payments/prod".parse().unwrap(),
            &params
        )
        .await,
        Err(ApprovalError::InvalidReceipt(_))
    ));
    let mut forged = receipt.clone();
    forged.resource = "env_stage:payments/prod".parse().unwrap();
    assert!(matches!(
        a.redeem(&forged, &Action::DEPLOY, &forged.resource.clone(), &params)
            .await,
        Err(ApprovalError::InvalidReceipt(_))
    ));
    a.redeem(&receipt, &Action::DEPLOY, &prod(), &params)
        .await
        .unwrap();
    assert!(matches!(
        a.redeem(&receipt, &Action::DEPLOY, &prod(), &params).await,
        Err(ApprovalError::ReceiptUsed)
    ));
    assert!(matches!(
        a.receipt(&id).await,
        Err(ApprovalError::ReceiptUsed)
    ));

    // A deny rejects.
    let id2 = ask(&a, &alice, named(&["bob", "carol"])).await.unwrap();
    let rejected = a
        .vote(&id2, &bob, VoteDecision::Deny, "in_app", None)
        .await
        .unwrap();
    assert_eq!(rejected.state, RequestState::Rejected);

    // Expiry: after 30 minutes nothing counts, and a receipt issued earlier expires too.
    let id3 = ask(&a, &bob, named(&["alice", "carol"])).await.unwrap();
    clock.advance(Duration::from_secs(30 * 60));
    assert!(matches!(
        a.vote(&id3, &alice, VoteDecision::Approve, "in_app", None)
            .await,
        Err(ApprovalError::NotPending("expired"))
    ));

    // Group approvers and a restart: a second engine on the same store continues.
    let group_rule_engine = {
        let mut rule = ApprovalRule::new(
            Action::DEPLOY,
            "env_stage".parse().unwrap(),
            approve_action(),
        );
        rule.approver_group = Some("release-managers".into());
        Approvals::new(store.clone(), authorizer(), &[7u8; 32])
            .unwrap()
            .rule(rule)
            .unwrap()
            .factor(Arc::new(InAppFactor::new([AuthMethod::OIDC])))
            .with_clock(clock.clone())
    };
    let id4 = ask(&group_rule_engine, &carol, None).await.unwrap();
    assert!(matches!(
        group_rule_engine
            .vote(&id4, &carol, VoteDecision::Approve, "in_app", None)
            .await,
        Err(ApprovalError::SelfApproval)
    ));
    let restarted = approvals(store.clone(), 1, clock.clone());
    assert_eq!(restarted.pending().await.unwrap().len(), 1);
    let approved = group_rule_engine
        .vote(&id4, &alice, VoteDecision::Approve, "in_app", None)
        .await
        .unwrap();
    assert_eq!(approved.state, RequestState::Approved);
    let receipt = restarted.receipt(&id4).await.unwrap();
    clock.advance(Duration::from_secs(601));
    assert!(matches!(
        restarted
            .redeem(
                &receipt,
                &Action::DEPLOY,
                &prod(),
                &json!({"build_id": "12345", "description": "foo"})
            )
            .await,
        Err(ApprovalError::InvalidReceipt(_))
    ));
}

#[tokio::test]
async fn memory_store() {
    suite(Arc::new(MemoryApprovalStore::new())).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store() {
    let dir = std::env::temp_dir().join(format!("portcullis-approval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("approvals.db").display());
    suite(Arc::new(
        portcullis_approval::SqliteApprovalStore::connect(&url)
            .await
            .unwrap(),
    ))
    .await;
    // Reopening sees everything.
    let again = portcullis_approval::SqliteApprovalStore::connect(&url)
        .await
        .unwrap();
    assert_eq!(again.list(RequestState::Rejected).await.unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let url = common::fresh_postgres(&admin, "approvals").await;
    let store = portcullis_approval::PostgresApprovalStore::connect(&url, 4)
        .await
        .unwrap();
    suite(Arc::new(store)).await;
    let again = portcullis_approval::PostgresApprovalStore::connect(&url, 1)
        .await
        .unwrap();
    assert_eq!(again.list(RequestState::Rejected).await.unwrap().len(), 1);
}

/// The outside finding, end to end: Bob approves request A with a TOTP code; the service
/// restarts; the same code must not approve request B.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_totp_code_approves_one_request_even_across_a_restart() {
    use portcullis_approval::totp::totp;
    use portcullis_approval::{SqliteApprovalStore, TotpConfig, TotpFactor, TotpSecretKey};

    let dir = common::temp_dir("totp-restart");
    let url = format!("sqlite://{}", dir.join("approvals.db").display());
    let (_, key) = TotpSecretKey::generate().unwrap();
    let clock = clock();
    let start = || async {
        let store = Arc::new(SqliteApprovalStore::connect(&url).await.unwrap());
        let factor = TotpFactor::with_store(
            TotpConfig::default(),
            store.clone(),
            TotpSecretKey::from_hex(&key).unwrap(),
        )
        .unwrap()
        .with_clock(clock.clone());
        let factor = Arc::new(factor);
        let a = approvals(store.clone(), 1, clock.clone()).factor(factor.clone());
        (store, factor, a)
    };
    let (alice, bob) = (
        user("alice", &["release-managers"]),
        user("bob", &["release-managers"]),
    );
    let named = || Some(Approvers::Named(vec!["bob".into()]));

    let (store, factor, a) = start().await;
    let enrollment = factor.begin_enrollment("bob", "Portcullis").await.unwrap();
    let secret = enrollment.secret().clone();
    let config = TotpConfig::default();
    factor
        .confirm_enrollment("bob", &totp(&secret, &config, T0 - 30))
        .await
        .unwrap();
    let code = totp(&secret, &config, T0);
    let first = ask(&a, &alice, named()).await.unwrap();
    let approved = a
        .vote(&first, &bob, VoteDecision::Approve, "totp", Some(&code))
        .await
        .unwrap();
    assert_eq!(approved.state, RequestState::Approved);
    let second = ask(&a, &alice, named()).await.unwrap();
    drop((factor, a));
    store.pool().close().await;
    drop(store);

    let (store, _factor, a) = start().await;
    assert!(matches!(
        a.vote(&second, &bob, VoteDecision::Approve, "totp", Some(&code))
            .await,
        Err(ApprovalError::FactorFailed { .. })
    ));
    let record = a.status(&second).await.unwrap();
    assert_eq!(record.state, RequestState::Pending);
    assert!(record.votes.is_empty(), "nothing was recorded");
    clock.advance(Duration::from_secs(30));
    let next = totp(&secret, &config, T0 + 30);
    let approved = a
        .vote(&second, &bob, VoteDecision::Approve, "totp", Some(&next))
        .await
        .unwrap();
    assert_eq!(approved.state, RequestState::Approved);
    store.pool().close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn factor_failures_record_nothing_and_factor_denials_count_as_denies() {
    for (outcome, expected) in [
        (FactorOutcome::Timeout, None),
        (FactorOutcome::Error("network".into()), None),
        (FactorOutcome::Deny, Some(RequestState::Rejected)),
        (FactorOutcome::Allow, Some(RequestState::Approved)),
    ] {
        let store = Arc::new(MemoryApprovalStore::new());
        let factor = Arc::new(Scripted(outcome.clone(), Default::default()));
        let a = approvals(store, 1, clock()).factor(factor.clone());
        let id = ask(
            &a,
            &user("alice", &[]),
            Some(Approvers::Named(vec!["bob".into()])),
        )
        .await
        .unwrap();
        let result = a
            .vote(
                &id,
                &user("bob", &["release-managers"]),
                VoteDecision::Approve,
                "scripted",
                None,
            )
            .await;
        match expected {
            None => {
                assert!(
                    matches!(result, Err(ApprovalError::FactorFailed { .. })),
                    "{outcome:?}"
                );
                let status = a.status(&id).await.unwrap();
                assert!(status.votes.is_empty());
                assert_eq!(status.state, RequestState::Pending);
            }
            Some(state) => assert_eq!(result.unwrap().state, state),
        }
        assert_eq!(factor.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

/// A factor whose store cannot answer refuses the vote as a store error (a service answers
/// 503), and records nothing.
#[tokio::test]
async fn an_unavailable_factor_refuses_the_vote_as_a_store_error() {
    let store = Arc::new(MemoryApprovalStore::new());
    let factor = Arc::new(Scripted(
        FactorOutcome::Unavailable("database down".into()),
        Default::default(),
    ));
    let a = approvals(store, 1, clock()).factor(factor);
    let id = ask(
        &a,
        &user("alice", &[]),
        Some(Approvers::Named(vec!["bob".into()])),
    )
    .await
    .unwrap();
    let result = a
        .vote(
            &id,
            &user("bob", &["release-managers"]),
            VoteDecision::Approve,
            "scripted",
            None,
        )
        .await;
    assert!(matches!(result, Err(ApprovalError::Store(_))), "{result:?}");
    let status = a.status(&id).await.unwrap();
    assert!(status.votes.is_empty());
    assert_eq!(status.state, RequestState::Pending);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever votes arrive in whatever order, the request is approved only with
    /// `required` distinct approvers other than the requester, and the requester's own votes
    /// are always refused.
    #[test]
    fn no_vote_sequence_lets_the_requester_approve(
        required in 1u32..4,
        votes in prop::collection::vec((0usize..5, any::<bool>()), 0..12),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let names = ["req", "a1", "a2", "a3", "a4"];
            let a = approvals(Arc::new(MemoryApprovalStore::new()), required, clock());
            let requester = user("req", &["release-managers"]);
            let id = ask(&a, &requester, Some(Approvers::Group("release-managers".into()))).await;
            // Group approvers need the rule to name a group or none; this rule names none.
            let id = match id { Ok(id) => id, Err(_) => ask(&a, &requester, Some(Approvers::Named(names[1..].iter().map(|s| (*s).to_owned()).collect()))).await.unwrap() };
            let mut approvers = std::collections::BTreeSet::new();
            let mut denied = false;
            for (who, approve) in votes {
                let voter = user(names[who], &["release-managers"]);
                let decision = if approve { VoteDecision::Approve } else { VoteDecision::Deny };
                let result = a.vote(&id, &voter, decision, "in_app", None).await;
                if who == 0 {
                    prop_assert!(matches!(result, Err(ApprovalError::SelfApproval) | Err(ApprovalError::NotPending(_))));
                    continue;
                }
                if let Ok(record) = result {
                    if approve { approvers.insert(who); } else { denied = true; }
                    let expected = if denied { RequestState::Rejected }
                        else if approvers.len() >= required as usize { RequestState::Approved }
                        else { RequestState::Pending };
                    prop_assert_eq!(record.state, expected);
                    prop_assert!(record.votes.iter().all(|v| v.approver != "req"));
                }
            }
            Ok(())
        })?;
    }

    /// A receipt never redeems for any other action, resource or parameters.
    #[test]
    fn a_receipt_is_bound_to_its_request(build in "[0-9]{1,6}", other in "[0-9]{1,6}", stage in "[a-z]{1,8}") {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let a = approvals(Arc::new(MemoryApprovalStore::new()), 1, clock());
            let r = a.request(NewRequest {
                requester: &user("alice", &[]), action: Action::DEPLOY, resource: prod(),
                params: &json!({"build_id": build}), reason: "r", approvers: Some(Approvers::Named(vec!["bob".into()])),
            }).await.unwrap();
            a.vote(&r.id, &user("bob", &["release-managers"]), VoteDecision::Approve, "in_app", None).await.unwrap();
            let receipt = a.receipt(&r.id).await.unwrap();
            let same = json!({"build_id": build});
            let different = json!({"build_id": other});
            if other != build {
                prop_assert!(a.redeem(&receipt, &Action::DEPLOY, &prod(), &different).await.is_err());
            }
            let elsewhere: Resource = format!("env_stage:{stage}/prod").parse().unwrap();
            if elsewhere != prod() {
                prop_assert!(a.redeem(&receipt, &Action::DEPLOY, &elsewhere, &same).await.is_err());
            }
            prop_assert!(a.redeem(&receipt, &Action::READ, &prod(), &same).await.is_err());
            prop_assert!(a.redeem(&receipt, &Action::DEPLOY, &prod(), &same).await.is_ok());
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn two_instances_voting_at_once_still_reach_the_right_state() {
    // Each instance decides votes one at a time, but two instances on one store can each see
    // one vote fewer; the stored votes are re-decided on the next read.
    let store = Arc::new(MemoryApprovalStore::new());
    let clock = clock();
    let a = approvals(store.clone(), 2, clock.clone());
    let id = ask(
        &a,
        &user("alice", &[]),
        Some(Approvers::Named(vec!["bob".into(), "carol".into()])),
    )
    .await
    .unwrap();
    let vote = |who: &str| portcullis_approval::Vote {
        approver: who.into(),
        decision: VoteDecision::Approve,
        factor: "in_app".into(),
        at: UNIX_EPOCH + Duration::from_secs(T0),
    };
    // Simulate the race: both writes record "pending".
    store
        .add_vote(&id, &vote("bob"), RequestState::Pending)
        .await
        .unwrap();
    store
        .add_vote(&id, &vote("carol"), RequestState::Pending)
        .await
        .unwrap();
    assert_eq!(a.status(&id).await.unwrap().state, RequestState::Approved);
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().state,
        RequestState::Approved
    );
}

#[test]
fn unbounded_waits_are_configuration_errors() {
    let base = || {
        Approvals::new(
            Arc::new(MemoryApprovalStore::new()),
            authorizer(),
            &[7u8; 32],
        )
        .unwrap()
    };
    let mut rule = ApprovalRule::new(
        Action::DEPLOY,
        "env_stage".parse().unwrap(),
        approve_action(),
    );
    rule.timeout = Duration::MAX;
    assert!(matches!(
        base().rule(rule.clone()),
        Err(ApprovalError::Config(_))
    ));
    rule.timeout = Duration::from_secs(60);
    rule.required = 0;
    assert!(matches!(base().rule(rule), Err(ApprovalError::Config(_))));
    assert!(base().with_receipt_ttl(Duration::MAX).is_err());
    assert!(base().with_receipt_ttl(Duration::ZERO).is_err());
    assert!(
        Approvals::new(
            Arc::new(MemoryApprovalStore::new()),
            authorizer(),
            &[7u8; 31]
        )
        .is_err()
    );
}

/// The outside finding: whoever held a script token approved the token's own deploy (the
/// self-approval check compared names only). The token's owner now counts as its requester.
#[tokio::test]
async fn a_tokens_owner_cannot_approve_what_the_token_asked_for() {
    let a = approvals(Arc::new(MemoryApprovalStore::new()), 1, clock());
    let bobs_bot = Principal::builder(PrincipalKind::ScriptToken, "ci", AuthMethod::SCRIPT_TOKEN)
        .claim("owner", json!("bob"))
        .build()
        .unwrap();
    let bob = user("bob", &["release-managers"]);
    let carol = user("carol", &["release-managers"]);
    let named = |n: &str| Some(Approvers::Named(vec![n.to_owned()]));
    assert!(matches!(
        ask(&a, &bobs_bot, named("bob")).await,
        Err(ApprovalError::SelfApproval)
    ));
    // Named through the group instead: bob's vote is still refused.
    let id = ask(
        &a,
        &bobs_bot,
        Some(Approvers::Group("release-managers".into())),
    )
    .await
    .unwrap();
    assert!(matches!(
        a.vote(&id, &bob, VoteDecision::Approve, "in_app", None)
            .await,
        Err(ApprovalError::SelfApproval)
    ));
    let record = a
        .vote(&id, &carol, VoteDecision::Approve, "in_app", None)
        .await
        .unwrap();
    assert_eq!(record.state, RequestState::Approved);
}

/// The outside finding: `approver_group` on a rule did nothing once the requester named
/// approvers; anyone named (and allowed the approver action) could approve.
#[tokio::test]
async fn a_rules_approver_group_binds_named_approvers_too() {
    let mut rule = ApprovalRule::new(
        Action::DEPLOY,
        "env_stage".parse().unwrap(),
        approve_action(),
    );
    rule.approver_group = Some("release-managers".into());
    let everyone = Arc::new(from_fn("everyone", |_| Decision::allow("open")));
    let a = Approvals::new(Arc::new(MemoryApprovalStore::new()), everyone, &[7u8; 32])
        .unwrap()
        .rule(rule)
        .unwrap()
        .factor(Arc::new(InAppFactor::new([AuthMethod::OIDC])));
    let alice = user("alice", &[]);
    let (dave, carol) = (user("dave", &["ops"]), user("carol", &["release-managers"]));
    let named = Some(Approvers::Named(vec!["dave".into(), "carol".into()]));
    let id = ask(&a, &alice, named).await.unwrap();
    assert!(matches!(
        a.vote(&id, &dave, VoteDecision::Approve, "in_app", None)
            .await,
        Err(ApprovalError::NotEligible(_))
    ));
    let record = a
        .vote(&id, &carol, VoteDecision::Approve, "in_app", None)
        .await
        .unwrap();
    assert_eq!(record.state, RequestState::Approved);
}
