//! The check an upload passes before it becomes a revision: the same one a sidecar makes
//! before it activates a bundle.

use std::collections::BTreeMap;
use std::sync::Arc;

use portcullis_policy::{Bundle, BundleLimits, BundleVerifier, EvalLimits, RegoEngine};

use crate::DeliveryError;

/// Validates bundle tarballs as `portcullis-policy`'s sidecar path does: read within
/// [`BundleLimits`] (only files and folders), the signature verified where the bundle must
/// be signed (and an unsigned or unexpectedly signed bundle refused), manifest roots
/// checked, compiled with OPA's compile checks, and every `test_*` rule run.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    limits: BundleLimits,
    eval: EvalLimits,
    signed: BTreeMap<String, Arc<BundleVerifier>>,
    /// The data paths each bundle may claim as manifest roots; a bundle not listed may claim
    /// its own name only.
    namespaces: BTreeMap<String, Vec<String>>,
}

/// What a valid upload is.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The bundle, as a sidecar would load it.
    pub bundle: Bundle,
}

impl Validator {
    /// A validator with these limits and no bundle that must be signed.
    #[must_use]
    pub fn new(limits: BundleLimits, eval: EvalLimits) -> Validator {
        Validator {
            limits,
            eval,
            signed: BTreeMap::new(),
            namespaces: BTreeMap::new(),
        }
    }

    /// Bundle `name` may claim these data paths (and anything below them) as its manifest
    /// roots, instead of only its own name. Paths are slash-separated, as in a manifest.
    #[must_use]
    pub fn namespace(mut self, name: impl Into<String>, roots: Vec<String>) -> Self {
        self.namespaces.insert(name.into(), roots);
        self
    }

    /// Bundle `name` must be signed, and pass `verifier` (as the sidecar's
    /// `[bundles.signing]`).
    #[must_use]
    pub fn require_signature(
        mut self,
        name: impl Into<String>,
        verifier: Arc<BundleVerifier>,
    ) -> Self {
        self.signed.insert(name.into(), verifier);
        self
    }

    /// Reads `tarball` as bundle `name` and validates it.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Refused`] with the policy error that says why: a bad tarball,
    /// layout or manifest, a refused signature, a compile error, a failing `test_*` rule.
    pub fn validate(&self, name: &str, tarball: &[u8]) -> Result<Validated, DeliveryError> {
        let files = Bundle::files_from_tar_gz(name, tarball, &self.limits)
            .map_err(DeliveryError::Refused)?;
        let bundle = match self.signed.get(name) {
            Some(verifier) => Bundle::verified(name, files, verifier),
            None => Bundle::from_files(name, files),
        }
        .map_err(DeliveryError::Refused)?;
        // Compiling runs OPA's compile checks and every `test_*` rule of the bundle.
        RegoEngine::compile(std::iter::once(&bundle), self.eval).map_err(DeliveryError::Refused)?;
        self.check_namespace(name, &bundle)?;
        Ok(Validated { bundle })
    }

