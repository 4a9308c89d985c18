//! Several delivery instances (`Pipeline`s) on one PostgreSQL database: a change on one is
//! seen by the other within the refresh bound, concurrent changes on both serialize (no
//! update is lost), and exactly one instance leads, another taking over when it goes.
//! Needs `PORTCULLIS_TEST_POSTGRES_URL` (`scripts/with-services`); skipped without it.
#![cfg(feature = "postgres")]
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use portcullis_core::ManualClock;
use portcullis_delivery::{
    ChangeListener, DecisionCounts, DeliveryError, FetchRecord, MemoryStore, Pipeline,
    PostgresPipelineStore, Refresher, Validator,
};
use portcullis_policy::{Bundle, RolloutConfig, RolloutEvent};

const CANARY: &str = "spiffe://example.org/canary/host-1";
const CANARY2: &str = "spiffe://example.org/canary/host-9";
const PROD: &str = "spiffe://example.org/prod/host-2";

/// What the refresher promises when notifications flow: reads lag by milliseconds; 1 s is
/// its periodic fallback.
const BOUND: Duration = Duration::from_secs(1);

fn config(promotion: &str, soak: u64) -> RolloutConfig {
    toml::from_str(&format!(
        r#"
        [[artifacts]]
        name = "authz"
        bundles = ["authz"]
        [[artifacts.steps]]
        name = "canary"
        scopes = ["spiffe://example.org/canary/**"]
        promotion = {promotion}
        soak_seconds = {soak}
        [[artifacts.steps]]
        name = "production"
        scopes = ["spiffe://example.org/**"]
        promotion = {promotion}
        "#
    ))
    .unwrap()
}

