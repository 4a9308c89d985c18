//! `http.send`, known so that tests can replace it (`with http.send as mock`), as OPA's
//! policy tests do. This crate makes no network requests: a call that reaches it fails
//! evaluation, as a request that fails does in OPA (`raise_error` defaults to true), after
//! the checks OPA makes of the request object itself.
//!
//! regorus's `http` feature provides the name (a stub answering undefined), so that its
//! `with` accepts it as a built-in to replace; this extension takes the stub's place.

use regorus::Value;

use super::{Args, BuiltinError};

/// The request parameters OPA requires.
const REQUIRED: [&str; 2] = ["method", "url"];

/// `http.send(request)`: an error, always (an evaluation error even without
/// `strict_builtin_errors`, as in OPA).
pub(super) fn send(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let request = match args.get(0)? {
        Value::Object(request) => request,
        other => {
            return Err(BuiltinError::Halt(format!(
                "http.send: operand 1 must be object but got {}",
                super::type_name(other)
            )));
        }
    };
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|key| !request.contains_key(&Value::from(**key)))
        .map(|key| format!("{key:?}"))
        .collect();
    if !missing.is_empty() {
        return Err(BuiltinError::Halt(format!(
            "http.send: missing required request parameters(s): {{{}}}",
            missing.join(", ")
        )));
    }
    Err(BuiltinError::Halt(
        "http.send: not supported: portcullis-policy makes no network requests (replace it \
         in tests with `with http.send as …`)"
            .to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_error(request: &str) -> String {
        let values = [Value::from_json_str(request).unwrap()];
        let args = Args {
            name: "http.send",
            values: &values,
        };
        send(&args).unwrap_err().to_string()
    }

    #[test]
    fn every_call_fails_with_why() {
        assert_eq!(
            send_error(r#"{"method": "get"}"#),
            r#"http.send: missing required request parameters(s): {"url"}"#
        );
        assert_eq!(
            send_error("{}"),
            r#"http.send: missing required request parameters(s): {"method", "url"}"#
        );
        assert!(send_error("1").contains("must be object"));
        assert!(
            send_error(r#"{"method": "GET", "url": "http://127.0.0.1:9"}"#)
                .contains("no network requests")
        );
    }
}
