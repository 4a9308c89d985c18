use portcullis_directory::DirectoryError;

/// Why a credential was refused or a token operation failed.
///
/// [`AuthError::Unrecognized`] and [`AuthError::UnknownIssuer`] mean "not mine": an
/// [`AuthChain`](crate::AuthChain) tries its next method. Every other error is final.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carried no credential.
    #[error(
        "no credential: send `Authorization: token <token>` or `Authorization: Bearer <token>`"
    )]
    MissingCredential,
    /// The `Authorization` header could not be read.
    #[error("malformed Authorization header: {0}")]
    MalformedHeader(String),
    /// The `Authorization` header uses a scheme other than `token` or `Bearer`.
    #[error("unsupported authorization scheme `{0}`: use `token` or `Bearer`")]
    UnsupportedScheme(String),
    /// The token is not well formed (truncated JWT, bad base64, bad checksum…).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// This method does not handle this kind of credential.
    #[error("no enabled authentication method accepts this credential")]
    Unrecognized,
    /// No authentication method is enabled, so every request is refused.
    #[error("no authentication method is enabled; every request is refused")]
    NoMethods,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token is not valid yet (`nbf` in the future).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// The token's algorithm is not on the allow-list, or does not fit the key.
    #[error("token algorithm `{0}` is not allowed")]
    DisallowedAlgorithm(String),
    /// The token was issued by an issuer this method does not trust.
    #[error("unknown token issuer `{0}`")]
    UnknownIssuer(String),
    /// The token is not meant for this service.
    #[error("the token's audience does not include this service")]
    WrongAudience,
    /// No key of the issuer has this key id, even after refreshing the key set.
    #[error("no signing key `{0}` at the issuer")]
    UnknownKey(String),
    /// A claim the configuration requires is missing or has the wrong type.
    #[error("claim `{0}` is missing or invalid")]
    MissingClaim(String),
    /// The token is unknown or inactive. Deliberately says no more.
    #[error("invalid token")]
    InvalidToken,
    /// The token was revoked.
    #[error("the token was revoked")]
    Revoked,
    /// The identity provider could not be reached, timed out or answered garbage.
    #[error("identity provider: {0}")]
    Provider(String),
    /// The token store failed.
    #[error("token store: {0}")]
    Store(String),
    /// A token with this name already exists, or a similar conflict.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A request to issue or manage a token was invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The configuration is invalid; the message says what to fix.
    #[error("authentication configuration: {0}")]
    Config(String),
    /// A cryptographic operation failed (random source, key parsing, signing).
    #[error("crypto: {0}")]
    Crypto(String),
    /// Password login failed in the directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Too many failed password logins for this user lately: every login of the user is
    /// refused, a right one too, for this many more seconds.
    #[error("too many failed logins for this user; try again in {0} s")]
    TooManyAttempts(u64),
    /// A name or principal was invalid.
    #[error(transparent)]
    Vocabulary(#[from] portcullis_core::Error),
}

impl AuthError {
    /// Whether an [`AuthChain`](crate::AuthChain) should try its next method.
    pub fn is_not_mine(&self) -> bool {
        matches!(self, AuthError::Unrecognized | AuthError::UnknownIssuer(_))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for AuthError {
    fn from(err: sqlx::Error) -> Self {
        AuthError::Store(err.to_string())
    }
}
