//! One behavioural suite, run against every backend: JSONL, SQLite, and a real PostgreSQL
//! (feature `postgres`, started by `scripts/with-services`).
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap or index is a failed test"
)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{intent, refusal, temp_dir};
use portcullis_audit::{
    AuditError, AuditEvent, AuditLog, AuditOptions, AuditQuery, AuditSink, CheckpointSigner,
    EventKind, Outcome, OutcomeStatus, Redactor, RequestSummary, Violation, WriteAhead,
};
use portcullis_core::{Action, Effect};
use serde_json::json;

async fn records_in_order_and_verifies(log: Arc<AuditLog>) {
    let first = log.record(intent("alice", "env:checkout")).await.unwrap();
    let second = log.record(refusal("bob", "env:checkout")).await.unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    let report = log.verify(&[], &[]).await.unwrap().unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(hex::encode(report.head.hash), second.hash);
}

async fn group_commit_keeps_one_chain(log: Arc<AuditLog>) {
    let mut tasks = Vec::new();
    for i in 0..200 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.record(intent(&format!("user{i}"), "env:load"))
                .await
                .unwrap()
        }));
    }
    let mut seqs = BTreeSet::new();
    for task in tasks {
        seqs.insert(task.await.unwrap().seq);
    }
    assert_eq!(
        seqs,
        (1..=200).collect::<BTreeSet<_>>(),
        "every caller got its own place"
    );
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 200);
}

async fn queries_filter_and_page(log: Arc<AuditLog>) {
    for i in 0..10 {
        let who = if i % 2 == 0 { "alice" } else { "bob" };
        let event = if i % 3 == 0 {
            refusal(who, "env:a")
        } else {
            intent(who, "env:b")
        };
        log.record(event.with_correlation_id(format!("req-{i}")))
            .await
            .unwrap();
    }
    let alice = log
        .query(&AuditQuery {
            actor: Some("alice".into()),
            ..AuditQuery::all(100)
        })
        .await
        .unwrap();
    assert_eq!(alice.records.len(), 5);
    assert!(
        alice
            .records
            .iter()
            .all(|r| r.event.actor.subject == "alice")
    );

    let refused = log
        .query(&AuditQuery {
            effect: Some(Effect::NotApplicable),
            resource: Some("env:a".parse().unwrap()),
            ..AuditQuery::all(100)
        })
        .await
        .unwrap();
    assert_eq!(refused.records.len(), 4, "i = 0, 3, 6, 9");

    let one = log
        .query(&AuditQuery {
            correlation_id: Some("req-7".into()),
            ..AuditQuery::all(10)
        })
        .await
        .unwrap();
    assert_eq!(one.records.len(), 1);
    assert_eq!(one.records[0].seq, 8);

    let mut seen = Vec::new();
    let mut query = AuditQuery {
        kind: Some(EventKind::Intent),
        ..AuditQuery::all(3)
    };
    loop {
        let page = log.query(&query).await.unwrap();
        seen.extend(page.records.iter().map(|r| r.seq));
        match page.next_after {
            Some(after) => query.after_seq = Some(after),
            None => break,
        }
    }
    assert_eq!(seen, vec![2, 3, 5, 6, 8, 9]);

    let window = log
        .query(&AuditQuery {
            from_ms: Some(0),
            to_ms: Some(1),
            ..AuditQuery::all(10)
        })
        .await
        .unwrap();
    assert!(window.records.is_empty());
    assert!(log.query(&AuditQuery::all(0)).await.is_err());
}

