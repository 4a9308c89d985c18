//! The last known good copies in a store's state folder: a signed bundle's copy keeps its
//! signature and is verified again at start, and only configured bundles load.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::path::{Path, PathBuf};

use portcullis_policy::{
    Algorithm, Bundle, BundleLimits, BundleSigner, BundleVerifier, EvalLimits, PolicyEngine,
    PolicyError, PolicyStore, SIGNATURES_FILE, VerificationKey,
};
use serde_json::{Value, json};

type Files = Vec<(String, Vec<u8>)>;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-policy-lkg-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files(name: &str, allow: &str) -> Files {
    vec![
        (
            ".manifest".to_owned(),
            format!(r#"{{"revision": "r1", "roots": ["{name}"]}}"#).into_bytes(),
        ),
        (
            format!("{name}/policy.rego"),
            format!("package {name}\n\nallow if {allow}\n").into_bytes(),
        ),
    ]
}

fn verifier() -> BundleVerifier {
    BundleVerifier::new().key(
        "ci",
        VerificationKey::hmac(Algorithm::HS256, SECRET).unwrap(),
    )
}

fn signed_bundle(allow: &str) -> Bundle {
    let mut files = files("authz", allow);
    let signer = BundleSigner::hmac(Algorithm::HS256, SECRET)
        .unwrap()
        .key_id("ci");
    files.push((
        SIGNATURES_FILE.to_owned(),
        signer.sign("authz", &files).unwrap(),
    ));
    Bundle::verified("authz", files, &verifier()).unwrap()
}

fn allow(store: &PolicyStore, package: &str, user: &str) -> Result<Option<Value>, PolicyError> {
    store
        .evaluate(&format!("{package}/allow"), &json!({"user": user}))
        .map(|d| d.result)
}

/// The stored copy of `authz`, its policy replaced by `allow`: as an attacker with write
/// access to the state folder would leave it, with or without the old signature.
fn tamper(dir: &Path, allow: &str, keep_signature: bool) {
    let path = dir.join("authz.tar.gz");
    let stored = std::fs::read(&path).unwrap();
    let mut files = Bundle::files_from_tar_gz("authz", &stored, &BundleLimits::default()).unwrap();
    assert!(
        files.iter().any(|(p, _)| p == SIGNATURES_FILE),
        "kept signed"
    );
    if !keep_signature {
        files.retain(|(p, _)| p != SIGNATURES_FILE);
    }
    for (path, contents) in &mut files {
        if path == "authz/policy.rego" {
            *contents = format!("package authz\n\nallow if {allow}\n").into_bytes();
        }
    }
    std::fs::write(&path, tarball(&files)).unwrap();
}

fn tarball(files: &Files) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, &bytes[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn a_signed_bundle_is_kept_signed_and_verified_when_the_store_starts() {
    let dir = scratch("signed");
    let verifier = verifier();
    {
        let store =
            PolicyStore::open_with(&dir, EvalLimits::default(), [("authz", Some(&verifier))])
                .unwrap();
        store
            .activate(signed_bundle("input.user == \"alice\""))
            .unwrap();
    }
    // The copy as it was signed verifies and serves after a restart.
    let store =
        PolicyStore::open_with(&dir, EvalLimits::default(), [("authz", Some(&verifier))]).unwrap();
    assert_eq!(allow(&store, "authz", "alice").unwrap(), Some(json!(true)));
    assert_eq!(allow(&store, "authz", "mallory").unwrap(), None);
    drop(store);
    // Nor can it be read as if it were unsigned.
    assert!(PolicyStore::open(&dir, EvalLimits::default()).is_err());

    // Edited — with the old signature beside it, or with the signature removed — it is
    // refused, and the store fails closed: no decision at all, the reason in its status.
    for keep_signature in [true, false] {
        tamper(&dir, "true", keep_signature);
        let store =
            PolicyStore::open_with(&dir, EvalLimits::default(), [("authz", Some(&verifier))])
                .unwrap();
        assert!(matches!(
            allow(&store, "authz", "mallory"),
            Err(PolicyError::NoPolicy)
        ));
        let status = &store.status()[0];
        assert_eq!(status.active_revision, None);
        let error = status.last_error.as_deref().unwrap();
        assert!(error.contains("signature refused: stored copy"), "{error}");

        // The source delivering a good revision replaces the refused copy.
        store
            .activate(signed_bundle("input.user == \"alice\""))
            .unwrap();
        assert_eq!(allow(&store, "authz", "alice").unwrap(), Some(json!(true)));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unsigned_copy_of_a_bundle_that_must_be_signed_is_refused() {
    let dir = scratch("unsigned");
    {
        let store = PolicyStore::open_with(&dir, EvalLimits::default(), [("authz", None)]).unwrap();
        store
            .activate(Bundle::from_files("authz", files("authz", "true")).unwrap())
            .unwrap();
    }
    // The configuration now requires a signature: the unsigned copy does not serve.
    let verifier = verifier();
    let store =
        PolicyStore::open_with(&dir, EvalLimits::default(), [("authz", Some(&verifier))]).unwrap();
    assert!(matches!(
        allow(&store, "authz", "anyone"),
        Err(PolicyError::NoPolicy)
    ));
    assert!(
        store.status()[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("is not signed")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_configured_bundles_load_from_the_state_folder() {
    let dir = scratch("configured");
    {
        let store = PolicyStore::open_with(
            &dir,
            EvalLimits::default(),
            [("authz", None), ("extra", None)],
        )
        .unwrap();
        for name in ["authz", "extra"] {
            store
                .activate(Bundle::from_files(name, files(name, "true")).unwrap())
                .unwrap();
        }
    }
    // `extra` was removed from the configuration: its copy stays on disk, unread.
    let store = PolicyStore::open_with(&dir, EvalLimits::default(), [("authz", None)]).unwrap();
    assert_eq!(allow(&store, "authz", "x").unwrap(), Some(json!(true)));
    assert_eq!(allow(&store, "extra", "x").unwrap(), None);
    assert_eq!(store.revisions().keys().collect::<Vec<_>>(), ["authz"]);
    assert!(dir.join("extra.tar.gz").exists());
    drop(store);
    // Nothing configured: nothing serves.
    let none: [(&str, Option<&BundleVerifier>); 0] = [];
    let store = PolicyStore::open_with(&dir, EvalLimits::default(), none).unwrap();
    assert!(store.current().is_none());
    // A configured name that is not a bundle name is an error, not a path.
    assert!(PolicyStore::open_with(&dir, EvalLimits::default(), [("../x", None)]).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
