//! `yaml.is_valid`, which is false (not an error) for a value that is not a string, as in
//! OPA; regorus's `yaml.marshal` and `yaml.unmarshal` are used as they are.

use regorus::Value;

use super::{Args, BuiltinError};

/// `yaml.is_valid(x)`: whether `x` is a string holding a YAML document.
pub(super) fn is_valid(args: &Args<'_>) -> Result<Value, BuiltinError> {
    Ok(Value::from(match args.get(0)? {
        Value::String(s) => Value::from_yaml_str(s).is_ok(),
        _ => false,
    }))
}
