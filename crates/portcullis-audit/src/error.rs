//! The one error type of this crate.

/// Everything that can go wrong while recording, reading or verifying an audit log. Every
/// recording error means: the event is *not* durable, do not act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// An event field holds a control character.
    #[error("audit event field `{field}` holds a control character ({ch:?}); remove or encode it")]
    ControlCharacter {
        /// Where (a dotted path into the event).
        field: String,
        /// The character.
        ch: char,
    },
    /// An event larger than the configured cap.
    #[error("audit event is {size} bytes, above the cap of {max}; record a summary instead")]
    TooLarge {
        /// Its size as JSON.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// The sink did not acknowledge in time.
    #[error("the audit sink did not acknowledge within {0:?}; the action must not run")]
    Timeout(std::time::Duration),
    /// The sink is not durable and cannot guard an action.
    #[error("the `{0}` sink is not durable, so it cannot record intents before actions")]
    NotDurable(String),
    /// The writer has stopped (the log was closed or its task died).
    #[error("the audit log is closed")]
    Closed,
    /// A previous write failed in a way that left the log's end unknown; reopen it.
    #[error("the audit log refused the write because an earlier failure left it inconsistent: {0}")]
    Poisoned(String),
    /// The newest stored records do not verify: a record altered, a broken link or sequence,
    /// or (SQLite, PostgreSQL) an indexed column that disagrees with its record, such as the
    /// `hash` column new records would be chained to. Opening refuses the log (and a write
    /// that reads the head first refuses the batch) rather than chain new records onto a
    /// head that is not what was written: they would then be the records blamed for the
    /// break, or carry the alteration forward. Nothing was changed. Read the log without
    /// appending with `portcullis-audit verify` ([`verify_database`](crate::verify_database),
    /// [`verify_jsonl_dir`](crate::verify_jsonl_dir)) to investigate.
    #[error(
        "the audit log's head does not verify, so nothing will be appended to it: {0}. \
         Nothing was changed; run `portcullis-audit verify` on the log, then restore it from a \
         backup or move it aside and start a new one"
    )]
    HeadNotVerified(crate::Violation),
    /// Fan-out: too few sinks acknowledged.
    #[error("only {acknowledged} of {required} required audit sinks acknowledged: {errors}")]
    FanOut {
        /// How many did.
        acknowledged: usize,
        /// How many had to.
        required: usize,
        /// What the others said.
        errors: String,
    },
    /// File I/O failed (disk full, read-only, missing).
    #[error("audit log I/O error on {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The batch this event was written in failed (another event in it got the cause).
    #[error("the batch holding this event could not be written: {0}")]
    BatchFailed(String),
    /// The database failed.
    #[error("audit database error: {0}")]
    Database(String),
    /// The storage could not take the write now, for a reason that passes: the connection
    /// was lost or terminated, no connection came free in time, the database answered a
    /// serialization failure or deadlock, a SQLite database stayed locked, or other writers
    /// kept taking the sequence numbers sealed for. Nothing is wrong with the events, and
    /// a later attempt may succeed. A connection lost around a commit leaves unknown whether
    /// the write landed ([`AuditStorage::holds`](crate::AuditStorage::holds) tells). The
    /// log retries [submitted](crate::AuditSink::submit) events that failed this way; a
    /// caller of `record` gets this error and decides.
    #[error("the audit storage is unavailable for now: {0}")]
    Unavailable(String),
    /// A stored record that does not decode.
    #[error("malformed audit record: {0}")]
    Malformed(String),
    /// A key, checkpoint or signature that is not valid.
    #[error("invalid key or signature: {0}")]
    Crypto(String),
    /// Bad arguments (a page limit, a path).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl AuditError {
    /// Whether a later attempt may succeed where this one failed
    /// ([`Unavailable`](AuditError::Unavailable)): the log retries submitted events only
    /// then. Every other error is permanent for the batch it failed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, AuditError::Unavailable(_))
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.to_string(),
            source,
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for AuditError {
    fn from(err: sqlx::Error) -> Self {
        if transient(&err) {
            AuditError::Unavailable(err.to_string())
        } else {
            AuditError::Database(err.to_string())
        }
    }
}

/// Whether `err` passes: the connection (lost, refused, terminated by the server), the pool
/// (no connection free in time), or the database's concurrency control (PostgreSQL's
/// serialization failures, deadlocks and shutdowns, SQLite's busy and locked).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => {
            #[cfg(feature = "postgres")]
            if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                // 08: connection exception; 40001 serialization failure, 40P01 deadlock;
                // 53300 too many connections; 55P03 lock not available; 57P01-57P03
                // terminated by an administrator, crash or startup.
                return code.starts_with("08")
                    || matches!(
                        code,
                        "40001" | "40P01" | "53300" | "55P03" | "57P01" | "57P02" | "57P03"
                    );
            }
            #[cfg(feature = "sqlite")]
            if let Some(sqlite) = e.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // The primary code of the extended one: SQLITE_BUSY (5), SQLITE_LOCKED (6).
                return sqlx::error::DatabaseError::code(sqlite)
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(|code| matches!(code & 0xff, 5 | 6));
            }
            false
        }
        _ => false,
    }
}
