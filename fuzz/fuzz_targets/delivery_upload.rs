//! The delivery service's untrusted inputs: a host's OPA status report (the first byte 0),
//! a revision id or artifact name from a URL (1), an uploaded bundle tarball (2), a host's
//! decision log upload, plain (3) or gzipped (4), or its compact counters report (5). Never
//! a panic; an accepted report stays within its limits; an accepted id is what it parsed;
//! an accepted upload is a bundle that loads again from its own tarball; counted decisions
//! are at least their denials and errors together.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_delivery::{
    DecisionCounts, MAX_BUNDLES, MAX_FIELD, RevisionId, StatusReport, Validator, check_artifact_name,
};
use portcullis_policy::{Bundle, BundleLimits, EvalLimits};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 6 {
        0 => {
            if let Ok(report) = StatusReport::parse(rest) {
                assert!(report.bundles.len() <= MAX_BUNDLES);
                for bundle in &report.bundles {
                    assert!(bundle.name.len() <= MAX_FIELD);
                    assert!(bundle.error.as_ref().is_none_or(|e| e.len() <= MAX_FIELD));
                    assert!(
                        bundle
                            .active_revision
                            .as_ref()
                            .is_none_or(|r| !r.is_empty())
                    );
                }
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(id) = text.parse::<RevisionId>() {
                    assert_eq!(id.as_str(), text);
                }
                if check_artifact_name(text).is_ok() {
                    assert!(!text.contains('/') && !text.starts_with('.'));
                }
            }
        }
        3 | 4 => {
            if let Ok(counts) = DecisionCounts::parse(rest, mode % 6 == 4) {
                for m in counts.counts.values() {
                    assert!(m.denies.saturating_add(m.errors) <= m.decisions);
                }
            }
        }
        5 => {
            if let Ok(counts) = DecisionCounts::parse_compact(rest) {
                for m in counts.counts.values() {
                    assert!(m.denies.saturating_add(m.errors) <= m.decisions);
                }
            }
        }
        _ => {
            let limits = BundleLimits::default()
                .with_max_files(64)
                .with_max_file_bytes(64 << 10)
                .with_max_total_bytes(256 << 10);
            if let Ok(valid) = Validator::new(limits, EvalLimits::default()).validate("fuzz", rest)
            {
                let again = valid.bundle.to_tar_gz().expect("writing to memory");
                Bundle::from_tar_gz("fuzz", &again, &BundleLimits::default())
                    .expect("a validated bundle loads again");
            }
        }
    }
});