fn bundle(revision: &str, comment: &str) -> Vec<u8> {
    let policy = format!("package authz\n\n# {comment}\nallow if input.user == \"alice\"\n");
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

fn decisions(revision: &str, allowed: usize) -> DecisionCounts {
    let events: Vec<serde_json::Value> = (0..allowed)
        .map(|i| {
            serde_json::json!({
                "decision_id": i.to_string(),
                "bundles": {"authz": {"revision": revision}},
                "result": true,
            })
        })
        .collect();
    DecisionCounts::parse(
        serde_json::Value::Array(events).to_string().as_bytes(),
        false,
    )
    .unwrap()
}

/// A fresh database on the test PostgreSQL at `admin`.
async fn fresh_postgres(admin: &str, tag: &str) -> String {
    let name = format!("delivery_fleet_{tag}_{}", std::process::id());
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

/// Two instances sharing one database, one artifact store and one clock.
struct Fleet {
    url: String,
    clock: Arc<ManualClock>,
    artifacts: Arc<MemoryStore>,
    config: RolloutConfig,
}

impl Fleet {
    async fn new(tag: &str, config: RolloutConfig) -> Option<Fleet> {
        let admin = match portcullis_test_support::lookup("PORTCULLIS_TEST_POSTGRES_URL") {
            Ok(admin) => admin,
            Err(missing) => {
                portcullis_test_support::skip_or_fail(&missing).unwrap();
                return None;
            }
        };
        Some(Fleet {
            url: fresh_postgres(&admin, tag).await,
            clock: Arc::new(ManualClock::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            )),
            artifacts: Arc::new(MemoryStore::new()),
            config,
        })
    }

    /// An instance, refreshed as the example service refreshes it: at every notification
    /// and every second.
    async fn instance(&self) -> (Arc<Pipeline>, (Refresher, ChangeListener)) {
        let store = PostgresPipelineStore::connect(&self.url, 4).await.unwrap();
        let listener = store.listen().await.unwrap();
        let pipeline = Arc::new(
            Pipeline::open(
                self.config.clone(),
                self.clock.clone(),
                Arc::new(store),
                self.artifacts.clone(),
                Validator::default(),
            )
            .await
            .unwrap(),
        );
        let refresher = pipeline.spawn_refresher(BOUND, Some(listener.wakeup()));
        (pipeline, (refresher, listener))
    }
}

impl Fleet {
    /// An instance that never hears a notification: it reads the state every `every`.
    async fn polling_instance(&self, every: Duration) -> (Arc<Pipeline>, Refresher) {
        let store = PostgresPipelineStore::connect(&self.url, 4).await.unwrap();
        let pipeline = Arc::new(
            Pipeline::open(
                self.config.clone(),
                self.clock.clone(),
                Arc::new(store),
                self.artifacts.clone(),
                Validator::default(),
            )
            .await
            .unwrap(),
        );
        let refresher = pipeline.spawn_refresher(every, None);
        (pipeline, refresher)
    }
}

/// How long until `check` holds on `pipeline` (polled every millisecond), at most 5 s.
async fn until<F: AsyncFn(&Pipeline) -> bool>(pipeline: &Pipeline, check: F) -> Duration {
    let start = Instant::now();
    while !check(pipeline).await {
        assert!(start.elapsed() < Duration::from_secs(5), "not within 5 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publish_on_one_instance_is_served_by_the_other_within_the_bound() {
    let Some(fleet) = Fleet::new("visible", config(r#"{ mode = "manual" }"#, 0)).await else {
        return;
    };
    let (a, _ra) = fleet.instance().await;
    let (b, _rb) = fleet.instance().await;
    let mut lags = Vec::new();
    for n in 0..5 {
        let published = a
            .publish("authz", bundle(&format!("v{n}"), "visible"), "user:ci")
            .await
            .unwrap();
        let revision = published.revision.clone();
        let lag = until(&b, async |b| {
            b.revision_for("authz", CANARY).await.as_ref() == Some(&revision)
        })
        .await;
        assert!(lag < BOUND, "seen on the other instance after {lag:?}");
        assert_eq!(
            b.bundle_revision("authz", revision.as_str()).as_deref(),
            Some(format!("v{n}").as_str())
        );
        lags.push(lag);
    }
    eprintln!("publish on A seen by B after {lags:?}");
    // A promotion on B reaches A the same way.
    b.promote("authz", "user:op").await.unwrap();
    let lag = until(&a, async |a| a.revision_for("authz", PROD).await.is_some()).await;
    eprintln!("promotion on B seen by A after {lag:?}");
    assert!(lag < BOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_on_both_instances_apply_one_after_the_other() {
    let Some(fleet) = Fleet::new("serial", config(r#"{ mode = "manual" }"#, 0)).await else {
        return;
    };
    let (a, _ra) = fleet.instance().await;
    let (b, _rb) = fleet.instance().await;
    let published = a
        .publish("authz", bundle("c1", "serial"), "user:ci")
        .await
        .unwrap();
    // Each host downloads from one instance and reports to both.
    for (pipeline, host) in [(&a, CANARY), (&b, CANARY2)] {
        pipeline
            .record_fetch(&FetchRecord {
                at_ms: 1,
                spiffe_id: host.to_owned(),
                artifact: "authz".to_owned(),
                revision: published.revision.to_string(),
            })
            .await
            .unwrap();
    }
    let mut reports = Vec::new();
    for i in 0..80 {
        let pipeline = if i % 2 == 0 { a.clone() } else { b.clone() };
        let host = if i % 4 < 2 { CANARY } else { CANARY2 };
        reports.push(tokio::spawn(async move {
            pipeline.report(host, &decisions("c1", 1)).await.unwrap()
        }));
    }
    for report in reports {
        assert_eq!(report.await.unwrap(), 1, "every report counted");
    }
    let stored = a.store().load_states().await.unwrap();
    let metrics = stored["authz"].candidate.as_ref().unwrap().metrics;
    assert_eq!(metrics.decisions, 80, "no report lost: {metrics:?}");

    // Two publishes of one manifest revision with different content, one on each: one
    // wins, the other is told the name is taken.
    let (one, two) = tokio::join!(
        a.publish("authz", bundle("same", "one"), "user:ci"),
        b.publish("authz", bundle("same", "two"), "user:ci")
    );
    let taken =
        |r: &Result<_, DeliveryError>| matches!(r, Err(DeliveryError::RevisionNameTaken { .. }));
    assert!(
        (one.is_ok() && taken(&two)) || (two.is_ok() && taken(&one)),
        "{one:?} {two:?}"
    );
    // A revision published and withdrawn on one instance while another was not looking
    // still holds its manifest revision there, though no state names it any more.
    let (c, _rc) = fleet.polling_instance(Duration::from_secs(3600)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.publish("authz", bundle("gone", "one"), "user:ci")
        .await
        .unwrap();
    a.rollback("authz", "user:op", "withdrawn").await.unwrap();
    let again = c.publish("authz", bundle("gone", "two"), "user:ci").await;
    assert!(taken(&again), "{again:?}");
    // A pause on one and a resume on the other: both apply, in some order, on the state
    // the other left.
    a.pause("authz", "user:op", "looking").await.unwrap();
    b.resume("authz", "user:op").await.unwrap();
    assert!(!a.store().load_states().await.unwrap()["authz"].paused);
    let kinds: Vec<String> = a
        .store()
        .events(Some("authz"), 2)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["pause", "resume"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_instance_leads_and_another_takes_over_when_it_goes() {
    let Some(fleet) = Fleet::new("leader", config(r#"{ mode = "always" }"#, 60)).await else {
        return;
    };
    let (a, ra) = fleet.instance().await;
    let (b, _rb) = fleet.instance().await;
    assert!(a.lead().await.unwrap(), "the first to ask leads");
    assert!(!b.lead().await.unwrap(), "only one leads");
    assert!(a.lead().await.unwrap(), "and keeps the lead");
    assert!(a.leading() && !b.leading());
    let published = b
        .publish("authz", bundle("l1", "leader"), "user:ci")
        .await
        .unwrap();
    fleet.clock.advance(Duration::from_secs(61));

    // The leader goes (its process ends: its connections close).
    drop(ra);
    drop(a);
    let start = Instant::now();
    while !b.lead().await.unwrap() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no takeover in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("takeover after {:?}", start.elapsed());
    let events = b.tick().await.unwrap();
    assert!(
        matches!(&events[..], [RolloutEvent::Promoted { .. }]),
        "{events:?}"
    );
    assert_eq!(
        b.revision_for("authz", PROD).await,
        Some(published.revision.clone())
    );
    assert_eq!(
        b.store().events(None, 1).await.unwrap()[0].actor,
        "scheduler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_notifications_the_periodic_read_bounds_the_staleness() {
    let Some(fleet) = Fleet::new("polling", config(r#"{ mode = "manual" }"#, 0)).await else {
        return;
    };
    let (a, _ra) = fleet.instance().await;
    let every = Duration::from_millis(300);
    let (c, _rc) = fleet.polling_instance(every).await;
    let mut lags = Vec::new();
    for n in 0..3 {
        let published = a
            .publish("authz", bundle(&format!("p{n}"), "polling"), "user:ci")
            .await
            .unwrap();
        let revision = published.revision;
        let lag = until(&c, async |c| {
            c.revision_for("authz", CANARY).await.as_ref() == Some(&revision)
        })
        .await;
        assert!(lag < every + Duration::from_millis(200), "after {lag:?}");
        lags.push(lag);
    }
    eprintln!("publish on A seen by a polling instance (every {every:?}) after {lags:?}");
}

fn counts(revision: &str, allowed: usize, denied: usize) -> DecisionCounts {
    let events: Vec<serde_json::Value> = (0..allowed + denied)
        .map(|i| {
            serde_json::json!({
                "decision_id": i.to_string(),
                "bundles": {"authz": {"revision": revision}},
                "result": i < allowed,
            })
        })
        .collect();
    DecisionCounts::parse(
        serde_json::Value::Array(events).to_string().as_bytes(),
        false,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_breach_reported_to_a_follower_is_seen_by_the_leader() {
    let mut config = config(r#"{ mode = "always" }"#, 60);
    config.artifacts[0].steps[0].thresholds = portcullis_policy::Thresholds {
        max_deny_rate: Some(0.5),
        min_decisions: 10,
        ..Default::default()
    };
    let Some(fleet) = Fleet::new("breach", config).await else {
        return;
    };
    let (a, _ra) = fleet.instance().await;
    let (b, _rb) = fleet.instance().await;
    assert!(a.lead().await.unwrap() && !b.lead().await.unwrap());
    let published = a
        .publish("authz", bundle("b1", "breach"), "user:ci")
        .await
        .unwrap();
    for host in [CANARY, CANARY2] {
        a.record_fetch(&FetchRecord {
            at_ms: 1,
            spiffe_id: host.to_owned(),
            artifact: "authz".to_owned(),
            revision: published.revision.to_string(),
        })
        .await
        .unwrap();
    }
    // Many good decisions from one host to the leader, a breach of the other's own to the
    // follower: the sum is under the limit, but hosts' own counts are stored with it, so
    // the leader's next tick (which reads them again under the store's lock) sees the
    // follower's breach and rolls the candidate back.
    a.report(CANARY2, &counts("b1", 100, 0)).await.unwrap();
    b.report(CANARY, &counts("b1", 0, 10)).await.unwrap();
    let events = a.tick().await.unwrap();
    assert!(
        matches!(&events[..], [RolloutEvent::RolledBack { reason, revision, .. }]
            if reason.contains(&format!("{CANARY} alone")) && *revision == published.revision.to_string()),
        "{events:?}"
    );
    let lag = until(&b, async |b| {
        b.state("authz").await.unwrap().candidate.is_none()
    })
    .await;
    assert!(lag < BOUND);
    assert!(b.roll_back_breaches().await.unwrap().is_empty(), "once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_to_an_instance_that_has_not_seen_the_candidate_yet_counts() {
    let Some(fleet) = Fleet::new("unseen", config(r#"{ mode = "manual" }"#, 0)).await else {
        return;
    };
    let (a, _ra) = fleet.instance().await;
    // Never notified, and its periodic read is an hour away.
    let (c, _rc) = fleet.polling_instance(Duration::from_secs(3600)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let published = a
        .publish("authz", bundle("u1", "unseen"), "user:ci")
        .await
        .unwrap();
    a.record_fetch(&FetchRecord {
        at_ms: 1,
        spiffe_id: CANARY.to_owned(),
        artifact: "authz".to_owned(),
        revision: published.revision.to_string(),
    })
    .await
    .unwrap();
    assert_eq!(c.revision_for("authz", CANARY).await, None, "not seen yet");
    // The report's turn reads the new candidate, and the download made on A.
    assert_eq!(c.report(CANARY, &decisions("u1", 3)).await.unwrap(), 3);
    assert_eq!(
        c.revision_for("authz", CANARY).await,
        Some(published.revision)
    );
}
