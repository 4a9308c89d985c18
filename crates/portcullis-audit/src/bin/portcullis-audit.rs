//! `portcullis-audit`: verify an audit log, sign checkpoints, generate keys, append load.
//!
//! ```text
//! portcullis-audit verify <DIR|FILE|sqlite://…|postgres://…> [--checkpoints FILE --public-key HEX]
//! portcullis-audit keygen --out KEY.pk8
//! portcullis-audit checkpoint <TARGET> --key KEY.pk8 >> checkpoints.jsonl
//! portcullis-audit write-load <TARGET> --count N [--concurrency C]
//! ```
//!
//! Exit status: 0 when the log verifies, 1 when it does not (the first violation is
//! printed), 2 on any other error.
#![expect(
    clippy::print_stdout,
    reason = "a command-line tool prints its results"
)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use portcullis_audit::{
    AuditError, AuditEvent, AuditLog, AuditSink, Checkpoint, CheckpointSigner, Verifier,
    VerifyReport, Violation, verify_database, verify_jsonl_dir,
};
use portcullis_core::{Action, AuthMethod, Decision, Principal, PrincipalKind};

#[derive(Parser)]
#[command(
    name = "portcullis-audit",
    version,
    about = "Verify and maintain Portcullis audit logs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the hash chain (and signed checkpoints): reports the first altered, reordered,
    /// deleted or inserted record, or a truncated tail.
    Verify {
        /// A JSONL log folder or file, or a sqlite:// or postgres:// URL.
        target: String,
        /// A file of checkpoints, one JSON object per line.
        #[arg(long, requires = "public_key")]
        checkpoints: Option<PathBuf>,
        /// The trusted Ed25519 public key of the checkpoints, hex.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Generate an Ed25519 checkpoint key (PKCS#8, written with mode 0600).
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign the log's current head and print the checkpoint as one JSON line.
    Checkpoint {
        /// The log.
        target: String,
        /// The PKCS#8 key from `keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Append synthetic events and print each acknowledged sequence number (load and crash
    /// testing).
    WriteLoad {
        /// The log.
        target: String,
        /// How many events.
        #[arg(long)]
        count: u64,
        /// How many writers at once.
        #[arg(long, default_value_t = 8)]
        concurrency: u64,
    },
}

/// Whether `target` names a database rather than a JSONL folder or file.
fn is_database(target: &str) -> bool {
    ["sqlite:", "postgres:", "postgresql:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
        || target.contains("://")
}

async fn open(target: &str) -> Result<AuditLog, AuditError> {
    #[cfg(feature = "sqlite")]
    if target.starts_with("sqlite:") {
        return AuditLog::sqlite(target, Default::default()).await;
    }
    #[cfg(feature = "postgres")]
    if target.starts_with("postgres:") || target.starts_with("postgresql:") {
        return AuditLog::postgres(target, Default::default()).await;
    }
    if is_database(target) {
        return Err(AuditError::Invalid(format!(
            "`{target}`: this build has no backend for that URL"
        )));
    }
    AuditLog::jsonl(target, Default::default()).await
}

async fn verify_target(
    target: &str,
    checkpoints: &[Checkpoint],
    key: &[u8],
) -> Result<Result<VerifyReport, Violation>, AuditError> {
    if is_database(target) {
        // Read only: nothing migrated or written, and a log whose head does not verify
        // (which a writer refuses to open) is read all the same.
        return verify_database(target, checkpoints, key).await;
    }
    Ok(
        match verify_jsonl_dir(target.as_ref(), Verifier::with_checkpoints(checkpoints))? {
            Ok(verifier) => verifier.finish(checkpoints, key),
            Err(v) => Err(v),
        },
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_checkpoints(path: &PathBuf) -> Result<Vec<Checkpoint>, AuditError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuditError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| AuditError::Malformed(format!("checkpoint: {e}")))
        })
        .collect()
}

async fn run(cli: Cli) -> Result<ExitCode, AuditError> {
    match cli.command {
        Command::Verify {
            target,
            checkpoints,
            public_key,
        } => {
            let checkpoints = checkpoints
                .as_ref()
                .map(read_checkpoints)
                .transpose()?
                .unwrap_or_default();
            let key = public_key
                .map(|k| hex::decode(k).map_err(|e| AuditError::Crypto(format!("public key: {e}"))))
                .transpose()?
                .unwrap_or_default();
            match verify_target(&target, &checkpoints, &key).await? {
                Ok(report) => {
                    println!(
                        "OK: {} records, head {} {}; {} checkpoints verified",
                        report.records,
                        report.head.seq,
                        hex::encode(report.head.hash),
                        report.checkpoints
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(violation) => {
                    println!("TAMPERED: {violation}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Keygen { out } => {
            let (signer, pkcs8) = CheckpointSigner::generate()?;
            write_secret(&out, &pkcs8)?;
            println!("{}", hex::encode(signer.public_key()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoint { target, key } => {
            let pkcs8 = std::fs::read(&key).map_err(|e| AuditError::Io {
                path: key.display().to_string(),
                source: e,
            })?;
            let signer = CheckpointSigner::from_pkcs8(&pkcs8)?;
            // Sign only a head that verifies, read without taking the writer's lock, so it
            // works beside a running service.
            match verify_target(&target, &[], &[]).await? {
                Ok(report) => {
                    let checkpoint = signer.sign(&report.head, now_ms());
                    println!(
                        "{}",
                        serde_json::to_string(&checkpoint)
                            .map_err(|e| AuditError::Malformed(e.to_string()))?
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(violation) => {
                    println!("TAMPERED: {violation}; refusing to sign");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::WriteLoad {
            target,
            count,
            concurrency,
        } => {
            let log = Arc::new(open(&target).await?);
            let principal = Principal::builder(
                PrincipalKind::Service,
                "write-load",
                AuthMethod::from_static("cli"),
            )
            .build()
            .map_err(|e| AuditError::Invalid(e.to_string()))?;
            let mut writers = Vec::new();
            for w in 0..concurrency.max(1) {
                let log = log.clone();
                let principal = principal.clone();
                writers.push(tokio::spawn(async move {
                    let mut n = w;
                    while n < count {
                        let event = AuditEvent::decision(
                            &principal,
                            Action::READ,
                            portcullis_core::Resource::SYSTEM,
                            Decision::allow("load"),
                        )?
                        .with_field("n", n.into());
                        let receipt = log.record(event).await?;
                        // An error, not a panic, when whoever reads has gone (a closed pipe).
                        writeln!(std::io::stdout().lock(), "{}", receipt.seq).map_err(|e| {
                            AuditError::Io {
                                path: "stdout".into(),
                                source: e,
                            }
                        })?;
                        n += concurrency.max(1);
                    }
                    Ok::<(), AuditError>(())
                }));
            }
            for writer in writers {
                writer
                    .await
                    .map_err(|e| AuditError::Invalid(e.to_string()))??;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_secret(path: &PathBuf, bytes: &[u8]) -> Result<(), AuditError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let io = |e| AuditError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
