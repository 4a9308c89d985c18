//! The path a broker forwards below a service's base (`check_forward_path`): never a panic,
//! an accepted path is returned unchanged, and joined to a base by a URL library (which
//! resolves dot segments, encoded or not, and backslashes) it stays exactly below the base.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::check_forward_path;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    match check_forward_path(path) {
        Ok(accepted) => {
            assert_eq!(accepted, path);
            let url = url::Url::parse(&format!("http://upstream.test/svc/{accepted}"))
                .expect("an accepted path makes a valid URL");
            assert_eq!(url.path(), format!("/svc/{accepted}"));
            assert!(url.query().is_none() && url.fragment().is_none());
        }
        Err(err) => assert!(err.to_string().contains("refused")),
    }
});
