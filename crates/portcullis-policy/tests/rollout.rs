//! The staged-delivery state machine on a fake clock: scopes by SPIFFE ID, manual,
//! around-the-clock and business-hours promotion, soak times, thresholds and rollback,
//! and its persisted state.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_core::ManualClock;
use portcullis_policy::{
    Metrics, PolicyError, Rollout, RolloutConfig, RolloutEvent, SpiffePattern,
};

const CANARY: &str = "spiffe://prod.example/ns/payments/sa/checkout";
const PROD: &str = "spiffe://prod.example/ns/search/sa/indexer";
const STAGING: &str = "spiffe://staging.example/ns/payments/sa/checkout";

/// Monday 2026-11-23 10:00 in Tallinn (UTC+2): 08:00 UTC.
fn monday_10_tallinn() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_392_000 + 8 * 3600)
}

fn config(promotion: &str) -> RolloutConfig {
    toml::from_str(&format!(
        r#"
        [[artifacts]]
        name = "authz"
        bundles = ["rbac", "freeze"]

        [[artifacts.steps]]
        name = "canary"
        scopes = ["spiffe://prod.example/ns/payments/sa/*"]
        promotion = {promotion}
        soak_seconds = 600
        thresholds = {{ max_deny_rate = 0.2, max_error_rate = 0.01, min_decisions = 100 }}

        [[artifacts.steps]]
        name = "production"
        scopes = ["spiffe://prod.example/**"]
        promotion = {promotion}
        soak_seconds = 3600
        "#
    ))
    .unwrap()
}

fn start(promotion: &str) -> (Rollout, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(monday_10_tallinn()));
    (
        Rollout::new(&config(promotion), clock.clone()).unwrap(),
        clock,
    )
}

fn healthy(n: u64) -> Metrics {
    Metrics {
        decisions: n,
        denies: n / 10,
        errors: 0,
    }
}

#[test]
fn spiffe_patterns_match_whole_segments() {
    let one: SpiffePattern = "spiffe://prod.example/ns/*/sa/checkout".parse().unwrap();
    assert!(one.matches("spiffe://prod.example/ns/payments/sa/checkout"));
    assert!(!one.matches("spiffe://prod.example/ns/payments/sa/checkout/extra"));
    assert!(!one.matches("spiffe://prod.example/ns/a/b/sa/checkout"));
    assert!(!one.matches("spiffe://staging.example/ns/payments/sa/checkout"));
    assert!(
        !one.matches("spiffe://prod.example/ns//sa/checkout"),
        "empty segment"
    );
    let all: SpiffePattern = "spiffe://prod.example/**".parse().unwrap();
    assert!(all.matches(PROD));
    assert!(!all.matches("spiffe://prod.example"), "** needs a segment");
    assert!(
        !all.matches("spiffe://prod.example/ns/../x"),
        "not a valid SPIFFE ID"
    );
    for bad in [
        "https://prod.example/x",
        "spiffe://Prod.Example/x",
        "spiffe:///x",
        "spiffe://prod.example/**/x",
        "spiffe://prod.example/a*b",
        "spiffe://prod.example/..",
    ] {
        assert!(bad.parse::<SpiffePattern>().is_err(), "{bad} was accepted");
    }
}

