//! A Duo Auth API v2 client for push approvals: `preauth`, `auth` with `factor=push` and
//! `async=1`, then `auth_status` polled by transaction id until allow, deny or the deadline.
//!
//! Requests are signed as Duo's own clients sign them: HMAC over the `Date` header, the
//! upper-case method, the lower-case host, the path and the parameters sorted by name and
//! RFC 3986-encoded, joined by newlines; sent as `Authorization: Basic base64(ikey:hex-sig)`.
//! HMAC-SHA1 is Duo's original signature; HMAC-SHA512 ([`DuoSignature::HmacSha512`]) is the
//! stronger one its newer clients use. A 429 answer is retried with exponential backoff;
//! polling sleeps between calls and stops when the future is dropped.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tokio::time::Instant;

use crate::{Confirmation, FactorOutcome, Prompt, SecondFactor};

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Which HMAC signs requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuoSignature {
    /// HMAC-SHA1 (Duo's canonical signature version 2).
    HmacSha1,
    /// HMAC-SHA512 over the same canonical request.
    HmacSha512,
}

/// How to reach Duo.
#[derive(Clone)]
pub struct DuoConfig {
    /// The API host, e.g. `api-xxxxxxxx.duosecurity.com`.
    pub host: String,
    /// `https` in production; `http` only for local test servers.
    pub scheme: String,
    /// The integration key.
    pub ikey: String,
    /// The secret key. Never logged.
    pub skey: String,
    /// The signature.
    pub signature: DuoSignature,
    /// Time between `auth_status` polls (at least 100 ms).
    pub poll_interval: Duration,
    /// How long the approver has to answer the push.
    pub timeout: Duration,
    /// Timeout of each HTTP call.
    pub request_timeout: Duration,
    /// The push's `type` line, e.g. "Deploy approval".
    pub push_type: String,
}

impl DuoConfig {
    /// Defaults for `host` with these keys: HTTPS, HMAC-SHA512, 2 s polls, 60 s to answer.
    pub fn new(host: impl Into<String>, ikey: impl Into<String>, skey: impl Into<String>) -> Self {
        DuoConfig {
            host: host.into(),
            scheme: "https".into(),
            ikey: ikey.into(),
            skey: skey.into(),
            signature: DuoSignature::HmacSha512,
            poll_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            push_type: "Approval".into(),
        }
    }
}

