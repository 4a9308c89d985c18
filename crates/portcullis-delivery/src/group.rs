//! [`GroupCommit`]: many callers' small writes made durable in one transaction.
//!
//! Every host download, status report and decision count report is written before its
//! caller is answered. One transaction each costs one disk sync each, and a fleet of
//! 10,000 hosts sends thousands a second — more than a disk syncs. Here a caller queues
//! its item and waits for its turn; whoever gets the turn takes *everything* queued by then
//! (its own item, unless an earlier turn took it) and writes it as one batch, then answers
//! every caller in it. While one batch is written the next one gathers, so the batch grows
//! with the load and each item is still durable before its caller is answered.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedMutexGuard, oneshot};

use crate::DeliveryError;

type Reply<R> = oneshot::Sender<Result<R, String>>;

/// A queue of items written in batches, one batch at a time.
#[derive(Debug)]
pub(crate) struct GroupCommit<T, R> {
    queue: Mutex<Vec<(T, Reply<R>)>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// The items queued when a caller got its turn. Holds the turn until it is answered (or
/// dropped: its callers are then told their item was not written).
#[derive(Debug)]
pub(crate) struct Batch<T, R> {
    items: Vec<T>,
    replies: Vec<Reply<R>>,
    _turn: OwnedMutexGuard<()>,
}

/// A caller's answer, once its item's batch is written.
#[derive(Debug)]
pub(crate) enum Answer<R> {
    Waiting(oneshot::Receiver<Result<R, String>>),
    Ready(Result<Result<R, String>, oneshot::error::RecvError>),
}

impl<T, R> Default for GroupCommit<T, R> {
    fn default() -> Self {
        GroupCommit {
            queue: Mutex::new(Vec::new()),
            turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

impl<T, R> GroupCommit<T, R> {
    fn queue(&self) -> MutexGuard<'_, Vec<(T, Reply<R>)>> {
        // Only whole entries are pushed or taken: a panic elsewhere cannot leave half of one.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` and waits for the turn. Returns the batch this caller must write and
    /// answer — `None` if an earlier turn took everything, this item included — and the
    /// caller's own answer to wait for after that.
    pub(crate) async fn submit(&self, item: T) -> (Option<Batch<T, R>>, Answer<R>) {
        let (reply, mut answer) = oneshot::channel();
        self.queue().push((item, reply));
        // Answered by an earlier turn while waiting: done, the next caller in line writes
        // what is queued now.
        let turn = tokio::select! {
            biased;
            done = &mut answer => return (None, Answer::Ready(done)),
            turn = self.turn.clone().lock_owned() => turn,
        };
        let queued = std::mem::take(&mut *self.queue());
        if queued.is_empty() {
            return (None, Answer::Waiting(answer));
        }
        let (items, replies) = queued.into_iter().unzip();
        let batch = Batch {
            items,
            replies,
            _turn: turn,
        };
        (Some(batch), Answer::Waiting(answer))
    }
}

impl<T, R> Batch<T, R> {
    /// The items, in the order they were queued.
    pub(crate) fn items(&self) -> &[T] {
        &self.items
    }

    /// Answers every caller: `results` holds one result per item, in order; an error is
    /// every caller's.
    pub(crate) fn answer(self, results: Result<Vec<R>, DeliveryError>) {
        match results {
            Ok(results) => {
                for (reply, result) in self.replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(err) => {
                let message = match err {
                    DeliveryError::Store(message) => message,
                    other => other.to_string(),
                };
                for reply in self.replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

impl<R> Answer<R> {
    /// The caller's result.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if its batch failed, or was dropped unwritten.
    pub(crate) async fn wait(self) -> Result<R, DeliveryError> {
        let answered = match self {
            Answer::Waiting(receiver) => receiver.await,
            Answer::Ready(answered) => answered,
        };
        match answered {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(message)) => Err(DeliveryError::Store(message)),
            Err(_) => Err(DeliveryError::Store(
                "the batch this write was in was dropped before it was written".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_caller_is_answered_once_its_batch_is_written() {
        let group = Arc::new(GroupCommit::<u32, u32>::default());
        let written = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let mut callers = Vec::new();
        for n in 0..200_u32 {
            let (group, written) = (group.clone(), written.clone());
            callers.push(tokio::spawn(async move {
                let (batch, answer) = group.submit(n).await;
                if let Some(batch) = batch {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    written.lock().unwrap().push(batch.items().to_vec());
                    let doubled = batch.items().iter().map(|i| i * 2).collect();
                    batch.answer(Ok(doubled));
                }
                answer.wait().await.unwrap()
            }));
        }
        for (n, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.unwrap(), u32::try_from(n).unwrap() * 2);
        }
        let batches = written.lock().unwrap();
        let mut all: Vec<u32> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<_>>(), "each item written once");
        assert!(
            batches.len() < 200,
            "callers shared batches: {}",
            batches.len()
        );
    }

    #[tokio::test]
    async fn a_failed_or_dropped_batch_fails_its_callers() {
        let group = GroupCommit::<u32, ()>::default();
        let (batch, answer) = group.submit(1).await;
        batch
            .unwrap()
            .answer(Err(DeliveryError::Store("disk full".into())));
        let err = answer.wait().await.unwrap_err();
        assert_eq!(err.to_string(), "pipeline store: disk full");
        let (batch, answer) = group.submit(2).await;
        drop(batch);
        assert!(answer.wait().await.is_err());
        // The turn was given back: the next caller gets it.
        let (batch, _answer) = group.submit(3).await;
        assert_eq!(batch.unwrap().items(), [3]);
    }
}
