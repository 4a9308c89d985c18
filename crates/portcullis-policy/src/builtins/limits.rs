//! Built-ins that build a large value from small arguments, capped before they allocate.
//!
//! regorus checks an evaluation's time limit between steps, never inside one built-in
//! call: `numbers.range(1, 400000000)` would allocate gigabytes, for minutes, in one step.
//! These replacements of regorus's own compute the size of their result first and refuse
//! one above [`MAX_ELEMENTS`] elements or [`MAX_BYTES`] bytes: a built-in error
//! (undefined, or an evaluation error under `strict_builtin_errors`), as OPA's own
//! built-in errors are.
//!
//! - `numbers.range(a, b)` and `numbers.range_step(a, b, step)`: at most [`MAX_ELEMENTS`]
//!   numbers.
//! - `concat(delimiter, strings)`: `delimiter` repeated between every two strings; at most
//!   [`MAX_BYTES`].
//! - `replace(s, old, new)`: an empty `old` inserts `new` around every character; at most
//!   [`MAX_BYTES`].
//!
//! `sprintf`, `strings.replace_n` and `regex.globs_match` have caps of their own
//! (sprintf.rs, strings.rs, globs.rs). Other built-ins' results are no larger than their
//! arguments, which the evaluation's own limits bound.

use regorus::Value;

use super::{Args, BuiltinError};

/// The most elements a range built-in returns: 1,000,000.
pub(crate) const MAX_ELEMENTS: u64 = 1_000_000;

/// The longest string `concat` or `replace` returns: 16 MiB.
pub(crate) const MAX_BYTES: usize = 16 << 20;

/// Argument `i`, which must be an integer that fits in 64 bits.
fn integer(args: &Args<'_>, i: usize) -> Result<i64, BuiltinError> {
    let value = args.get(i)?;
    match value {
        Value::Number(n) if n.is_integer() => value
            .as_i64()
            .map_err(|_| args.invalid(format!("operand {} is too large", i + 1))),
        Value::Number(_) => Err(args.invalid(format!(
            "operand {} must be integer number but got floating-point number",
            i + 1
        ))),
        _ => Err(args.wrong_type(i, "number")),
    }
}

/// The numbers from `from` to `to` inclusive, `step` apart, counting down when `to` is
/// below `from`; refused above [`MAX_ELEMENTS`].
fn stepped(args: &Args<'_>, from: i64, to: i64, step: i64) -> Result<Value, BuiltinError> {
    let span = i128::from(to) - i128::from(from);
    let count = span.unsigned_abs() / step.unsigned_abs().max(1) as u128 + 1;
    if count > u128::from(MAX_ELEMENTS) {
        return Err(args.invalid(format!(
            "the result would have {count} elements, above the cap of {MAX_ELEMENTS}"
        )));
    }
    let step = if span < 0 {
        -i128::from(step)
    } else {
        i128::from(step)
    };
    let values = (0..count)
        .filter_map(|k| i64::try_from(i128::from(from) + step * k as i128).ok())
        .map(Value::from)
        .collect::<Vec<_>>();
    Ok(Value::from(values))
}

/// `numbers.range(a, b)`: the integers from `a` to `b` inclusive (counting down when `b`
/// is below `a`).
pub(super) fn range(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let from = integer(args, 0)?;
    let to = integer(args, 1)?;
    stepped(args, from, to, 1)
}

/// `numbers.range_step(a, b, step)`: the integers from `a` towards `b`, `step` (a positive
/// integer) apart, `b` included when a step lands on it.
pub(super) fn range_step(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let from = integer(args, 0)?;
    let to = integer(args, 1)?;
    let step = integer(args, 2)?;
    if step <= 0 {
        return Err(args.invalid("step must be a positive integer"));
    }
    stepped(args, from, to, step)
}

