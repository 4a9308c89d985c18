//! Where requests and votes live, so an approval survives a restart and can be audited; and
//! the TOTP state (used steps, sealed enrolled secrets), so a code is never accepted twice.

mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

use std::fmt;

use async_trait::async_trait;

pub use memory::MemoryApprovalStore;
#[cfg(feature = "postgres")]
pub use sql::PostgresApprovalStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteApprovalStore;

use crate::{ApprovalError, ApprovalRecord, RequestState, SealedTotpSecret, Vote};

/// A durable home for approval requests and their votes. Async, object safe.
#[async_trait]
pub trait ApprovalStore: Send + Sync + fmt::Debug {
    /// Stores a new request (state pending, no votes).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`], also when the id exists.
    async fn create(&self, record: &ApprovalRecord) -> Result<(), ApprovalError>;

    /// A request with its votes.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, ApprovalError>;

    /// Records a vote and the state it leads to, atomically; an approver votes once.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::AlreadyVoted`] if this approver voted;
    /// [`ApprovalError::UnknownRequest`] if there is no such request; [`ApprovalError::Store`].
    async fn add_vote(
        &self,
        id: &str,
        vote: &Vote,
        state: RequestState,
    ) -> Result<(), ApprovalError>;

    /// Sets the state (expiry).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn set_state(&self, id: &str, state: RequestState) -> Result<(), ApprovalError>;

    /// Marks the receipt of an approved request used; `false` if it was used already or the
    /// request is not approved. Atomic: of two concurrent calls, one wins.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn consume_receipt(&self, id: &str) -> Result<bool, ApprovalError>;

    /// Requests in `state`, oldest first.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn list(&self, state: RequestState) -> Result<Vec<ApprovalRecord>, ApprovalError>;
}

/// Whether an enrolled TOTP secret confirms anything yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TotpEnrollmentState {
    /// Generated and shown to the user, not yet confirmed with a code: approves nothing.
    Pending,
    /// Confirmed with a code from the user's app: their codes are checked against it.
    Confirmed,
}

/// A user's enrolled TOTP secret as a [`TotpStore`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTotpSecret {
    /// The secret, sealed for this user under the embedder's
    /// [`TotpSecretKey`](crate::TotpSecretKey).
    pub sealed: SealedTotpSecret,
    /// Pending or confirmed.
    pub state: TotpEnrollmentState,
}

impl StoredTotpSecret {
    /// A stored secret in `state`.
    pub fn new(sealed: SealedTotpSecret, state: TotpEnrollmentState) -> Self {
        StoredTotpSecret { sealed, state }
    }
}

/// Durable TOTP state, per user: the newest time step a code was accepted for (replay
/// protection that survives restarts and is shared by every instance on the store), and the
/// enrolled secret, sealed, pending or confirmed. Async, object safe.
///
/// Stores never see a secret in the clear: sealing and opening happen in
/// [`TotpFactor`](crate::TotpFactor) with the [`TotpSecretKey`](crate::TotpSecretKey).
#[async_trait]
pub trait TotpStore: Send + Sync + fmt::Debug {
    /// Records `step` as `user`'s newest used step iff it is newer than the stored one, in
    /// one atomic operation: `true` if it was (the code counts), `false` if a code of this
    /// step or a newer one was already used. Of concurrent claims of one step, exactly one
    /// returns `true`.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`] (the code must then be refused).
    async fn claim_step(&self, user: &str, step: u64) -> Result<bool, ApprovalError>;

    /// Stores `sealed` as `user`'s *pending* secret, replacing an earlier pending one.
    ///
    /// # Errors
    ///
    /// [`TotpError::AlreadyEnrolled`](crate::TotpError::AlreadyEnrolled) (wrapped in
    /// [`ApprovalError::Totp`]) if the user has a confirmed secret, which is left as it is;
    /// [`ApprovalError::Store`].
    async fn put_pending_secret(
        &self,
        user: &str,
        sealed: &SealedTotpSecret,
    ) -> Result<(), ApprovalError>;

    /// Marks `user`'s pending secret confirmed iff it is still exactly `sealed` (not replaced
    /// by a newer enrollment meanwhile); `false` otherwise.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn confirm_secret(
        &self,
        user: &str,
        sealed: &SealedTotpSecret,
    ) -> Result<bool, ApprovalError>;

    /// `user`'s secret, pending or confirmed.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn secret(&self, user: &str) -> Result<Option<StoredTotpSecret>, ApprovalError>;

    /// Removes `user`'s secret, pending or confirmed; `false` if there was none. Used steps
    /// stay.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn remove_secret(&self, user: &str) -> Result<bool, ApprovalError>;
}
