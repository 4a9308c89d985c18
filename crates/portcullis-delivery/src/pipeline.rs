//! [`Pipeline`]: publishing, promotion and per-host revisions over a [`Rollout`], with
//! every change written to a [`PipelineStore`] before it is visible.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_core::Clock;
use portcullis_policy::{
    ArtifactState, Metrics, PolicyError, Readiness, Rollout, RolloutConfig, RolloutEvent,
    Thresholds,
};
use tokio::sync::RwLock;

use crate::DecisionCounts;
use crate::group::GroupCommit;

use crate::revision::check_artifact_name;
use crate::store::{
    Change, ChangeLock, EventRecord, FetchRecord, HostCounts, PipelineStore, RevisionRecord,
};
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

/// Where a host stands in an artifact's pipeline ([`Pipeline::assignments`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Assignment {
    /// The revision the pipeline assigns to the host now: the candidate where a step it
    /// has reached covers the host, else the stable revision (what `GET /bundles` serves).
    pub revision: Option<RevisionId>,
    /// The index of the first step whose scopes cover the host (from which a candidate
    /// reaches it); `None` if no step does.
    pub step: Option<usize>,
}

/// What an operator asks of an artifact's pipeline ([`Pipeline::operate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Move the candidate one step on ([`Pipeline::promote`]).
    Promote,
    /// Hold the rollout, saying why ([`Pipeline::pause`]).
    Pause {
        /// Why.
        reason: String,
    },
    /// Let the rollout move on again ([`Pipeline::resume`]).
    Resume,
    /// Withdraw the candidate, saying why ([`Pipeline::rollback`]).
    Rollback {
        /// Why.
        reason: String,
    },
}

impl Operation {
    /// Its name, as recorded in the history: `promote`, `pause`, `resume`, `rollback`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Promote => "promote",
            Operation::Pause { .. } => "pause",
            Operation::Resume => "resume",
            Operation::Rollback { .. } => "rollback",
        }
    }
}

/// The candidate an operator decided about, as the view showed it ([`Pipeline::operate`]):
/// its revision and, optionally, the step it was at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Expected {
    /// The candidate revision (its content id).
    pub revision: String,
    /// The index of the step it was at, if the operator's view said.
    pub step: Option<usize>,
}

impl Expected {
    /// The candidate `revision`, at whichever step.
    #[must_use]
    pub fn revision(revision: impl Into<String>) -> Expected {
        Expected {
            revision: revision.into(),
            step: None,
        }
    }

    /// At step `step` (its index): a candidate that has moved on since is not the one the
    /// operator decided about (a second click on "promote" must not promote it again).
    #[must_use]
    pub fn at_step(mut self, step: usize) -> Expected {
        self.step = Some(step);
        self
    }
}

/// One artifact's candidate in its current step, as each host reported it: every host's
/// own counts are judged against the step's limits, so no host can hide another's breach
/// by reporting many good decisions of its own (the aggregate the [`Rollout`] judges adds
/// every host's counts up, and a single host could dilute it at will).
#[derive(Debug, Default)]
struct Tally {
    /// The candidate and the step the counts are for.
    revision: String,
    step: usize,
    /// Each host's counts there.
    hosts: HashMap<String, Metrics>,
}

