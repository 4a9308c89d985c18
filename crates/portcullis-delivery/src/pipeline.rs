//! [`Pipeline`]: publishing, promotion and per-host revisions over a [`Rollout`], with
//! every change written to a [`PipelineStore`] before it is visible.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::Clock;
use portcullis_policy::{ArtifactState, PolicyError, Rollout, RolloutConfig, RolloutEvent};
use tokio::sync::RwLock;

use crate::DecisionCounts;
use crate::group::GroupCommit;

use crate::revision::check_artifact_name;
use crate::store::{Change, EventRecord, PipelineStore, RevisionRecord};
use crate::{ArtifactStore, DeliveryError, RevisionId, Validator};

/// The kind of change decision counts make: persisted, never an event.
const REPORT: &str = "report";

/// The actor recorded for [`Pipeline::tick`]'s events.
pub const SCHEDULER: &str = "scheduler";

/// What [`Pipeline::publish`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The new revision (the tarball's SHA-256), now the candidate at the first step.
    pub revision: RevisionId,
    /// The revision its manifest names.
    pub bundle_revision: String,
}

/// The delivery pipelines of every configured artifact.
///
/// Each operation changes a copy of the [`Rollout`] and writes the changed states, with one
/// event per changed artifact, to the pipeline store in one transaction; only then does the
/// copy replace the state everyone sees (hosts' polls keep reading the current state while
/// the transaction is written). If the write fails, nothing changed. Operations are
/// applied one at a time, each on the state the previous one left; hosts' decision count
/// reports are applied and written in batches ([`report`](Pipeline::report)).
///
/// For now an artifact holds exactly one bundle (its `bundles` list names it).
#[derive(Debug)]
pub struct Pipeline {
    config: RolloutConfig,
    clock: Arc<dyn Clock>,
    rollout: RwLock<Rollout>,
    /// Held while a change is applied and written: one at a time.
    changing: tokio::sync::Mutex<()>,
    /// Hosts' decision count reports waiting to be applied and written together.
    reports: GroupCommit<(String, DecisionCounts), u64>,
    store: Arc<dyn PipelineStore>,
    artifacts: Arc<dyn ArtifactStore>,
    validator: Arc<Validator>,
    /// (artifact, revision) → the revision its manifest names (what hosts report).
    bundle_revisions: std::sync::RwLock<BTreeMap<(String, String), String>>,
    /// The tarballs of the revisions hosts are assigned (each artifact's stable and
    /// candidate), read from the artifact store — and checked against their id — once, by
    /// the first download; later downloads share them. Pruned at every change.
    served: std::sync::Mutex<BTreeMap<(String, String), Served>>,
    /// Artifact → its bundle, and bundle → its artifact.
    bundle_of: BTreeMap<String, String>,
    artifact_of: BTreeMap<String, String>,
}

