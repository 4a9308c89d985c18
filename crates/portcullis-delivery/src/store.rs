//! Where pipeline state and history live: [`PipelineStore`], kept in memory
//! ([`MemoryPipelineStore`]), in SQLite (behind the `sqlite` feature) or in PostgreSQL,
//! shared by several delivery instances (behind the `postgres` feature).

use std::collections::BTreeMap;

use async_trait::async_trait;
use portcullis_policy::{ArtifactState, Metrics};

use crate::{DeliveryError, RevisionId};

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(feature = "sqlite")]
mod sqlite;
pub use memory::MemoryPipelineStore;
#[cfg(feature = "postgres")]
pub use postgres::{CHANGE_CHANNEL, PostgresPipelineStore};
#[cfg(feature = "sqlite")]
pub use sqlite::SqlitePipelineStore;

/// A published revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRecord {
    /// The artifact.
    pub artifact: String,
    /// The revision (its tarball's SHA-256).
    pub revision: RevisionId,
    /// The revision its manifest names (what hosts report as active).
    pub bundle_revision: String,
    /// The tarball's size in bytes.
    pub size: u64,
    /// Who published it.
    pub published_by: String,
    /// When (ms since the epoch).
    pub published_at_ms: u64,
}

/// Something that happened to an artifact's pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Its place in the history (assigned by the store; 0 before).
    pub id: i64,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The artifact.
    pub artifact: String,
    /// The revision concerned, if one is.
    pub revision: Option<String>,
    /// What was done: `publish`, `promote`, `rollback`, `pause`, `resume`, `tick`.
    pub kind: String,
    /// Who did it (`scheduler` for [`tick`](crate::Pipeline::tick)).
    pub actor: String,
    /// What happened, as the rollout describes it.
    pub message: String,
}

/// What a host last reported about one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// The host's SPIFFE ID (from its authenticated credential, never from the report).
    pub spiffe_id: String,
    /// The bundle.
    pub bundle: String,
    /// The revision it has active.
    pub active_revision: Option<String>,
    /// Its last error, if any.
    pub error: Option<String>,
    /// When it reported (ms since the epoch).
    pub reported_at_ms: u64,
}

/// A bundle a host downloaded (not a 304).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRecord {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The host's SPIFFE ID.
    pub spiffe_id: String,
    /// The artifact.
    pub artifact: String,
    /// The revision served.
    pub revision: String,
}

/// One host's decision counts for a candidate in one step of its pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCounts {
    /// The artifact.
    pub artifact: String,
    /// The candidate revision.
    pub revision: String,
    /// The step (its index in the pipeline).
    pub step: u32,
    /// The host's SPIFFE ID.
    pub spiffe_id: String,
    /// Its counts there, in total.
    pub metrics: Metrics,
}

/// What [`PipelineStore::prune`] keeps of the download records and the history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Retention {
    /// Downloads recorded before this time (ms since the epoch) are deleted, except those
    /// of [`keep_revisions`](Retention::keep_revisions).
    pub fetches_before_ms: u64,
    /// `(artifact, revision)` whose downloads are kept whatever their age: the candidates
    /// in flight, whose downloads decide whose decision counts count. Hosts' counts
    /// ([`HostCounts`]) are kept for these revisions only.
    pub keep_revisions: Vec<(String, String)>,
    /// How many of each artifact's newest events are kept; older ones are deleted.
    /// `None` keeps them all.
    pub events_per_artifact: Option<u32>,
}

impl Retention {
    /// Deletes downloads recorded before `before_ms` and keeps every event.
    #[must_use]
    pub fn fetches_before(before_ms: u64) -> Retention {
        Retention {
            fetches_before_ms: before_ms,
            ..Retention::default()
        }
    }

    /// Keeps the downloads of `revision` of `artifact` whatever their age.
    #[must_use]
    pub fn keep_revision(
        mut self,
        artifact: impl Into<String>,
        revision: impl Into<String>,
    ) -> Self {
        self.keep_revisions.push((artifact.into(), revision.into()));
        self
    }

    /// Keeps only each artifact's newest `events` events.
    #[must_use]
    pub fn with_events_per_artifact(mut self, events: u32) -> Self {
        self.events_per_artifact = Some(events);
        self
    }
}

/// What [`PipelineStore::prune`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Pruned {
    /// Download records.
    pub fetches: u64,
    /// Hosts' counts for revisions no longer in flight.
    pub host_counts: u64,
    /// Events.
    pub events: u64,
}

/// Changes written together, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Artifacts' new states.
    pub states: Vec<(String, ArtifactState)>,
    /// Events to append.
    pub events: Vec<EventRecord>,
    /// A revision to record as published.
    pub revision: Option<RevisionRecord>,
    /// Hosts' counts now, each replacing the one stored for its artifact, revision, step and
    /// host.
    pub host_counts: Vec<HostCounts>,
}

/// The turn to change pipeline state, across every instance sharing a store
/// ([`PipelineStore::lock_for_change`]): held from reading the latest state to writing the
/// change made to it, so that no instance changes a state another has already replaced.
/// Dropped without [`commit`](ChangeLock::commit), it writes nothing.
#[async_trait]
pub trait ChangeLock: Send + std::fmt::Debug {
    /// The version of the stored state while this lock is held; `None` for a store that
    /// only this process writes (whose copy in memory is then always the latest).
    fn version(&self) -> Option<i64>;

