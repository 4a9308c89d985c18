//! The script/personal token decoder: never a panic, and whatever it accepts has the right
//! prefix and length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_token::{TOKEN_LEN, decode_token};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(kind) = decode_token(text) {
        assert!(text.starts_with(kind.prefix()));
        assert_eq!(text.len(), TOKEN_LEN);
    }
});
