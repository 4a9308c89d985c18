//! OPA built-ins that regorus lacks or answers differently, added to every engine as
//! regorus extensions (one file per family).
//!
//! Each one follows OPA's documented behaviour. A call whose arguments OPA would refuse (a
//! wrong type, a malformed token, an invalid CIDR) is an error: undefined when the engine
//! evaluates with `strict_builtin_errors` off, an evaluation error when it is on, as for
//! regorus's own built-ins.

mod aggregates;
mod arrays;
mod aws;
mod crypto;
mod dns;
mod globs;
mod go_template;
#[cfg(feature = "graphql")]
mod graphql;
mod http;
mod json;
mod jsonschema;
mod jwt;
mod jwt_sign;
mod limits;
mod long_strings;
mod metadata;
mod net;
mod not_body;
mod rewrite;
mod runtime;
mod sprintf;
mod strings;
mod template;
mod units;
mod with_mock;
mod x509;
mod yaml;

use std::collections::BTreeMap;

use regorus::Value;

pub(crate) use long_strings::is_hoisted as is_hoisted_long_string;
pub(crate) use metadata::resolve_metadata_calls;
pub(crate) use rewrite::rewrite_source_mocking;
pub(crate) use template::TemplateError;
pub(crate) use with_mock::mocked_extensions;

/// Why a built-in call failed: the message OPA's error would carry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuiltinError {
    /// An argument of the wrong type.
    #[error("{name}: operand {position} must be {expected} but got {got}")]
    Type {
        name: &'static str,
        position: usize,
        expected: &'static str,
        got: &'static str,
    },
    /// An argument of the right type that the built-in cannot use.
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
    /// An error OPA raises even without strict built-in errors (it halts evaluation).
    #[error("{0}")]
    Halt(String),
}

/// One call: the built-in's name and its arguments (never undefined: regorus answers
/// undefined itself when an argument is).
pub(crate) struct Args<'a> {
    pub(crate) name: &'static str,
    pub(crate) values: &'a [Value],
}

/// OPA's name for the type of `value`.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Set(_) => "set",
        Value::Object(_) => "object",
        Value::Undefined => "undefined",
    }
}

impl<'a> Args<'a> {
    /// Argument `i` (from 0).
    pub(crate) fn get(&self, i: usize) -> Result<&'a Value, BuiltinError> {
        self.values
            .get(i)
            .ok_or_else(|| self.invalid("missing argument"))
    }

    /// A type error for argument `i` (from 0), which should have been `expected`.
    pub(crate) fn wrong_type(&self, i: usize, expected: &'static str) -> BuiltinError {
        BuiltinError::Type {
            name: self.name,
            position: i + 1,
            expected,
            got: self.values.get(i).map_or("nothing", type_name),
        }
    }

    /// An error about this call's arguments.
    pub(crate) fn invalid(&self, message: impl Into<String>) -> BuiltinError {
        BuiltinError::Invalid {
            name: self.name,
            message: message.into(),
        }
    }

    /// Argument `i`, which must be a string.
    pub(crate) fn string(&self, i: usize) -> Result<&'a str, BuiltinError> {
        match self.get(i)? {
            Value::String(s) => Ok(s),
            _ => Err(self.wrong_type(i, "string")),
        }
    }

    /// Argument `i`, which must be an array.
    pub(crate) fn array(&self, i: usize) -> Result<&'a [Value], BuiltinError> {
        match self.get(i)? {
            Value::Array(items) => Ok(items),
            _ => Err(self.wrong_type(i, "array")),
        }
    }

    /// Argument `i`, which must be an object.
    pub(crate) fn object(&self, i: usize) -> Result<&'a BTreeMap<Value, Value>, BuiltinError> {
        match self.get(i)? {
            Value::Object(map) => Ok(map),
            _ => Err(self.wrong_type(i, "object")),
        }
    }
}

