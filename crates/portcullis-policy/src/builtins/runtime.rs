//! `opa.runtime()`: `{}`, as OPA answers when it is embedded without runtime information
//! (its Go API's default, and its conformance runner's). regorus's own answers its build
//! (version, features, the list of its built-ins), which this crate does not expose to
//! policies; there is no configuration or environment to show either.

use regorus::Value;

use super::{Args, BuiltinError};

/// `opa.runtime()`.
pub(super) fn runtime(_args: &Args<'_>) -> Result<Value, BuiltinError> {
    Ok(Value::new_object())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_is_empty() {
        let args = Args {
            name: "opa.runtime",
            values: &[],
        };
        assert_eq!(runtime(&args).unwrap(), Value::new_object());
    }
}
