//! The Duo answer decoder: never a panic, and only `stat: OK` with a 2xx status and a
//! `response` is a success.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_approval::duo::decode_response;

fuzz_target!(|data: &[u8]| {
    let Some((&high, rest)) = data.split_first() else {
        return;
    };
    let Some((&low, body)) = rest.split_first() else {
        return;
    };
    let status = u16::from_be_bytes([high, low]) % 600;
    if decode_response(status, body).is_ok() {
        assert!((200..300).contains(&status));
        let value: serde_json::Value = serde_json::from_slice(body).expect("a success is JSON");
        assert_eq!(value.get("stat").and_then(|s| s.as_str()), Some("OK"));
    }
});