async fn write_ahead_links_outcomes(log: Arc<AuditLog>) {
    let gate = WriteAhead::new(log.clone()).unwrap();
    let started = gate
        .intent(
            intent("alice", "env:checkout").with_request(RequestSummary {
                method: "POST".into(),
                target: "/v1/envs/checkout/prod/deploys".into(),
                ..RequestSummary::default()
            }),
        )
        .await
        .unwrap();
    let id = started.event().id.clone();
    let value = started
        .run(|proof| {
            assert_eq!(proof.receipt.seq, 1);
            async { Ok::<_, std::io::Error>("deploy-1") }
        })
        .await
        .unwrap();
    assert_eq!(value, "deploy-1");
    let found = log.get(&id).await.unwrap().unwrap();
    assert_eq!(found.event.event.kind, EventKind::Intent);
    let outcome = found.outcome.unwrap();
    assert_eq!(
        outcome.event.outcome.unwrap().status,
        OutcomeStatus::Succeeded
    );

    // A failing action is recorded as failed, and its error comes back.
    let failing = gate.intent(intent("alice", "env:x")).await.unwrap();
    let failing_id = failing.event().id.clone();
    let err = failing
        .run(|_| async { Err::<(), _>("host unreachable") })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("host unreachable"));
    let found = log.get(&failing_id).await.unwrap().unwrap();
    let outcome = found.outcome.unwrap().event.outcome.unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.detail, "host unreachable");

    // An explicit outcome.
    let manual = gate.intent(intent("alice", "env:y")).await.unwrap();
    manual.outcome(Outcome::succeeded("done")).await.unwrap();
    assert!(log.get("no-such-id").await.unwrap().is_none());
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 6);

    // A page's outcomes in one read: every intent's, keyed by its id; an intent still
    // waiting has none; a page without intents asks for nothing.
    let waiting = gate.intent(intent("alice", "env:z")).await.unwrap();
    let page = log.query(&AuditQuery::all(100)).await.unwrap().records;
    let outcomes = log.outcomes_of(&page).await.unwrap();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(
        outcomes[&id].event.outcome.as_ref().unwrap().status,
        OutcomeStatus::Succeeded
    );
    assert_eq!(
        outcomes[&failing_id].event.outcome.as_ref().unwrap().detail,
        "host unreachable"
    );
    assert!(!outcomes.contains_key(&waiting.event().id));
    for (intent_id, outcome) in &outcomes {
        assert_eq!(
            outcome.event.outcome_of.as_deref(),
            Some(intent_id.as_str())
        );
    }
    // Only the page's own intents: the last one alone has no outcome.
    let last = page
        .iter()
        .filter(|r| r.event.id == waiting.event().id)
        .cloned();
    assert!(
        log.outcomes_of(&last.collect::<Vec<_>>())
            .await
            .unwrap()
            .is_empty()
    );
    let only_outcomes: Vec<_> = page
        .into_iter()
        .filter(|r| r.event.kind == EventKind::Outcome)
        .collect();
    assert!(log.outcomes_of(&only_outcomes).await.unwrap().is_empty());
    waiting.outcome(Outcome::succeeded("late")).await.unwrap();
}

/// With `outcome_linger`, an outcome on its own waits for company (up to the linger), is
/// written together with the next event, and is durable when `record` returns either way.
async fn outcomes_linger_for_company(make: impl AsyncFn(AuditOptions) -> Arc<AuditLog>) {
    let log =
        make(AuditOptions::default().with_outcome_linger(std::time::Duration::from_secs(30))).await;
    let gate = WriteAhead::new(log.clone()).unwrap();
    let first = gate.intent(intent("alice", "env:a")).await.unwrap();
    let first_id = first.event().id.clone();
    let pending = tokio::spawn(async move { first.outcome(Outcome::succeeded("done")).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "a lone outcome waits for company");
    // The next intent carries it: both are written, well before the 30 s linger.
    let _next = gate.intent(intent("bob", "env:b")).await.unwrap();
    let carried = tokio::time::timeout(std::time::Duration::from_secs(10), pending).await;
    assert!(carried.is_ok(), "the outcome went out with the intent");
    carried.unwrap().unwrap().unwrap();
    assert!(log.get(&first_id).await.unwrap().unwrap().outcome.is_some());
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 3);

    // A short linger with no company: written when it runs out.
    let log =
        make(AuditOptions::default().with_outcome_linger(std::time::Duration::from_millis(20)))
            .await;
    let gate = WriteAhead::new(log.clone()).unwrap();
    let alone = gate.intent(intent("carol", "env:c")).await.unwrap();
    let written = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        alone.outcome(Outcome::failed("no")),
    )
    .await;
    assert!(
        written.is_ok(),
        "a lingering outcome is written when the linger runs out"
    );
    written.unwrap().unwrap();
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 2);
}

/// Submitted events (no one waits for their write) are written in queue order, and a read
/// or a flush after `submit` returns sees them.
async fn submitted_events_are_written_in_order(log: Arc<AuditLog>) {
    let gate = WriteAhead::new(log.clone()).unwrap();
    let started = gate.intent(intent("alice", "env:checkout")).await.unwrap();
    let id = started.event().id.clone();
    started
        .submit_outcome(Outcome::succeeded("deployed"))
        .await
        .unwrap();
    // The read waits for the submitted outcome: no sleep, no retry.
    let found = log.get(&id).await.unwrap().unwrap();
    let outcome = found.outcome.unwrap();
    assert_eq!(outcome.seq, 2);
    assert_eq!(outcome.event.outcome.unwrap().detail, "deployed");

    // Many at once, from many tasks, then one recorded and waited for: it comes last.
    let submits: Vec<_> = (0..50)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.submit(intent(&format!("u{i}"), "env:a")).await })
        })
        .collect();
    for submit in submits {
        submit.await.unwrap().unwrap();
    }
    log.submit(intent("last-submitted", "env:a")).await.unwrap();
    let recorded = log.record(intent("recorded", "env:a")).await.unwrap();
    assert_eq!(
        recorded.seq, 54,
        "a recorded event queues behind submitted ones"
    );
    log.flush().await.unwrap();
    let page = log.query(&AuditQuery::all(100)).await.unwrap().records;
    assert_eq!(page.len(), 54);
    assert_eq!(page[52].event.actor.subject, "last-submitted");
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 54);

    // Bad input is refused at once, and nothing is queued.
    let err = log
        .submit(intent("alice", "env:a").with_field("note", json!("line\nbreak")))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::ControlCharacter { .. }), "{err}");
    assert_eq!(log.head().await.unwrap().seq, 54);
    // With nothing submitted and pending, a flush still returns.
    log.flush().await.unwrap();
}

