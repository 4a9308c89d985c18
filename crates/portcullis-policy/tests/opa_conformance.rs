//! OPA's own conformance cases (issue 29), run against [`RegoEngine`] the way a bundle is
//! compiled and asked: see `tests/opa-cases/README.md` for where the cases come from.
//!
//! Each case becomes a bundle (its modules, its data as `data.json`), compiled and
//! validated by [`RegoEngine::compile`] — so the compile checks count — and its query is
//! asked through [`PolicyEngine::evaluate_input`]. A query `data.a.b = x` asks the path
//! `data.a.b` directly; any other query becomes the body of a rule in one more module,
//! `package opa_conformance_query`, whose value is the set of its bindings.
//!
//! The pass ratio of each category and of all cases is printed; the test fails below the
//! floor in `tests/opa-cases/FLOOR`, when a case fails that `tests/opa-cases/FAILING.md`
//! does not list, or when a listed case passes (so the list stays true).
//!
//! `OPA_CASES_WRITE_FAILING=1` rewrites `FAILING.md` from this run (causes as the runner
//! sees them) instead of comparing with it.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation is the failure being tested for"
)]
#![expect(
    clippy::print_stdout,
    reason = "the per-category table is the runner's report"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_policy::{Bundle, EvalLimits, PolicyEngine, PolicyError, RegoEngine};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The package of the rule a non-path query becomes.
const QUERY_PACKAGE: &str = "opa_conformance_query";

/// One case of an OPA test file, with the fields the runner reads (others are ignored).
#[derive(Debug, Deserialize)]
struct Case {
    note: String,
    query: String,
    #[serde(default)]
    modules: Vec<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    input_term: Option<String>,
    #[serde(default)]
    want_result: Option<Vec<Map<String, Value>>>,
    #[serde(default)]
    want_error: Option<String>,
    #[serde(default)]
    want_error_code: Option<String>,
    #[serde(default)]
    strict_error: bool,
    #[serde(default)]
    sort_bindings: bool,
}

#[derive(Debug, Deserialize)]
struct CaseFile {
    cases: Vec<Case>,
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opa-cases")
}

/// Every `*.yaml` / `*.yml` file under the cases folder, as (category, path relative to
/// the folder), in path order.
fn case_files() -> Vec<(String, String)> {
    let root = cases_dir();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let category = entry.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                files.push((category.clone(), format!("{category}/{name}")));
            }
        }
    }
    files.sort();
    files
}

/// How a case ended, when it did not end as OPA's does.
type Outcome = Result<(), String>;

/// A query's answer: the set of its bindings, or an error.
enum Answer {
    Rows(Vec<Map<String, Value>>),
    CompileError(PolicyError),
    EvalError(PolicyError),
}

