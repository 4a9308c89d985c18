//! TOTP against the RFC 6238 appendix B vectors, plus skew, replay and bad codes; replay
//! protection that survives a restart; enrollment (pending secrets approve nothing, the
//! confirming code is spent); and store failures refusing codes.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use portcullis_approval::totp::{hotp, totp};
use portcullis_approval::{
    ApprovalError, Confirmation, FactorOutcome, MemoryApprovalStore, Prompt, SealedTotpSecret,
    SecondFactor, StoredTotpSecret, TotpAlgorithm, TotpConfig, TotpEnrollmentState, TotpError,
    TotpFactor, TotpSecret, TotpSecretKey, TotpStore,
};
use portcullis_core::{AuthMethod, ManualClock, Principal, PrincipalKind};

fn secret(alg: TotpAlgorithm) -> TotpSecret {
    let seed = b"1234567890123456789012345678901234567890123456789012345678901234";
    let len = match alg {
        TotpAlgorithm::Sha1 => 20,
        TotpAlgorithm::Sha256 => 32,
        TotpAlgorithm::Sha512 => 64,
    };
    TotpSecret::new(seed.get(..len).unwrap().to_vec()).unwrap()
}

#[test]
fn rfc6238_appendix_b() {
    let vectors: [(u64, &str, &str, &str); 6] = [
        (59, "94287082", "46119246", "90693936"),
        (1_111_111_109, "07081804", "68084774", "25091201"),
        (1_111_111_111, "14050471", "67062674", "99943326"),
        (1_234_567_890, "89005924", "91819424", "93441116"),
        (2_000_000_000, "69279037", "90698825", "38618901"),
        (20_000_000_000, "65353130", "77737706", "47863826"),
    ];
    for (time, sha1, sha256, sha512) in vectors {
        for (alg, expected) in [
            (TotpAlgorithm::Sha1, sha1),
            (TotpAlgorithm::Sha256, sha256),
            (TotpAlgorithm::Sha512, sha512),
        ] {
            let config = TotpConfig::default().with_algorithm(alg).with_digits(8);
            assert_eq!(
                totp(&secret(alg), &config, time),
                expected,
                "{alg:?} at {time}"
            );
        }
    }
    // RFC 4226 appendix D, counter 0 and 9 (6 digits).
    let s = secret(TotpAlgorithm::Sha1);
    assert_eq!(hotp(&s, TotpAlgorithm::Sha1, 6, 0), "755224");
    assert_eq!(hotp(&s, TotpAlgorithm::Sha1, 6, 9), "520489");
}

#[tokio::test]
async fn skew_window_replay_and_bad_codes() {
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_111_111_111),
    ));
    let config = TotpConfig::default();
    let factor = TotpFactor::new(config)
        .unwrap()
        .with_clock(clock.clone())
        .enroll("bob", secret(TotpAlgorithm::Sha1));
    let s = secret(TotpAlgorithm::Sha1);
    let now = 1_111_111_111u64;
    let previous = totp(&s, &config, now - 30);
    let current = totp(&s, &config, now);
    let next = totp(&s, &config, now + 30);
    let too_old = totp(&s, &config, now - 60);
    assert!(
        factor.check("bob", &too_old).await.is_err(),
        "outside the skew window"
    );
    assert!(
        factor.check("bob", &previous).await.is_ok(),
        "one step of skew"
    );
    assert!(
        matches!(
            factor.check("bob", &previous).await,
            Err(ApprovalError::Totp(TotpError::Replayed))
        ),
        "replay"
    );
    assert!(factor.check("bob", &current).await.is_ok());
    assert!(factor.check("bob", &current).await.is_err(), "replay");
    assert!(factor.check("bob", &next).await.is_ok());
    assert!(
        factor.check("bob", &previous).await.is_err(),
        "older than one used"
    );
    assert!(
        matches!(
            factor.check("alice", &current).await,
            Err(ApprovalError::Totp(TotpError::NotEnrolled(_)))
        ),
        "not enrolled"
    );
    for bad in ["", "12345", "1234567", "12345a", "١٢٣٤٥٦"] {
        assert!(
            matches!(
                factor.check("bob", bad).await,
                Err(ApprovalError::Totp(TotpError::Malformed(6)))
            ),
            "{bad}"
        );
    }
    clock.advance(Duration::from_secs(90));
    let later = totp(&s, &config, now + 90);
    assert!(factor.check("bob", &later).await.is_ok());
}

