//! Staged policy delivery: artifacts (named groups of bundles) move through a pipeline of
//! steps, each step reaching the hosts whose SPIFFE ID matches its scopes, promoted by hand,
//! automatically in business hours or around the clock, after a soak time and only while
//! the new revision's deny and error rates stay under limits — otherwise rolled back.
//!
//! [`Rollout`] is the state machine and its persisted state; a delivery service drives it
//! ([`propose`](Rollout::propose), [`report`](Rollout::report), [`tick`](Rollout::tick),
//! [`promote`](Rollout::promote)) and each host asks it which revision to run
//! ([`revision_for`](Rollout::revision_for)).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Datelike, Timelike, Weekday};
use portcullis_core::Clock;
use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// The pipelines of every artifact (TOML or JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// The artifacts.
    pub artifacts: Vec<ArtifactConfig>,
}

/// A named group of bundles that roll out together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactConfig {
    /// The artifact's name.
    pub name: String,
    /// The bundles it contains.
    pub bundles: Vec<String>,
    /// Its steps, first to last (e.g. canary, then production).
    pub steps: Vec<StepConfig>,
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// The step's name.
    pub name: String,
    /// SPIFFE-ID patterns of the hosts this step reaches: `*` is one path segment, a final
    /// `**` any number (at least one), e.g. `spiffe://prod.example/ns/*/sa/checkout`.
    pub scopes: Vec<String>,
    /// How the candidate leaves this step for the next.
    pub promotion: Promotion,
    /// How long the candidate must run in this step before it may leave it.
    #[serde(default)]
    pub soak_seconds: u64,
    /// Limits on the candidate's decisions in this step.
    #[serde(default)]
    pub thresholds: Thresholds,
}

/// How a step is promoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Promotion {
    /// Only by [`Rollout::promote`].
    Manual,
    /// By [`Rollout::tick`] at any time.
    Always,
    /// By [`Rollout::tick`] inside a weekly window in a time zone.
    BusinessHours {
        /// An IANA zone, e.g. `Europe/Tallinn`.
        timezone: String,
        /// Days, `mon`…`sun`. Default Monday to Friday.
        #[serde(default = "weekdays")]
        days: Vec<String>,
        /// First hour of the window (0–23).
        start_hour: u32,
        /// Hour the window ends (1–24, after `start_hour`).
        end_hour: u32,
    },
}

fn weekdays() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Limits on a candidate's decisions within a step; a breach rolls it back.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// The highest share of decisions that may be denials (0–1).
    pub max_deny_rate: Option<f64>,
    /// The highest share of decisions that may fail to evaluate (0–1).
    pub max_error_rate: Option<f64>,
    /// Decisions needed in the step before rates are judged, and before it may be
    /// promoted.
    #[serde(default)]
    pub min_decisions: u64,
}

/// Decision counts of a candidate in its current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// Decisions made.
    pub decisions: u64,
    /// Of which denials.
    pub denies: u64,
    /// Of which evaluation errors.
    pub errors: u64,
}

