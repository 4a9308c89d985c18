//! SPIFFE IDs, trust domains and ID patterns: never a panic; whatever parses keeps the
//! spec's invariants and round-trips through its text form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_identity::{MAX_SPIFFE_ID_LEN, SpiffeId, SpiffeIdPattern, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        assert!(id.as_str().len() <= MAX_SPIFFE_ID_LEN);
        assert!(id.as_str().starts_with("spiffe://"));
        assert!(!id.trust_domain_name().is_empty());
        assert!(id.path().is_empty() || id.path().starts_with('/'));
        assert!(!id.path().ends_with('/'));
        assert!(!id.as_str().contains(['?', '#', '@', '%']));
        assert_eq!(id.as_str().rfind(':'), Some(6));
        assert_eq!(id.to_string().parse::<SpiffeId>().ok(), Some(id.clone()));
        assert_eq!(
            TrustDomain::new(id.trust_domain_name()).ok(),
            Some(id.trust_domain())
        );
        assert!(SpiffeIdPattern::exact(id.clone()).matches(&id));
    }
    if let Ok(pattern) = SpiffeIdPattern::parse(text) {
        assert_eq!(
            pattern.to_string().parse::<SpiffeIdPattern>().ok(),
            Some(pattern)
        );
    }
    let _ = TrustDomain::new(text);
});