#[test]
fn bad_configuration() {
    for config in [
        TotpConfig::default().with_digits(5),
        TotpConfig::default().with_digits(9),
        TotpConfig::default().with_step(Duration::ZERO),
        TotpConfig::default().with_skew(11),
    ] {
        assert!(TotpFactor::new(config).is_err());
    }
    assert!(TotpSecret::new(vec![0; 15]).is_err());
    assert!(!format!("{:?}", TotpSecret::generate().unwrap()).contains('0'));
}

const T0: u64 = 1_800_000_000;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)))
}

fn bob() -> Principal {
    Principal::builder(PrincipalKind::User, "bob", AuthMethod::OIDC)
        .build()
        .unwrap()
}

async fn confirm(factor: &TotpFactor, code: &str) -> FactorOutcome {
    let prompt = Prompt {
        request_id: "apr_x".into(),
        requester: "alice".into(),
        action: "deploy".into(),
        resource: "env_stage:checkout/prod".into(),
        reason: "ship".into(),
    };
    factor
        .confirm(Confirmation {
            approver: &bob(),
            prompt: &prompt,
            code: Some(code),
        })
        .await
}

/// The outside finding: a code used for one approval was accepted again for another after a
/// restart, because used steps were only in memory. With a durable store it is refused.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_used_code_stays_used_after_a_restart() {
    use portcullis_approval::SqliteApprovalStore;

    let dir = common::temp_dir("restart");
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
        (store, factor)
    };

    // An enrolled secret (through the store) and a configured one (from config).
    let (store, factor) = start().await;
    let configured = TotpSecret::generate().unwrap();
    let factor = factor.enroll("carol", configured.clone());
    let enrollment = factor.begin_enrollment("bob", "Portcullis").await.unwrap();
    let secret = enrollment.secret().clone();
    let config = TotpConfig::default();
    factor
        .confirm_enrollment("bob", &totp(&secret, &config, T0 - 30))
        .await
        .unwrap();
    let code = totp(&secret, &config, T0);
    let carol_code = totp(&configured, &config, T0);
    assert_eq!(
        confirm(&factor, &code).await,
        FactorOutcome::Allow,
        "request A"
    );
    factor.check("carol", &carol_code).await.unwrap();
    // SIGTERM: the process and its memory are gone.
    drop(factor);
    store.pool().close().await;
    drop(store);

    let (store, factor) = start().await;
    let factor = factor.enroll("carol", configured);
    assert!(
        matches!(confirm(&factor, &code).await, FactorOutcome::Error(why) if why.contains("already used")),
        "request B with the same code after the restart"
    );
    assert!(matches!(
        factor.check("carol", &carol_code).await,
        Err(ApprovalError::Totp(TotpError::Replayed))
    ));
    assert_eq!(
        factor.enrollment_state("bob").await.unwrap(),
        Some(TotpEnrollmentState::Confirmed),
        "the enrollment survived too"
    );
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        confirm(&factor, &totp(&secret, &config, T0 + 30)).await,
        FactorOutcome::Allow,
        "the next code works"
    );
    store.pool().close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn enrollment_is_pending_until_confirmed_and_the_confirming_code_is_spent() {
    let clock = clock();
    let factor = TotpFactor::new(TotpConfig::default())
        .unwrap()
        .with_clock(clock.clone());
    let config = TotpConfig::default();
    assert_eq!(factor.enrollment_state("bob").await.unwrap(), None);
    assert!(matches!(
        factor.confirm_enrollment("bob", "123456").await,
        Err(ApprovalError::Totp(TotpError::NoPendingEnrollment(_)))
    ));

    let first = factor
        .begin_enrollment("bob@example.com", "ACME Co")
        .await
        .unwrap();
    let uri = first.uri().to_owned();
    assert!(uri.starts_with("otpauth://totp/ACME%20Co:bob%40example.com?secret="));
    assert!(uri.contains(&format!("secret={}&", first.secret_base32())));
    assert!(uri.ends_with("&issuer=ACME%20Co&algorithm=SHA1&digits=6&period=30"));
    assert_eq!(first.secret_base32().len(), 32, "20 bytes, no padding");
    assert_eq!(format!("{first:?}"), "TotpEnrollment(<redacted>)");

    // Started again before confirming: the new secret replaces the first.
    let enrollment = factor.begin_enrollment("bob", "Portcullis").await.unwrap();
    let secret = enrollment.secret().clone();
    assert_eq!(
        factor.enrollment_state("bob").await.unwrap(),
        Some(TotpEnrollmentState::Pending)
    );
    // A pending secret approves nothing.
    let now = totp(&secret, &config, T0);
    assert!(matches!(
        factor.check("bob", &now).await,
        Err(ApprovalError::Totp(TotpError::NotEnrolled(_)))
    ));
    assert!(matches!(
        confirm(&factor, &now).await,
        FactorOutcome::Error(_)
    ));
    // Confirming needs a right code of the pending secret.
    assert!(matches!(
        factor
            .confirm_enrollment("bob", &totp(&secret, &config, T0 - 300))
            .await,
        Err(ApprovalError::Totp(TotpError::WrongCode))
    ));
    assert!(matches!(
        factor.confirm_enrollment("bob", "12345").await,
        Err(ApprovalError::Totp(TotpError::Malformed(6)))
    ));
    factor.confirm_enrollment("bob", &now).await.unwrap();
    assert_eq!(
        factor.enrollment_state("bob").await.unwrap(),
        Some(TotpEnrollmentState::Confirmed)
    );
    // The code that confirmed cannot then approve.
    assert!(matches!(
        factor.check("bob", &now).await,
        Err(ApprovalError::Totp(TotpError::Replayed))
    ));
    clock.advance(Duration::from_secs(30));
    let next = totp(&secret, &config, T0 + 30);
    assert_eq!(confirm(&factor, &next).await, FactorOutcome::Allow);

    // Re-enrolling is explicit: a confirmed secret is removed first.
    assert!(matches!(
        factor.begin_enrollment("bob", "Portcullis").await,
        Err(ApprovalError::Totp(TotpError::AlreadyEnrolled(_)))
    ));
    assert!(matches!(
        factor.confirm_enrollment("bob", &next).await,
        Err(ApprovalError::Totp(TotpError::AlreadyEnrolled(_)))
    ));
    assert!(factor.remove_enrollment("bob").await.unwrap());
    assert!(!factor.remove_enrollment("bob").await.unwrap());
    assert!(matches!(
        factor.check("bob", &totp(&secret, &config, T0 + 60)).await,
        Err(ApprovalError::Totp(TotpError::NotEnrolled(_)))
    ));
    let again = factor.begin_enrollment("bob", "Portcullis").await.unwrap();
    // Used steps survive the removal: the new secret's code of a used step is refused.
    assert!(matches!(
        factor
            .confirm_enrollment("bob", &totp(again.secret(), &config, T0 + 30))
            .await,
        Err(ApprovalError::Totp(TotpError::Replayed))
    ));

    // Labels that cannot go into a URI, and configured users, are refused.
    for (user, issuer) in [("", "Portcullis"), ("a:b", "Portcullis"), ("erin", "x:y")] {
        assert!(matches!(
            factor.begin_enrollment(user, issuer).await,
            Err(ApprovalError::Totp(TotpError::InvalidLabel(_)))
        ));
    }
    let factor = factor.enroll("carol", TotpSecret::generate().unwrap());
    assert!(matches!(
        factor.begin_enrollment("carol", "Portcullis").await,
        Err(ApprovalError::Totp(TotpError::AlreadyEnrolled(_)))
    ));
    assert_eq!(
        factor.enrollment_state("carol").await.unwrap(),
        Some(TotpEnrollmentState::Confirmed)
    );
}

