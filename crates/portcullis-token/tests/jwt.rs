//! JWT verification with local keys: every algorithm, the attacks (alg none, HS/RS
//! confusion, foreign issuer, wrong key types), exact expiry boundaries, and a proptest that
//! no single-character change to a valid token is accepted.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap or index is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use portcullis_core::{AuthMethod, ManualClock, PrincipalKind};
use portcullis_token::{
    Algorithm, AuthError, JwtRules, JwtVerifier, KeySet, SessionAlgorithm, SessionIssuer,
    SessionKey,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const T0: u64 = 1_800_000_000;

fn clock(at: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(at)))
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_der(include_bytes!("fixtures/rsa2048-test-only.der"))
}

fn rsa_jwks() -> Value {
    serde_json::from_str(include_str!("fixtures/rsa2048-test-only.jwks.json")).unwrap()
}

fn rules(clock: Arc<ManualClock>) -> JwtRules {
    let mut rules = JwtRules::new("https://idp.test", "gate");
    rules.clock = clock;
    rules.leeway = Duration::from_secs(5);
    rules
}

fn claims() -> Value {
    json!({"iss": "https://idp.test", "aud": ["gate", "other"], "sub": "alice",
           "groups": ["deployers", "bad group", "platform"], "email": "alice@example.com",
           "iat": T0, "nbf": T0, "exp": T0 + 600})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg.as_str().parse().unwrap());
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn rsa_verifier(clock: Arc<ManualClock>) -> JwtVerifier {
    JwtVerifier::with_keys(
        "oidc",
        KeySet::from_jwks(&rsa_jwks()).unwrap(),
        rules(clock),
    )
    .unwrap()
}

#[tokio::test]
async fn rs256_claims_become_a_principal() {
    let verifier = rsa_verifier(clock(T0 + 1));
    let token = sign(Algorithm::RS256, Some("rsa-test"), &claims(), &rsa_key());
    let p = verifier.verify(&token).await.unwrap();
    assert_eq!(p.subject(), "alice");
    assert_eq!(p.kind(), PrincipalKind::User);
    assert_eq!(p.auth_method(), &AuthMethod::OIDC);
    // The invalid group name is dropped, never half-used.
    assert_eq!(p.groups().collect::<Vec<_>>(), ["deployers", "platform"]);
    assert_eq!(p.claim("email"), Some(&json!("alice@example.com")));
    assert_eq!(
        p.expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(T0 + 600))
    );
    // Without a kid, the one fitting key is used.
    let token = sign(Algorithm::RS256, None, &claims(), &rsa_key());
    assert!(verifier.verify(&token).await.is_ok());
}

