//! `providers.aws.sign_req`: AWS Signature Version 4 (header-based, single chunk) over an
//! `http.send` request object, as OPA signs it: the method as written, the URL's path
//! escaped as Go's `url.URL.EscapedPath` and its query as written, every request header
//! (names lowercased) except the ones proxies rewrite, plus `host`, `x-amz-date`, the
//! payload hash (`x-amz-content-sha256`, S3 and Glacier only) and the session token. SHA-256
//! and HMAC on `ring`.

use std::collections::BTreeMap;

use aws_lc_rs::{digest, hmac};
use regorus::Value;

use super::{Args, BuiltinError};

/// The keys an `http.send` request object may have (OPA refuses any other).
const REQUEST_KEYS: &[&str] = &[
    "body",
    "cache",
    "caching_mode",
    "enable_redirect",
    "force_cache",
    "force_cache_duration_seconds",
    "force_json_decode",
    "force_yaml_decode",
    "headers",
    "max_retry_attempts",
    "method",
    "raise_error",
    "raw_body",
    "timeout",
    "tls_ca_cert",
    "tls_ca_cert_env_variable",
    "tls_ca_cert_file",
    "tls_client_cert",
    "tls_client_cert_env_variable",
    "tls_client_cert_file",
    "tls_client_key",
    "tls_client_key_env_variable",
    "tls_client_key_file",
    "tls_insecure_skip_verify",
    "tls_server_name",
    "tls_use_system_certs",
    "url",
];

/// The configuration keys that must be present, each a string.
const REQUIRED_CONFIG: &[&str] = &[
    "aws_access_key",
    "aws_region",
    "aws_secret_access_key",
    "aws_service",
];

/// Headers left out of the signature: proxies commonly rewrite them.
const UNSIGNED_HEADERS: &[&str] = &["authorization", "user-agent", "x-amzn-trace-id"];

/// The payload hash when payload signing is disabled.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// `object[key]`, if present.
fn member<'a>(object: &'a BTreeMap<Value, Value>, key: &str) -> Option<&'a Value> {
    object.get(&Value::from(key))
}

/// The names of `keys`, as OPA lists a set of keys in its messages.
fn key_list(keys: &[String]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!("{{{}}}", quoted.join(", "))
}

/// What the signature needs from the AWS configuration (argument 2).
struct Config<'a> {
    access_key: &'a str,
    secret_key: &'a str,
    region: &'a str,
    service: &'a str,
    session_token: Option<&'a str>,
    sign_payload: bool,
}

impl<'a> Config<'a> {
    fn read(args: &Args<'a>) -> Result<Self, BuiltinError> {
        let config = args.object(1)?;
        let missing: Vec<String> = REQUIRED_CONFIG
            .iter()
            .filter(|k| member(config, k).is_none())
            .map(|k| (*k).to_owned())
            .collect();
        if !missing.is_empty() {
            return Err(args.invalid(format!(
                "operand 2 missing required AWS config parameters(s): {}",
                key_list(&missing)
            )));
        }
        let invalid: Vec<String> = REQUIRED_CONFIG
            .iter()
            .filter(|k| !matches!(member(config, k), Some(Value::String(_))))
            .map(|k| (*k).to_owned())
            .collect();
        if !invalid.is_empty() {
            return Err(args.invalid(format!(
                "operand 2 invalid values for required AWS config parameters(s): {}",
                key_list(&invalid)
            )));
        }
        let text = |key: &str| match member(config, key) {
            Some(Value::String(s)) => Ok(s.as_ref()),
            _ => Err(args.invalid(format!("operand 2 '{key}' must be a string"))),
        };
        let session_token = match member(config, "aws_session_token") {
            None => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.as_ref()),
            Some(_) => {
                return Err(
                    args.invalid("operand 2 invalid value for 'aws_session_token' in AWS config")
                );
            }
        };
        let sign_payload = match member(config, "disable_payload_signing") {
            None => true,
            Some(Value::Bool(disable)) => !disable,
            Some(_) => {
                return Err(args.invalid(
                    "operand 2 invalid value for 'disable_payload_signing' in AWS config",
                ));
            }
        };
        Ok(Self {
            access_key: text("aws_access_key")?,
            secret_key: text("aws_secret_access_key")?,
            region: text("aws_region")?,
            service: text("aws_service")?,
            session_token,
            sign_payload,
        })
    }
}