/// `data.a.b = x` (or `x = data.a.b`) → (`data.a.b`, `x`).
fn path_query(query: &str) -> Option<(String, String)> {
    let (left, right) = query.split_once('=')?;
    let (left, right) = (left.trim(), right.trim());
    if left.ends_with([':', '!', '<', '>']) || right.starts_with('=') {
        return None;
    }
    let is_path = |s: &str| {
        s == "data"
            || s.strip_prefix("data.")
                .is_some_and(|rest| rest.split('.').all(is_ident))
    };
    if is_path(left) && is_ident(right) {
        Some((left.to_owned(), right.to_owned()))
    } else if is_path(right) && is_ident(left) {
        Some((right.to_owned(), left.to_owned()))
    } else {
        None
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Words that are never query variables.
const KEYWORDS: &[&str] = &[
    "data", "input", "not", "some", "in", "with", "as", "true", "false", "null", "every", "if",
    "contains", "else", "default",
];

/// The variables a query binds, as OPA reports them: names that are not keywords, not
/// `_`-prefixed (wildcards and generated names), not fields (`.x`), not called (`f(`,
/// `a.b(`) and not the head of a reference that is called or read from
/// (`time.now_ns()`, `x.y` is read from a variable only in queries the runner never sees).
fn query_vars(query: &str) -> Vec<String> {
    let bytes = query.as_bytes();
    let mut vars = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'`' {
            i += 1;
            while i < bytes.len() && bytes[i] != b {
                if b == b'"' && bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &query[start..i];
            let field = start > 0 && bytes[start - 1] == b'.';
            let rest = query[i..].trim_start();
            let followed =
                rest.starts_with(['(', '.']) || (rest.starts_with(':') && !rest.starts_with(":="));
            // An object key `{"a": x}` is a string, skipped above; `{a: 1}` keys are rare
            // in queries and would be variables in OPA too.
            if !field
                && !followed
                && !word.starts_with('_')
                && !KEYWORDS.contains(&word)
                && !vars.iter().any(|v| v == word)
            {
                vars.push(word.to_owned());
            }
            continue;
        }
        i += 1;
    }
    vars
}

/// The module a non-path query becomes: a set of binding objects.
fn query_module(query: &str, vars: &[String]) -> String {
    let fields: Vec<String> = vars.iter().map(|v| format!("{v:?}: {v}")).collect();
    format!(
        "package {QUERY_PACKAGE}\n\nresults contains {{{}}} if {{\n{query}\n}}\n",
        fields.join(", ")
    )
}

/// Asks `case`'s query of its bundle.
fn answer(case: &Case) -> Result<Answer, String> {
    let mut files = vec![(
        ".manifest".to_owned(),
        br#"{"revision": "opa-conformance"}"#.to_vec(),
    )];
    for (i, module) in case.modules.iter().enumerate() {
        files.push((format!("policies/m{i}.rego"), module.as_bytes().to_vec()));
    }
    let path_query = path_query(case.query.trim());
    if path_query.is_none() {
        let vars = query_vars(&case.query);
        files.push((
            "policies/query.rego".to_owned(),
            query_module(&case.query, &vars).into_bytes(),
        ));
    }
    match &case.data {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) if map.is_empty() => {}
        Some(data) => files.push(("data.json".to_owned(), serde_json::to_vec(data).unwrap())),
    }
    let input =
        match (&case.input, &case.input_term) {
            (Some(input), _) => Some(input.clone()),
            (None, Some(term)) => Some(serde_json::from_str::<Value>(term).map_err(|e| {
                format!("input_term is not JSON, which the runner cannot pass: {e}")
            })?),
            (None, None) => None,
        };
    let bundle = Bundle::from_files("opa", files).map_err(|e| format!("bundle refused: {e}"))?;
    let limits = EvalLimits::default()
        .with_strict_builtin_errors(case.strict_error)
        .with_time_limit(Some(Duration::from_secs(5)));
    let engine = match RegoEngine::compile([&bundle], limits) {
        Ok(engine) => engine,
        Err(e) => return Ok(Answer::CompileError(e)),
    };
    let (path, var) = match &path_query {
        Some((path, var)) => (path.clone(), Some(var.clone())),
        None => (format!("data.{QUERY_PACKAGE}.results"), None),
    };
    let evaluation = match engine.evaluate_input(&path, input.as_ref()) {
        Ok(evaluation) => evaluation,
        Err(e) => return Ok(Answer::EvalError(e)),
    };
    let rows = match (var, evaluation.result) {
        (_, None) => Vec::new(),
        (Some(var), Some(value)) => vec![Map::from_iter([(var, value)])],
        (None, Some(Value::Array(rows))) => rows
            .into_iter()
            .map(|row| match row {
                Value::Object(map) => Ok(map),
                other => Err(format!("the query rule gave a non-object row {other}")),
            })
            .collect::<Result<_, _>>()?,
        (None, Some(other)) => return Err(format!("the query rule gave {other}")),
    };
    Ok(Answer::Rows(rows))
}

/// `x` with integral floats as integers, and — when `sort` — arrays directly bound sorted
/// (OPA's `sort_bindings`: sets come back as arrays in no set order).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Number(n) => {
            if n.as_i64().is_some() || n.as_u64().is_some() {
                return value.clone();
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
                _ => value.clone(),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        other => other.clone(),
    }
}

fn sorted_array(value: Value) -> Value {
    match value {
        Value::Array(mut items) => {
            items.sort_by_key(|v| v.to_string());
            Value::Array(items)
        }
        other => other,
    }
}

