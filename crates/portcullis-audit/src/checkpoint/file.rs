//! [`CheckpointFile`]: a service's signed checkpoints, appended to a file in a folder that
//! whoever can write the log cannot rewrite.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::sink::jsonl::{TAIL_BLOCK, read_tail};
use crate::{AuditError, AuditLog, Checkpoint, CheckpointSigner, VerifyReport, Violation};

/// The file of a [`CheckpointFile`]'s checkpoints: one JSON object a line (the README's
/// checkpoint format), in the order they were signed. `portcullis-audit verify --checkpoints`
/// reads it.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

/// The file of a [`CheckpointFile`]'s public key: the signer's raw Ed25519 public key in
/// lower-case hex and a newline, for `portcullis-audit verify --public-key`.
pub const PUBLIC_KEY_FILE: &str = "public-key";

/// Signed checkpoints of one log, appended to `DIR/checkpoints.jsonl`, with the signer's
/// public key in `DIR/public-key`. A verifier given both detects a log truncated after a
/// checkpoint, or rewritten and chained anew up to one.
///
/// The checkpoints protect only as far as the folder does: keep it where whoever can write
/// the log (its database or files) cannot rewrite it — another disk or host, a mount the
/// service can only append to, a copy shipped off the machine.
///
/// [`write`](CheckpointFile::write) signs a head only once the log verifies from the last
/// checkpoint to that head, so the checkpoints continue each other; [`check`] verifies that
/// before a service starts appending.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use portcullis_audit::{AuditEvent, AuditLog, AuditSink, CheckpointFile, CheckpointSigner};
/// use portcullis_core::{Action, AuthMethod, Decision, Principal, PrincipalKind};
///
/// let base = std::env::temp_dir().join(format!("checkpoint-file-doc-{}", std::process::id()));
/// let log = AuditLog::jsonl(base.join("log"), Default::default()).await?;
/// let (signer, _pkcs8) = CheckpointSigner::generate()?;
/// // In practice a folder the log's writer cannot rewrite.
/// let anchor = CheckpointFile::open(base.join("anchor"), signer)?;
///
/// let bob = Principal::builder(PrincipalKind::User, "bob", AuthMethod::OIDC).build()?;
/// log.record(AuditEvent::decision(&bob, Action::DEPLOY, "env:checkout".parse()?,
///     Decision::not_applicable("no role"))?).await?;
/// let written = anchor.write(&log).await?.expect("the log verifies");
/// assert_eq!(written.map(|c| c.seq), Some(1));
/// assert_eq!(anchor.write(&log).await?.expect("still"), None, "the head has not moved");
/// assert_eq!(anchor.check(&log).await?.map(|r| r.records).ok(), Some(1));
/// # log.close().await?;
/// # std::fs::remove_dir_all(&base)?;
/// # Ok(()) }
/// ```
///
/// [`check`]: CheckpointFile::check
#[derive(Debug)]
pub struct CheckpointFile {
    dir: PathBuf,
    signer: CheckpointSigner,
    /// The newest checkpoint of the file: found on open, then the last one written.
    last: tokio::sync::Mutex<Option<Checkpoint>>,
}

