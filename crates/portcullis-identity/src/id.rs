//! SPIFFE IDs, trust domains and ID patterns, parsed to the SPIFFE ID specification.

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID accepted, in bytes (the SPIFFE ID specification's URI limit).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// The longest trust domain accepted, in bytes (a DNS name's limit).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME: &str = "spiffe://";

/// Why a SPIFFE ID, trust domain or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// Nothing was given.
    #[error("a SPIFFE ID must not be empty")]
    Empty,
    /// Longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("a SPIFFE ID is at most {MAX_SPIFFE_ID_LEN} bytes; this one has {0}")]
    TooLong(usize),
    /// The scheme is not `spiffe://` (lower case).
    #[error("a SPIFFE ID starts with `spiffe://` (lower case)")]
    WrongScheme,
    /// `spiffe://` with nothing after it, or directly a path.
    #[error("the trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("a trust domain is at most {MAX_TRUST_DOMAIN_LEN} bytes; this one has {0}")]
    TrustDomainTooLong(usize),
    /// A port (`:`) after the trust domain.
    #[error("a SPIFFE ID has no port")]
    Port,
    /// User info (`@`) before the trust domain.
    #[error("a SPIFFE ID has no user info")]
    UserInfo,
    /// A query (`?`).
    #[error("a SPIFFE ID has no query")]
    Query,
    /// A fragment (`#`).
    #[error("a SPIFFE ID has no fragment")]
    Fragment,
    /// A character outside `[a-z0-9._-]` in the trust domain (upper case included).
    #[error(
        "the trust domain has {0:?}; only lower-case letters, digits, `.`, `-` and `_` are allowed"
    )]
    TrustDomainChar(char),
    /// A character outside `[A-Za-z0-9._-]` in a path segment (percent-encoding included).
    #[error("the path has {0:?}; only letters, digits, `.`, `-` and `_` are allowed")]
    PathChar(char),
    /// An empty path segment (`//` or a trailing `/`).
    #[error("the path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    /// A pattern's `*` somewhere other than a whole last segment.
    #[error("a pattern's `*` must be its whole last segment, as in `spiffe://example.org/ns/*`")]
    Wildcard,
}

/// A SPIFFE trust domain: the authority of a SPIFFE ID, such as `prod.example`.
///
/// ```
/// use portcullis_identity::TrustDomain;
/// let td: TrustDomain = "prod.example".parse()?;
/// assert_eq!(td.id().as_str(), "spiffe://prod.example");
/// assert!("Prod.example".parse::<TrustDomain>().is_err());
/// # Ok::<(), portcullis_identity::SpiffeIdError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name, or the ID of a trust domain (`spiffe://prod.example`).
    ///
    /// # Errors
    ///
    /// A [`SpiffeIdError`] naming the first problem.
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        if name.starts_with(SCHEME) {
            let id = SpiffeId::parse(name)?;
            return if id.path().is_empty() {
                Ok(id.trust_domain())
            } else {
                Err(SpiffeIdError::PathChar('/'))
            };
        }
        check_trust_domain(name)?;
        Ok(TrustDomain(name.to_owned()))
    }

    /// The name, such as `prod.example`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself: `spiffe://<name>`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            domain_end: SCHEME.len() + self.0.len(),
            text: format!("{SCHEME}{}", self.0),
        }
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustDomain::new(s)
    }
}

impl std::borrow::Borrow<str> for TrustDomain {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID, such as `spiffe://prod.example/ns/payments/sa/api`, validated to the SPIFFE ID
/// specification: scheme `spiffe`, a lower-case trust domain of `[a-z0-9._-]`, path segments
/// of `[A-Za-z0-9._-]` that are neither empty nor `.`/`..`, no port, user info, query or
/// fragment, at most [`MAX_SPIFFE_ID_LEN`] bytes.
///
/// ```
/// use portcullis_identity::{SpiffeId, SpiffeIdError};
/// let id: SpiffeId = "spiffe://prod.example/ns/payments/sa/api".parse()?;
/// assert_eq!(id.trust_domain().as_str(), "prod.example");
/// assert_eq!(id.path(), "/ns/payments/sa/api");
/// assert_eq!("spiffe://prod.example:443/x".parse::<SpiffeId>(), Err(SpiffeIdError::Port));
/// assert_eq!("spiffe://prod.example/a/../b".parse::<SpiffeId>(), Err(SpiffeIdError::DotSegment));
/// # Ok::<(), SpiffeIdError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    text: String,
    domain_end: usize,
}

