//! Properties of SPIFFE ID parsing and pattern matching over generated IDs.
#![allow(clippy::unwrap_used, reason = "tests")]

use portcullis_identity::{SpiffeId, SpiffeIdError, SpiffeIdPattern};
use proptest::prelude::*;

fn domain() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,40}"
}

fn segments() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[A-Za-z0-9._-]{1,12}", 0..6).prop_filter("no dot segments", |s| {
        s.iter().all(|x| x != "." && x != "..")
    })
}

fn id_text(domain: &str, segments: &[String]) -> String {
    let mut text = format!("spiffe://{domain}");
    for s in segments {
        text.push('/');
        text.push_str(s);
    }
    text
}

proptest! {
    #[test]
    fn valid_ids_parse_and_round_trip(domain in domain(), segments in segments()) {
        let text = id_text(&domain, &segments);
        let id = SpiffeId::parse(&text).unwrap();
        prop_assert_eq!(id.as_str(), text.as_str());
        prop_assert_eq!(id.trust_domain_name(), domain.as_str());
        prop_assert_eq!(id.to_string().parse::<SpiffeId>().unwrap(), id);
    }

    #[test]
    fn one_bad_character_is_refused(
        domain in domain(),
        segments in segments(),
        bad in prop::sample::select(vec!['%', ' ', '?', '#', '*', '\u{e9}', '\\', '\u{200b}']),
    ) {
        let text = format!("{}/a{bad}b", id_text(&domain, &segments));
        prop_assert!(SpiffeId::parse(&text).is_err());
        let upper = format!("spiffe://{}A/x", domain);
        prop_assert_eq!(SpiffeId::parse(&upper), Err(SpiffeIdError::TrustDomainChar('A')));
    }

    #[test]
    fn a_wildcard_pattern_matches_exactly_the_ids_below_it(
        domain in domain(),
        base in segments(),
        rest in segments(),
        other in segments(),
    ) {
        let pattern = SpiffeIdPattern::parse(&format!("{}/*", id_text(&domain, &base))).unwrap();
        let mut below = base.clone();
        below.extend(rest.iter().cloned());
        let id = SpiffeId::parse(&id_text(&domain, &below)).unwrap();
        prop_assert_eq!(pattern.matches(&id), !rest.is_empty());
        let elsewhere = SpiffeId::parse(&id_text(&domain, &other)).unwrap();
        let is_below = other.len() > base.len() && other.get(..base.len()) == Some(&base[..]);
        prop_assert_eq!(pattern.matches(&elsewhere), is_below);
        let foreign = SpiffeId::parse(&id_text(&format!("{domain}x"), &below)).unwrap();
        prop_assert!(!pattern.matches(&foreign));
    }
}
