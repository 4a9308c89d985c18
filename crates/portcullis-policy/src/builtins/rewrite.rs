//! Rewrites of a Rego source for forms OPA accepts and regorus does not. First, template
//! strings (`$"…{x}…"`), which regorus cannot even lex, become calls of
//! `internal.template_string` (see [`super::template`]), string literals too long for its
//! lexer's line width become calls of functions at the module's end (see
//! [`super::long_strings`]), and the negated bodies of `rego.v2` (`not { … }`) become
//! comprehensions (see [`super::not_body`]). Then rewrites, each guided by
//! regorus's own parse of the source (spans of the parsed expressions):
//!
//! - the output-argument form of calls to this crate's built-ins, which regorus supports
//!   only for its own: `io.jwt.decode(t, [h, p, s])` is OPA's `[h, p, s] = io.jwt.decode(t)`;
//! - unary minus on anything but a number literal (`-x`, `-f(y)`, `2 * -x`), which regorus
//!   refuses when evaluating: it becomes `(0 - x)`;
//! - `with f as g` where `g` names a built-in, which regorus's compiler refuses: `g`
//!   becomes a wrapper appended to the module (see [`super::with_mock`]); an added
//!   built-in that some module of the set replaces with `with` is called through a
//!   wrapper of each module, which regorus's `with` can replace;
//! - `units.parse_bytes(x)`: `x` checked first as OPA checks it (see [`super::units`]);
//! - template strings in the head of an object comprehension or among a function's
//!   arguments, moved into the body.
//!
//! The rewrites move text only within one expression: other lines keep their numbers (line
//! breaks inside a rewritten call are kept at its end), and what follows it on its line
//! moves by a few columns. A source that does not parse is left as it is (regorus then
//! reports why); nested forms are rewritten over a few passes, outermost first.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use regorus::unstable::{Expr, Literal, LiteralStmt, Parser, Query, Rule, RuleHead, Source};

/// Whether `name` is a built-in added here that regorus does not have itself, and its
/// arity.
fn added_arity(name: &str) -> Option<usize> {
    super::EXTENSIONS
        .iter()
        .find(|e| e.name == name && !e.native)
        .map(|e| usize::from(e.arity))
}

/// The most passes over one source (each rewrites the outermost forms left).
const MAX_PASSES: usize = 8;

/// [`rewrite_source_mocking`] with no extension replaced by `with` in the set.
#[cfg(test)]
fn rewrite_source(source: Cow<'_, str>, v0: bool) -> Result<Cow<'_, str>, super::TemplateError> {
    rewrite_source_mocking(source, v0, &[])
}

/// `source` with the rewrites of this module: template strings written as calls, negated
/// bodies as comprehensions, the output-argument calls of added built-ins as
/// unifications, unary minus on expressions as subtractions from 0, and so on; the calls
/// of the extensions in `mocked` (which some module of the set replaces with `with`, see
/// [`super::with_mock::mocked_extensions`]) call a wrapper of this module instead, which
/// `with` can replace.
///
/// # Errors
///
/// A template string that cannot be rewritten as OPA reads it (the module is refused).
pub(crate) fn rewrite_source_mocking<'s>(
    source: Cow<'s, str>,
    v0: bool,
    mocked: &[&'static str],
) -> Result<Cow<'s, str>, super::TemplateError> {
    let source = match super::template::rewrite_templates(&source)? {
        Some(rewritten) => Cow::Owned(rewritten),
        None => source,
    };
    let source = match super::long_strings::hoist_long_strings(&source) {
        Some(hoisted) => Cow::Owned(hoisted),
        None => source,
    };
    let source = match super::not_body::rewrite_not_bodies(&source) {
        Some(rewritten) => Cow::Owned(rewritten),
        None => source,
    };
    Ok(rewrite_parsed(source, v0, mocked))
}

