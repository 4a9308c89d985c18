//! Write-before-act: record the intent, act only with the acknowledgement in hand, then
//! record the outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::{AuditError, AuditEvent, AuditSink, Outcome, Receipt};

/// Records intents before actions, on a durable sink, with a deadline.
///
/// The safe path is the only one: an action runs inside [`Intent::run`], which exists only
/// once the intent is durable; if the sink fails or is late, there is no `Intent` and so no
/// action.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use portcullis_audit::{AuditEvent, AuditLog, WriteAhead};
/// use portcullis_core::{Action, AuthMethod, Decision, Principal, PrincipalKind};
///
/// let dir = std::env::temp_dir().join(format!("portcullis-doc-{}", std::process::id()));
/// let log = Arc::new(AuditLog::jsonl(&dir, Default::default()).await?);
/// let gate = WriteAhead::new(log.clone())?;
///
/// let alice = Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC).build()?;
/// let event = AuditEvent::intent(&alice, Action::DEPLOY, "env:checkout".parse()?, Decision::allow("OPERATOR"))?;
/// let intent = gate.intent(event).await?;           // durable, or an error and no action
/// let deploy_id: u32 = intent
///     .run(|_proof| async { Ok::<_, std::io::Error>(42) }) // the action, then its outcome
///     .await?;
/// assert_eq!(deploy_id, 42);
/// # std::fs::remove_dir_all(dir)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct WriteAhead {
    sink: Arc<dyn AuditSink>,
    timeout: Duration,
}

impl WriteAhead {
    /// Guards actions with `sink`, waiting up to 5 s for each acknowledgement.
    ///
    /// # Errors
    ///
    /// [`AuditError::NotDurable`] if the sink cannot promise durability.
    pub fn new(sink: Arc<dyn AuditSink>) -> Result<Self, AuditError> {
        if !sink.is_durable() {
            return Err(AuditError::NotDurable(sink.name().to_owned()));
        }
        Ok(WriteAhead {
            sink,
            timeout: Duration::from_secs(5),
        })
    }

    /// Sets how long to wait for an acknowledgement.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Records `event` (an intent) and returns the proof that it is durable.
    ///
    /// # Errors
    ///
    /// Whatever the sink says, or [`AuditError::Timeout`]; either way: do not act.
    pub async fn intent(&self, event: AuditEvent) -> Result<Intent, AuditError> {
        let recorded = tokio::time::timeout(self.timeout, self.sink.record(event.clone())).await;
        let Ok(receipt) = recorded else {
            // The intent may still be written after the caller was told nothing was done:
            // its outcome says so, so the log never shows an allowed action left pending.
            // Handed over without waiting; if the intent never lands, the outcome names an
            // id the log does not hold, which is the truth too.
            if let Ok(outcome) = AuditEvent::outcome_of(
                &event,
                crate::Outcome::failed(format!(
                    "not done: the audit log did not acknowledge this intent within {:?}",
                    self.timeout
                )),
            ) {
                let sink = self.sink.clone();
                tokio::spawn(async move {
                    if let Err(err) = sink.submit(outcome).await {
                        tracing::warn!(target: "portcullis_audit", error = %err, "the outcome of an unacknowledged intent could not be handed over");
                    }
                });
            }
            return Err(AuditError::Timeout(self.timeout));
        };
        let receipt = receipt?;
        Ok(Intent {
            guard: self.clone(),
            event,
            receipt,
            finished: false,
        })
    }
}

/// A durable intent: the licence to act. Finish it with [`run`](Intent::run) or
/// [`outcome`](Intent::outcome); dropping it unfinished leaves the intent without an outcome
/// in the log (and logs a warning).
#[derive(Debug)]
#[must_use = "an intent is recorded so that an action can run; run it or record its outcome"]
pub struct Intent {
    guard: WriteAhead,
    event: AuditEvent,
    receipt: Receipt,
    finished: bool,
}

/// Proof, handed to the action, that its intent is durable.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    /// The intent's receipt.
    pub receipt: &'a Receipt,
}

/// What [`Intent::run`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IntentError<E> {
    /// The action failed (its failure was recorded as the outcome).
    #[error("the action failed: {0}")]
    Action(E),
    /// The action ran but its outcome could not be recorded.
    #[error("the action ran, but its outcome could not be recorded: {0}")]
    Outcome(AuditError),
}

impl Intent {
    /// The intent's receipt.
    #[must_use]
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// The intent event.
    #[must_use]
    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    /// Runs `action`, then records its outcome (succeeded, or failed with its error).
    ///
    /// # Errors
    ///
    /// [`IntentError::Action`] with the action's error, or [`IntentError::Outcome`] if the
    /// outcome could not be recorded.
    pub async fn run<F, Fut, T, E>(mut self, action: F) -> Result<T, IntentError<E>>
    where
        F: for<'a> FnOnce(Recorded<'a>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let result = action(Recorded {
            receipt: &self.receipt,
        })
        .await;
        let outcome = match &result {
            Ok(_) => Outcome::succeeded("completed"),
            Err(err) => Outcome::failed(err.to_string()),
        };
        self.finished = true;
        let recorded = self.record_outcome(outcome).await;
        match (result, recorded) {
            (Err(err), _) => Err(IntentError::Action(err)),
            (Ok(_), Err(err)) => Err(IntentError::Outcome(err)),
            (Ok(value), Ok(_)) => Ok(value),
        }
    }

    /// Records `outcome` for an action performed outside [`run`](Intent::run).
    ///
    /// # Errors
    ///
    /// Whatever the sink says.
    pub async fn outcome(mut self, outcome: Outcome) -> Result<Receipt, AuditError> {
        self.finished = true;
        self.record_outcome(outcome).await
    }

    /// Hands `outcome` to the sink without waiting for it to be durable
    /// ([`AuditSink::submit`](crate::AuditSink::submit)): for a caller whose answer does not
    /// depend on the outcome being stored. Only the hand-over is bounded by the timeout.
    ///
    /// # Errors
    ///
    /// An invalid outcome, a closed sink, or [`AuditError::Timeout`] if the sink's queue
    /// stayed full.
    pub async fn submit_outcome(mut self, outcome: Outcome) -> Result<(), AuditError> {
        self.finished = true;
        let event = AuditEvent::outcome_of(&self.event, outcome)?;
        tokio::time::timeout(self.guard.timeout, self.guard.sink.submit(event))
            .await
            .map_err(|_| AuditError::Timeout(self.guard.timeout))?
    }

    async fn record_outcome(&self, outcome: Outcome) -> Result<Receipt, AuditError> {
        let event = AuditEvent::outcome_of(&self.event, outcome)?;
        tokio::time::timeout(self.guard.timeout, self.guard.sink.record(event))
            .await
            .map_err(|_| AuditError::Timeout(self.guard.timeout))?
    }
}

impl Drop for Intent {
    fn drop(&mut self) {
        if !self.finished {
            tracing::warn!(
                target: "portcullis_audit",
                intent = %self.event.id,
                "an audit intent was dropped without an outcome"
            );
        }
    }
}
