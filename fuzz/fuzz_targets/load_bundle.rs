//! Policy bundle loading from untrusted bytes: a gzipped tarball (the first byte 0), a
//! `.manifest` (1), a rule path (2), a `.signatures.json` (3) or a `data.json` to sign and
//! verify (4). Never a panic; a tarball that loads writes back to one that loads to the
//! same bundle; a forged signature never verifies; whatever signs, verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::{
    Algorithm, Bundle, BundleLimits, BundleSigner, BundleVerifier, Manifest, SIGNATURES_FILE,
    VerificationKey, rule_path,
};

const SECRET: &[u8] = b"fuzzing secret, thirty-two bytes or more";

fn files(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            ".manifest".to_owned(),
            br#"{"revision": "1", "roots": ["a"]}"#.to_vec(),
        ),
        (
            "a/p.rego".to_owned(),
            b"package a\nallow := true\n".to_vec(),
        ),
        ("a/data.json".to_owned(), data.to_vec()),
    ]
}

fn verifier() -> BundleVerifier {
    BundleVerifier::new().key(
        "k",
        VerificationKey::hmac(Algorithm::HS256, SECRET).expect("a valid key"),
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => {
            let limits = BundleLimits::default()
                .with_max_files(64)
                .with_max_file_bytes(64 << 10)
                .with_max_total_bytes(256 << 10);
            if let Ok(bundle) = Bundle::from_tar_gz("fuzz", rest, &limits) {
                let again = bundle.to_tar_gz().expect("writing to memory");
                let back = Bundle::from_tar_gz("fuzz", &again, &BundleLimits::default())
                    .expect("a written bundle loads");
                assert_eq!(back, bundle);
            }
        }
        1 => {
            if let Ok(manifest) = Manifest::parse("fuzz", rest) {
                // "" owns everything; any other root is a path of non-empty segments.
                assert!(
                    manifest
                        .roots
                        .iter()
                        .all(|root| root.is_empty() || root.split('/').all(|s| !s.is_empty()))
                );
            }
        }
        3 => {
            let mut files = files(b"{}");
            files.push((SIGNATURES_FILE.to_owned(), rest.to_vec()));
            assert!(
                verifier().verify("fuzz", &files).is_err(),
                "a forged signature verified"
            );
        }
        4 => {
            let signer = BundleSigner::hmac(Algorithm::HS256, SECRET)
                .expect("a valid key")
                .key_id("k");
            let mut files = files(rest);
            if let Ok(signature) = signer.sign("fuzz", &files) {
                files.push((SIGNATURES_FILE.to_owned(), signature));
                verifier()
                    .verify("fuzz", &files)
                    .expect("what was signed verifies");
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(path) = rule_path(text)
            {
                assert!(path == "data" || path.starts_with("data."));
                assert_eq!(rule_path(&path).ok().as_deref(), Some(path.as_str()));
            }
        }
    }
});
