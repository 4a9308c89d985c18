//! Why a vend was refused or failed.

use portcullis_directory::DirectoryError;

/// Why no credentials were vended. Every variant means: nothing was vended.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum VendError {
    /// Only people and service accounts are vended credentials: a token's name is not a
    /// directory identity.
    #[error("{0} cannot be vended credentials: only users and service accounts can")]
    UnsupportedPrincipal(String),
    /// The user is in no group the mapping knows.
    #[error("{user} is in no group that maps to a role")]
    NoRecognisedGroup {
        /// The user.
        user: String,
    },
    /// A requested role is not one the user's groups grant.
    #[error("role `{role}` is not granted to {user} by any of their groups")]
    RoleNotAllowed {
        /// The user.
        user: String,
        /// The role asked for.
        role: String,
    },
    /// The roles resolve to more managed policies than one AssumeRole call takes.
    #[error(
        "{count} managed policies are mapped, at most {max} fit one session; request fewer roles"
    )]
    TooManyPolicies {
        /// How many.
        count: usize,
        /// The limit (10).
        max: usize,
    },
    /// The requested duration is outside what the base role allows.
    #[error("a session lasts {min}–{max} seconds, not {requested}")]
    InvalidDuration {
        /// Requested seconds.
        requested: u64,
        /// The shortest.
        min: u64,
        /// The longest.
        max: u64,
    },
    /// The user name cannot become a session name.
    #[error("invalid session name: {0}")]
    InvalidSessionName(String),
    /// The mapping configuration is invalid; the message says what to fix.
    #[error("vend configuration: {0}")]
    Config(String),
    /// The directory could not answer.
    #[error("directory: {0}")]
    Directory(String),
    /// STS refused the request (`MalformedPolicyDocument`, `PackedPolicyTooLarge`,
    /// `AccessDenied`, `ExpiredToken`…).
    #[error("STS refused: {code}: {message}")]
    Sts {
        /// The STS error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// STS kept throttling after the retries.
    #[error("STS is throttling; retried {attempts} times")]
    Throttled {
        /// Attempts made.
        attempts: u32,
    },
    /// STS could not be reached or answered nonsense.
    #[error("STS unavailable: {0}")]
    Unavailable(String),
}

impl From<DirectoryError> for VendError {
    fn from(err: DirectoryError) -> Self {
        VendError::Directory(err.to_string())
    }
}

impl VendError {
    /// A short machine-readable code for API answers (`no_matching_roles`, …).
    pub fn code(&self) -> &'static str {
        match self {
            VendError::UnsupportedPrincipal(_) => "unsupported_principal",
            VendError::NoRecognisedGroup { .. } => "no_matching_roles",
            VendError::RoleNotAllowed { .. } => "role_not_allowed",
            VendError::TooManyPolicies { .. } => "too_many_policies",
            VendError::InvalidDuration { .. } => "invalid_duration",
            VendError::InvalidSessionName(_) => "invalid_session_name",
            VendError::Config(_) => "configuration",
            VendError::Directory(_) => "directory_unavailable",
            VendError::Sts { .. } => "sts_refused",
            VendError::Throttled { .. } => "sts_throttled",
            VendError::Unavailable(_) => "sts_unavailable",
        }
    }

    /// Whether the caller asked for something they may not have (a 403), as opposed to a
    /// failure of the service or its dependencies.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            VendError::UnsupportedPrincipal(_)
                | VendError::NoRecognisedGroup { .. }
                | VendError::RoleNotAllowed { .. }
                | VendError::TooManyPolicies { .. }
                | VendError::InvalidDuration { .. }
                | VendError::InvalidSessionName(_)
        )
    }
}
