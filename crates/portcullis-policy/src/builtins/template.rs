//! OPA 1.x template strings, `$"text {expr} text"` and raw `` $`text {expr}` ``, which
//! regorus's lexer does not know.
//!
//! [`rewrite_templates`] writes each one as OPA's compiler does: a call of
//! `internal.template_string` on an array of its parts, each text a string literal and
//! each expression a set comprehension of its values (`{__tmpl0__ | __tmpl0__ := expr}`),
//! so that an undefined expression is an empty set and one with several values a set of
//! them. [`template_string`] then renders the parts as OPA does: a string bare, any other
//! value as its Rego text, an empty set as `<undefined>`, and a set of more than one value
//! as the error `template-strings must not produce multiple outputs` (an error even
//! without strict built-in errors, as OPA halts).
//!
//! The rewrite keeps every line break of the template (text and expressions are kept as
//! written), so lines keep their numbers; what follows on a line moves by a few columns.

use std::fmt::Write as _;

use regorus::Value;

use super::{Args, BuiltinError};

/// The name of the internal built-in the rewrite calls.
pub(super) const NAME: &str = "internal.template_string";

/// How deep template strings may nest in one another's expressions.
const MAX_DEPTH: usize = 16;

/// Why a template string cannot be rewritten: the module is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    /// The source ends (or, in `$"…"`, the line does) before the closing quote.
    #[error("{line}:{column}: unterminated template string")]
    Unterminated { line: usize, column: usize },
    /// `{}` or `{ }`: no expression.
    #[error("{line}:{column}: empty template expression")]
    EmptyExpression { line: usize, column: usize },
    /// Template strings nested more than [`MAX_DEPTH`] deep.
    #[error("{line}:{column}: template strings nest more than {MAX_DEPTH} deep")]
    TooDeep { line: usize, column: usize },
}

/// `source` with every template string written as a call of [`NAME`]; `Ok(None)` when it
/// has none (outside comments and string literals).
///
/// # Errors
///
/// A template string that OPA would not accept, or that cannot be rewritten exactly.
pub(crate) fn rewrite_templates(source: &str) -> Result<Option<String>, TemplateError> {
    if !source.contains("$\"") && !source.contains("$`") {
        return Ok(None);
    }
    let mut prefix = String::from("__tmpl");
    while source.contains(prefix.as_str()) {
        prefix.push('x');
    }
    let mut rewriter = Rewriter {
        source,
        prefix,
        next_var: 0,
        found: false,
    };
    let out = rewriter.code(0, source.len(), 0, false)?.0;
    Ok(rewriter.found.then_some(out))
}

struct Rewriter<'s> {
    source: &'s str,
    /// Prefix of the comprehension variables (one the source does not contain).
    prefix: String,
    next_var: usize,
    /// Whether a template string was seen.
    found: bool,
}

