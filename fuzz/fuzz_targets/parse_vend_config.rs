//! A credential-vending mapping file (TOML), parsed and validated: never a panic; whatever
//! loads never plans an empty or oversized policy set, nor a session outside STS's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_vend::{MAX_POLICY_ARNS, MIN_DURATION, VendConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = VendConfig::from_toml(text) else {
        return;
    };
    let groups: Vec<String> = config.groups.keys().cloned().collect();
    for group in &groups {
        if let Ok(plan) = config.plan("fuzz", std::slice::from_ref(group), None) {
            assert!(!plan.policies.is_empty() && plan.policies.len() <= MAX_POLICY_ARNS);
        }
    }
    if let Ok(plan) = config.plan("fuzz", &groups, None) {
        assert!(!plan.policies.is_empty() && plan.policies.len() <= MAX_POLICY_ARNS);
    }
    if let Ok(duration) = config.duration(None) {
        assert!(duration >= MIN_DURATION);
        assert!(duration.as_secs() <= config.max_duration_seconds);
    }
});
