//! [`mockall`] mocks of this crate's traits (feature `mock`), for unit tests of code that
//! takes an [`Authorizer`] or a [`Clock`]. Integration tests
//! should use the real implementations.
//!
//! ```
//! use portcullis_core::mock::MockAuthorizer;
//! use portcullis_core::{Action, AuthMethod, Authorizer, Decision, Principal, PrincipalKind};
//!
//! let mut authorizer = MockAuthorizer::new();
//! authorizer
//!     .expect_authorize()
//!     .withf(|r| r.principal.subject() == "alice" && r.context.get("ticket").is_some())
//!     .returning(|_| Decision::allow("ticket present"));
//! authorizer.expect_authorize().returning(|_| Decision::deny("no ticket"));
//! let alice = Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC).build()?;
//! let stage = "env_stage:checkout/prod".parse()?;
//! // `check` keeps its default: it asks `authorize` with an empty context.
//! assert!(!authorizer.check(&alice, &Action::DEPLOY, &stage).is_allowed());
//! # Ok::<(), portcullis_core::Error>(())
//! ```

#![allow(missing_docs, reason = "mockall generates the items")]

use std::time::SystemTime;

use crate::{AccessRequest, Authorizer, Clock, Decision};

mockall::mock! {
    /// A mock [`Authorizer`]: set expectations on `authorize`; `check` and `name` keep their
    /// defaults.
    pub Authorizer {}

    impl Authorizer for Authorizer {
        fn authorize<'a>(&self, request: &AccessRequest<'a>) -> Decision;
    }
}

mockall::mock! {
    /// A mock [`Clock`].
    pub Clock {}

    impl Clock for Clock {
        fn now(&self) -> SystemTime;
    }
}

impl std::fmt::Debug for MockClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockClock")
    }
}

impl std::fmt::Debug for MockAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockAuthorizer")
    }
}
