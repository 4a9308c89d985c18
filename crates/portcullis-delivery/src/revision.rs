//! Names of artifacts and revision ids: what may appear in a path or a URL.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest::{SHA256, digest};

use crate::DeliveryError;

/// The id of a revision: the lowercase hex SHA-256 of its bundle tarball, so the same
/// content always has the same id and a changed file is detected on read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionId(String);

impl RevisionId {
    /// The id of `tarball`.
    #[must_use]
    pub fn of(tarball: &[u8]) -> RevisionId {
        RevisionId(hex::encode(digest(&SHA256, tarball)))
    }

    /// The id as 64 lowercase hex digits.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RevisionId {
    type Err = DeliveryError;

    fn from_str(text: &str) -> Result<Self, DeliveryError> {
        if text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(RevisionId(text.to_owned()))
        } else {
            Err(DeliveryError::Invalid(format!(
                "a revision id is 64 lowercase hex digits (a SHA-256), not {:?}",
                text.chars().take(80).collect::<String>()
            )))
        }
    }
}

/// The longest artifact name.
pub const MAX_NAME: usize = 128;

/// Checks an artifact name: 1–128 of `[A-Za-z0-9._-]`, not starting with a dot (so it is
/// safe as a folder name and in a URL path).
///
/// # Errors
///
/// [`DeliveryError::Invalid`] saying what is wrong.
pub fn check_artifact_name(name: &str) -> Result<(), DeliveryError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DeliveryError::Invalid(format!(
            "an artifact name is 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - and does not start \
             with a dot, not {:?}",
            name.chars().take(80).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_ids_are_sha256_hex() {
        let id = RevisionId::of(b"abc");
        assert_eq!(
            id.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(id.as_str().parse::<RevisionId>().unwrap(), id);
        for bad in ["", "ABC", &"A".repeat(64), &"a".repeat(63), "../x"] {
            assert!(bad.parse::<RevisionId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn artifact_names_are_path_safe() {
        for good in ["authz", "a.b-c_d", &"x".repeat(MAX_NAME)] {
            check_artifact_name(good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            &"x".repeat(MAX_NAME + 1),
        ] {
            assert!(check_artifact_name(bad).is_err(), "{bad}");
        }
    }
}
