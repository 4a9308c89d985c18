//! Envoy's `x-forwarded-client-cert` (XFCC) header, believed only from configured proxies.

use crate::{SpiffeId, SpiffeIdError, SpiffeIdPattern};

/// The header's name.
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";

/// The longest XFCC header accepted, in bytes (it may carry URL-encoded PEM certificates).
pub const MAX_XFCC_LEN: usize = 64 * 1024;

/// The most elements (one per proxy hop) accepted.
pub const MAX_XFCC_ELEMENTS: usize = 16;

/// Why an XFCC header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XfccError {
    /// Longer than [`MAX_XFCC_LEN`].
    #[error("the x-forwarded-client-cert header is longer than {MAX_XFCC_LEN} bytes")]
    TooLong,
    /// More than [`MAX_XFCC_ELEMENTS`] elements.
    #[error("the x-forwarded-client-cert header has more than {MAX_XFCC_ELEMENTS} elements")]
    TooManyElements,
    /// Not the `Key=Value;Key=Value,…` grammar.
    #[error("the x-forwarded-client-cert header is malformed: {0}")]
    Malformed(String),
    /// Sent more than once.
    #[error("send one x-forwarded-client-cert header, not several")]
    Repeated,
    /// Sent by a peer that is not a configured proxy: nobody else may claim a client identity.
    #[error("x-forwarded-client-cert is accepted only from a configured proxy")]
    NotFromProxy,
    /// The element the proxy added has no `URI` (the client presented no SPIFFE ID).
    #[error("the proxy forwarded a client certificate without a URI SAN")]
    NoUri,
    /// The forwarded `URI` is not a SPIFFE ID.
    #[error("the forwarded URI is not a SPIFFE ID: {0}")]
    NotSpiffe(#[source] SpiffeIdError),
    /// The element's `By` is not the proxy that sent it.
    #[error("the forwarded element names another proxy in By")]
    ByMismatch,
}

/// One element of an XFCC header: what one proxy saw of its client's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct XfccElement {
    /// `By`: the proxy's own URI SANs.
    pub by: Vec<String>,
    /// `Hash`: the SHA-256 of the client certificate, hex.
    pub hash: Option<String>,
    /// `URI`: the client certificate's URI SAN.
    pub uri: Option<String>,
    /// `DNS`: the client certificate's DNS SANs.
    pub dns: Vec<String>,
    /// `Subject`: the client certificate's subject.
    pub subject: Option<String>,
    /// `Cert`: the URL-encoded PEM client certificate, as sent.
    pub cert: Option<String>,
    /// `Chain`: the URL-encoded PEM client chain, as sent.
    pub chain: Option<String>,
}

