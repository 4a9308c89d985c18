//! [`PolicyEngine`] and [`RegoEngine`]: a compiled set of bundles, evaluated concurrently
//! on per-thread clones (no lock on the decision path).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use regorus::unstable::{Rule, RuleHead};
use serde_json::Value;

use crate::bundle::overlapping_roots;
use crate::{Bundle, PolicyError};

/// Answers a query against loaded policy and data.
pub trait PolicyEngine: Send + Sync {
    /// Evaluates the rule or document at `path` (`data.authz.allow`, or `authz/allow` as
    /// OPA's REST API spells it) with `input`.
    ///
    /// # Errors
    ///
    /// A bad path, an input over the limits, an evaluation failure, or no active policy.
    fn evaluate(&self, path: &str, input: &Value) -> Result<Evaluation, PolicyError>;
}

/// The answer to one query, and the bundle revisions that gave it (all from one
/// activation: an evaluation never mixes two).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The value, or `None` when the rule is undefined for this input.
    pub result: Option<Value>,
    /// Bundle name → revision of the policy set that answered.
    pub revisions: Arc<BTreeMap<String, String>>,
}

/// Limits on one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalLimits {
    /// How deeply the input may nest. Default 64.
    pub max_input_depth: usize,
    /// How many values (objects, arrays, scalars) the input may hold. Default 100,000.
    pub max_input_values: usize,
    /// Wall-clock time one evaluation may take. Default 1 s. `None` turns the limit off,
    /// which saves about 2 µs per decision (regorus's timer) and leaves a runaway query
    /// running.
    pub time_limit: Option<Duration>,
}

impl Default for EvalLimits {
    fn default() -> Self {
        EvalLimits {
            max_input_depth: 64,
            max_input_values: 100_000,
            time_limit: Some(Duration::from_secs(1)),
        }
    }
}

/// Work units between two looks at the clock while evaluating: often enough to stop a
/// runaway query soon after its limit, rarely enough not to show in a decision's cost.
const TIMER_CHECK_INTERVAL: NonZeroU32 = match NonZeroU32::new(256) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

/// Gives every compiled set a process-unique id, the key of its per-thread clones.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Clones of compiled sets each thread keeps; older ones are dropped first.
const LOCAL_ENGINES: usize = 4;

thread_local! {
    static LOCAL: RefCell<Vec<(u64, regorus::Engine)>> = const { RefCell::new(Vec::new()) };
}

/// Bundles compiled together by regorus, validated and ready to answer.
///
/// Compiled once; each thread that evaluates keeps its own clone (regorus evaluates with
/// `&mut`), so concurrent decisions share no lock. A clone shares the parsed modules and
/// data with the original.
pub struct RegoEngine {
    prepared: regorus::Engine,
    generation: u64,
    /// `data.pkg.rule` for every plainly named rule: these go through regorus's
    /// `eval_rule`; other paths (packages, data, nested references) through a query.
    rules: HashSet<String>,
    revisions: Arc<BTreeMap<String, String>>,
    limits: EvalLimits,
}

