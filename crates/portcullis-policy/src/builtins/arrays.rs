//! `array.flatten`.

use regorus::Value;

use super::{Args, BuiltinError};

/// `array.flatten(arr)`: the items of `arr`, each array among them unpacked one level
/// (not recursively); other items are kept as they are.
pub(super) fn flatten(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let items = args.array(0)?;
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(inner) => flat.extend(inner.iter().cloned()),
            other => flat.push(other.clone()),
        }
    }
    Ok(Value::from(flat))
}