/// Parses an XFCC header value: elements separated by `,`, each a `;`-separated list of
/// `Key=Value` pairs (keys `By`, `Hash`, `Cert`, `Chain`, `Subject`, `URI`, `DNS`,
/// case-insensitive); a value may be double-quoted, and inside quotes `\"` and `\\` escape
/// and `,`, `;`, `=` are literal. Unknown keys are refused, not skipped: this header decides
/// identity.
///
/// ```
/// use portcullis_identity::parse_xfcc;
/// let elements = parse_xfcc(r#"By=spiffe://td/envoy;Hash=abc;Subject="CN=a,O=b";URI=spiffe://td/ci"#)?;
/// assert_eq!(elements[0].uri.as_deref(), Some("spiffe://td/ci"));
/// assert_eq!(elements[0].subject.as_deref(), Some("CN=a,O=b"));
/// # Ok::<(), portcullis_identity::XfccError>(())
/// ```
///
/// # Errors
///
/// An [`XfccError`].
pub fn parse_xfcc(header: &str) -> Result<Vec<XfccElement>, XfccError> {
    if header.len() > MAX_XFCC_LEN {
        return Err(XfccError::TooLong);
    }
    let mut elements = Vec::new();
    let mut element = XfccElement::default();
    let mut chars = header.chars().peekable();
    loop {
        // One `Key=Value` pair.
        let mut key = String::new();
        let mut assigned = false;
        for ch in chars.by_ref() {
            if ch == '=' {
                assigned = true;
                break;
            }
            if !(ch.is_ascii_alphanumeric() || ch == '-') {
                return Err(XfccError::Malformed(format!("unexpected {ch:?} in a key")));
            }
            key.push(ch);
        }
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || !assigned {
            return Err(XfccError::Malformed(
                "an empty key, or a key without `=`".into(),
            ));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                match ch {
                    '\\' => match chars.next() {
                        Some(escaped @ ('"' | '\\')) => value.push(escaped),
                        _ => {
                            return Err(XfccError::Malformed(
                                "a backslash in a quoted value escapes only `\"` or `\\`".into(),
                            ));
                        }
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    other => value.push(other),
                }
            }
            if !closed {
                return Err(XfccError::Malformed("an unterminated quoted value".into()));
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch == ';' || ch == ',' {
                    break;
                }
                if ch == '"' || ch == '=' || ch.is_control() {
                    return Err(XfccError::Malformed(format!(
                        "unexpected {ch:?} in an unquoted value"
                    )));
                }
                value.push(ch);
                chars.next();
            }
        }
        match key.as_str() {
            "by" => element.by.push(value),
            "dns" => element.dns.push(value),
            "hash" => set_once(&mut element.hash, value, "Hash")?,
            "uri" => set_once(&mut element.uri, value, "URI")?,
            "subject" => set_once(&mut element.subject, value, "Subject")?,
            "cert" => set_once(&mut element.cert, value, "Cert")?,
            "chain" => set_once(&mut element.chain, value, "Chain")?,
            _ => {
                let shown: String = key.chars().take(32).collect();
                return Err(XfccError::Malformed(format!("unknown key {shown:?}")));
            }
        }
        match chars.next() {
            None => {
                elements.push(element);
                break;
            }
            Some(';') => {}
            Some(',') => {
                elements.push(std::mem::take(&mut element));
                if elements.len() == MAX_XFCC_ELEMENTS {
                    return Err(XfccError::TooManyElements);
                }
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            Some(other) => {
                return Err(XfccError::Malformed(format!(
                    "unexpected {other:?} after a quoted value"
                )));
            }
        }
    }
    Ok(elements)
}

fn set_once(slot: &mut Option<String>, value: String, key: &str) -> Result<(), XfccError> {
    if slot.is_some() {
        return Err(XfccError::Malformed(format!(
            "{key} appears twice in an element"
        )));
    }
    *slot = Some(value);
    Ok(())
}

/// Which direct peers may forward client identities in XFCC (the proxies' own mTLS SPIFFE
/// IDs), and how the forwarded identity is read.
///
/// The identity is the `URI` of the *last* element: the one the proxy that connected to us
/// appended about its own client (Envoy's `APPEND_FORWARD` and `SANITIZE_SET` both put it
/// last). A `By` in that element, if present, must name the proxy itself.
#[derive(Debug, Clone, Default)]
pub struct XfccPolicy {
    proxies: Vec<SpiffeIdPattern>,
}

/// What a request's XFCC header, judged by an [`XfccPolicy`], says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// No XFCC header: the direct peer is the caller.
    Direct,
    /// A trusted proxy connected without an XFCC header: its client presented no
    /// certificate, so the caller has no peer identity (and may authenticate otherwise).
    /// Never the proxy's own identity.
    Anonymous,
    /// A trusted proxy forwarded this client SPIFFE ID.
    Client(SpiffeId),
}

impl XfccPolicy {
    /// No proxy is trusted: every XFCC header is refused.
    pub fn new() -> Self {
        XfccPolicy::default()
    }

    /// Trusts direct peers matching `pattern` to forward client identities.
    #[must_use]
    pub fn proxy(mut self, pattern: SpiffeIdPattern) -> Self {
        self.proxies.push(pattern);
        self
    }

    /// Whether `peer` is a configured proxy.
    pub fn is_proxy(&self, peer: &SpiffeId) -> bool {
        self.proxies.iter().any(|p| p.matches(peer))
    }

