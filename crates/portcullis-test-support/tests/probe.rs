//! A stand-in for a service-backed test, run by `scripts/tests/require-services.sh` in each
//! mode (ignored otherwise: no service is ever named `PROBE`).
#![allow(
    clippy::print_stdout,
    reason = "the script reads what the test printed"
)]

#[test]
#[ignore = "run by scripts/tests/require-services.sh with --ignored"]
fn needs_the_probe_service() {
    let url = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_PROBE_URL");
    assert!(url.starts_with("http://"), "{url}");
    println!("probe service at {url}");
}
