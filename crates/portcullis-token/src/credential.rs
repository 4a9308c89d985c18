//! Credentials as they arrive in an HTTP `Authorization` header.

use std::fmt;

use crate::AuthError;

/// The longest `Authorization` header accepted, in bytes. JWTs with many groups reach a few
/// KiB; anything beyond this is refused before any parsing.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// How the credential was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `Authorization: token <t>`, Teletraan style.
    Token,
    /// `Authorization: Bearer <t>` (RFC 6750).
    Bearer,
}

/// A secret presented by a caller. `Debug` shows the scheme and length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    scheme: Scheme,
    secret: String,
}

impl Credential {
    /// A credential from its parts.
    ///
    /// # Errors
    ///
    /// [`AuthError::MalformedHeader`] if the secret is empty, longer than
    /// [`MAX_HEADER_LEN`], or has characters outside printable ASCII without spaces.
    pub fn new(scheme: Scheme, secret: impl Into<String>) -> Result<Self, AuthError> {
        let secret = secret.into();
        check_secret(secret.as_bytes())?;
        Ok(Credential { scheme, secret })
    }

    /// Parses an `Authorization` header value: `token <t>` or `Bearer <t>` (scheme
    /// case-insensitive, one or more spaces). Raw bytes are accepted so that a header that is
    /// not UTF-8 is a typed error too.
    ///
    /// ```
    /// use portcullis_token::{Credential, Scheme};
    /// let c = Credential::from_authorization(b"token pcs_abc")?;
    /// assert_eq!(c.scheme(), Scheme::Token);
    /// assert_eq!(c.secret(), "pcs_abc");
    /// assert!(Credential::from_authorization(b"Basic dXNlcjpwdw==").is_err());
    /// # Ok::<(), portcullis_token::AuthError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AuthError::MalformedHeader`] for an oversized, non-ASCII or incomplete header;
    /// [`AuthError::UnsupportedScheme`] for a scheme other than `token` or `Bearer`.
    pub fn from_authorization(header: &[u8]) -> Result<Self, AuthError> {
        if header.len() > MAX_HEADER_LEN {
            return Err(AuthError::MalformedHeader(format!(
                "longer than {MAX_HEADER_LEN} bytes"
            )));
        }
        let text = std::str::from_utf8(header)
            .map_err(|_| AuthError::MalformedHeader("not valid UTF-8".into()))?
            .trim_matches(|c| c == ' ' || c == '\t');
        let Some((scheme, rest)) = text.split_once([' ', '\t']) else {
            return Err(if text.is_empty() {
                AuthError::MalformedHeader("empty".into())
            } else {
                AuthError::MalformedHeader(
                    "expected `<scheme> <token>`, e.g. `token <token>` or `Bearer <token>`".into(),
                )
            });
        };
        let scheme = if scheme.eq_ignore_ascii_case("token") {
            Scheme::Token
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Scheme::Bearer
        } else {
            let shown: String = scheme.chars().take(32).collect();
            return Err(AuthError::UnsupportedScheme(
                shown.escape_default().to_string(),
            ));
        };
        Credential::new(scheme, rest.trim_start_matches([' ', '\t']))
    }

    /// How it was presented.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The secret itself. Never log it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether the secret has the shape of a JWT (three base64url parts).
    pub fn looks_like_jwt(&self) -> bool {
        let mut parts = self.secret.split('.');
        matches!(
            (parts.next(), parts.next(), parts.next(), parts.next()),
            (Some(a), Some(b), Some(_), None) if !a.is_empty() && !b.is_empty()
        )
    }
}

fn check_secret(secret: &[u8]) -> Result<(), AuthError> {
    if secret.is_empty() {
        return Err(AuthError::MalformedHeader("the token is missing".into()));
    }
    if secret.len() > MAX_HEADER_LEN {
        return Err(AuthError::MalformedHeader(format!(
            "the token is longer than {MAX_HEADER_LEN} bytes"
        )));
    }
    if let Some(bad) = secret.iter().find(|b| !b.is_ascii_graphic()) {
        return Err(AuthError::MalformedHeader(format!(
            "the token contains byte {bad:#04x}; only printable ASCII without spaces is allowed"
        )));
    }
    Ok(())
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("scheme", &self.scheme)
            .field("len", &self.secret.len())
            .finish_non_exhaustive()
    }
}

/// A peer identity the transport already verified: the URI SAN (for a SPIFFE X.509-SVID,
/// the SPIFFE ID) of a client certificate whose chain a mutual-TLS verifier accepted, handed
/// to [`Authenticator::authenticate_peer`](crate::Authenticator::authenticate_peer).
///
/// Constructing one asserts that verification happened: only a TLS layer that checked the
/// certificate (such as `portcullis-identity`'s verifiers) should build it, never code that
/// read the URI from a request header or body. It is not a secret, so `Debug` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifiedPeer {
    uri: String,
}

impl VerifiedPeer {
    /// A peer whose certificate was verified and names `uri`.
    pub fn new(uri: impl Into<String>) -> Self {
        VerifiedPeer { uri: uri.into() }
    }

    /// The verified URI (a SPIFFE ID for an X.509-SVID).
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        for (header, scheme) in [
            ("token abc", Scheme::Token),
            ("Token  abc", Scheme::Token),
            ("Bearer abc", Scheme::Bearer),
            ("bearer\tabc ", Scheme::Bearer),
        ] {
            let c = Credential::from_authorization(header.as_bytes()).unwrap();
            assert_eq!((c.scheme(), c.secret()), (scheme, "abc"), "{header}");
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let long = format!("Bearer {}", "a".repeat(MAX_HEADER_LEN));
        for header in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Basic abc",
            b"Bearer a b",
            b"Bearer \xff\xfe",
            b"\xff abc",
            b"Bearer a\x00b",
            long.as_bytes(),
        ] {
            assert!(
                Credential::from_authorization(header).is_err(),
                "{header:?}"
            );
        }
        assert!(matches!(
            Credential::from_authorization(b"Digest x"),
            Err(AuthError::UnsupportedScheme(s)) if s == "Digest"
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = Credential::from_authorization(b"token sekrit").unwrap();
        assert!(!format!("{c:?}").contains("sekrit"));
    }

    #[test]
    fn jwt_shape() {
        let jwt = |s: &str| Credential::new(Scheme::Bearer, s).unwrap().looks_like_jwt();
        assert!(jwt("a.b.c"));
        assert!(jwt("a.b."));
        assert!(!jwt("a.b"));
        assert!(!jwt("a.b.c.d"));
        assert!(!jwt(".b.c"));
    }
}