/// A built-in's implementation.
type Call = fn(&Args<'_>) -> Result<Value, BuiltinError>;

/// One built-in added to regorus.
pub(crate) struct Extension {
    /// Its name in Rego (`io.jwt.decode`).
    pub(crate) name: &'static str,
    /// How many arguments it takes.
    pub(crate) arity: u8,
    /// Whether regorus has a built-in of that name too (this one replaces it).
    pub(crate) native: bool,
    call: Call,
}

/// Every built-in this crate adds, by name.
pub(crate) const EXTENSIONS: &[Extension] = &[
    ext("array.flatten", 1, arrays::flatten),
    replaces("concat", 2, limits::concat),
    replaces("count", 1, aggregates::count),
    ext("crypto.hmac.equal", 2, crypto::hmac_equal),
    ext("crypto.hmac.md5", 2, crypto::hmac_md5),
    ext("crypto.hmac.sha1", 2, crypto::hmac_sha1),
    ext("crypto.hmac.sha256", 2, crypto::hmac_sha256),
    ext("crypto.hmac.sha512", 2, crypto::hmac_sha512),
    ext("crypto.md5", 1, crypto::md5),
    ext("crypto.parse_private_keys", 1, x509::parse_private_keys),
    ext("crypto.sha1", 1, crypto::sha1),
    ext("crypto.sha256", 1, crypto::sha256),
    ext(
        "crypto.x509.parse_and_verify_certificates",
        1,
        x509::parse_and_verify_certificates,
    ),
    ext(
        "crypto.x509.parse_and_verify_certificates_with_options",
        2,
        x509::parse_and_verify_certificates_with_options,
    ),
    ext(
        "crypto.x509.parse_certificate_request",
        1,
        x509::parse_certificate_request,
    ),
    ext(
        "crypto.x509.parse_certificates",
        1,
        x509::parse_certificates,
    ),
    ext("crypto.x509.parse_keypair", 2, x509::parse_keypair),
    ext(
        "crypto.x509.parse_rsa_private_key",
        1,
        x509::parse_rsa_private_key,
    ),
    #[cfg(feature = "graphql")]
    ext("graphql.is_valid", 2, graphql::is_valid),
    #[cfg(feature = "graphql")]
    ext("graphql.parse", 2, graphql::parse),
    #[cfg(feature = "graphql")]
    ext("graphql.parse_and_verify", 2, graphql::parse_and_verify),
    #[cfg(feature = "graphql")]
    ext("graphql.parse_query", 1, graphql::parse_query),
    #[cfg(feature = "graphql")]
    ext("graphql.parse_schema", 1, graphql::parse_schema),
    #[cfg(feature = "graphql")]
    ext("graphql.schema_is_valid", 1, graphql::schema_is_valid),
    replaces("http.send", 1, http::send),
    ext(template::NAME, 1, template::template_string),
    ext(units::NAME, 1, units::parse_bytes_check),
    ext("io.jwt.decode", 1, jwt::decode),
    ext("io.jwt.decode_verify", 2, jwt::decode_verify),
    ext("io.jwt.encode_sign", 3, jwt_sign::encode_sign),
    ext("io.jwt.encode_sign_raw", 3, jwt_sign::encode_sign_raw),
    ext("io.jwt.verify_eddsa", 2, jwt::verify_eddsa),
    ext("io.jwt.verify_es256", 2, jwt::verify_es256),
    ext("io.jwt.verify_es384", 2, jwt::verify_es384),
    ext("io.jwt.verify_es512", 2, jwt::verify_es512),
    ext("io.jwt.verify_hs256", 2, jwt::verify_hs256),
    ext("io.jwt.verify_hs384", 2, jwt::verify_hs384),
    ext("io.jwt.verify_hs512", 2, jwt::verify_hs512),
    ext("io.jwt.verify_ps256", 2, jwt::verify_ps256),
    ext("io.jwt.verify_ps384", 2, jwt::verify_ps384),
    ext("io.jwt.verify_ps512", 2, jwt::verify_ps512),
    ext("io.jwt.verify_rs256", 2, jwt::verify_rs256),
    ext("io.jwt.verify_rs384", 2, jwt::verify_rs384),
    ext("io.jwt.verify_rs512", 2, jwt::verify_rs512),
    replaces("json.is_valid", 1, json::is_valid),
    ext("json.match_schema", 2, jsonschema::match_schema),
    ext("json.patch", 2, json::patch),
    ext("json.verify_schema", 1, jsonschema::verify_schema),
    ext("net.cidr_contains_matches", 2, net::cidr_contains_matches),
    ext("net.cidr_intersects", 2, net::cidr_intersects),
    ext("net.cidr_merge", 1, net::cidr_merge),
    ext("net.lookup_ip_addr", 1, dns::lookup_ip_addr),
    replaces("numbers.range", 2, limits::range),
    replaces("numbers.range_step", 3, limits::range_step),
    replaces("opa.runtime", 0, runtime::runtime),
    ext("providers.aws.sign_req", 3, aws::sign_req),
    ext("regex.globs_match", 2, globs::globs_match),
    replaces("replace", 3, limits::replace),
    replaces("sprintf", 2, sprintf::sprintf),
    ext("strings.render_template", 2, go_template::render_template),
    replaces("strings.replace_n", 2, strings::replace_n),
    ext("strings.split_n", 3, strings::split_n),
    replaces("yaml.is_valid", 1, yaml::is_valid),
];

const fn ext(name: &'static str, arity: u8, call: Call) -> Extension {
    Extension {
        name,
        arity,
        native: false,
        call,
    }
}

/// An extension that replaces regorus's built-in of the same name.
const fn replaces(name: &'static str, arity: u8, call: Call) -> Extension {
    Extension {
        native: true,
        ..ext(name, arity, call)
    }
}

/// How many arguments built-in `name` of this crate takes, if it is one.
pub(crate) fn arity(name: &str) -> Option<usize> {
    EXTENSIONS
        .binary_search_by(|e| e.name.cmp(name))
        .ok()
        .and_then(|i| EXTENSIONS.get(i))
        .map(|e| usize::from(e.arity))
}

/// Adds every built-in of [`EXTENSIONS`] to `engine`. `strict`: a failing call is an
/// error (OPA's `strict-builtin-errors`); otherwise it is undefined.
///
/// # Errors
///
/// regorus's message if it refuses an extension (one of that name was added already).
pub(crate) fn register(engine: &mut regorus::Engine, strict: bool) -> Result<(), String> {
    for extension in EXTENSIONS {
        let (name, call) = (extension.name, extension.call);
        engine
            .add_extension(
                name.to_owned(),
                extension.arity,
                Box::new(move |values: Vec<Value>| {
                    match call(&Args {
                        name,
                        values: &values,
                    }) {
                        Ok(value) => Ok(value),
                        Err(e) if strict || matches!(e, BuiltinError::Halt(_)) => Err(e.into()),
                        Err(_) => Ok(Value::Undefined),
                    }
                }),
            )
            .map_err(|e| format!("built-in {name}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_sorted_and_unique() {
        for pair in EXTENSIONS.windows(2) {
            if let [a, b] = pair {
                assert!(a.name < b.name, "{} before {}", a.name, b.name);
            }
        }
        assert_eq!(arity("io.jwt.decode_verify"), Some(2));
        assert_eq!(arity("io.jwt.nope"), None);
    }
}
