//! The `Authorization` header parser: never a panic; what parses is a known scheme and a
//! non-empty printable-ASCII secret, and the shape checks on it never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_token::{Credential, MAX_HEADER_LEN, decode_token};

fuzz_target!(|data: &[u8]| {
    if let Ok(credential) = Credential::from_authorization(data) {
        let secret = credential.secret();
        assert!(!secret.is_empty() && secret.len() <= MAX_HEADER_LEN);
        assert!(secret.bytes().all(|b| b.is_ascii_graphic()));
        let _ = credential.looks_like_jwt();
        let _ = decode_token(secret);
    }
});
