//! `Action`, `ResourceKind`, `AuthMethod` and `PrincipalKind` from strings: never a panic,
//! and the canonical form of whatever parses parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::{Action, AuthMethod, PrincipalKind, ResourceKind};

fn round_trips<T>(text: &str)
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = text.parse::<T>() {
        assert_eq!(value.to_string().parse::<T>().ok(), Some(value));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    round_trips::<Action>(text);
    round_trips::<ResourceKind>(text);
    round_trips::<AuthMethod>(text);
    round_trips::<PrincipalKind>(text);
});