/// The parts of a URL the signature uses, as Go's `url.Parse` finds them.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    /// `host[:port]`, without user information.
    host: String,
    /// The path as `EscapedPath` gives it (empty when the URL has none).
    path: String,
    /// The query as written, without the `?`.
    query: String,
}

/// Whether Go escapes byte `c` in a URL path.
fn escaped_in_path(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&c))
}

/// Whether `path` is a valid escaped path as written (Go's `validEncoded`).
fn valid_encoded_path(path: &str) -> bool {
    path.bytes()
        .all(|c| b"!$&'()*+,;=:@[]%".contains(&c) || !escaped_in_path(c))
}

/// The value of hex digit `c`.
fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `text` with its `%XX` escapes decoded. `host`: as in a host name, where only non-ASCII
/// bytes (and `%25`) may be escaped.
fn unescape(text: &str, host: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(c) = bytes.next() {
        if c != b'%' {
            out.push(c);
            continue;
        }
        let (hi, lo) = (bytes.next(), bytes.next());
        let decoded = hi
            .and_then(hex_value)
            .zip(lo.and_then(hex_value))
            .map(|(hi, lo)| hi << 4 | lo)
            .filter(|&d| !host || d >= 0x80 || d == b'%');
        let Some(decoded) = decoded else {
            let escape: String = [Some(b'%'), hi, lo]
                .into_iter()
                .flatten()
                .map(char::from)
                .collect();
            return Err(format!("invalid URL escape {escape:?}"));
        };
        out.push(decoded);
    }
    Ok(out)
}

/// `path` as Go's `EscapedPath` gives it: as written when that is a valid escaping,
/// otherwise decoded and escaped again.
fn escaped_path(path: &str) -> Result<String, String> {
    let decoded = unescape(path, false)?;
    if valid_encoded_path(path) {
        return Ok(path.to_owned());
    }
    Ok(decoded
        .iter()
        .map(|&c| {
            if escaped_in_path(c) {
                format!("%{c:02X}")
            } else {
                char::from(c).to_string()
            }
        })
        .collect())
}

/// The host of an authority (after any `user@`), checked and decoded as Go does.
fn parse_host(host: &str) -> Result<String, String> {
    let port = if host.starts_with('[') {
        let end = host.find(']').ok_or("missing ']' in host")?;
        host.get(end + 1..).unwrap_or("")
    } else {
        host.rfind(':').map_or("", |i| host.split_at(i).1)
    };
    if let Some(digits) = port.strip_prefix(':') {
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port {port:?} after host"));
        }
    } else if !port.is_empty() {
        return Err(format!("invalid port {port:?} after host"));
    }
    if let Some(c) = host.bytes().find(|&c| {
        c < 0x80 && !(c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"%".contains(&c))
    }) {
        return Err(format!(
            "invalid character {:?} in host name",
            char::from(c)
        ));
    }
    String::from_utf8(unescape(host, true)?).map_err(|_| "host name is not UTF-8".to_owned())
}

/// `raw` parsed as Go's `url.Parse` does, keeping what the signature uses.
fn parse_url(raw: &str) -> Result<Url, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("invalid control character in URL".to_owned());
    }
    let (rest, fragment) = raw.split_once('#').unwrap_or((raw, ""));
    unescape(fragment, false)?;
    // A scheme: a letter, then letters, digits, `+`, `-`, `.`, up to a colon.
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)));
    let (scheme, rest) = match end.map(|i| rest.split_at(i)) {
        Some(("", after)) if after.starts_with(':') => {
            return Err("missing protocol scheme".to_owned());
        }
        Some((scheme, after))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic()) && after.starts_with(':') =>
        {
            (scheme, after.get(1..).unwrap_or(""))
        }
        _ => ("", rest),
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            // Opaque (`mailto:x`): no host, no path.
            return Ok(Url {
                host: String::new(),
                path: String::new(),
                query: query.to_owned(),
            });
        }
        if rest.split('/').next().is_some_and(|s| s.contains(':')) {
            return Err("first path segment in URL cannot contain colon".to_owned());
        }
    }
    let mut host = String::new();
    let mut path = rest;
    if let Some(after) = rest.strip_prefix("//")
        && (!scheme.is_empty() || !rest.starts_with("///"))
    {
        let (authority, remainder) = after.find('/').map_or((after, ""), |i| after.split_at(i));
        let host_part = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        host = parse_host(host_part)?;
        path = remainder;
    }
    Ok(Url {
        host,
        path: escaped_path(path)?,
        query: query.to_owned(),
    })
}