/// Whether a decision's result counts as a denial in a candidate's [`Metrics`], as a policy
/// enforcement point reading it would treat it (fail closed):
///
/// - no result (undefined), `null` or `false` denies; `true` allows;
/// - an object with `allow` denies unless `allow` is exactly `true`; one without `allow`
///   but with `deny` denies when `deny` is `true` or a non-empty list, set, object or
///   string; an object with neither (a package queried whole whose `allow` is undefined,
///   or was renamed) denies;
/// - a list (a set of denial messages) denies when non-empty; other values allow.
///
/// ```
/// use portcullis_policy::counts_as_denial;
/// use serde_json::json;
/// for deny in [json!(false), json!({"allow": false}), json!({"allow": null}), json!({}),
///              json!({"allw": true}), json!({"deny": ["no"]}), json!(["no"])] {
///     assert!(counts_as_denial(Some(&deny)), "{deny}");
/// }
/// assert!(counts_as_denial(None));
/// for allow in [json!(true), json!({"allow": true}), json!({"deny": []}), json!([])] {
///     assert!(!counts_as_denial(Some(&allow)), "{allow}");
/// }
/// ```
#[must_use]
pub fn counts_as_denial(result: Option<&serde_json::Value>) -> bool {
    use serde_json::Value;
    let non_empty = |v: &Value| match v {
        Value::Bool(b) => *b,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::String(s) => !s.is_empty(),
        Value::Null | Value::Number(_) => false,
    };
    match result {
        None | Some(Value::Null | Value::Bool(false)) => true,
        Some(Value::Object(map)) => match (map.get("allow"), map.get("deny")) {
            (Some(allow), _) => allow != &Value::Bool(true),
            (None, Some(deny)) => non_empty(deny),
            (None, None) => true,
        },
        Some(Value::Array(list)) => !list.is_empty(),
        Some(_) => false,
    }
}

/// A revision on its way through the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The revision.
    pub revision: String,
    /// The index of the last step it has reached (it runs on that step's hosts and every
    /// earlier step's).
    pub step: usize,
    /// When it reached that step (ms since the epoch).
    pub step_since_ms: u64,
    /// Its decisions in that step.
    pub metrics: Metrics,
}

/// One artifact's rollout state (persisted).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ArtifactState {
    /// The revision every host runs unless a candidate reaches it.
    pub stable: Option<String>,
    /// The revision being rolled out.
    pub candidate: Option<Candidate>,
    /// What happened last, for operators.
    pub last_event: Option<String>,
    /// Held by an operator ([`Rollout::pause`]): neither [`Rollout::tick`] nor
    /// [`Rollout::promote`] moves the candidate on, while a breach still rolls it back.
    #[serde(default)]
    pub paused: bool,
}

/// How an artifact's candidate stands in the step it has reached, as
/// [`Rollout::promote`] and [`Rollout::tick`] judge it now: its decisions and rates next to
/// the step's limits, how long it has soaked, and what holds it there.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Readiness {
    /// The candidate revision.
    pub revision: String,
    /// The index of the step it has reached.
    pub step: usize,
    /// That step's name.
    pub step_name: String,
    /// Its decisions in that step.
    pub metrics: Metrics,
    /// Denials per decision (`None` before the first decision).
    pub deny_rate: Option<f64>,
    /// Evaluation errors per decision (`None` before the first decision).
    pub error_rate: Option<f64>,
    /// The step's limits.
    pub thresholds: Thresholds,
    /// The soak time the step asks for, in seconds.
    pub soak_seconds: u64,
    /// How long the candidate has been in the step, in seconds.
    pub soaked_seconds: u64,
    /// Why its rates breach the step's limits, if they do: the next tick or promotion
    /// rolls it back.
    pub breach: Option<String>,
    /// Why it may not leave the step yet (soaking, too few decisions), if it may not.
    pub waiting: Option<String>,
    /// Whether the step is promoted by hand only (`promotion = manual`).
    pub manual: bool,
    /// Whether the step's promotion window (business hours) is open now; `None` for a
    /// step without a window.
    pub window_open: Option<bool>,
    /// Whether the artifact is paused (held until resumed).
    pub paused: bool,
}

/// Something [`Rollout::tick`] or an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutEvent {
    /// The candidate reached another step.
    Promoted {
        /// The artifact.
        artifact: String,
        /// The revision.
        revision: String,
        /// The step it reached.
        step: String,
    },
    /// The candidate passed the last step and is now stable everywhere.
    Completed {
        /// The artifact.
        artifact: String,
        /// The revision.
        revision: String,
    },
    /// The candidate was withdrawn; the stable revision runs everywhere again.
    RolledBack {
        /// The artifact.
        artifact: String,
        /// The revision.
        revision: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for RolloutEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutEvent::Promoted { revision, step, .. } => {
                write!(f, "{revision} promoted to step {step}")
            }
            RolloutEvent::Completed { revision, .. } => write!(f, "{revision} completed"),
            RolloutEvent::RolledBack {
                revision, reason, ..
            } => write!(f, "{revision} rolled back: {reason}"),
        }
    }
}