impl fmt::Debug for DuoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuoConfig")
            .field("host", &self.host)
            .field("scheme", &self.scheme)
            .field("ikey", &self.ikey)
            .field("skey", &"<redacted>")
            .field("signature", &self.signature)
            .field("poll_interval", &self.poll_interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A Duo answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DuoError {
    /// `stat: FAIL` with Duo's code and message.
    #[error("Duo refused the call: {code} {message}")]
    Fail {
        /// Duo's error code.
        code: i64,
        /// Duo's message.
        message: String,
    },
    /// HTTP 429: too many requests.
    #[error("Duo rate-limited the call")]
    RateLimited,
    /// The answer is not Duo's JSON envelope.
    #[error("malformed Duo answer: {0}")]
    Malformed(String),
    /// The call did not complete.
    #[error("Duo unreachable: {0}")]
    Transport(String),
}

/// Decodes a Duo answer: `{"stat":"OK","response":…}` gives the response;
/// `{"stat":"FAIL","code":…,"message":…}` and HTTP errors give a [`DuoError`].
///
/// # Errors
///
/// See [`DuoError`].
pub fn decode_response(status: u16, body: &[u8]) -> Result<Value, DuoError> {
    if status == 429 {
        return Err(DuoError::RateLimited);
    }
    if body.len() > 256 * 1024 {
        return Err(DuoError::Malformed("answer larger than 256 KiB".into()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| DuoError::Malformed(format!("status {status}, not JSON: {e}")))?;
    match value.get("stat").and_then(Value::as_str) {
        Some("OK") if (200..300).contains(&status) => value
            .get("response")
            .cloned()
            .ok_or_else(|| DuoError::Malformed("`stat: OK` without `response`".into())),
        Some("FAIL") => Err(DuoError::Fail {
            code: value.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
        }),
        _ => Err(DuoError::Malformed(format!(
            "status {status} without a `stat` of OK or FAIL"
        ))),
    }
}

/// The canonical parameter string: sorted by name (then value), RFC 3986-encoded.
pub fn canonical_params(params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| {
            (
                utf8_percent_encode(k, RFC3986).to_string(),
                utf8_percent_encode(v, RFC3986).to_string(),
            )
        })
        .collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `Authorization` header value for a request.
pub fn sign(
    config: &DuoConfig,
    date: &str,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
) -> String {
    let canonical = [
        date.to_owned(),
        method.to_ascii_uppercase(),
        config.host.to_ascii_lowercase(),
        path.to_owned(),
        canonical_params(params),
    ]
    .join("\n");
    let algorithm = match config.signature {
        DuoSignature::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        DuoSignature::HmacSha512 => hmac::HMAC_SHA512,
    };
    let tag = hmac::sign(
        &hmac::Key::new(algorithm, config.skey.as_bytes()),
        canonical.as_bytes(),
    );
    let basic = format!("{}:{}", config.ikey, hex::encode(tag.as_ref()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(basic)
    )
}

/// The Duo push factor.
#[derive(Debug, Clone)]
pub struct DuoClient {
    config: DuoConfig,
    http: reqwest::Client,
}

impl DuoClient {
    /// A client for `config`.
    ///
    /// # Errors
    ///
    /// A message if the configuration is unusable or the HTTP client cannot be built.
    pub fn new(config: DuoConfig) -> Result<Self, crate::ApprovalError> {
        if config.host.is_empty() || config.ikey.is_empty() || config.skey.len() < 16 {
            return Err(crate::ApprovalError::Config(
                "Duo needs a host, an integration key and a secret key of at least 16 characters"
                    .into(),
            ));
        }
        if config.poll_interval < Duration::from_millis(100) {
            return Err(crate::ApprovalError::Config(
                "Duo polls at most every 100 ms".into(),
            ));
        }
        if config.timeout.is_zero() || config.timeout > Duration::from_secs(600) {
            return Err(crate::ApprovalError::Config(
                "a Duo push waits between 1 s and 10 minutes".into(),
            ));
        }
        // rustls on aws-lc-rs, whatever else the final graph enables (portcullis_core::https).
        let tls = portcullis_core::https::client_config()
            .map_err(|e| crate::ApprovalError::Config(format!("HTTP client TLS: {e}")))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::ApprovalError::Config(format!("HTTP client: {e}")))?;
        Ok(DuoClient { config, http })
    }

    /// One signed call, retried with exponential backoff on 429 until `deadline`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<Value, DuoError> {
        let mut backoff = Duration::from_millis(250);
        loop {
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            let authorization = sign(&self.config, &date, method, path, params);
            let encoded = canonical_params(params);
            let url = format!("{}://{}{}", self.config.scheme, self.config.host, path);
            let request = if method.eq_ignore_ascii_case("GET") {
                let url = if encoded.is_empty() {
                    url
                } else {
                    format!("{url}?{encoded}")
                };
                self.http.get(url)
            } else {
                self.http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(encoded)
            };
            let response = request
                .header("date", date)
                .header("authorization", authorization)
                .send()
                .await
                .map_err(|e| {
                    DuoError::Transport(if e.is_timeout() {
                        "timed out".into()
                    } else {
                        "request failed".into()
                    })
                })?;
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|_| DuoError::Transport("reading the answer failed".into()))?;
            match decode_response(status, &body) {
                Err(DuoError::RateLimited) if Instant::now() + backoff < deadline => {
                    tracing::debug!(?backoff, "Duo rate limit; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(32));
                }
                other => return other,
            }
        }
    }

    /// Pushes to `user` and waits for the answer (or the deadline).
    pub async fn push(&self, user: &str, prompt: &Prompt) -> FactorOutcome {
        let deadline = Instant::now() + self.config.timeout;
        match self.push_until(user, prompt, deadline).await {
            Ok(outcome) => outcome,
            Err(e) => FactorOutcome::Error(e.to_string()),
        }
    }

    async fn push_until(
        &self,
        user: &str,
        prompt: &Prompt,
        deadline: Instant,
    ) -> Result<FactorOutcome, DuoError> {
        let pre = self
            .call("POST", "/auth/v2/preauth", &[("username", user)], deadline)
            .await?;
        match pre.get("result").and_then(Value::as_str) {
            Some("auth") => {}
            Some("deny") => return Ok(FactorOutcome::Deny),
            // A user Duo lets through without a factor did not confirm anything.
            Some("allow") => {
                return Ok(FactorOutcome::Error(
                    "Duo would let this approver through without a second factor; refused".into(),
                ));
            }
            Some("enroll") => {
                return Ok(FactorOutcome::Error(
                    "the approver is not enrolled in Duo".into(),
                ));
            }
            _ => {
                return Err(DuoError::Malformed(
                    "preauth without a known `result`".into(),
                ));
            }
        }
        let pushinfo = canonical_params(&[
            ("action", &prompt.action),
            ("resource", &prompt.resource),
            ("requester", &prompt.requester),
            ("reason", &prompt.reason),
        ]);
        let auth = self
            .call(
                "POST",
                "/auth/v2/auth",
                &[
                    ("username", user),
                    ("factor", "push"),
                    ("device", "auto"),
                    ("async", "1"),
                    ("type", &self.config.push_type),
                    ("pushinfo", &pushinfo),
                ],
                deadline,
            )
            .await?;
        let txid = auth
            .get("txid")
            .and_then(Value::as_str)
            .ok_or_else(|| DuoError::Malformed("auth without a `txid`".into()))?
            .to_owned();
        loop {
            if Instant::now() >= deadline {
                return Ok(FactorOutcome::Timeout);
            }
            let status = self
                .call("GET", "/auth/v2/auth_status", &[("txid", &txid)], deadline)
                .await?;
            match status.get("result").and_then(Value::as_str) {
                Some("allow") => return Ok(FactorOutcome::Allow),
                Some("deny") => return Ok(FactorOutcome::Deny),
                Some("waiting") => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(self.config.poll_interval.min(left)).await;
                }
                _ => {
                    return Err(DuoError::Malformed(
                        "auth_status without a known `result`".into(),
                    ));
                }
            }
        }
    }
}

#[async_trait]
impl SecondFactor for DuoClient {
    fn name(&self) -> &str {
        "duo"
    }

    async fn confirm(&self, confirmation: Confirmation<'_>) -> FactorOutcome {
        self.push(confirmation.approver.subject(), confirmation.prompt)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_params_sort_and_encode() {
        assert_eq!(
            canonical_params(&[("username", "a b"), ("async", "1"), ("x", "é~/")]),
            "async=1&username=a%20b&x=%C3%A9~%2F"
        );
    }

    #[test]
    fn decoding_envelopes() {
        assert_eq!(
            decode_response(200, br#"{"stat":"OK","response":{"txid":"t"}}"#).unwrap(),
            serde_json::json!({"txid": "t"})
        );
        assert!(matches!(
            decode_response(
                400,
                br#"{"stat":"FAIL","code":40002,"message":"Invalid request"}"#
            ),
            Err(DuoError::Fail { code: 40002, .. })
        ));
        assert_eq!(decode_response(429, b""), Err(DuoError::RateLimited));
        for (status, body) in [
            (200, &b"<html>"[..]),
            (200, br#"{"stat":"OK"}"#),
            (500, br#"{"stat":"OK","response":{}}"#),
            (200, br#"{"response":{}}"#),
        ] {
            assert!(matches!(
                decode_response(status, body),
                Err(DuoError::Malformed(_))
            ));
        }
    }
}
