//! One behavioural suite, run against every store: memory, SQLite (a file, reopened) and a
//! real PostgreSQL (feature `postgres`; `scripts/with-services` starts one and sets
//! `PORTCULLIS_TEST_POSTGRES_URL`; skipped without it). It covers the `ApprovalStore`
//! contract (create, get, one vote per approver, receipts consumed once, lists by state) and
//! the `TotpStore` state (claimed steps only move forward and exactly one of concurrent
//! claims wins; secrets are sealed for one user, pending until confirmed, never overwritten
//! once confirmed).
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use portcullis_approval::{
    ApprovalError, ApprovalRecord, ApprovalRequest, ApprovalStore, Approvers, MemoryApprovalStore,
    RequestState, SealedTotpSecret, TotpAlgorithm, TotpEnrollmentState, TotpError, TotpSecret,
    TotpSecretKey, TotpStore, Vote, VoteDecision, params_hash,
};
use portcullis_core::{Action, AuthMethod, Principal, PrincipalKind};
use serde_json::json;

const T0: u64 = 1_800_000_000;

fn record(id: &str, created: u64) -> ApprovalRecord {
    ApprovalRecord {
        request: ApprovalRequest {
            id: id.into(),
            requester: Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
                .build()
                .unwrap(),
            action: Action::DEPLOY,
            resource: "env_stage:checkout/prod".parse().unwrap(),
            params_hash: params_hash(&json!({"build_id": id})),
            reason: "ship the fix".into(),
            approvers: Approvers::Named(vec!["bob".into(), "carol".into()]),
            required: 2,
            deny_rejects: true,
            approver_action: "approve".parse().unwrap(),
            approver_group: None,
            created_at: UNIX_EPOCH + Duration::from_secs(created),
            expires_at: UNIX_EPOCH + Duration::from_secs(created + 3600),
        },
        votes: Vec::new(),
        state: RequestState::Pending,
        receipt_used: false,
    }
}

fn vote(approver: &str, decision: VoteDecision) -> Vote {
    Vote {
        approver: approver.into(),
        decision,
        factor: "totp".into(),
        at: UNIX_EPOCH + Duration::from_secs(T0 + 60),
    }
}

fn ids(records: &[ApprovalRecord]) -> Vec<&str> {
    records.iter().map(|r| r.request.id.as_str()).collect()
}

/// The `ApprovalStore` contract.
async fn approval_contract(store: Arc<dyn ApprovalStore>) {
    let a = record("apr_a", T0 + 2);
    let b = record("apr_b", T0);
    let c = record("apr_c", T0 + 1);
    for r in [&a, &b, &c] {
        store.create(r).await.unwrap();
    }
    assert!(store.create(&a).await.is_err(), "ids are unique");
    assert_eq!(store.get("apr_a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("apr_missing").await.unwrap(), None);

    // Votes: in order, once per approver, only on a request that exists.
    let bob = vote("bob", VoteDecision::Approve);
    store
        .add_vote("apr_a", &bob, RequestState::Pending)
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_vote("apr_a", &vote("bob", VoteDecision::Deny), RequestState::Rejected)
            .await,
        Err(ApprovalError::AlreadyVoted(who)) if who == "bob"
    ));
    assert!(matches!(
        store
            .add_vote("apr_missing", &bob, RequestState::Pending)
            .await,
        Err(ApprovalError::UnknownRequest(_))
    ));
    let carol = vote("carol", VoteDecision::Approve);
    store
        .add_vote("apr_a", &carol, RequestState::Approved)
        .await
        .unwrap();
    let stored = store.get("apr_a").await.unwrap().unwrap();
    assert_eq!(stored.state, RequestState::Approved);
    assert_eq!(stored.votes, vec![bob.clone(), carol]);
    assert_eq!(stored.request, a.request, "the request is stored as given");

    // Receipts: only of an approved request, once.
    assert!(!store.consume_receipt("apr_b").await.unwrap(), "pending");
    assert!(!store.consume_receipt("apr_missing").await.unwrap());
    assert!(store.consume_receipt("apr_a").await.unwrap());
    assert!(!store.consume_receipt("apr_a").await.unwrap(), "used");
    assert!(store.get("apr_a").await.unwrap().unwrap().receipt_used);

    // Of concurrent redemptions, exactly one wins.
    store.create(&record("apr_d", T0 + 3)).await.unwrap();
    store
        .add_vote("apr_d", &bob, RequestState::Approved)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.consume_receipt("apr_d").await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1, "one receipt redemption");

    // States and lists, oldest first.
    store
        .set_state("apr_b", RequestState::Expired)
        .await
        .unwrap();
    store
        .set_state("apr_missing", RequestState::Expired)
        .await
        .unwrap();
    let listed = |state| {
        let store = store.clone();
        async move { store.list(state).await.unwrap() }
    };
    assert_eq!(ids(&listed(RequestState::Expired).await), ["apr_b"]);
    assert_eq!(ids(&listed(RequestState::Pending).await), ["apr_c"]);
    assert_eq!(
        ids(&listed(RequestState::Approved).await),
        ["apr_a", "apr_d"]
    );
    assert!(listed(RequestState::Rejected).await.is_empty());
    assert_eq!(
        listed(RequestState::Approved)
            .await
            .first()
            .unwrap()
            .votes
            .len(),
        2
    );
}

