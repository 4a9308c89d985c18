//! Envoy's x-forwarded-client-cert: the parser and the proxy policy never panic, and a
//! forwarded identity is only ever produced for a configured proxy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_identity::{Forwarded, SpiffeId, SpiffeIdPattern, XfccPolicy, parse_xfcc};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(elements) = parse_xfcc(text) {
            assert!(!elements.is_empty());
        }
    }
    let proxy: SpiffeId = "spiffe://td/envoy".parse().expect("a valid SPIFFE ID");
    let client: SpiffeId = "spiffe://td/client".parse().expect("a valid SPIFFE ID");
    let policy = XfccPolicy::new().proxy(SpiffeIdPattern::exact(proxy.clone()));
    assert!(policy.judge(Some(&client), [data]).is_err());
    assert!(policy.judge(None, [data]).is_err());
    if let Ok(Forwarded::Client(id)) = policy.judge(Some(&proxy), [data]) {
        assert!(id.as_str().starts_with("spiffe://"));
    }
});
