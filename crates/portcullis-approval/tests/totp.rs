//! TOTP against the RFC 6238 appendix B vectors, plus skew, replay and bad codes.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use portcullis_approval::totp::{hotp, totp};
use portcullis_approval::{TotpAlgorithm, TotpConfig, TotpFactor, TotpSecret};
use portcullis_core::ManualClock;

fn secret(alg: TotpAlgorithm) -> TotpSecret {
    let seed = b"1234567890123456789012345678901234567890123456789012345678901234";
    let len = match alg {
        TotpAlgorithm::Sha1 => 20,
        TotpAlgorithm::Sha256 => 32,
        TotpAlgorithm::Sha512 => 64,
    };
    TotpSecret::new(seed.get(..len).unwrap().to_vec()).unwrap()
}

#[test]
fn rfc6238_appendix_b() {
    let vectors: [(u64, &str, &str, &str); 6] = [
        (59, "94287082", "46119246", "90693936"),
        (1_111_111_109, "07081804", "68084774", "25091201"),
        (1_111_111_111, "14050471", "67062674", "99943326"),
        (1_234_567_890, "89005924", "91819424", "93441116"),
        (2_000_000_000, "69279037", "90698825", "38618901"),
        (20_000_000_000, "65353130", "77737706", "47863826"),
    ];
    for (time, sha1, sha256, sha512) in vectors {
        for (alg, expected) in [
            (TotpAlgorithm::Sha1, sha1),
            (TotpAlgorithm::Sha256, sha256),
            (TotpAlgorithm::Sha512, sha512),
        ] {
            let config = TotpConfig {
                algorithm: alg,
                digits: 8,
                ..TotpConfig::default()
            };
            assert_eq!(
                totp(&secret(alg), &config, time),
                expected,
                "{alg:?} at {time}"
            );
        }
    }
    // RFC 4226 appendix D, counter 0 and 9 (6 digits).
    let s = secret(TotpAlgorithm::Sha1);
    assert_eq!(hotp(&s, TotpAlgorithm::Sha1, 6, 0), "755224");
    assert_eq!(hotp(&s, TotpAlgorithm::Sha1, 6, 9), "520489");
}

#[test]
fn skew_window_replay_and_bad_codes() {
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_111_111_111),
    ));
    let config = TotpConfig::default();
    let factor = TotpFactor::new(config)
        .unwrap()
        .with_clock(clock.clone())
        .enroll("bob", secret(TotpAlgorithm::Sha1));
    let s = secret(TotpAlgorithm::Sha1);
    let now = 1_111_111_111u64;
    let previous = totp(&s, &config, now - 30);
    let current = totp(&s, &config, now);
    let next = totp(&s, &config, now + 30);
    let too_old = totp(&s, &config, now - 60);
    assert!(
        factor.check("bob", &too_old).is_err(),
        "outside the skew window"
    );
    assert!(factor.check("bob", &previous).is_ok(), "one step of skew");
    assert!(factor.check("bob", &previous).is_err(), "replay");
    assert!(factor.check("bob", &current).is_ok());
    assert!(factor.check("bob", &current).is_err(), "replay");
    assert!(factor.check("bob", &next).is_ok());
    assert!(
        factor.check("bob", &previous).is_err(),
        "older than one used"
    );
    assert!(factor.check("alice", &current).is_err(), "not enrolled");
    for bad in ["", "12345", "1234567", "12345a", "١٢٣٤٥٦"] {
        assert!(factor.check("bob", bad).is_err(), "{bad}");
    }
    clock.advance(Duration::from_secs(90));
    let later = totp(&s, &config, now + 90);
    assert!(factor.check("bob", &later).is_ok());
}

#[test]
fn bad_configuration() {
    for config in [
        TotpConfig {
            digits: 5,
            ..TotpConfig::default()
        },
        TotpConfig {
            digits: 9,
            ..TotpConfig::default()
        },
        TotpConfig {
            step: Duration::ZERO,
            ..TotpConfig::default()
        },
        TotpConfig {
            skew: 11,
            ..TotpConfig::default()
        },
    ] {
        assert!(TotpFactor::new(config).is_err());
    }
    assert!(TotpSecret::new(vec![0; 15]).is_err());
    assert!(!format!("{:?}", TotpSecret::generate().unwrap()).contains('0'));
}
