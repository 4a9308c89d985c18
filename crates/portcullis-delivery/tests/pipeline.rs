//! The pipeline over a real SQLite file and a folder store: publish (validated, immutable),
//! per-host revisions, promotion, pause, rollback, and everything surviving a reopen.
#![cfg(feature = "sqlite")]
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_core::ManualClock;
use portcullis_delivery::{
    Change, DecisionCounts, DeliveryError, EventRecord, FetchRecord, FolderStore, HostCounts,
    HostStatus, MemoryPipelineStore, Pipeline, PipelineStore, Retention, RevisionId,
    RevisionRecord, SqlitePipelineStore, Validator,
};
use portcullis_policy::{Bundle, PolicyError, Promotion, RolloutConfig, RolloutEvent, Thresholds};

const CANARY: &str = "spiffe://example.org/canary/host-1";
const PROD: &str = "spiffe://example.org/prod/host-2";

fn config(promotion: &str) -> RolloutConfig {
    toml::from_str(&format!(
        r#"
        [[artifacts]]
        name = "authz"
        bundles = ["authz"]
        [[artifacts.steps]]
        name = "canary"
        scopes = ["spiffe://example.org/canary/**"]
        promotion = {promotion}
        soak_seconds = 60
        [[artifacts.steps]]
        name = "production"
        scopes = ["spiffe://example.org/**"]
        promotion = {promotion}
        "#
    ))
    .unwrap()
}