async fn bad_input_is_refused_before_writing(log: Arc<AuditLog>) {
    let err = log
        .record(intent("alice", "env:a").with_field("note", json!("line\nbreak")))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::ControlCharacter { .. }), "{err}");
    let err = log
        .record(intent("alice", "env:a").with_field("blob", json!("x".repeat(70_000))))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::TooLarge { .. }), "{err}");
    assert_eq!(log.head().await.unwrap().seq, 0, "nothing was written");
    log.record(intent("alice", "env:a")).await.unwrap();
    assert_eq!(log.head().await.unwrap().seq, 1);
}

async fn checkpoints_catch_truncation(log: Arc<AuditLog>, truncate: impl AsyncFnOnce()) {
    let (signer, _) = CheckpointSigner::generate().unwrap();
    for i in 0..5 {
        log.record(intent(&format!("u{i}"), "env:a")).await.unwrap();
    }
    let checkpoint = log.checkpoint(&signer).await.unwrap();
    assert_eq!(checkpoint.seq, 5);
    let report = log
        .verify(std::slice::from_ref(&checkpoint), signer.public_key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.checkpoints, 1);
    let (other, _) = CheckpointSigner::generate().unwrap();
    assert!(matches!(
        log.verify(std::slice::from_ref(&checkpoint), other.public_key())
            .await
            .unwrap(),
        Err(Violation::BadCheckpoint { .. })
    ));
    truncate().await;
    assert!(matches!(
        log.verify(std::slice::from_ref(&checkpoint), signer.public_key())
            .await
            .unwrap(),
        Err(Violation::Truncated {
            checkpoint_seq: 5,
            last_seq: 3
        })
    ));
}

async fn sensitive_fields_are_hmaced(make: impl AsyncFnOnce(AuditOptions) -> Arc<AuditLog>) {
    let key = b"per-log key, at least sixteen bytes";
    let options = AuditOptions::default().with_redactor(Some(
        Redactor::new(key, ["request.parameters.token", "fields.password"]).unwrap(),
    ));
    let log = make(options).await;
    let mut request = RequestSummary {
        method: "POST".into(),
        target: "/login".into(),
        ..RequestSummary::default()
    };
    request
        .parameters
        .insert("token".into(), json!("tok_very_secret"));
    request.parameters.insert("env".into(), json!("prod"));
    log.record(intent("alice", "env:a").with_request(request))
        .await
        .unwrap();
    log.record(intent("bob", "env:a").with_field("password", json!("hunter2")))
        .await
        .unwrap();
    let page = log.query(&AuditQuery::all(10)).await.unwrap();
    let stored = serde_json::to_string(&page.records[0].event).unwrap()
        + &serde_json::to_string(&page.records[1].event).unwrap();
    assert!(!stored.contains("tok_very_secret") && !stored.contains("hunter2"));
    assert!(
        stored.contains("prod"),
        "only the configured fields are replaced"
    );
    assert_eq!(
        log.find_redacted("request.parameters.token", &json!("tok_very_secret"))
            .await
            .unwrap(),
        vec![1]
    );
    assert_eq!(
        log.find_redacted("fields.password", &json!("hunter2"))
            .await
            .unwrap(),
        vec![2]
    );
    assert!(
        log.find_redacted("fields.password", &json!("hunter3"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(log.verify(&[], &[]).await.unwrap().is_ok());
}

/// Two instances on one database (two processes, say) write one chain: each notices when the
/// other has moved the head it remembers, and neither loses an event.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn two_instances_share_one_chain(a: AuditLog, b: AuditLog) {
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for round in 0..20 {
        // Bursts on each side, so both single-statement writes and conflicts happen.
        for i in 0..10 {
            let log = if (round + i) % 3 == 0 {
                a.clone()
            } else {
                b.clone()
            };
            tasks.push(tokio::spawn(async move {
                log.record(intent(&format!("u{round}-{i}"), "env:a"))
                    .await
                    .unwrap()
                    .seq
            }));
        }
        tokio::task::yield_now().await;
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap()), "a seq was handed out twice");
    }
    assert_eq!(seqs, (1..=200).collect());
    assert_eq!(a.verify(&[], &[]).await.unwrap().unwrap().records, 200);
    assert_eq!(b.verify(&[], &[]).await.unwrap().unwrap().records, 200);
}

