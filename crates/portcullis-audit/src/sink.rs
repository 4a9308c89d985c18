//! The [`AuditSink`] trait and the sinks that compose others.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{AuditError, AuditEvent, Receipt};

pub(crate) mod jsonl;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;

/// Somewhere events are recorded.
///
/// [`record`](AuditSink::record) returns only once the event is durable (fsync'd or
/// committed), or with an error — in which case the caller must not perform the action the
/// event describes. A sink is durable only if it says so through
/// [`is_durable`](AuditSink::is_durable) (the default is not), and
/// [`WriteAhead`](crate::WriteAhead) refuses the others.
///
/// To store records somewhere new, implement [`AuditStorage`](crate::AuditStorage) rather
/// than this: an [`AuditLog`](crate::AuditLog) over it keeps the hash chain, group commit,
/// redaction and verification. A sink of your own is for wrapping sinks (a fault switch, a
/// metric), and should delegate `is_durable`.
#[async_trait]
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Records `event` durably.
    ///
    /// # Errors
    ///
    /// Anything that kept the event from being durable.
    async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError>;

    /// Hands `event` over without waiting for it to be durable: for records that no action
    /// waits on, such as the outcome of an action that has already happened. Never use it
    /// for an intent.
    ///
    /// A sink with a write queue ([`AuditLog`](crate::AuditLog)) checks the event, queues
    /// it and returns; it is written with the next batch, and a failure then is logged
    /// rather than returned. The default records the event and waits, as
    /// [`record`](AuditSink::record) does.
    ///
    /// # Errors
    ///
    /// What is known on return: an invalid or oversized event, a closed sink; for the
    /// default, anything [`record`](AuditSink::record) returns.
    async fn submit(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.record(event).await.map(drop)
    }

    /// Whether an acknowledged event survives a crash. Defaults to `false`: a sink that
    /// promises durability overrides it ([`AuditLog`](crate::AuditLog) asks its storage; a
    /// wrapper asks what it wraps).
    fn is_durable(&self) -> bool {
        false
    }

    /// A short name for errors and logs.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
}

/// How many members of a [`FanOut`] must acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FanOutPolicy {
    /// Every member, or the record fails.
    All,
    /// At least one durable member.
    AtLeastOne,
}

/// Records each event in several sinks at once.
#[derive(Debug, Clone)]
pub struct FanOut {
    sinks: Vec<Arc<dyn AuditSink>>,
    policy: FanOutPolicy,
}

impl FanOut {
    /// A fan-out over `sinks`.
    #[must_use]
    pub fn new(sinks: Vec<Arc<dyn AuditSink>>, policy: FanOutPolicy) -> Self {
        FanOut { sinks, policy }
    }
}

impl FanOut {
    /// Runs `call` on every member concurrently (each on a task of its own) and applies the
    /// policy to the answers: the first durable member's answer, or why too few answered.
    async fn each<T, F, Fut>(&self, event: &AuditEvent, call: F) -> Result<T, AuditError>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn AuditSink>, AuditEvent) -> Fut,
        Fut: std::future::Future<Output = Result<T, AuditError>> + Send + 'static,
    {
        let results = futures_join(self.sinks.iter().map(|sink| {
            let (durable, name) = (sink.is_durable(), sink.name().to_owned());
            let answer = call(sink.clone(), event.clone());
            async move { (durable, name, answer.await) }
        }))
        .await;
        let required = match self.policy {
            FanOutPolicy::All => self.sinks.len(),
            FanOutPolicy::AtLeastOne => 1,
        }
        .max(1);
        let mut first = None;
        let mut acknowledged = 0;
        let mut errors = Vec::new();
        for joined in results {
            let (durable, name, result) = match joined {
                Ok(done) => done,
                Err(err) => (
                    false,
                    "sink task".to_owned(),
                    Err(AuditError::Database(err.to_string())),
                ),
            };
            match result {
                Ok(answer) if durable => {
                    acknowledged += 1;
                    first.get_or_insert(answer);
                }
                Ok(_) if self.policy == FanOutPolicy::All => {
                    errors.push(format!("{name}: not durable"));
                }
                Ok(_) => {}
                Err(err) => errors.push(format!("{name}: {err}")),
            }
        }
        match first {
            Some(answer) if acknowledged >= required => Ok(answer),
            _ => Err(AuditError::FanOut {
                acknowledged,
                required,
                errors: errors.join("; "),
            }),
        }
    }
}

#[async_trait]
impl AuditSink for FanOut {
    async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        self.each(
            &event,
            |sink, event| async move { sink.record(event).await },
        )
        .await
    }

    /// Submits to every member with its own [`submit`](AuditSink::submit), so members that
    /// queue events (an [`AuditLog`](crate::AuditLog)) return without waiting for their
    /// write. The policy applies to the members that took the event.
    async fn submit(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.each(
            &event,
            |sink, event| async move { sink.submit(event).await },
        )
        .await
    }

    fn is_durable(&self) -> bool {
        self.sinks.iter().any(|s| s.is_durable())
    }

    fn name(&self) -> &str {
        "fan-out"
    }
}

/// Runs the futures concurrently as tasks and collects their results in order.
async fn futures_join<F>(
    futures: impl Iterator<Item = F>,
) -> Vec<Result<F::Output, tokio::task::JoinError>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await);
    }
    out
}

/// Mirrors events to `tracing` at INFO for operators. Not durable: never use it alone on a
/// fail-closed path.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingMirror;

#[async_trait]
impl AuditSink for TracingMirror {
    async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        tracing::info!(
            target: "portcullis_audit",
            id = %event.id,
            kind = ?event.kind,
            actor = %event.actor.subject,
            action = %event.action,
            resource = %event.resource,
            decision = ?event.decision.as_ref().map(|d| d.effect()),
            "audit event"
        );
        Ok(Receipt {
            id: event.id,
            seq: 0,
            hash: String::new(),
        })
    }

    fn is_durable(&self) -> bool {
        false
    }

    fn name(&self) -> &str {
        "tracing-mirror"
    }
}