fn bundle(revision: &str, test_user: &str) -> Vec<u8> {
    let policy = format!(
        "package authz\n\nallow if input.user == \"alice\"\n\n\
         test_alice if allow with input as {{\"user\": \"{test_user}\"}}\n"
    );
    let files = vec![
        (
            ".manifest".to_owned(),
            format!(r#"{{"revision":"{revision}","roots":["authz"]}}"#).into_bytes(),
        ),
        ("authz.rego".to_owned(), policy.into_bytes()),
    ];
    Bundle::from_files("authz", files)
        .unwrap()
        .to_tar_gz()
        .unwrap()
}

struct Fixture {
    dir: PathBuf,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("portcullis-delivery-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Fixture {
            dir,
            clock: Arc::new(ManualClock::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            )),
        }
    }

    async fn open(&self, promotion: &str) -> Pipeline {
        self.open_with(config(promotion)).await
    }

    async fn open_with(&self, config: RolloutConfig) -> Pipeline {
        let url = format!("sqlite://{}", self.dir.join("pipeline.db").display());
        Pipeline::open(
            config,
            self.clock.clone(),
            Arc::new(SqlitePipelineStore::open(&url).await.unwrap()),
            Arc::new(FolderStore::open(self.dir.join("artifacts")).unwrap()),
            Validator::default(),
        )
        .await
        .unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn publish_promote_and_reopen() {
    let fx = Fixture::new("flow");
    let manual = r#"{ mode = "manual" }"#;
    let pipeline = fx.open(manual).await;

    let first = pipeline
        .publish("authz", bundle("r1", "alice"), "user:ci")
        .await
        .unwrap();
    assert_eq!(first.bundle_revision, "r1");
    assert_eq!(
        pipeline.revision_for("authz", CANARY).await,
        Some(first.revision.clone())
    );
    assert_eq!(pipeline.revision_for("authz", PROD).await, None);
    // The same tarball again is refused: revisions are immutable.
    assert!(matches!(
        pipeline
            .publish("authz", bundle("r1", "alice"), "user:ci")
            .await,
        Err(DeliveryError::Exists { .. })
    ));
    // A failing test_* rule is refused with the reason, and nothing changes.
    let refused = pipeline
        .publish("authz", bundle("bad", "bob"), "user:ci")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            DeliveryError::Refused(PolicyError::TestFailed { .. })
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("test_alice"), "{refused}");
    assert!(matches!(
        pipeline
            .publish("nope", bundle("r1", "alice"), "user:ci")
            .await,
        Err(DeliveryError::UnknownArtifact(_))
    ));

    // Not before the soak time.
    assert!(pipeline.promote("authz", "user:op").await.is_err());
    fx.clock.advance(Duration::from_secs(61));
    pipeline.pause("authz", "user:op", "looking").await.unwrap();
    let paused = pipeline.promote("authz", "user:op").await.unwrap_err();
    assert!(paused.to_string().contains("paused"), "{paused}");
    pipeline.resume("authz", "user:op").await.unwrap();
    assert!(matches!(
        pipeline.promote("authz", "user:op").await.unwrap(),
        RolloutEvent::Promoted { .. }
    ));
    assert_eq!(
        pipeline.revision_for("authz", PROD).await,
        Some(first.revision.clone())
    );
    assert!(matches!(
        pipeline.promote("authz", "user:op").await.unwrap(),
        RolloutEvent::Completed { .. }
    ));

    // A second revision reaches the canary only; then it is rolled back.
    let second = pipeline
        .publish("authz", bundle("r2", "alice"), "user:ci")
        .await
        .unwrap();
    assert_eq!(
        pipeline.revision_for("authz", CANARY).await,
        Some(second.revision.clone())
    );
    assert_eq!(
        pipeline.revision_for("authz", PROD).await,
        Some(first.revision.clone())
    );
    // Where hosts stand, from one state: which revision each is assigned, from which step
    // (a host no step covers runs the stable revision, as every host does until a
    // candidate reaches it).
    let outside = "spiffe://elsewhere.example/host";
    let placed = pipeline
        .assignments("authz", &[CANARY, PROD, outside])
        .await;
    let revisions: Vec<Option<&RevisionId>> = placed.iter().map(|a| a.revision.as_ref()).collect();
    assert_eq!(
        revisions,
        [
            Some(&second.revision),
            Some(&first.revision),
            Some(&first.revision)
        ]
    );
    let steps: Vec<Option<usize>> = placed.iter().map(|a| a.step).collect();
    assert_eq!(steps, [Some(0), Some(1), None]);
    let readiness = pipeline.readiness("authz").await.unwrap();
    assert_eq!(readiness.revision, second.revision.to_string());
    assert_eq!(readiness.step_name, "canary");
    assert_eq!(
        pipeline.bundle_revision("authz", second.revision.as_str()),
        Some("r2".to_owned())
    );
    assert_eq!(
        pipeline.bundle_revision("other", second.revision.as_str()),
        None
    );
    drop(pipeline);

    // Everything survives a reopen.
    let pipeline = fx.open(manual).await;
    assert_eq!(
        pipeline.bundle_revision("authz", first.revision.as_str()),
        Some("r1".to_owned()),
        "manifest revisions are read back"
    );
    assert_eq!(
        pipeline.revision_for("authz", CANARY).await,
        Some(second.revision.clone())
    );
    assert_eq!(
        pipeline.revision_for("authz", PROD).await,
        Some(first.revision.clone())
    );
    pipeline
        .rollback("authz", "user:op", "wrong")
        .await
        .unwrap();
    assert_eq!(
        pipeline.revision_for("authz", CANARY).await,
        Some(first.revision.clone())
    );
    assert_eq!(
        *pipeline.tarball("authz", &second.revision).await.unwrap(),
        *bundle("r2", "alice"),
        "a rolled-back revision stays stored"
    );
    let store = pipeline.store();
    let revisions = store.revisions("authz").await.unwrap();
    assert_eq!(revisions.len(), 2);
    assert_eq!(revisions[0].published_by, "user:ci");
    let events = store.events(Some("authz"), 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "publish", "publish", "pause", "resume", "promote", "promote", "publish", "publish",
            "rollback"
        ]
    );
    assert!(
        events
            .last()
            .unwrap()
            .message
            .contains("rolled back: wrong")
    );
    assert_eq!(events.last().unwrap().actor, "user:op");
}

