//! The TOTP wrong-code limit for several instances of a service on one PostgreSQL
//! (`PostgresTotpAttempts`; `scripts/with-services` sets `PORTCULLIS_TEST_POSTGRES_URL`):
//! wrong codes sent to two instances add up to one limit, concurrent codes cannot slip past
//! it, and a store that cannot answer refuses codes.
#![cfg(feature = "postgres")]
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use portcullis_approval::totp::totp;
use portcullis_approval::{
    ApprovalError, Confirmation, FactorOutcome, PostgresApprovalStore, PostgresTotpAttempts,
    Prompt, SecondFactor, TotpConfig, TotpError, TotpFactor, TotpSecret, TotpSecretKey,
};
use portcullis_core::{AuthMethod, ManualClock, Principal, PrincipalKind};

const T0: u64 = 1_800_000_000;

fn secret() -> TotpSecret {
    TotpSecret::new(b"12345678901234567890".to_vec()).unwrap()
}

/// A code matching none of the steps the skew window accepts at `at`.
fn wrong_code(at: u64) -> String {
    let config = TotpConfig::default();
    let valid: Vec<String> = [at - 30, at, at + 30]
        .iter()
        .map(|t| totp(&secret(), &config, *t))
        .collect();
    (0..10u32)
        .map(|d| d.to_string().repeat(6))
        .find(|code| !valid.contains(code))
        .unwrap()
}

/// One "instance": its own pools on the shared database, the same key and clock.
async fn instance(url: &str, key: &str, clock: &Arc<ManualClock>) -> (TotpFactor, sqlx::PgPool) {
    let store = Arc::new(PostgresApprovalStore::connect(url, 2).await.unwrap());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .unwrap();
    let attempts = Arc::new(PostgresTotpAttempts::from_pool(pool.clone()).await.unwrap());
    let factor = TotpFactor::with_store(
        TotpConfig::default(),
        store,
        TotpSecretKey::from_hex(key).unwrap(),
    )
    .unwrap()
    .with_clock(clock.clone())
    .with_attempt_store(attempts)
    .enroll("bob", secret());
    (factor, pool)
}

fn too_many(result: &Result<(), ApprovalError>) -> bool {
    matches!(
        result,
        Err(ApprovalError::Totp(TotpError::TooManyAttempts(_)))
    )
}

fn wrong(result: &Result<(), ApprovalError>) -> bool {
    matches!(result, Err(ApprovalError::Totp(TotpError::WrongCode)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_codes_on_two_instances_add_up_to_one_limit() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let url = common::fresh_postgres(&admin, "totp_limit").await;
    let key = TotpSecretKey::generate().unwrap().1;
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
    let (a, b) = tokio::join!(instance(&url, &key, &clock), instance(&url, &key, &clock));
    let ((a, _), (b, _)) = (a, b);
    let bad = wrong_code(T0);
    // A malformed code and a right one are not guesses: they leave the count alone.
    assert!(matches!(
        a.check("bob", "12").await,
        Err(ApprovalError::Totp(TotpError::Malformed(6)))
    ));
    for (i, factor) in [&a, &b, &a, &b].into_iter().enumerate() {
        assert!(wrong(&factor.check("bob", &bad).await), "wrong code {i}");
    }
    let right = totp(&secret(), &TotpConfig::default(), T0);
    b.check("bob", &right).await.unwrap();
    // The fifth wrong code, on A: 3 + 2 on the instances, 5 for the service.
    assert!(wrong(&a.check("bob", &bad).await));
    let next = totp(&secret(), &TotpConfig::default(), T0 + 30);
    clock.advance(Duration::from_secs(30));
    for factor in [&a, &b] {
        assert!(
            too_many(&factor.check("bob", &next).await),
            "the right code must be refused on both instances once the service saw five wrong"
        );
    }
    // Another user is not held out.
    assert!(matches!(
        a.check("alice", &next).await,
        Err(ApprovalError::Totp(TotpError::NotEnrolled(_)))
    ));
    // Once the oldest wrong code is five minutes old, the right code is taken again.
    clock.advance(Duration::from_secs(270));
    let later = totp(&secret(), &TotpConfig::default(), T0 + 300);
    b.check("bob", &later).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_codes_on_two_instances_cannot_pass_the_limit() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let url = common::fresh_postgres(&admin, "totp_race").await;
    let key = TotpSecretKey::generate().unwrap().1;
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
    let (a, b) = tokio::join!(instance(&url, &key, &clock), instance(&url, &key, &clock));
    let (a, b) = (Arc::new(a.0), Arc::new(b.0));
    let bad = wrong_code(T0);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let factor = if i % 2 == 0 { a.clone() } else { b.clone() };
        let bad = bad.clone();
        tasks.push(tokio::spawn(async move { factor.check("bob", &bad).await }));
    }
    let (mut checked, mut refused) = (0, 0);
    for task in tasks {
        let result = task.await.unwrap();
        if wrong(&result) {
            checked += 1;
        } else {
            assert!(too_many(&result), "{result:?}");
            refused += 1;
        }
    }
    assert_eq!(
        (checked, refused),
        (5, 11),
        "of 16 concurrent guesses only five may be checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_that_cannot_answer_refuses_codes() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let url = common::fresh_postgres(&admin, "totp_down").await;
    let key = TotpSecretKey::generate().unwrap().1;
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
    let (factor, attempts_pool) = instance(&url, &key, &clock).await;
    let right = totp(&secret(), &TotpConfig::default(), T0);
    attempts_pool.close().await;
    assert!(matches!(
        factor.check("bob", &right).await,
        Err(ApprovalError::Store(_))
    ));
    let approver = Principal::builder(PrincipalKind::User, "bob", AuthMethod::OIDC)
        .build()
        .unwrap();
    let prompt = Prompt {
        request_id: "r1".into(),
        requester: "alice".into(),
        action: "deploy".into(),
        resource: "env:prod".into(),
        reason: "release".into(),
    };
    let outcome = factor
        .confirm(Confirmation {
            approver: &approver,
            prompt: &prompt,
            code: Some(&right),
        })
        .await;
    assert!(
        matches!(outcome, FactorOutcome::Unavailable(_)),
        "{outcome:?}"
    );
}
