//! Four-eyes approval costs: one request → vote → receipt → redeem round on the memory and
//! SQLite stores; one TOTP verification of an enrolled (sealed) secret, its step claimed in
//! the store; and signing one Duo Auth API request.
//!
//! The SQLite store is a file with the default (full) sync, so each commit waits for the
//! disk: a round commits three times (request, vote, receipt use) and reads six times. A TOTP
//! check reads the sealed secret and commits the claimed step.
#![expect(
    clippy::expect_used,
    reason = "benches set up fixed, valid inputs; a failure is a broken bench"
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::approval::duo::{DuoConfig, DuoSignature, sign};
use portcullis::approval::totp::totp;
use portcullis::approval::{
    ApprovalRule, ApprovalStore, Approvals, Approvers, InAppFactor, MemoryApprovalStore,
    NewRequest, RequestState, SqliteApprovalStore, TotpConfig, TotpFactor, TotpSecretKey,
    TotpStore, VoteDecision,
};
use portcullis::{Action, AuthMethod, Decision, ManualClock, Principal, PrincipalKind, from_fn};
use serde_json::json;

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-bench-approval-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn user(name: &str) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .group("release-managers")
        .build()
        .expect("valid")
}

fn approvals(store: Arc<dyn ApprovalStore>) -> Approvals {
    let may_approve = Arc::new(from_fn("release-managers", |r| {
        if r.principal.in_group("release-managers") {
            Decision::allow("release manager")
        } else {
            Decision::deny("not a release manager")
        }
    }));
    let mut rule = ApprovalRule::new(
        Action::DEPLOY,
        "env_stage".parse().expect("kind"),
        "approve".parse().expect("action"),
    );
    rule.resource_ids = vec!["checkout/prod".into()];
    Approvals::new(store, may_approve, &[42; 32])
        .expect("approvals")
        .rule(rule)
        .expect("rule")
        .factor(Arc::new(InAppFactor::new([AuthMethod::OIDC])))
}

/// One approval from request to redeemed receipt.
async fn round(approvals: &Approvals, alice: &Principal, bob: &Principal) {
    let params = json!({"build_id": "12345"});
    let request = approvals
        .request(NewRequest {
            requester: alice,
            action: Action::DEPLOY,
            resource: "env_stage:checkout/prod".parse().expect("resource"),
            params: &params,
            reason: "hotfix for checkout",
            approvers: Some(Approvers::Named(vec!["bob".into()])),
        })
        .await
        .expect("request");
    let record = approvals
        .vote(&request.id, bob, VoteDecision::Approve, "in_app", None)
        .await
        .expect("vote");
    assert_eq!(record.state, RequestState::Approved);
    let receipt = approvals.receipt(&request.id).await.expect("receipt");
    approvals
        .redeem(&receipt, &Action::DEPLOY, &request.resource, &params)
        .await
        .expect("redeem");
}

fn round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (alice, bob) = (user("alice"), user("bob"));
    let dir = scratch("round");
    let sqlite: Arc<dyn ApprovalStore> = Arc::new(
        runtime
            .block_on(SqliteApprovalStore::connect(&format!(
                "sqlite://{}",
                dir.join("approvals.db").display()
            )))
            .expect("sqlite"),
    );
    let mut group = c.benchmark_group("approval/request_vote_receipt_redeem");
    for (name, store) in [
        (
            "memory",
            Arc::new(MemoryApprovalStore::new()) as Arc<dyn ApprovalStore>,
        ),
        ("sqlite", sqlite),
    ] {
        let approvals = approvals(store);
        group.bench_function(name, |b| {
            b.iter(|| runtime.block_on(round(&approvals, &alice, &bob)));
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A factor over `store` with Bob enrolled (sealed secret, confirmed), and his secret.
async fn enrolled(
    store: Arc<dyn TotpStore>,
    clock: Arc<ManualClock>,
) -> (TotpFactor, portcullis::approval::TotpSecret) {
    let (key, _) = TotpSecretKey::generate().expect("key");
    let factor = TotpFactor::with_store(TotpConfig::default(), store, key)
        .expect("factor")
        .with_clock(clock.clone());
    let enrollment = factor
        .begin_enrollment("bob", "Portcullis")
        .await
        .expect("enrollment");
    let now = clock.now_unix();
    factor
        .confirm_enrollment(
            "bob",
            &totp(enrollment.secret(), &TotpConfig::default(), now),
        )
        .await
        .expect("confirm");
    (factor, enrollment.secret().clone())
}

trait NowUnix {
    fn now_unix(&self) -> u64;
}

impl NowUnix for ManualClock {
    fn now_unix(&self) -> u64 {
        portcullis::Clock::now(self)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

fn totp_check(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = scratch("totp");
    let sqlite: Arc<dyn TotpStore> = Arc::new(
        runtime
            .block_on(SqliteApprovalStore::connect(&format!(
                "sqlite://{}",
                dir.join("approvals.db").display()
            )))
            .expect("sqlite"),
    );
    let mut group = c.benchmark_group("approval/totp_check_enrolled");
    for (name, store) in [
        (
            "memory",
            Arc::new(MemoryApprovalStore::new()) as Arc<dyn TotpStore>,
        ),
        ("sqlite", sqlite),
    ] {
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let (factor, secret) = runtime.block_on(enrolled(store, clock.clone()));
        group.bench_function(name, |b| {
            // Each check needs a code of a newer step: the clock moves two steps per check,
            // outside the timed part. (Two, because a code can also be that of the next step
            // in the skew window — about once in a million — and then that step is claimed.)
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    clock.advance(Duration::from_secs(60));
                    let code = totp(&secret, &TotpConfig::default(), clock.now_unix());
                    let start = Instant::now();
                    runtime
                        .block_on(factor.check("bob", black_box(&code)))
                        .expect("accepted");
                    spent += start.elapsed();
                }
                spent
            });
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn duo_signature(c: &mut Criterion) {
    let mut config = DuoConfig::new(
        "api-xxxxxxxx.duosecurity.com",
        "DIWJ8X6AEYOR5OMC6TQ1",
        "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep",
    );
    let params = [
        ("username", "bob"),
        ("factor", "push"),
        ("device", "auto"),
        ("async", "1"),
        ("type", "Deploy approval"),
        (
            "pushinfo",
            "request=apr_0123&action=deploy&resource=env_stage%3Acheckout%2Fprod",
        ),
    ];
    let date = "Tue, 21 Aug 2012 17:29:18 -0000";
    let mut group = c.benchmark_group("approval/duo_sign_auth_request");
    for (name, signature) in [
        ("hmac_sha1", DuoSignature::HmacSha1),
        ("hmac_sha512", DuoSignature::HmacSha512),
    ] {
        config.signature = signature;
        group.bench_function(name, |b| {
            b.iter(|| sign(black_box(&config), date, "POST", "/auth/v2/auth", &params));
        });
    }
    group.finish();
}

criterion_group!(benches, round_trip, totp_check, duo_signature);
criterion_main!(benches);