    /// Every manifest root of `bundle` is one of its namespaces or below one.
    fn check_namespace(&self, name: &str, bundle: &Bundle) -> Result<(), DeliveryError> {
        let own = [name.to_owned()];
        let allowed = self.namespaces.get(name).map_or(&own[..], Vec::as_slice);
        let inside = |root: &str| {
            allowed.iter().any(|ns| {
                !ns.is_empty()
                    && (root == ns
                        || root
                            .strip_prefix(ns.as_str())
                            .is_some_and(|rest| rest.starts_with('/')))
            })
        };
        match bundle.manifest().roots.iter().find(|r| !inside(r)) {
            None => Ok(()),
            Some(root) => Err(DeliveryError::OutsideNamespace {
                bundle: name.to_owned(),
                root: root.clone(),
                allowed: allowed
                    .iter()
                    .map(|ns| format!("{ns:?}"))
                    .collect::<Vec<_>>()
                    .join(" or "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use portcullis_policy::{Algorithm, BundleSigner, PolicyError, VerificationKey};

    use super::*;

    const POLICY: &str = "package authz\n\nallow if input.user == \"alice\"\n\n\
        test_alice if allow with input as {\"user\": \"alice\"}\n";

    fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
        let files = files
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.as_bytes().to_vec()))
            .collect::<Vec<_>>();
        Bundle::from_files("authz", files)
            .unwrap()
            .to_tar_gz()
            .unwrap()
    }

    #[test]
    fn a_good_bundle_passes() {
        let v = Validator::default();
        let ok = v
            .validate(
                "authz",
                &tarball(&[
                    (".manifest", r#"{"revision":"r1","roots":["authz"]}"#),
                    ("authz.rego", POLICY),
                ]),
            )
            .unwrap();
        assert_eq!(ok.bundle.revision(), "r1");
    }

    #[test]
    fn roots_stay_in_the_artifacts_namespace() {
        let bundle = |manifest: &str| tarball(&[(".manifest", manifest), ("authz.rego", POLICY)]);
        let v = Validator::default();
        assert!(
            v.validate("authz", &bundle(r#"{"revision":"r","roots":["authz"]}"#))
                .is_ok()
        );
        let below = tarball(&[
            (".manifest", r#"{"revision":"r","roots":["authz/rules"]}"#),
            (
                "rules.rego",
                &POLICY.replace("package authz", "package authz.rules"),
            ),
        ]);
        assert!(v.validate("authz", &below).is_ok());
        for (outside, root) in [
            (r#"{"revision":"r","roots":["authz","billing"]}"#, "billing"),
            (r#"{"revision":"r"}"#, ""),
            (r#"{"revision":"r","roots":[""]}"#, ""),
            (r#"{"revision":"r","roots":["authzx"]}"#, "authzx"),
        ] {
            let policy = if root == "authzx" {
                POLICY.replace("package authz", "package authzx")
            } else {
                POLICY.to_owned()
            };
            let upload = tarball(&[(".manifest", outside), ("authz.rego", &policy)]);
            match v.validate("authz", &upload) {
                Err(DeliveryError::OutsideNamespace { root: found, .. }) => {
                    assert_eq!(found, root, "{outside}");
                }
                other => panic!("{outside}: {other:?}"),
            }
        }
        // A configured namespace replaces the bundle's name.
        let v = Validator::default().namespace("authz", vec!["acme/authz".into()]);
        let acme = tarball(&[
            (".manifest", r#"{"revision":"r","roots":["acme/authz"]}"#),
            (
                "acme/authz/policy.rego",
                &POLICY.replace("package authz", "package acme.authz"),
            ),
        ]);
        assert!(v.validate("authz", &acme).is_ok());
        assert!(
            v.validate("authz", &bundle(r#"{"revision":"r","roots":["authz"]}"#))
                .is_err()
        );
    }

    #[test]
    fn refusals_say_why() {
        let v = Validator::default();
        let failing = POLICY.replace("\"alice\"}", "\"bob\"}");
        let err = v
            .validate("authz", &tarball(&[("authz.rego", &failing)]))
            .unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Refused(PolicyError::TestFailed { test, .. }) if test.contains("test_alice")),
            "{err}"
        );
        let err = v
            .validate(
                "authz",
                &tarball(&[("authz.rego", "package authz\nallow if {")]),
            )
            .unwrap_err();
        assert!(
            matches!(err, DeliveryError::Refused(PolicyError::Compile { .. })),
            "{err}"
        );
        let err = v
            .validate(
                "authz",
                &tarball(&[
                    (".manifest", r#"{"roots":["other"]}"#),
                    ("authz.rego", POLICY),
                ]),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("outside the manifest roots"),
            "{err}"
        );
        let err = v.validate("authz", b"not a tarball").unwrap_err();
        assert!(err.to_string().contains("tarball"), "{err}");
    }

    #[test]
    fn a_bundle_that_must_be_signed_is_verified() {
        let secret = b"a shared secret of enough length for HS256";
        let verifier = BundleVerifier::new().key(
            "ci",
            VerificationKey::hmac(Algorithm::HS256, secret).unwrap(),
        );
        let v = Validator::default().require_signature("authz", Arc::new(verifier));
        let unsigned = tarball(&[("authz.rego", POLICY)]);
        assert!(matches!(
            v.validate("authz", &unsigned),
            Err(DeliveryError::Refused(PolicyError::Signature { .. }))
        ));
        let files = vec![
            (
                ".manifest".to_owned(),
                br#"{"revision":"s1","roots":["authz"]}"#.to_vec(),
            ),
            ("authz.rego".to_owned(), POLICY.as_bytes().to_vec()),
        ];
        let signer = BundleSigner::hmac(Algorithm::HS256, secret)
            .unwrap()
            .key_id("ci");
        let signature = signer.sign("authz", &files).unwrap();
        let mut signed_files = files.clone();
        signed_files.push((".signatures.json".to_owned(), signature));
        let mut verifier_again = BundleVerifier::new();
        verifier_again = verifier_again.key(
            "ci",
            VerificationKey::hmac(Algorithm::HS256, secret).unwrap(),
        );
        let signed = Bundle::verified("authz", signed_files, &verifier_again)
            .unwrap()
            .to_tar_gz()
            .unwrap();
        v.validate("authz", &signed).unwrap();
        // Without the requirement a signed bundle is refused too: its signature would be
        // ignored.
        assert!(Validator::default().validate("authz", &signed).is_err());
    }
}
