//! The output-argument form of calls to this crate's built-ins, which regorus supports
//! only for its own: `io.jwt.decode(t, [h, p, s])` is OPA's `[h, p, s] = io.jwt.decode(t)`.
//!
//! A source is parsed (as regorus will parse it); each statement (or `not` statement)
//! that calls a built-in of [`EXTENSIONS`](super::EXTENSIONS) which regorus lacks with one
//! argument more than it takes is rewritten to that unification. The rewrite moves the
//! call's own text only: other lines keep their numbers (line breaks inside the call are
//! kept at its end), and only what follows it on its line moves, by a column or so.

use std::borrow::Cow;

use regorus::unstable::{Expr, Literal, LiteralStmt, Parser, Query, Rule, RuleHead, Source};

/// Whether `name` is a built-in added here that regorus does not have itself, and its
/// arity.
fn added_arity(name: &str) -> Option<usize> {
    super::EXTENSIONS
        .iter()
        .find(|e| e.name == name && !e.native)
        .map(|e| usize::from(e.arity))
}

/// `source` with every output-argument call to an added built-in written as a
/// unification; the source as it is when there is none, or when it does not parse (regorus
/// then reports why).
pub(crate) fn rewrite_output_arguments(source: Cow<'_, str>, v0: bool) -> Cow<'_, str> {
    // A cheap look first: most policies call none of them.
    if !super::EXTENSIONS
        .iter()
        .any(|e| !e.native && source.contains(e.name))
    {
        return source;
    }
    let Some(calls) = output_calls(&source, v0) else {
        return source;
    };
    if calls.is_empty() {
        return source;
    }
    let mut out = String::with_capacity(source.len() + 8 * calls.len());
    let mut copied = 0;
    for call in &calls {
        let (Some(before), Some(new)) = (source.get(copied..call.start), call.rewrite(&source))
        else {
            return source;
        };
        out.push_str(before);
        out.push_str(&new);
        copied = call.end;
    }
    match source.get(copied..) {
        Some(rest) => {
            out.push_str(rest);
            Cow::Owned(out)
        }
        None => source,
    }
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
    fn rewrite(&self, source: &str) -> Option<String> {
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
        Some(text)
    }
}

/// The output-argument calls of `source`, in order and not nested in one another; `None`
/// if it does not parse.
fn output_calls(source: &str, v0: bool) -> Option<Vec<OutputCall>> {
    let parsed = Source::from_contents("<rewrite>".to_owned(), source.to_owned()).ok()?;
    let mut parser = Parser::new(&parsed).ok()?;
    if !v0 {
        parser.enable_rego_v1().ok()?;
    }
    let module = parser.parse().ok()?;
    let mut calls = Vec::new();
    for rule in &module.policy {
        match rule.as_ref() {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } | RuleHead::Func { refr, assign, .. } => {
                        expr(refr, &mut calls);
                        if let Some(assign) = assign {
                            expr(&assign.value, &mut calls);
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        expr(refr, &mut calls);
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
            Rule::Default { value, .. } => expr(value, &mut calls),
        }
    }
    calls.sort_by_key(|c| c.start);
    let mut kept: Vec<OutputCall> = Vec::with_capacity(calls.len());
    for call in calls {
        if kept.last().is_none_or(|last| call.start >= last.end) {
            kept.push(call);
        }
    }
    Some(kept)
}

fn query(query: &Query, calls: &mut Vec<OutputCall>) {
    for stmt in &query.stmts {
        statement(stmt, calls);
    }
}

fn statement(stmt: &LiteralStmt, calls: &mut Vec<OutputCall>) {
    for with in &stmt.with_mods {
        expr(&with.r#as, calls);
    }
    match &stmt.literal {
        Literal::Expr { expr: e, .. } | Literal::NotExpr { expr: e, .. } => {
            if let Some(call) = output_call(e) {
                calls.push(call);
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

/// Statements inside `e` (in comprehensions).
fn expr(e: &Expr, calls: &mut Vec<OutputCall>) {
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
            key,
            value,
            query: q,
            ..
        } => {
            expr(key, calls);
            expr(value, calls);
            query(q, calls);
        }
        Expr::Call { fcn, params, .. } => {
            expr(fcn, calls);
            for param in params {
                expr(param, calls);
            }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(source: &str) -> String {
        rewrite_output_arguments(Cow::Borrowed(source), false).into_owned()
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
        for unchanged in [
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