/// A SPIFFE ID pattern: trust domain, then path segments, `*` for one, a final `**` for
/// one or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffePattern {
    trust_domain: String,
    segments: Vec<String>,
}

const MAX_SPIFFE_ID: usize = 2048;

fn split_spiffe(text: &str) -> Option<(&str, Vec<&str>)> {
    if text.len() > MAX_SPIFFE_ID {
        return None;
    }
    let rest = text.strip_prefix("spiffe://")?;
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_domain = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if !valid_domain {
        return None;
    }
    let segments: Vec<&str> = if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    };
    Some((domain, segments))
}

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl FromStr for SpiffePattern {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, PolicyError> {
        let bad = |why: &str| PolicyError::Rollout {
            artifact: "<config>".to_owned(),
            message: format!("scope {text:?}: {why}"),
        };
        let (domain, segments) =
            split_spiffe(text).ok_or_else(|| bad("not spiffe://<trust domain>/<path>"))?;
        let last = segments.len().saturating_sub(1);
        for (i, segment) in segments.iter().enumerate() {
            let ok = *segment == "*" || (*segment == "**" && i == last) || valid_segment(segment);
            if !ok {
                return Err(bad(
                    "a path segment is not a SPIFFE segment, `*`, or a final `**`",
                ));
            }
        }
        Ok(SpiffePattern {
            trust_domain: domain.to_owned(),
            segments: segments.into_iter().map(str::to_owned).collect(),
        })
    }
}

impl SpiffePattern {
    /// Whether `id` (a valid SPIFFE ID) matches.
    #[must_use]
    pub fn matches(&self, id: &str) -> bool {
        let Some((domain, segments)) = split_spiffe(id) else {
            return false;
        };
        if domain != self.trust_domain || !segments.iter().all(|s| valid_segment(s)) {
            return false;
        }
        let mut ids = segments.iter();
        for (i, pattern) in self.segments.iter().enumerate() {
            if pattern == "**" && i + 1 == self.segments.len() {
                return ids.next().is_some();
            }
            match ids.next() {
                Some(segment) if pattern == "*" || pattern == segment => {}
                _ => return false,
            }
        }
        ids.next().is_none()
    }
}

/// A step, checked.
#[derive(Debug, Clone)]
struct Step {
    name: String,
    scopes: Vec<SpiffePattern>,
    window: Option<Window>,
    manual: bool,
    soak_ms: u64,
    thresholds: Thresholds,
}

#[derive(Debug, Clone)]
struct Window {
    timezone: chrono_tz::Tz,
    days: Vec<Weekday>,
    start_hour: u32,
    end_hour: u32,
}

impl Window {
    fn contains(&self, now_ms: u64) -> bool {
        let Some(utc) = i64::try_from(now_ms)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
        else {
            return false;
        };
        let local = utc.with_timezone(&self.timezone);
        self.days.contains(&local.weekday())
            && local.hour() >= self.start_hour
            && local.hour() < self.end_hour
    }
}

#[derive(Debug, Clone)]
struct Artifact {
    steps: Vec<Step>,
}

fn check_rate(artifact: &str, what: &str, rate: Option<f64>) -> Result<(), PolicyError> {
    match rate {
        Some(r) if !(0.0..=1.0).contains(&r) => Err(PolicyError::Rollout {
            artifact: artifact.to_owned(),
            message: format!("{what} must be between 0 and 1, not {r}"),
        }),
        _ => Ok(()),
    }
}

