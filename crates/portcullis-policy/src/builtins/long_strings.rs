//! String literals too long for regorus's lexer, which refuses any line wider than 1024
//! columns ("line exceeds maximum column width of 1024", a constant of its lexer with no
//! setting) where OPA has no limit: a PEM certificate, a key or a JWT written as one
//! string literal is common in policies and in OPA's own test cases.
//!
//! [`hoist_long_strings`] moves each string literal (double-quoted, or raw on one line) of
//! more than [`MIN_HOISTED`] bytes on a line wider than [`MAX_LINE`] into a function of one ignored argument defined at the end
//! of the module, whose value is the same string built by `concat` from pieces of at most
//! [`PIECE`] bytes, one per line; the literal becomes a call of it
//! (`__portcullis_long_string_<hash>__(0)`). Its name comes from a hash of the module and
//! the literal, so that no two modules define the same function, and functions are not
//! part of `data`, so the value of a package is unchanged. Lines before the end of the module keep their numbers; what follows a
//! hoisted literal on its line moves left.
//!
//! The check (`crate::check`) reads such a call as the string constant it replaces. A
//! literal in a `default` rule (whose value must be constant for regorus) is left as it
//! is, as is anything else on an over-wide line: regorus then refuses the line as before.

use std::fmt::Write as _;

/// The widest line (in bytes, a tab counting as 4) left as it is: regorus's limit, 1024
/// columns, with some margin for its counting.
const MAX_LINE: usize = 1000;

/// The shortest literal hoisted off an over-wide line.
const MIN_HOISTED: usize = 64;

/// The most bytes of a literal's text per line of the hoisted function.
const PIECE: usize = 512;

/// The prefix of the hoisted functions' names.
pub(crate) const PREFIX: &str = "__portcullis_long_string_";

/// Whether `name` is the name of a hoisted literal's function.
pub(crate) fn is_hoisted(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix("__"))
        .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `source` with the long string literals of its over-wide lines hoisted into functions
/// at its end; `None` when it has no line over [`MAX_LINE`] or nothing to hoist.
pub(crate) fn hoist_long_strings(source: &str) -> Option<String> {
    if !source.lines().any(|line| width(line) > MAX_LINE) {
        return None;
    }
    let literals = string_literals(source);
    let mut out = String::with_capacity(source.len() + source.len() / 8);
    let mut functions = String::new();
    let mut defined = std::collections::BTreeSet::new();
    let mut copied = 0;
    for (start, end) in literals {
        let Some(text) = source.get(start..end) else {
            continue;
        };
        let (line_start, line_end) = line_around(source, start);
        let Some(line) = source.get(line_start..line_end) else {
            continue;
        };
        if text.len() < MIN_HOISTED
            || width(line) <= MAX_LINE
            || line
                .trim_start()
                .strip_prefix("default")
                .is_some_and(|rest| rest.starts_with([' ', '\t']))
        {
            continue;
        }
        let Some(before) = source.get(copied..start) else {
            continue;
        };
        let name = function_name(source, text);
        out.push_str(before);
        let _ = write!(out, "{name}(0)");
        copied = end;
        if defined.insert(name.clone()) {
            let content = text
                .get(1..text.len().saturating_sub(1))
                .unwrap_or_default();
            // A raw string's text, escaped as a string literal's.
            let escaped = if text.starts_with('`') {
                serde_json::to_string(content).unwrap_or_default()
            } else {
                String::new()
            };
            let content = escaped
                .get(1..escaped.len().saturating_sub(1))
                .unwrap_or(content);
            let _ = write!(functions, "\n{name}(_) := concat(\"\", [");
            for piece in pieces(content) {
                let _ = write!(functions, "\n\"{piece}\",");
            }
            functions.push_str("\n])\n");
        }
    }
    if functions.is_empty() {
        return None;
    }
    out.push_str(source.get(copied..).unwrap_or_default());
    out.push('\n');
    out.push_str(&functions);
    Some(out)
}

/// The width of `line` as regorus counts it, roughly: bytes, a tab counting as 4.
fn width(line: &str) -> usize {
    line.len() + 3 * line.bytes().filter(|b| *b == b'\t').count()
}

/// The byte range of the line holding byte `at`, without its line break.
fn line_around(source: &str, at: usize) -> (usize, usize) {
    let bytes = source.as_bytes();
    let start = bytes
        .get(..at)
        .and_then(|before| before.iter().rposition(|b| *b == b'\n'))
        .map_or(0, |i| i + 1);
    let end = bytes
        .get(at..)
        .and_then(|after| after.iter().position(|b| *b == b'\n'))
        .map_or(source.len(), |i| at + i);
    (start, end)
}

/// `PREFIX` + the first 16 hex digits of the SHA-256 of the module and the literal + `__`:
/// one name per literal of a module, another in each module (regorus cannot evaluate a
/// function defined in two modules: "binding plan not found for parameter").
fn function_name(source: &str, literal: &str) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(&(source.len() as u64).to_be_bytes());
    context.update(source.as_bytes());
    context.update(literal.as_bytes());
    let digest = context.finish();
    let hash = hex::encode(digest.as_ref().get(..8).unwrap_or_default());
    format!("{PREFIX}{hash}__")
}

