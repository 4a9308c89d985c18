//! What the policy sidecar reads from a request before any policy runs
//! (`examples/policy-sidecar/request.rs`, included as it is): the `/v1/data/…` document path
//! (the first byte 0), a gzip body (1), Rego text's bracket nesting (2) and OPA's boolean
//! query parameters (3). Never a panic; a path that parses has at most the segment limit,
//! no control characters, and a rule prefix of identifiers; a gzip body never decompresses
//! past its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../examples/policy-sidecar/request.rs"]
#[allow(dead_code, reason = "the sidecar's module, included whole")]
mod request;

use request::{DataPath, RequestError, bool_param, gunzip, is_identifier, nesting_depth, walk};

const CAP: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(path) = DataPath::parse(&text) {
                assert!(path.segments.len() <= request::MAX_SEGMENTS);
                assert!(path.segments.iter().all(|s| !s.is_empty()));
                assert!(
                    path.segments
                        .iter()
                        .all(|s| !s.chars().any(char::is_control))
                );
                let rule = path.rule_path();
                assert!(rule.split('/').filter(|s| !s.is_empty()).all(is_identifier));
                assert_eq!(path.rule_len() + path.rest().len(), path.segments.len());
                let doc = serde_json::json!({"a": [1, {"b": 2}], "0": "zero"});
                let _ = walk(doc, path.rest());
            }
        }
        1 => match gunzip(rest, CAP) {
            Ok(out) => assert!(out.len() <= CAP),
            Err(RequestError::TooLarge { max }) => assert_eq!(max, CAP),
            Err(RequestError::Gzip(_)) => {}
            Err(RequestError::Path(_)) => unreachable!("gunzip reports no path errors"),
        },
        2 => {
            let text = String::from_utf8_lossy(rest);
            assert!(nesting_depth(&text) <= text.len());
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let pairs: Vec<(&str, &str)> = text
                .split('&')
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .collect();
            let _ = bool_param(pairs.iter().copied(), "pretty");
        }
    }
});
