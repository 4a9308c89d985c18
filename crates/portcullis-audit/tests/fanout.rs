//! `FanOut` over real JSONL logs, and over sinks that misbehave on purpose: every member
//! gets each event, the policy decides what counts, and `submit` reaches every member's own
//! `submit` instead of waiting for a write.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{intent, temp_dir};
use portcullis_audit::{
    AuditError, AuditEvent, AuditLog, AuditSink, FanOut, FanOutPolicy, JsonlOptions, Receipt,
    TracingMirror,
};

async fn jsonl(tag: &str) -> Arc<AuditLog> {
    Arc::new(
        AuditLog::jsonl(&temp_dir(tag), JsonlOptions::default())
            .await
            .unwrap(),
    )
}

/// A durable sink whose writes never finish, but which takes submitted events at once; or,
/// when `refuse`, a closed one.
#[derive(Debug, Default)]
struct Stuck {
    submitted: Mutex<Vec<String>>,
    refuse: bool,
}

#[async_trait]
impl AuditSink for Stuck {
    async fn record(&self, _event: AuditEvent) -> Result<Receipt, AuditError> {
        if self.refuse {
            return Err(AuditError::Closed);
        }
        std::future::pending().await
    }

    async fn submit(&self, event: AuditEvent) -> Result<(), AuditError> {
        if self.refuse {
            return Err(AuditError::Closed);
        }
        self.submitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.id);
        Ok(())
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        "stuck"
    }
}

#[tokio::test]
async fn every_member_records_and_submits() {
    let (a, b) = (jsonl("fan-a").await, jsonl("fan-b").await);
    let fan = FanOut::new(
        vec![a.clone() as Arc<dyn AuditSink>, b.clone()],
        FanOutPolicy::All,
    );
    let recorded = fan.record(intent("alice", "env:checkout")).await.unwrap();
    let submitted = intent("bob", "env:checkout");
    let submitted_id = submitted.id.clone();
    fan.submit(submitted).await.unwrap();
    for log in [&a, &b] {
        assert!(log.get(&recorded.id).await.unwrap().is_some());
        // The read waits for the submitted event.
        assert!(log.get(&submitted_id).await.unwrap().is_some());
        assert_eq!(log.head().await.unwrap().seq, 2);
    }
}

#[tokio::test]
async fn submit_reaches_each_members_own_submit() {
    let stuck = Arc::new(Stuck::default());
    let log = jsonl("fan-stuck").await;
    let fan = FanOut::new(
        vec![stuck.clone() as Arc<dyn AuditSink>, log.clone()],
        FanOutPolicy::All,
    );
    let event = intent("alice", "env:checkout");
    let id = event.id.clone();
    // Through `record` (what the trait's default `submit` does) this would never return.
    tokio::time::timeout(Duration::from_secs(10), fan.submit(event))
        .await
        .unwrap_or_else(|_| panic!("FanOut::submit waited for a member's write"))
        .unwrap();
    let taken = stuck
        .submitted
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(taken, vec![id.clone()]);
    assert!(log.get(&id).await.unwrap().is_some());
}

#[tokio::test]
async fn the_policy_decides_which_answers_count() {
    let closed = Arc::new(Stuck {
        refuse: true,
        ..Stuck::default()
    });
    let log = jsonl("fan-policy").await;

    // All: one member refusing fails the submit, and says who.
    let all = FanOut::new(
        vec![closed.clone() as Arc<dyn AuditSink>, log.clone()],
        FanOutPolicy::All,
    );
    let err = all.submit(intent("a", "env:x")).await.unwrap_err();
    match err {
        AuditError::FanOut {
            acknowledged,
            required,
            errors,
        } => {
            assert_eq!((acknowledged, required), (1, 2));
            assert!(errors.contains("stuck"), "{errors}");
        }
        other => panic!("expected a fan-out error, got {other}"),
    }

    // At least one: the durable log taking it is enough.
    let one = FanOut::new(
        vec![closed as Arc<dyn AuditSink>, log.clone()],
        FanOutPolicy::AtLeastOne,
    );
    one.submit(intent("b", "env:x")).await.unwrap();

    // A non-durable member never counts: alone it fails even "at least one", and under
    // "all" it fails the submit although it took the event.
    let mirror: Arc<dyn AuditSink> = Arc::new(TracingMirror);
    let only_mirror = FanOut::new(vec![mirror.clone()], FanOutPolicy::AtLeastOne);
    assert!(only_mirror.submit(intent("c", "env:x")).await.is_err());
    let with_mirror = FanOut::new(vec![mirror, log.clone()], FanOutPolicy::All);
    let err = with_mirror.submit(intent("d", "env:x")).await.unwrap_err();
    assert!(err.to_string().contains("not durable"), "{err}");
    let with_mirror_ok = FanOut::new(
        vec![Arc::new(TracingMirror) as Arc<dyn AuditSink>, log.clone()],
        FanOutPolicy::AtLeastOne,
    );
    with_mirror_ok.submit(intent("e", "env:x")).await.unwrap();
    // The log took every event handed to it: b, d and e (a too, under "all").
    log.flush().await.unwrap();
    assert_eq!(log.head().await.unwrap().seq, 4);
}