    /// Writes `change` as [`PipelineStore::commit`] does (to `store`, the store that gave
    /// this lock) and releases the lock. The stored version moves on by one.
    ///
    /// # Errors
    ///
    /// As [`PipelineStore::commit`].
    async fn commit(
        self: Box<Self>,
        store: &dyn PipelineStore,
        change: Change,
    ) -> Result<(), DeliveryError>;
}

/// The [`ChangeLock`] of a store that only this process writes: the process's own turn is
/// the only one, so this holds nothing and commits through [`PipelineStore::commit`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalLock;

#[async_trait]
impl ChangeLock for LocalLock {
    fn version(&self) -> Option<i64> {
        None
    }

    async fn commit(
        self: Box<Self>,
        store: &dyn PipelineStore,
        change: Change,
    ) -> Result<(), DeliveryError> {
        store.commit(change).await
    }
}

/// Pipeline state and history. Every method is durable before it returns.
///
/// A store several processes share (PostgreSQL) overrides the methods with defaults:
/// [`lock_for_change`](PipelineStore::lock_for_change) and
/// [`version`](PipelineStore::version) so that every change applies to the latest stored
/// state, [`lead`](PipelineStore::lead) so that one instance runs the scheduler, and
/// [`has_fetched`](PipelineStore::has_fetched) for downloads made from another instance.
#[async_trait]
pub trait PipelineStore: Send + Sync + std::fmt::Debug {
    /// Every artifact's saved state.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if it cannot be read or a state does not parse.
    async fn load_states(&self) -> Result<BTreeMap<String, ArtifactState>, DeliveryError>;

    /// Writes `change` atomically: all of it or nothing.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Exists`] if its revision is already recorded;
    /// [`DeliveryError::Store`].
    async fn commit(&self, change: Change) -> Result<(), DeliveryError>;

    /// Whether `revision` of `artifact` was published.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn has_revision(
        &self,
        artifact: &str,
        revision: &RevisionId,
    ) -> Result<bool, DeliveryError>;

    /// The published revisions of `artifact`, oldest first.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn revisions(&self, artifact: &str) -> Result<Vec<RevisionRecord>, DeliveryError>;

    /// The newest `limit` events (of `artifact`, or of all), oldest first.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn events(
        &self,
        artifact: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, DeliveryError>;

    /// Replaces what these hosts last reported about these bundles.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn record_status(&self, statuses: &[HostStatus]) -> Result<(), DeliveryError>;

    /// What every host last reported, by SPIFFE ID then bundle.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn host_statuses(&self) -> Result<Vec<HostStatus>, DeliveryError>;

    /// What every host last reported about `bundle`, by SPIFFE ID. The default filters
    /// [`host_statuses`](PipelineStore::host_statuses); stores with an index on the bundle
    /// read only its reports.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn host_statuses_of(&self, bundle: &str) -> Result<Vec<HostStatus>, DeliveryError> {
        let mut statuses = self.host_statuses().await?;
        statuses.retain(|s| s.bundle == bundle);
        Ok(statuses)
    }

    /// Records a download.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn record_fetch(&self, fetch: &FetchRecord) -> Result<(), DeliveryError>;

    /// Every download of `artifact`, oldest first.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn fetches(&self, artifact: &str) -> Result<Vec<FetchRecord>, DeliveryError>;

    /// Every host's stored counts ([`Change::host_counts`]).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn host_counts(&self) -> Result<Vec<HostCounts>, DeliveryError>;

    /// Deletes the download records and events `retention` does not keep (a fleet downloads
    /// every revision on every host, and without this both grow without bound). Stores
    /// delete in small transactions, so hosts' writes are not held up for long.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] (what was deleted before the failure stays deleted).
    async fn prune(&self, retention: &Retention) -> Result<Pruned, DeliveryError>;

    /// Whether host `spiffe_id` downloaded `revision` of `artifact` (from any instance
    /// sharing this store). The default searches [`fetches`](PipelineStore::fetches).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn has_fetched(
        &self,
        artifact: &str,
        revision: &str,
        spiffe_id: &str,
    ) -> Result<bool, DeliveryError> {
        Ok(self
            .fetches(artifact)
            .await?
            .iter()
            .any(|f| f.revision == revision && f.spiffe_id == spiffe_id))
    }

    /// Takes the turn to change pipeline state, waiting for any other instance's turn to
    /// end; read the latest states ([`load_states`](PipelineStore::load_states)) after
    /// taking it if [`ChangeLock::version`] is not the one already read. The default,
    /// for a store only this process writes, is a [`LocalLock`].
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn lock_for_change(&self) -> Result<Box<dyn ChangeLock>, DeliveryError> {
        Ok(Box::new(LocalLock))
    }

    /// The version of the stored state: it moves on with every committed change, by this
    /// instance or another. `None` (the default) for a store only this process writes.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    async fn version(&self) -> Result<Option<i64>, DeliveryError> {
        Ok(None)
    }

    /// Whether this instance leads: runs the scheduler's automatic promotions and
    /// rollbacks. Takes the lead if no instance holds it, and keeps it while this instance
    /// lives. The default, for a store only this process uses, is always `true`.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] (then this instance does not lead).
    async fn lead(&self) -> Result<bool, DeliveryError> {
        Ok(true)
    }
}
