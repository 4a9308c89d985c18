//! The outside finding: a request answered 503 because the audit log did not acknowledge
//! its intent in time left that intent in the log, allowed and pending for ever (listed as
//! retryable), once the write completed. Its outcome now says it was not done.
#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::intent;
use portcullis_audit::{
    AuditError, AuditEvent, AuditLog, AuditQuery, AuditSink, Receipt, WriteAhead,
};

/// A durable sink that acknowledges late.
#[derive(Debug)]
struct Late {
    log: Arc<AuditLog>,
}

#[async_trait]
impl AuditSink for Late {
    async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.log.record(event).await
    }

    async fn submit(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.log.submit(event).await
    }

    fn is_durable(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_intent_acknowledged_too_late_gets_a_not_done_outcome() {
    let log = Arc::new(
        AuditLog::sqlite("sqlite::memory:", Default::default())
            .await
            .unwrap(),
    );
    let guard = WriteAhead::new(Arc::new(Late { log: log.clone() }))
        .unwrap()
        .with_timeout(Duration::from_millis(20));
    let event = intent("alice", "env:checkout");
    let id = event.id.clone();
    assert!(matches!(
        guard.intent(event).await,
        Err(AuditError::Timeout(_))
    ));
    // The late intent and its outcome land in their own time.
    let mut found = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.flush().await.unwrap();
        found = log.query(&AuditQuery::all(10)).await.unwrap().records;
        if found.len() >= 2 {
            break;
        }
    }
    let outcome = found
        .iter()
        .find_map(|r| {
            r.event
                .outcome
                .clone()
                .filter(|_| r.event.outcome_of.as_deref() == Some(id.as_str()))
        })
        .expect("an outcome for the unacknowledged intent");
    assert!(outcome.detail.starts_with("not done"), "{}", outcome.detail);
}
