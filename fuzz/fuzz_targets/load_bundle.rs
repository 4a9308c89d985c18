//! Policy bundle loading from untrusted bytes: a gzipped tarball (the first byte 0), a
//! `.manifest` (1) or a rule path (2). Never a panic; a tarball that loads writes back to
//! one that loads to the same bundle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::{Bundle, BundleLimits, Manifest, rule_path};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let limits = BundleLimits {
                max_files: 64,
                max_file_bytes: 64 << 10,
                max_total_bytes: 256 << 10,
            };
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
                assert!(manifest
                    .roots
                    .iter()
                    .all(|root| root.is_empty() || root.split('/').all(|s| !s.is_empty())));
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