impl SpiffeId {
    /// Parses and validates `input`.
    ///
    /// # Errors
    ///
    /// A [`SpiffeIdError`] naming the first problem.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong(input.len()));
        }
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or(SpiffeIdError::WrongScheme)?;
        let domain_len = rest.find('/').unwrap_or(rest.len());
        let (domain, path) = rest.split_at(domain_len);
        check_trust_domain(domain)?;
        check_path(path)?;
        Ok(SpiffeId {
            text: input.to_owned(),
            domain_end: SCHEME.len() + domain_len,
        })
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The trust domain's name, without allocating.
    pub fn trust_domain_name(&self) -> &str {
        self.text.get(SCHEME.len()..self.domain_end).unwrap_or("")
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The path: empty, or `/` followed by segments.
    pub fn path(&self) -> &str {
        self.text.get(self.domain_end..).unwrap_or("")
    }

    /// Whether `self` is `other` or below it (`spiffe://td/a/b` is below `spiffe://td/a`).
    pub fn is_at_or_below(&self, other: &SpiffeId) -> bool {
        self.text == other.text
            || (self.text.starts_with(&other.text)
                && self.text.as_bytes().get(other.text.len()) == Some(&b'/'))
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SpiffeId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Matches SPIFFE IDs: either one exact ID (`spiffe://prod.example/ci/deployer`) or, with a
/// last segment `*`, every ID strictly below a prefix, at any depth
/// (`spiffe://prod.example/ns/payments/*` matches `spiffe://prod.example/ns/payments/sa/api`
/// but not `spiffe://prod.example/ns/payments` itself). `spiffe://prod.example/*` matches
/// every workload of the trust domain.
///
/// ```
/// use portcullis_identity::{SpiffeId, SpiffeIdPattern};
/// let p: SpiffeIdPattern = "spiffe://prod.example/ns/payments/*".parse()?;
/// assert!(p.matches(&"spiffe://prod.example/ns/payments/sa/api".parse()?));
/// assert!(!p.matches(&"spiffe://prod.example/ns/payments".parse()?));
/// assert!(!p.matches(&"spiffe://prod.example/ns/payments-evil/x".parse()?));
/// # Ok::<(), portcullis_identity::SpiffeIdError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeIdPattern {
    base: SpiffeId,
    below: bool,
}

impl SpiffeIdPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    ///
    /// A [`SpiffeIdError`]; [`SpiffeIdError::Wildcard`] for a `*` that is not the whole last
    /// segment.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if let Some(base) = input.strip_suffix("/*") {
            if base.contains('*') {
                return Err(SpiffeIdError::Wildcard);
            }
            return Ok(SpiffeIdPattern {
                base: SpiffeId::parse(base)?,
                below: true,
            });
        }
        if input.contains('*') {
            return Err(SpiffeIdError::Wildcard);
        }
        Ok(SpiffeIdPattern {
            base: SpiffeId::parse(input)?,
            below: false,
        })
    }

    /// A pattern that matches exactly `id`.
    pub fn exact(id: SpiffeId) -> Self {
        SpiffeIdPattern {
            base: id,
            below: false,
        }
    }

    /// Whether `id` matches.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        if self.below {
            id.text.len() > self.base.text.len() && id.is_at_or_below(&self.base)
        } else {
            id.text == self.base.text
        }
    }

    /// The trust domain every match belongs to.
    pub fn trust_domain_name(&self) -> &str {
        self.base.trust_domain_name()
    }
}

impl FromStr for SpiffeIdPattern {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeIdPattern::parse(s)
    }
}

