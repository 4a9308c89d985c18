//! Token verification cost.
//!
//! Targets (issue #3): JWT verification (ES256, RS256, EdDSA) within 10% of a bare
//! `jsonwebtoken::decode` with the same key; a script-token check ≤ 2 µs with 100k tokens in
//! the store.
#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benches set up fixed, valid inputs; a failure is a broken bench"
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use portcullis::token::{
    Algorithm, IssueRequest, JwtRules, JwtVerifier, KeySet, MemoryTokenStore, SessionAlgorithm,
    SessionKey, TokenKey, TokenKind, TokenOptions, Tokens,
};
use serde_json::{Map, Value, json};

const ISSUER: &str = "https://idp.bench";

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": "gate", "sub": "alice", "groups": ["deployers", "platform"],
           "email": "alice@example.com", "iat": 1_700_000_000u64, "exp": 4_000_000_000u64})
}

/// One algorithm's token, our verifier, and the same key for a bare decode.
struct Case {
    name: &'static str,
    token: String,
    verifier: JwtVerifier,
    bare_key: DecodingKey,
    alg: Algorithm,
}

fn case(name: &'static str, alg: Algorithm, encoding: &EncodingKey, jwks: &Value) -> Case {
    let kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    let mut header = Header::new(alg.as_str().parse().expect("same JOSE name"));
    header.kid = kid;
    let token = jsonwebtoken::encode(&header, &claims(), encoding).expect("sign");
    let mut rules = JwtRules::new(ISSUER, "gate");
    rules.algorithms = vec![alg];
    let keys = KeySet::from_jwks(jwks).expect("jwks");
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).expect("jwk");
    Case {
        name,
        token,
        verifier: JwtVerifier::with_keys("bench", keys, rules).expect("verifier"),
        bare_key: DecodingKey::from_jwk(&jwk).expect("key"),
        alg,
    }
}

fn session_case(name: &'static str, alg: SessionAlgorithm, jwt_alg: Algorithm) -> Case {
    let key = SessionKey::generate(alg).expect("key");
    let encoding = match alg {
        SessionAlgorithm::EdDSA => EncodingKey::from_ed_der(key.secret_material()),
        _ => EncodingKey::from_ec_der(key.secret_material()),
    };
    case(
        name,
        jwt_alg,
        &encoding,
        &key.public_jwks().expect("public"),
    )
}

fn jwt_verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let rsa_jwks: Value = serde_json::from_str(include_str!(
        "../crates/portcullis-token/tests/fixtures/rsa2048-test-only.jwks.json"
    ))
    .expect("jwks");
    let rsa = EncodingKey::from_rsa_der(include_bytes!(
        "../crates/portcullis-token/tests/fixtures/rsa2048-test-only.der"
    ));
    let cases = [
        session_case("es256", SessionAlgorithm::ES256, Algorithm::ES256),
        case("rs256", Algorithm::RS256, &rsa, &rsa_jwks),
        session_case("eddsa", SessionAlgorithm::EdDSA, Algorithm::EdDSA),
    ];
    let mut group = c.benchmark_group("token/jwt_verify");
    for case in &cases {
        let mut validation = Validation::new(case.alg.as_str().parse().expect("same JOSE name"));
        validation.set_audience(&["gate"]);
        validation.set_issuer(&[ISSUER]);
        group.bench_function(format!("{}/bare_jsonwebtoken_decode", case.name), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<Map<String, Value>>(
                    black_box(&case.token),
                    &case.bare_key,
                    &validation,
                )
                .expect("valid")
            })
        });
        group.bench_function(format!("{}/portcullis_verifier", case.name), |b| {
            b.iter(|| {
                runtime
                    .block_on(case.verifier.verify(black_box(&case.token)))
                    .expect("valid")
            })
        });
    }
    group.finish();
}

fn script_token_check(c: &mut Criterion) {
    const TOKENS: usize = 100_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (key, _) = TokenKey::generate().expect("key");
    let (tokens, secrets) = runtime.block_on(async {
        let tokens = Tokens::open(
            Arc::new(MemoryTokenStore::new()),
            key,
            TokenOptions::default(),
        )
        .await
        .expect("open");
        let mut secrets = Vec::with_capacity(TOKENS);
        for i in 0..TOKENS {
            let issued = tokens
                .issue(IssueRequest {
                    kind: TokenKind::Script,
                    name: format!("bot-{i}"),
                    owner: "alice".into(),
                    scope: None,
                    ttl: None,
                })
                .await
                .expect("issue");
            secrets.push(issued.secret.expose().to_owned());
        }
        (tokens, secrets)
    });
    let mut group = c.benchmark_group("token/script_token_check_100k");
    let mut i = 0usize;
    group.bench_function("valid", |b| {
        b.iter(|| {
            i = (i + 7919) % TOKENS;
            tokens.check(black_box(&secrets[i])).expect("valid")
        })
    });
    let unknown = portcullis::token::TokenSecret::generate(TokenKind::Script).expect("token");
    group.bench_function("unknown", |b| {
        b.iter(|| tokens.check(black_box(unknown.expose())).is_err())
    });
    group.finish();
}

criterion_group!(benches, jwt_verify, script_token_check);
criterion_main!(benches);
