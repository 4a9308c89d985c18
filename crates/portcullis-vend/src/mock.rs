//! [`mockall`] mocks of this crate's traits (feature `mock`), for unit tests of code that
//! takes a [`StsBackend`]. Integration tests should use a real STS (`moto_server` in this
//! workspace's tests).
//!
//! ```
//! use portcullis_vend::mock::MockStsBackend;
//! use portcullis_vend::{StsBackend, VendError};
//! let mut sts = MockStsBackend::new();
//! // Every AssumeRole call fails as a throttled STS would (`.times(n)` checks the count).
//! sts.expect_assume_role()
//!     .returning(|_| Err(VendError::Throttled { attempts: 3 }));
//! let sts: std::sync::Arc<dyn StsBackend> = std::sync::Arc::new(sts);
//! # let _ = sts;
//! ```

#![allow(missing_docs, reason = "mockall generates the items")]

use async_trait::async_trait;

use crate::{AssumeRoleRequest, Credentials, StsBackend, VendError};

mockall::mock! {
    /// A mock [`StsBackend`].
    pub StsBackend {}

    #[async_trait]
    impl StsBackend for StsBackend {
        async fn assume_role(&self, request: &AssumeRoleRequest) -> Result<Credentials, VendError>;
    }
}

impl std::fmt::Debug for MockStsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockStsBackend")
    }
}