/// Claims `step` for `user` from `n` tasks at once; how many won.
async fn concurrent_claims(store: &Arc<dyn TotpStore>, user: &str, steps: &[u64]) -> usize {
    let tasks: Vec<_> = steps
        .iter()
        .map(|step| {
            let (store, user, step) = (store.clone(), user.to_owned(), *step);
            tokio::spawn(async move { store.claim_step(&user, step).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    won
}

/// The `TotpStore` contract.
async fn totp_contract(store: Arc<dyn TotpStore>) {
    // Claims only move forward, per user.
    assert!(store.claim_step("bob", 100).await.unwrap());
    assert!(!store.claim_step("bob", 100).await.unwrap(), "same step");
    assert!(!store.claim_step("bob", 99).await.unwrap(), "older step");
    assert!(store.claim_step("bob", 101).await.unwrap());
    assert!(!store.claim_step("bob", 100).await.unwrap());
    assert!(store.claim_step("alice", 100).await.unwrap(), "per user");
    assert!(
        store.claim_step("erin", 0).await.unwrap(),
        "step 0 is a step"
    );
    assert!(!store.claim_step("erin", 0).await.unwrap());
    assert!(store.claim_step("bob", 1 << 40).await.unwrap());

    // Of concurrent claims of one step, exactly one wins — also for a user's first claim.
    assert_eq!(concurrent_claims(&store, "carol", &[500; 16]).await, 1);
    assert_eq!(concurrent_claims(&store, "carol", &[501; 16]).await, 1);
    // Of concurrent claims of different steps, the newest always ends up stored.
    let steps: Vec<u64> = (600..616).collect();
    assert!(concurrent_claims(&store, "carol", &steps).await >= 1);
    assert!(!store.claim_step("carol", 615).await.unwrap());
    assert!(store.claim_step("carol", 616).await.unwrap());

    // Secrets: sealed, bound to their user, pending until confirmed.
    let key = TotpSecretKey::generate().unwrap().0;
    let first = TotpSecret::generate().unwrap();
    let sealed = key.seal("dave", &first).unwrap();
    assert_eq!(store.secret("dave").await.unwrap(), None);
    store.put_pending_secret("dave", &sealed).await.unwrap();
    let stored = store.secret("dave").await.unwrap().unwrap();
    assert_eq!(stored.state, TotpEnrollmentState::Pending);
    assert_eq!(stored.sealed, sealed);
    assert_eq!(
        key.open("dave", &stored.sealed).unwrap().expose(),
        first.expose(),
        "round trip"
    );
    assert!(
        matches!(
            key.open("erin", &stored.sealed),
            Err(ApprovalError::Crypto(_))
        ),
        "another user's name does not open it"
    );
    // A row copied to another user does not open for them either.
    store
        .put_pending_secret("erin", &stored.sealed)
        .await
        .unwrap();
    let copied = store.secret("erin").await.unwrap().unwrap();
    assert!(key.open("erin", &copied.sealed).is_err());
    assert!(store.remove_secret("erin").await.unwrap());

    // A newer pending secret replaces the earlier one, which can then not be confirmed.
    let second = TotpSecret::generate_for(TotpAlgorithm::Sha512).unwrap();
    let resealed = key.seal("dave", &second).unwrap();
    store.put_pending_secret("dave", &resealed).await.unwrap();
    assert!(
        !store.confirm_secret("dave", &sealed).await.unwrap(),
        "stale"
    );
    assert!(!store.confirm_secret("nobody", &sealed).await.unwrap());
    assert!(store.confirm_secret("dave", &resealed).await.unwrap());
    assert!(
        !store.confirm_secret("dave", &resealed).await.unwrap(),
        "once"
    );
    let stored = store.secret("dave").await.unwrap().unwrap();
    assert_eq!(stored.state, TotpEnrollmentState::Confirmed);
    assert_eq!(
        key.open("dave", &stored.sealed).unwrap().expose(),
        second.expose(),
        "64-byte secrets too"
    );

    // A confirmed secret is never replaced by a pending one: removal first.
    let third = key.seal("dave", &TotpSecret::generate().unwrap()).unwrap();
    assert!(matches!(
        store.put_pending_secret("dave", &third).await,
        Err(ApprovalError::Totp(TotpError::AlreadyEnrolled(who))) if who == "dave"
    ));
    assert_eq!(store.secret("dave").await.unwrap(), Some(stored));
    assert!(store.remove_secret("dave").await.unwrap());
    assert!(!store.remove_secret("dave").await.unwrap());
    assert_eq!(store.secret("dave").await.unwrap(), None);
    store.put_pending_secret("dave", &third).await.unwrap();
    assert_eq!(
        store.secret("dave").await.unwrap().unwrap().state,
        TotpEnrollmentState::Pending
    );
    // Garbage stored under a name is refused when opened, not trusted.
    store
        .put_pending_secret("frank", &SealedTotpSecret::from_bytes(vec![1; 60]))
        .await
        .unwrap();
    let garbage = store.secret("frank").await.unwrap().unwrap();
    assert!(key.open("frank", &garbage.sealed).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store() {
    let store = Arc::new(MemoryApprovalStore::new());
    approval_contract(store.clone()).await;
    totp_contract(store).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store() {
    use portcullis_approval::SqliteApprovalStore;

    let dir = common::temp_dir("stores");
    let url = format!("sqlite://{}", dir.join("approvals.db").display());
    let store = Arc::new(SqliteApprovalStore::connect(&url).await.unwrap());
    approval_contract(store.clone()).await;
    totp_contract(store.clone()).await;

    // A secret at rest: only sealed bytes reach the database files.
    let key = TotpSecretKey::generate().unwrap().0;
    let secret = TotpSecret::new(b"plain-secret-bytes-on-disk?".to_vec()).unwrap();
    store
        .put_pending_secret("gina", &key.seal("gina", &secret).unwrap())
        .await
        .unwrap();
    store.pool().close().await;
    drop(store);
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(
        !bytes
            .windows(secret.expose().len())
            .any(|w| w == secret.expose()),
        "the secret is on disk in the clear"
    );

    // Reopened: every request, claim and secret is still there.
    let again = SqliteApprovalStore::connect(&url).await.unwrap();
    assert_eq!(again.list(RequestState::Approved).await.unwrap().len(), 2);
    assert!(!again.claim_step("bob", 101).await.unwrap());
    assert!(!again.claim_step("carol", 616).await.unwrap());
    let stored = again.secret("gina").await.unwrap().unwrap();
    assert_eq!(
        key.open("gina", &stored.sealed).unwrap().expose(),
        secret.expose()
    );
    again.pool().close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use portcullis_approval::{PostgresApprovalStore, TotpConfig, TotpFactor, totp::totp};
    use portcullis_core::ManualClock;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_store() {
        let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        let url = common::fresh_postgres(&admin, "stores").await;
        // Two instances starting at once take turns migrating.
        let (a, b) = tokio::join!(
            PostgresApprovalStore::connect(&url, 4),
            PostgresApprovalStore::connect(&url, 4)
        );
        let (a, b) = (Arc::new(a.unwrap()), b.unwrap());
        approval_contract(a.clone()).await;
        totp_contract(a.clone()).await;
        // The other instance sees the same state.
        assert!(!b.claim_step("bob", 101).await.unwrap());
        assert_eq!(b.list(RequestState::Approved).await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_code_used_on_one_instance_is_refused_on_another() {
        let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        let url = common::fresh_postgres(&admin, "fleet").await;
        let key = TotpSecretKey::generate().unwrap().1;
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
        let instance = || async {
            let store = Arc::new(PostgresApprovalStore::connect(&url, 2).await.unwrap());
            TotpFactor::with_store(
                TotpConfig::default(),
                store,
                TotpSecretKey::from_hex(&key).unwrap(),
            )
            .unwrap()
            .with_clock(clock.clone())
        };
        let (one, two) = (instance().await, instance().await);
        let enrollment = one.begin_enrollment("bob", "Portcullis").await.unwrap();
        let code = |at: u64| totp(enrollment.secret(), &TotpConfig::default(), at);
        two.confirm_enrollment("bob", &code(T0)).await.unwrap();
        let next = code(T0 + 30);
        clock.advance(Duration::from_secs(30));
        one.check("bob", &next).await.unwrap();
        assert!(matches!(
            two.check("bob", &next).await,
            Err(ApprovalError::Totp(TotpError::Replayed))
        ));
    }
}