/// `concat(delimiter, strings)`: the strings of an array (in order) or a set (sorted),
/// joined by `delimiter`.
pub(super) fn concat(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let delimiter = args.string(0)?;
    let items: Vec<&Value> = match args.get(1)? {
        Value::Array(items) => items.iter().collect(),
        Value::Set(items) => items.iter().collect(),
        _ => return Err(args.wrong_type(1, "one of {array, set}")),
    };
    let mut strings = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => strings.push(s.as_ref()),
            _ => return Err(args.invalid("operand 2 must be a collection of strings")),
        }
    }
    let joints = strings.len().saturating_sub(1);
    let size = strings
        .iter()
        .fold(delimiter.len().saturating_mul(joints), |sum, s| {
            sum.saturating_add(s.len())
        });
    if size > MAX_BYTES {
        return Err(too_long(args, size));
    }
    Ok(Value::from(strings.join(delimiter)))
}

/// `replace(s, old, new)`: `s` with every occurrence of `old` replaced by `new` (an empty
/// `old` matches before every character and at the end, as Go's `strings.ReplaceAll`).
pub(super) fn replace(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let text = args.string(0)?;
    let old = args.string(1)?;
    let new = args.string(2)?;
    let matches = if old.is_empty() {
        text.chars().count().saturating_add(1)
    } else {
        text.matches(old).count()
    };
    let size = text
        .len()
        .saturating_sub(matches.saturating_mul(old.len()))
        .saturating_add(matches.saturating_mul(new.len()));
    if size > MAX_BYTES {
        return Err(too_long(args, size));
    }
    Ok(Value::from(text.replace(old, new)))
}

fn too_long(args: &Args<'_>, size: usize) -> BuiltinError {
    args.invalid(format!(
        "the result would be {size} bytes, above the cap of {MAX_BYTES}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        name: &'static str,
        f: fn(&Args<'_>) -> Result<Value, BuiltinError>,
        values: &[Value],
    ) -> Result<Value, BuiltinError> {
        f(&Args { name, values })
    }

    fn ints(values: &[i64]) -> Value {
        Value::from(values.iter().copied().map(Value::from).collect::<Vec<_>>())
    }

    #[test]
    fn ranges_count_up_down_and_in_steps() {
        let r = |a: i64, b: i64| call("numbers.range", range, &[a.into(), b.into()]).unwrap();
        assert_eq!(r(1, 3), ints(&[1, 2, 3]));
        assert_eq!(r(3, 1), ints(&[3, 2, 1]));
        assert_eq!(r(2, 2), ints(&[2]));
        let s = |a: i64, b: i64, c: i64| {
            call(
                "numbers.range_step",
                range_step,
                &[a.into(), b.into(), c.into()],
            )
        };
        assert_eq!(s(0, 10, 4).unwrap(), ints(&[0, 4, 8]));
        assert_eq!(s(10, 0, 5).unwrap(), ints(&[10, 5, 0]));
        assert!(s(0, 10, 0).is_err());
        assert!(call("numbers.range", range, &[Value::from(1.5), 3.into()]).is_err());
    }

    #[test]
    fn results_above_the_caps_are_refused_before_they_are_built() {
        let err = call("numbers.range", range, &[1.into(), 400_000_000.into()]).unwrap_err();
        assert!(err.to_string().contains("above the cap"), "{err}");
        assert!(call("numbers.range", range, &[i64::MIN.into(), i64::MAX.into()]).is_err());
        assert!(
            call(
                "numbers.range_step",
                range_step,
                &[0.into(), 100_000_000.into(), 10.into()]
            )
            .is_err()
        );
        let big = Value::from("x".repeat(1 << 12));
        let many = Value::from(vec![Value::from("a"); 1 << 13]);
        assert!(call("concat", concat, &[big.clone(), many]).is_err());
        assert_eq!(
            call("concat", concat, &["-".into(), ints(&[]).clone()]).unwrap(),
            Value::from("")
        );
        assert!(call("replace", replace, &[big.clone(), "".into(), big]).is_err());
        assert_eq!(
            call("replace", replace, &["ab".into(), "".into(), "-".into()]).unwrap(),
            Value::from("-a-b-")
        );
        assert_eq!(
            call(
                "replace",
                replace,
                &["aXbX".into(), "X".into(), "YY".into()]
            )
            .unwrap(),
            Value::from("aYYbYY")
        );
    }
}