/// The byte ranges (quotes included) of the complete string literals of `source` outside
/// comments, double-quoted or raw (those on one line), in order.
fn string_literals(source: &str) -> Vec<(usize, usize)> {
    let bytes = source.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(b) = bytes.get(i) {
        match b {
            b'#' => {
                i = next_of(bytes, i + 1, b"\n");
            }
            b'`' => {
                let end = next_of(bytes, i + 1, b"`").saturating_add(1);
                // A raw string on one line (one spanning lines is regorus's to read).
                if end <= bytes.len() && !bytes.get(i..end).is_some_and(|raw| raw.contains(&b'\n'))
                {
                    found.push((i, end));
                }
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                let end = loop {
                    match bytes.get(j) {
                        Some(b'\\') => j += 2,
                        Some(b'"') => break Some(j + 1),
                        Some(b'\n') | None => break None,
                        Some(_) => j += 1,
                    }
                };
                match end {
                    Some(end) => {
                        found.push((i, end));
                        i = end;
                    }
                    // Unterminated: regorus reports it.
                    None => i = j,
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// The index of the first of `stops` at or after `from` (or the end).
fn next_of(bytes: &[u8], from: usize, stops: &[u8]) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| rest.iter().position(|b| stops.contains(b)))
        .map_or(bytes.len(), |i| from + i)
}

/// `text` (a literal's content, escapes as written) in pieces of at most [`PIECE`] bytes,
/// never splitting an escape sequence or a character.
fn pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut at = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        // The length of this unit: an escape sequence or one character.
        let unit = if c == '\\' {
            match chars.next() {
                Some((_, 'u')) => {
                    for _ in 0..4 {
                        chars.next();
                    }
                    6
                }
                Some((_, escaped)) => 1 + escaped.len_utf8(),
                None => 1,
            }
        } else {
            c.len_utf8()
        };
        if i + unit - start > PIECE && i > start {
            pieces.extend(text.get(start..i));
            start = i;
        }
        at = i + unit;
    }
    pieces.extend(text.get(start..at.min(text.len())));
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_left_alone() {
        assert_eq!(hoist_long_strings("package p\nx := \"abc\"\n"), None);
        let long_comment = format!("package p\n# {}\nx := 1\n", "c".repeat(2000));
        assert_eq!(hoist_long_strings(&long_comment), None);
        let many_short = format!("package p\nx := [{}]\n", "\"ab\", ".repeat(400));
        assert_eq!(hoist_long_strings(&many_short), None);
    }

    #[test]
    fn long_literals_become_calls_of_functions_at_the_end() {
        let long = format!(
            "-----BEGIN X-----\\n{}\\u00e9\\n-----END X-----",
            "A".repeat(1500)
        );
        let source = format!("package p\n\nx := \"{long}\" # c\ny := 1\n");
        let out = hoist_long_strings(&source).unwrap();
        let name = function_name(&source, &format!("\"{long}\""));
        assert!(is_hoisted(&name));
        assert!(out.starts_with(&format!("package p\n\nx := {name}(0) # c\ny := 1\n")));
        assert!(out.lines().all(|l| width(l) <= MAX_LINE), "{out}");
        // The pieces join to the literal's text, escapes unsplit.
        let joined: String = out
            .lines()
            .filter_map(|l| l.strip_prefix('"').and_then(|l| l.strip_suffix("\",")))
            .collect();
        assert_eq!(joined, long);
        // The same literal twice: one function.
        // A raw string on one line, its backslashes and quotes escaped in the pieces.
        let raw = format!("package p\nx := `{}\\\"\t`\n", "R".repeat(1100));
        let out = hoist_long_strings(&raw).unwrap();
        assert!(out.contains("\\\\\\\"\\t\","), "{out}");
        assert!(out.lines().all(|l| width(l) <= MAX_LINE), "{out}");
        let twice = format!("package p\nx := [\"{long}\", \"{long}\"]\n");
        let out = hoist_long_strings(&twice).unwrap();
        let name = function_name(&twice, &format!("\"{long}\""));
        assert_eq!(out.matches(&format!("{name}(_) :=")).count(), 1);
        assert_eq!(out.matches(&format!("{name}(0)")).count(), 2);
    }

    #[test]
    fn defaults_comments_and_raw_strings_are_left_alone() {
        let long = "B".repeat(1100);
        for source in [
            format!("package p\ndefault x := \"{long}\"\n"),
            format!("package p\nx := `\n{long}`\n"),
            format!("package p\nx := 1 # \"{long}\"\n"),
        ] {
            assert_eq!(hoist_long_strings(&source), None, "{source}");
        }
    }

    #[test]
    fn pieces_keep_escapes_whole() {
        let text = format!("{}\\u0041{}\\n", "a".repeat(PIECE - 3), "b".repeat(PIECE));
        let parts = pieces(&text);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.len() <= PIECE && !p.ends_with('\\')));
        assert!(parts.get(1).is_some_and(|p| p.starts_with("\\u0041")));
        assert!(!is_hoisted("__portcullis_long_string_xyz__"));
    }
}
