//! [`mockall`] mocks of this crate's traits (feature `mock`), for unit tests of code that
//! takes an [`ApprovalStore`], a [`TotpStore`] or a [`SecondFactor`]. Integration tests should
//! use the memory, SQLite or PostgreSQL stores and the real factors.
//!
//! ```
//! use portcullis_approval::mock::MockSecondFactor;
//! use portcullis_approval::{FactorOutcome, SecondFactor};
//! let mut push = MockSecondFactor::new();
//! push.expect_factor_name().return_const("duo");
//! push.expect_answer()
//!     .withf(|approver, _prompt, code| approver.subject() == "carol" && code.is_none())
//!     .returning(|_, _, _| FactorOutcome::Timeout);
//! assert_eq!(SecondFactor::name(&push), "duo");
//! ```

#![allow(missing_docs, reason = "mockall generates the items")]

use async_trait::async_trait;

use portcullis_core::Principal;

use crate::{
    ApprovalError, ApprovalRecord, ApprovalStore, Confirmation, FactorOutcome, Prompt,
    RequestState, SealedTotpSecret, SecondFactor, StoredTotpSecret, TotpStore, Vote,
};

mockall::mock! {
    /// A mock [`ApprovalStore`].
    pub ApprovalStore {}

    #[async_trait]
    impl ApprovalStore for ApprovalStore {
        async fn create(&self, record: &ApprovalRecord) -> Result<(), ApprovalError>;
        async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, ApprovalError>;
        async fn add_vote(
            &self,
            id: &str,
            vote: &Vote,
            state: RequestState,
        ) -> Result<(), ApprovalError>;
        async fn set_state(&self, id: &str, state: RequestState) -> Result<(), ApprovalError>;
        async fn consume_receipt(&self, id: &str) -> Result<bool, ApprovalError>;
        async fn list(&self, state: RequestState) -> Result<Vec<ApprovalRecord>, ApprovalError>;
    }
}

mockall::mock! {
    /// A mock [`TotpStore`].
    pub TotpStore {}

    #[async_trait]
    impl TotpStore for TotpStore {
        async fn claim_step(&self, user: &str, step: u64) -> Result<bool, ApprovalError>;
        async fn put_pending_secret(
            &self,
            user: &str,
            sealed: &SealedTotpSecret,
        ) -> Result<(), ApprovalError>;
        async fn confirm_secret(
            &self,
            user: &str,
            sealed: &SealedTotpSecret,
        ) -> Result<bool, ApprovalError>;
        async fn secret(&self, user: &str) -> Result<Option<StoredTotpSecret>, ApprovalError>;
        async fn remove_secret(&self, user: &str) -> Result<bool, ApprovalError>;
    }
}

mockall::mock! {
    /// A mock [`SecondFactor`]. Its trait methods answer through two expectations:
    /// `factor_name` (what [`SecondFactor::name`] returns) and `answer` (what
    /// [`SecondFactor::confirm`] returns, given the approver, the prompt and the code).
    pub SecondFactor {
        /// What `name` answers.
        pub fn factor_name(&self) -> &'static str;
        /// What `confirm` answers.
        pub fn answer(&self, approver: &Principal, prompt: &Prompt, code: Option<String>)
            -> FactorOutcome;
    }
}

#[async_trait]
impl SecondFactor for MockSecondFactor {
    fn name(&self) -> &str {
        self.factor_name()
    }

    async fn confirm(&self, confirmation: Confirmation<'_>) -> FactorOutcome {
        self.answer(
            confirmation.approver,
            confirmation.prompt,
            confirmation.code.map(str::to_owned),
        )
    }
}

macro_rules! debug_as_name {
    ($($mock:ident),*) => {$(
        impl std::fmt::Debug for $mock {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($mock))
            }
        }
    )*};
}

debug_as_name!(MockApprovalStore, MockTotpStore, MockSecondFactor);
