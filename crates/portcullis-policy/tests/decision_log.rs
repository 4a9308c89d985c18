//! Decision logs in a real (SQLite) audit log: what a record holds (OPA's layout), static
//! masks and mask policies, and a sink that cannot record.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::sync::Arc;

use portcullis_audit::{AuditLog, AuditQuery, AuditSink};
use portcullis_core::{AuthMethod, Effect, Principal, PrincipalKind};
use portcullis_policy::{
    Bundle, DecisionEntry, DecisionLog, EvalLimits, PolicyEngine, PolicyError, PolicyStore,
};
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
        .mask(["credentials.password", "/input/absent/path"])
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
    // OPA's field layout.
    assert_eq!(first.fields["decision_id"], json!("d-1"));
    assert_eq!(first.fields["path"], json!("app/allow"));
    assert_eq!(first.fields["bundles"], json!({"app": {"revision": "v9"}}));
    assert_eq!(first.fields["result"], json!(true));
    assert_eq!(
        first.fields["input"],
        json!({"user": "alice", "credentials": {"otp": "123"}})
    );
    assert_eq!(
        first.fields["erased"],
        json!(["/input/credentials/password"])
    );
    let timestamp = first.fields["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "{timestamp}"
    );
    assert!(!first.fields.contains_key("query"));
    let events: Vec<_> = records.iter().map(|r| &r.event).collect();
    assert!(!serde_json::to_string(&events).unwrap().contains("hunter2"));

    let second = &records[1].event;
    assert_eq!(
        second.decision.as_ref().unwrap().effect(),
        Effect::NotApplicable
    );
    // Undefined: no `result` at all, as OPA writes it.
    assert!(!second.fields.contains_key("result"), "{:?}", second.fields);
    assert!(!second.fields.contains_key("erased"));
    // Control characters in the input are kept, as escapes (audit records hold none).
    assert_eq!(second.fields["input"]["user"], json!("bob\\u{a}smith"));
    assert_eq!(second.fields["input"]["note\\u{9}"], json!("tab"));
    let third = &records[2].event;
    assert_eq!(third.decision.as_ref().unwrap().effect(), Effect::Deny);
    assert_eq!(third.fields["error"]["code"], json!("internal_error"));
    assert!(
        third.fields["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data.app.boom")
    );
    let fourth = &records[3].event;
    assert!(!fourth.fields.contains_key("input"), "{:?}", fourth.fields);
    assert!(!fourth.fields.contains_key("result"));
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
    // An input over the audit log's event size cap: refused as the caller's input (it is
    // refused every time, so a 413 for the sidecar), and nothing is recorded.
    let huge = json!({"user": "x".repeat(100 * 1024)});
    let outcome = store.evaluate("app/allow", &huge);
    assert!(matches!(
        log.record("data.app.allow", Some(&huge), &outcome, None)
            .await,
        Err(PolicyError::Input(_))
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

/// The store with a second bundle holding `package system.log` written as `mask`.
fn store_with_mask(mask: &str) -> Arc<PolicyStore> {
    let store = store();
    store
        .activate(
            Bundle::from_files(
                "logmask",
                [
                    (
                        ".manifest".to_owned(),
                        br#"{"revision": "m1", "roots": ["system/log"]}"#.to_vec(),
                    ),
                    (
                        "system/log/mask.rego".to_owned(),
                        format!("package system.log\n{mask}\n").into_bytes(),
                    ),
                ],
            )
            .unwrap(),
        )
        .unwrap();
    Arc::new(store)
}

type Fields = serde_json::Map<String, serde_json::Value>;

/// Logs one decision on `app/allow` with `input` through a log masked by `mask`'s policy,
/// and returns the record's fields and the whole record as text.
async fn logged_with_mask(mask: &str, input: serde_json::Value) -> (Fields, String) {
    let audit = Arc::new(
        AuditLog::sqlite("sqlite::memory:", Default::default())
            .await
            .unwrap(),
    );
    let store = store_with_mask(mask);
    let log = DecisionLog::new(audit.clone(), sidecar())
        .mask(["/input/static"])
        .unwrap()
        .mask_policy(store.clone())
        .labels([("id", "sidecar-1"), ("version", "1.2.3")]);
    let outcome = store.evaluate("app/allow", &input);
    let entry = DecisionEntry::new("app/allow", Some(&input), &outcome)
        .decision_id("d-7")
        .requested_by("127.0.0.1:5000")
        .metric("timer_rego_query_eval_ns", 1234);
    log.log(&entry).await.unwrap();
    let records = audit.query(&AuditQuery::all(10)).await.unwrap().records;
    assert_eq!(records.len(), 1);
    assert!(audit.verify(&[], &[]).await.unwrap().is_ok());
    let event = &records.first().unwrap().event;
    let text = serde_json::to_string(event).unwrap();
    let fields = event.fields.clone().into_iter().collect();
    (fields, text)
}

#[tokio::test]
async fn a_mask_policy_erases_and_upserts_as_opa_does() {
    let mask = r#"
mask contains "/input/password"
mask contains "/input/absent"
mask contains {"op": "upsert", "path": "/input/card/number", "value": "****"} if input.input.card
mask contains "/input/user" if input.path == "app/allow"
mask contains "/result" if input.decision_id == "no such id"
"#;
    let input = json!({
        "user": "alice", "password": "hunter2", "static": "s3cret",
        "card": {"number": "4111111111111111"}, "keep": 1
    });
    let (fields, text) = logged_with_mask(mask, input).await;
    assert_eq!(
        fields["input"],
        json!({"card": {"number": "****"}, "keep": 1})
    );
    let mut erased: Vec<String> = serde_json::from_value(fields["erased"].clone()).unwrap();
    erased.sort();
    assert_eq!(erased, ["/input/password", "/input/static", "/input/user"]);
    assert_eq!(fields["masked"], json!(["/input/card/number"]));
    // The decision itself is untouched (alice is allowed), and the rest of OPA's layout.
    assert_eq!(fields["result"], json!(true));
    assert_eq!(
        fields["bundles"],
        json!({"app": {"revision": "v9"}, "logmask": {"revision": "m1"}})
    );
    assert_eq!(
        fields["labels"],
        json!({"id": "sidecar-1", "version": "1.2.3"})
    );
    assert_eq!(fields["metrics"], json!({"timer_rego_query_eval_ns": 1234}));
    assert_eq!(fields["requested_by"], json!("127.0.0.1:5000"));
    for secret in ["hunter2", "s3cret", "4111111111111111"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test]
async fn a_mask_policy_can_erase_the_result() {
    let (fields, _) =
        logged_with_mask(r#"mask contains "/result""#, json!({"user": "alice"})).await;
    assert!(!fields.contains_key("result"), "{fields:?}");
    assert_eq!(fields["erased"], json!(["/result"]));
    assert_eq!(fields["input"], json!({"user": "alice"}));
}

#[tokio::test]
async fn a_failing_or_malformed_mask_policy_erases_the_whole_input() {
    for mask in [
        // An evaluation error: a complete rule with two values.
        r#"mask := x if some x in ["/input/a", "/input/b"]"#,
        // Not a set of pointers.
        r#"mask := "/input/password""#,
        // A pointer outside /input and /result.
        r#"mask contains "/labels/id""#,
        r#"mask contains {"op": "upsert", "path": "/input/password"}"#,
        r#"mask contains {"op": "rot13", "path": "/input/password"}"#,
        "mask contains 7",
    ] {
        let input = json!({"user": "alice", "password": "hunter2"});
        let (fields, text) = logged_with_mask(mask, input).await;
        assert!(!fields.contains_key("input"), "{mask}: {fields:?}");
        assert_eq!(fields["erased"], json!(["/input"]), "{mask}");
        assert!(
            fields["mask_error"].as_str().is_some(),
            "{mask}: {fields:?}"
        );
        assert!(!text.contains("hunter2"), "{mask}: {text}");
        assert!(!text.contains("alice"), "{mask}: {text}");
    }
}
