//! `rego.metadata.rule()` and `rego.metadata.chain()`, which regorus lacks: OPA answers them
//! from the `# METADATA` comment blocks (YAML) that precede packages and rules, so their
//! value is known once all modules are read. Each call is replaced by that value, written
//! as a literal on the call's line, before regorus parses the module.
//!
//! Annotations are normalized as OPA does for the fields policies use: `scope` (`rule` by
//! default on a rule, `package` on a package), `title`, `description`, `organizations`,
//! `authors` (`"Name <email>"` becomes `{"name", "email"}`), `related_resources` (a string
//! becomes `{"ref"}`), `entrypoint`, `custom`, and `schemas` as written.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regorus::Value;
use regorus::unstable::{Expr, Literal, LiteralStmt, Parser, Query, Rule, RuleHead, Source};

/// What one module's parse tells: its package, the annotations of its package and of each
/// rule, and the metadata calls in each rule.
struct ModuleInfo {
    package: Vec<String>,
    /// Annotations of the package statement (scope `package` or `subpackages`).
    package_annotations: Option<Value>,
    rules: Vec<RuleInfo>,
}

struct RuleInfo {
    path: Vec<String>,
    /// Annotations of this rule (any scope).
    annotations: Option<Value>,
    /// `(start, end, is_chain)` of each `rego.metadata.rule()` / `chain()` call in it.
    calls: Vec<(usize, usize, bool)>,
}

