//! `strings.replace_n` (as Go's `strings.Replacer`, which OPA uses; regorus chains the
//! replacements instead) and `strings.split_n`.

use std::collections::BTreeMap;

use regorus::Value;

use super::{Args, BuiltinError};

/// `strings.replace_n(patterns, value)`: `value` with every occurrence of a key of
/// `patterns` replaced by its value, as Go's `strings.NewReplacer` with the keys in sorted
/// order: the text is scanned once from the left; at each position the first key (in
/// sorted order) found there is replaced and the scan goes on after it, so replaced text is
/// never scanned again. The empty key matches between any two characters (and at both
/// ends), once per position.
pub(super) fn replace_n(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let patterns: &BTreeMap<Value, Value> = args.object(0)?;
    let text = args.string(1)?;
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(patterns.len());
    for (key, value) in patterns {
        match (key, value) {
            (Value::String(k), Value::String(v)) => pairs.push((k, v)),
            _ => {
                return Err(
                    args.invalid("operand 1 must be an object of strings (keys and values)")
                );
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    // Whether the empty key matched at this position already (it then yields to the
    // others there, and the scan moves on).
    let mut empty_matched = false;
    loop {
        let rest = text.get(i..).unwrap_or_default();
        let found = pairs
            .iter()
            .find(|(key, _)| rest.starts_with(key) && !(key.is_empty() && empty_matched));
        if out.len() > MAX_OUTPUT {
            return Err(args.invalid(format!(
                "the result would be longer than {MAX_OUTPUT} bytes"
            )));
        }
        match found {
            Some((key, value)) => {
                out.push_str(value);
                i += key.len();
                empty_matched = key.is_empty();
                if !key.is_empty() {
                    continue;
                }
                if rest.is_empty() {
                    break;
                }
            }
            None => {
                empty_matched = false;
                let Some(c) = rest.chars().next() else {
                    break;
                };
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    Ok(Value::from(out))
}

/// The longest result of `strings.replace_n` (an empty key inserts its value at every
/// position).
const MAX_OUTPUT: usize = 16 << 20;

/// `strings.split_n(value, delimiter, n)`: `value` split at `delimiter` into at most `n`
/// parts, the last holding the rest (`n` > 0, as Go's `strings.SplitN`); the last `-n`
/// parts of the whole split (`n` < 0); no parts (`n` = 0). An empty delimiter splits
/// between characters.
pub(super) fn split_n(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let text = args.string(0)?;
    let delimiter = args.string(1)?;
    let n = args
        .get(2)?
        .as_i64()
        .map_err(|_| args.wrong_type(2, "integer"))?;
    let parts: Vec<String> = if n == 0 {
        Vec::new()
    } else if n > 0 {
        let limit = usize::try_from(n).unwrap_or(usize::MAX);
        if delimiter.is_empty() {
            let chars: Vec<char> = text.chars().collect();
            let mut parts: Vec<String> = chars
                .iter()
                .take(limit.saturating_sub(1))
                .map(char::to_string)
                .collect();
            let rest: String = chars.iter().skip(parts.len()).collect();
            if !rest.is_empty() {
                parts.push(rest);
            }
            parts
        } else {
            text.splitn(limit, delimiter).map(str::to_owned).collect()
        }
    } else {
        let all: Vec<String> = if delimiter.is_empty() {
            text.chars().map(String::from).collect()
        } else {
            text.split(delimiter).map(str::to_owned).collect()
        };
        let keep = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
        let skip = all.len().saturating_sub(keep);
        all.into_iter().skip(skip).collect()
    };
    Ok(Value::from(
        parts.into_iter().map(Value::from).collect::<Vec<_>>(),
    ))
}
