//! [`PolicyEngine`] and [`RegoEngine`]: a compiled set of bundles, evaluated concurrently
//! on per-thread clones (no lock on the decision path).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::ops::Bound;
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
    fn evaluate(&self, path: &str, input: &Value) -> Result<Evaluation, PolicyError> {
        self.evaluate_input(path, Some(input))
    }

    /// Evaluates the rule or document at `path` with `input`, or with no input at all
    /// (`None`): then `input` is undefined, as in OPA for a request without one — every
    /// reference to it is undefined and `not input` holds. (`Some(&Value::Null)` is an
    /// input that is `null`.)
    ///
    /// # Errors
    ///
    /// As [`evaluate`](PolicyEngine::evaluate).
    fn evaluate_input(&self, path: &str, input: Option<&Value>) -> Result<Evaluation, PolicyError>;
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
#[non_exhaustive]
pub struct EvalLimits {
    /// How deeply the input may nest. Default 64.
    pub max_input_depth: usize,
    /// How many values (objects, arrays, scalars) the input may hold. Default 100,000.
    pub max_input_values: usize,
    /// Wall-clock time one evaluation may take. Default 1 s. `None` turns the limit off,
    /// which saves about 2 µs per decision (regorus's timer) and leaves a runaway query
    /// running.
    pub time_limit: Option<Duration>,
    /// Whether a built-in's error (`regex.match` on a bad pattern, `1 / 0`,
    /// `to_number("x")`) fails the whole evaluation. Default `false`: the call is
    /// undefined, as OPA evaluates by default, so one failing expression leaves its rule
    /// undefined instead of failing every query that reaches it. `true` is OPA's
    /// `strict-builtin-errors`.
    pub strict_builtin_errors: bool,
}

impl Default for EvalLimits {
    fn default() -> Self {
        EvalLimits {
            max_input_depth: 64,
            max_input_values: 100_000,
            time_limit: Some(Duration::from_secs(1)),
            strict_builtin_errors: false,
        }
    }
}

/// Builders: the struct is `#[non_exhaustive]`, so it can gain limits without breaking
/// callers; start from `EvalLimits::default()`.
impl EvalLimits {
    /// Sets [`max_input_depth`](Self::max_input_depth).
    #[must_use]
    pub fn with_max_input_depth(mut self, max_input_depth: usize) -> Self {
        self.max_input_depth = max_input_depth;
        self
    }

    /// Sets [`max_input_values`](Self::max_input_values).
    #[must_use]
    pub fn with_max_input_values(mut self, max_input_values: usize) -> Self {
        self.max_input_values = max_input_values;
        self
    }

    /// Sets [`time_limit`](Self::time_limit).
    #[must_use]
    pub fn with_time_limit(mut self, time_limit: Option<Duration>) -> Self {
        self.time_limit = time_limit;
        self
    }

    /// Sets [`strict_builtin_errors`](Self::strict_builtin_errors).
    #[must_use]
    pub fn with_strict_builtin_errors(mut self, strict_builtin_errors: bool) -> Self {
        self.strict_builtin_errors = strict_builtin_errors;
        self
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

/// A new engine with the evaluation time limit and built-in error mode of `limits`, and
/// the built-ins this crate adds to regorus's (see [`crate::builtins`]).
///
/// # Errors
///
/// regorus's message if it refuses one of the added built-ins.
fn new_engine(limits: &EvalLimits) -> Result<regorus::Engine, String> {
    let mut engine = regorus::Engine::new();
    engine.set_strict_builtin_errors(limits.strict_builtin_errors);
    if let Some(limit) = limits.time_limit {
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit,
            check_interval: TIMER_CHECK_INTERVAL,
        });
    }
    crate::builtins::register(&mut engine, limits.strict_builtin_errors)?;
    Ok(engine)
}