/// Why a host's own counts breach `limits`, given the step's sum of `total` decisions:
/// judged once the sum has reached the step's `min_decisions` and the host has made its
/// share of them (`min_decisions` over the hosts reporting, at least one), so a host
/// flooding the sum with good decisions cannot keep the others below their minimum.
fn host_breach(
    limits: &Thresholds,
    total: u64,
    hosts: &HashMap<String, Metrics>,
) -> Option<String> {
    if total < limits.min_decisions {
        return None;
    }
    let reporting = u64::try_from(hosts.len()).unwrap_or(u64::MAX).max(1);
    let share = limits.min_decisions.div_ceil(reporting).max(1);
    let judged = Thresholds {
        min_decisions: share,
        ..*limits
    };
    let mut names: Vec<&String> = hosts.keys().collect();
    names.sort();
    names.into_iter().find_map(|host| {
        let reason = judged.breach(hosts.get(host)?)?;
        Some(format!("{host} alone: {reason}"))
    })
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
/// Decision counts ([`report`](Pipeline::report)) count only from a host the candidate is
/// assigned to *and that downloaded it* ([`record_fetch`](Pipeline::record_fetch), here or
/// on another instance sharing the store).
/// Besides the sum over hosts that the [`Rollout`] judges, each host's own counts are
/// judged against the step's limits: one host's breach rolls the candidate back at the
/// next [`tick`](Pipeline::tick) and refuses a [`promote`](Pipeline::promote), however many
/// good decisions other hosts report. Hosts' own counts are stored with the sum.
///
/// For now an artifact holds exactly one bundle (its `bundles` list names it).
///
/// # Several instances on one store
///
/// With a store several processes share (PostgreSQL), every change takes the store's turn
/// ([`PipelineStore::lock_for_change`]) and, if another instance changed the pipelines
/// since, reads their states and revisions again before applying itself: no change is
/// made to a stale copy. Reads (hosts' polls, [`revision_for`](Pipeline::revision_for))
/// keep using the copy in memory, brought up to date by [`refresh`](Pipeline::refresh)
/// (see [`spawn_refresher`](Pipeline::spawn_refresher)). Downloads made from another
/// instance count too: a host missing from this instance's own record of downloads is
/// looked up in the store ([`PipelineStore::has_fetched`]). One instance
/// [leads](Pipeline::lead) and runs the scheduler. Hosts' own counts stay per instance:
/// each instance judges the reports it received, and acts on a breach among them with
/// [`roll_back_breaches`](Pipeline::roll_back_breaches).
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
    /// Artifact → each host's counts for its candidate in its current step.
    tallies: std::sync::Mutex<BTreeMap<String, Tally>>,
    /// (artifact, candidate revision, host) for every download of a current candidate.
    downloaded: std::sync::RwLock<HashSet<(String, String, String)>>,
    /// The stored version the state in memory is at least as new as (`None`: a store only
    /// this process writes). Changed only in the turn (`changing`).
    version: std::sync::Mutex<Option<i64>>,
    /// Whether the store is shared with other instances (it has a version).
    shared: bool,
    /// Whether this instance led at the last [`Pipeline::lead`].
    leading: AtomicBool,
}

/// The turn to change the pipelines: this process's, then the store's.
#[derive(Debug)]
struct Turn<'a> {
    _local: tokio::sync::MutexGuard<'a, ()>,
    lock: Box<dyn ChangeLock>,
}