mod jsonl {
    use super::*;
    use portcullis_audit::JsonlOptions;

    async fn open(dir: &std::path::Path) -> Arc<AuditLog> {
        Arc::new(AuditLog::jsonl(dir, JsonlOptions::default()).await.unwrap())
    }

    #[tokio::test]
    async fn suite() {
        records_in_order_and_verifies(open(&temp_dir("order")).await).await;
        group_commit_keeps_one_chain(open(&temp_dir("group")).await).await;
        queries_filter_and_page(open(&temp_dir("query")).await).await;
        write_ahead_links_outcomes(open(&temp_dir("wal")).await).await;
        submitted_events_are_written_in_order(open(&temp_dir("submit")).await).await;
        bad_input_is_refused_before_writing(open(&temp_dir("bad")).await).await;
        sensitive_fields_are_hmaced(async |options| {
            Arc::new(
                AuditLog::jsonl_with(temp_dir("hmac"), JsonlOptions::default(), options)
                    .await
                    .unwrap(),
            )
        })
        .await;
        outcomes_linger_for_company(async |options| {
            let dir = temp_dir(&format!("linger-{}", options.outcome_linger.as_millis()));
            Arc::new(
                AuditLog::jsonl_with(&dir, JsonlOptions::default(), options)
                    .await
                    .unwrap(),
            )
        })
        .await;
        let dir = temp_dir("trunc");
        let file = dir.join("audit-00000001.jsonl");
        checkpoints_catch_truncation(open(&dir).await, async || {
            let text = std::fs::read_to_string(&file).unwrap();
            let kept: Vec<&str> = text.lines().take(3).collect();
            std::fs::write(&file, kept.join("\n") + "\n").unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn rotation_keeps_the_chain_across_files_and_reopening() {
        let dir = temp_dir("rotate");
        let options = JsonlOptions::default().with_max_file_bytes(2_000);
        let log = AuditLog::jsonl(&dir, options.clone()).await.unwrap();
        for i in 0..40 {
            log.record(intent(&format!("u{i}"), "env:a")).await.unwrap();
        }
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert!(files > 3, "rotated into {files} files");
        assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 40);
        log.close().await.unwrap();
        let again = AuditLog::jsonl(&dir, options).await.unwrap();
        assert_eq!(again.head().await.unwrap().seq, 40);
        assert_eq!(again.record(intent("z", "env:a")).await.unwrap().seq, 41);
        assert_eq!(again.verify(&[], &[]).await.unwrap().unwrap().records, 41);
        let page = again
            .query(&AuditQuery {
                after_seq: Some(38),
                ..AuditQuery::all(10)
            })
            .await
            .unwrap();
        assert_eq!(
            page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [39, 40, 41]
        );
    }

    /// Reads of a log spread over many files (a few records each) start at the file that
    /// holds what they ask for, and still see every record exactly once: paging by cursor
    /// across file boundaries, `get` of the first and last events with their outcomes,
    /// outcomes of a page, an id that is not there, and a newest file left empty by a
    /// rotation.
    #[tokio::test]
    async fn reads_across_many_files_see_each_record_once() {
        let dir = temp_dir("many-files");
        let log = AuditLog::jsonl(&dir, JsonlOptions::default().with_max_file_bytes(2_000))
            .await
            .unwrap();
        let log = Arc::new(log);
        let gate = WriteAhead::new(log.clone()).unwrap();
        let mut intents = Vec::new();
        for i in 0..150 {
            let started = gate
                .intent(intent(&format!("u{}", i % 5), "env:a"))
                .await
                .unwrap();
            let id = started.event().id.clone();
            // Every third intent is left without an outcome.
            if i % 3 != 2 {
                started.outcome(Outcome::succeeded("done")).await.unwrap();
            }
            intents.push(id);
        }
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert!(files > 30, "rotated into {files} files");
        let total = log.head().await.unwrap().seq;
        assert_eq!(total, 250);

        // Paging by cursor: every seq once, in order, whatever file a page starts in.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = log
                .query(&AuditQuery {
                    after_seq: after,
                    ..AuditQuery::all(7)
                })
                .await
                .unwrap();
            seen.extend(page.records.iter().map(|r| r.seq));
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (1..=total).collect::<Vec<_>>());
        for after in [0, 1, 2, 3, 57, 100, 248, 249] {
            let page = log
                .query(&AuditQuery {
                    after_seq: Some(after),
                    ..AuditQuery::all(2)
                })
                .await
                .unwrap();
            assert_eq!(page.records.first().map(|r| r.seq), Some(after + 1));
        }
        let past = AuditQuery {
            after_seq: Some(total),
            ..AuditQuery::all(5)
        };
        assert!(log.query(&past).await.unwrap().records.is_empty());

        // get: first, middle, last; with and without an outcome.
        for (i, id) in [(0, &intents[0]), (74, &intents[74]), (149, &intents[149])] {
            let found = log.get(id).await.unwrap().unwrap();
            assert_eq!(&found.event.event.id, id);
            assert_eq!(found.outcome.is_some(), i % 3 != 2, "intent {i}");
            if let Some(outcome) = found.outcome {
                assert_eq!(outcome.event.outcome_of.as_deref(), Some(id.as_str()));
                assert!(outcome.seq > found.event.seq);
            }
        }
        assert!(log.get("no-such-id").await.unwrap().is_none());
        assert!(log.get("\"quoted\"").await.unwrap().is_none());

        // Outcomes of a page in the middle of the log.
        let page = log
            .query(&AuditQuery {
                after_seq: Some(120),
                kind: Some(EventKind::Intent),
                ..AuditQuery::all(10)
            })
            .await
            .unwrap();
        let outcomes = log.outcomes_of(&page.records).await.unwrap();
        for record in &page.records {
            let i = intents
                .iter()
                .position(|id| *id == record.event.id)
                .unwrap();
            assert_eq!(outcomes.contains_key(&record.event.id), i % 3 != 2);
        }
        assert!(!outcomes.is_empty());
    }

    /// The folder lock of a closed log can stay held for a moment: a process forked by
    /// another thread shares it until it execs. Opening waits that out instead of failing.
    #[tokio::test]
    async fn a_folder_lock_held_for_a_moment_is_waited_for() {
        let dir = temp_dir("brief-lock");
        std::fs::create_dir_all(&dir).unwrap();
        let holder = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("audit.lock"))
            .unwrap();
        fs4::FileExt::try_lock(&holder).unwrap();
        let released = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(holder);
        });
        let log = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap();
        released.join().unwrap();
        log.record(intent("a", "env:a")).await.unwrap();
        log.close().await.unwrap();
    }

    #[tokio::test]
    async fn one_writer_per_folder() {
        let dir = temp_dir("lock");
        let first = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap();
        let err = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("already open for writing"),
            "{err}"
        );
        first.record(intent("a", "env:a")).await.unwrap();
        // The CLI verifies and signs beside the running writer.
        let cli = env!("CARGO_BIN_EXE_portcullis-audit");
        let key = dir.join("checkpoint.pk8");
        let keygen = std::process::Command::new(cli)
            .args(["keygen", "--out", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(keygen.status.success());
        let public_key = String::from_utf8(keygen.stdout).unwrap();
        let checkpoint = std::process::Command::new(cli)
            .args([
                "checkpoint",
                dir.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(checkpoint.status.success(), "{checkpoint:?}");
        let checkpoints = dir.join("checkpoints.jsonl");
        std::fs::write(&checkpoints, &checkpoint.stdout).unwrap();
        let verified = std::process::Command::new(cli)
            .args([
                "verify",
                dir.to_str().unwrap(),
                "--checkpoints",
                checkpoints.to_str().unwrap(),
                "--public-key",
                public_key.trim(),
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&verified.stdout);
        assert!(out.contains("1 checkpoints verified"), "{out}");
        first.close().await.unwrap();
        AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap();
    }

    /// A record being written (no newline yet) is not a record: readers beside a live writer
    /// must not report it as tampering.
    #[tokio::test]
    async fn a_record_in_progress_is_not_tampering() {
        let dir = temp_dir("inprogress");
        let log = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap();
        for i in 0..3 {
            log.record(intent(&format!("u{i}"), "env:a")).await.unwrap();
        }
        let file = dir.join("audit-00000001.jsonl");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.extend_from_slice(br#"{"event":{"id":"still-being-writ"#);
        std::fs::write(&file, &bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-audit"))
            .args(["verify", dir.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.starts_with("OK: 3 records"), "{text}");
        assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 3);
        assert_eq!(
            log.query(&AuditQuery::all(10)).await.unwrap().records.len(),
            3
        );
    }

    /// Only bytes after the last newline can be a torn write. A complete last record that does
    /// not verify was tampered with: opening refuses, and the evidence stays on disk.
    #[tokio::test]
    async fn opening_never_cuts_a_tampered_record() {
        let dir = temp_dir("tampered-tail");
        let log = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap();
        for i in 0..3 {
            log.record(intent(&format!("u{i}"), "env:a")).await.unwrap();
        }
        log.close().await.unwrap();
        let file = dir.join("audit-00000001.jsonl");
        let text = std::fs::read_to_string(&file).unwrap();
        let last_start = text.trim_end().rfind('\n').unwrap() + 1;
        let tampered = format!(
            "{}{}",
            &text[..last_start],
            text[last_start..].replacen("\"u2\"", "\"u9\"", 1)
        );
        std::fs::write(&file, &tampered).unwrap();
        let err = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            tampered,
            "nothing was cut"
        );
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_on_open() {
        let dir = temp_dir("torn");
        let log = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap();
        for i in 0..3 {
            log.record(intent(&format!("u{i}"), "env:a")).await.unwrap();
        }
        log.close().await.unwrap();
        let file = dir.join("audit-00000001.jsonl");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.extend_from_slice(br#"{"event":{"id":"half-writ"#);
        std::fs::write(&file, &bytes).unwrap();
        let log = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap();
        assert_eq!(log.head().await.unwrap().seq, 3);
        assert_eq!(log.record(intent("u3", "env:a")).await.unwrap().seq, 4);
        assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 4);
    }

    /// A full disk: the write fails, the caller is told, and nothing is acknowledged.
    #[tokio::test]
    async fn a_full_disk_is_an_error_not_a_silent_drop() {
        let dir = temp_dir("full");
        std::os::unix::fs::symlink("/dev/full", dir.join("audit-00000001.jsonl")).unwrap();
        let log = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap();
        let err = log.record(intent("alice", "env:a")).await.unwrap_err();
        assert!(
            matches!(err, AuditError::Io { .. } | AuditError::Poisoned(_)),
            "{err}"
        );
        assert!(err.to_string().contains("audit-00000001.jsonl"), "{err}");
        assert!(log.record(intent("alice", "env:a")).await.is_err());
        // A submitted event is queued (nobody waits for it); its failed write is logged,
        // and a flush or a read after it still returns instead of waiting for it forever.
        log.submit(intent("alice", "env:b")).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), log.flush())
            .await
            .unwrap()
            .unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(10), log.head())
                .await
                .is_ok()
        );
        let gate = WriteAhead::new(Arc::new(log)).unwrap();
        assert!(
            gate.intent(intent("alice", "env:a")).await.is_err(),
            "no intent, no action"
        );
    }

    #[tokio::test]
    async fn tampering_is_reported_by_the_cli() {
        let dir = temp_dir("cli");
        let log = AuditLog::jsonl(&dir, JsonlOptions::default())
            .await
            .unwrap();
        for i in 0..4 {
            log.record(intent(&format!("u{i}"), "env:a")).await.unwrap();
        }
        log.close().await.unwrap();
        let cli = env!("CARGO_BIN_EXE_portcullis-audit");
        let ok = std::process::Command::new(cli)
            .args(["verify", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(ok.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK: 4 records"));

        let file = dir.join("audit-00000001.jsonl");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replacen("\"u2\"", "\"u9\"", 1)).unwrap();
        let bad = std::process::Command::new(cli)
            .args(["verify", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(1));
        let out = String::from_utf8_lossy(&bad.stdout);
        assert!(out.contains("record 3 was altered"), "{out}");
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    async fn open(tag: &str) -> (Arc<AuditLog>, String) {
        let path = temp_dir(tag).join("audit.db");
        let url = format!("sqlite://{}", path.display());
        (
            Arc::new(
                AuditLog::sqlite(&url, AuditOptions::default())
                    .await
                    .unwrap(),
            ),
            url,
        )
    }

    #[tokio::test]
    async fn suite() {
        records_in_order_and_verifies(open("order").await.0).await;
        group_commit_keeps_one_chain(open("group").await.0).await;
        queries_filter_and_page(open("query").await.0).await;
        write_ahead_links_outcomes(open("wal").await.0).await;
        submitted_events_are_written_in_order(open("submit").await.0).await;
        bad_input_is_refused_before_writing(open("bad").await.0).await;
        sensitive_fields_are_hmaced(async |options| {
            let url = format!("sqlite://{}", temp_dir("hmac").join("a.db").display());
            Arc::new(AuditLog::sqlite(&url, options).await.unwrap())
        })
        .await;
        outcomes_linger_for_company(async |options| {
            let url = format!(
                "sqlite://{}",
                temp_dir(&format!("linger-{}", options.outcome_linger.as_millis()))
                    .join("a.db")
                    .display()
            );
            Arc::new(AuditLog::sqlite(&url, options).await.unwrap())
        })
        .await;
        let (log, url) = open("trunc").await;
        checkpoints_catch_truncation(log, async || {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query("DELETE FROM portcullis_audit_records WHERE seq > 3")
                .execute(&pool)
                .await
                .unwrap();
        })
        .await;
    }

    /// A redacted field that is also an indexed column must not reach the column in clear.
    #[tokio::test]
    async fn redacted_values_never_reach_the_indexed_columns() {
        let url = format!("sqlite://{}", temp_dir("hmac-cols").join("a.db").display());
        let options = AuditOptions::default().with_redactor(Some(
            Redactor::new(
                b"per-log key, sixteen+ bytes",
                ["correlation_id", "actor.subject"],
            )
            .unwrap(),
        ));
        let log = AuditLog::sqlite(&url, options).await.unwrap();
        log.record(intent("alice-secret-name", "env:a").with_correlation_id("session-token-123"))
            .await
            .unwrap();
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let (actor, correlation, line): (String, String, String) =
            sqlx::query_as("SELECT actor, correlation_id, line FROM portcullis_audit_records")
                .fetch_one(&pool)
                .await
                .unwrap();
        for stored in [&actor, &correlation, &line] {
            assert!(!stored.contains("alice-secret-name"), "{stored}");
            assert!(!stored.contains("session-token-123"), "{stored}");
        }
        assert!(actor.starts_with("hmac-sha256:") && correlation.starts_with("hmac-sha256:"));
        assert_eq!(
            log.find_redacted("correlation_id", &json!("session-token-123"))
                .await
                .unwrap(),
            vec![1]
        );
    }

    #[tokio::test]
    async fn two_instances_share_one_chain() {
        let url = format!("sqlite://{}", temp_dir("shared").join("a.db").display());
        let open = || async {
            AuditLog::sqlite(&url, AuditOptions::default())
                .await
                .unwrap()
        };
        super::two_instances_share_one_chain(open().await, open().await).await;
    }

    /// A log written with the first schema (seq a separate index, full outcome_of index) is
    /// rebuilt on open: same records, same chain, seq now the rowid, and the lookups by
    /// outcome_of still use their (now partial) index.
    #[tokio::test]
    async fn a_first_schema_log_is_migrated_and_keeps_its_chain() {
        let dir = temp_dir("migrate-v1");
        let source = format!("sqlite://{}", dir.join("v2.db").display());
        let written = AuditLog::sqlite(&source, AuditOptions::default())
            .await
            .unwrap();
        let gate = WriteAhead::new(Arc::new(written)).unwrap();
        let mut intents = Vec::new();
        for i in 0..6 {
            let started = gate
                .intent(intent(&format!("u{i}"), "env:a"))
                .await
                .unwrap();
            intents.push(started.event().id.clone());
            started
                .run(|_| async { Ok::<_, std::io::Error>(()) })
                .await
                .unwrap();
        }

        // The same records in a database made with the first schema only.
        let old = dir.join("v1.db");
        let url = format!("sqlite://{}", old.display());
        // One connection: ATTACH belongs to the connection that ran it.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&old)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        sqlx::raw_sql(include_str!("../migrations/0001_records.sql"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE portcullis_audit_schema (version BIGINT PRIMARY KEY);
             INSERT INTO portcullis_audit_schema VALUES (1);",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("ATTACH DATABASE ? AS v2")
            .bind(dir.join("v2.db").display().to_string())
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO portcullis_audit_records SELECT * FROM v2.portcullis_audit_records",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let log = AuditLog::sqlite(&url, AuditOptions::default())
            .await
            .unwrap();
        let report = log.verify(&[], &[]).await.unwrap().unwrap();
        assert_eq!(report.records, 12);
        let found = log.get(&intents[3]).await.unwrap().unwrap();
        assert_eq!(
            found.outcome.unwrap().event.outcome_of.as_deref(),
            Some(intents[3].as_str())
        );
        // The chain goes on from the migrated head.
        let receipt = log.record(intent("u9", "env:b")).await.unwrap();
        assert_eq!(receipt.seq, 13);
        assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 13);

        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let table: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE name = 'portcullis_audit_records'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            table.contains("seq            INTEGER PRIMARY KEY"),
            "{table}"
        );
        for lookup in [
            "SELECT line FROM portcullis_audit_records WHERE outcome_of = ?",
            "SELECT line FROM portcullis_audit_records WHERE seq > 0 AND outcome_of IN (?, ?) ORDER BY seq",
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {lookup}"))
                    .bind("a")
                    .bind("b")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            assert!(
                plan.iter()
                    .any(|row| row.3.contains("portcullis_audit_by_outcome_of")),
                "{lookup}: {plan:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_deleted_row_is_found_by_the_cli() {
        let (log, url) = open("cli").await;
        for i in 0..5 {
            log.record(intent(&format!("u{i}"), "env:a")).await.unwrap();
        }
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("DELETE FROM portcullis_audit_records WHERE seq = 2")
            .execute(&pool)
            .await
            .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-audit"))
            .args(["verify", &url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("expected record 2, found 3"), "{text}");
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use common::fresh_postgres;

    async fn open(tag: &str) -> (Arc<AuditLog>, String) {
        let url = fresh_postgres(tag).await;
        (
            Arc::new(
                AuditLog::postgres(&url, AuditOptions::default())
                    .await
                    .unwrap(),
            ),
            url,
        )
    }

    #[tokio::test]
    async fn suite() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        records_in_order_and_verifies(open("order").await.0).await;
        group_commit_keeps_one_chain(open("group").await.0).await;
        queries_filter_and_page(open("query").await.0).await;
        write_ahead_links_outcomes(open("wal").await.0).await;
        submitted_events_are_written_in_order(open("submit").await.0).await;
        bad_input_is_refused_before_writing(open("bad").await.0).await;
        sensitive_fields_are_hmaced(async |options| {
            let url = fresh_postgres("hmac").await;
            Arc::new(AuditLog::postgres(&url, options).await.unwrap())
        })
        .await;
        outcomes_linger_for_company(async |options| {
            let url =
                fresh_postgres(&format!("linger_{}", options.outcome_linger.as_millis())).await;
            Arc::new(AuditLog::postgres(&url, options).await.unwrap())
        })
        .await;
        let (log, url) = open("trunc").await;
        checkpoints_catch_truncation(log, async || {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query("DELETE FROM portcullis_audit_records WHERE seq > 3")
                .execute(&pool)
                .await
                .unwrap();
        })
        .await;
    }

    /// The connection batches are written on is kept between batches. When the server
    /// drops it, the batch on it fails (its caller is told, nothing is acknowledged) and
    /// the next batch is written on a new connection, on the chain as it stands.
    #[tokio::test]
    async fn a_dropped_writer_connection_fails_one_batch_then_is_replaced() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        let (log, url) = open("dropped").await;
        for _ in 0..3 {
            log.record(intent("alice", "env:checkout")).await.unwrap();
        }
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(
            !killed.is_empty() && killed.iter().all(|k| *k),
            "{killed:?}"
        );
        assert!(log.record(intent("bob", "env:checkout")).await.is_err());
        let next = log.record(intent("carol", "env:checkout")).await.unwrap();
        assert_eq!(next.seq, 4, "the failed batch took no place in the chain");
        assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 4);
    }

    #[tokio::test]
    async fn two_instances_share_one_chain() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        let url = fresh_postgres("shared").await;
        let open = || async {
            AuditLog::postgres(&url, AuditOptions::default())
                .await
                .unwrap()
        };
        super::two_instances_share_one_chain(open().await, open().await).await;
    }

    /// Two instances each under steady load from several writers: neither starves. (An
    /// instance writing on its remembered head without the advisory lock kept taking the
    /// sequence numbers the other sealed under the lock, until the other gave up: a 503.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_under_steady_load_both_get_through() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        let url = fresh_postgres("steady").await;
        let open = || async {
            Arc::new(
                AuditLog::postgres(&url, AuditOptions::default())
                    .await
                    .unwrap(),
            )
        };
        let (a, b) = (open().await, open().await);
        let mut writers = Vec::new();
        for w in 0..16 {
            let log = if w % 2 == 0 { a.clone() } else { b.clone() };
            writers.push(tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0..100 {
                    if let Err(e) = log.record(intent(&format!("w{w}-{i}"), "env:a")).await {
                        failed.push(e.to_string());
                    }
                }
                failed
            }));
        }
        let mut failed = Vec::new();
        for w in writers {
            failed.extend(w.await.unwrap());
        }
        assert!(
            failed.is_empty(),
            "{} refused, e.g. {:?}",
            failed.len(),
            failed.first()
        );
        assert_eq!(a.verify(&[], &[]).await.unwrap().unwrap().records, 1600);
    }
}

/// Not durable sinks cannot guard actions.
#[test]
fn write_ahead_refuses_a_non_durable_sink() {
    let err = WriteAhead::new(Arc::new(portcullis_audit::TracingMirror)).unwrap_err();
    assert!(matches!(err, AuditError::NotDurable(_)), "{err}");
    let _ = AuditEvent::outcome_of;
    let _ = Action::READ;
}
