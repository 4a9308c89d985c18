//! `regex.globs_match`: whether two globs of OPA's restricted regex syntax match a common
//! non-empty string.
//!
//! The syntax (OPA's, after the glob-intersection library it uses): `.` is any character,
//! `[…]` a class of characters and `a-z` ranges, `\` escapes the next character, `+` and
//! `*` repeat the token before them one or more / zero or more times; everything else is
//! itself. A glob matches whole strings (as if anchored with `^…$`).

use std::collections::{BTreeSet, VecDeque};

use regorus::Value;

use super::{Args, BuiltinError};

/// The characters one token matches.
#[derive(Debug, Clone, PartialEq)]
enum Class {
    Any,
    /// Inclusive ranges.
    Ranges(Vec<(char, char)>),
}

impl Class {
    fn meets(&self, other: &Class) -> bool {
        match (self, other) {
            (Class::Any, Class::Any) => true,
            (Class::Any, Class::Ranges(r)) | (Class::Ranges(r), Class::Any) => !r.is_empty(),
            (Class::Ranges(a), Class::Ranges(b)) => a
                .iter()
                .any(|(lo, hi)| b.iter().any(|(lo2, hi2)| lo <= hi2 && lo2 <= hi)),
        }
    }
}

/// One token: its class, and whether it repeats (`*`: zero or more times).
#[derive(Debug, Clone, PartialEq)]
struct Token {
    class: Class,
    star: bool,
}

/// The next character of `chars` and whether it was escaped with `\`.
fn next_char(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<Option<(char, bool)>, String> {
    match chars.next() {
        None => Ok(None),
        Some('\\') => match chars.next() {
            Some(c) => Ok(Some((c, true))),
            None => Err("input ends with a \\ (escape) character".to_owned()),
        },
        Some(c) => Ok(Some((c, false))),
    }
}

/// A glob's tokens, `x+` written as `x x*`.
fn tokenize(glob: &str) -> Result<Vec<Token>, String> {
    let mut chars = glob.chars().peekable();
    let mut tokens: Vec<Token> = Vec::new();
    // Whether the last token may take a `+` or `*` (it exists and has none yet).
    let mut may_repeat = false;
    while let Some((c, escaped)) = next_char(&mut chars)? {
        let class = match (c, escaped) {
            ('.', false) => Class::Any,
            (']', false) => return Err("set-close ']' with no preceding '['".to_owned()),
            ('+' | '*', false) => {
                let Some(last) = tokens.last().cloned().filter(|_| may_repeat) else {
                    return Err(format!("flag '{c}' must be preceded by a non-flag"));
                };
                if c == '*' {
                    if let Some(last) = tokens.last_mut() {
                        last.star = true;
                    }
                } else {
                    tokens.push(Token { star: true, ..last });
                }
                may_repeat = false;
                continue;
            }
            ('[', false) => set(&mut chars)?,
            (c, _) => Class::Ranges(vec![(c, c)]),
        };
        tokens.push(Token { class, star: false });
        may_repeat = true;
    }
    Ok(tokens)
}

/// A character class after its `[`, up to and including its `]`.
fn set(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Class, String> {
    let mut ranges = Vec::new();
    // The previous character, which a `-` may extend into a range.
    let mut previous: Option<char> = None;
    loop {
        let Some((c, escaped)) = next_char(chars)? else {
            return Err("found [ without matching ]".to_owned());
        };
        match (c, escaped) {
            (']', false) => return Ok(Class::Ranges(ranges)),
            ('-', false) => {
                let Some(low) = previous.take() else {
                    return Err(
                        "range character '-' must be preceded by a Unicode character".to_owned(),
                    );
                };
                let Some((high, escaped)) = next_char(chars)? else {
                    return Err(
                        "range character '-' must be followed by a Unicode character".to_owned(),
                    );
                };
                if !escaped && (high == ']' || high == '-') {
                    return Err(
                        "range character '-' cannot be followed by a special symbol".to_owned()
                    );
                }
                if high < low {
                    return Err(format!(
                        "range is out of order: '{high}' comes before '{low}' in Unicode"
                    ));
                }
                ranges.push((low, high));
            }
            (c, _) => {
                ranges.push((c, c));
                previous = Some(c);
            }
        }
    }
}

/// Whether some non-empty string matches both token sequences: a search over pairs of
/// positions in the two, where a starred token may be skipped or repeated.
fn intersect(a: &[Token], b: &[Token]) -> bool {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([(0usize, 0usize, false)]);
    while let Some(state) = queue.pop_front() {
        if !seen.insert(state) {
            continue;
        }
        let (i, j, consumed) = state;
        if i == a.len() && j == b.len() && consumed {
            return true;
        }
        let (ta, tb) = (a.get(i), b.get(j));
        // Skip a starred token (zero repetitions).
        if ta.is_some_and(|t| t.star) {
            queue.push_back((i + 1, j, consumed));
        }
        if tb.is_some_and(|t| t.star) {
            queue.push_back((i, j + 1, consumed));
        }
        // Consume one character both tokens match; a starred token may match again.
        if let (Some(ta), Some(tb)) = (ta, tb)
            && ta.class.meets(&tb.class)
        {
            let ni = if ta.star { i } else { i + 1 };
            let nj = if tb.star { j } else { j + 1 };
            queue.push_back((ni, nj, true));
        }
    }
    false
}

/// `regex.globs_match(glob1, glob2)`.
pub(super) fn globs_match(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let a = tokenize(args.string(0)?).map_err(|e| args.invalid(format!("glob 1: {e}")))?;
    let b = tokenize(args.string(1)?).map_err(|e| args.invalid(format!("glob 2: {e}")))?;
    // The search visits up to twice (tokens of one + 1) × (tokens of the other + 1) states.
    if (a.len() + 1).saturating_mul(b.len() + 1) > MAX_TOKEN_PAIRS {
        return Err(args.invalid(format!(
            "globs too long to intersect (more than {MAX_TOKEN_PAIRS} pairs of tokens)"
        )));
    }
    Ok(Value::from(intersect(&a, &b)))
}

/// The most pairs of tokens two globs may have (the search's memory grows with it).
const MAX_TOKEN_PAIRS: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(a: &str, b: &str) -> Result<bool, String> {
        Ok(intersect(&tokenize(a)?, &tokenize(b)?))
    }

    #[test]
    fn intersections() {
        assert_eq!(matches("a.a.", ".b.b"), Ok(true));
        assert_eq!(matches("[a-z]+", "[0-9]*"), Ok(false));
        assert_eq!(matches("a.a.[0-9]+z", ".b.b2359825792*594823z"), Ok(true));
        assert_eq!(matches("b.*", "bar"), Ok(true));
        assert_eq!(matches("b.*", "car"), Ok(false));
        // Only the empty string is common: not a match.
        assert_eq!(matches("a*", "b*"), Ok(false));
        assert_eq!(matches("", ""), Ok(false));
        assert_eq!(matches("a*", "a"), Ok(true));
        assert_eq!(matches("[]", "."), Ok(false));
        assert_eq!(matches("\\.", "."), Ok(true));
        assert_eq!(matches("\\.", "a"), Ok(false));
        assert_eq!(matches("[\\]x]", "\\]"), Ok(true));
        assert_eq!(matches("ab+c", "abbbc"), Ok(true));
        assert_eq!(matches("ab+c", "ac"), Ok(false));
        for bad in [
            "*a", "a**", "a+*", "]", "[a", "[-a]", "[a-]", "[z-a]", "a\\",
        ] {
            assert!(tokenize(bad).is_err(), "{bad}");
        }
    }
}