/// Refreshes a [`Pipeline`]'s state from its store ([`Pipeline::spawn_refresher`]); stops
/// when dropped.
#[derive(Debug)]
pub struct Refresher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.task.abort();
    }
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
        // Read before the states: they are then at least as new as it says.
        let version = store.version().await?;
        let bundle_revisions = load_bundle_revisions(&config, store.as_ref()).await?;
        let saved = store.load_states().await?;
        let rollout =
            Rollout::restore(&config, clock.clone(), saved).map_err(DeliveryError::Rollout)?;
        let tallies = tallies_of(&rollout, store.host_counts().await?);
        // Who downloaded the candidates in flight: their counts count.
        let mut downloaded = HashSet::new();
        for (artifact, state) in rollout.states() {
            let Some(candidate) = &state.candidate else {
                continue;
            };
            for fetch in store.fetches(artifact).await? {
                if fetch.revision == candidate.revision {
                    downloaded.insert((fetch.artifact, fetch.revision, fetch.spiffe_id));
                }
            }
        }
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
            tallies: std::sync::Mutex::new(tallies),
            downloaded: std::sync::RwLock::new(downloaded),
            version: std::sync::Mutex::new(version),
            shared: version.is_some(),
            leading: AtomicBool::new(version.is_none()),
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
            return Err(self.exists(artifact, &revision));
        }
        // Compiling and running the tests is CPU work: off the async threads, and before
        // the turn to change the pipeline is taken (other changes go on meanwhile).
        let validator = self.validator.clone();
        let (validated, tarball) = tokio::task::spawn_blocking(move || {
            let validated = validator.validate(&bundle, &tarball);
            (validated, tarball)
        })
        .await
        .map_err(|e| DeliveryError::Store(format!("validation did not finish: {e}")))?;
        let bundle_revision = validated?.bundle.revision().to_owned();
        // Content-addressed: storing the same tarball twice is harmless, so it is stored
        // before the turn is taken too.
        match self.artifacts.put(artifact, &tarball).await {
            Ok(_) => {}
            // Stored before, but its record was not written (a crash between the two, or
            // another publish of the same tarball now) — or something else was put at
            // this address behind the server's back: read it back, and accept it only if
            // it is this content.
            Err(DeliveryError::Exists { .. }) => {
                match self.artifacts.get(artifact, &revision).await {
                    Ok(_) => {}
                    Err(DeliveryError::Corrupt { .. }) => {
                        return Err(DeliveryError::Store(format!(
                            "the artifact store already holds other content at revision \
                         {revision} of {artifact:?}: remove that object, then publish again"
                        )));
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        // From here to the change being visible, one change at a time: the checks below
        // hold for what is written (two publishes of one manifest revision cannot both
        // pass them).
        let turn = self.turn().await?;
        if self.store.has_revision(artifact, &revision).await? {
            return Err(self.exists(artifact, &revision));
        }
        // Hosts report the manifest revision they run: it must name this content only —
        // among the revisions other instances published too.
        if self.shared {
            self.learn_revisions(artifact).await?;
        }
        let taken = self
            .bundle_revisions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|((a, _), name)| a == artifact && **name == bundle_revision)
            .map(|((_, id), _)| id.clone());
        if let Some(existing) = taken {
            return Err(DeliveryError::RevisionNameTaken {
                artifact: artifact.to_owned(),
                bundle_revision,
                existing,
            });
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
        self.change_in_turn(turn, "publish", actor, Some(record), |rollout, _| {
            rollout.propose(artifact, &id)
        })
        .await?;
        Ok(Published {
            revision,
            bundle_revision,
        })
    }

    fn exists(&self, artifact: &str, revision: &RevisionId) -> DeliveryError {
        DeliveryError::Exists {
            artifact: artifact.to_owned(),
            revision: revision.to_string(),
        }
    }

    /// Does `operation` to `artifact`'s pipeline, as [`promote`](Pipeline::promote),
    /// [`pause`](Pipeline::pause), [`resume`](Pipeline::resume) or
    /// [`rollback`](Pipeline::rollback) do; with `expected`, only if the candidate is
    /// still that revision (at that step, if it says) when the operation is applied —
    /// checked in the same turn that applies it, so no publish, promotion or rollback can
    /// slip in between. Returns what happened, in words.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Rollout`] if the candidate is another (or none, or at another
    /// step), or as the operation's own method; [`DeliveryError::Store`].
    pub async fn operate(
        &self,
        artifact: &str,
        operation: &Operation,
        actor: &str,
        expected: Option<&Expected>,
    ) -> Result<String, DeliveryError> {
        self.change(operation.kind(), actor, None, |rollout, _| {
            if let Some(expected) = expected {
                let candidate = rollout
                    .state(artifact)
                    .and_then(|s| s.candidate.as_ref())
                    .map(|c| (c.revision.as_str(), c.step));
                let stale = match candidate {
                    Some((revision, step)) => {
                        revision != expected.revision || expected.step.is_some_and(|s| s != step)
                    }
                    None => true,
                };
                if stale {
                    let now = candidate.map_or_else(
                        || "none".to_owned(),
                        |(revision, step)| format!("{revision} at step {step}"),
                    );
                    let seen = match expected.step {
                        Some(step) => format!("{} at step {step}", expected.revision),
                        None => expected.revision.clone(),
                    };
                    return Err(PolicyError::Rollout {
                        artifact: artifact.to_owned(),
                        message: format!(
                            "the candidate is {now}, not {seen} (the view was out of date: \
                             look again)"
                        ),
                    });
                }
            }
            match operation {
                Operation::Promote => self.promote_in(rollout, artifact).map(|e| e.to_string()),
                Operation::Pause { reason } => rollout
                    .pause(artifact, reason)
                    .map(|()| format!("paused: {reason}")),
                Operation::Resume => rollout.unpause(artifact).map(|()| "resumed".to_owned()),
                Operation::Rollback { reason } => {
                    rollout.rollback(artifact, reason).map(|e| e.to_string())
                }
            }
        })
        .await
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
        self.change("promote", actor, None, |r, _| self.promote_in(r, artifact))
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
        self.change("rollback", actor, None, |r, _| r.rollback(artifact, reason))
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
        self.change("pause", actor, None, |r, _| r.pause(artifact, reason))
            .await
    }

    /// Lets `artifact`'s rollout move on again (see [`Rollout::unpause`]).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Rollout`] if unknown or not paused; [`DeliveryError::Store`].
    pub async fn resume(&self, artifact: &str, actor: &str) -> Result<(), DeliveryError> {
        self.change("resume", actor, None, |r, _| r.unpause(artifact))
            .await
    }

    /// Runs [`Rollout::tick`]: automatic promotions and rollbacks, recorded as the
    /// [`SCHEDULER`]'s.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if they cannot be recorded (nothing changes then).
    pub async fn tick(&self) -> Result<Vec<RolloutEvent>, DeliveryError> {
        self.change("tick", SCHEDULER, None, |rollout, _| {
            // Hosts' own breaches first: a candidate one host saw breach does not move on.
            let mut events = self.roll_back_host_breaches(rollout)?;
            events.extend(rollout.tick());
            Ok(events)
        })
        .await
    }

    /// Rolls back every candidate that a host's own counts, as reported to *this* instance,
    /// breached in its current step — the first thing [`tick`](Pipeline::tick) does, and
    /// nothing else (no promotion, no judgement of the summed counts). Hosts' own counts
    /// are kept by the instance that received them: with several instances on one store,
    /// those that do not [lead](Pipeline::lead) run this on the scheduler's period so that
    /// a breach reported to them is acted on too. Recorded as the [`SCHEDULER`]'s; without
    /// any such breach it does not touch the store.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if they cannot be recorded (nothing changes then).
    pub async fn roll_back_breaches(&self) -> Result<Vec<RolloutEvent>, DeliveryError> {
        if self.host_breaches(&*self.rollout.read().await).is_empty() {
            return Ok(Vec::new());
        }
        self.change("tick", SCHEDULER, None, |rollout, _| {
            self.roll_back_host_breaches(rollout)
        })
        .await
    }

    /// Rolls back, in `rollout`, every candidate a host's own counts breached.
    fn roll_back_host_breaches(
        &self,
        rollout: &mut Rollout,
    ) -> Result<Vec<RolloutEvent>, PolicyError> {
        let mut events = Vec::new();
        for (artifact, reason) in self.host_breaches(rollout) {
            events.push(rollout.rollback(&artifact, &reason)?);
        }
        Ok(events)
    }

    /// [`Rollout::promote`], refused — and rolled back — when a host's own counts breach
    /// the step's limits.
    fn promote_in(
        &self,
        rollout: &mut Rollout,
        artifact: &str,
    ) -> Result<RolloutEvent, PolicyError> {
        if let Some((_, reason)) = self
            .host_breaches(rollout)
            .into_iter()
            .find(|(a, _)| a == artifact)
        {
            let event = rollout.rollback(artifact, &reason)?;
            return Err(PolicyError::Rollout {
                artifact: artifact.to_owned(),
                message: format!("not promoted: {event}"),
            });
        }
        rollout.promote(artifact)
    }

    /// The artifacts whose candidate, in its current step, a host's own counts breach the
    /// limits of ([`host_breach`]), and why.
    fn host_breaches(&self, rollout: &Rollout) -> Vec<(String, String)> {
        self.tallies()
            .iter()
            .filter_map(|(artifact, tally)| {
                let candidate = rollout.state(artifact)?.candidate.as_ref()?;
                if candidate.revision != tally.revision || candidate.step != tally.step {
                    return None;
                }
                let limits = self.thresholds(artifact, tally.step)?;
                let reason = host_breach(&limits, candidate.metrics.decisions, &tally.hosts)?;
                Some((artifact.clone(), reason))
            })
            .collect()
    }

    fn tallies(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Tally>> {
        // Tallies are changed whole, in `apply_host_counts`: a panic elsewhere cannot
        // leave half of one.
        self.tallies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The limits of `artifact`'s step `step`.
    fn thresholds(&self, artifact: &str, step: usize) -> Option<Thresholds> {
        self.config
            .artifacts
            .iter()
            .find(|a| a.name == artifact)
            .and_then(|a| a.steps.get(step))
            .map(|s| s.thresholds)
    }

    /// Deletes download records older than `fetch_age` and all but each artifact's newest
    /// `events_per_artifact` events (see [`PipelineStore::prune`]); the downloads and hosts'
    /// counts of the candidates in flight are kept whatever their age.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`].
    pub async fn prune(
        &self,
        fetch_age: std::time::Duration,
        events_per_artifact: Option<u32>,
    ) -> Result<crate::Pruned, DeliveryError> {
        let age = u64::try_from(fetch_age.as_millis()).unwrap_or(u64::MAX);
        let mut retention =
            crate::Retention::fetches_before(millis(self.clock.as_ref()).saturating_sub(age));
        if let Some(events) = events_per_artifact {
            retention = retention.with_events_per_artifact(events);
        }
        // Read under the turn: no candidate is proposed between this list and the prune.
        let _turn = self.changing.lock().await;
        for (artifact, state) in self.rollout.read().await.states() {
            if let Some(candidate) = &state.candidate {
                retention = retention.keep_revision(artifact.clone(), candidate.revision.clone());
            }
        }
        self.store.prune(&retention).await
    }

    /// Records that host `fetch.spiffe_id` downloaded `fetch.revision` (durably, before it
    /// returns): what operators see of who runs what, and what lets the host's decision
    /// counts for a candidate count.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] (then the download must not be served).
    pub async fn record_fetch(&self, fetch: &FetchRecord) -> Result<(), DeliveryError> {
        self.store.record_fetch(fetch).await?;
        let candidate = self
            .rollout
            .read()
            .await
            .state(&fetch.artifact)
            .and_then(|s| s.candidate.as_ref())
            .is_some_and(|c| c.revision == fetch.revision);
        if candidate {
            self.downloaded
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert((
                    fetch.artifact.clone(),
                    fetch.revision.clone(),
                    fetch.spiffe_id.clone(),
                ));
        }
        Ok(())
    }

    /// Adds the decision counts host `spiffe_id` uploaded to the candidates they concern:
    /// only counts for a bundle revision that is its artifact's candidate, from a host the
    /// candidate is assigned to and that downloaded it here, count (a host outside the
    /// candidate's steps, or that never fetched it, cannot move its rates). Each host's
    /// own counts are kept and judged too (see [`Pipeline`]). Returns how many decisions
    /// counted. The sum and each host's counts are persisted with the state; no event is
    /// recorded for them.
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
            let counted = async {
                // Downloads made on other instances are looked up before the turn (no other
                // instance waits for them), and again in it only for a candidate that
                // changed meanwhile.
                let mut checked = HashSet::new();
                self.learn_downloads(batch.items(), &mut checked).await?;
                let turn = self.turn().await?;
                self.learn_downloads(batch.items(), &mut checked).await?;
                self.change_in_turn(turn, REPORT, "hosts", None, |rollout, change| {
                    let mut own = HashMap::new();
                    let counted = batch
                        .items()
                        .iter()
                        .map(|(host, counts)| self.count(rollout, host, counts, &mut own))
                        .collect::<Result<Vec<u64>, _>>()?;
                    change.host_counts = own.into_values().collect();
                    Ok(counted)
                })
                .await
            }
            .await;
            batch.answer(counted);
        }
        answer.wait().await
    }

    /// Adds `counts` from host `spiffe_id` to the candidates they concern (see
    /// [`report`](Pipeline::report)), and to the host's own counts in `own` (keyed by
    /// artifact, revision, step and host); how many decisions counted.
    fn count(
        &self,
        rollout: &mut Rollout,
        spiffe_id: &str,
        counts: &DecisionCounts,
        own: &mut HashMap<(String, String, usize, String), HostCounts>,
    ) -> Result<u64, PolicyError> {
        let manifest_revisions = self
            .bundle_revisions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let downloaded = self
            .downloaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut counted = 0_u64;
        for ((bundle, named), metrics) in &counts.counts {
            let Some(artifact) = self.artifact_of.get(bundle) else {
                continue;
            };
            let Some((candidate, step)) = rollout
                .state(artifact)
                .and_then(|s| s.candidate.as_ref())
                .map(|c| (c.revision.clone(), c.step))
            else {
                continue;
            };
            let assigned = rollout.revision_for(artifact, spiffe_id) == Some(&candidate);
            let same =
                manifest_revisions.get(&(artifact.clone(), candidate.clone())) == Some(named);
            let fetched =
                downloaded.contains(&(artifact.clone(), candidate.clone(), spiffe_id.to_owned()));
            if !(assigned && same && fetched) {
                continue;
            }
            let key = (
                artifact.clone(),
                candidate.clone(),
                step,
                spiffe_id.to_owned(),
            );
            let before = own.get(&key).map(|h| h.metrics).unwrap_or_else(|| {
                self.tallies()
                    .get(artifact)
                    .filter(|t| t.revision == candidate && t.step == step)
                    .and_then(|t| t.hosts.get(spiffe_id).copied())
                    .unwrap_or_default()
            });
            let metrics_now = Metrics {
                decisions: before.decisions.saturating_add(metrics.decisions),
                denies: before.denies.saturating_add(metrics.denies),
                errors: before.errors.saturating_add(metrics.errors),
            };
            own.insert(
                key,
                HostCounts {
                    artifact: artifact.clone(),
                    revision: candidate.clone(),
                    step: u32::try_from(step).unwrap_or(u32::MAX),
                    spiffe_id: spiffe_id.to_owned(),
                    metrics: metrics_now,
                },
            );
            rollout.report(artifact, &candidate, *metrics)?;
            counted = counted.saturating_add(metrics.decisions);
        }
        Ok(counted)
    }

    /// Makes stored hosts' counts current.
    fn apply_host_counts(&self, counts: &[HostCounts]) {
        let mut tallies = self.tallies();
        for counted in counts {
            let step = usize::try_from(counted.step).unwrap_or(usize::MAX);
            let entry = tallies.entry(counted.artifact.clone()).or_default();
            if entry.revision != counted.revision || entry.step != step {
                *entry = Tally {
                    revision: counted.revision.clone(),
                    step,
                    ..Tally::default()
                };
            }
            entry
                .hosts
                .insert(counted.spiffe_id.clone(), counted.metrics);
        }
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

    /// How `artifact`'s candidate stands against its current step's limits now (see
    /// [`Rollout::readiness`]); `None` without a candidate.
    pub async fn readiness(&self, artifact: &str) -> Option<Readiness> {
        let rollout = self.rollout.read().await;
        let mut readiness = rollout.readiness(artifact)?;
        if readiness.breach.is_none() {
            readiness.breach = self
                .host_breaches(&rollout)
                .into_iter()
                .find(|(a, _)| a == artifact)
                .map(|(_, reason)| reason);
        }
        Some(readiness)
    }

    /// Where each of `hosts` (SPIFFE IDs) stands in `artifact`'s pipeline now, in order,
    /// all read from one state (one lock, however many hosts).
    pub async fn assignments<S: AsRef<str>>(&self, artifact: &str, hosts: &[S]) -> Vec<Assignment> {
        let rollout = self.rollout.read().await;
        hosts
            .iter()
            .map(|host| Assignment {
                revision: rollout
                    .revision_for(artifact, host.as_ref())
                    .and_then(|r| r.parse().ok()),
                step: rollout.step_covering(artifact, host.as_ref()),
            })
            .collect()
    }

    /// The revision the manifest of `revision` of `artifact` names (what hosts report as
    /// active), if it was published here.
    #[must_use]
    pub fn bundle_revision(&self, artifact: &str, revision: &str) -> Option<String> {
        self.bundle_revisions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(artifact.to_owned(), revision.to_owned()))
            .cloned()
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
        op: impl FnOnce(&mut Rollout, &mut Change) -> Result<T, PolicyError>,
    ) -> Result<T, DeliveryError> {
        let turn = self.turn().await?;
        self.change_in_turn(turn, kind, actor, revision, op).await
    }

    /// [`change`](Pipeline::change), by a caller that took the turn already. `op` may add
    /// hosts' counts to the change it is given (the rest is filled in here).
    async fn change_in_turn<T>(
        &self,
        turn: Turn<'_>,
        kind: &str,
        actor: &str,
        revision: Option<RevisionRecord>,
        op: impl FnOnce(&mut Rollout, &mut Change) -> Result<T, PolicyError>,
    ) -> Result<T, DeliveryError> {
        let mut rollout = self.rollout.read().await.clone();
        let before = rollout.states().clone();
        let mut change = Change::default();
        let result = op(&mut rollout, &mut change);
        let at_ms = millis(self.clock.as_ref());
        let changed: Vec<(String, ArtifactState)> = rollout
            .states()
            .iter()
            .filter(|(name, state)| before.get(*name) != Some(*state))
            .map(|(name, state)| (name.clone(), state.clone()))
            .collect();
        if changed.is_empty() && revision.is_none() && change.host_counts.is_empty() {
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
        let Turn { _local, lock } = turn;
        let base = lock.version();
        let published = revision.as_ref().map(|r| {
            (
                (r.artifact.clone(), r.revision.to_string()),
                r.bundle_revision.clone(),
            )
        });
        change.states = changed;
        change.events = events;
        change.revision = revision;
        let host_counts = change.host_counts.clone();
        let written = lock.commit(self.store.as_ref(), change).await;
        // What is stored is the truth: if it was not written, nothing changed.
        written?;
        self.apply_host_counts(&host_counts);
        if let Some((key, name)) = published {
            self.bundle_revisions
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key, name);
        }
        self.forget_unassigned(&rollout);
        *self.rollout.write().await = rollout;
        // This change is the stored version after `base`.
        *self.version_lock() = base.map(|v| v.saturating_add(1));
        if kind != REPORT {
            tracing::info!(kind, actor, "pipeline changed");
        }
        result.map_err(DeliveryError::Rollout)
    }

    /// Forgets what hosts can no longer be assigned under `rollout`: served tarballs,
    /// downloads and own counts of candidates (or steps) that are no longer current.
    fn forget_unassigned(&self, rollout: &Rollout) {
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
        // Hosts' downloads and own counts matter for the candidates in their steps only.
        let current = |artifact: &str, revision: &str, step: Option<usize>| {
            rollout
                .states()
                .get(artifact)
                .and_then(|state| state.candidate.as_ref())
                .is_some_and(|c| c.revision == revision && step.is_none_or(|s| s == c.step))
        };
        self.downloaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(artifact, revision, _)| current(artifact, revision, None));
        self.tallies()
            .retain(|artifact, tally| current(artifact, &tally.revision, Some(tally.step)));
    }

    fn version_lock(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        // Only ever replaced whole.
        self.version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the turn to change the pipelines — this process's, then the store's — and
    /// brings the state in memory up to the stored one if another instance changed it.
    async fn turn(&self) -> Result<Turn<'_>, DeliveryError> {
        let local = self.changing.lock().await;
        let lock = self.store.lock_for_change().await?;
        if let Some(version) = lock.version() {
            // No other instance commits while the lock is held: what is read now is
            // exactly this version.
            self.reload(version).await?;
        }
        Ok(Turn {
            _local: local,
            lock,
        })
    }

    /// With the process's turn held: reads the states and revisions again unless the
    /// state in memory is already at least as new as `stored`. Whether it read them.
    async fn reload(&self, stored: i64) -> Result<bool, DeliveryError> {
        if self.version_lock().is_some_and(|v| v >= stored) {
            return Ok(false);
        }
        let saved = self.store.load_states().await?;
        let rollout = Rollout::restore(&self.config, self.clock.clone(), saved)
            .map_err(DeliveryError::Rollout)?;
        // Hosts' counts as every instance stored them: a host's next report adds to them,
        // and its breach is seen whichever instance it reported to.
        let tallies = tallies_of(&rollout, self.store.host_counts().await?);
        // Revisions are never changed or removed: only those the states name and this
        // instance has not seen are read (publish reads its artifact's whole list).
        let unknown: Vec<String> = {
            let known = self
                .bundle_revisions
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            rollout
                .states()
                .iter()
                .filter(|(artifact, state)| {
                    let named = state
                        .stable
                        .iter()
                        .chain(state.candidate.as_ref().map(|c| &c.revision));
                    named
                        .into_iter()
                        .any(|r| !known.contains_key(&((*artifact).clone(), r.clone())))
                })
                .map(|(artifact, _)| artifact.clone())
                .collect()
        };
        for artifact in unknown {
            self.learn_revisions(&artifact).await?;
        }
        *self.tallies() = tallies;
        self.forget_unassigned(&rollout);
        *self.rollout.write().await = rollout;
        *self.version_lock() = Some(stored);
        tracing::debug!(version = stored, "pipeline state read again from the store");
        Ok(true)
    }

    /// Reads every published revision of `artifact` from the store into
    /// `bundle_revisions`.
    async fn learn_revisions(&self, artifact: &str) -> Result<(), DeliveryError> {
        let records = self.store.revisions(artifact).await?;
        let mut known = self
            .bundle_revisions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in records {
            known.insert(
                (artifact.to_owned(), r.revision.to_string()),
                r.bundle_revision,
            );
        }
        Ok(())
    }

    /// Brings the state in memory (what hosts' polls and every read see) up to the stored
    /// one, if another instance sharing the store changed it; whether it did. Changes made
    /// here never need it (each applies to the latest stored state), and with a store only
    /// this process writes it does nothing.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] if the store cannot be read (the state in memory stays);
    /// [`DeliveryError::Rollout`] if a stored state does not fit this instance's
    /// configuration.
    pub async fn refresh(&self) -> Result<bool, DeliveryError> {
        // Read before the states: they are then at least as new as it says.
        let Some(stored) = self.store.version().await? else {
            return Ok(false);
        };
        if self.version_lock().is_some_and(|v| v >= stored) {
            return Ok(false);
        }
        let _turn = self.changing.lock().await;
        self.reload(stored).await
    }

    /// Runs [`refresh`](Pipeline::refresh) every `every`, and at once whenever `wakeup` is
    /// notified (a PostgreSQL store's `listen` gives one that is, at every change any
    /// instance commits): reads lag the stored state by milliseconds while notifications
    /// flow, and by at most `every` (plus a read) when they do not. Stops when the handle
    /// is dropped or the pipeline is.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        every: Duration,
        wakeup: Option<Arc<tokio::sync::Notify>>,
    ) -> Refresher {
        let pipeline = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                match &wakeup {
                    Some(wakeup) => {
                        tokio::select! {
                            _ = ticks.tick() => {}
                            () = wakeup.notified() => {}
                        }
                    }
                    None => {
                        ticks.tick().await;
                    }
                }
                let Some(pipeline) = pipeline.upgrade() else {
                    return;
                };
                if let Err(error) = pipeline.refresh().await {
                    tracing::warn!(%error, "pipeline refresh failed; serving the last state read");
                }
            }
        });
        Refresher { task }
    }

    /// Whether this instance leads, taking the lead if no instance holds it (see
    /// [`PipelineStore::lead`]): only the leader should run [`tick`](Pipeline::tick) on a
    /// schedule. Always `true` with a store only this process uses.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Store`] (this instance does not lead then).
    pub async fn lead(&self) -> Result<bool, DeliveryError> {
        let leading = self.store.lead().await;
        self.leading
            .store(matches!(leading, Ok(true)), Ordering::Relaxed);
        leading
    }

    /// Whether this instance led at the last [`lead`](Pipeline::lead) (before any: whether
    /// the store is one only this process uses).
    #[must_use]
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// With a shared store: the downloads of current candidates that hosts in `reports`
    /// made from other instances, looked up in the store and remembered (only found ones:
    /// a host may download later). Skips the (artifact, candidate) pairs in `checked`, and
    /// adds those it looked up.
    async fn learn_downloads(
        &self,
        reports: &[(String, DecisionCounts)],
        checked: &mut HashSet<(String, String)>,
    ) -> Result<(), DeliveryError> {
        if !self.shared {
            return Ok(());
        }
        let mut wanted = BTreeMap::new();
        let mut seen = HashSet::new();
        {
            let rollout = self.rollout.read().await;
            let manifest_revisions = self
                .bundle_revisions
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let downloaded = self
                .downloaded
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (host, counts) in reports {
                for (bundle, named) in counts.counts.keys() {
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
                    let pair = (artifact.clone(), candidate.clone());
                    if checked.contains(&pair) {
                        continue;
                    }
                    let same = manifest_revisions.get(&pair) == Some(named);
                    seen.insert(pair);
                    let key = (artifact.clone(), candidate, host.clone());
                    if same && !downloaded.contains(&key) {
                        wanted.insert(key, ());
                    }
                }
            }
        }
        checked.extend(seen);
        for (key, ()) in wanted {
            let (artifact, revision, host) = &key;
            if self.store.has_fetched(artifact, revision, host).await? {
                self.downloaded
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(key);
            }
        }
        Ok(())
    }
}