impl fmt::Debug for RegoEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegoEngine")
            .field("generation", &self.generation)
            .field("rules", &self.rules.len())
            .field("revisions", &self.revisions)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RegoEngine {
    /// Compiles `bundles` together and validates them: no two own overlapping roots, every
    /// package is under its bundle's roots, the policies parse and compile, and every
    /// `test_*` rule of every bundle evaluates to `true`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::RootsOverlap`], [`PolicyError::OutsideRoots`],
    /// [`PolicyError::Compile`], [`PolicyError::TestFailed`], or
    /// [`PolicyError::Bundle`] for data regorus refuses.
    pub fn compile<'a>(
        bundles: impl IntoIterator<Item = &'a Bundle>,
        limits: EvalLimits,
    ) -> Result<RegoEngine, PolicyError> {
        let bundles: Vec<&Bundle> = bundles.into_iter().collect();
        for (i, later) in bundles.iter().enumerate() {
            for earlier in bundles.iter().take(i) {
                if let Some((root, other_root)) =
                    overlapping_roots(later.manifest(), earlier.manifest())
                {
                    return Err(PolicyError::RootsOverlap {
                        bundle: later.name().to_owned(),
                        root: root.to_owned(),
                        other: earlier.name().to_owned(),
                        other_root: other_root.to_owned(),
                    });
                }
            }
        }
        let mut engine = regorus::Engine::new();
        if let Some(limit) = limits.time_limit {
            engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
                limit,
                check_interval: TIMER_CHECK_INTERVAL,
            });
        }
        // Which modules (by index, in the order added) belong to which bundle.
        let mut owners: Vec<&Bundle> = Vec::new();
        for bundle in &bundles {
            for policy in bundle.policies() {
                let package = engine
                    .add_policy(
                        format!("{}/{}", bundle.name(), policy.path),
                        policy.source.clone(),
                    )
                    .map_err(|e| PolicyError::Compile {
                        bundle: bundle.name().to_owned(),
                        file: policy.path.clone(),
                        message: e.to_string(),
                    })?;
                bundle.check_package_root(package.strip_prefix("data.").unwrap_or(&package))?;
                owners.push(bundle);
            }
            engine
                .add_data(regorus::Value::from(Value::Object(bundle.data().clone())))
                .map_err(|e| PolicyError::bundle(bundle.name(), format!("data: {e}")))?;
        }
        let names = || {
            bundles
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(",")
        };
        // Preparing for evaluation is where regorus analyses the modules together.
        engine
            .eval_query("true".to_owned(), false)
            .map_err(|e| PolicyError::Compile {
                bundle: names(),
                file: "<all policies>".to_owned(),
                message: e.to_string(),
            })?;
        let mut rules = HashSet::new();
        let mut tests = Vec::new();
        for (module, owner) in engine.get_modules().iter().zip(&owners) {
            let package = regorus::utils::get_path_string(&module.package.refr, Some("data"))
                .map_err(|e| PolicyError::Compile {
                    bundle: owner.name().to_owned(),
                    file: "<package>".to_owned(),
                    message: e.to_string(),
                })?;
            for rule in &module.policy {
                let (refr, is_function) = match rule.as_ref() {
                    Rule::Spec { head, .. } => match head {
                        RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } => (refr, false),
                        RuleHead::Func { refr, .. } => (refr, true),
                    },
                    Rule::Default { refr, .. } => (refr, false),
                };
                let Ok(name) = regorus::utils::get_path_string(refr, None) else {
                    continue;
                };
                if is_function || !is_identifier(&name) {
                    continue;
                }
                let path = format!("{package}.{name}");
                if name.starts_with("test_") {
                    tests.push((*owner, path.clone()));
                }
                rules.insert(path);
            }
        }
        tests.sort_by(|a, b| a.1.cmp(&b.1));
        tests.dedup_by(|a, b| a.1 == b.1);
        for (owner, test) in tests {
            engine.set_input(regorus::Value::Undefined);
            let detail = match engine.eval_rule(test.clone()) {
                Ok(regorus::Value::Bool(true)) => continue,
                Ok(regorus::Value::Undefined) => "undefined".to_owned(),
                Ok(other) => format!("evaluated to {other}"),
                Err(e) => e.to_string(),
            };
            return Err(PolicyError::TestFailed {
                bundle: owner.name().to_owned(),
                test,
                detail,
            });
        }
        let revisions = bundles
            .iter()
            .map(|b| (b.name().to_owned(), b.revision().to_owned()))
            .collect();
        Ok(RegoEngine {
            prepared: engine,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            rules,
            revisions: Arc::new(revisions),
            limits,
        })
    }

    /// Bundle name → revision of this set.
    pub fn revisions(&self) -> &Arc<BTreeMap<String, String>> {
        &self.revisions
    }

    /// Runs `f` on this thread's clone of the compiled engine.
    fn with_local<R>(&self, f: impl FnOnce(&mut regorus::Engine) -> R) -> R {
        LOCAL.with(|cell| {
            let Ok(mut local) = cell.try_borrow_mut() else {
                // Re-entered from inside an evaluation: use a clone of its own.
                return f(&mut self.prepared.clone());
            };
            let found = local.iter().position(|(g, _)| *g == self.generation);
            let index = match found {
                Some(index) => index,
                None => {
                    if local.len() >= LOCAL_ENGINES {
                        local.remove(0);
                    }
                    local.push((self.generation, self.prepared.clone()));
                    local.len() - 1
                }
            };
            match local.get_mut(index) {
                Some((_, engine)) => f(engine),
                None => f(&mut self.prepared.clone()),
            }
        })
    }
}

