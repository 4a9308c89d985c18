//! [`mockall`] mocks of this crate's traits (feature `mock`), for unit tests of code that
//! takes a [`PolicyEngine`] (or, with feature `sources`, a `BundleSource`). Integration
//! tests should compile real bundles ([`RegoEngine`](crate::RegoEngine)).
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use portcullis_policy::mock::MockPolicyEngine;
//! use portcullis_policy::{Evaluation, PolicyEngine, PolicyError};
//! use serde_json::json;
//!
//! let mut engine = MockPolicyEngine::new();
//! engine
//!     .expect_evaluate_input()
//!     .withf(|path, input| path == "authz/allow" && input.is_some_and(|i| i["user"] == "alice"))
//!     .returning(|_, _| {
//!         Ok(Evaluation { result: Some(json!(true)), revisions: Arc::new(BTreeMap::new()) })
//!     });
//! engine.expect_evaluate_input().returning(|_, _| Err(PolicyError::NoPolicy));
//!
//! let allowed = engine.evaluate("authz/allow", &json!({"user": "alice"}))?;
//! assert_eq!(allowed.result, Some(json!(true)));
//! assert!(engine.evaluate("authz/allow", &json!({"user": "mallory"})).is_err());
//! # Ok::<(), PolicyError>(())
//! ```

#![allow(missing_docs, reason = "mockall generates the items")]

use serde_json::Value;

use crate::{Evaluation, PolicyEngine, PolicyError};

mockall::mock! {
    /// A mock [`PolicyEngine`]: set expectations on `evaluate_input`; `evaluate` keeps its
    /// default (it asks `evaluate_input`).
    pub PolicyEngine {}

    impl PolicyEngine for PolicyEngine {
        fn evaluate_input<'a>(
            &self,
            path: &str,
            input: Option<&'a Value>,
        ) -> Result<Evaluation, PolicyError>;
    }
}

#[cfg(feature = "sources")]
mockall::mock! {
    /// A mock `BundleSource`: set expectations on `name`, `fetch` and `activated`.
    pub BundleSource {}

    #[async_trait::async_trait]
    impl crate::BundleSource for BundleSource {
        fn name(&self) -> &str;
        async fn fetch(&mut self) -> Result<crate::Fetched, PolicyError>;
        fn activated(&mut self);
    }
}

impl std::fmt::Debug for MockPolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockPolicyEngine")
    }
}