/// Each host's own counts in `counts` for the candidates in flight in `rollout`, in their
/// current steps, by artifact.
fn tallies_of(rollout: &Rollout, counts: Vec<HostCounts>) -> BTreeMap<String, Tally> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for counted in counts {
        let current = rollout
            .state(&counted.artifact)
            .and_then(|s| s.candidate.as_ref())
            .is_some_and(|c| {
                c.revision == counted.revision && u32::try_from(c.step).ok() == Some(counted.step)
            });
        if current {
            let tally = tallies
                .entry(counted.artifact.clone())
                .or_insert_with(|| Tally {
                    revision: counted.revision.clone(),
                    step: usize::try_from(counted.step).unwrap_or(usize::MAX),
                    ..Tally::default()
                });
            tally.hosts.insert(counted.spiffe_id, counted.metrics);
        }
    }
    tallies
}

/// (artifact, revision) → the revision its manifest names, for every revision of every
/// configured artifact in `store`.
async fn load_bundle_revisions(
    config: &RolloutConfig,
    store: &dyn PipelineStore,
) -> Result<BTreeMap<(String, String), String>, DeliveryError> {
    let mut bundle_revisions = BTreeMap::new();
    for artifact in &config.artifacts {
        for r in store.revisions(&artifact.name).await? {
            bundle_revisions.insert(
                (artifact.name.clone(), r.revision.to_string()),
                r.bundle_revision,
            );
        }
    }
    Ok(bundle_revisions)
}

/// The time now, for callers recording host reports and downloads.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
