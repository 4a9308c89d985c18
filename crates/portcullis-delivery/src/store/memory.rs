//! [`MemoryPipelineStore`]: pipeline state and history in memory, for tests and examples.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use portcullis_policy::ArtifactState;

use super::{
    Change, EventRecord, FetchRecord, HostCounts, HostStatus, PipelineStore, Pruned, Retention,
    RevisionRecord,
};
use crate::{DeliveryError, RevisionId};

#[derive(Debug, Default)]
struct Contents {
    states: BTreeMap<String, ArtifactState>,
    revisions: Vec<RevisionRecord>,
    events: Vec<EventRecord>,
    statuses: BTreeMap<(String, String), HostStatus>,
    fetches: Vec<FetchRecord>,
    /// (artifact, revision, step, host) → counts.
    host_counts: BTreeMap<(String, String, u32, String), HostCounts>,
}

/// Pipeline state and history in memory: gone when the process ends, so a restart starts
/// every pipeline over. For tests and examples; use [`SqlitePipelineStore`] to keep them.
///
/// [`SqlitePipelineStore`]: crate::SqlitePipelineStore
#[derive(Debug, Default)]
pub struct MemoryPipelineStore {
    contents: Mutex<Contents>,
}

impl MemoryPipelineStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> MemoryPipelineStore {
        MemoryPipelineStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Contents> {
        // Every change is applied whole under the lock, after its checks.
        self.contents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl PipelineStore for MemoryPipelineStore {
    async fn load_states(&self) -> Result<BTreeMap<String, ArtifactState>, DeliveryError> {
        Ok(self.lock().states.clone())
    }

    async fn commit(&self, change: Change) -> Result<(), DeliveryError> {
        let mut contents = self.lock();
        if let Some(r) = &change.revision {
            if contents
                .revisions
                .iter()
                .any(|x| x.artifact == r.artifact && x.revision == r.revision)
            {
                return Err(DeliveryError::Exists {
                    artifact: r.artifact.clone(),
                    revision: r.revision.to_string(),
                });
            }
            contents.revisions.push(r.clone());
        }
        contents.states.extend(change.states);
        let mut next = contents.events.last().map_or(1, |e| e.id.saturating_add(1));
        for mut event in change.events {
            event.id = next;
            next = next.saturating_add(1);
            contents.events.push(event);
        }
        for counted in change.host_counts {
            let key = (
                counted.artifact.clone(),
                counted.revision.clone(),
                counted.step,
                counted.spiffe_id.clone(),
            );
            contents.host_counts.insert(key, counted);
        }
        Ok(())
    }

    async fn has_revision(
        &self,
        artifact: &str,
        revision: &RevisionId,
    ) -> Result<bool, DeliveryError> {
        Ok(self
            .lock()
            .revisions
            .iter()
            .any(|r| r.artifact == artifact && &r.revision == revision))
    }

    async fn revisions(&self, artifact: &str) -> Result<Vec<RevisionRecord>, DeliveryError> {
        Ok(self
            .lock()
            .revisions
            .iter()
            .filter(|r| r.artifact == artifact)
            .cloned()
            .collect())
    }

    async fn events(
        &self,
        artifact: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, DeliveryError> {
        let contents = self.lock();
        let mut newest: Vec<EventRecord> = contents
            .events
            .iter()
            .rev()
            .filter(|e| artifact.is_none_or(|a| e.artifact == a))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        newest.reverse();
        Ok(newest)
    }

    async fn record_status(&self, statuses: &[HostStatus]) -> Result<(), DeliveryError> {
        let mut contents = self.lock();
        for s in statuses {
            contents
                .statuses
                .insert((s.spiffe_id.clone(), s.bundle.clone()), s.clone());
        }
        Ok(())
    }

    async fn host_statuses(&self) -> Result<Vec<HostStatus>, DeliveryError> {
        Ok(self.lock().statuses.values().cloned().collect())
    }

    async fn record_fetch(&self, fetch: &FetchRecord) -> Result<(), DeliveryError> {
        self.lock().fetches.push(fetch.clone());
        Ok(())
    }

    async fn fetches(&self, artifact: &str) -> Result<Vec<FetchRecord>, DeliveryError> {
        Ok(self
            .lock()
            .fetches
            .iter()
            .filter(|f| f.artifact == artifact)
            .cloned()
            .collect())
    }

    async fn host_counts(&self) -> Result<Vec<HostCounts>, DeliveryError> {
        Ok(self.lock().host_counts.values().cloned().collect())
    }

    async fn prune(&self, retention: &Retention) -> Result<Pruned, DeliveryError> {
        let mut contents = self.lock();
        let host_counts = contents.host_counts.len();
        contents
            .host_counts
            .retain(|(artifact, revision, _, _), _| {
                retention
                    .keep_revisions
                    .iter()
                    .any(|(a, r)| a == artifact && r == revision)
            });
        let host_counts = host_counts.saturating_sub(contents.host_counts.len());
        let fetches = contents.fetches.len();
        contents.fetches.retain(|f| {
            f.at_ms >= retention.fetches_before_ms
                || retention
                    .keep_revisions
                    .iter()
                    .any(|(a, r)| *a == f.artifact && *r == f.revision)
        });
        let fetches = fetches.saturating_sub(contents.fetches.len());
        let events = contents.events.len();
        if let Some(keep) = retention.events_per_artifact {
            let keep = usize::try_from(keep).unwrap_or(usize::MAX);
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            // Newest first: each artifact's first `keep` stay.
            let mut kept: Vec<EventRecord> = contents
                .events
                .iter()
                .rev()
                .filter(|e| {
                    let n = seen.entry(e.artifact.clone()).or_default();
                    *n = n.saturating_add(1);
                    *n <= keep
                })
                .cloned()
                .collect();
            kept.reverse();
            contents.events = kept;
        }
        let events = events.saturating_sub(contents.events.len());
        Ok(Pruned {
            fetches: u64::try_from(fetches).unwrap_or(u64::MAX),
            host_counts: u64::try_from(host_counts).unwrap_or(u64::MAX),
            events: u64::try_from(events).unwrap_or(u64::MAX),
        })
    }
}
