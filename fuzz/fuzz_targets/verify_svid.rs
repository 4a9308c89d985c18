//! The certificate path on arbitrary bytes: the input is split (2-byte big-endian lengths)
//! into a trust bundle certificate and a presented chain; bundle parsing (DER, PEM, SPIFFE
//! JSON), leaf inspection and chain verification must never panic, and a chain that
//! verifies always names a SPIFFE ID of the bundle's trust domain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_identity::rustls::pki_types::{CertificateDer, UnixTime};
use portcullis_identity::{
    BundleSet, SvidUsage, TrustBundle, TrustDomain, inspect_leaf, inspect_serving_cert,
    crypto_provider, verify_svid,
};

fn pieces(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while out.len() < 10 {
        let [hi, lo, rest @ ..] = data else { break };
        let len = usize::from(*hi) << 8 | usize::from(*lo);
        let take = len.min(rest.len());
        let (piece, tail) = rest.split_at(take);
        out.push(piece);
        data = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let domain: TrustDomain = "fuzz.example".parse().expect("a valid trust domain");
    let _ = TrustBundle::parse(domain.clone(), data);
    let _ = inspect_leaf(data);
    let _ = inspect_serving_cert(data);
    let parts = pieces(data);
    let Some((anchor, chain)) = parts.split_first() else {
        return;
    };
    let mut bundles = BundleSet::new();
    if let Ok(bundle) = TrustBundle::from_der(domain, vec![CertificateDer::from(anchor.to_vec())]) {
        bundles.insert(bundle);
    }
    let chain: Vec<CertificateDer<'_>> = chain.iter().map(|c| CertificateDer::from(*c)).collect();
    let provider = crypto_provider();
    for usage in [SvidUsage::Client, SvidUsage::Server] {
        if let Ok(info) = verify_svid(
            &chain,
            &bundles,
            usage,
            UnixTime::now(),
            provider.signature_verification_algorithms.all,
        ) {
            let id = info.spiffe_id.expect("a verified SVID has a SPIFFE ID");
            assert_eq!(id.trust_domain_name(), "fuzz.example");
        }
    }
});