/// The rewrites guided by regorus's parse of `source`.
fn rewrite_parsed<'s>(source: Cow<'s, str>, v0: bool, mocked: &[&'static str]) -> Cow<'s, str> {
    // A cheap look first: most policies have neither form.
    let calls_added = super::EXTENSIONS
        .iter()
        .any(|e| !e.native && source.contains(e.name));
    if !calls_added
        && !may_negate_expression(&source)
        && !may_mock_with_builtin(&source)
        && !source.contains("units.parse_bytes")
    {
        return source;
    }
    let mut current = source;
    for _ in 0..MAX_PASSES {
        let Some(edits) = edits(&current, v0, mocked) else {
            return current;
        };
        if edits.is_empty() {
            return current;
        }
        let Some(next) = apply(&current, &edits) else {
            return current;
        };
        current = Cow::Owned(next);
    }
    current
}

/// Whether `source` has a `-` followed (after spaces) by what may start an expression other
/// than a number: a cheap filter (comments and strings count too) before parsing.
fn may_negate_expression(source: &str) -> bool {
    let bytes = source.as_bytes();
    bytes.iter().enumerate().any(|(i, b)| {
        *b == b'-'
            && bytes
                .get(i + 1..)
                .and_then(|rest| rest.iter().find(|c| **c != b' ' && **c != b'\t'))
                .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, b'_' | b'(' | b'[' | b'{'))
    })
}

/// Whether `source` may have a `with … as …` (a cheap filter before parsing).
fn may_mock_with_builtin(source: &str) -> bool {
    source.contains("with ") && source.contains(" as ")
}

/// One replacement: a byte range of the source and its new text.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

/// `source` with `edits` (in order, not overlapping) applied.
fn apply(source: &str, edits: &[Edit]) -> Option<String> {
    let mut out = String::with_capacity(source.len() + 8 * edits.len());
    let mut copied = 0;
    for edit in edits {
        out.push_str(source.get(copied..edit.start)?);
        out.push_str(&edit.text);
        copied = edit.end;
    }
    out.push_str(source.get(copied..)?);
    Some(out)
}

/// One call to rewrite: byte ranges of the whole call, its name, its arguments but the
/// last, and the last.
struct OutputCall {
    start: usize,
    end: usize,
    name_end: usize,
    /// End of the argument before the output one (the name's end when there is none).
    inputs_end: usize,
    output: (usize, usize),
}

impl OutputCall {
    /// `out = f(args)`, then the call's line breaks that fell outside the moved text.
    fn edit(&self, source: &str) -> Option<Edit> {
        let output = source.get(self.output.0..self.output.1)?;
        let name = source.get(self.start..self.name_end)?;
        let mut text = if self.inputs_end == self.name_end {
            format!("{output} = {name}()")
        } else {
            let head = source.get(self.start..self.inputs_end)?;
            format!("{output} = {head})")
        };
        let original = source.get(self.start..self.end)?;
        let breaks = original
            .matches('\n')
            .count()
            .saturating_sub(text.matches('\n').count());
        text.push_str(&"\n".repeat(breaks));
        Some(Edit {
            start: self.start,
            end: self.end,
            text,
        })
    }
}

/// The edits of one pass over `source`: the outermost forms, in order and not overlapping;
/// `None` if it does not parse.
fn edits(source: &str, v0: bool, mocked: &[&'static str]) -> Option<Vec<Edit>> {
    let parsed = Source::from_contents("<rewrite>".to_owned(), source.to_owned()).ok()?;
    let mut parser = Parser::new(&parsed).ok()?;
    if !v0 {
        parser.enable_rego_v1().ok()?;
    }
    let module = parser.parse().ok()?;
    let mut found = Found {
        source,
        edits: Vec::new(),
        shadowed: super::with_mock::shadowing_names(&module),
        wrappers: BTreeMap::new(),
        mocked,
        mockable: BTreeMap::new(),
    };
    let calls = &mut found;
    for rule in &module.policy {
        if is_mockable_wrapper(rule) {
            continue;
        }
        match rule.as_ref() {
            Rule::Spec { head, bodies, .. } => {
                if let RuleHead::Func { args, .. } = head {
                    templated_arguments(args, bodies, calls);
                }
                match head {
                    RuleHead::Compr { refr, assign, .. } | RuleHead::Func { refr, assign, .. } => {
                        expr(refr, calls);
                        if let Some(assign) = assign {
                            expr(&assign.value, calls);
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        expr(refr, calls);
                        if let Some(key) = key {
                            expr(key, calls);
                        }
                    }
                }
                for body in bodies {
                    if let Some(assign) = &body.assign {
                        expr(&assign.value, calls);
                    }
                    query(&body.query, calls);
                }
            }
            Rule::Default { value, .. } => expr(value, calls),
        }
    }
    let mut edits = found.edits;
    let mut wrappers = super::with_mock::definitions(source, &found.wrappers);
    wrappers.push_str(&super::with_mock::mockable_definitions(
        source,
        &found.mockable,
    ));
    if !wrappers.is_empty() {
        edits.push(Edit {
            start: source.len(),
            end: source.len(),
            text: wrappers,
        });
    }
    edits.sort_by_key(|e| (e.start, std::cmp::Reverse(e.end)));
    let mut kept: Vec<Edit> = Vec::with_capacity(edits.len());
    for edit in edits {
        if kept.last().is_none_or(|last| edit.start >= last.end) {
            kept.push(edit);
        }
    }
    Some(kept)
}

/// The edits found so far in `source`.
struct Found<'s> {
    source: &'s str,
    edits: Vec<Edit>,
    /// The names the module defines or imports (see [`super::with_mock`]).
    shadowed: HashSet<String>,
    /// The built-ins named after `with … as`, to wrap (name → arity).
    wrappers: BTreeMap<String, usize>,
    /// The extensions some module of the set replaces with `with`.
    mocked: &'s [&'static str],
    /// Those called or replaced here, to wrap (name → arity).
    mockable: BTreeMap<String, usize>,
}

