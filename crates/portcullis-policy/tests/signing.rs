//! Signed bundles: verified before they are read, refused on any mismatch.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::io::Write;

use portcullis_policy::{
    Algorithm, Bundle, BundleLimits, BundleSigner, BundleVerifier, EvalLimits, PolicyEngine,
    PolicyError, PolicyStore, SIGNATURES_FILE, VerificationKey,
};
use serde_json::json;

type Files = Vec<(String, Vec<u8>)>;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";
const RSA_PRIVATE: &[u8] = include_bytes!("fixtures/bundle-signing-rsa-test-only.key.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("fixtures/bundle-signing-rsa-test-only.pub.pem");
const ED_PRIVATE: &[u8] = include_bytes!("fixtures/bundle-signing-ed25519-test-only.key.pem");
const ED_PUBLIC: &[u8] = include_bytes!("fixtures/bundle-signing-ed25519-test-only.pub.pem");

fn files(allow: &str) -> Files {
    vec![
        (
            ".manifest".to_owned(),
            br#"{"revision": "r1", "roots": ["authz"]}"#.to_vec(),
        ),
        (
            "authz/policy.rego".to_owned(),
            format!("package authz\n\nallow if input.user in data.authz.{allow}\n").into_bytes(),
        ),
        (
            "authz/data.json".to_owned(),
            br#"{"admins": ["alice"], "operators": ["bob"]}"#.to_vec(),
        ),
    ]
}

fn signed(signer: &BundleSigner, mut files: Files) -> Files {
    let signature = signer.sign("authz", &files).unwrap();
    files.push((SIGNATURES_FILE.to_owned(), signature));
    files
}

fn hmac_signer() -> BundleSigner {
    BundleSigner::hmac(Algorithm::HS256, SECRET)
        .unwrap()
        .key_id("ci")
}

fn hmac_verifier() -> BundleVerifier {
    BundleVerifier::new().key(
        "ci",
        VerificationKey::hmac(Algorithm::HS256, SECRET).unwrap(),
    )
}

fn refused(files: Files, verifier: &BundleVerifier) -> String {
    match Bundle::verified("authz", files, verifier) {
        Err(e @ PolicyError::Signature { .. }) => e.to_string(),
        other => panic!("expected a refused signature, got {other:?}"),
    }
}

fn replace(files: &mut Files, path: &str, contents: &[u8]) {
    let file = files.iter_mut().find(|(p, _)| p == path).unwrap();
    file.1 = contents.to_vec();
}

#[test]
fn a_signed_bundle_is_read_and_answers() {
    let bundle = Bundle::verified(
        "authz",
        signed(&hmac_signer(), files("admins")),
        &hmac_verifier(),
    )
    .unwrap();
    assert_eq!(bundle.revision(), "r1");
    let store = PolicyStore::in_memory(EvalLimits::default());
    store.activate(bundle).unwrap();
    let allowed = store
        .evaluate("authz/allow", &json!({"user": "alice"}))
        .unwrap();
    assert_eq!(allowed.result, Some(json!(true)));
}

#[test]
fn every_change_to_the_files_is_refused() {
    let verifier = hmac_verifier();
    let good = signed(&hmac_signer(), files("admins"));

    for (path, contents) in [
        (
            "authz/policy.rego",
            &b"package authz\n\nallow if input.user in data.authz.operators\n"[..],
        ),
        (
            "authz/data.json",
            br#"{"admins": ["mallory"], "operators": ["bob"]}"#,
        ),
        (".manifest", br#"{"revision": "r2", "roots": ["authz"]}"#),
    ] {
        let mut changed = good.clone();
        replace(&mut changed, path, contents);
        let message = refused(changed, &verifier);
        assert!(
            message.contains(&format!("{path}: digest mismatch")),
            "{message}"
        );
    }

    let mut added = good.clone();
    added.push((
        "authz/extra.rego".to_owned(),
        b"package authz\n\nallow := true\n".to_vec(),
    ));
    assert!(refused(added, &verifier).contains("authz/extra.rego is not covered"));

    let mut removed = good.clone();
    removed.retain(|(p, _)| p != "authz/data.json");
    assert!(refused(removed, &verifier).contains("lists files the bundle lacks: authz/data.json"));

    let mut unsigned = good.clone();
    unsigned.retain(|(p, _)| p != SIGNATURES_FILE);
    assert!(refused(unsigned, &verifier).contains("not signed"));

    // A signature over other files, or a forged one, is refused too.
    let mut swapped = good.clone();
    replace(
        &mut swapped,
        SIGNATURES_FILE,
        &hmac_signer().sign("authz", &files("operators")).unwrap(),
    );
    assert!(refused(swapped, &verifier).contains("digest mismatch"));
    let forger = BundleSigner::hmac(Algorithm::HS256, b"another secret of thirty-two bytes!!")
        .unwrap()
        .key_id("ci");
    assert!(refused(signed(&forger, files("admins")), &verifier).contains("does not verify"));
}

#[test]
fn json_files_are_hashed_by_meaning_not_layout() {
    let mut reformatted = signed(&hmac_signer(), files("admins"));
    replace(
        &mut reformatted,
        "authz/data.json",
        b"{\n  \"operators\": [ \"bob\" ],\n  \"admins\": [\"alice\"]\n}\n",
    );
    replace(
        &mut reformatted,
        ".manifest",
        b"{ \"roots\": [\"authz\"],\n \"revision\": \"r1\" }",
    );
    Bundle::verified("authz", reformatted, &hmac_verifier()).unwrap();
}

#[test]
fn keys_algorithms_and_scopes_must_match() {
    let good = signed(&hmac_signer(), files("admins"));
    // Unknown key id.
    let other = BundleVerifier::new().key(
        "prod",
        VerificationKey::hmac(Algorithm::HS256, SECRET).unwrap(),
    );
    assert!(refused(good.clone(), &other).contains("unknown key \"ci\""));
    // A configured key id wins over the token's kid.
    Bundle::verified("authz", good.clone(), &other.clone().key_id("prod")).unwrap();
    // A public-key verifier never accepts an HMAC token made with its public key.
    let rsa = BundleVerifier::new().key(
        "ci",
        VerificationKey::from_pem(Algorithm::RS256, RSA_PUBLIC).unwrap(),
    );
    let confused = BundleSigner::hmac(Algorithm::HS256, RSA_PUBLIC)
        .unwrap()
        .key_id("ci");
    assert!(refused(signed(&confused, files("admins")), &rsa).contains("signed with HS256"));
    // Scope: the verifier's, else the key's, must equal the payload's.
    let scoped = signed(&hmac_signer().scope("write"), files("admins"));
    assert!(refused(scoped.clone(), &hmac_verifier()).contains("scope"));
    Bundle::verified("authz", scoped.clone(), &hmac_verifier().scope("write")).unwrap();
    let key_scoped = BundleVerifier::new().key(
        "ci",
        VerificationKey::hmac(Algorithm::HS256, SECRET)
            .unwrap()
            .with_scope("write"),
    );
    Bundle::verified("authz", scoped, &key_scoped).unwrap();
    assert!(refused(good, &key_scoped).contains("scope"));
    // Keys of the wrong kind are refused when configured.
    assert!(VerificationKey::hmac(Algorithm::HS256, b"short").is_err());
    assert!(VerificationKey::hmac(Algorithm::RS256, SECRET).is_err());
    assert!(VerificationKey::from_pem(Algorithm::HS256, RSA_PUBLIC).is_err());
    assert!(VerificationKey::from_pem(Algorithm::ES256, RSA_PUBLIC).is_err());
    assert!(VerificationKey::from_pem(Algorithm::RS256, b"not a pem").is_err());
    // Secrets stay out of Debug output.
    let shown = format!("{:?} {:?}", hmac_verifier(), hmac_signer());
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
}

#[test]
fn rsa_and_ed25519_signatures_verify_with_public_keys() {
    for (algorithm, private, public) in [
        (Algorithm::RS256, RSA_PRIVATE, RSA_PUBLIC),
        (Algorithm::PS384, RSA_PRIVATE, RSA_PUBLIC),
        (Algorithm::EdDSA, ED_PRIVATE, ED_PUBLIC),
    ] {
        let signer = BundleSigner::from_pem(algorithm, private)
            .unwrap()
            .key_id("release");
        let verifier = BundleVerifier::new().key(
            "release",
            VerificationKey::from_pem(algorithm, public).unwrap(),
        );
        let good = signed(&signer, files("admins"));
        Bundle::verified("authz", good.clone(), &verifier).unwrap();
        let mut bad = good;
        replace(
            &mut bad,
            "authz/policy.rego",
            b"package authz\n\nallow := true\n",
        );
        assert!(
            refused(bad, &verifier).contains("digest mismatch"),
            "{algorithm:?}"
        );
    }
}

#[test]
fn malformed_signature_files_are_refused_not_panicked_on() {
    let verifier = hmac_verifier();
    for (contents, expected) in [
        (&b"not json"[..], ".signatures.json"),
        (br#"{"signatures": []}"#, "exactly one"),
        (br#"{"signatures": ["a.b.c", "d.e.f"]}"#, "exactly one"),
        (br#"{"signatures": ["not-a-jws"]}"#, "not a JWS"),
        (
            br#"{"signatures": ["eyJhbGciOiJIUzI1NiJ9.e30.sig"]}"#,
            "names no key",
        ),
    ] {
        let mut files = files("admins");
        files.push((SIGNATURES_FILE.to_owned(), contents.to_vec()));
        let message = refused(files, &verifier);
        assert!(message.contains(expected), "{message}");
    }
    // No keys at all: nothing verifies.
    let message = refused(
        signed(&hmac_signer(), files("admins")),
        &BundleVerifier::new(),
    );
    assert!(message.contains("unknown key"), "{message}");
}

#[test]
fn a_signed_bundle_is_never_read_with_its_signature_ignored() {
    let err = Bundle::from_files("authz", signed(&hmac_signer(), files("admins"))).unwrap_err();
    assert!(err.to_string().contains("Bundle::verified"), "{err}");
}

#[test]
fn signed_tarballs_and_folders_verify() {
    let files = signed(&hmac_signer(), files("admins"));
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, contents) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        // As `tar -C bundle .` names them.
        tar.append_data(&mut header, format!("./{path}"), contents.as_slice())
            .unwrap();
    }
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let limits = BundleLimits::default();
    let unpacked = Bundle::files_from_tar_gz("authz", &bytes, &limits).unwrap();
    Bundle::verified("authz", unpacked, &hmac_verifier()).unwrap();

    let dir = std::env::temp_dir().join(format!("portcullis-signed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, contents) in &files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::File::create(target)
            .unwrap()
            .write_all(contents)
            .unwrap();
    }
    let read = Bundle::files_from_dir("authz", &dir, &limits).unwrap();
    Bundle::verified("authz", read, &hmac_verifier()).unwrap();
    assert!(Bundle::from_dir("authz", &dir, &limits).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `jsonwebtoken::encode`/`decode` (and `DecodingKey`-taking helpers built on them) ask the
/// process-level crypto provider, which panics when an embedder's graph enables a second
/// jsonwebtoken backend: this crate's sources must name the provider themselves.
#[test]
fn no_source_uses_the_process_default_crypto_provider() {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    sources(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 5, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for call in [
            "jsonwebtoken::encode(",
            "jsonwebtoken::decode(",
            "jsonwebtoken::decode::<",
            "jsonwebtoken::crypto::sign(",
            "jsonwebtoken::crypto::verify(",
            "CryptoProvider::get_default",
            "install_default",
            "use jsonwebtoken::{encode",
            "use jsonwebtoken::{decode,",
        ] {
            // Doc comments may name the API they avoid.
            let uses = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .any(|line| line.contains(call));
            assert!(!uses, "{} calls {call}", file.display());
        }
    }
}

/// The probe [`bundles_sign_and_verify_with_both_jsonwebtoken_backends`] builds and runs.
const PROBE: &str = r##"//! Generated by portcullis-policy's tests/signing.rs: bundle signatures in a graph where
//! jsonwebtoken has both crypto backends, whose process-level provider is then ambiguous.
use std::process::ExitCode;

use portcullis_policy::{Algorithm, Bundle, BundleSigner, BundleVerifier, VerificationKey};

fn default_provider_panics() -> bool {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let panicked = std::panic::catch_unwind(|| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "probe"}),
            &jsonwebtoken::EncodingKey::from_secret(&[7; 32]),
        )
    })
    .is_err();
    std::panic::set_hook(quiet);
    panicked
}

fn main() -> ExitCode {
    if !default_provider_panics() {
        eprintln!("probe: jsonwebtoken::encode works, so this graph does not have both backends");
        return ExitCode::FAILURE;
    }
    println!("process-level provider: ambiguous");
    let secret: &[u8] = b"0123456789abcdef0123456789abcdef-probe";
    let keys: [(Algorithm, &[u8], &[u8]); 3] = [
        (Algorithm::HS256, secret, secret),
        (Algorithm::RS256, include_bytes!(RSA_PRIVATE), include_bytes!(RSA_PUBLIC)),
        (Algorithm::EdDSA, include_bytes!(ED_PRIVATE), include_bytes!(ED_PUBLIC)),
    ];
    for (alg, private, public) in keys {
        let (signer, key) = if alg == Algorithm::HS256 {
            (BundleSigner::hmac(alg, private), VerificationKey::hmac(alg, public))
        } else {
            (BundleSigner::from_pem(alg, private), VerificationKey::from_pem(alg, public))
        };
        let (Ok(signer), Ok(key)) = (signer, key) else {
            eprintln!("probe: {alg}: the key does not load");
            return ExitCode::FAILURE;
        };
        let mut files = vec![
            (".manifest".to_owned(), br#"{"revision": "1", "roots": ["a"]}"#.to_vec()),
            ("a/p.rego".to_owned(), b"package a\nallow := true\n".to_vec()),
        ];
        let signature = match signer.key_id("k").sign("a", &files) {
            Ok(signature) => signature,
            Err(err) => {
                eprintln!("probe: {alg}: {err}");
                return ExitCode::FAILURE;
            }
        };
        files.push((".signatures.json".to_owned(), signature));
        let verifier = BundleVerifier::new().key("k", key);
        if let Err(err) = Bundle::verified("a", files.clone(), &verifier) {
            eprintln!("probe: {alg}: {err}");
            return ExitCode::FAILURE;
        }
        files[1].1 = b"package a\nallow := false\n".to_vec();
        if Bundle::verified("a", files, &verifier).is_ok() {
            eprintln!("probe: {alg}: a changed file verified");
            return ExitCode::FAILURE;
        }
        println!("{alg}: signed and verified");
    }
    ExitCode::SUCCESS
}
"##;

/// A bundle signed and verified in a graph where jsonwebtoken has both backends
/// (`aws_lc_rs`, this crate's, and `rust_crypto`, as an embedder may add): the process-level
/// provider is then ambiguous and `jsonwebtoken::encode`/`decode` panic, so this proves the
/// signing path never asks for it. The probe is its own workspace under `target/tmp` (in
/// this one, features are unified and every crate would get both backends), started from
/// the workspace's `Cargo.lock` and built into the same `target/`.
#[test]
fn bundles_sign_and_verify_with_both_jsonwebtoken_backends() {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.parent().unwrap();
    let dir = tmp.join("policy-backend-probe");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = |name: &str| format!("{:?}", crate_dir.join("tests/fixtures").join(name));
    let source = PROBE
        .replace(
            "RSA_PRIVATE",
            &fixture("bundle-signing-rsa-test-only.key.pem"),
        )
        .replace(
            "RSA_PUBLIC",
            &fixture("bundle-signing-rsa-test-only.pub.pem"),
        )
        .replace(
            "ED_PRIVATE",
            &fixture("bundle-signing-ed25519-test-only.key.pem"),
        )
        .replace(
            "ED_PUBLIC",
            &fixture("bundle-signing-ed25519-test-only.pub.pem"),
        );
    // Written only when changed, so a second run does not rebuild the probe.
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            std::fs::write(path, text).unwrap();
        }
    };
    write("probe.rs", &source);
    let manifest = format!(
        r#"# Generated by portcullis-policy's tests/signing.rs.
[package]
name = "portcullis-policy-backend-probe"
version = "0.0.0"
edition = "2024"
publish = false

[[bin]]
name = "portcullis-policy-backend-probe"
path = "probe.rs"

[dependencies]
portcullis-policy = {{ path = {policy:?}, default-features = false }}
# The other backend: with the crate's own `aws_lc_rs`, the graph has both.
jsonwebtoken = {{ version = "11.1", default-features = false, features = ["rust_crypto"] }}
serde_json = "1.0.140"

[workspace]

[profile.dev]
debug = "line-tables-only"
"#,
        policy = crate_dir,
    );
    write("Cargo.toml", &manifest);
    let lock = std::fs::read_to_string(crate_dir.join("../../Cargo.lock")).unwrap();
    write("Cargo.lock", &lock);
    let output = std::process::Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the probe failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    for line in [
        "process-level provider: ambiguous",
        "HS256: signed and verified",
        "RS256: signed and verified",
        "EdDSA: signed and verified",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}
