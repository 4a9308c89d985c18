/// Why a directory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The user is unknown or the password is wrong; deliberately the same error for both.
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// No such user.
    #[error("unknown user `{0}`")]
    UnknownUser(String),
    /// A user name or password that cannot be valid (empty, too long, control characters).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was invalid ("user name", "password").
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The directory's configuration is wrong; the message says what to fix.
    #[error("directory configuration: {0}")]
    Config(String),
    /// The directory could not be reached or answered with an error.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}