/// The rows as comparable strings, in a set order.
fn row_set(rows: &[Map<String, Value>], sort: bool) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|row| {
            let row: Map<String, Value> = row
                .iter()
                .map(|(k, v)| {
                    let v = canonical(v);
                    (k.clone(), if sort { sorted_array(v) } else { v })
                })
                .collect();
            Value::Object(row).to_string()
        })
        .collect();
    out.sort();
    out
}

/// Whether an OPA error code is raised by the compiler (the bundle must be refused)
/// rather than by evaluation.
fn is_compile_code(code: &str) -> bool {
    code.starts_with("rego_")
}

fn short(text: &str) -> String {
    let one_line = text.replace(['\n', '|'], " ");
    if one_line.chars().count() > 160 {
        format!("{}…", one_line.chars().take(160).collect::<String>())
    } else {
        one_line
    }
}

/// Runs one case: `Ok` when it ends as OPA's does.
fn run(case: &Case) -> Outcome {
    let answer = answer(case)?;
    let wants_error = case.want_error.is_some() || case.want_error_code.is_some();
    let code = case.want_error_code.as_deref().unwrap_or("");
    match answer {
        Answer::CompileError(e) => {
            if !wants_error {
                return Err(format!("refused at compile: {}", short(&e.to_string())));
            }
            if !code.is_empty() && !is_compile_code(code) {
                return Err(format!(
                    "OPA fails at evaluation ({code}); we refuse at compile: {}",
                    short(&e.to_string())
                ));
            }
            if let PolicyError::Check { errors, .. } = &e
                && !code.is_empty()
                && !errors.iter().any(|err| err.code == code)
            {
                return Err(format!(
                    "refused with another code than {code}: {}",
                    short(&e.to_string())
                ));
            }
            Ok(())
        }
        Answer::EvalError(e) => {
            if !wants_error {
                return Err(format!("evaluation failed: {}", short(&e.to_string())));
            }
            if is_compile_code(code) {
                return Err(format!(
                    "OPA refuses at compile ({code}); we compile and fail at evaluation: {}",
                    short(&e.to_string())
                ));
            }
            Ok(())
        }
        Answer::Rows(rows) => {
            if wants_error {
                let what = if code.is_empty() {
                    case.want_error.clone().unwrap_or_default()
                } else {
                    code.to_owned()
                };
                let how = if is_compile_code(code) {
                    "compiled"
                } else {
                    "evaluated"
                };
                return Err(format!(
                    "OPA errs ({}); we {how} to {}",
                    short(&what),
                    short(&row_set(&rows, false).join(", "))
                ));
            }
            let want = case.want_result.clone().unwrap_or_default();
            let (got, want) = (
                row_set(&rows, case.sort_bindings),
                row_set(&want, case.sort_bindings),
            );
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "got [{}], OPA [{}]",
                    short(&got.join(", ")),
                    short(&want.join(", "))
                ))
            }
        }
    }
}

/// `FAILING.md`'s table rows: (file, note) → cause.
fn listed_failures(text: &str) -> BTreeMap<(String, String), String> {
    let mut listed = BTreeMap::new();
    for line in text.lines() {
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let cells: Vec<&str> = row.trim_end_matches('|').splitn(3, " | ").collect();
        if let [file, note, cause] = cells[..] {
            let file = file.trim_end_matches('`').to_owned();
            let note = note.trim().trim_matches('`').to_owned();
            listed.insert((file, note), cause.trim().to_owned());
        }
    }
    listed
}

const FAILING_HEADER: &str = "# OPA conformance cases that fail

Every transcribed case that does not end as it does in OPA, with its cause. The runner
(`tests/opa_conformance.rs`) fails when a case fails that is not listed here, and when a
listed case passes: keep this list true. Causes were first written by the runner
(`OPA_CASES_WRITE_FAILING=1`) and then explained by hand where the runner's words were not
enough.

| file | note | cause |
| --- | --- | --- |
";

