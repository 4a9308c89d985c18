//! A bounded HTTP client for identity providers: timeouts on connect and on the whole
//! exchange, no redirects, and a cap on response size, so a provider that hangs or answers
//! garbage costs a typed error within a known time.

use std::time::Duration;

#[cfg(feature = "oidc")]
pub use client::HttpClient;

/// Limits for calls to identity providers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for the whole request, body included.
    pub timeout: Duration,
    /// The largest response body read, in bytes.
    pub max_body: usize,
}

/// Setters, so that options built outside this crate keep compiling as fields are added
/// (the struct is `#[non_exhaustive]`): `HttpOptions::default().with_…(…)`.
impl HttpOptions {
    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`max_body`](Self::max_body).
    #[must_use]
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_body: 512 * 1024,
        }
    }
}

#[cfg(feature = "oidc")]
mod client {
    use serde_json::Value;

    use super::HttpOptions;
    use crate::AuthError;

    /// An HTTP client with [`HttpOptions`].
    #[derive(Debug, Clone)]
    pub struct HttpClient {
        client: reqwest::Client,
        max_body: usize,
    }

    /// A response: status and parsed JSON body (`Null` when the body was empty).
    #[derive(Debug)]
    pub(crate) struct JsonResponse {
        pub(crate) status: u16,
        pub(crate) body: Value,
    }

    impl HttpClient {
        /// A client with these limits.
        ///
        /// # Errors
        ///
        /// [`AuthError::Config`] if the TLS backend cannot be set up.
        pub fn new(options: &HttpOptions) -> Result<Self, AuthError> {
            // rustls on aws-lc-rs, whatever else the final graph enables (portcullis_core::https).
            let tls = portcullis_core::https::client_config()
                .map_err(|e| AuthError::Config(format!("HTTP client TLS: {e}")))?;
            let client = reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .connect_timeout(options.connect_timeout)
                .timeout(options.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("portcullis-token/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| AuthError::Config(format!("HTTP client: {e}")))?;
            Ok(HttpClient {
                client,
                max_body: options.max_body,
            })
        }

        pub(crate) fn get(&self, url: &str) -> reqwest::RequestBuilder {
            self.client.get(url)
        }

        pub(crate) fn post(&self, url: &str) -> reqwest::RequestBuilder {
            self.client.post(url)
        }

        /// Sends `request` and reads a JSON body of at most `max_body` bytes.
        pub(crate) async fn json(
            &self,
            request: reqwest::RequestBuilder,
            what: &str,
        ) -> Result<JsonResponse, AuthError> {
            let provider = |m: String| AuthError::Provider(format!("{what}: {m}"));
            let mut response = request
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| provider(describe(&e)))?;
            let status = response.status().as_u16();
            if response
                .content_length()
                .is_some_and(|n| n > self.max_body as u64)
            {
                return Err(provider(format!(
                    "response larger than {} bytes",
                    self.max_body
                )));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| provider(describe(&e)))? {
                if body.len() + chunk.len() > self.max_body {
                    return Err(provider(format!(
                        "response larger than {} bytes",
                        self.max_body
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            let body = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| provider(format!("status {status}, body is not JSON: {e}")))?
            };
            Ok(JsonResponse { status, body })
        }
    }

    fn describe(e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return "timed out".into();
        }
        if e.is_connect() {
            return "cannot connect".into();
        }
        // Without the URL: it may carry a token in its query.
        let text = e.to_string();
        match e.url() {
            Some(url) => text.replace(url.as_str(), "<url>"),
            None => text,
        }
    }
}