#[tokio::test]
async fn generated_secrets_fit_the_algorithm() {
    let config = TotpConfig::default()
        .with_algorithm(TotpAlgorithm::Sha512)
        .with_digits(8);
    let factor = TotpFactor::new(config).unwrap().with_clock(clock());
    let enrollment = factor.begin_enrollment("bob", "Portcullis").await.unwrap();
    assert_eq!(enrollment.secret().expose().len(), 64);
    assert!(
        enrollment
            .uri()
            .ends_with("&algorithm=SHA512&digits=8&period=30")
    );
    factor
        .confirm_enrollment("bob", &totp(enrollment.secret(), &config, T0))
        .await
        .unwrap();
}

/// A store that cannot be reached.
#[derive(Debug)]
struct Down;

#[async_trait]
impl TotpStore for Down {
    async fn claim_step(&self, _: &str, _: u64) -> Result<bool, ApprovalError> {
        Err(ApprovalError::Store("connection refused".into()))
    }
    async fn put_pending_secret(&self, _: &str, _: &SealedTotpSecret) -> Result<(), ApprovalError> {
        Err(ApprovalError::Store("connection refused".into()))
    }
    async fn confirm_secret(&self, _: &str, _: &SealedTotpSecret) -> Result<bool, ApprovalError> {
        Err(ApprovalError::Store("connection refused".into()))
    }
    async fn secret(&self, _: &str) -> Result<Option<StoredTotpSecret>, ApprovalError> {
        Err(ApprovalError::Store("connection refused".into()))
    }
    async fn remove_secret(&self, _: &str) -> Result<bool, ApprovalError> {
        Err(ApprovalError::Store("connection refused".into()))
    }
}

