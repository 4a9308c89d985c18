//! Decision logs in a real (SQLite) audit log: what a record holds, masking, and a sink
//! that cannot record.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::sync::Arc;

use portcullis_audit::{AuditLog, AuditQuery, AuditSink};
use portcullis_core::{AuthMethod, Effect, Principal, PrincipalKind};
use portcullis_policy::{Bundle, DecisionLog, EvalLimits, PolicyEngine, PolicyError, PolicyStore};
use serde_json::json;

fn store() -> PolicyStore {
    let store = PolicyStore::in_memory(EvalLimits::default());
    store
        .activate(
            Bundle::from_files(
                "app",
                [
                    (
                        ".manifest".to_owned(),
                        br#"{"revision": "v9", "roots": ["app"]}"#.to_vec(),
                    ),
                    (
                        "app/p.rego".to_owned(),
                        // `boom` has two values: an evaluation error (a conflict).
                        b"package app\nallow if input.user == \"alice\"\nboom := x if some x in [1, 2]"
                            .to_vec(),
                    ),
                ],
            )
            .unwrap(),
        )
        .unwrap();
    store
}

fn sidecar() -> Principal {
    Principal::builder(
        PrincipalKind::Service,
        "policy-sidecar",
        AuthMethod::from_static("spiffe"),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn decisions_are_recorded_with_revision_result_and_masked_input() {
    let audit = Arc::new(
        AuditLog::sqlite("sqlite::memory:", Default::default())
            .await
            .unwrap(),
    );
    let log = DecisionLog::new(audit.clone(), sidecar())
        .mask(["credentials.password", "absent.path"])
        .unwrap();
    let store = store();
    let input = json!({"user": "alice", "credentials": {"password": "hunter2", "otp": "123"}});
    let allowed = store.evaluate("app/allow", &input);
    log.record("data.app.allow", Some(&input), &allowed, Some("d-1"))
        .await
        .unwrap();
    let nobody = json!({"user": "bob\nsmith", "note\t": "tab"});
    let undefined = store.evaluate("app/allow", &nobody);
    log.record("data.app.allow", Some(&nobody), &undefined, None)
        .await
        .unwrap();
    let failed = store.evaluate("app/boom", &nobody);
    assert!(failed.is_err());
    log.record("data.app.boom", Some(&nobody), &failed, None)
        .await
        .unwrap();
    // A decision made without input records none.
    let without = store.evaluate_input("app/allow", None);
    log.record("data.app.allow", None, &without, None)
        .await
        .unwrap();

    let records = audit.query(&AuditQuery::all(10)).await.unwrap().records;
    assert_eq!(records.len(), 4);
    let first = &records[0].event;
    assert_eq!(first.actor.subject, "policy-sidecar");
    assert_eq!(first.resource.to_string(), "policy_rule:data.app.allow");
    assert_eq!(first.decision.as_ref().unwrap().effect(), Effect::Allow);
    assert_eq!(first.correlation_id.as_deref(), Some("d-1"));
    assert_eq!(first.fields["revisions"], json!({"app": "v9"}));
    assert_eq!(first.fields["result"], json!(true));
    assert_eq!(
        first.fields["input"],
        json!({"user": "alice", "credentials": {"otp": "123"}})
    );
    assert_eq!(first.fields["erased"], json!(["credentials.password"]));
    let events: Vec<_> = records.iter().map(|r| &r.event).collect();
    assert!(!serde_json::to_string(&events).unwrap().contains("hunter2"));

    let second = &records[1].event;
    assert_eq!(
        second.decision.as_ref().unwrap().effect(),
        Effect::NotApplicable
    );
    assert_eq!(second.fields["defined"], json!(false));
    // Control characters in the input are kept, as escapes (audit records hold none).
    assert_eq!(second.fields["input"]["user"], json!("bob\\u{a}smith"));
    assert_eq!(second.fields["input"]["note\\u{9}"], json!("tab"));
    let third = &records[2].event;
    assert_eq!(third.decision.as_ref().unwrap().effect(), Effect::Deny);
    assert!(
        third.fields["error"]
            .as_str()
            .unwrap()
            .contains("data.app.boom")
    );
    let fourth = &records[3].event;
    assert!(!fourth.fields.contains_key("input"), "{:?}", fourth.fields);
    assert_eq!(fourth.fields["defined"], json!(false));
    // A refused bundle is audited too.
    let refused = PolicyError::TestFailed {
        bundle: "app".into(),
        test: "data.app.test_x".into(),
        detail: "undefined\nat line 2".into(),
    };
    log.record_refused_bundle("app", Some("v10"), &refused)
        .await
        .unwrap();
    let records = audit.query(&AuditQuery::all(10)).await.unwrap().records;
    let last = &records[4].event;
    assert_eq!(last.resource.to_string(), "policy_bundle:app");
    assert_eq!(last.action.as_str(), "activate");
    assert_eq!(last.decision.as_ref().unwrap().effect(), Effect::Deny);
    assert_eq!(last.fields["revision"], json!("v10"));
    assert!(last.fields["error"].as_str().unwrap().contains("test_x"));
    assert!(audit.verify(&[], &[]).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_decision_that_cannot_be_recorded_is_an_error() {
    let dir = std::env::temp_dir().join(format!("portcullis-decision-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let audit = AuditLog::jsonl(&dir, Default::default()).await.unwrap();
    let sink: Arc<dyn AuditSink> = Arc::new(audit);
    let log = DecisionLog::new(sink, sidecar());
    let store = store();
    // An input over the audit log's event size cap.
    let huge = json!({"user": "x".repeat(100 * 1024)});
    let outcome = store.evaluate("app/allow", &huge);
    assert!(matches!(
        log.record("data.app.allow", Some(&huge), &outcome, None)
            .await,
        Err(PolicyError::DecisionLog(_))
    ));
    assert!(
        DecisionLog::new(
            Arc::new(
                AuditLog::sqlite("sqlite::memory:", Default::default())
                    .await
                    .unwrap()
            ),
            sidecar()
        )
        .mask(["a..b"])
        .is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