impl Rewriter<'_> {
    /// Line and column (from 1, in characters) of byte `at`.
    fn position(&self, at: usize) -> (usize, usize) {
        position(self.source, at)
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.source.as_bytes().get(at).copied()
    }

    /// Rego code from `start`, templates rewritten, up to `end` or (when `in_expr`) the
    /// `}` closing a template expression: the new text and where the code ended (at that
    /// `}`, or `end`).
    fn code(
        &mut self,
        start: usize,
        end: usize,
        depth: usize,
        in_expr: bool,
    ) -> Result<(String, usize), TemplateError> {
        let mut out = String::new();
        let mut copied = start;
        let mut i = start;
        let mut braces = 0usize;
        while i < end {
            let Some(b) = self.byte(i) else { break };
            match b {
                b'#' => i = self.skip_until(i + 1, end, b"\n"),
                b'"' => i = self.skip_string(i + 1, end),
                b'`' => i = self.skip_until(i + 1, end, b"`").saturating_add(1),
                b'$' if matches!(self.byte(i + 1), Some(b'"' | b'`')) => {
                    let (line, column) = self.position(i);
                    if depth >= MAX_DEPTH {
                        return Err(TemplateError::TooDeep { line, column });
                    }
                    out.push_str(self.source.get(copied..i).unwrap_or_default());
                    let (text, next) = self.template(i, end, depth + 1)?;
                    out.push_str(&text);
                    self.found = true;
                    i = next;
                    copied = i;
                }
                b'{' => {
                    braces += 1;
                    i += 1;
                }
                b'}' if in_expr && braces == 0 => {
                    out.push_str(self.source.get(copied..i).unwrap_or_default());
                    return Ok((out, i));
                }
                b'}' => {
                    braces = braces.saturating_sub(1);
                    i += 1;
                }
                _ => i += 1,
            }
        }
        if in_expr {
            let (line, column) = self.position(start);
            return Err(TemplateError::Unterminated { line, column });
        }
        out.push_str(self.source.get(copied..end.min(i)).unwrap_or_default());
        Ok((out, end))
    }

    /// The index of the first of `stops` at or after `from` (or `end`).
    fn skip_until(&self, from: usize, end: usize, stops: &[u8]) -> usize {
        (from..end)
            .find(|j| self.byte(*j).is_some_and(|b| stops.contains(&b)))
            .unwrap_or(end)
    }

    /// Past the closing quote of a string literal whose content starts at `from` (or at
    /// its line's end when unterminated: regorus reports it).
    fn skip_string(&self, from: usize, end: usize) -> usize {
        let mut j = from;
        while j < end {
            match self.byte(j) {
                Some(b'\\') => j += 2,
                Some(b'"') => return j + 1,
                Some(b'\n') | None => return j,
                Some(_) => j += 1,
            }
        }
        end
    }

    /// The template string at `start` (its `$`) rewritten, and the index past it.
    fn template(
        &mut self,
        start: usize,
        end: usize,
        depth: usize,
    ) -> Result<(String, usize), TemplateError> {
        let raw = self.byte(start + 1) == Some(b'`');
        let quote = if raw { '`' } else { '"' };
        let source = self.source;
        let unterminated = || {
            let (line, column) = position(source, start);
            TemplateError::Unterminated { line, column }
        };
        let mut parts: Vec<String> = Vec::new();
        let mut text = String::new();
        let mut has_expr = false;
        let mut i = start + 2;
        // A raw template drops a line break right after its opening quote (OPA's cases:
        // `$`\nfoo`` is `"foo"`); the rewrite keeps it outside the literal.
        let leading_break = raw && self.byte(i) == Some(b'\n');
        if leading_break {
            i += 1;
        }
        loop {
            let Some(c) = self.source.get(i..end).and_then(|rest| rest.chars().next()) else {
                return Err(unterminated());
            };
            match c {
                '\\' => match self.byte(i + 1) {
                    // `\{` in both forms; `\}` only in `$"…"` (a raw template keeps it).
                    Some(b'{') => {
                        text.push('{');
                        i += 2;
                    }
                    Some(b'}') if !raw => {
                        text.push('}');
                        i += 2;
                    }
                    _ if raw => {
                        text.push('\\');
                        i += 1;
                    }
                    Some(b'\n') | None => return Err(unterminated()),
                    Some(_) => {
                        // Any other escape is the string literal's: kept as written.
                        let next = self
                            .source
                            .get(i + 1..end)
                            .and_then(|rest| rest.chars().next())
                            .ok_or_else(unterminated)?;
                        text.push('\\');
                        text.push(next);
                        i += 1 + next.len_utf8();
                    }
                },
                '\n' if !raw => return Err(unterminated()),
                '{' => {
                    if !text.is_empty() {
                        parts.push(literal(&text, raw));
                        text.clear();
                    }
                    let (expr, close) = self.code(i + 1, end, depth, true)?;
                    if expr.trim().is_empty() {
                        let (line, column) = self.position(i);
                        return Err(TemplateError::EmptyExpression { line, column });
                    }
                    let var = format!("{}{}__", self.prefix, self.next_var);
                    self.next_var += 1;
                    parts.push(format!("{{{var} | {var} := {expr}}}"));
                    has_expr = true;
                    i = close + 1;
                }
                c if c == quote => {
                    i += 1;
                    break;
                }
                c => {
                    text.push(c);
                    i += c.len_utf8();
                }
            }
        }
        if !has_expr && !leading_break {
            return Ok((literal(&text, raw), i));
        }
        if !text.is_empty() {
            parts.push(literal(&text, raw));
        }
        let open = if leading_break { "[\n" } else { "[" };
        Ok((format!("{NAME}({open}{}])", parts.join(", ")), i))
    }
}

/// Line and column (from 1, in characters) of byte `at` of `source`.
fn position(source: &str, at: usize) -> (usize, usize) {
    let before = source.get(..at).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A string literal of `text`: raw (`` `…` ``) when it came from a raw template, else
/// `"…"` with the template's escapes as written.
fn literal(text: &str, raw: bool) -> String {
    if raw {
        format!("`{text}`")
    } else {
        format!("\"{text}\"")
    }
}

/// `internal.template_string(parts)`: the parts rendered and joined.
pub(super) fn template_string(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let mut out = String::new();
    for part in args.array(0)? {
        match part {
            Value::Set(values) => {
                let mut values = values.iter();
                match (values.next(), values.next()) {
                    (None, _) => out.push_str("<undefined>"),
                    (Some(value), None) => render(&mut out, value),
                    (Some(_), Some(_)) => {
                        return Err(BuiltinError::Halt(
                            "template-strings must not produce multiple outputs".to_owned(),
                        ));
                    }
                }
            }
            Value::Array(_) | Value::Object(_) | Value::Undefined => {
                return Err(BuiltinError::Halt(format!(
                    "illegal argument type: {}",
                    super::type_name(part)
                )));
            }
            other => render(&mut out, other),
        }
    }
    Ok(Value::from(out))
}

/// One value as a template renders it: a string bare, anything else as its Rego text.
fn render(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => out.push_str(s),
        other => rego_text(out, other),
    }
}