#[tokio::test]
async fn session_algorithms_round_trip() {
    for alg in [
        SessionAlgorithm::EdDSA,
        SessionAlgorithm::ES256,
        SessionAlgorithm::HS256,
    ] {
        let key = SessionKey::generate(alg).unwrap();
        // A key rebuilt from its persisted material signs tokens the first one accepts.
        let again = SessionKey::from_secret(alg, key.secret_material()).unwrap();
        assert_eq!(again.kid(), key.kid());
        let issuer = SessionIssuer::new(key, "https://broker.test", "proxy").unwrap();
        let reissuer = SessionIssuer::new(again, "https://broker.test", "proxy").unwrap();
        let session = reissuer.issue("bob", &["ops".to_owned()]).unwrap();
        let p = issuer
            .verifier()
            .unwrap()
            .verify(session.expose())
            .await
            .unwrap();
        assert_eq!(
            (p.subject(), p.auth_method()),
            ("bob", &AuthMethod::ISSUED_JWT)
        );
        assert!(p.in_group("ops"));
        assert_eq!(
            issuer.key().public_jwks().is_some(),
            alg != SessionAlgorithm::HS256
        );
        assert!(!format!("{session:?}").contains(session.expose()));
        // Another issuer's key, same names: refused.
        let stranger = SessionIssuer::new(
            SessionKey::generate(alg).unwrap(),
            "https://broker.test",
            "proxy",
        )
        .unwrap()
        .issue("bob", &[])
        .unwrap();
        assert!(
            issuer
                .verifier()
                .unwrap()
                .verify(stranger.expose())
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn session_public_jwks_verifies_elsewhere() {
    let key = SessionKey::generate(SessionAlgorithm::ES256).unwrap();
    let jwks = key.public_jwks().unwrap();
    let issuer = SessionIssuer::new(key, "https://broker.test", "proxy").unwrap();
    let remote = JwtVerifier::with_keys(
        "session_jwt",
        KeySet::from_jwks(&jwks).unwrap(),
        issuer.rules(),
    )
    .unwrap();
    let session = issuer.issue("carol", &[]).unwrap();
    assert_eq!(
        remote.verify(session.expose()).await.unwrap().subject(),
        "carol"
    );
}

#[tokio::test]
async fn alg_none_and_algorithm_confusion_are_refused() {
    let verifier = rsa_verifier(clock(T0 + 1));
    // alg none, no signature.
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    );
    assert!(matches!(
        verifier.verify(&none).await,
        Err(AuthError::Malformed(_))
    ));
    // HS256 "signed" with the RSA public key as the HMAC secret.
    let public = rsa_jwks().to_string();
    let forged = sign(
        Algorithm::HS256,
        Some("rsa-test"),
        &claims(),
        &EncodingKey::from_secret(public.as_bytes()),
    );
    assert!(matches!(
        verifier.verify(&forged).await,
        Err(AuthError::DisallowedAlgorithm(_))
    ));
    // Even with HS256 allowed, an RSA key never verifies an HMAC token.
    let mut lax = rules(clock(T0 + 1));
    lax.algorithms = vec![Algorithm::HS256];
    let lax = JwtVerifier::with_keys("lax", KeySet::from_jwks(&rsa_jwks()).unwrap(), lax).unwrap();
    assert!(matches!(
        lax.verify(&forged).await,
        Err(AuthError::UnknownKey(_))
    ));
}

#[tokio::test]
async fn provider_rules_refuse_hmac_and_mixed_or_wide_settings() {
    let jwks = KeySet::from_jwks(&rsa_jwks()).unwrap();
    for change in [
        (|r: &mut JwtRules| r.audiences.clear()) as fn(&mut JwtRules),
        |r| r.algorithms.clear(),
        |r| r.algorithms.push(Algorithm::HS256),
        |r| r.leeway = Duration::from_secs(3600),
        |r| r.issuer.clear(),
    ] {
        let mut r = rules(clock(T0));
        change(&mut r);
        assert!(matches!(
            JwtVerifier::with_keys("x", jwks.clone(), r),
            Err(AuthError::Config(_))
        ));
    }
}

#[tokio::test]
async fn issuer_audience_and_claims_are_checked() {
    let verifier = rsa_verifier(clock(T0 + 1));
    let mut foreign = claims();
    foreign["iss"] = json!("https://evil.test");
    let token = sign(Algorithm::RS256, Some("rsa-test"), &foreign, &rsa_key());
    assert!(
        matches!(verifier.verify(&token).await, Err(AuthError::UnknownIssuer(i)) if i == "https://evil.test")
    );
    for (claim, value, expected) in [
        ("aud", json!("someone-else"), "audience"),
        ("aud", json!(null), "audience"),
        ("exp", json!(null), "exp"),
        ("exp", json!("tomorrow"), "exp"),
        ("sub", json!(null), "sub"),
    ] {
        let mut c = claims();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(claim);
        } else {
            c[claim] = value;
        }
        let token = sign(Algorithm::RS256, Some("rsa-test"), &c, &rsa_key());
        let err = verifier.verify(&token).await.unwrap_err();
        assert!(
            matches!(
                (&err, expected),
                (AuthError::WrongAudience, "audience")
                    | (AuthError::MissingClaim(_), "exp" | "sub")
            ),
            "{claim}: {err}"
        );
    }
    let token = sign(Algorithm::RS256, Some("another-kid"), &claims(), &rsa_key());
    assert!(
        matches!(verifier.verify(&token).await, Err(AuthError::UnknownKey(k)) if k == "another-kid")
    );
}

#[tokio::test]
async fn expiry_and_not_before_boundaries_are_exact() {
    // leeway 5 s, nbf = T0, exp = T0 + 600.
    let token = sign(Algorithm::RS256, Some("rsa-test"), &claims(), &rsa_key());
    for (now, ok) in [
        (T0 - 6, false),
        (T0 - 5, true),
        (T0 + 604, true),
        (T0 + 605, false),
        (T0 + 10_000, false),
    ] {
        let result = rsa_verifier(clock(now)).verify(&token).await;
        assert_eq!(
            result.is_ok(),
            ok,
            "at T0{:+}: {result:?}",
            now as i64 - T0 as i64
        );
        if !ok {
            assert!(matches!(
                result,
                Err(AuthError::Expired | AuthError::NotYetValid)
            ));
        }
    }
}

#[tokio::test]
async fn bad_keys_are_skipped_or_refused_without_panicking() {
    let bad = json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "short-ec"},
        {"kty": "EC", "crv": "P-521", "x": "AAAA", "y": "AAAA", "kid": "p521"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "tiny-rsa"},
        {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI", "kid": "hmac"},
        {"kty": "RSA", "n": rsa_jwks()["keys"][0]["n"], "e": "AQAB", "kid": "enc", "use": "enc"},
        {"kty": "RSA", "n": rsa_jwks()["keys"][0]["n"], "e": "AQAB", "kid": "wrong-alg", "alg": "ES256"},
        {"kty": "what"},
        "not an object",
    ]});
    assert!(matches!(
        KeySet::from_jwks(&bad),
        Err(AuthError::Provider(_))
    ));
    let mut mixed = bad.clone();
    mixed["keys"]
        .as_array_mut()
        .unwrap()
        .push(rsa_jwks()["keys"][0].clone());
    assert_eq!(KeySet::from_jwks(&mixed).unwrap().len(), 1);
    for garbage in [json!(null), json!({"keys": "x"}), json!([1, 2])] {
        assert!(KeySet::from_jwks(&garbage).is_err());
    }
    let many = json!({"keys": vec![rsa_jwks()["keys"][0].clone(); 65]});
    assert!(KeySet::from_jwks(&many).is_err());
}