#[test]
fn opa_conformance_cases() {
    let mut per_category: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures: BTreeMap<(String, String), String> = BTreeMap::new();
    for (category, file) in case_files() {
        // OPA's graphql.* built-ins are this crate's default feature `graphql`.
        if cfg!(not(feature = "graphql")) && category.starts_with("graphql") {
            continue;
        }
        let text = std::fs::read_to_string(cases_dir().join(&file)).unwrap();
        let parsed: CaseFile =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for case in &parsed.cases {
            let entry = per_category.entry(category.clone()).or_default();
            entry.0 += 1;
            match run(case) {
                Ok(()) => entry.1 += 1,
                Err(cause) => {
                    failures.insert((file.clone(), case.note.clone()), cause);
                }
            }
        }
    }
    let (total, passed) = per_category
        .values()
        .fold((0, 0), |(t, p), (ct, cp)| (t + ct, p + cp));
    let ratio = passed as f64 / total.max(1) as f64;
    let mut table =
        String::from("category                                  cases  passed  ratio\n");
    for (category, (cases, ok)) in &per_category {
        let _ = writeln!(
            table,
            "{category:<40} {cases:>6} {ok:>7}  {:.3}",
            *ok as f64 / *cases as f64
        );
    }
    let _ = writeln!(
        table,
        "{:<40} {total:>6} {passed:>7}  {ratio:.4}  ({} categories)",
        "TOTAL",
        per_category.len()
    );
    println!("{table}");

    let failing_path = cases_dir().join("FAILING.md");
    if std::env::var_os("OPA_CASES_WRITE_FAILING").is_some() {
        let old = listed_failures(&std::fs::read_to_string(&failing_path).unwrap_or_default());
        let mut out = String::from(FAILING_HEADER);
        for ((file, note), cause) in &failures {
            // A hand-written cause is kept while the case still fails.
            let cause = old.get(&(file.clone(), note.clone())).unwrap_or(cause);
            let _ = writeln!(out, "| `{file}` | `{note}` | {cause} |");
        }
        std::fs::write(&failing_path, out).unwrap();
    }

    let listed = listed_failures(&std::fs::read_to_string(&failing_path).unwrap());
    let unlisted: Vec<String> = failures
        .iter()
        .filter(|(key, _)| !listed.contains_key(*key))
        .map(|((file, note), cause)| format!("  {file} / {note}: {cause}"))
        .collect();
    let fixed: BTreeSet<String> = listed
        .keys()
        .filter(|key| !failures.contains_key(*key))
        .map(|(file, note)| format!("  {file} / {note}"))
        .collect();
    let floor: f64 = std::fs::read_to_string(cases_dir().join("FLOOR"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut problems = Vec::new();
    // Issue 29 asks for at least 400 cases from at least 40 of OPA's categories.
    if total < 400 || per_category.len() < 40 {
        problems.push(format!(
            "only {total} cases from {} categories are transcribed (at least 400 from 40)",
            per_category.len()
        ));
    }
    if ratio < floor {
        problems.push(format!(
            "pass ratio {ratio:.4} ({passed}/{total}) is below the floor {floor}"
        ));
    }
    if !unlisted.is_empty() {
        problems.push(format!(
            "failing cases not listed in FAILING.md:\n{}",
            unlisted.join("\n")
        ));
    }
    if !fixed.is_empty() {
        problems.push(format!(
            "cases listed in FAILING.md that pass now (remove them, and raise FLOOR):\n{}",
            fixed.into_iter().collect::<Vec<_>>().join("\n")
        ));
    }
    assert!(problems.is_empty(), "{table}\n{}", problems.join("\n"));
}

#[test]
fn queries_split_into_paths_and_variables() {
    assert_eq!(
        path_query("data.generated.p = x"),
        Some(("data.generated.p".to_owned(), "x".to_owned()))
    );
    assert_eq!(
        path_query("data.test = x"),
        Some(("data.test".to_owned(), "x".to_owned()))
    );
    assert_eq!(path_query("data.test.p == x"), None);
    assert_eq!(path_query("data.test.p[x] = y"), None);
    assert_eq!(
        query_vars(r#"data.test.p[x] = y; time.now_ns(t); z := "a b" with input as {"k": 1}"#),
        vec!["x", "y", "t", "z"]
    );
    assert_eq!(query_vars("data.x.p = _; not data.y"), Vec::<String>::new());
}