impl fmt::Display for SpiffeIdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.below {
            write!(f, "{}/*", self.base)
        } else {
            write!(f, "{}", self.base)
        }
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeIdPattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SpiffeIdPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn check_trust_domain(domain: &str) -> Result<(), SpiffeIdError> {
    if domain.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong(domain.len()));
    }
    for ch in domain.chars() {
        match ch {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            ':' => return Err(SpiffeIdError::Port),
            '@' => return Err(SpiffeIdError::UserInfo),
            '?' => return Err(SpiffeIdError::Query),
            '#' => return Err(SpiffeIdError::Fragment),
            other => return Err(SpiffeIdError::TrustDomainChar(other)),
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/' (it was split there); the first piece is the empty string before it.
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        for ch in segment.chars() {
            match ch {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                '?' => return Err(SpiffeIdError::Query),
                '#' => return Err(SpiffeIdError::Fragment),
                other => return Err(SpiffeIdError::PathChar(other)),
            }
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for (input, domain, path) in [
            ("spiffe://example.org", "example.org", ""),
            ("spiffe://example.org/a", "example.org", "/a"),
            ("spiffe://e-x_a.m9/A/b.c/d-e_F", "e-x_a.m9", "/A/b.c/d-e_F"),
            ("spiffe://td/...", "td", "/..."),
            ("spiffe://td/.a", "td", "/.a"),
        ] {
            let id = SpiffeId::parse(input).unwrap();
            assert_eq!(
                (id.trust_domain_name(), id.path()),
                (domain, path),
                "{input}"
            );
            assert_eq!(id.to_string(), input);
        }
    }

    #[test]
    fn invalid_ids() {
        use SpiffeIdError as E;
        let long = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        let long_domain = format!("spiffe://{}", "a".repeat(MAX_TRUST_DOMAIN_LEN + 1));
        for (input, err) in [
            ("", E::Empty),
            ("SPIFFE://td/a", E::WrongScheme),
            ("https://td/a", E::WrongScheme),
            ("spiffe:/td/a", E::WrongScheme),
            ("spiffe://", E::MissingTrustDomain),
            ("spiffe:///a", E::MissingTrustDomain),
            ("spiffe://TD/a", E::TrustDomainChar('T')),
            ("spiffe://td:8080/a", E::Port),
            ("spiffe://user@td/a", E::UserInfo),
            ("spiffe://td/a?x=1", E::Query),
            ("spiffe://td?x", E::Query),
            ("spiffe://td/a#f", E::Fragment),
            ("spiffe://td/a//b", E::EmptySegment),
            ("spiffe://td/a/", E::EmptySegment),
            ("spiffe://td/", E::EmptySegment),
            ("spiffe://td/./a", E::DotSegment),
            ("spiffe://td/a/..", E::DotSegment),
            ("spiffe://td/a%20b", E::PathChar('%')),
            ("spiffe://td/a b", E::PathChar(' ')),
            ("spiffe://t d/a", E::TrustDomainChar(' ')),
            ("spiffe://td/é", E::PathChar('é')),
            (long.as_str(), E::TooLong(long.len())),
            (
                long_domain.as_str(),
                E::TrustDomainTooLong(MAX_TRUST_DOMAIN_LEN + 1),
            ),
        ] {
            assert_eq!(SpiffeId::parse(input), Err(err), "{input}");
        }
        let at_limit = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN - 12));
        assert!(SpiffeId::parse(&at_limit).is_ok());
    }

    #[test]
    fn trust_domains() {
        assert_eq!(TrustDomain::new("td").unwrap().as_str(), "td");
        assert_eq!(TrustDomain::new("spiffe://td").unwrap().as_str(), "td");
        assert!(TrustDomain::new("spiffe://td/a").is_err());
        assert!(TrustDomain::new("").is_err());
        assert!(TrustDomain::new("td:1").is_err());
        assert_eq!(TrustDomain::new("td").unwrap().id().as_str(), "spiffe://td");
    }

    #[test]
    fn patterns() {
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        let p = SpiffeIdPattern::parse("spiffe://td/ns/pay/*").unwrap();
        assert!(p.matches(&id("spiffe://td/ns/pay/a")));
        assert!(p.matches(&id("spiffe://td/ns/pay/a/b/c")));
        assert!(!p.matches(&id("spiffe://td/ns/pay")));
        assert!(!p.matches(&id("spiffe://td/ns/payx/a")));
        assert!(!p.matches(&id("spiffe://other/ns/pay/a")));
        let all = SpiffeIdPattern::parse("spiffe://td/*").unwrap();
        assert!(all.matches(&id("spiffe://td/a")));
        assert!(!all.matches(&id("spiffe://td")));
        assert!(!all.matches(&id("spiffe://tdx/a")));
        let exact = SpiffeIdPattern::parse("spiffe://td/ci").unwrap();
        assert!(exact.matches(&id("spiffe://td/ci")));
        assert!(!exact.matches(&id("spiffe://td/ci/x")));
        for bad in [
            "spiffe://td/*/a",
            "spiffe://td/a*",
            "spiffe://*/a",
            "spiffe://td/a/**",
        ] {
            assert!(SpiffeIdPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(p.to_string(), "spiffe://td/ns/pay/*");
    }
}