#[test]
fn bad_pipelines_are_refused() {
    let clock = Arc::new(ManualClock::new(monday_10_tallinn()));
    let mut cases = Vec::new();
    let base = config(r#"{ mode = "always" }"#);
    let mut no_steps = base.clone();
    no_steps.artifacts[0].steps.clear();
    cases.push(("no steps", no_steps));
    let mut bad_scope = base.clone();
    bad_scope.artifacts[0].steps[0].scopes = vec!["prod.example/x".into()];
    cases.push(("bad scope", bad_scope));
    let mut no_scope = base.clone();
    no_scope.artifacts[0].steps[0].scopes.clear();
    cases.push(("no scope", no_scope));
    let mut rate = base.clone();
    rate.artifacts[0].steps[0].thresholds.max_deny_rate = Some(1.5);
    cases.push(("rate", rate));
    let mut twice = base.clone();
    twice.artifacts.push(base.artifacts[0].clone());
    cases.push(("duplicate", twice));
    cases.push((
        "time zone",
        config(r#"{ mode = "business_hours", timezone = "Mars/Olympus", start_hour = 9, end_hour = 17 }"#),
    ));
    cases.push((
        "window",
        config(r#"{ mode = "business_hours", timezone = "UTC", start_hour = 17, end_hour = 9 }"#),
    ));
    cases.push((
        "day",
        config(r#"{ mode = "business_hours", timezone = "UTC", days = ["someday"], start_hour = 9, end_hour = 17 }"#),
    ));
    for (what, config) in cases {
        assert!(
            matches!(
                Rollout::new(&config, clock.clone()),
                Err(PolicyError::Rollout { .. })
            ),
            "{what} was accepted"
        );
    }
    assert!(toml::from_str::<RolloutConfig>("[[artifacts]]\nname = 1").is_err());
}

#[test]
fn an_automatic_rollout_soaks_step_by_step_then_completes() {
    let (mut rollout, clock) = start(r#"{ mode = "always" }"#);
    rollout.propose("authz", "r1").unwrap();
    // The candidate reaches the canary scope only; nothing is stable yet elsewhere.
    assert_eq!(rollout.revision_for("authz", CANARY), Some("r1"));
    assert_eq!(rollout.revision_for("authz", PROD), None);
    assert_eq!(rollout.revision_for("authz", STAGING), None);

    // Not before the soak time, nor without enough decisions.
    rollout.report("authz", "r1", healthy(500)).unwrap();
    assert!(rollout.tick().is_empty());
    clock.advance(Duration::from_secs(601));
    let events = rollout.tick();
    assert!(
        matches!(&events[..], [RolloutEvent::Promoted { step, .. }] if step == "production"),
        "{events:?}"
    );
    assert_eq!(rollout.revision_for("authz", PROD), Some("r1"));
    assert_eq!(
        rollout.revision_for("authz", STAGING),
        None,
        "outside every scope"
    );

    clock.advance(Duration::from_secs(3601));
    assert!(
        matches!(&rollout.tick()[..], [RolloutEvent::Completed { revision, .. }] if revision == "r1")
    );
    let state = rollout.state("authz").unwrap();
    assert_eq!(state.stable.as_deref(), Some("r1"));
    assert!(state.candidate.is_none());
    assert_eq!(rollout.revision_for("authz", STAGING), Some("r1"));

    // The next revision starts over at the canary; everyone else keeps r1.
    rollout.propose("authz", "r2").unwrap();
    assert_eq!(rollout.revision_for("authz", CANARY), Some("r2"));
    assert_eq!(rollout.revision_for("authz", PROD), Some("r1"));
    assert!(
        rollout.propose("authz", "r1").is_err(),
        "r1 is already stable"
    );
    assert!(rollout.propose("nope", "r1").is_err());
}

#[test]
fn a_breach_rolls_back_to_the_stable_revision() {
    let (mut rollout, clock) = start(r#"{ mode = "always" }"#);
    rollout.propose("authz", "good").unwrap();
    rollout.report("authz", "good", healthy(100)).unwrap();
    clock.advance(Duration::from_secs(601));
    rollout.tick();
    clock.advance(Duration::from_secs(3601));
    rollout.tick();
    assert_eq!(
        rollout.state("authz").unwrap().stable.as_deref(),
        Some("good")
    );

    rollout.propose("authz", "bad").unwrap();
    // Too few decisions to judge: no verdict yet, however bad.
    rollout
        .report(
            "authz",
            "bad",
            Metrics {
                decisions: 50,
                denies: 50,
                errors: 0,
            },
        )
        .unwrap();
    assert!(rollout.tick().is_empty());
    // Counts for another revision do not count.
    rollout
        .report(
            "authz",
            "good",
            Metrics {
                decisions: 1000,
                denies: 0,
                errors: 0,
            },
        )
        .unwrap();
    rollout
        .report(
            "authz",
            "bad",
            Metrics {
                decisions: 50,
                denies: 0,
                errors: 0,
            },
        )
        .unwrap();
    let events = rollout.tick();
    assert!(
        matches!(&events[..], [RolloutEvent::RolledBack { revision, reason, .. }] if revision == "bad" && reason.contains("deny rate 0.500")),
        "{events:?}"
    );
    assert_eq!(rollout.revision_for("authz", CANARY), Some("good"));
    assert!(
        rollout
            .state("authz")
            .unwrap()
            .last_event
            .as_deref()
            .unwrap()
            .contains("rolled back")
    );

    // Errors are judged too, and promoting by hand does not get past a breach.
    let (mut manual, clock) = start(r#"{ mode = "manual" }"#);
    manual.propose("authz", "flaky").unwrap();
    manual
        .report(
            "authz",
            "flaky",
            Metrics {
                decisions: 200,
                denies: 0,
                errors: 5,
            },
        )
        .unwrap();
    clock.advance(Duration::from_secs(601));
    let err = manual.promote("authz").unwrap_err();
    assert!(err.to_string().contains("error rate"), "{err}");
    assert!(manual.state("authz").unwrap().candidate.is_none());
    assert!(
        manual.rollback("authz", "again").is_err(),
        "nothing left to roll back"
    );
}

#[test]
fn manual_steps_wait_for_an_operator() {
    let (mut rollout, clock) = start(r#"{ mode = "manual" }"#);
    rollout.propose("authz", "m1").unwrap();
    rollout.report("authz", "m1", healthy(150)).unwrap();
    let err = rollout.promote("authz").unwrap_err();
    assert!(err.to_string().contains("soaking in canary"), "{err}");
    clock.advance(Duration::from_secs(24 * 3600));
    assert!(
        rollout.tick().is_empty(),
        "manual steps never promote themselves"
    );
    assert!(matches!(
        rollout.promote("authz").unwrap(),
        RolloutEvent::Promoted { .. }
    ));
    clock.advance(Duration::from_secs(3600));
    assert!(matches!(
        rollout.promote("authz").unwrap(),
        RolloutEvent::Completed { .. }
    ));
    assert!(rollout.promote("authz").is_err(), "nothing left to promote");

    // An operator may withdraw a candidate at any time.
    rollout.propose("authz", "m2").unwrap();
    assert!(matches!(
        rollout.rollback("authz", "wrong ticket").unwrap(),
        RolloutEvent::RolledBack { .. }
    ));
    assert_eq!(rollout.revision_for("authz", CANARY), Some("m1"));
}

#[test]
fn business_hours_promote_only_inside_the_window() {
    let window = r#"{ mode = "business_hours", timezone = "Europe/Tallinn", start_hour = 9, end_hour = 17 }"#;
    let (mut rollout, clock) = start(window);
    // Friday 16:00 Tallinn: proposed late in the day.
    let friday_16 =
        monday_10_tallinn() - Duration::from_secs(3 * 24 * 3600) + Duration::from_secs(6 * 3600);
    clock.set(friday_16);
    rollout.propose("authz", "b1").unwrap();
    rollout.report("authz", "b1", healthy(100)).unwrap();
    // Soaked by 17:00 — but then the window has closed; nothing on Saturday either.
    for hours in [1, 20, 30] {
        clock.set(friday_16 + Duration::from_secs(hours * 3600));
        assert!(rollout.tick().is_empty(), "{hours} h after Friday 16:00");
    }
    // Monday 10:00 in Tallinn it goes on.
    clock.set(monday_10_tallinn());
    assert!(matches!(
        &rollout.tick()[..],
        [RolloutEvent::Promoted { .. }]
    ));
    // Monday 18:30: soaked, but the window is closed; Tuesday 09:05 it completes.
    clock.set(monday_10_tallinn() + Duration::from_secs(8 * 3600 + 1800));
    assert!(rollout.tick().is_empty());
    clock.set(monday_10_tallinn() + Duration::from_secs(23 * 3600 + 300));
    assert!(matches!(
        &rollout.tick()[..],
        [RolloutEvent::Completed { .. }]
    ));
}

#[test]
fn the_state_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("portcullis-rollout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rollout.json");
    let (mut rollout, clock) = start(r#"{ mode = "always" }"#);
    rollout.propose("authz", "s1").unwrap();
    rollout.report("authz", "s1", healthy(120)).unwrap();
    rollout.save(&path).unwrap();

    let resumed = Rollout::resume(&config(r#"{ mode = "always" }"#), clock.clone(), &path).unwrap();
    assert_eq!(resumed.state("authz"), rollout.state("authz"));
    assert_eq!(resumed.revision_for("authz", CANARY), Some("s1"));

    // A state that does not fit the configuration is refused.
    let mut shorter = config(r#"{ mode = "always" }"#);
    shorter.artifacts[0].name = "other".into();
    assert!(Rollout::resume(&shorter, clock.clone(), &path).is_err());
    std::fs::write(&path, "{ not json").unwrap();
    assert!(Rollout::resume(&config(r#"{ mode = "always" }"#), clock.clone(), &path).is_err());
    // No file yet: a fresh state.
    let fresh = Rollout::resume(
        &config(r#"{ mode = "always" }"#),
        clock,
        dir.join("none.json"),
    )
    .unwrap();
    assert_eq!(fresh.state("authz").unwrap().candidate, None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_paused_rollout_holds_but_still_rolls_back_on_a_breach() {
    let (mut rollout, clock) = start(r#"{ mode = "always" }"#);
    rollout.propose("authz", "p1").unwrap();
    rollout.report("authz", "p1", healthy(500)).unwrap();
    rollout.pause("authz", "incident 42").unwrap();
    assert!(rollout.pause("authz", "twice").is_err(), "already paused");
    clock.advance(Duration::from_secs(601));
    assert!(rollout.tick().is_empty(), "paused: not promoted by tick");
    let refused = rollout.promote("authz").unwrap_err().to_string();
    assert!(refused.contains("paused"), "{refused}");
    assert_eq!(rollout.revision_for("authz", PROD), None);

    rollout.unpause("authz").unwrap();
    assert!(rollout.unpause("authz").is_err(), "not paused any more");
    assert!(matches!(
        &rollout.tick()[..],
        [RolloutEvent::Promoted { step, .. }] if step == "production"
    ));

    // Paused again, a breach still withdraws the candidate.
    rollout.pause("authz", "hold").unwrap();
    rollout
        .report(
            "authz",
            "p1",
            Metrics {
                decisions: 1000,
                denies: 900,
                errors: 0,
            },
        )
        .unwrap();
    assert!(rollout.tick().is_empty(), "production has no deny limit");
    rollout.propose("authz", "p2").unwrap();
    rollout
        .report(
            "authz",
            "p2",
            Metrics {
                decisions: 1000,
                denies: 900,
                errors: 0,
            },
        )
        .unwrap();
    assert!(matches!(
        &rollout.tick()[..],
        [RolloutEvent::RolledBack { revision, .. }] if revision == "p2"
    ));
    assert!(rollout.state("authz").unwrap().paused);
    assert!(rollout.pause("nope", "x").is_err());
}

#[test]
fn a_rollout_restores_from_saved_states() {
    let (mut rollout, clock) = start(r#"{ mode = "manual" }"#);
    rollout.propose("authz", "q1").unwrap();
    rollout.pause("authz", "why not").unwrap();
    let saved = rollout.states().clone();
    let restored = Rollout::restore(
        &config(r#"{ mode = "manual" }"#),
        clock.clone(),
        saved.clone(),
    )
    .unwrap();
    assert_eq!(restored.states(), rollout.states());
    assert_eq!(restored.revision_for("authz", CANARY), Some("q1"));
    assert_eq!(restored.steps("authz"), Some(vec!["canary", "production"]));
    let mut other = config(r#"{ mode = "manual" }"#);
    other.artifacts[0].name = "other".into();
    assert!(Rollout::restore(&other, clock, saved).is_err());
}

#[test]
fn readiness_shows_the_candidate_against_its_step_as_promote_judges_it() {
    let (mut rollout, clock) = start(r#"{ mode = "manual" }"#);
    assert!(rollout.readiness("authz").is_none(), "no candidate yet");
    assert!(rollout.readiness("nope").is_none());
    rollout.propose("authz", "q1").unwrap();
    let fresh = rollout.readiness("authz").unwrap();
    assert_eq!((fresh.revision.as_str(), fresh.step), ("q1", 0));
    assert_eq!(fresh.step_name, "canary");
    assert_eq!((fresh.deny_rate, fresh.error_rate), (None, None));
    assert_eq!(fresh.thresholds.min_decisions, 100);
    assert_eq!(fresh.thresholds.max_deny_rate, Some(0.2));
    assert_eq!((fresh.soak_seconds, fresh.soaked_seconds), (600, 0));
    assert!(fresh.manual && fresh.window_open.is_none() && !fresh.paused);
    assert!(fresh.breach.is_none());
    assert!(
        fresh.waiting.as_deref().unwrap().contains("soaking"),
        "{fresh:?}"
    );

    // Soaked but short of decisions: what holds it is what promote says.
    clock.advance(Duration::from_secs(601));
    rollout.report("authz", "q1", healthy(50)).unwrap();
    let short = rollout.readiness("authz").unwrap();
    assert_eq!(short.soaked_seconds, 601);
    assert_eq!(short.deny_rate, Some(0.1));
    assert_eq!(short.error_rate, Some(0.0));
    let waiting = short.waiting.unwrap();
    assert!(waiting.contains("50 of 100 decisions"), "{waiting}");
    let refused = rollout.promote("authz").unwrap_err().to_string();
    assert!(refused.contains(&waiting), "{refused} / {waiting}");

    // Ready: nothing holds it, and promote agrees.
    rollout.report("authz", "q1", healthy(50)).unwrap();
    let ready = rollout.readiness("authz").unwrap();
    assert!(
        ready.waiting.is_none() && ready.breach.is_none(),
        "{ready:?}"
    );
    rollout.promote("authz").unwrap();
    let next = rollout.readiness("authz").unwrap();
    assert_eq!((next.step, next.step_name.as_str()), (1, "production"));
    assert_eq!(next.metrics, Metrics::default(), "counted per step");

    // Over a limit: the breach named is the one that rolls it back.
    rollout.propose("authz", "q2").unwrap();
    rollout
        .report(
            "authz",
            "q2",
            Metrics {
                decisions: 200,
                denies: 100,
                errors: 0,
            },
        )
        .unwrap();
    rollout.pause("authz", "look").unwrap();
    let over = rollout.readiness("authz").unwrap();
    assert!(over.paused);
    let breach = over.breach.unwrap();
    assert!(breach.contains("deny rate 0.500"), "{breach}");
    assert!(
        matches!(&rollout.tick()[..], [RolloutEvent::RolledBack { reason, .. }] if *reason == breach)
    );
    assert!(rollout.readiness("authz").is_none());
}

#[test]
fn a_business_hours_step_says_whether_its_window_is_open() {
    let (mut rollout, clock) = start(
        r#"{ mode = "business_hours", timezone = "Europe/Tallinn", start_hour = 9, end_hour = 17 }"#,
    );
    rollout.propose("authz", "w1").unwrap();
    let readiness = rollout.readiness("authz").unwrap();
    assert_eq!(
        (readiness.manual, readiness.window_open),
        (false, Some(true))
    );
    clock.advance(Duration::from_secs(8 * 3600));
    assert_eq!(rollout.readiness("authz").unwrap().window_open, Some(false));
}

#[test]
fn the_first_step_covering_a_host_is_named() {
    let (rollout, _) = start(r#"{ mode = "manual" }"#);
    assert_eq!(rollout.step_covering("authz", CANARY), Some(0));
    assert_eq!(rollout.step_covering("authz", PROD), Some(1));
    assert_eq!(rollout.step_covering("authz", STAGING), None);
    assert_eq!(rollout.step_covering("nope", CANARY), None);
}