impl PolicyEngine for RegoEngine {
    fn evaluate(&self, path: &str, input: &Value) -> Result<Evaluation, PolicyError> {
        let path = rule_path(path)?;
        check_input(input, &self.limits)?;
        let input = regorus::Value::from(input.clone());
        let is_rule = self.rules.contains(&path);
        let value = self.with_local(|engine| {
            engine.set_input(input);
            if is_rule {
                engine.eval_rule(path.clone())
            } else {
                engine.eval_query(path.clone(), false).map(|results| {
                    results
                        .result
                        .into_iter()
                        .next()
                        .and_then(|r| r.expressions.into_iter().next())
                        .map_or(regorus::Value::Undefined, |e| e.value)
                })
            }
        });
        let value = value.map_err(|e| PolicyError::Eval {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let result = match value {
            regorus::Value::Undefined => None,
            value => Some(serde_json::to_value(&value).map_err(|e| PolicyError::Eval {
                path: path.clone(),
                message: format!("the result is not JSON: {e}"),
            })?),
        };
        Ok(Evaluation {
            result,
            revisions: self.revisions.clone(),
        })
    }
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The longest rule path accepted.
const MAX_PATH: usize = 1024;
/// The most segments a rule path may have.
const MAX_SEGMENTS: usize = 64;

/// `data.a.b`, `a/b`, `/a/b` or `` (all of `data`) → `data.a.b`.
///
/// # Errors
///
/// [`PolicyError::InvalidPath`] if it is too long or a segment is not an identifier.
pub fn rule_path(path: &str) -> Result<String, PolicyError> {
    let invalid = |reason| PolicyError::InvalidPath {
        path: path.chars().take(64).collect(),
        reason,
    };
    if path.len() > MAX_PATH {
        return Err(invalid("longer than 1024 bytes"));
    }
    let segments: Vec<&str> = if path == "data" || path.starts_with("data.") {
        path.split('.').skip(1).collect()
    } else {
        path.trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect()
    };
    if segments.len() > MAX_SEGMENTS {
        return Err(invalid("more than 64 segments"));
    }
    if !segments.iter().all(|s| is_identifier(s)) {
        return Err(invalid(
            "each segment must be an identifier (letters, digits, _; not starting with a digit)",
        ));
    }
    let mut canonical = String::from("data");
    for segment in segments {
        canonical.push('.');
        canonical.push_str(segment);
    }
    Ok(canonical)
}

/// Refuses input nested deeper or holding more values than `limits` allow.
fn check_input(input: &Value, limits: &EvalLimits) -> Result<(), PolicyError> {
    let mut stack = vec![(input, 1_usize)];
    let mut values = 0_usize;
    while let Some((value, depth)) = stack.pop() {
        values += 1;
        if values > limits.max_input_values {
            return Err(PolicyError::Input(format!(
                "more than {} values",
                limits.max_input_values
            )));
        }
        if depth > limits.max_input_depth {
            return Err(PolicyError::Input(format!(
                "nested deeper than {}",
                limits.max_input_depth
            )));
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}
