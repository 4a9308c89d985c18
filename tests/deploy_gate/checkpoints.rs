//! The audit log as an attacker who can write its SQLite file leaves it while the service
//! is stopped: a changed newest row keeps deploy-gate from starting (rather than have it
//! chain new records onto the change), and with `[audit] checkpoint_dir` a log truncated,
//! or rewritten and chained anew, is found by the next start and by `portcullis-audit
//! verify --checkpoints`.
//!
//! The CLI is the `portcullis-audit` binary cargo builds next to this test
//! (`target/<profile>/portcullis-audit`): `cargo test --workspace` builds it; when running
//! this file alone, build it first with `cargo build -p portcullis-audit`.

use std::path::Path;

use super::*;

/// The `portcullis-audit` CLI built into this test's profile folder.
fn audit_cli() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join(format!("portcullis-audit{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo build -p portcullis-audit` builds it (`cargo test --workspace` does too)",
        path.display()
    );
    path
}

/// Runs the CLI: its exit code and standard output.
fn cli(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(audit_cli())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code(), format!("{stdout}{stderr}"))
}

/// The audit database of a server folder, as the CLI and sqlx name it.
fn audit_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.0.join("data").join("audit.db").display())
}

async fn audit_db(dir: &TempDir) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&audit_url(dir)).await.unwrap()
}

/// Starts deploy-gate on `dir`, which must refuse to start: its standard error.
async fn refused_start(dir: &TempDir) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(binary())
            .arg("--config")
            .arg(dir.0.join("deploy-gate.toml"))
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("deploy-gate started (it was still running after 60 s)")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "deploy-gate started: {stderr}");
    stderr
}

/// A server that recorded three deploys, stopped cleanly (every outcome written): its
/// folder and the admin's token (printed only at the first start).
async fn three_deploys(config: &str) -> (TempDir, String) {
    let s = Server::start(config).await;
    let admin = s.admin();
    for _ in 0..3 {
        let (status, body) = s.deploy(&admin, "staging", "").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, dir) = s.terminate().await;
    assert!(status.success(), "{status}");
    (dir, admin)
}

/// The newest record holding `needle`, and the newest record of all.
async fn newest(pool: &sqlx::SqlitePool, needle: &str) -> (i64, i64) {
    let with: i64 = sqlx::query_scalar(
        "SELECT MAX(seq) FROM portcullis_audit_records WHERE instr(line, ?) > 0",
    )
    .bind(needle)
    .fetch_one(pool)
    .await
    .unwrap();
    let last: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM portcullis_audit_records")
        .fetch_one(pool)
        .await
        .unwrap();
    (with, last)
}

#[tokio::test]
async fn a_changed_audit_head_keeps_the_service_from_starting() {
    let (dir, admin) = three_deploys(&full_config(600, SQLITE_AUDIT)).await;
    let pool = audit_db(&dir).await;
    let (_, last) = newest(&pool, "").await;

    // The `hash` column of the newest row, which new records would be chained to.
    let hash: String =
        sqlx::query_scalar("SELECT hash FROM portcullis_audit_records WHERE seq = ?")
            .bind(last)
            .fetch_one(&pool)
            .await
            .unwrap();
    let set_hash = |value: String| {
        sqlx::query("UPDATE portcullis_audit_records SET hash = ? WHERE seq = ?")
            .bind(value)
            .bind(last)
    };
    set_hash("f".repeat(64)).execute(&pool).await.unwrap();
    let stderr = refused_start(&dir).await;
    for expected in [
        "does not verify",
        &format!("record {last}: its indexed column `hash`"),
        &format!("portcullis-audit verify {}", audit_url(&dir)),
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in: {stderr}");
    }
    // Put back, the log opens and the chain goes on from the record as it was written.
    set_hash(hash).execute(&pool).await.unwrap();
    pool.close().await;
    let s = Server::start_in(dir).await;
    assert_eq!(s.deploy(&admin, "staging", "").await.0, StatusCode::CREATED);
    let (_, dir) = s.terminate().await;
    let (code, out) = cli(&["verify", &audit_url(&dir)]);
    assert_eq!(code, Some(0), "{out}");

    // The newest deploy's build id, as the outside attack changed it (12345 -> 66).
    let pool = audit_db(&dir).await;
    let (intent, last) = newest(&pool, "\"build_id\":\"12345\"").await;
    assert!(
        last - intent < 64,
        "the intent is among the records opening checks"
    );
    sqlx::query(
        "UPDATE portcullis_audit_records \
         SET line = replace(line, '\"build_id\":\"12345\"', '\"build_id\":\"66\"') WHERE seq = ?",
    )
    .bind(intent)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let stderr = refused_start(&dir).await;
    assert!(
        stderr.contains(&format!("record {intent} was altered")),
        "{stderr}"
    );
    // The CLI reads the log the service refuses, and reports the same record.
    let (code, out) = cli(&["verify", &audit_url(&dir)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("record {intent} was altered")),
        "{out}"
    );
}

/// A config whose audit log writes signed checkpoints into `anchor/` beside (not in) the
/// data dir, every second.
fn checkpointed_config() -> String {
    let audit = format!("{SQLITE_AUDIT}\ncheckpoint_dir = \"anchor\"\ncheckpoint_seconds = 1");
    full_config(600, &audit)
}

