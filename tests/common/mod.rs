//! Helpers the end-to-end tests of the example binaries share. Each test crate uses a
//! subset of them.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    reason = "shared by test crates that each use a subset; a failed expectation is a test failure"
)]

use std::path::PathBuf;

/// An environment variable `scripts/with-services` sets; a clear failure if it is missing.
pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test or scripts/with-services")
    })
}

/// The example binary `name` that cargo built next to this test
/// (`target/<profile>/examples/<name>`); `features` says how to get it built.
pub(crate) fn example_binary(name: &str, features: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test {features}` builds it",
        path.display()
    );
    path
}
