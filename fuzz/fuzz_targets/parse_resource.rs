//! A `Resource` from its `kind:id` string form and from JSON (object or string): never a
//! panic, and whatever parses round-trips through its canonical forms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::Resource;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(resource) = text.parse::<Resource>() {
            let canonical = resource.to_string();
            assert_eq!(canonical.parse::<Resource>().ok(), Some(resource.clone()));
            let json = serde_json::to_string(&resource).expect("a resource always serializes");
            assert_eq!(serde_json::from_str::<Resource>(&json).ok(), Some(resource));
        }
    }
    if let Ok(resource) = serde_json::from_slice::<Resource>(data) {
        assert_eq!(
            resource.to_string().parse::<Resource>().ok(),
            Some(resource)
        );
    }
});
