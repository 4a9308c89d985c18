/// Why an approval operation failed. No error ever counts as an approval.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// The request to create is invalid (no approvers, too few, bad reason…).
    #[error("invalid approval request: {0}")]
    InvalidRequest(String),
    /// The requester tried to approve their own request.
    #[error("you cannot approve your own request")]
    SelfApproval,
    /// The approver is not allowed to approve this request.
    #[error("not an eligible approver: {0}")]
    NotEligible(String),
    /// This approver has already voted on this request.
    #[error("{0} has already voted on this request")]
    AlreadyVoted(String),
    /// The request is no longer pending.
    #[error("the request is {0}, not pending")]
    NotPending(&'static str),
    /// No such request.
    #[error("no approval request `{0}`")]
    UnknownRequest(String),
    /// The second factor was not confirmed; nothing was recorded as approval.
    #[error("second factor `{factor}`: {outcome}")]
    FactorFailed {
        /// The factor's name.
        factor: String,
        /// What happened (timeout, error…).
        outcome: String,
    },
    /// No second factor with this name is configured.
    #[error("no second factor named `{0}`")]
    UnknownFactor(String),
    /// The receipt does not fit this request, was forged, or has expired.
    #[error("invalid approval receipt: {0}")]
    InvalidReceipt(String),
    /// The receipt was already used.
    #[error("this approval receipt was already used")]
    ReceiptUsed,
    /// The approval store failed.
    #[error("approval store: {0}")]
    Store(String),
    /// Configuration is invalid; the message says what to fix.
    #[error("approval configuration: {0}")]
    Config(String),
    /// A cryptographic operation failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// A name was invalid.
    #[error(transparent)]
    Vocabulary(#[from] portcullis_core::Error),
    /// A TOTP code or enrollment was refused; nothing counts as confirmed.
    #[error("TOTP: {0}")]
    Totp(#[from] TotpError),
}

/// Why a TOTP code or enrollment step was refused. None of these confirms anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TotpError {
    /// The code is not the configured number of ASCII digits.
    #[error("a code has exactly {0} digits")]
    Malformed(u32),
    /// The user has no confirmed secret (none at all, or only a pending enrollment).
    #[error("no confirmed TOTP secret is enrolled for `{0}`")]
    NotEnrolled(String),
    /// The code matches no step in the skew window.
    #[error("wrong code")]
    WrongCode,
    /// A code of this step or a newer one was already used by this user.
    #[error("this code (or a newer one) was already used")]
    Replayed,
    /// The user already has a confirmed secret: remove it before enrolling again.
    #[error("`{0}` already has a confirmed TOTP secret; remove it before enrolling again")]
    AlreadyEnrolled(String),
    /// There is no pending enrollment to confirm (never begun, already confirmed, removed,
    /// or replaced by a newer one while confirming).
    #[error("`{0}` has no pending TOTP enrollment to confirm; begin one first")]
    NoPendingEnrollment(String),
    /// A user or issuer name cannot go into an enrollment URI.
    #[error("invalid TOTP enrollment label: {0}")]
    InvalidLabel(String),
    /// Too many wrong codes for this user lately: every code is refused, even a right one,
    /// until the window has passed.
    #[error("too many wrong TOTP codes; try again in {0} s")]
    TooManyAttempts(u64),
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for ApprovalError {
    fn from(err: sqlx::Error) -> Self {
        ApprovalError::Store(err.to_string())
    }
}
