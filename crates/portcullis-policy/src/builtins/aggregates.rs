//! `count`, which counts a string's characters as OPA does.

use regorus::Value;

use super::{Args, BuiltinError};

/// `count(x)`: the items of an array, set or object, or the Unicode code points of a
/// string (OPA counts runes: `count("😀")` is 1, where regorus counts UTF-16 units).
pub(super) fn count(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let n = match args.get(0)? {
        Value::Array(items) => items.len(),
        Value::Set(items) => items.len(),
        Value::Object(map) => map.len(),
        Value::String(s) => s.chars().count(),
        _ => return Err(args.wrong_type(0, "one of array, object, set or string")),
    };
    Ok(Value::from(n))
}