impl Artifact {
    fn from_config(config: &ArtifactConfig) -> Result<Artifact, PolicyError> {
        let fail = |message: String| PolicyError::Rollout {
            artifact: config.name.clone(),
            message,
        };
        if config.steps.is_empty() {
            return Err(fail("a pipeline needs at least one step".to_owned()));
        }
        if config.bundles.is_empty() {
            return Err(fail("an artifact groups at least one bundle".to_owned()));
        }
        let mut steps = Vec::new();
        for step in &config.steps {
            let scopes = step
                .scopes
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<SpiffePattern>, _>>()
                .map_err(|e| fail(format!("step {}: {e}", step.name)))?;
            if scopes.is_empty() {
                return Err(fail(format!(
                    "step {} reaches no hosts (no scopes)",
                    step.name
                )));
            }
            check_rate(&config.name, "max_deny_rate", step.thresholds.max_deny_rate)?;
            check_rate(
                &config.name,
                "max_error_rate",
                step.thresholds.max_error_rate,
            )?;
            let (manual, window) = match &step.promotion {
                Promotion::Manual => (true, None),
                Promotion::Always => (false, None),
                Promotion::BusinessHours {
                    timezone,
                    days,
                    start_hour,
                    end_hour,
                } => {
                    let timezone: chrono_tz::Tz = timezone
                        .parse()
                        .map_err(|_| fail(format!("unknown time zone {timezone:?}")))?;
                    let days = days
                        .iter()
                        .map(|d| d.parse::<Weekday>())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| fail(format!("step {}: days are mon … sun", step.name)))?;
                    if days.is_empty() || *start_hour >= *end_hour || *end_hour > 24 {
                        return Err(fail(format!(
                            "step {}: a window needs days and 0 ≤ start_hour < end_hour ≤ 24",
                            step.name
                        )));
                    }
                    (
                        false,
                        Some(Window {
                            timezone,
                            days,
                            start_hour: *start_hour,
                            end_hour: *end_hour,
                        }),
                    )
                }
            };
            steps.push(Step {
                name: step.name.clone(),
                scopes,
                window,
                manual,
                soak_ms: step.soak_seconds.saturating_mul(1000),
                thresholds: step.thresholds,
            });
        }
        Ok(Artifact { steps })
    }
}

/// The rollout state machine over every artifact, with its persisted state. Cloning it is
/// cheap enough to change a copy and swap it in once the change is stored.
#[derive(Debug, Clone)]
pub struct Rollout {
    artifacts: BTreeMap<String, Artifact>,
    state: BTreeMap<String, ArtifactState>,
    clock: Arc<dyn Clock>,
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Thresholds {
    /// Why `metrics` breach these limits, if they do: `None` below
    /// [`min_decisions`](Thresholds::min_decisions) (or with no decisions at all), else the
    /// first rate over its limit, e.g. `"deny rate 0.900 over the limit 0.5"`. The same
    /// judgement [`Rollout`] makes of a candidate's counts.
    #[must_use]
    pub fn breach(&self, metrics: &Metrics) -> Option<String> {
        breach(metrics, self)
    }
}

/// Why `metrics` breach `thresholds`, if they do.
fn breach(metrics: &Metrics, thresholds: &Thresholds) -> Option<String> {
    if metrics.decisions == 0 || metrics.decisions < thresholds.min_decisions {
        return None;
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "a rate needs no more than f64's 52 bits of precision"
    )]
    let rate = |n: u64| n as f64 / metrics.decisions as f64;
    if let Some(max) = thresholds.max_error_rate
        && rate(metrics.errors) > max
    {
        return Some(format!(
            "error rate {:.3} over the limit {max}",
            rate(metrics.errors)
        ));
    }
    if let Some(max) = thresholds.max_deny_rate
        && rate(metrics.denies) > max
    {
        return Some(format!(
            "deny rate {:.3} over the limit {max}",
            rate(metrics.denies)
        ));
    }
    None
}