/// `verify` with the anchor's checkpoints and public key.
fn verify_with_checkpoints(dir: &TempDir) -> (Option<i32>, String) {
    let anchor = dir.0.join("anchor");
    let key = std::fs::read_to_string(anchor.join("public-key")).unwrap();
    cli(&[
        "verify",
        &audit_url(dir),
        "--checkpoints",
        anchor.join("checkpoints.jsonl").to_str().unwrap(),
        "--public-key",
        key.trim(),
    ])
}

/// The sequence number of the newest checkpoint.
fn last_checkpoint(dir: &TempDir) -> i64 {
    let text = std::fs::read_to_string(dir.0.join("anchor").join("checkpoints.jsonl")).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    last["seq"].as_i64().unwrap()
}

#[tokio::test]
async fn checkpoints_reveal_a_truncated_audit_log() {
    let s = Server::start(&checkpointed_config()).await;
    for _ in 0..3 {
        assert_eq!(
            s.deploy(&s.admin(), "staging", "").await.0,
            StatusCode::CREATED
        );
    }
    // Checkpoints are signed while the service runs, not only when it stops.
    let checkpoints = s.dir.0.join("anchor").join("checkpoints.jsonl");
    let signed = tokio::time::timeout(Duration::from_secs(20), async {
        while !std::fs::read_to_string(&checkpoints).is_ok_and(|t| !t.is_empty()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(signed.is_ok(), "no checkpoint within 20 s");
    let (status, dir) = s.terminate().await;
    assert!(status.success(), "{status}");
    let key_mode = std::fs::metadata(dir.0.join("data").join("audit-checkpoint.pk8"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );

    // The one at shutdown covers every record.
    let pool = audit_db(&dir).await;
    let (_, last) = newest(&pool, "").await;
    assert_eq!(last_checkpoint(&dir), last);
    let (code, out) = verify_with_checkpoints(&dir);
    assert_eq!(code, Some(0), "{out}");

    // The two newest records deleted: the rest is a consistent chain, which opening alone
    // would accept.
    sqlx::query("DELETE FROM portcullis_audit_records WHERE seq > ?")
        .bind(last - 2)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(cli(&["verify", &audit_url(&dir)]).0, Some(0));
    let (code, out) = verify_with_checkpoints(&dir);
    assert_eq!(code, Some(1), "{out}");
    // (The first checkpoint past the end is named: one signed while running may be.)
    assert!(
        out.contains(&format!(
            "the log ends at record {}, but a signed checkpoint covers",
            last - 2
        )) && out.contains("truncated"),
        "{out}"
    );
    let stderr = refused_start(&dir).await;
    assert!(
        stderr.contains("does not match its signed checkpoints") && stderr.contains("truncated"),
        "{stderr}"
    );
}

#[tokio::test]
async fn checkpoints_reveal_a_rewritten_and_rechained_audit_log() {
    let (dir, _) = three_deploys(&checkpointed_config()).await;
    let pool = audit_db(&dir).await;
    let (intent, last) = newest(&pool, "\"build_id\":\"12345\"").await;
    assert_eq!(last_checkpoint(&dir), last);

    // The newest deploy's build id changed, and every record from it on sealed again
    // after its predecessor: a chain consistent in itself.
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT seq, line FROM portcullis_audit_records WHERE seq >= ? ORDER BY seq",
    )
    .bind(intent - 1)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut prev = serde_json::from_str::<Value>(&rows[0].1).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    for (seq, line) in &rows[1..] {
        let mut record: Value = serde_json::from_str(&line.replace("\"12345\"", "\"66\"")).unwrap();
        record["prev"] = prev.clone().into();
        let decoded =
            portcullis::audit::decode(serde_json::to_string(&record).unwrap().as_bytes()).unwrap();
        prev = hex::encode(decoded.computed_hash);
        record["hash"] = prev.clone().into();
        sqlx::query("UPDATE portcullis_audit_records SET line = ?, hash = ? WHERE seq = ?")
            .bind(serde_json::to_string(&record).unwrap())
            .bind(&prev)
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    assert_eq!(
        cli(&["verify", &audit_url(&dir)]).0,
        Some(0),
        "without checkpoints the rewrite passes"
    );
    let (code, out) = verify_with_checkpoints(&dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("differs from the signed checkpoint"), "{out}");
    let stderr = refused_start(&dir).await;
    assert!(
        stderr.contains("does not match its signed checkpoints")
            && stderr.contains(&format!("record {last} differs")),
        "{stderr}"
    );
}

#[tokio::test]
async fn checkpoint_settings_are_checked_at_start() {
    for (audit, expected) in [
        (
            "checkpoint_dir = \"anchor\"\ncheckpoint_seconds = 0",
            "checkpoint_seconds = 0 is not between 1 and 86400",
        ),
        (
            "checkpoint_seconds = 5",
            "checkpoint_seconds and checkpoint_key need checkpoint_dir",
        ),
        (
            "checkpoint_dir = \"anchor\"\ncheckpoint_key = \"missing.pk8\"",
            "make one with `portcullis-audit keygen --out",
        ),
    ] {
        let dir = TempDir::new();
        let config = full_config(600, &format!("{SQLITE_AUDIT}\n{audit}"));
        std::fs::write(dir.0.join("deploy-gate.toml"), config).unwrap();
        std::fs::write(dir.0.join("users.toml"), users_file()).unwrap();
        std::fs::write(dir.0.join("totp.toml"), "").unwrap();
        let stderr = refused_start(&dir).await;
        assert!(stderr.contains(expected), "{audit}: {stderr}");
    }
}
