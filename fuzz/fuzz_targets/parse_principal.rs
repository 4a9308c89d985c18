//! A `Principal` from its JSON form: never a panic, and whatever parses round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::Principal;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(principal) = Principal::from_json(text) {
        let json = serde_json::to_string(&principal).expect("a principal always serializes");
        assert_eq!(Principal::from_json(&json).ok(), Some(principal));
    }
});
