//! [`MemoryStorage`]: records in memory, for tests and examples.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::chain::ChainHead;
use crate::{AuditError, AuditStorage};

use super::{Appended, Batch};

/// An [`AuditStorage`] in memory, for tests and examples: not durable, so
/// [`WriteAhead`](crate::WriteAhead) refuses a log over it. Clones share the records.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use portcullis_audit::{AuditEvent, AuditLog, AuditSink, MemoryStorage};
/// use portcullis_core::{Action, AuthMethod, Decision, Principal, PrincipalKind};
///
/// let log = AuditLog::with_storage(MemoryStorage::new(), Default::default()).await?;
/// let bob = Principal::builder(PrincipalKind::User, "bob", AuthMethod::OIDC).build()?;
/// let event = AuditEvent::decision(&bob, Action::DEPLOY, "env:checkout".parse()?,
///     Decision::not_applicable("bob holds no role on env:checkout"))?;
/// let receipt = log.record(event).await?;
/// assert_eq!((receipt.seq, receipt.hash.len()), (1, 64));
/// assert!(!log.is_durable());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Record `n` is `lines[n - 1]`.
    lines: Vec<String>,
    head: ChainHead,
}

impl MemoryStorage {
    /// An empty storage.
    #[must_use]
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock with the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl AuditStorage for MemoryStorage {
    async fn append(&self, batch: &Batch) -> Result<Appended, AuditError> {
        let mut state = self.lock();
        let sealed = batch.seal(state.head)?;
        state.head = sealed.head();
        let (lines, appended) = sealed.into_lines();
        state.lines.extend(lines);
        Ok(appended)
    }

    async fn head(&self) -> Result<ChainHead, AuditError> {
        Ok(self.lock().head)
    }

    async fn scan(&self, after_seq: u64, limit: usize) -> Result<Vec<String>, AuditError> {
        let state = self.lock();
        let from = usize::try_from(after_seq).unwrap_or(usize::MAX);
        Ok(state.lines.iter().skip(from).take(limit).cloned().collect())
    }
}
