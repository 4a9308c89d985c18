//! A role binding line (`SUBJECT RESOURCE ROLE`) and a subject (`kind:name`): never a panic,
//! and whatever parses round-trips through its canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_acl::{RoleBinding, Subject};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(binding) = text.parse::<RoleBinding>() {
        assert_eq!(
            binding.to_string().parse::<RoleBinding>().ok(),
            Some(binding)
        );
    }
    if let Ok(subject) = text.parse::<Subject>() {
        assert_eq!(subject.to_string().parse::<Subject>().ok(), Some(subject));
    }
});
