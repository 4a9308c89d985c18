//! [`mockall`] mocks of this crate's traits (feature `mock`), for unit tests of code that
//! takes an [`AuditSink`] or an [`AuditStorage`]. Integration tests should use a real log
//! ([`AuditLog`](crate::AuditLog) over JSONL, SQLite or PostgreSQL).
//!
//! ```
//! use portcullis_audit::mock::MockAuditSink;
//! use portcullis_audit::{AuditError, AuditEvent, AuditSink, EventKind};
//! use portcullis_core::{Action, AuthMethod, Decision, Principal, PrincipalKind};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut sink = MockAuditSink::new();
//! // The handler under test must record exactly one decision, and fail closed when the
//! // sink refuses.
//! sink.expect_record()
//!     .withf(|event| event.kind == EventKind::Decision)
//!     .times(1)
//!     .returning(|_| Err(AuditError::Database("disk full".into())));
//! sink.expect_is_durable().return_const(true);
//!
//! let alice = Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC).build()?;
//! let refusal = Decision::deny("not an operator");
//! let event = AuditEvent::decision(&alice, Action::DEPLOY, "env:checkout".parse()?, refusal)?;
//! assert!(sink.record(event).await.is_err());
//! assert!(sink.is_durable());
//! # Ok(()) }
//! ```

#![allow(missing_docs, reason = "mockall generates the items")]

use async_trait::async_trait;

use crate::{Appended, AuditError, AuditEvent, AuditSink, AuditStorage, Batch, ChainHead, Receipt};

mockall::mock! {
    /// A mock [`AuditSink`]: set expectations on `record`, `submit`, `is_durable` and
    /// `name`.
    pub AuditSink {}

    #[async_trait]
    impl AuditSink for AuditSink {
        async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError>;
        async fn submit(&self, event: AuditEvent) -> Result<(), AuditError>;
        fn is_durable(&self) -> bool;
        fn name(&self) -> &str;
    }
}

mockall::mock! {
    /// A mock [`AuditStorage`]: set expectations on `append`, `head`, `scan`, `is_durable`
    /// and `wants_index`; verification keeps the trait's defaults (over `head` and `scan`).
    pub AuditStorage {}

    #[async_trait]
    impl AuditStorage for AuditStorage {
        async fn append(&self, batch: &Batch) -> Result<Appended, AuditError>;
        async fn head(&self) -> Result<ChainHead, AuditError>;
        async fn scan(&self, after_seq: u64, limit: usize) -> Result<Vec<String>, AuditError>;
        fn is_durable(&self) -> bool;
        fn wants_index(&self) -> bool;
    }
}

impl std::fmt::Debug for MockAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockAuditSink")
    }
}

impl std::fmt::Debug for MockAuditStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockAuditStorage")
    }
}