/// A value's Rego text as OPA prints a term: strings quoted as Go quotes them, `set()`
/// for the empty set, sets and object keys in Rego's order.
fn rego_text(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(_) => {
            // The number's JSON text, as OPA keeps a number's literal.
            let _ = write!(out, "{}", value.to_json_str().unwrap_or_default());
        }
        Value::String(s) => go_quote(out, s),
        Value::Array(items) => {
            out.push('[');
            join(out, items.iter(), rego_text);
            out.push(']');
        }
        Value::Set(items) if items.is_empty() => out.push_str("set()"),
        Value::Set(items) => {
            out.push('{');
            join(out, items.iter(), rego_text);
            out.push('}');
        }
        Value::Object(map) => {
            out.push('{');
            join(out, map.iter(), |out, (key, item)| {
                rego_text(out, key);
                out.push_str(": ");
                rego_text(out, item);
            });
            out.push('}');
        }
        Value::Undefined => out.push_str("undefined"),
    }
}

fn join<T>(out: &mut String, items: impl Iterator<Item = T>, each: impl Fn(&mut String, T)) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        each(out, item);
    }
}

/// Go's `strconv.Quote`: `\a \b \f \n \r \t \v`, `\"` and `\\`; other control
/// characters as `\xNN` (below 0x80) or `\uNNNN`.
fn go_quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() && u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(source: &str) -> Result<Option<String>, TemplateError> {
        rewrite_templates(source)
    }

    #[test]
    fn templates_become_calls() {
        assert_eq!(
            rewrite("p := $\"a {x} b\\{c\\} \\\"\"")
                .ok()
                .flatten()
                .as_deref(),
            Some(
                "p := internal.template_string([\"a \", {__tmpl0__ | __tmpl0__ := x}, \" b{c} \\\"\"])"
            )
        );
        assert_eq!(
            rewrite("p := $`a\n{x}\n`\nq := 1")
                .ok()
                .flatten()
                .as_deref(),
            Some(
                "p := internal.template_string([`a\n`, {__tmpl0__ | __tmpl0__ := x}, `\n`])\nq := 1"
            )
        );
        // Nested, with braces and strings in the expression.
        assert_eq!(
            rewrite("p := $\"{$\"{a}\"} {{\"}\": 1}}\"")
                .ok()
                .flatten()
                .as_deref(),
            Some(
                "p := internal.template_string([{__tmpl1__ | __tmpl1__ := internal.template_string([{__tmpl0__ | __tmpl0__ := a}])}, \" \", {__tmpl2__ | __tmpl2__ := {\"}\": 1}}])"
            )
        );
        // A lone `}` is text (OPA's scanner does not look at it); a raw template keeps `\}`.
        assert_eq!(
            rewrite("p := $\"a}{1}\"\nq := $`\\}{1}`")
                .ok()
                .flatten()
                .as_deref(),
            Some(
                "p := internal.template_string([\"a}\", {__tmpl0__ | __tmpl0__ := 1}])\nq := internal.template_string([`\\}`, {__tmpl1__ | __tmpl1__ := 1}])"
            )
        );
        // No expression: a plain literal. A variable prefix the source does not use.
        assert_eq!(
            rewrite("p := $\"x\" # __tmpl").ok().flatten().as_deref(),
            Some("p := \"x\" # __tmpl")
        );
        assert_eq!(
            rewrite("p := $\"{a}\"\n__tmpl := 1")
                .ok()
                .flatten()
                .as_deref(),
            Some("p := internal.template_string([{__tmplx0__ | __tmplx0__ := a}])\n__tmpl := 1")
        );
        // Not templates: in comments and string literals.
        for unchanged in ["p := \"$\\\"{x}\"", "# $\"{x}\"\np := 1", "p := `$\"{x}`"] {
            assert_eq!(rewrite(unchanged), Ok(None));
        }
    }

    #[test]
    fn malformed_templates_are_refused() {
        for (source, error) in [
            (
                "p := $\"{x}",
                TemplateError::Unterminated { line: 1, column: 6 },
            ),
            (
                "p := $\"a\nb\"",
                TemplateError::Unterminated { line: 1, column: 6 },
            ),
            (
                "p := $\"{x\"",
                TemplateError::Unterminated { line: 1, column: 9 },
            ),
            (
                "p := $`{}`",
                TemplateError::EmptyExpression { line: 1, column: 8 },
            ),
        ] {
            assert_eq!(rewrite(source), Err(error), "{source}");
        }
        let deep = format!("p := {}x{}", "$\"{".repeat(20), "}\"".repeat(20));
        assert!(matches!(rewrite(&deep), Err(TemplateError::TooDeep { .. })));
    }
}
