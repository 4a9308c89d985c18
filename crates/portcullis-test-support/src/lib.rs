#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::fmt;

/// Set to `1` (by `scripts/test` and CI) to make a missing service a failure.
pub const REQUIRE_SERVICES: &str = "PORTCULLIS_REQUIRE_SERVICES";

/// A service a test needs is not running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The variable that would name it.
    pub variable: String,
    /// Whether the run requires every service ([`REQUIRE_SERVICES`]).
    pub required: bool,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not set: this test needs {}; start it with `scripts/with-services cargo test …` \
             (or `scripts/test`)",
            self.variable,
            what(&self.variable)
        )
    }
}

/// The service a `PORTCULLIS_TEST_*` variable points at, in words.
fn what(variable: &str) -> &'static str {
    let name = variable
        .strip_prefix("PORTCULLIS_TEST_")
        .unwrap_or(variable);
    if name.starts_with("POSTGRES") {
        "a PostgreSQL server"
    } else if name.starts_with("LDAP") {
        "an OpenLDAP slapd"
    } else if name.starts_with("MOTO") {
        "moto_server (AWS STS/IAM/S3)"
    } else if name.starts_with("OIDC") {
        "oidc-provider-mock (an OpenID Connect provider)"
    } else if name.starts_with("WEBDRIVER") || name.starts_with("CHROMIUM") {
        "ChromeDriver and headless Chromium"
    } else {
        "a real service"
    }
}

/// Looks `variable` up: its value when set and not empty, or why the test cannot run.
///
/// # Errors
///
/// [`Missing`], with `required` set when [`REQUIRE_SERVICES`] is `1`.
pub fn lookup(variable: &str) -> Result<String, Missing> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(Missing {
            variable: variable.to_owned(),
            required: std::env::var(REQUIRE_SERVICES).is_ok_and(|v| v == "1"),
        }),
    }
}

/// What [`service_or_skip!`] does with a missing service: one line on standard error saying
/// the test is skipped, or, when the run requires services, the message to fail with.
///
/// # Errors
///
/// The failure message, when services are required.
pub fn skip_or_fail(missing: &Missing) -> Result<(), String> {
    if missing.required {
        return Err(format!("{missing} ({REQUIRE_SERVICES}=1: required)"));
    }
    // The one line a skipped test prints; tests see stderr only with --nocapture, and
    // cargo prints it under the test's name when the test fails for another reason.
    std::eprintln!("skipped: {missing}");
    Ok(())
}

/// The value of a service variable, or an early `return` from the test (skipped) — or a
/// panic when `PORTCULLIS_REQUIRE_SERVICES=1`. For `async fn` and plain `#[test]` functions
/// returning `()`. Several variables: `service_or_skip!("A", "B")` gives a tuple.
#[macro_export]
macro_rules! service_or_skip {
    ($variable:expr) => {
        match $crate::lookup($variable) {
            ::std::result::Result::Ok(value) => value,
            ::std::result::Result::Err(missing) => match $crate::skip_or_fail(&missing) {
                ::std::result::Result::Ok(()) => return,
                ::std::result::Result::Err(message) => ::std::panic!("{}", message),
            },
        }
    };
    ($($variable:expr),+ $(,)?) => {
        ($($crate::service_or_skip!($variable)),+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_service_and_the_way_to_start_it() {
        let missing = Missing {
            variable: "PORTCULLIS_TEST_LDAP_URL".into(),
            required: false,
        };
        let text = missing.to_string();
        assert!(
            text.contains("slapd") && text.contains("scripts/with-services"),
            "{text}"
        );
        let required = Missing {
            required: true,
            ..missing
        };
        assert!(skip_or_fail(&required).is_err());
    }
}