#[tokio::test]
async fn truncated_oversized_and_garbage_tokens_are_malformed() {
    let verifier = rsa_verifier(clock(T0 + 1));
    let token = sign(Algorithm::RS256, Some("rsa-test"), &claims(), &rsa_key());
    let (head, _) = token.rsplit_once('.').unwrap();
    for bad in [
        head.to_owned(),
        format!("{head}."),
        token[..token.len() - 10].to_owned(),
        "a.b.c".to_owned(),
        format!("{token}.extra"),
        "x".repeat(20_000),
        format!("{}.{}.{}", "e".repeat(9000), "e".repeat(9000), "e"),
    ] {
        assert!(
            verifier.verify(&bad).await.is_err(),
            "{}",
            &bad[..bad.len().min(40)]
        );
    }
}

const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn any_single_character_change_is_rejected(position in any::<prop::sample::Index>(), replacement in 0..BASE64URL.len()) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let key = SessionKey::generate(SessionAlgorithm::EdDSA).unwrap();
        let issuer = SessionIssuer::new(key, "https://broker.test", "proxy").unwrap();
        let token = issuer.issue("alice", &["ops".to_owned()]).unwrap().expose().to_owned();
        let verifier = issuer.verifier().unwrap();
        let mut bytes = token.clone().into_bytes();
        let at = position.index(bytes.len());
        let new = BASE64URL[replacement];
        prop_assume!(bytes[at] != new);
        bytes[at] = new;
        let mutated = String::from_utf8(bytes).unwrap();
        prop_assert!(runtime.block_on(verifier.verify(&mutated)).is_err());
        prop_assert!(runtime.block_on(verifier.verify(&token)).is_ok());
    }
}

#[tokio::test]
async fn password_login_issues_a_session_with_directory_groups() {
    use portcullis_directory::{DirectoryError, Password, PasswordHash, StaticDirectory};
    use portcullis_token::PasswordLogin;

    let hash =
        PasswordHash::create_with_iterations(&Password::new("hunter2").unwrap(), 10_000).unwrap();
    let directory = StaticDirectory::from_toml(&format!(
        "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ngroups = [\"deployers\"]"
    ))
    .unwrap();
    let issuer = SessionIssuer::new(
        SessionKey::generate(SessionAlgorithm::EdDSA).unwrap(),
        "https://broker.test",
        "proxy",
    )
    .unwrap()
    .with_ttl(Duration::from_secs(900))
    .unwrap();
    let login = PasswordLogin::new(Arc::new(directory), issuer.clone());
    let session = login
        .login("alice", &Password::new("hunter2").unwrap())
        .await
        .unwrap();
    let p = issuer
        .verifier()
        .unwrap()
        .verify(session.expose())
        .await
        .unwrap();
    assert_eq!(p.subject(), "alice");
    assert!(p.in_group("deployers"));
    for (user, password) in [("alice", "wrong"), ("nobody", "hunter2")] {
        assert!(matches!(
            login.login(user, &Password::new(password).unwrap()).await,
            Err(AuthError::Directory(DirectoryError::InvalidCredentials))
        ));
    }
    assert!(
        issuer
            .clone()
            .with_ttl(Duration::from_secs(2 * 86_400))
            .is_err()
    );
}