/// `source` without its `import future.keywords…` statements when it also imports
/// `rego.v1`, which regorus refuses as shadowing imports while OPA accepts them: `rego.v1`
/// already enables every future keyword, so those imports change nothing. Each removed
/// statement is overwritten with spaces (line breaks kept), so positions in messages stay
/// those of the file. Only the module's prolog is read (`package`, then `import`s, with
/// comments); anything else there, or no `rego.v1` import, leaves the source as it is.
fn without_redundant_keyword_imports(source: &str) -> Cow<'_, str> {
    /// One statement of the prolog: its keyword, its path (`future.keywords.in`), whether
    /// it has an alias, and its byte range.
    struct Statement {
        import: bool,
        path: String,
        aliased: bool,
        range: std::ops::Range<usize>,
    }
    let bytes = source.as_bytes();
    let at = |i: usize| bytes.get(i).copied();
    let is_start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let skip_blank = |mut i: usize| loop {
        match at(i) {
            Some(b' ' | b'\t' | b'\r' | b'\n' | b';') => i += 1,
            Some(b'#') => {
                while at(i).is_some_and(|b| b != b'\n') {
                    i += 1;
                }
            }
            _ => return i,
        }
    };
    let word = |i: usize| {
        let mut end = i;
        if at(end).is_some_and(is_start) {
            while at(end).is_some_and(is_ident) {
                end += 1;
            }
        }
        (end > i).then(|| (source.get(i..end).unwrap_or_default(), end))
    };
    let mut statements = Vec::new();
    let mut i = skip_blank(0);
    while let Some((keyword, after)) = word(i) {
        let import = match keyword {
            "package" if statements.is_empty() => false,
            "import" if !statements.is_empty() => true,
            _ => break,
        };
        // A path of plain names on one line (`a.b.c`); brackets or strings in it end the
        // prolog scan without a rewrite.
        let mut j = after;
        while matches!(at(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        let mut path = String::new();
        loop {
            let Some((name, end)) = word(j) else {
                return Cow::Borrowed(source);
            };
            path.push_str(name);
            j = end;
            if at(j) == Some(b'.') {
                path.push('.');
                j += 1;
            } else {
                break;
            }
        }
        let mut k = j;
        while matches!(at(k), Some(b' ' | b'\t')) {
            k += 1;
        }
        let mut aliased = false;
        if let Some(("as", end)) = word(k) {
            let mut m = end;
            while matches!(at(m), Some(b' ' | b'\t')) {
                m += 1;
            }
            let Some((_, end)) = word(m) else {
                return Cow::Borrowed(source);
            };
            aliased = true;
            j = end;
        } else if !matches!(at(k), None | Some(b'\r' | b'\n' | b';' | b'#')) {
            return Cow::Borrowed(source);
        }
        statements.push(Statement {
            import,
            path,
            aliased,
            range: i..j,
        });
        i = skip_blank(j);
    }
    let imports_v1 = statements
        .iter()
        .any(|s| s.import && !s.aliased && s.path == "rego.v1");
    let redundant: Vec<&Statement> = statements
        .iter()
        .filter(|s| {
            s.import
                && !s.aliased
                && (s.path == "future.keywords" || s.path.starts_with("future.keywords."))
        })
        .collect();
    if !imports_v1 || redundant.is_empty() {
        return Cow::Borrowed(source);
    }
    let mut rewritten = source.to_owned().into_bytes();
    for statement in redundant {
        if let Some(span) = rewritten.get_mut(statement.range.clone()) {
            span.fill(b' ');
        }
    }
    // Only ASCII bytes of statements were replaced by ASCII spaces.
    String::from_utf8(rewritten).map_or(Cow::Borrowed(source), Cow::Owned)
}

/// Every `data` reference in a Rego source, as the path of plain names that follows
/// `data.` (a reference such as `data.a.b[x]` gives `a.b`: everything below it may be
/// read). `None` when the source reads `data` in a way that names no path — a bare
/// `data`, `data[x]` — so it may read anything. Comments and strings are skipped; a
/// field that happens to be called `data` (`input.data`) is not the data document.
fn data_references(source: &str) -> Option<Vec<Vec<String>>> {
    let src = source.as_bytes();
    let is_start = |b: &u8| b.is_ascii_alphabetic() || *b == b'_';
    let is_ident = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let word_end = |from: usize| {
        src.get(from..)
            .and_then(|rest| rest.iter().position(|b| !is_ident(b)))
            .map_or(src.len(), |n| from + n)
    };
    let mut refs = Vec::new();
    let mut i = 0;
    while let Some(b) = src.get(i) {
        match b {
            b'#' => {
                i = src
                    .get(i..)
                    .and_then(|rest| rest.iter().position(|c| *c == b'\n'))
                    .map_or(src.len(), |n| i + n);
            }
            b'"' | b'`' => {
                let quote = *b;
                i += 1;
                while let Some(c) = src.get(i) {
                    i += 1;
                    if *c == quote {
                        break;
                    }
                    if *c == b'\\' && quote == b'"' {
                        i += 1;
                    }
                }
            }
            b if is_start(b) => {
                let start = i;
                i = word_end(i);
                let field = start.checked_sub(1).and_then(|p| src.get(p)) == Some(&b'.');
                if field || source.get(start..i) != Some("data") {
                    continue;
                }
                let mut path = Vec::new();
                while src.get(i) == Some(&b'.') && src.get(i + 1).is_some_and(is_start) {
                    let from = i + 1;
                    i = word_end(from);
                    path.push(source.get(from..i).unwrap_or_default().to_owned());
                }
                if path.is_empty() {
                    return None;
                }
                refs.push(path);
            }
            _ => i += 1,
        }
    }
    Some(refs)
}

/// Whether one path is a prefix of the other (either may read the other's documents).
fn related(a: &[String], b: &[String]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Groups modules that may read each other: modules whose packages are prefixes of one
/// another, and a module with every package its `data` references reach. Returns the
/// group of each module, numbered from 0 in order of first appearance, or `None` when
/// everything is one group (some module reads `data` dynamically, or all are linked).
fn partition(packages: &[Vec<String>], sources: &[&str]) -> Option<Vec<usize>> {
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while let Some(&p) = parent.get(i) {
            if p == i {
                break;
            }
            let grand = parent.get(p).copied().unwrap_or(p);
            if let Some(slot) = parent.get_mut(i) {
                *slot = grand;
            }
            i = p;
        }
        i
    }
    let mut parent: Vec<usize> = (0..packages.len()).collect();
    fn union(parent: &mut [usize], a: usize, b: usize) {
        let (a, b) = (find(parent, a), find(parent, b));
        if let Some(slot) = parent.get_mut(a) {
            *slot = b;
        }
    }
    for (i, (package, source)) in packages.iter().zip(sources).enumerate() {
        for (j, other) in packages.iter().enumerate().take(i) {
            if related(package, other) {
                union(&mut parent, i, j);
            }
        }
        for reference in data_references(source)? {
            for (j, other) in packages.iter().enumerate() {
                if related(&reference, other) {
                    union(&mut parent, i, j);
                }
            }
        }
    }
    let mut numbers: BTreeMap<usize, usize> = BTreeMap::new();
    let groups: Vec<usize> = (0..packages.len())
        .map(|i| {
            let root = find(&mut parent, i);
            let next = numbers.len();
            *numbers.entry(root).or_insert(next)
        })
        .collect();
    (numbers.len() > 1).then_some(groups)
}

/// Compiled sets each thread keeps clones of; older ones are dropped first.
const LOCAL_SETS: usize = 4;

thread_local! {
    /// Per compiled set (by generation): this thread's clone of the whole set (slot 0)
    /// and of each group of packages (slot 1 + group), made on first use.
    static LOCAL: RefCell<Vec<(u64, Vec<Option<regorus::Engine>>)>> =
        const { RefCell::new(Vec::new()) };
}

/// Bundles compiled together by regorus, validated and ready to answer.
///
/// Compiled once; each thread that evaluates keeps its own clone (regorus evaluates with
/// `&mut`), so concurrent decisions share no lock. A clone shares the parsed modules and
/// data with the original.
///
/// Packages that cannot read each other are also compiled apart, each group with all the
/// data: a query under one group's packages runs on that group's engine, so its cost does
/// not grow with packages it never reaches (regorus looks over every loaded module on each
/// `data` reference). Groups are found from the `data` references in the sources; a module
/// that reads `data` dynamically (`data[x]`, a bare `data`) keeps everything together.
pub struct RegoEngine {
    /// Every bundle together: queries that span groups, or reach no package.
    all: regorus::Engine,
    /// The packages of each group, compiled apart (empty when there is one group).
    groups: Vec<regorus::Engine>,
    /// Package path below `data` (`a.b`) → its group.
    packages: BTreeMap<String, usize>,
    /// The key of this set's per-thread clones.
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
            .field("package_groups", &self.groups.len())
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
        let mut engine = new_engine(&limits).map_err(|message| PolicyError::Compile {
            bundle: bundles
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(","),
            file: "<built-ins>".to_owned(),
            message,
        })?;
        // Which bundle and file each module (by index, in the order added) comes from.
        let mut owners: Vec<(&Bundle, &str)> = Vec::new();
        // Each module's name, source, package below `data` and Rego version, for the
        // groups.
        let mut modules: Vec<Module<'_>> = Vec::new();
        let mut data = Vec::new();
        // Every source as regorus will read it (see `crate::builtins`), in bundle and file
        // order, with whether it is Rego v0: metadata calls need all of them at once.
        let mut prepared: Vec<(Cow<'_, str>, bool)> = Vec::new();
        // Extensions some module replaces with `with`: made replaceable in every module.
        let mocked = crate::builtins::mocked_extensions(
            bundles
                .iter()
                .flat_map(|bundle| bundle.policies())
                .map(|policy| policy.source.as_ref()),
        );
        for bundle in &bundles {
            for policy in bundle.policies() {
                let v0 = bundle.rego_version(&policy.path) == 0;
                if let Some((line, column)) = crate::nesting::too_deep(&policy.source) {
                    return Err(PolicyError::Compile {
                        bundle: bundle.name().to_owned(),
                        file: policy.path.clone(),
                        message: format!(
                            "{line}:{column}: brackets nest more than {} deep; the Rego parser's \
                             time grows exponentially with nesting, so such a file is refused",
                            crate::nesting::MAX_NESTING
                        ),
                    });
                }
                let source = crate::builtins::rewrite_source_mocking(
                    without_redundant_keyword_imports(&policy.source),
                    v0,
                    &mocked,
                )
                .map_err(|e| PolicyError::Compile {
                    bundle: bundle.name().to_owned(),
                    file: policy.path.clone(),
                    message: e.to_string(),
                })?;
                prepared.push((source, v0));
            }
        }
        crate::builtins::resolve_metadata_calls(&mut prepared);
        let mut prepared = prepared.into_iter();
        for bundle in &bundles {
            for policy in bundle.policies() {
                let name = format!("{}/{}", bundle.name(), policy.path);
                let Some((source, v0)) = prepared.next() else {
                    break;
                };
                engine.set_rego_v0(v0);
                let package = engine
                    .add_policy(name.clone(), source.clone().into_owned())
                    .map_err(|e| PolicyError::Compile {
                        bundle: bundle.name().to_owned(),
                        file: policy.path.clone(),
                        message: e.to_string(),
                    })?;
                let package = package.strip_prefix("data.").unwrap_or(&package);
                bundle.check_package_root(package)?;
                owners.push((bundle, policy.path.as_str()));
                let package = package.split('.').map(str::to_owned).collect();
                modules.push(Module {
                    name,
                    source,
                    package,
                    v0,
                });
            }
            let value = regorus::Value::from(Value::Object(bundle.data().clone()));
            engine
                .add_data(value.clone())
                .map_err(|e| PolicyError::bundle(bundle.name(), format!("data: {e}")))?;
            data.push(value);
        }
        let names = || {
            bundles
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(",")
        };
        // Queries are Rego v1 whatever the modules are.
        engine.set_rego_v0(false);
        check_set(&mut engine, &owners, &bundles)?;
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
        for (module, (owner, _)) in engine.get_modules().iter().zip(&owners) {
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
        let (groups, packages) = split(&modules, &data, &limits);
        Ok(RegoEngine {
            all: engine,
            groups,
            packages,
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

    /// Runs an ad-hoc Rego `query` (`x := data.authz.allow; y := input.user`) against this
    /// set, as OPA's `POST /v1/query` does: one object of variable bindings per result
    /// row, none when the query is undefined. It runs on the same compiled engine as
    /// decisions — the added built-ins, the source rewrites and the [`EvalLimits`] (input
    /// size, time limit, strict built-in errors) included. `input: None` leaves `input`
    /// undefined.
    ///
    /// ```
    /// use portcullis_policy::{Bundle, EvalLimits, RegoEngine};
    /// use serde_json::json;
    /// let bundle = Bundle::from_files("authz", [
    ///     ("policy.rego".to_owned(), b"package authz\nadmins := {\"alice\"}\n".to_vec()),
    /// ])?;
    /// let engine = RegoEngine::compile([&bundle], EvalLimits::default())?;
    /// let rows = engine.query("some name in data.authz.admins", None)?;
    /// assert_eq!(rows, [json!({"name": "alice"}).as_object().cloned().unwrap()]);
    /// // A false expression is no row, as in OPA: the query is undefined.
    /// assert!(engine.query("input.x == 1", Some(&json!({"x": 2})))?.is_empty());
    /// assert!(engine.query("1 > 2", None)?.is_empty());
    /// assert_eq!(engine.query("input.x == 2", Some(&json!({"x": 2})))?.len(), 1);
    /// # Ok::<(), portcullis_policy::PolicyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PolicyError::Input`] for an input over the limits; [`PolicyError::Eval`] when the
    /// query does not parse or its evaluation fails.
    pub fn query(
        &self,
        query: &str,
        input: Option<&Value>,
    ) -> Result<Vec<serde_json::Map<String, Value>>, PolicyError> {
        let input = match input {
            Some(input) => {
                check_input(input, &self.limits)?;
                regorus::Value::from(input.clone())
            }
            None => regorus::Value::Undefined,
        };
        let failed = |message: String| PolicyError::Eval {
            path: "query".to_owned(),
            message,
        };
        let results = self.with_local(None, |engine| {
            engine.set_input(input);
            engine.eval_query(query.to_owned(), false)
        });
        let results = results.map_err(|e| failed(e.to_string()))?;
        let mut rows = Vec::with_capacity(results.result.len());
        // A row holds only if every expression in it does: regorus reports `1 > 2` as a
        // row whose expression is `false`, where OPA has no row (the query is undefined).
        let holds = |row: &regorus::QueryResult| {
            row.expressions.iter().all(|e| {
                !matches!(
                    e.value,
                    regorus::Value::Bool(false) | regorus::Value::Undefined
                )
            })
        };
        for row in results.result.into_iter().filter(holds) {
            match serde_json::to_value(&row.bindings) {
                Ok(Value::Object(bindings)) => rows.push(bindings),
                Ok(_) => rows.push(serde_json::Map::new()),
                Err(err) => return Err(failed(format!("a binding is not JSON: {err}"))),
            }
        }
        Ok(rows)
    }

    /// The group that holds every package `path` (`data.a.b`) may reach, or `None` for
    /// the whole set: the path reaches no package, or packages of several groups.
    fn group_of(&self, path: &str) -> Option<usize> {
        let below = path.strip_prefix("data.")?;
        if self.groups.is_empty() {
            return None;
        }
        // A package at or above the path: groups are closed under prefixes, so every
        // package below the path is in its group too.
        let above = below
            .match_indices('.')
            .map(|(end, _)| end)
            .chain([below.len()])
            .find_map(|end| below.get(..end).and_then(|p| self.packages.get(p)));
        if let Some(group) = above {
            return Some(*group);
        }
        let prefix = format!("{below}.");
        let mut below_path = self
            .packages
            .range::<str, _>((Bound::Excluded(prefix.as_str()), Bound::Unbounded))
            .take_while(|(package, _)| package.starts_with(&prefix))
            .map(|(_, group)| *group);
        let first = below_path.next()?;
        below_path.all(|group| group == first).then_some(first)
    }

    /// Runs `f` on this thread's clone of `group`'s engine (`None`: the whole set).
    fn with_local<R>(&self, group: Option<usize>, f: impl FnOnce(&mut regorus::Engine) -> R) -> R {
        let prepared = group.and_then(|g| self.groups.get(g)).unwrap_or(&self.all);
        let slot = group.map_or(0, |g| g + 1);
        LOCAL.with(|cell| {
            let Ok(mut local) = cell.try_borrow_mut() else {
                // Re-entered from inside an evaluation: use a clone of its own.
                return f(&mut prepared.clone());
            };
            let index = match local.iter().position(|(g, _)| *g == self.generation) {
                Some(index) => index,
                None => {
                    if local.len() >= LOCAL_SETS {
                        local.remove(0);
                    }
                    local.push((self.generation, Vec::new()));
                    local.len() - 1
                }
            };
            let Some((_, engines)) = local.get_mut(index) else {
                return f(&mut prepared.clone());
            };
            if engines.len() <= slot {
                engines.resize_with(slot + 1, || None);
            }
            match engines.get_mut(slot) {
                Some(engine) => f(engine.get_or_insert_with(|| prepared.clone())),
                None => f(&mut prepared.clone()),
            }
        })
    }
}

/// One module of a compiled set, kept to compile its group again apart.
#[derive(Debug)]
struct Module<'a> {
    /// `bundle/path`, as regorus knows it.
    name: String,
    /// The source as regorus reads it (see [`without_redundant_keyword_imports`]).
    source: Cow<'a, str>,
    /// Its package below `data`.
    package: Vec<String>,
    /// Parsed as Rego v0 (the bundle's manifest says so).
    v0: bool,
}

/// Runs the static policy checks (see [`crate::check`]) over the modules parsed into
/// `engine` (`owners`: each one's bundle and file) with the bundles' data.
fn check_set(
    engine: &mut regorus::Engine,
    owners: &[(&Bundle, &str)],
    bundles: &[&Bundle],
) -> Result<(), PolicyError> {
    let parsed = engine.get_modules().clone();
    let sources: Vec<crate::check::Source<'_>> = parsed
        .iter()
        .zip(owners)
        .map(|(module, (bundle, file))| crate::check::Source {
            bundle: bundle.name(),
            file,
            module,
        })
        .collect();
    let data: Vec<&serde_json::Map<String, Value>> = bundles.iter().map(|b| b.data()).collect();
    let errors = crate::check::check(&sources, &data);
    if errors.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&str> = Vec::new();
    for error in &errors {
        if !names.contains(&error.bundle.as_str()) {
            names.push(&error.bundle);
        }
    }
    Err(PolicyError::Check {
        bundle: names.join(","),
        errors,
    })
}

/// The modules compiled apart by group (see [`partition`]), each group with all of `data`,
/// and the group of each package. Nothing is split — empty results — when everything is
/// one group or a group does not compile alone (which a group closed under its references
/// should not do; the whole set still answers).
fn split(
    modules: &[Module<'_>],
    data: &[regorus::Value],
    limits: &EvalLimits,
) -> (Vec<regorus::Engine>, BTreeMap<String, usize>) {
    let packages: Vec<Vec<String>> = modules.iter().map(|m| m.package.clone()).collect();
    let sources: Vec<&str> = modules.iter().map(|m| m.source.as_ref()).collect();
    let Some(of_module) = partition(&packages, &sources) else {
        return (Vec::new(), BTreeMap::new());
    };
    let count = of_module.iter().max().map_or(0, |m| m + 1);
    let Ok(mut engines) = (0..count)
        .map(|_| new_engine(limits))
        .collect::<Result<Vec<regorus::Engine>, String>>()
    else {
        return (Vec::new(), BTreeMap::new());
    };
    let mut groups = BTreeMap::new();
    for (module, group) in modules.iter().zip(&of_module) {
        let Some(engine) = engines.get_mut(*group) else {
            return (Vec::new(), BTreeMap::new());
        };
        engine.set_rego_v0(module.v0);
        if engine
            .add_policy(module.name.clone(), module.source.clone().into_owned())
            .is_err()
        {
            return (Vec::new(), BTreeMap::new());
        }
        groups.insert(module.package.join("."), *group);
    }
    for engine in &mut engines {
        engine.set_rego_v0(false);
        let prepared = data
            .iter()
            .all(|value| engine.add_data(value.clone()).is_ok())
            && engine.eval_query("true".to_owned(), false).is_ok();
        if !prepared {
            return (Vec::new(), BTreeMap::new());
        }
    }
    (engines, groups)
}

impl PolicyEngine for RegoEngine {
    fn evaluate_input(&self, path: &str, input: Option<&Value>) -> Result<Evaluation, PolicyError> {
        let path = rule_path(path)?;
        let input = match input {
            Some(input) => {
                check_input(input, &self.limits)?;
                regorus::Value::from(input.clone())
            }
            None => regorus::Value::Undefined,
        };
        let is_rule = self.rules.contains(&path);
        let group = self.group_of(&path);
        let value = self.with_local(group, |engine| {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(source: &str) -> Option<Vec<String>> {
        data_references(source).map(|refs| refs.iter().map(|r| r.join(".")).collect())
    }

    #[test]
    fn data_references_are_the_named_paths() {
        assert_eq!(
            refs("package authz\nimport data.authz.roles\nallow if data.grants[input.user].x"),
            Some(vec!["authz.roles".to_owned(), "grants".to_owned()])
        );
        // Words that merely contain `data`, fields called `data`, comments and strings.
        assert_eq!(
            refs(concat!(
                "package a\nmetadata := 1\ndatabase := input.data\n",
                "# reads data from elsewhere\nmsg := \"data \\\" data[x]\"\nraw := `data`"
            )),
            Some(Vec::new())
        );
        for dynamic in [
            "package a\nallow if data[input.pkg].allow",
            "package a\nall := data",
            "package a\nimport data",
            "package a\nx := data .b",
        ] {
            assert_eq!(refs(dynamic), None, "{dynamic}");
        }
    }

    #[test]
    fn keyword_imports_are_dropped_only_beside_rego_v1() {
        let both = "package a.b # the package\nimport rego.v1\nimport future.keywords.in\n\
                    import future.keywords\nimport data.x as y\nallow if 1 in [1]";
        let rewritten = without_redundant_keyword_imports(both);
        assert_eq!(
            rewritten,
            "package a.b # the package\nimport rego.v1\n                         \n\
             \x20                     \nimport data.x as y\nallow if 1 in [1]"
        );
        assert_eq!(rewritten.len(), both.len());
        for unchanged in [
            // No rego.v1: regorus reads future.keywords imports as OPA does.
            "package a\nimport future.keywords.in\nx := 1",
            // Only the prolog is read: text in a rule is not an import.
            "package a\nimport rego.v1\nx := `\nimport future.keywords.in`",
            // A prolog this scan does not follow is left to regorus.
            "package a[\"b\"]\nimport rego.v1\nimport future.keywords.in",
            "package a\nimport rego.v1\nimport future.keywords.in as k",
        ] {
            assert!(
                matches!(
                    without_redundant_keyword_imports(unchanged),
                    Cow::Borrowed(_)
                ),
                "{unchanged}"
            );
        }
    }

    fn split_of(modules: &[(&str, &str)]) -> Option<Vec<usize>> {
        let packages: Vec<Vec<String>> = modules
            .iter()
            .map(|(p, _)| p.split('.').map(str::to_owned).collect())
            .collect();
        let sources: Vec<&str> = modules.iter().map(|(_, s)| *s).collect();
        partition(&packages, &sources)
    }

    #[test]
    fn packages_that_may_read_each_other_share_a_group() {
        let groups = split_of(&[
            ("authz", "allow if data.authz.grants[input.user]"),
            ("billing", "import data.authz\nx if authz.allow"),
            ("other.p1", "allow := true"),
            ("other.p1.sub", "x := 1"),
            ("other.p2", "y := data.other.p1.sub.x"),
            ("lonely", "z := data.nothing.here"),
            ("authz", "deny if false"),
        ]);
        assert_eq!(groups, Some(vec![0, 0, 1, 1, 1, 2, 0]));
        // A parent package reads everything below it.
        assert_eq!(
            split_of(&[("a.b", "x := 1"), ("c", "y := 1"), ("a", "z := 1")]),
            Some(vec![0, 1, 0])
        );
        // One dynamic reader, or everything linked: nothing to split.
        assert_eq!(
            split_of(&[("a", "x := 1"), ("b", "y := data[input.p]")]),
            None
        );
        assert_eq!(split_of(&[("a", "x := data.b.y"), ("b", "y := 1")]), None);
    }
}