/// JSON as Go's `json.Marshal` writes it: compact, object keys sorted, `<`, `>`, `&`,
/// U+2028 and U+2029 escaped.
fn go_json(value: &Value) -> Result<Vec<u8>, String> {
    let json = serde_json::to_string(value).map_err(|e| format!("failed to marshal body: {e}"))?;
    Ok(json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
        .into_bytes())
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

fn hmac_sha256(key: &[u8], message: &str) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message.as_bytes())
}

/// `providers.aws.sign_req(request, aws_config, time_ns)`: `request` with its `headers`
/// completed by the AWS headers and `Authorization`.
pub(super) fn sign_req(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let request = args.object(0)?;
    let config = Config::read(args)?;
    let time_ns = match args.get(2)? {
        number @ Value::Number(_) => number.as_i64().map_err(|_| {
            args.invalid("operand 3 could not convert time_ns value into a unix timestamp")
        })?,
        _ => return Err(args.wrong_type(2, "number")),
    };

    let unknown: Vec<String> = request
        .keys()
        .filter(|k| !matches!(k, Value::String(s) if REQUEST_KEYS.contains(&s.as_ref())))
        .map(|k| match k {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        })
        .collect();
    if !unknown.is_empty() {
        return Err(args.invalid(format!(
            "operand 1 invalid request parameters(s): {}",
            key_list(&unknown)
        )));
    }
    let missing: Vec<String> = ["method", "url"]
        .iter()
        .filter(|k| member(request, k).is_none())
        .map(|k| (*k).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(args.invalid(format!(
            "operand 1 missing required request parameters(s): {}",
            key_list(&missing)
        )));
    }
    let (url, method) = match (member(request, "url"), member(request, "method")) {
        (Some(Value::String(url)), Some(Value::String(method))) => (url, method),
        (url, _) => {
            let mut invalid = Vec::new();
            if !matches!(url, Some(Value::String(_))) {
                invalid.push("url".to_owned());
            }
            if !matches!(member(request, "method"), Some(Value::String(_))) {
                invalid.push("method".to_owned());
            }
            return Err(args.invalid(format!(
                "operand 1 invalid values for required request parameters(s): {}",
                key_list(&invalid)
            )));
        }
    };
    let empty = BTreeMap::new();
    let headers = match member(request, "headers") {
        None => &empty,
        Some(Value::Object(headers)) => headers.as_ref(),
        Some(other) => {
            return Err(args.invalid(format!(
                "operand 1 headers must be an object but got {}",
                super::type_name(other)
            )));
        }
    };
    let mut given: Vec<(&str, &str)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        match (name, value) {
            (Value::String(name), Value::String(value)) => given.push((name, value)),
            _ => {
                return Err(args.invalid("operand 1 headers must map header names to strings"));
            }
        }
    }
    let url = parse_url(url).map_err(|e| args.invalid(format!("operand 1 url: {e}")))?;
    let body = match (member(request, "raw_body"), member(request, "body")) {
        (Some(Value::String(raw)), _) => raw.as_bytes().to_vec(),
        (Some(_), _) => return Err(args.invalid("operand 1 raw_body must be a string")),
        (None, Some(body)) => go_json(body).map_err(|e| args.invalid(e))?,
        (None, None) => Vec::new(),
    };

    let time = chrono::DateTime::from_timestamp_nanos(time_ns);
    let date = time.format("%Y%m%d").to_string();
    let timestamp = time.format("%Y%m%dT%H%M%SZ").to_string();
    let payload_hash = if config.sign_payload {
        sha256_hex(&body)
    } else {
        UNSIGNED_PAYLOAD.to_owned()
    };

    let mut aws_headers: BTreeMap<&str, &str> = BTreeMap::new();
    aws_headers.insert("host", &url.host);
    aws_headers.insert("x-amz-date", &timestamp);
    if config.service == "s3" || config.service == "glacier" {
        aws_headers.insert("x-amz-content-sha256", &payload_hash);
    }
    if let Some(token) = config.session_token {
        aws_headers.insert("x-amz-security-token", token);
    }

    // Signed: the AWS headers, then the request's (a request header of the same name
    // replaces the AWS one's value in the signature, as in OPA).
    let mut signed: BTreeMap<String, &str> = aws_headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), *value))
        .collect();
    let mut lowercased: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in &given {
        let lower = name.to_ascii_lowercase();
        if let Some(first) = lowercased.insert(lower.clone(), name) {
            return Err(args.invalid(format!(
                "operand 1 header names {first:?} and {name:?} differ only in case"
            )));
        }
        if !UNSIGNED_HEADERS.contains(&lower.as_str()) {
            signed.insert(lower, value);
        }
    }

    let signed_names: Vec<&str> = signed.keys().map(String::as_str).collect();
    let signed_names = signed_names.join(";");
    let mut canonical = format!("{method}\n{}\n{}\n", url.path, url.query);
    for (name, value) in &signed {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(value);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_names);
    canonical.push('\n');
    canonical.push_str(&payload_hash);

    let scope = format!("{date}/{}/{}/aws4_request", config.region, config.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut key = hmac_sha256(format!("AWS4{}", config.secret_key).as_bytes(), &date);
    for part in [config.region, config.service, "aws4_request"] {
        key = hmac_sha256(key.as_ref(), part);
    }
    let signature = hmac_sha256(key.as_ref(), &string_to_sign);
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope},SignedHeaders={signed_names},Signature={}",
        config.access_key,
        hex::encode(signature)
    );

    let mut out_headers: BTreeMap<Value, Value> = given
        .iter()
        .map(|(name, value)| (Value::from(*name), Value::from(*value)))
        .collect();
    out_headers.insert(Value::from("Authorization"), Value::from(authorization));
    for (name, value) in aws_headers {
        out_headers.insert(Value::from(name), Value::from(value));
    }
    let mut out = request.clone();
    out.insert(Value::from("headers"), Value::from(out_headers));
    Ok(Value::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, path: &str, query: &str) -> Url {
        Url {
            host: host.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
        }
    }

    #[test]
    fn urls_parse_as_go_does() {
        assert_eq!(
            parse_url("http://example.com"),
            Ok(url("example.com", "", ""))
        );
        assert_eq!(
            parse_url("https://u:p@example.com:8443/a b/%41?x=1&y#frag"),
            Ok(url("example.com:8443", "/a%20b/A", "x=1&y"))
        );
        // A valid escaping is kept as written; an invalid one is escaped again.
        assert_eq!(
            parse_url("https://h/a%2Fb/(c)*"),
            Ok(url("h", "/a%2Fb/(c)*", ""))
        );
        assert_eq!(
            parse_url("https://h/\u{1234}"),
            Ok(url("h", "/%E1%88%B4", ""))
        );
        assert_eq!(parse_url("mailto:x@y"), Ok(url("", "", "")));
        assert_eq!(
            parse_url("/just/a/path?q"),
            Ok(url("", "/just/a/path", "q"))
        );
        assert_eq!(parse_url("https://[::1]:80/"), Ok(url("[::1]:80", "/", "")));
        for bad in [
            "https://h/%zz",
            "https://h:port/",
            "https://h h/",
            "https://h/\n",
            ":nothing",
            "1a:b/c",
            "https://[::1/",
            "https://ex%41mple.com/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_json_escapes_html() {
        let value = Value::from(serde_json::json!({"b": "<&>", "a": [1, 2]}));
        assert_eq!(
            go_json(&value),
            Ok(br#"{"a":[1,2],"b":"\u003c\u0026\u003e"}"#.to_vec())
        );
    }
}