#[tokio::test]
async fn the_scheduler_promotes_automatic_steps() {
    let fx = Fixture::new("tick");
    let pipeline = fx.open(r#"{ mode = "always" }"#).await;
    let published = pipeline
        .publish("authz", bundle("t1", "alice"), "user:ci")
        .await
        .unwrap();
    assert!(pipeline.tick().await.unwrap().is_empty(), "soaking");
    fx.clock.advance(Duration::from_secs(61));
    let events = pipeline.tick().await.unwrap();
    assert!(
        matches!(&events[..], [RolloutEvent::Promoted { .. }]),
        "{events:?}"
    );
    assert_eq!(
        pipeline.revision_for("authz", PROD).await,
        Some(published.revision)
    );
    let last = pipeline.store().events(None, 1).await.unwrap();
    assert_eq!(last[0].actor, "scheduler");
    assert_eq!(last[0].kind, "tick");
}

#[tokio::test]
async fn artifacts_of_several_bundles_are_refused_for_now() {
    let fx = Fixture::new("multi");
    let mut config = config(r#"{ mode = "manual" }"#);
    config.artifacts[0].bundles.push("other".into());
    let url = format!("sqlite://{}", fx.dir.join("p.db").display());
    let err = Pipeline::open(
        config,
        fx.clock.clone(),
        Arc::new(SqlitePipelineStore::open(&url).await.unwrap()),
        Arc::new(FolderStore::open(fx.dir.join("a")).unwrap()),
        Validator::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("exactly one bundle"), "{err}");
}

fn decisions(revision: &str, allowed: usize, denied: usize) -> DecisionCounts {
    let mut events = Vec::new();
    for i in 0..allowed + denied {
        events.push(serde_json::json!({
            "decision_id": i.to_string(),
            "bundles": {"authz": {"revision": revision}},
            "result": i < allowed,
        }));
    }
    DecisionCounts::parse(
        serde_json::Value::Array(events).to_string().as_bytes(),
        false,
    )
    .unwrap()
}

/// The two-step pipeline with the canary judged from 10 decisions (at most half denials)
/// and no soak.
fn judged(promotion: &str) -> RolloutConfig {
    let mut config = config(promotion);
    config.artifacts[0].steps[0].thresholds = Thresholds {
        max_deny_rate: Some(0.5),
        max_error_rate: None,
        min_decisions: 10,
    };
    config.artifacts[0].steps[0].soak_seconds = 0;
    config
}

/// Records that `host` downloaded `revision` of authz, as the bundle endpoint does.
async fn fetched(pipeline: &Pipeline, host: &str, revision: &RevisionId) {
    pipeline
        .record_fetch(&FetchRecord {
            at_ms: 1,
            spiffe_id: host.to_owned(),
            artifact: "authz".to_owned(),
            revision: revision.to_string(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn decision_counts_from_assigned_hosts_roll_a_bad_candidate_back() {
    let fx = Fixture::new("report");
    let config = judged(r#"{ mode = "always" }"#);
    let pipeline = fx.open_with(config.clone()).await;
    let good = pipeline
        .publish("authz", bundle("g1", "alice"), "user:ci")
        .await
        .unwrap();
    // Too few decisions: not promoted yet.
    assert!(pipeline.tick().await.unwrap().is_empty());
    // A host that never downloaded the candidate here cannot count for it.
    assert_eq!(
        pipeline
            .report(CANARY, &decisions("g1", 9, 1))
            .await
            .unwrap(),
        0
    );
    fetched(&pipeline, CANARY, &good.revision).await;
    assert_eq!(
        pipeline
            .report(CANARY, &decisions("g1", 9, 1))
            .await
            .unwrap(),
        10
    );
    assert!(matches!(
        &pipeline.tick().await.unwrap()[..],
        [RolloutEvent::Promoted { .. }]
    ));
    assert_eq!(
        pipeline.revision_for("authz", PROD).await,
        Some(good.revision.clone())
    );
    fx.clock.advance(Duration::from_secs(1));
    assert!(matches!(
        &pipeline.tick().await.unwrap()[..],
        [RolloutEvent::Completed { .. }]
    ));

    let bad = pipeline
        .publish("authz", bundle("b2", "alice"), "user:ci")
        .await
        .unwrap();
    fetched(&pipeline, CANARY, &bad.revision).await;
    // A download of the stable revision is not one of the candidate.
    fetched(&pipeline, PROD, &good.revision).await;
    // Production is not assigned the candidate: its counts do not count; nor do counts
    // for another manifest revision.
    assert_eq!(
        pipeline
            .report(PROD, &decisions("b2", 0, 50))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        pipeline
            .report(CANARY, &decisions("g1", 0, 50))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        pipeline
            .state("authz")
            .await
            .unwrap()
            .candidate
            .unwrap()
            .metrics
            .decisions,
        0
    );
    assert_eq!(
        pipeline
            .report(CANARY, &decisions("b2", 2, 8))
            .await
            .unwrap(),
        10
    );
    drop(pipeline);
    // The counts were persisted, and who downloaded the candidate: after a reopen the
    // canary's counts still count, and the breach rolls it back.
    let pipeline = fx.open_with(config).await;
    assert_eq!(
        pipeline
            .report(CANARY, &decisions("b2", 0, 10))
            .await
            .unwrap(),
        10
    );
    let events = pipeline.tick().await.unwrap();
    assert!(
        matches!(&events[..], [RolloutEvent::RolledBack { revision, reason, .. }]
            if *revision == bad.revision.to_string() && reason.contains("deny rate")),
        "{events:?}"
    );
    assert_eq!(
        pipeline.revision_for("authz", CANARY).await,
        Some(good.revision)
    );
    let history = pipeline.store().events(Some("authz"), 100).await.unwrap();
    assert!(
        history.iter().all(|e| e.kind != "report"),
        "counts are not events"
    );
    assert_eq!(history.last().unwrap().actor, "scheduler");
}

#[tokio::test]
async fn other_content_already_at_a_revisions_address_is_refused_at_publish() {
    let fx = Fixture::new("squatted");
    let pipeline = fx.open(r#"{ mode = "manual" }"#).await;
    let good = bundle("g1", "alice");
    // Written at the address of the tarball CI is about to publish (which is predictable:
    // the same folder packs to the same tarball), by whoever may write to the store.
    let id = RevisionId::of(&good);
    let dir = fx.dir.join("artifacts").join("authz");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{id}.tar.gz")), b"not that bundle").unwrap();
    let err = pipeline
        .publish("authz", good.clone(), "user:ci")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("other content"), "{err}");
    let state = pipeline.state("authz").await.unwrap();
    assert!(state.candidate.is_none(), "nothing was proposed: {state:?}");
    // Once the object is removed, the same tarball publishes.
    std::fs::remove_file(dir.join(format!("{id}.tar.gz"))).unwrap();
    let published = pipeline.publish("authz", good, "user:ci").await.unwrap();
    assert_eq!(published.revision, id);
}

#[tokio::test]
async fn one_hosts_good_counts_cannot_hide_anothers_breach() {
    const CANARY_2: &str = "spiffe://example.org/canary/host-3";
    let fx = Fixture::new("dilute");
    let config = judged(r#"{ mode = "manual" }"#);
    let pipeline = fx.open_with(config.clone()).await;
    let first = pipeline
        .publish("authz", bundle("g1", "alice"), "user:ci")
        .await
        .unwrap();
    let bad = pipeline
        .publish("authz", bundle("b2", "alice"), "user:ci")
        .await
        .unwrap();
    let history = pipeline.store().events(Some("authz"), 100).await.unwrap();
    assert!(
        history.last().unwrap().message.contains(&format!(
            "replacing candidate {} (withdrawn at canary)",
            first.revision
        )),
        "a publish says which candidate it withdrew: {history:?}"
    );
    fetched(&pipeline, CANARY, &bad.revision).await;
    fetched(&pipeline, CANARY_2, &bad.revision).await;
    // One canary host sees the candidate deny everything; another reports a flood of
    // allowed decisions, which keeps the sum's deny rate near zero.
    let flood = DecisionCounts::parse_compact(
        br#"{"bundles":[{"name":"authz","revision":"b2","decisions":18446744073709551615}]}"#,
    )
    .unwrap();
    assert_eq!(pipeline.report(CANARY_2, &flood).await.unwrap(), u64::MAX);
    assert_eq!(
        pipeline
            .report(CANARY, &decisions("b2", 0, 4))
            .await
            .unwrap(),
        4
    );
    // The sum has its 10 decisions, but this host has not yet made its share of them
    // (10 over the 2 hosts reporting): not judged yet.
    assert!(pipeline.readiness("authz").await.unwrap().breach.is_none());
    // Hosts' own counts are stored: a restart (a deploy, a crash) does not wipe them
    // while the flooded sum stays.
    drop(pipeline);
    let pipeline = fx.open_with(config.clone()).await;
    assert_eq!(
        pipeline
            .report(CANARY, &decisions("b2", 1, 9))
            .await
            .unwrap(),
        10
    );
    let readiness = pipeline.readiness("authz").await.unwrap();
    assert_eq!(readiness.deny_rate.map(|r| r < 0.01), Some(true));
    let breach = readiness.breach.unwrap();
    assert!(
        breach.starts_with(&format!("{CANARY} alone: deny rate 0.929")),
        "13 denials of 14 decisions, the 4 from before the restart included: {breach}"
    );
    // A promotion is refused, and rolls it back, as for a breach of the sum.
    let err = pipeline.promote("authz", "user:olivia").await.unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Rollout(PolicyError::Rollout { message, .. })
            if message.contains("alone: deny rate")),
        "{err}"
    );
    let state = pipeline.state("authz").await.unwrap();
    assert!(state.candidate.is_none(), "{state:?}");
    assert_eq!(state.stable, None);

    // Under automatic promotion the scheduler rolls it back at its next tick.
    let mut auto = config;
    auto.artifacts[0].steps[0].promotion = Promotion::Always;
    drop(pipeline);
    let pipeline = fx.open_with(auto).await;
    let third = pipeline
        .publish("authz", bundle("b3", "alice"), "user:ci")
        .await
        .unwrap();
    fetched(&pipeline, CANARY, &third.revision).await;
    fetched(&pipeline, CANARY_2, &third.revision).await;
    let flood = DecisionCounts::parse_compact(
        br#"{"bundles":[{"name":"authz","revision":"b3","decisions":1000}]}"#,
    )
    .unwrap();
    pipeline.report(CANARY_2, &flood).await.unwrap();
    // Fewer than the step's 10 decisions from this host, but more than its share.
    pipeline
        .report(CANARY, &decisions("b3", 0, 9))
        .await
        .unwrap();
    let events = pipeline.tick().await.unwrap();
    assert!(
        matches!(&events[..], [RolloutEvent::RolledBack { revision, reason, .. }]
            if *revision == third.revision.to_string() && reason.contains("alone: deny rate")),
        "{events:?}"
    );
}

/// What every pipeline store must do, whichever it is.
async fn store_contract(store: &dyn PipelineStore) {
    assert!(store.load_states().await.unwrap().is_empty());
    let revision = RevisionId::of(b"tarball");
    let record = RevisionRecord {
        artifact: "authz".into(),
        revision: revision.clone(),
        bundle_revision: "r1".into(),
        size: 7,
        published_by: "user:ci".into(),
        published_at_ms: 5,
    };
    let event = |message: &str| EventRecord {
        id: 0,
        at_ms: 6,
        artifact: "authz".into(),
        revision: Some(revision.to_string()),
        kind: "publish".into(),
        actor: "user:ci".into(),
        message: message.into(),
    };
    let state = portcullis_policy::ArtifactState {
        stable: Some("x".into()),
        ..Default::default()
    };
    store
        .commit(Change {
            states: vec![("authz".into(), state.clone())],
            events: vec![event("one"), event("two")],
            revision: Some(record.clone()),
            host_counts: vec![counts(CANARY, 5), counts(PROD, 7)],
        })
        .await
        .unwrap();
    // A revision recorded twice is refused, and nothing of that change is written.
    let again = store
        .commit(Change {
            states: vec![("authz".into(), Default::default())],
            events: vec![event("three")],
            revision: Some(record.clone()),
            host_counts: vec![counts(CANARY, 500)],
        })
        .await;
    assert!(
        matches!(again, Err(DeliveryError::Exists { .. })),
        "{again:?}"
    );
    assert_eq!(store.load_states().await.unwrap()["authz"], state);
    assert!(store.has_revision("authz", &revision).await.unwrap());
    assert!(!store.has_revision("other", &revision).await.unwrap());
    assert_eq!(store.revisions("authz").await.unwrap(), [record]);
    let events = store.events(Some("authz"), 10).await.unwrap();
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["one", "two"]);
    assert!(events[0].id < events[1].id);
    assert_eq!(store.events(None, 1).await.unwrap()[0].message, "two");
    assert!(store.events(Some("other"), 10).await.unwrap().is_empty());

    let status = |revision: &str| HostStatus {
        spiffe_id: CANARY.into(),
        bundle: "authz".into(),
        active_revision: Some(revision.into()),
        error: None,
        reported_at_ms: 9,
    };
    store.record_status(&[status("r1")]).await.unwrap();
    store.record_status(&[status("r2")]).await.unwrap();
    assert_eq!(store.host_statuses().await.unwrap(), [status("r2")]);
    // One bundle's reports, by SPIFFE ID, without the other bundles'.
    let other = |spiffe_id: &str, bundle: &str| HostStatus {
        spiffe_id: spiffe_id.into(),
        bundle: bundle.into(),
        active_revision: None,
        error: Some("bundle_error: no".into()),
        reported_at_ms: 11,
    };
    let before = "spiffe://example.org/a-host";
    store
        .record_status(&[other(CANARY, "gate"), other(before, "authz")])
        .await
        .unwrap();
    assert_eq!(
        store.host_statuses_of("authz").await.unwrap(),
        [other(before, "authz"), status("r2")]
    );
    assert_eq!(
        store.host_statuses_of("gate").await.unwrap(),
        [other(CANARY, "gate")]
    );
    assert!(store.host_statuses_of("none").await.unwrap().is_empty());
    let fetch = FetchRecord {
        at_ms: 10,
        spiffe_id: CANARY.into(),
        artifact: "authz".into(),
        revision: revision.to_string(),
    };
    store.record_fetch(&fetch).await.unwrap();
    assert_eq!(
        store.fetches("authz").await.unwrap(),
        std::slice::from_ref(&fetch)
    );
    assert!(store.fetches("other").await.unwrap().is_empty());

    // Hosts' counts: written with a change (the refused one wrote none), replaced per host.
    let mut stored = store.host_counts().await.unwrap();
    stored.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
    assert_eq!(stored, [counts(CANARY, 5), counts(PROD, 7)]);
    store
        .commit(Change {
            host_counts: vec![counts(CANARY, 9)],
            ..Change::default()
        })
        .await
        .unwrap();
    let mut stored = store.host_counts().await.unwrap();
    stored.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
    assert_eq!(stored, [counts(CANARY, 9), counts(PROD, 7)]);

    // Retention: old downloads go unless their revision is kept; each artifact keeps its
    // newest events; hosts' counts stay for kept revisions only.
    let at = |at_ms: u64, revision: &str| FetchRecord {
        at_ms,
        revision: revision.into(),
        ..fetch.clone()
    };
    for f in [at(20, "old"), at(30, "kept"), at(40, "old"), at(500, "new")] {
        store.record_fetch(&f).await.unwrap();
    }
    store
        .commit(Change {
            events: (0..5).map(|i| event(&format!("e{i}"))).collect(),
            ..Change::default()
        })
        .await
        .unwrap();
    let pruned = store
        .prune(
            &Retention::fetches_before(100)
                .keep_revision("authz", "kept")
                .with_events_per_artifact(3),
        )
        .await
        .unwrap();
    assert_eq!(
        (pruned.fetches, pruned.events, pruned.host_counts),
        (3, 4, 2)
    );
    assert_eq!(
        store.fetches("authz").await.unwrap(),
        [at(30, "kept"), at(500, "new")]
    );
    let kept: Vec<String> = store
        .events(Some("authz"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(kept, ["e2", "e3", "e4"]);
    assert!(store.host_counts().await.unwrap().is_empty());
    let none = store.prune(&Retention::fetches_before(0)).await.unwrap();
    assert_eq!((none.fetches, none.events), (0, 0));
}

fn counts(host: &str, decisions: u64) -> HostCounts {
    HostCounts {
        artifact: "authz".into(),
        revision: "r1".into(),
        step: 0,
        spiffe_id: host.into(),
        metrics: portcullis_policy::Metrics {
            decisions,
            denies: 1,
            errors: 0,
        },
    }
}

#[tokio::test]
async fn the_memory_and_sqlite_stores_keep_the_same_contract() {
    store_contract(&MemoryPipelineStore::new()).await;
    store_contract(&SqlitePipelineStore::open("sqlite::memory:").await.unwrap()).await;
}

/// A fresh database on the test PostgreSQL at `admin` (`scripts/with-services` starts one).
#[cfg(feature = "postgres")]
async fn fresh_postgres(admin: &str, tag: &str) -> String {
    let name = format!("delivery_{tag}_{}", std::process::id());
    let pool = sqlx::PgPool::connect(admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn the_postgres_store_keeps_the_same_contract() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let url = fresh_postgres(&admin, "contract").await;
    // Two instances starting at once take turns migrating.
    let (a, b) = tokio::join!(
        portcullis_delivery::PostgresPipelineStore::connect(&url, 4),
        portcullis_delivery::PostgresPipelineStore::connect(&url, 4)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let before = a.version().await.unwrap().unwrap();
    store_contract(&a).await;
    // The other instance sees the same state, and every commit moved the version on.
    assert_eq!(b.revisions("authz").await.unwrap().len(), 1);
    // Three changes were written (the refused one was not); the prune is no change.
    assert_eq!(b.version().await.unwrap(), Some(before + 3));
    // Downloads the contract's prune kept.
    assert!(b.has_fetched("authz", "kept", CANARY).await.unwrap());
    assert!(!b.has_fetched("authz", "kept", PROD).await.unwrap());
    assert!(
        !b.has_fetched("authz", &RevisionId::of(b"tarball").to_string(), CANARY)
            .await
            .unwrap(),
        "pruned"
    );
    // One status report batch naming one host's bundle twice keeps the later.
    let report = |revision: &str| HostStatus {
        spiffe_id: PROD.into(),
        bundle: "authz".into(),
        active_revision: Some(revision.into()),
        error: None,
        reported_at_ms: 12,
    };
    b.record_status(&[report("r1"), report("r2")])
        .await
        .unwrap();
    let statuses = a.host_statuses_of("authz").await.unwrap();
    assert_eq!(statuses.last(), Some(&report("r2")));
    // One leads; when it resigns, the other takes the lead.
    assert!(a.lead().await.unwrap());
    assert!(!b.lead().await.unwrap());
    assert!(a.lead().await.unwrap(), "kept");
    a.resign().await;
    assert!(b.lead().await.unwrap());
    assert!(!a.lead().await.unwrap());
}
