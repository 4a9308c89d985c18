//! Property tests: any single-byte change, deletion, swap or insertion of records is
//! detected by the verifier.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::OnceLock;

use common::{intent, temp_dir};
use portcullis_audit::{AuditLog, AuditSink, JsonlOptions, verify_lines};
use proptest::prelude::*;

const RECORDS: usize = 12;

/// A real log of twelve records, written once and read back as lines.
fn lines() -> &'static Vec<Vec<u8>> {
    static LINES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let dir = temp_dir("tamper");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let log = AuditLog::jsonl(&dir, JsonlOptions::default())
                .await
                .unwrap();
            for i in 0..RECORDS {
                log.record(
                    intent(&format!("user{i}"), "env:checkout")
                        .with_field("n", serde_json::json!(i)),
                )
                .await
                .unwrap();
            }
        });
        let text = std::fs::read(dir.join("audit-00000001.jsonl")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    })
}

fn verifies(lines: &[Vec<u8>]) -> bool {
    verify_lines(lines.iter().map(Vec::as_slice), &[], &[]).is_ok()
}

#[test]
fn the_untouched_log_verifies() {
    assert_eq!(lines().len(), RECORDS);
    assert!(verifies(lines()));
}

#[test]
fn an_upper_case_hash_digit_is_a_change_too() {
    let mut tampered = lines().clone();
    let text = String::from_utf8(tampered[4].clone()).unwrap();
    let at = text.find("\"hash\":\"").unwrap() + 8;
    let digit = text[at..].find(|c: char| c.is_ascii_lowercase()).unwrap() + at;
    let mut bytes = text.into_bytes();
    bytes[digit] = bytes[digit].to_ascii_uppercase();
    tampered[4] = bytes;
    assert!(!verifies(&tampered));
}

/// The outside finding: a line rewritten with a duplicate key (`"actor"` twice: a parser
/// that keeps the last sees the original, one that keeps the first sees `mallory`) passed
/// `verify`, which re-encoded what it parsed. So did extra whitespace or `\u` escapes. The
/// stored bytes themselves must hash to the stored hash.
#[test]
fn a_line_rewritten_with_the_same_parsed_meaning_is_a_change_too() {
    let original = String::from_utf8(lines()[4].clone()).unwrap();
    let duplicate_key = original.replacen(
        "{\"event\":{",
        "{\"event\":{\"actor\":{\"subject\":\"mallory\"},",
        1,
    );
    let whitespace = original.replacen("{\"event\":", "{\"event\": ", 1);
    let escaped = original.replacen("\"event\"", "\"ev\\u0065nt\"", 1);
    for changed in [duplicate_key, whitespace, escaped] {
        assert_ne!(changed, original);
        let mut tampered = lines().clone();
        tampered[4] = changed.clone().into_bytes();
        assert!(!verifies(&tampered), "{changed}");
    }
}

/// The README's recipe for other languages: the hashed bytes are the stored line with its
/// `,"hash":"H"` member cut out; non-ASCII is stored raw, not `\u`-escaped.
#[tokio::test]
async fn the_readme_recipe_verifies_a_real_log() {
    let dir = temp_dir("recipe");
    let log = AuditLog::jsonl(&dir, JsonlOptions::default())
        .await
        .unwrap();
    let fields = serde_json::json!({"name": "Zoë \"q\" \\ /😀", "ratio": 0.925_933_892_649_635_9, "big": 1e300});
    for i in 0..3 {
        log.record(
            intent(&format!("usér{i}"), "env_stage:café/prod").with_field("x", fields.clone()),
        )
        .await
        .unwrap();
    }
    log.close().await.unwrap();
    let text = std::fs::read_to_string(dir.join("audit-00000001.jsonl")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut prev = "0".repeat(64);
    for (seq, line) in (1..).zip(text.lines()) {
        assert!(
            line.contains("usér") && line.contains("café") && line.contains("😀"),
            "{line}"
        );
        assert!(!line.contains("\\u"), "{line}");
        let at = line.rfind(",\"hash\":\"").unwrap();
        let hash = &line[at + 9..at + 9 + 64];
        let cut = format!("{}{}", &line[..at], &line[at + 9 + 64 + 1..]);
        assert_eq!(
            cut,
            format!(
                "{},\"prev\":\"{prev}\",\"seq\":{seq},\"v\":1}}",
                &line[..at]
            )
        );
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cut.as_bytes());
        assert_eq!(hex::encode(digest.as_ref()), hash);
        prev = hash.to_owned();
    }
}

/// A float whose shortest form serde_json's default parser reads one unit off: its record,
/// untouched, verifies, and the log opens again (opening checks the last record).
#[tokio::test]
async fn a_record_holding_a_float_verifies_and_reopens() {
    let dir = temp_dir("float");
    let log = AuditLog::jsonl(&dir, JsonlOptions::default())
        .await
        .unwrap();
    log.record(
        intent("alice", "env:a").with_field("ratio", serde_json::json!(0.925_933_892_649_635_9)),
    )
    .await
    .unwrap();
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 1);
    log.close().await.unwrap();
    let log = AuditLog::jsonl(&dir, JsonlOptions::default())
        .await
        .unwrap();
    assert_eq!(log.verify(&[], &[]).await.unwrap().unwrap().records, 1);
    log.close().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #[test]
    fn any_byte_change_is_detected(line in 0..RECORDS, at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut tampered = lines().clone();
        let target = &mut tampered[line];
        let i = at.index(target.len());
        target[i] ^= xor;
        prop_assert!(!verifies(&tampered));
    }

    #[test]
    fn any_deletion_but_the_last_is_detected(line in 0..RECORDS - 1) {
        let mut tampered = lines().clone();
        tampered.remove(line);
        prop_assert!(!verifies(&tampered));
    }

    #[test]
    fn any_swap_is_detected(a in 0..RECORDS, b in 0..RECORDS) {
        prop_assume!(a != b);
        let mut tampered = lines().clone();
        tampered.swap(a, b);
        prop_assert!(!verifies(&tampered));
    }

    #[test]
    fn any_insertion_is_detected(copy in 0..RECORDS, at in 0..=RECORDS) {
        // Inserting a copy of a genuine record: a replay.
        let mut tampered = lines().clone();
        let record = tampered[copy].clone();
        tampered.insert(at, record);
        prop_assert!(!verifies(&tampered));
    }

    #[test]
    fn a_rewritten_record_with_a_fresh_hash_breaks_the_next_link(line in 0..RECORDS - 1) {
        // The attacker edits a record and recomputes its hash: the next record's `prev`
        // no longer matches.
        let mut tampered = lines().clone();
        let mut value: serde_json::Value = serde_json::from_slice(&tampered[line]).unwrap();
        value["event"]["actor"]["subject"] = "mallory".into();
        let object = value.as_object_mut().unwrap();
        object.remove("hash");
        let canonical = serde_json::to_vec(&object).unwrap();
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical);
        object.insert("hash".into(), hex::encode(hash.as_ref()).into());
        tampered[line] = serde_json::to_vec(&value).unwrap();
        let first_error = verify_lines(tampered.iter().map(Vec::as_slice), &[], &[]).unwrap_err();
        prop_assert_eq!(
            first_error,
            portcullis_audit::Violation::BrokenLink { seq: u64::try_from(line).unwrap() + 2 }
        );
    }
}