/// Replaces the `rego.metadata.rule()` and `rego.metadata.chain()` calls of `sources`
/// (each with whether it is Rego v0) by their values, across all of them. Modules that do
/// not parse are left as they are (regorus reports why).
pub(crate) fn resolve_metadata_calls(sources: &mut [(Cow<'_, str>, bool)]) {
    if !sources
        .iter()
        .any(|(source, _)| source.contains("rego.metadata."))
    {
        return;
    }
    let infos: Vec<Option<ModuleInfo>> = sources
        .iter()
        .map(|(source, v0)| module_info(source, *v0))
        .collect();
    // Annotations that reach beyond their statement, by path.
    let mut documents: BTreeMap<Vec<String>, Value> = BTreeMap::new();
    let mut packages: BTreeMap<Vec<String>, Value> = BTreeMap::new();
    let mut subpackages: BTreeMap<Vec<String>, Value> = BTreeMap::new();
    for info in infos.iter().flatten() {
        if let Some(annotations) = &info.package_annotations {
            let target = if scope(annotations) == "subpackages" {
                &mut subpackages
            } else {
                &mut packages
            };
            target.insert(info.package.clone(), annotations.clone());
        }
        for rule in &info.rules {
            if let Some(annotations) = rule.annotations.as_ref().filter(|a| scope(a) == "document")
            {
                documents.insert(rule.path.clone(), annotations.clone());
            }
        }
    }
    for ((source, _), info) in sources.iter_mut().zip(&infos) {
        let Some(info) = info else {
            continue;
        };
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        for rule in &info.rules {
            let own = rule
                .annotations
                .as_ref()
                .filter(|a| scope(a) == "rule")
                .cloned();
            for &(start, end, is_chain) in &rule.calls {
                let value = if is_chain {
                    chain(
                        rule,
                        own.as_ref(),
                        info,
                        &documents,
                        &packages,
                        &subpackages,
                    )
                } else {
                    own.clone().unwrap_or_else(Value::new_object)
                };
                let Ok(text) = serde_json::to_string(&value) else {
                    continue;
                };
                edits.push((start, end, text));
            }
        }
        if edits.is_empty() {
            continue;
        }
        edits.sort_by_key(|e| e.0);
        let mut out = String::with_capacity(source.len());
        let mut copied = 0;
        let mut complete = true;
        for (start, end, text) in &edits {
            match source.get(copied..*start) {
                Some(before) if *start >= copied => {
                    out.push_str(before);
                    out.push_str(text);
                    copied = *end;
                }
                _ => complete = false,
            }
        }
        match source.get(copied..) {
            Some(rest) if complete => {
                out.push_str(rest);
                *source = Cow::Owned(out);
            }
            _ => {}
        }
    }
}

/// OPA's chain for a call in `rule`: the rule (with its own annotations if any), then the
/// document's, the package's, and each enclosing package's `subpackages` annotations.
fn chain(
    rule: &RuleInfo,
    own: Option<&Value>,
    info: &ModuleInfo,
    documents: &BTreeMap<Vec<String>, Value>,
    packages: &BTreeMap<Vec<String>, Value>,
    subpackages: &BTreeMap<Vec<String>, Value>,
) -> Value {
    let entry = |path: &[String], annotations: Option<&Value>| {
        let mut map = BTreeMap::new();
        map.insert(
            Value::from("path"),
            Value::from(
                path.iter()
                    .map(|s| Value::from(s.as_str()))
                    .collect::<Vec<_>>(),
            ),
        );
        if let Some(annotations) = annotations {
            map.insert(Value::from("annotations"), annotations.clone());
        }
        Value::from(map)
    };
    let mut links = vec![entry(&rule.path, own)];
    if let Some(annotations) = documents.get(&rule.path) {
        links.push(entry(&rule.path, Some(annotations)));
    }
    if let Some(annotations) = packages.get(&info.package) {
        links.push(entry(&info.package, Some(annotations)));
    }
    for len in (0..=info.package.len()).rev() {
        let Some(prefix) = info.package.get(..len) else {
            continue;
        };
        if let Some(annotations) = subpackages.get(prefix) {
            links.push(entry(prefix, Some(annotations)));
        }
    }
    Value::from(links)
}

fn scope(annotations: &Value) -> &str {
    match annotations {
        Value::Object(map) => match map.get(&Value::from("scope")) {
            Some(Value::String(s)) => s,
            _ => "",
        },
        _ => "",
    }
}

/// The parse of one module, or `None` if it does not parse.
fn module_info(source: &str, v0: bool) -> Option<ModuleInfo> {
    let parsed = Source::from_contents("<metadata>".to_owned(), source.to_owned()).ok()?;
    let mut parser = Parser::new(&parsed).ok()?;
    if !v0 {
        parser.enable_rego_v1().ok()?;
    }
    let module = parser.parse().ok()?;
    let package: Vec<String> = regorus::utils::get_path_string(&module.package.refr, None)
        .ok()?
        .split('.')
        .map(str::to_owned)
        .collect();
    let blocks = metadata_blocks(source);
    let annotations_at = |start: usize, default_scope: &str| {
        blocks
            .iter()
            .find(|(next, _)| *next == start)
            .and_then(|(_, yaml)| normalize(yaml, default_scope))
    };
    let package_annotations = annotations_at(module.package.span.start as usize, "package");
    let mut rules = Vec::new();
    for rule in &module.policy {
        let (refr, start) = match rule.as_ref() {
            Rule::Spec { head, span, .. } => match head {
                RuleHead::Compr { refr, .. }
                | RuleHead::Set { refr, .. }
                | RuleHead::Func { refr, .. } => (refr, span.start),
            },
            Rule::Default { refr, span, .. } => (refr, span.start),
        };
        let Ok(name) = regorus::utils::get_path_string(refr, None) else {
            continue;
        };
        let mut path = package.clone();
        path.extend(name.split('.').map(str::to_owned));
        let mut calls = Vec::new();
        if let Rule::Spec { head, bodies, .. } = rule.as_ref() {
            match head {
                RuleHead::Compr { assign, .. } | RuleHead::Func { assign, .. } => {
                    if let Some(assign) = assign {
                        expr(&assign.value, &mut calls);
                    }
                }
                RuleHead::Set { key, .. } => {
                    if let Some(key) = key {
                        expr(key, &mut calls);
                    }
                }
            }
            for body in bodies {
                if let Some(assign) = &body.assign {
                    expr(&assign.value, &mut calls);
                }
                query(&body.query, &mut calls);
            }
        }
        rules.push(RuleInfo {
            path,
            annotations: annotations_at(start as usize, "rule"),
            calls,
        });
    }
    Some(ModuleInfo {
        package,
        package_annotations,
        rules,
    })
}

/// Each `# METADATA` block of `source`: the byte offset of the statement that follows it
/// (the start of its first line's text) and the block's YAML.
fn metadata_blocks(source: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        lines.push((offset, line));
        offset += line.len();
    }
    let mut i = 0;
    while let Some((_, line)) = lines.get(i) {
        let text = line.trim();
        let is_header = text
            .strip_prefix('#')
            .is_some_and(|rest| rest.trim() == "METADATA");
        i += 1;
        if !is_header {
            continue;
        }
        let mut yaml = String::new();
        while let Some((_, line)) = lines.get(i) {
            let Some(comment) = line.trim_start().strip_prefix('#') else {
                break;
            };
            yaml.push_str(comment.strip_prefix(' ').unwrap_or(comment));
            if !comment.ends_with('\n') {
                yaml.push('\n');
            }
            i += 1;
        }
        if let Some((start, line)) = lines.get(i) {
            let indent = line.len() - line.trim_start().len();
            blocks.push((start + indent, yaml));
        }
    }
    blocks
}

/// A block's YAML as OPA's annotations, with `default_scope` when it names none; `None`
/// if it is not a YAML mapping.
fn normalize(yaml: &str, default_scope: &str) -> Option<Value> {
    let Ok(Value::Object(raw)) = Value::from_yaml_str(yaml) else {
        return None;
    };
    let mut out = BTreeMap::new();
    for (key, value) in raw.iter() {
        let Value::String(name) = key else {
            continue;
        };
        let value = match name.as_ref() {
            "authors" => list(value, |item| match item {
                Value::String(s) => author(s),
                other => other.clone(),
            }),
            "related_resources" => list(value, |item| match item {
                Value::String(s) => {
                    let mut map = BTreeMap::new();
                    map.insert(Value::from("ref"), Value::from(s.as_ref()));
                    Value::from(map)
                }
                other => other.clone(),
            }),
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    out.entry(Value::from("scope"))
        .or_insert_with(|| Value::from(default_scope));
    Some(Value::from(out))
}

fn list(value: &Value, f: impl Fn(&Value) -> Value) -> Value {
    match value {
        Value::Array(items) => Value::from(items.iter().map(f).collect::<Vec<_>>()),
        other => Value::from(vec![f(other)]),
    }
}

/// `"Name <email>"`, `"Name"` or `"<email>"` as `{"name", "email"}`.
fn author(text: &str) -> Value {
    let mut map = BTreeMap::new();
    let text = text.trim();
    let (name, email) = match (text.rfind('<'), text.ends_with('>')) {
        (Some(open), true) => (
            text.get(..open).unwrap_or_default().trim(),
            text.get(open + 1..text.len() - 1)
                .unwrap_or_default()
                .trim(),
        ),
        _ => (text, ""),
    };
    if !name.is_empty() {
        map.insert(Value::from("name"), Value::from(name));
    }
    if !email.is_empty() {
        map.insert(Value::from("email"), Value::from(email));
    }
    Value::from(map)
}

/// The metadata calls in a query, as `(start, end, is_chain)`.
fn query(query: &Query, calls: &mut Vec<(usize, usize, bool)>) {
    for stmt in &query.stmts {
        statement(stmt, calls);
    }
}

fn statement(stmt: &LiteralStmt, calls: &mut Vec<(usize, usize, bool)>) {
    for with in &stmt.with_mods {
        expr(&with.r#as, calls);
    }
    match &stmt.literal {
        Literal::Expr { expr: e, .. } | Literal::NotExpr { expr: e, .. } => expr(e, calls),
        Literal::SomeIn {
            key,
            value,
            collection,
            ..
        } => {
            if let Some(key) = key {
                expr(key, calls);
            }
            expr(value, calls);
            expr(collection, calls);
        }
        Literal::Every {
            domain, query: q, ..
        } => {
            expr(domain, calls);
            query(q, calls);
        }
        Literal::SomeVars { .. } => {}
    }
}

fn expr(e: &Expr, calls: &mut Vec<(usize, usize, bool)>) {
    match e {
        Expr::Call {
            span, fcn, params, ..
        } => {
            let name = regorus::utils::get_path_string(fcn, None).unwrap_or_default();
            match name.as_str() {
                "rego.metadata.chain" | "rego.metadata.rule" if params.is_empty() => {
                    calls.push((
                        span.start as usize,
                        span.end as usize,
                        name == "rego.metadata.chain",
                    ));
                }
                _ => {
                    for param in params {
                        expr(param, calls);
                    }
                }
            }
        }
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            for item in items {
                expr(item, calls);
            }
        }
        Expr::Object { fields, .. } => {
            for (_, key, value) in fields {
                expr(key, calls);
                expr(value, calls);
            }
        }
        Expr::ArrayCompr { term, query: q, .. } | Expr::SetCompr { term, query: q, .. } => {
            expr(term, calls);
            query(q, calls);
        }
        Expr::ObjectCompr {
            key,
            value,
            query: q,
            ..
        } => {
            expr(key, calls);
            expr(value, calls);
            query(q, calls);
        }
        Expr::UnaryExpr { expr: inner, .. } | Expr::RefDot { refr: inner, .. } => {
            expr(inner, calls);
        }
        Expr::RefBrack { refr, index, .. } => {
            expr(refr, calls);
            expr(index, calls);
        }
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => {
            expr(lhs, calls);
            expr(rhs, calls);
        }
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => {
            if let Some(key) = key {
                expr(key, calls);
            }
            expr(value, calls);
            expr(collection, calls);
        }
        _ => {}
    }
}