/// The outside finding: 40 wrong passwords in 2.7 s, no throttling, and the right one still
/// worked. Five failures for a name in five minutes now refuse every login of that name.
#[tokio::test]
async fn password_guessing_is_limited_per_user_name() {
    use portcullis_directory::{Password, PasswordHash, StaticDirectory};
    use portcullis_token::PasswordLogin;

    let hash =
        PasswordHash::create_with_iterations(&Password::new("hunter2").unwrap(), 10_000).unwrap();
    let directory = StaticDirectory::from_toml(&format!(
        "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
         [[user]]\nname = \"bob\"\npassword_hash = \"{hash}\"\n\
         [[user]]\nname = \"carol\"\npassword_hash = \"{hash}\""
    ))
    .unwrap();
    let issuer = SessionIssuer::new(
        SessionKey::generate(SessionAlgorithm::EdDSA).unwrap(),
        "https://broker.test",
        "proxy",
    )
    .unwrap();
    let login = PasswordLogin::new(Arc::new(directory), issuer);
    let (wrong, right) = (
        Password::new("guess").unwrap(),
        Password::new("hunter2").unwrap(),
    );
    for _ in 0..5 {
        assert!(matches!(
            login.login("alice", &wrong).await,
            Err(AuthError::Directory(_))
        ));
    }
    // Refused, a right password too, for (about) the rest of the five minutes.
    assert!(matches!(
        login.login("alice", &right).await,
        Err(AuthError::TooManyAttempts(295..=300))
    ));
    // Another spelling of the name is the same name (LDAP matches uid ignoring case), so
    // "ALICE" gets no guesses of its own.
    assert!(matches!(
        login.login("ALICE", &wrong).await,
        Err(AuthError::TooManyAttempts(_))
    ));
    for guess in ["Bob", "BOB", "bOb", "boB", "BOb"] {
        assert!(matches!(
            login.login(guess, &wrong).await,
            Err(AuthError::Directory(_))
        ));
    }
    assert!(matches!(
        login.login("bob", &right).await,
        Err(AuthError::TooManyAttempts(_))
    ));
    // Another name is not held out; a clone shares the count.
    assert!(login.login("carol", &right).await.is_ok());
    assert!(matches!(
        login.clone().login("alice", &right).await,
        Err(AuthError::TooManyAttempts(_))
    ));
    assert!(
        login
            .with_attempt_limit(0, Duration::from_secs(60))
            .is_err()
    );
}

#[tokio::test]
async fn cached_acceptances_last_max_age_never_past_exp_and_only_for_accepted_tokens() {
    let at = |t: u64| UNIX_EPOCH + Duration::from_secs(t);
    let clock = clock(T0);
    let verifier = rsa_verifier(clock.clone())
        .cache_verified(2, Duration::from_secs(60))
        .unwrap();
    let token = sign(Algorithm::RS256, Some("rsa-test"), &claims(), &rsa_key());
    assert_eq!(verifier.verify(&token).await.unwrap().subject(), "alice");
    assert_eq!(verifier.cached_tokens(), 1);

    // A hit skips the checks: before nbf a fresh verification refuses, the cache does not.
    clock.set(at(T0 - 30));
    assert!(matches!(
        rsa_verifier(clock.clone()).verify(&token).await,
        Err(AuthError::NotYetValid)
    ));
    assert_eq!(verifier.verify(&token).await.unwrap().subject(), "alice");
    // Clones share the memory.
    assert_eq!(verifier.clone().cached_tokens(), 1);

    // Past max_age the token is checked again (and still good until exp + leeway).
    clock.set(at(T0 + 61));
    assert!(verifier.verify(&token).await.is_ok());
    clock.set(at(T0 + 606));
    assert!(matches!(
        verifier.verify(&token).await,
        Err(AuthError::Expired)
    ));
    assert_eq!(verifier.cached_tokens(), 0, "a stale entry is dropped");

    // Never past exp: a token with 20 s left is remembered 20 s, not 60.
    clock.set(at(T0));
    let mut short = claims();
    short["exp"] = json!(T0 + 20);
    let short = sign(Algorithm::RS256, Some("rsa-test"), &short, &rsa_key());
    assert!(verifier.verify(&short).await.is_ok());
    clock.set(at(T0 + 40));
    assert!(matches!(
        verifier.verify(&short).await,
        Err(AuthError::Expired)
    ));

    // Refused tokens are not remembered; the least recently used entry makes room.
    clock.set(at(T0));
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert!(verifier.verify(&forged).await.is_err());
    assert!(verifier.verify(&forged).await.is_err());
    let mut other = claims();
    other["sub"] = json!("bob");
    let other = sign(Algorithm::RS256, Some("rsa-test"), &other, &rsa_key());
    let mut third = claims();
    third["sub"] = json!("carol");
    let third = sign(Algorithm::RS256, Some("rsa-test"), &third, &rsa_key());
    for t in [&token, &other, &third] {
        assert!(verifier.verify(t).await.is_ok());
    }
    assert_eq!(verifier.cached_tokens(), 2);

    // Bad settings are refused.
    for (capacity, age) in [(0, 60), (1, 0), (1, 301)] {
        assert!(matches!(
            rsa_verifier(clock.clone()).cache_verified(capacity, Duration::from_secs(age)),
            Err(AuthError::Config(_))
        ));
    }
}