impl Rollout {
    /// A rollout over `config`, every artifact without a revision yet.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Rollout`] for a duplicate artifact, an empty pipeline, a bad scope,
    /// time zone, window or rate.
    pub fn new(config: &RolloutConfig, clock: Arc<dyn Clock>) -> Result<Rollout, PolicyError> {
        let mut artifacts = BTreeMap::new();
        for artifact in &config.artifacts {
            if artifacts
                .insert(artifact.name.clone(), Artifact::from_config(artifact)?)
                .is_some()
            {
                return Err(PolicyError::Rollout {
                    artifact: artifact.name.clone(),
                    message: "defined twice".to_owned(),
                });
            }
        }
        let state = artifacts
            .keys()
            .map(|name| (name.clone(), ArtifactState::default()))
            .collect();
        Ok(Rollout {
            artifacts,
            state,
            clock,
        })
    }

    /// As [`new`](Rollout::new), resuming the state saved at `path` (if the file exists).
    ///
    /// # Errors
    ///
    /// As [`new`](Rollout::new); [`PolicyError::Io`] if the file cannot be read;
    /// [`PolicyError::Rollout`] if it is not a state of this configuration (an unknown
    /// artifact, a step beyond its pipeline).
    pub fn resume(
        config: &RolloutConfig,
        clock: Arc<dyn Clock>,
        path: impl AsRef<Path>,
    ) -> Result<Rollout, PolicyError> {
        let path = path.as_ref();
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Rollout::new(config, clock);
            }
            Err(e) => return Err(PolicyError::io(path.display(), e)),
        };
        let saved: BTreeMap<String, ArtifactState> =
            serde_json::from_slice(&bytes).map_err(|e| PolicyError::Rollout {
                artifact: "<state>".to_owned(),
                message: format!("{}: {e}", path.display()),
            })?;
        Rollout::restore(config, clock, saved)
    }

    /// As [`new`](Rollout::new), resuming `saved` states (e.g. read from a database);
    /// artifacts without one start without a revision.
    ///
    /// # Errors
    ///
    /// As [`new`](Rollout::new); [`PolicyError::Rollout`] if a state is not one of this
    /// configuration (an unknown artifact, a step beyond its pipeline).
    pub fn restore(
        config: &RolloutConfig,
        clock: Arc<dyn Clock>,
        saved: BTreeMap<String, ArtifactState>,
    ) -> Result<Rollout, PolicyError> {
        let mut rollout = Rollout::new(config, clock)?;
        for (name, state) in saved {
            let Some(artifact) = rollout.artifacts.get(&name) else {
                return Err(PolicyError::Rollout {
                    artifact: name,
                    message: "in the saved state but not in the configuration".to_owned(),
                });
            };
            if state
                .candidate
                .as_ref()
                .is_some_and(|c| c.step >= artifact.steps.len())
            {
                return Err(PolicyError::Rollout {
                    artifact: name,
                    message: "the saved candidate is at a step the pipeline no longer has"
                        .to_owned(),
                });
            }
            rollout.state.insert(name, state);
        }
        Ok(rollout)
    }

    /// Writes the state to `path` (a temporary file, synced, renamed into place).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Io`] if it cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PolicyError> {
        let path = path.as_ref();
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| PolicyError::Rollout {
            artifact: "<state>".to_owned(),
            message: e.to_string(),
        })?;
        let temp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        };
        write().map_err(|e| PolicyError::io(path.display(), e))
    }

    /// The state of `artifact`.
    #[must_use]
    pub fn state(&self, artifact: &str) -> Option<&ArtifactState> {
        self.state.get(artifact)
    }

    /// Every artifact's state, by name (what [`save`](Rollout::save) writes).
    #[must_use]
    pub fn states(&self) -> &BTreeMap<String, ArtifactState> {
        &self.state
    }

    /// The step names of `artifact`'s pipeline, first to last.
    #[must_use]
    pub fn steps(&self, artifact: &str) -> Option<Vec<&str>> {
        self.artifacts
            .get(artifact)
            .map(|a| a.steps.iter().map(|s| s.name.as_str()).collect())
    }

    /// How `artifact`'s candidate stands in its current step (see [`Readiness`]); `None`
    /// for an unknown artifact or one without a candidate.
    #[must_use]
    pub fn readiness(&self, artifact: &str) -> Option<Readiness> {
        let now = millis(self.clock.now());
        let state = self.state.get(artifact)?;
        let candidate = state.candidate.as_ref()?;
        let step = self.artifacts.get(artifact)?.steps.get(candidate.step)?;
        let metrics = candidate.metrics;
        #[expect(
            clippy::cast_precision_loss,
            reason = "a rate needs no more than f64's 52 bits of precision"
        )]
        let rate = |n: u64| (metrics.decisions > 0).then(|| n as f64 / metrics.decisions as f64);
        Some(Readiness {
            revision: candidate.revision.clone(),
            step: candidate.step,
            step_name: step.name.clone(),
            metrics,
            deny_rate: rate(metrics.denies),
            error_rate: rate(metrics.errors),
            thresholds: step.thresholds,
            soak_seconds: step.soak_ms / 1000,
            soaked_seconds: now.saturating_sub(candidate.step_since_ms) / 1000,
            breach: breach(&metrics, &step.thresholds),
            waiting: not_ready(candidate, step, now),
            manual: step.manual,
            window_open: step.window.as_ref().map(|w| w.contains(now)),
            paused: state.paused,
        })
    }

    /// The index of the first step of `artifact`'s pipeline whose scopes cover the host
    /// `spiffe_id` (the step from which a candidate reaches it); `None` if no step does or
    /// the artifact is unknown.
    #[must_use]
    pub fn step_covering(&self, artifact: &str, spiffe_id: &str) -> Option<usize> {
        self.artifacts
            .get(artifact)?
            .steps
            .iter()
            .position(|step| step.scopes.iter().any(|scope| scope.matches(spiffe_id)))
    }

    /// Holds `artifact`'s rollout: until [`unpause`](Rollout::unpause), its candidate is
    /// neither promoted by [`tick`](Rollout::tick) nor by [`promote`](Rollout::promote);
    /// a breach of its limits still rolls it back, and a new candidate may be proposed.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Rollout`] for an unknown artifact or one already paused.
    pub fn pause(&mut self, artifact: &str, reason: &str) -> Result<(), PolicyError> {
        let (_, state) = self.parts(artifact)?;
        if state.paused {
            return Err(PolicyError::Rollout {
                artifact: artifact.to_owned(),
                message: "already paused".to_owned(),
            });
        }
        state.paused = true;
        state.last_event = Some(format!("paused: {reason}"));
        Ok(())
    }

    /// Lets a paused rollout of `artifact` move on again.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Rollout`] for an unknown artifact or one not paused.
    pub fn unpause(&mut self, artifact: &str) -> Result<(), PolicyError> {
        let (_, state) = self.parts(artifact)?;
        if !state.paused {
            return Err(PolicyError::Rollout {
                artifact: artifact.to_owned(),
                message: "not paused".to_owned(),
            });
        }
        state.paused = false;
        state.last_event = Some("resumed".to_owned());
        Ok(())
    }

    fn parts(&mut self, artifact: &str) -> Result<(&Artifact, &mut ArtifactState), PolicyError> {
        match (self.artifacts.get(artifact), self.state.get_mut(artifact)) {
            (Some(config), Some(state)) => Ok((config, state)),
            _ => Err(PolicyError::Rollout {
                artifact: artifact.to_owned(),
                message: "no such artifact".to_owned(),
            }),
        }
    }

    /// Starts rolling `revision` of `artifact` out at its first step, replacing any
    /// candidate still on its way. Until it passes the last step, hosts outside the steps
    /// it reached keep the stable revision (none, for a first rollout: those hosts have no
    /// policy, and their decisions fail closed).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Rollout`] for an unknown artifact or the stable revision itself.
    pub fn propose(&mut self, artifact: &str, revision: &str) -> Result<(), PolicyError> {
        let now = millis(self.clock.now());
        let (config, state) = self.parts(artifact)?;
        if state.stable.as_deref() == Some(revision) {
            return Err(PolicyError::Rollout {
                artifact: artifact.to_owned(),
                message: format!("{revision} is already stable"),
            });
        }
        // A candidate in flight is withdrawn: say so, it is a rollback in effect.
        let replaced = state.candidate.as_ref().map(|old| {
            let step = config
                .steps
                .get(old.step)
                .map_or("its pipeline", |s| s.name.as_str());
            format!(
                ", replacing candidate {} (withdrawn at {step})",
                old.revision
            )
        });
        state.candidate = Some(Candidate {
            revision: revision.to_owned(),
            step: 0,
            step_since_ms: now,
            metrics: Metrics::default(),
        });
        state.last_event = Some(format!(
            "{revision} proposed{}",
            replaced.unwrap_or_default()
        ));
        Ok(())
    }

    /// Adds decision counts from hosts running `revision` of `artifact`. Counts for any
    /// revision other than the candidate are ignored.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Rollout`] for an unknown artifact.
    pub fn report(
        &mut self,
        artifact: &str,
        revision: &str,
        metrics: Metrics,
    ) -> Result<(), PolicyError> {
        let (_, state) = self.parts(artifact)?;
        if let Some(candidate) = state.candidate.as_mut().filter(|c| c.revision == revision) {
            let m = &mut candidate.metrics;
            m.decisions = m.decisions.saturating_add(metrics.decisions);
            m.denies = m.denies.saturating_add(metrics.denies);
            m.errors = m.errors.saturating_add(metrics.errors);
        }
        Ok(())
    }

    /// Moves `artifact`'s candidate one step on by hand (any promotion mode), once its
    /// soak time has passed and its metrics are within limits.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Rollout`] if there is no candidate, or it is not ready (soaking,
    /// too few decisions, or over a limit — which also rolls it back).
    pub fn promote(&mut self, artifact: &str) -> Result<RolloutEvent, PolicyError> {
        let now = millis(self.clock.now());
        let name = artifact.to_owned();
        let (config, state) = self.parts(artifact)?;
        let Some(candidate) = state.candidate.clone() else {
            return Err(PolicyError::Rollout {
                artifact: name,
                message: "no candidate to promote".to_owned(),
            });
        };
        let Some(step) = config.steps.get(candidate.step) else {
            return Err(PolicyError::Rollout {
                artifact: name,
                message: "the candidate is beyond its pipeline".to_owned(),
            });
        };
        if let Some(reason) = breach(&candidate.metrics, &step.thresholds) {
            let event = roll_back(&name, state, &reason);
            return Err(PolicyError::Rollout {
                artifact: name,
                message: format!("not promoted: {event}"),
            });
        }
        if state.paused {
            return Err(PolicyError::Rollout {
                artifact: name,
                message: "paused: resume it first".to_owned(),
            });
        }
        if let Some(wait) = not_ready(&candidate, step, now) {
            return Err(PolicyError::Rollout {
                artifact: name,
                message: format!("not ready: {wait}"),
            });
        }
        Ok(advance(&name, config, state, candidate, now))
    }

    /// Withdraws `artifact`'s candidate by hand.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Rollout`] if there is none.
    pub fn rollback(&mut self, artifact: &str, reason: &str) -> Result<RolloutEvent, PolicyError> {
        let name = artifact.to_owned();
        let (_, state) = self.parts(artifact)?;
        if state.candidate.is_none() {
            return Err(PolicyError::Rollout {
                artifact: name,
                message: "no candidate to roll back".to_owned(),
            });
        }
        Ok(roll_back(&name, state, reason))
    }

    /// Rolls back every candidate over its step's limits, and promotes every candidate
    /// whose step promotes automatically (always, or now inside its window), has soaked,
    /// and is within limits. Returns what happened.
    pub fn tick(&mut self) -> Vec<RolloutEvent> {
        let now = millis(self.clock.now());
        let mut events = Vec::new();
        for (name, config) in &self.artifacts {
            let Some(state) = self.state.get_mut(name) else {
                continue;
            };
            let Some(candidate) = state.candidate.clone() else {
                continue;
            };
            let Some(step) = config.steps.get(candidate.step) else {
                continue;
            };
            if let Some(reason) = breach(&candidate.metrics, &step.thresholds) {
                events.push(roll_back(name, state, &reason));
                continue;
            }
            let automatic = !state.paused
                && !step.manual
                && step.window.as_ref().is_none_or(|w| w.contains(now));
            if automatic && not_ready(&candidate, step, now).is_none() {
                events.push(advance(name, config, state, candidate, now));
            }
        }
        events
    }

    /// The revision of `artifact` the host with SPIFFE ID `spiffe_id` should run: the
    /// candidate if a step it has reached covers the host, else the stable revision.
    #[must_use]
    pub fn revision_for(&self, artifact: &str, spiffe_id: &str) -> Option<&str> {
        let state = self.state.get(artifact)?;
        let config = self.artifacts.get(artifact)?;
        if let Some(candidate) = &state.candidate {
            let reached = config.steps.iter().take(candidate.step + 1);
            if reached
                .flat_map(|s| &s.scopes)
                .any(|scope| scope.matches(spiffe_id))
            {
                return Some(&candidate.revision);
            }
        }
        state.stable.as_deref()
    }
}