    /// Judges a request: `direct_peer` is the TLS-verified SPIFFE ID of the connection (if
    /// any), `headers` every XFCC header value of the request.
    ///
    /// # Errors
    ///
    /// [`XfccError::NotFromProxy`] for a header from anyone but a configured proxy,
    /// [`XfccError::Repeated`] for several headers, and parse errors.
    pub fn judge<'a>(
        &self,
        direct_peer: Option<&SpiffeId>,
        headers: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Forwarded, XfccError> {
        let mut headers = headers.into_iter();
        let first = headers.next();
        let proxy = direct_peer.filter(|peer| self.is_proxy(peer));
        let Some(value) = first else {
            return Ok(if proxy.is_some() {
                Forwarded::Anonymous
            } else {
                Forwarded::Direct
            });
        };
        let Some(proxy) = proxy else {
            return Err(XfccError::NotFromProxy);
        };
        if headers.next().is_some() {
            return Err(XfccError::Repeated);
        }
        let text = std::str::from_utf8(value)
            .map_err(|_| XfccError::Malformed("not valid UTF-8".into()))?;
        let elements = parse_xfcc(text)?;
        let last = elements
            .last()
            .ok_or_else(|| XfccError::Malformed("no element".into()))?;
        if !last.by.is_empty() && !last.by.iter().any(|by| by == proxy.as_str()) {
            return Err(XfccError::ByMismatch);
        }
        let uri = last.uri.as_deref().ok_or(XfccError::NoUri)?;
        SpiffeId::parse(uri)
            .map(Forwarded::Client)
            .map_err(XfccError::NotSpiffe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let e = parse_xfcc(
            r#"By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com"#,
        )
        .unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].by, ["http://frontend.lyft.com"]);
        assert_eq!(e[0].uri.as_deref(), Some("http://testclient.lyft.com"));
        assert_eq!(
            e[0].subject.as_deref(),
            Some("/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client")
        );
        let two = parse_xfcc(
            r#"By=spiffe://td/a;URI=spiffe://td/c1, By=spiffe://td/b;URI=spiffe://td/c2;DNS=x;DNS=y"#,
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].uri.as_deref(), Some("spiffe://td/c2"));
        assert_eq!(two[1].dns, ["x", "y"]);
        let quoted = parse_xfcc(r#"Subject="a\"b\\c;d,e";uri="spiffe://td/q""#).unwrap();
        assert_eq!(quoted[0].subject.as_deref(), Some("a\"b\\c;d,e"));
        assert_eq!(quoted[0].uri.as_deref(), Some("spiffe://td/q"));
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "URI",
            "=x",
            "Foo=bar",
            "URI=a;URI=b",
            "Subject=\"open",
            "Subject=\"a\\nb\"",
            "Subject=\"a\"x",
            "URI=a\"b",
            "URI=a=b",
            "URI=a;",
            "URI=a,",
            "By=x;;URI=a",
        ] {
            assert!(parse_xfcc(bad).is_err(), "{bad:?}");
        }
        let many = vec!["URI=spiffe://td/a"; MAX_XFCC_ELEMENTS + 1].join(",");
        assert_eq!(parse_xfcc(&many), Err(XfccError::TooManyElements));
        assert_eq!(
            parse_xfcc(&"a".repeat(MAX_XFCC_LEN + 1)),
            Err(XfccError::TooLong)
        );
    }

    #[test]
    fn only_proxies_forward() {
        let proxy: SpiffeId = "spiffe://td/envoy".parse().unwrap();
        let client: SpiffeId = "spiffe://td/ci".parse().unwrap();
        let policy = XfccPolicy::new().proxy(SpiffeIdPattern::exact(proxy.clone()));
        let header = b"By=spiffe://td/envoy;URI=spiffe://td/ci".as_slice();
        assert_eq!(
            policy.judge(Some(&proxy), [header]),
            Ok(Forwarded::Client(client.clone()))
        );
        assert_eq!(
            policy.judge(Some(&client), [header]),
            Err(XfccError::NotFromProxy)
        );
        assert_eq!(policy.judge(None, [header]), Err(XfccError::NotFromProxy));
        assert_eq!(
            XfccPolicy::new().judge(Some(&proxy), [header]),
            Err(XfccError::NotFromProxy)
        );
        assert_eq!(policy.judge(Some(&client), []), Ok(Forwarded::Direct));
        assert_eq!(policy.judge(Some(&proxy), []), Ok(Forwarded::Anonymous));
        assert_eq!(
            policy.judge(Some(&proxy), [header, header]),
            Err(XfccError::Repeated)
        );
        assert_eq!(
            policy.judge(
                Some(&proxy),
                [b"By=spiffe://td/other;URI=spiffe://td/ci".as_slice()]
            ),
            Err(XfccError::ByMismatch)
        );
        assert_eq!(
            policy.judge(Some(&proxy), [b"Hash=ab".as_slice()]),
            Err(XfccError::NoUri)
        );
        assert!(matches!(
            policy.judge(Some(&proxy), [b"URI=https://x".as_slice()]),
            Err(XfccError::NotSpiffe(_))
        ));
    }
}