impl CheckpointFile {
    /// Opens `dir` (created if missing) for `signer`'s checkpoints: writes its public key
    /// to `dir/public-key` the first time, and reads the newest checkpoint of
    /// `dir/checkpoints.jsonl`, if there is one. Bytes after the file's last newline are an
    /// append torn by a crash, and are cut.
    ///
    /// # Errors
    ///
    /// [`AuditError::Crypto`] if `dir/public-key` names another key (its checkpoints would
    /// not verify under this one: sign with that key, or use another folder) or the newest
    /// checkpoint is not validly signed by this key, [`AuditError::Malformed`] if the last
    /// line is not a checkpoint, [`AuditError::Io`] if the folder cannot be written.
    pub fn open(dir: impl Into<PathBuf>, signer: CheckpointSigner) -> Result<Self, AuditError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| AuditError::io(dir.display(), e))?;
        let key = hex::encode(signer.public_key());
        let key_path = dir.join(PUBLIC_KEY_FILE);
        match fs::read_to_string(&key_path) {
            Ok(text) if text.trim() == key => {}
            Ok(text) => {
                let other: String = text.trim().chars().take(64).collect();
                return Err(AuditError::Crypto(format!(
                    "{} holds the checkpoints of the public key {other:?}, not of this signer's \
                     {key}: sign with that key, or write to another folder",
                    dir.display()
                )));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let written = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&key_path)
                    .and_then(|mut file| {
                        file.write_all(format!("{key}\n").as_bytes())?;
                        file.sync_all()
                    });
                written.map_err(|e| AuditError::io(key_path.display(), e))?;
                sync_dir(&dir)?;
            }
            Err(err) => return Err(AuditError::io(key_path.display(), err)),
        }
        let path = dir.join(CHECKPOINTS_FILE);
        let last = if path.exists() {
            let tail = read_tail(&path, 1, TAIL_BLOCK)?;
            if tail.end != tail.size {
                tracing::warn!(target: "portcullis_audit", file = %path.display(), "cutting a torn checkpoint at the end of the file");
                cut(&path, tail.end)?;
            }
            match tail.lines.last() {
                Some(line) => {
                    let checkpoint: Checkpoint = serde_json::from_slice(line).map_err(|e| {
                        AuditError::Malformed(format!(
                            "the last line of {} is not a checkpoint: {e}",
                            path.display()
                        ))
                    })?;
                    checkpoint.verify(signer.public_key())?;
                    Some(checkpoint)
                }
                None => None,
            }
        } else {
            None
        };
        Ok(CheckpointFile {
            dir,
            signer,
            last: tokio::sync::Mutex::new(last),
        })
    }

    /// The signer's raw Ed25519 public key, what a verifier trusts (also in
    /// [`public_key_path`](Self::public_key_path), in hex).
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        self.signer.public_key()
    }

    /// `DIR/checkpoints.jsonl`, for `portcullis-audit verify --checkpoints`.
    #[must_use]
    pub fn checkpoints_path(&self) -> PathBuf {
        self.dir.join(CHECKPOINTS_FILE)
    }

    /// `DIR/public-key`.
    #[must_use]
    pub fn public_key_path(&self) -> PathBuf {
        self.dir.join(PUBLIC_KEY_FILE)
    }

    /// The newest checkpoint in the file.
    pub async fn last(&self) -> Option<Checkpoint> {
        self.last.lock().await.clone()
    }

    /// Verifies `log` from the newest checkpoint to its head ([`AuditLog::verify_since`]):
    /// what a service runs before it appends to a log, to find a log truncated, rewritten
    /// or chained anew since its last checkpoint. Without a checkpoint yet, the whole log
    /// is verified.
    ///
    /// # Errors
    ///
    /// A read failure; the inner error is the first violation.
    pub async fn check(
        &self,
        log: &AuditLog,
    ) -> Result<Result<VerifyReport, Violation>, AuditError> {
        let last = self.last.lock().await.clone();
        self.verify(log, last.as_ref()).await
    }

    /// Checks `log` as [`check`](Self::check) does and, if it verifies and its head has
    /// moved since the newest checkpoint, signs the head it verified and appends the
    /// checkpoint to the file (synced before this returns). Returns the checkpoint
    /// written, `None` if the head had not moved (or the log is empty), or the violation
    /// that kept it from signing.
    ///
    /// # Errors
    ///
    /// A read failure, or [`AuditError::Io`] if the checkpoint could not be appended
    /// (nothing of it is left in the file then).
    pub async fn write(
        &self,
        log: &AuditLog,
    ) -> Result<Result<Option<Checkpoint>, Violation>, AuditError> {
        let mut last = self.last.lock().await;
        let report = match self.verify(log, last.as_ref()).await? {
            Ok(report) => report,
            Err(violation) => return Ok(Err(violation)),
        };
        if report.head.seq == 0 || last.as_ref().is_some_and(|c| c.seq == report.head.seq) {
            return Ok(Ok(None));
        }
        let checkpoint = self.signer.sign(&report.head, crate::event::now_ms());
        let mut line = serde_json::to_string(&checkpoint)
            .map_err(|e| AuditError::Malformed(format!("checkpoint: {e}")))?;
        line.push('\n');
        let path = self.checkpoints_path();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || append(&dir, &path, line.as_bytes()))
            .await
            .map_err(|e| AuditError::Invalid(format!("the checkpoint writer failed: {e}")))??;
        *last = Some(checkpoint.clone());
        Ok(Ok(Some(checkpoint)))
    }

    async fn verify(
        &self,
        log: &AuditLog,
        last: Option<&Checkpoint>,
    ) -> Result<Result<VerifyReport, Violation>, AuditError> {
        match last {
            Some(checkpoint) => log.verify_since(checkpoint, self.signer.public_key()).await,
            None => log.verify(&[], &[]).await,
        }
    }
}

/// Appends `bytes` to `path` and syncs it; a failed append is undone.
fn append(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let io = |e| AuditError::io(path.display(), e);
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let before = file.metadata().map_err(io)?.len();
    if let Err(err) = file.write_all(bytes).and_then(|()| file.sync_data()) {
        // Leave no half line for the next append to be glued to.
        let _ = file.set_len(before).and_then(|()| file.sync_data());
        return Err(io(err));
    }
    if created {
        sync_dir(dir)?;
    }
    Ok(())
}

fn cut(path: &Path, len: u64) -> Result<(), AuditError> {
    let io = |e| AuditError::io(path.display(), e);
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    file.set_len(len).map_err(io)?;
    file.sync_all().map_err(io)
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir.display(), e))
}