/// Whether `rule` is a wrapper of a mocked extension (added by an earlier pass), whose
/// call of the extension stays as it is.
fn is_mockable_wrapper(rule: &Rule) -> bool {
    let refr = match rule {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. }
            | RuleHead::Set { refr, .. }
            | RuleHead::Func { refr, .. } => refr,
        },
        Rule::Default { refr, .. } => refr,
    };
    regorus::utils::get_path_string(refr, None)
        .is_ok_and(|path| path.starts_with(super::with_mock::MOCKABLE_PREFIX))
}

/// If `e` names an extension some module replaces with `with`: the edit naming its
/// wrapper instead (recorded to be defined).
fn mockable(e: &Expr, calls: &mut Found<'_>) -> Option<Edit> {
    let name = regorus::utils::get_path_string(e, None).ok()?;
    let known = *calls.mocked.iter().find(|m| **m == name)?;
    let arity = added_arity(known)?;
    calls.mockable.insert(known.to_owned(), arity);
    let (start, end) = extent(e);
    Some(Edit {
        start,
        end,
        text: super::with_mock::mockable_name(known),
    })
}

fn query(query: &Query, calls: &mut Found<'_>) {
    for stmt in &query.stmts {
        statement(stmt, calls);
    }
}

fn statement(stmt: &LiteralStmt, calls: &mut Found<'_>) {
    for with in &stmt.with_mods {
        if let Some(edit) = mockable(&with.refr, calls) {
            calls.edits.push(edit);
        }
        // `with f as some.builtin`: the wrapper's name instead (see [`super::with_mock`]).
        if let Some((name, arity)) = super::with_mock::builtin_replacement(with, &calls.shadowed) {
            let (start, end) = extent(&with.r#as);
            calls.edits.push(Edit {
                start,
                end,
                text: super::with_mock::wrapper_name(&name),
            });
            calls.wrappers.insert(name, arity);
        } else {
            expr(&with.r#as, calls);
        }
    }
    match &stmt.literal {
        Literal::Expr { expr: e, .. } | Literal::NotExpr { expr: e, .. } => {
            if let Some(edit) = output_call(e).and_then(|call| call.edit(calls.source)) {
                calls.edits.push(edit);
            }
            expr(e, calls);
        }
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

/// The call `e` is, if it calls an added built-in with an output argument.
fn output_call(e: &Expr) -> Option<OutputCall> {
    let Expr::Call {
        span, fcn, params, ..
    } = e
    else {
        return None;
    };
    let name = regorus::utils::get_path_string(fcn, None).ok()?;
    let arity = added_arity(&name)?;
    if params.len() != arity + 1 {
        return None;
    }
    let output = extent(params.last()?);
    let name_end = fcn.span().end as usize;
    let inputs_end = match arity.checked_sub(1).and_then(|i| params.get(i)) {
        Some(last_input) => extent(last_input).1,
        None => name_end,
    };
    Some(OutputCall {
        start: span.start as usize,
        end: span.end as usize,
        name_end,
        inputs_end,
        output,
    })
}

/// The byte range of `e` in its source: a string literal's span is its content, without
/// the quotes.
fn extent(e: &Expr) -> (usize, usize) {
    let span = e.span();
    let (start, end) = (span.start as usize, span.end as usize);
    match e {
        Expr::String { .. } | Expr::RawString { .. } => (start.saturating_sub(1), end + 1),
        _ => (start, end),
    }
}

/// `-e` (at `start`) as `(0 - e)`, unless `e` is a number literal (regorus negates those
/// itself). regorus parses the operand of unary minus as a whole arithmetic expression
/// (`-x * 2` is `-(x * 2)`); `(0 - x * 2)` then reads with the usual precedence, as OPA
/// reads `-x * 2`. Text between the operand's end and a closing parenthesis it was
/// written in is not part of its span: the original `)` follows the new one.
fn unary_minus(start: usize, operand: &Expr, source: &str) -> Option<Edit> {
    if matches!(operand, Expr::Number { .. }) {
        return None;
    }
    if source.get(start..=start)? != "-" {
        return None;
    }
    let end = extent_end(operand);
    let inner = source.get(start + 1..end)?;
    Some(Edit {
        start,
        end,
        text: format!("(0 - {})", inner.trim_start_matches([' ', '\t'])),
    })
}

/// The end of the text of `e` (a string literal's span leaves out its closing quote).
fn extent_end(e: &Expr) -> usize {
    let own = extent(e).1;
    let children: Vec<&Expr> = match e {
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            items.iter().map(AsRef::as_ref).collect()
        }
        Expr::Object { fields, .. } => fields
            .iter()
            .flat_map(|(_, k, v)| [k.as_ref(), v.as_ref()])
            .collect(),
        Expr::Call { fcn, params, .. } => std::iter::once(fcn.as_ref())
            .chain(params.iter().map(AsRef::as_ref))
            .collect(),
        Expr::UnaryExpr { expr: inner, .. } | Expr::RefDot { refr: inner, .. } => vec![inner],
        Expr::RefBrack { refr, index, .. } => vec![refr, index],
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => vec![lhs, rhs],
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => key
            .iter()
            .map(AsRef::as_ref)
            .chain([value.as_ref(), collection.as_ref()])
            .collect(),
        _ => Vec::new(),
    };
    children.into_iter().map(extent_end).fold(own, usize::max)
}

/// Whether `e` calls `internal.template_string` (a template string), outside
/// comprehensions.
fn has_template(e: &Expr) -> bool {
    match e {
        Expr::Call { fcn, params, .. } => {
            regorus::utils::get_path_string(fcn, None).is_ok_and(|n| n == super::template::NAME)
                || params.iter().any(|p| has_template(p))
        }
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            items.iter().any(|i| has_template(i))
        }
        Expr::Object { fields, .. } => fields
            .iter()
            .any(|(_, k, v)| has_template(k) || has_template(v)),
        Expr::UnaryExpr { expr: inner, .. } | Expr::RefDot { refr: inner, .. } => {
            has_template(inner)
        }
        Expr::RefBrack { refr, index, .. } => has_template(refr) || has_template(index),
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. } => has_template(lhs) || has_template(rhs),
        _ => false,
    }
}

/// `{K: V | Q}` whose key or value has a template string as
/// `{__portcullis_kN: __portcullis_vN | Q; __portcullis_kN := K; __portcullis_vN := V}`:
/// regorus cannot schedule the comprehensions a template becomes in the head of an object
/// comprehension when they read the body's variables; in the body it can. The call's line
/// breaks that fell outside the moved text are kept at its end.
fn templated_object_comprehension(
    span: &regorus::unstable::Span,
    key: &Expr,
    value: &Expr,
    q: &Query,
    source: &str,
) -> Option<Edit> {
    if !has_template(key) && !has_template(value) {
        return None;
    }
    let (start, end) = (span.start as usize, span.end as usize);
    let original = source.get(start..end)?;
    if !original.starts_with('{') || !original.ends_with('}') {
        return None;
    }
    let key_text = source.get(extent(key).0..extent_end(key))?;
    let value_text = source.get(extent(value).0..extent_end(value))?;
    // The query's span starts at the `|`.
    let query_text = source.get(q.span.start as usize..end - 1)?.trim_end();
    let query_text = query_text
        .strip_prefix('|')
        .unwrap_or(query_text)
        .trim_start();
    let (k, v) = (
        format!("__portcullis_k{start}"),
        format!("__portcullis_v{start}"),
    );
    let mut text = format!("{{{k}: {v} | {query_text}; {k} := {key_text}; {v} := {value_text}}}");
    let breaks = original
        .matches('\n')
        .count()
        .saturating_sub(text.matches('\n').count());
    text.push_str(&"\n".repeat(breaks));
    Some(Edit { start, end, text })
}

/// A function's head arguments with a template string (`f($"{x}") := … if { x = … }`),
/// which regorus cannot schedule there: each becomes a fresh variable, compared with the
/// template at the end of every body (`f(a) := … if { x = …; a == $"{x}" }`), where the
/// body's variables are bound as OPA binds them. A function without a body is left as it
/// is.
fn templated_arguments(
    args: &[regorus::unstable::Ref<Expr>],
    bodies: &[regorus::unstable::RuleBody],
    calls: &mut Found<'_>,
) {
    let source = calls.source;
    if bodies.is_empty() {
        return;
    }
    for arg in args {
        if !has_template(arg) {
            continue;
        }
        let (start, end) = (extent(arg).0, extent_end(arg));
        let Some(template) = source.get(start..end) else {
            continue;
        };
        let name = format!("__portcullis_f{start}");
        let mut edits = vec![Edit {
            start,
            end,
            text: name.clone(),
        }];
        for body in bodies {
            let Some(last) = body.query.stmts.last() else {
                return;
            };
            if matches!(last.literal, Literal::Every { .. }) {
                return;
            }
            let at = statement_end(last);
            // Only a body written in braces, its last statement's end before the `}`.
            let rest = source.get(at..).unwrap_or_default().trim_start();
            if !rest.starts_with('}') {
                return;
            }
            edits.push(Edit {
                start: at,
                end: at,
                text: format!("; {name} == {template}"),
            });
        }
        calls.edits.extend(edits);
    }
}

/// The end of the text of a statement (its expression and `with` modifiers).
fn statement_end(stmt: &LiteralStmt) -> usize {
    let own = match &stmt.literal {
        Literal::Expr { expr: e, .. } | Literal::NotExpr { expr: e, .. } => extent_end(e),
        Literal::SomeIn {
            value, collection, ..
        } => extent_end(value).max(extent_end(collection)),
        Literal::Every { span, .. } | Literal::SomeVars { span, .. } => span.end as usize,
    };
    stmt.with_mods
        .iter()
        .map(|w| extent_end(&w.r#as))
        .fold(own, usize::max)
}

/// `units.parse_bytes(x)` as `units.parse_bytes(internal.units_parse_bytes_check(x))`: the
/// check OPA makes that regorus's own lacks (see [`super::units`]).
fn checked_parse_bytes(
    fcn: &Expr,
    params: &[regorus::unstable::Ref<Expr>],
    source: &str,
) -> Option<Edit> {
    if regorus::utils::get_path_string(fcn, None).ok()? != "units.parse_bytes" {
        return None;
    }
    let first = params.first()?;
    // A constant that is not a string: left as it is, for the check's type error.
    if matches!(
        first.as_ref(),
        Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. }
            | Expr::Array { .. }
            | Expr::Set { .. }
            | Expr::Object { .. }
            | Expr::ArrayCompr { .. }
            | Expr::SetCompr { .. }
            | Expr::ObjectCompr { .. }
    ) {
        return None;
    }
    if let Expr::Call { fcn: inner, .. } = first.as_ref()
        && regorus::utils::get_path_string(inner, None).is_ok_and(|n| n == super::units::NAME)
    {
        return None;
    }
    let (start, end) = (extent(first).0, extent_end(first));
    let text = source.get(start..end)?;
    Some(Edit {
        start,
        end,
        text: format!("{}({text})", super::units::NAME),
    })
}

/// Statements inside `e` (in comprehensions).
fn expr(e: &Expr, calls: &mut Found<'_>) {
    match e {
        Expr::String { .. }
        | Expr::RawString { .. }
        | Expr::Number { .. }
        | Expr::Bool { .. }
        | Expr::Null { .. }
        | Expr::Var { .. } => {}
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
            span,
            key,
            value,
            query: q,
            ..
        } => {
            if let Some(edit) = templated_object_comprehension(span, key, value, q, calls.source) {
                calls.edits.push(edit);
            }
            expr(key, calls);
            expr(value, calls);
            query(q, calls);
        }
        Expr::Call { fcn, params, .. } => {
            if let Some(edit) = checked_parse_bytes(fcn, params, calls.source) {
                calls.edits.push(edit);
            }
            if let Some(edit) = mockable(fcn, calls) {
                calls.edits.push(edit);
            }
            expr(fcn, calls);
            for param in params {
                expr(param, calls);
            }
        }
        Expr::UnaryExpr {
            span, expr: inner, ..
        } => {
            if let Some(edit) = unary_minus(span.start as usize, inner, calls.source) {
                calls.edits.push(edit);
            }
            expr(inner, calls);
        }
        Expr::RefDot { refr: inner, .. } => expr(inner, calls),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(source: &str) -> String {
        rewrite_source(Cow::Borrowed(source), false)
            .map(Cow::into_owned)
            .unwrap_or_default()
    }

    #[test]
    fn output_arguments_become_unifications() {
        assert_eq!(
            rewrite("package p\nx if io.jwt.decode(input.t, [h, p, s])\ny := 1"),
            "package p\nx if [h, p, s] = io.jwt.decode(input.t)\ny := 1"
        );
        assert_eq!(
            rewrite("package p\nx if {\n  not net.cidr_intersects(\"a\",\n \"b\", true)\n}"),
            "package p\nx if {\n  not true = net.cidr_intersects(\"a\",\n \"b\")\n}"
        );
        // Inside comprehensions and `every`; two in a row.
        assert_eq!(
            rewrite(
                "package p\nx := [m | some s in input; crypto.md5(s, m)]\ny if every s in input { crypto.sha1(s, _); crypto.sha256(s, \"x\") }"
            ),
            "package p\nx := [m | some s in input; m = crypto.md5(s)]\ny if every s in input { _ = crypto.sha1(s); \"x\" = crypto.sha256(s) }"
        );
        // Unary minus on anything but a number literal.
        assert_eq!(
            rewrite(
                "package p\nx := [-input.a, 2 * -input.a, -f(1) + 1, -(input.a), - -input.a, -1, - 2]\nf(n) := n"
            ),
            "package p\nx := [(0 - input.a), 2 * (0 - input.a), (0 - f(1) + 1), (0 - (input.a)), (0 - (0 - input.a)), -1, - 2]\nf(n) := n"
        );
        assert_eq!(
            rewrite("package p\nx := -input.s[\"a\"]\ny := 1"),
            "package p\nx := (0 - input.s[\"a\"])\ny := 1"
        );
        // `with … as` a built-in: a wrapper of it, appended.
        assert_eq!(
            rewrite("package p\nx := y if y = count([1]) with count as object.union_n"),
            "package p\nx := y if y = count([1]) with count as __portcullis_with_object__union_n\n\
             __portcullis_with_object__union_n(__portcullis_with_a0) := object.union_n(__portcullis_with_a0)\n"
        );
        // A template string among a function's head arguments: compared at the end of
        // each body.
        assert_eq!(
            rewrite(
                "package p\nf(internal.template_string([x])) := 1 if { x = \"a\" } else := 2 if { true }"
            ),
            "package p\nf(__portcullis_f12) := 1 if { x = \"a\"; __portcullis_f12 == internal.template_string([x]) } else := 2 if { true; __portcullis_f12 == internal.template_string([x]) }"
        );
        // units.parse_bytes's argument checked first (but a constant of another type).
        assert_eq!(
            rewrite("package p\nx := units.parse_bytes(input.s)\ny := units.parse_bytes(1)"),
            "package p\nx := units.parse_bytes(internal.units_parse_bytes_check(input.s))\ny := units.parse_bytes(1)"
        );
        // A template string in an object comprehension's head: moved into its body.
        assert_eq!(
            rewrite("package p\nx := {internal.template_string([k]): 1 | some k in input}"),
            "package p\nx := {__portcullis_k15: __portcullis_v15 | some k in input; __portcullis_k15 := internal.template_string([k]); __portcullis_v15 := 1}"
        );
        for unchanged in [
            // A replacement of data or input, or by the policy's own function.
            "package p\nx := input.a with input.a as count",
            "package p\nx := f(1) with f as g\nf(_) := 1\ng(_) := 2",
            // The function form, natives (regorus handles theirs), other arities.
            "package p\nx := io.jwt.decode(input.t)",
            "package p\nx if count(input, n)",
            "package p\nx if io.jwt.decode(input.t, [h, p, s], 1)",
            // Not a statement: an argument of another call.
            "package p\nx if f(crypto.md5(\"a\", y))\nf(_) := true",
            // Does not parse: left to regorus.
            "package p\nx if io.jwt.decode(input.t, [h, p, s]",
        ] {
            assert_eq!(rewrite(unchanged), unchanged);
        }
    }
}
