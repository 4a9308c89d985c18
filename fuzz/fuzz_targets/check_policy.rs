//! The policy check (OPA's compile errors over regorus's parsed modules) on untrusted Rego:
//! a bundle of one policy file, parsed as Rego v1 (first byte even) or v0 (odd), with a
//! small data document, compiled and validated as activation does. Never a panic; a
//! refusal names a file of the bundle and a line of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::{Bundle, EvalLimits, PolicyError, RegoEngine};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(source) = std::str::from_utf8(rest) else {
        return;
    };
    let manifest = if mode % 2 == 0 {
        r#"{"revision": "f"}"#
    } else {
        r#"{"revision": "f", "rego_version": 0}"#
    };
    let files = vec![
        (".manifest".to_owned(), manifest.as_bytes().to_vec()),
        ("p/policy.rego".to_owned(), source.as_bytes().to_vec()),
        (
            "p/data.json".to_owned(),
            br#"{"d": {"x": [1, "a"]}}"#.to_vec(),
        ),
    ];
    let Ok(bundle) = Bundle::from_files("fuzz", files) else {
        return;
    };
    let limits = EvalLimits::default().with_time_limit(Some(std::time::Duration::from_millis(20)));
    if let Err(PolicyError::Check { errors, .. }) = RegoEngine::compile([&bundle], limits) {
        let lines = source.lines().count().max(1);
        for error in errors {
            assert_eq!(error.file, "p/policy.rego");
            assert!(
                error.line >= 1 && error.line as usize <= lines + 1,
                "{error}"
            );
        }
    }
});
