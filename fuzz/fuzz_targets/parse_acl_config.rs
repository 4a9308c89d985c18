//! An ACL configuration file (TOML), parsed and validated: never a panic; whatever loads
//! gives bindings whose roles the policy knows, one per subject and resource.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use portcullis_acl::AclConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = AclConfig::from_toml(text) else {
        return;
    };
    if let Ok(loaded) = config.load() {
        let mut seen = HashSet::new();
        for binding in &loaded.bindings {
            assert!(loaded.policy.roles().get(binding.role.as_str()).is_ok());
            assert!(seen.insert((binding.subject.clone(), binding.resource.clone())));
        }
    }
});