fn millis(clock: &dyn Clock) -> u64 {
    clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A tarball being served: read once, by whichever download comes first.
type Served = Arc<tokio::sync::OnceCell<Arc<[u8]>>>;

fn revision_of(state: &ArtifactState) -> Option<String> {
    state
        .candidate
        .as_ref()
        .map(|c| c.revision.clone())
        .or_else(|| state.stable.clone())
}

impl Pipeline {
    /// The pipelines `config` describes, resuming the states saved in `store`.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Invalid`] for an artifact name that is not path safe, an artifact
    /// that does not hold exactly one bundle, or a bundle in two artifacts;
    /// [`DeliveryError::Rollout`] for a bad pipeline or a saved state that does not fit it;
    /// [`DeliveryError::Store`] if the states cannot be read.
    pub async fn open(
        config: RolloutConfig,
        clock: Arc<dyn Clock>,
        store: Arc<dyn PipelineStore>,
        artifacts: Arc<dyn ArtifactStore>,
        validator: Validator,
    ) -> Result<Pipeline, DeliveryError> {
        let mut bundle_of = BTreeMap::new();
        let mut artifact_of = BTreeMap::new();
        for artifact in &config.artifacts {
            check_artifact_name(&artifact.name)?;
            let [bundle] = artifact.bundles.as_slice() else {
                return Err(DeliveryError::Invalid(format!(
                    "artifact {:?}: the delivery service serves artifacts of exactly one bundle \
                     for now, not {}",
                    artifact.name,
                    artifact.bundles.len()
                )));
            };
            if let Some(other) = artifact_of.insert(bundle.clone(), artifact.name.clone()) {
                return Err(DeliveryError::Invalid(format!(
                    "bundle {bundle:?} is in artifacts {other:?} and {:?}",
                    artifact.name
                )));
            }
            bundle_of.insert(artifact.name.clone(), bundle.clone());
        }
        let mut bundle_revisions = BTreeMap::new();
        for artifact in &config.artifacts {
            for r in store.revisions(&artifact.name).await? {
                bundle_revisions.insert(
                    (artifact.name.clone(), r.revision.to_string()),
                    r.bundle_revision,
                );
            }
        }
        let saved = store.load_states().await?;
        let rollout =
            Rollout::restore(&config, clock.clone(), saved).map_err(DeliveryError::Rollout)?;
        Ok(Pipeline {
            config,
            clock,
            rollout: RwLock::new(rollout),
            changing: tokio::sync::Mutex::new(()),
            reports: GroupCommit::default(),
            store,
            artifacts,
            validator: Arc::new(validator),
            bundle_revisions: std::sync::RwLock::new(bundle_revisions),
            served: std::sync::Mutex::new(BTreeMap::new()),
            bundle_of,
            artifact_of,
        })
    }

    /// The pipelines' configuration.
    #[must_use]
    pub fn config(&self) -> &RolloutConfig {
        &self.config
    }

    /// The pipeline store (history, host reports, downloads).
    #[must_use]
    pub fn store(&self) -> &Arc<dyn PipelineStore> {
        &self.store
    }

    /// The artifact bundle `bundle` belongs to.
    #[must_use]
    pub fn artifact_of(&self, bundle: &str) -> Option<&str> {
        self.artifact_of.get(bundle).map(String::as_str)
    }

    /// The bundle of `artifact`.
    #[must_use]
    pub fn bundle_of(&self, artifact: &str) -> Option<&str> {
        self.bundle_of.get(artifact).map(String::as_str)
    }

    /// Validates `tarball` as `artifact`'s bundle exactly as a sidecar would, stores it as
    /// an immutable revision, and proposes it at the pipeline's first step.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::UnknownArtifact`]; [`DeliveryError::Refused`] saying why the
    /// bundle is not valid; [`DeliveryError::Exists`] if this exact tarball was published
    /// before; [`DeliveryError::Io`] or [`DeliveryError::Store`] if it cannot be stored.
    pub async fn publish(
        &self,
        artifact: &str,
        tarball: Vec<u8>,
        actor: &str,
    ) -> Result<Published, DeliveryError> {
        let bundle = self
            .bundle_of(artifact)
            .ok_or_else(|| DeliveryError::UnknownArtifact(artifact.to_owned()))?
            .to_owned();
        let revision = RevisionId::of(&tarball);
        if self.store.has_revision(artifact, &revision).await? {
            return Err(DeliveryError::Exists {
                artifact: artifact.to_owned(),
                revision: revision.to_string(),
            });
        }
        // Compiling and running the tests is CPU work: off the async threads.
        let validator = self.validator.clone();
        let (validated, tarball) = tokio::task::spawn_blocking(move || {
            let validated = validator.validate(&bundle, &tarball);
            (validated, tarball)
        })
        .await
        .map_err(|e| DeliveryError::Store(format!("validation did not finish: {e}")))?;
        let bundle_revision = validated?.bundle.revision().to_owned();
        match self.artifacts.put(artifact, &tarball).await {
            // Stored before, but its record was not written (a crash between the two):
            // the content is the same, by its address.
            Ok(_) | Err(DeliveryError::Exists { .. }) => {}
            Err(e) => return Err(e),
        }
        let record = RevisionRecord {
            artifact: artifact.to_owned(),
            revision: revision.clone(),
            bundle_revision: bundle_revision.clone(),
            size: u64::try_from(tarball.len()).unwrap_or(u64::MAX),
            published_by: actor.to_owned(),
            published_at_ms: millis(self.clock.as_ref()),
        };
        let id = revision.to_string();
        self.change("publish", actor, Some(record), |rollout| {
            rollout.propose(artifact, &id)
        })
        .await?;
        self.bundle_revisions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((artifact.to_owned(), id), bundle_revision.clone());
        Ok(Published {
            revision,
            bundle_revision,
        })
    }

    /// Moves `artifact`'s candidate one step on (see [`Rollout::promote`]).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Rollout`] if it may not move (which, over a limit, also rolled it
    /// back — recorded); [`DeliveryError::Store`].
    pub async fn promote(
        &self,
        artifact: &str,
        actor: &str,
    ) -> Result<RolloutEvent, DeliveryError> {
        self.change("promote", actor, None, |r| r.promote(artifact))
            .await
    }

    /// Withdraws `artifact`'s candidate (see [`Rollout::rollback`]).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Rollout`] if there is none; [`DeliveryError::Store`].
    pub async fn rollback(
        &self,
        artifact: &str,
        actor: &str,
        reason: &str,
    ) -> Result<RolloutEvent, DeliveryError> {
        self.change("rollback", actor, None, |r| r.rollback(artifact, reason))
            .await
    }

    /// Holds `artifact`'s rollout (see [`Rollout::pause`]).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Rollout`] if unknown or already paused; [`DeliveryError::Store`].
    pub async fn pause(
        &self,
        artifact: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), DeliveryError> {
        self.change("pause", actor, None, |r| r.pause(artifact, reason))
            .await
    }

    /// Lets `artifact`'s rollout move on again (see [`Rollout::unpause`]).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Rollout`] if unknown or not paused; [`DeliveryError::Store`].
    pub async fn resume(&self, artifact: &str, actor: &str) -> Result<(), DeliveryError> {
        self.change("resume", actor, None, |r| r.unpause(artifact))
            .await
    }

    /// Runs [`Rollout::tick`]: automatic promotions and rollbacks, recorded as the
    /// [`SCHEDULER`]'s.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if they cannot be recorded (nothing changes then).
    pub async fn tick(&self) -> Result<Vec<RolloutEvent>, DeliveryError> {
        self.change("tick", SCHEDULER, None, |r| Ok(r.tick())).await
    }

    /// Adds the decision counts host `spiffe_id` uploaded to the candidates they concern:
    /// only counts for a bundle revision that is its artifact's candidate, from a host the
    /// candidate is assigned to, count (a host outside the candidate's steps cannot move
    /// its rates). Returns how many decisions counted. The counts are persisted with the
    /// state; no event is recorded for them.
    ///
    /// Reports made while one batch is written are applied and written together, by one of
    /// their callers: a caller dropped while it writes a batch fails the whole batch, so a
    /// server calls this from a task of its own.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if they cannot be persisted (nothing counts then).
    pub async fn report(
        &self,
        spiffe_id: &str,
        counts: &DecisionCounts,
    ) -> Result<u64, DeliveryError> {
        // A fleet reports thousands of times a second, and each report that counts
        // changes the candidate's state: the reports queued while one batch is written
        // are applied and written together, in one transaction.
        let (batch, answer) = self
            .reports
            .submit((spiffe_id.to_owned(), counts.clone()))
            .await;
        if let Some(batch) = batch {
            let counted = self
                .change(REPORT, "hosts", None, |rollout| {
                    batch
                        .items()
                        .iter()
                        .map(|(host, counts)| self.count(rollout, host, counts))
                        .collect()
                })
                .await;
            batch.answer(counted);
        }
        answer.wait().await
    }

    /// Adds `counts` from host `spiffe_id` to the candidates they concern (see
    /// [`report`](Pipeline::report)); how many decisions counted.
    fn count(
        &self,
        rollout: &mut Rollout,
        spiffe_id: &str,
        counts: &DecisionCounts,
    ) -> Result<u64, PolicyError> {
        let manifest_revisions = self
            .bundle_revisions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut counted = 0_u64;
        for ((bundle, named), metrics) in &counts.counts {
            let Some(artifact) = self.artifact_of.get(bundle) else {
                continue;
            };
            let Some(candidate) = rollout
                .state(artifact)
                .and_then(|s| s.candidate.as_ref())
                .map(|c| c.revision.clone())
            else {
                continue;
            };
            let assigned = rollout.revision_for(artifact, spiffe_id) == Some(&candidate);
            let same =
                manifest_revisions.get(&(artifact.clone(), candidate.clone())) == Some(named);
            if assigned && same {
                rollout.report(artifact, &candidate, *metrics)?;
                counted = counted.saturating_add(metrics.decisions);
            }
        }
        Ok(counted)
    }

    /// The revision `artifact` assigns to the host `spiffe_id` now.
    pub async fn revision_for(&self, artifact: &str, spiffe_id: &str) -> Option<RevisionId> {
        let rollout = self.rollout.read().await;
        rollout
            .revision_for(artifact, spiffe_id)
            .and_then(|r| r.parse().ok())
    }

    /// `artifact`'s state now.
    pub async fn state(&self, artifact: &str) -> Option<ArtifactState> {
        self.rollout.read().await.state(artifact).cloned()
    }

    /// The tarball of `revision` of `artifact`. A fleet downloads the same revision
    /// thousands of times within a poll interval after a promotion: the tarballs of
    /// assigned revisions are read from the artifact store (which checks them against
    /// their id) once, by the first download, and shared by the others.
    ///
    /// # Errors
    ///
    /// As [`ArtifactStore::get`] (a failed read is tried again by the next download).
    pub async fn tarball(
        &self,
        artifact: &str,
        revision: &RevisionId,
    ) -> Result<Arc<[u8]>, DeliveryError> {
        let served = self
            .served()
            .entry((artifact.to_owned(), revision.to_string()))
            .or_default()
            .clone();
        let tarball = served
            .get_or_try_init(|| async {
                self.artifacts
                    .get(artifact, revision)
                    .await
                    .map(Arc::<[u8]>::from)
            })
            .await?;
        Ok(tarball.clone())
    }

    fn served(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Served>> {
        // Entries are inserted and removed whole: a panic elsewhere cannot leave half of one.
        self.served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `op` to a copy of the state, writes every changed state with an event and
    /// `revision` in one transaction — also when `op` fails, since a refused promotion may
    /// have rolled back — and only then makes the copy the state everyone sees.
    async fn change<T>(
        &self,
        kind: &str,
        actor: &str,
        revision: Option<RevisionRecord>,
        op: impl FnOnce(&mut Rollout) -> Result<T, PolicyError>,
    ) -> Result<T, DeliveryError> {
        let _one_at_a_time = self.changing.lock().await;
        let mut rollout = self.rollout.read().await.clone();
        let before = rollout.states().clone();
        let result = op(&mut rollout);
        let at_ms = millis(self.clock.as_ref());
        let changed: Vec<(String, ArtifactState)> = rollout
            .states()
            .iter()
            .filter(|(name, state)| before.get(*name) != Some(*state))
            .map(|(name, state)| (name.clone(), state.clone()))
            .collect();
        if changed.is_empty() && revision.is_none() {
            return result.map_err(DeliveryError::Rollout);
        }
        let mut events = Vec::new();
        if let Some(r) = &revision {
            events.push(EventRecord {
                id: 0,
                at_ms,
                artifact: r.artifact.clone(),
                revision: Some(r.revision.to_string()),
                kind: kind.to_owned(),
                actor: actor.to_owned(),
                message: format!(
                    "{} published (bundle revision {:?}, {} bytes)",
                    r.revision, r.bundle_revision, r.size
                ),
            });
        }
        for (name, state) in changed.iter().filter(|_| kind != REPORT) {
            events.push(EventRecord {
                id: 0,
                at_ms,
                artifact: name.clone(),
                revision: revision_of(state),
                kind: kind.to_owned(),
                actor: actor.to_owned(),
                message: state.last_event.clone().unwrap_or_default(),
            });
        }
        let written = self
            .store
            .commit(Change {
                states: changed,
                events,
                revision,
            })
            .await;
        // What is stored is the truth: if it was not written, nothing changed.
        written?;
        // Only what hosts may be assigned now stays in memory.
        self.served().retain(|(artifact, revision), _| {
            rollout.states().get(artifact).is_some_and(|state| {
                state.stable.as_deref() == Some(revision.as_str())
                    || state
                        .candidate
                        .as_ref()
                        .is_some_and(|c| c.revision == *revision)
            })
        });
        *self.rollout.write().await = rollout;
        if kind != REPORT {
            tracing::info!(kind, actor, "pipeline changed");
        }
        result.map_err(DeliveryError::Rollout)
    }
}

/// The time now, for callers recording host reports and downloads.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
