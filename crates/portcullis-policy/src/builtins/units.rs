//! The check OPA makes before `units.parse_bytes` that regorus's own lacks: an exponent
//! of more than 6 digits (`10e10000000EiB`) is refused with `exponent too large`, where
//! regorus computes a value. The source rewrite (`rewrite.rs`) wraps the argument of every
//! `units.parse_bytes` call in [`NAME`], which answers its argument unchanged or fails as
//! OPA's `units.parse_bytes` does.

use regorus::Value;

use super::{Args, BuiltinError};

/// The internal built-in a `units.parse_bytes` argument passes through.
pub(super) const NAME: &str = "internal.units_parse_bytes_check";

/// The most digits of an exponent OPA accepts.
const MAX_EXPONENT_DIGITS: usize = 6;

/// Whether the number at the start of `s` (lower case) has an exponent of more than
/// [`MAX_EXPONENT_DIGITS`] digits, reading it as OPA does.
fn exponent_too_large(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let numeric = b.is_ascii_digit() || b == b'.';
        if !numeric && !matches!(b, b'e' | b'+' | b'-') {
            return false;
        }
        if b == b'e' {
            match bytes.get(i + 1) {
                Some(n) if n.is_ascii_digit() => {}
                Some(b'+' | b'-') => i += 1,
                _ => return false,
            }
            let digits = bytes
                .get(i + 1..)
                .unwrap_or_default()
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits > MAX_EXPONENT_DIGITS {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// `internal.units_parse_bytes_check(x)`: `x`, unless it is a string whose amount has an
/// exponent of more than 6 digits.
pub(super) fn parse_bytes_check(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let value = args.get(0)?;
    if let Value::String(s) = value {
        let s = s.to_lowercase().replace('"', "");
        if !s.contains(' ') && exponent_too_large(&s) {
            return Err(BuiltinError::Invalid {
                name: "units.parse_bytes",
                message: "exponent too large".to_owned(),
            });
        }
    }
    Ok(value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Result<Value, BuiltinError> {
        let values = [Value::from(s)];
        parse_bytes_check(&Args {
            name: NAME,
            values: &values,
        })
    }

    #[test]
    fn long_exponents_are_refused_as_opa_refuses_them() {
        let err = check("10e10000000EiB").unwrap_err();
        assert_eq!(err.to_string(), "units.parse_bytes: exponent too large");
        assert!(check("1E+1234567").is_err());
        for fine in ["10e6EiB", "1e-999999", "12MiB", "5e", "1eb", "x", ""] {
            assert_eq!(check(fine).unwrap(), Value::from(fine), "{fine}");
        }
        // Not a string: left to units.parse_bytes.
        let values = [Value::from(1)];
        assert_eq!(
            parse_bytes_check(&Args {
                name: NAME,
                values: &values
            })
            .unwrap(),
            Value::from(1)
        );
    }
}
