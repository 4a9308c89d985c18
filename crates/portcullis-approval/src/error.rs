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
}

#[cfg(feature = "sqlite")]
impl From<sqlx::Error> for ApprovalError {
    fn from(err: sqlx::Error) -> Self {
        ApprovalError::Store(err.to_string())
    }
}