#[tokio::test]
async fn store_failures_refuse_codes() {
    let secret = TotpSecret::generate().unwrap();
    let key = TotpSecretKey::generate().unwrap().0;
    // The secret is configured, so only the replay claim reaches the store.
    let factor = TotpFactor::with_store(TotpConfig::default(), Arc::new(Down), key.clone())
        .unwrap()
        .with_clock(clock())
        .enroll("bob", secret.clone());
    let code = totp(&secret, &TotpConfig::default(), T0);
    assert!(matches!(
        factor.check("bob", &code).await,
        Err(ApprovalError::Store(_))
    ));
    // Refused as "unavailable", so a vote answers 503 rather than "refused".
    assert!(matches!(
        confirm(&factor, &code).await,
        FactorOutcome::Unavailable(_)
    ));
    assert!(factor.begin_enrollment("erin", "Portcullis").await.is_err());

    // A sealed secret that does not open (another key, or copied from another user).
    let store = Arc::new(MemoryApprovalStore::new());
    let other = TotpSecretKey::generate().unwrap().0;
    store
        .put_pending_secret("bob", &other.seal("bob", &secret).unwrap())
        .await
        .unwrap();
    let factor = TotpFactor::with_store(TotpConfig::default(), store.clone(), key)
        .unwrap()
        .with_clock(clock());
    assert!(matches!(
        factor.confirm_enrollment("bob", &code).await,
        Err(ApprovalError::Crypto(_))
    ));
    assert!(matches!(
        confirm(&factor, &code).await,
        FactorOutcome::Error(_)
    ));
    assert!(
        store.claim_step("bob", 0).await.unwrap(),
        "nothing was claimed"
    );
}

/// The outside finding: wrong codes could be tried without limit (~360 a second). After five
/// wrong codes in five minutes every code is refused, even the right one, until the window
/// has passed.
#[tokio::test]
async fn wrong_codes_are_limited() {
    let clock = clock();
    let config = TotpConfig::default();
    let factor = TotpFactor::new(config)
        .unwrap()
        .with_clock(clock.clone())
        .enroll("bob", secret(TotpAlgorithm::Sha1));
    let s = secret(TotpAlgorithm::Sha1);
    let right = totp(&s, &config, T0);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        assert!(matches!(
            factor.check("bob", wrong).await,
            Err(ApprovalError::Totp(TotpError::WrongCode))
        ));
    }
    assert!(matches!(
        factor.check("bob", &right).await,
        Err(ApprovalError::Totp(TotpError::TooManyAttempts(300)))
    ));
    assert_eq!(
        confirm(&factor, &right).await,
        FactorOutcome::Error("too many wrong TOTP codes; try again in 300 s".into())
    );
    // Another user is not affected.
    assert!(matches!(
        factor.check("alice", &right).await,
        Err(ApprovalError::Totp(TotpError::NotEnrolled(_)))
    ));
    clock.advance(Duration::from_secs(300));
    let now = totp(&s, &config, T0 + 300);
    assert!(factor.check("bob", &now).await.is_ok(), "the window passed");
    assert!(
        TotpFactor::new(config)
            .unwrap()
            .with_attempt_limit(0, Duration::from_secs(60))
            .is_err()
    );
}