/// Why `candidate` may not leave `step` yet, if it may not.
fn not_ready(candidate: &Candidate, step: &Step, now: u64) -> Option<String> {
    let soaked = now.saturating_sub(candidate.step_since_ms);
    if soaked < step.soak_ms {
        return Some(format!(
            "soaking in {} for {} more s",
            step.name,
            (step.soak_ms - soaked).div_ceil(1000)
        ));
    }
    if candidate.metrics.decisions < step.thresholds.min_decisions {
        return Some(format!(
            "{} of {} decisions needed in {}",
            candidate.metrics.decisions, step.thresholds.min_decisions, step.name
        ));
    }
    None
}

/// Moves `candidate` (the state's) to the next step, or makes it stable after the last.
fn advance(
    name: &str,
    config: &Artifact,
    state: &mut ArtifactState,
    mut candidate: Candidate,
    now: u64,
) -> RolloutEvent {
    state.candidate = None;
    let next = candidate.step + 1;
    let event = match config.steps.get(next) {
        Some(step) => {
            let event = RolloutEvent::Promoted {
                artifact: name.to_owned(),
                revision: candidate.revision.clone(),
                step: step.name.clone(),
            };
            candidate.step = next;
            candidate.step_since_ms = now;
            candidate.metrics = Metrics::default();
            state.candidate = Some(candidate);
            event
        }
        None => {
            state.stable = Some(candidate.revision.clone());
            RolloutEvent::Completed {
                artifact: name.to_owned(),
                revision: candidate.revision,
            }
        }
    };
    state.last_event = Some(event.to_string());
    event
}

fn roll_back(name: &str, state: &mut ArtifactState, reason: &str) -> RolloutEvent {
    let revision = state
        .candidate
        .take()
        .map(|c| c.revision)
        .unwrap_or_default();
    let event = RolloutEvent::RolledBack {
        artifact: name.to_owned(),
        revision,
        reason: reason.to_owned(),
    };
    state.last_event = Some(event.to_string());
    event
}
