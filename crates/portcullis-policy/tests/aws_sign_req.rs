//! `providers.aws.sign_req` (`src/builtins/aws.rs`): AWS's published Signature Version 4
//! test suite (the requests whose canonical form OPA's signer produces unchanged), the
//! headers OPA adds, and the calls OPA refuses (undefined, or an error with strict
//! built-in errors).
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: helpers outside #[test] functions fail the test they serve"
)]

use portcullis_policy::{Bundle, EvalLimits, PolicyEngine, PolicyError, RegoEngine};
use serde_json::{Value, json};

const NAME: &str = "providers.aws.sign_req";

/// The suite's credentials and date (2015-08-30T12:36:00Z).
const SUITE_KEY: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_TIME_NS: i64 = 1_440_938_160_000_000_000;

fn compile(rego: &str, strict: bool) -> Result<RegoEngine, PolicyError> {
    let bundle = Bundle::from_files("t", vec![("t/t.rego".to_owned(), rego.as_bytes().to_vec())])?;
    RegoEngine::compile(
        [&bundle],
        EvalLimits::default().with_strict_builtin_errors(strict),
    )
}

/// `providers.aws.sign_req(input.request, input.config, input.time)`.
fn sign_in(input: &Value, strict: bool) -> Result<Option<Value>, PolicyError> {
    let engine = compile(
        "package t\nx := providers.aws.sign_req(input.request, input.config, input.time)\n",
        strict,
    )?;
    engine.evaluate("data.t.x", input).map(|e| e.result)
}

/// The signed request, which must be defined.
fn sign(request: Value, config: Value, time: Value) -> Value {
    let input = json!({"request": request, "config": config, "time": time});
    match sign_in(&input, false) {
        Ok(Some(value)) => value,
        other => panic!("{input}: {other:?}"),
    }
}

/// The call fails as OPA's built-in errors do: undefined by default, an evaluation error
/// naming the built-in with strict built-in errors. Returns the strict error's message.
fn fails(request: Value, config: Value, time: Value) -> String {
    let input = json!({"request": request, "config": config, "time": time});
    assert_eq!(sign_in(&input, false).unwrap(), None, "{input}");
    match sign_in(&input, true) {
        Err(PolicyError::Eval { message, .. }) => {
            assert!(message.contains(NAME), "{message}");
            message
        }
        other => panic!("{input}: strict should fail, got {other:?}"),
    }
}

fn suite_config() -> Value {
    json!({
        "aws_access_key": SUITE_KEY,
        "aws_secret_access_key": SUITE_SECRET,
        "aws_service": "service",
        "aws_region": "us-east-1",
    })
}

fn s3_config() -> Value {
    json!({
        "aws_access_key": "MYAWSACCESSKEYGOESHERE",
        "aws_secret_access_key": "MYAWSSECRETACCESSKEYGOESHERE",
        "aws_service": "s3",
        "aws_region": "us-east-1",
    })
}

/// The `Authorization` header of the signed request.
fn authorization(signed: &Value) -> &str {
    signed["headers"]["Authorization"].as_str().unwrap()
}

#[test]
fn aws_signature_v4_test_suite() {
    // (name, method, url, headers, signed headers, signature)
    let vectors = [
        (
            "get-vanilla",
            "GET",
            "https://example.amazonaws.com/",
            json!({}),
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "post-vanilla",
            "POST",
            "https://example.amazonaws.com/",
            json!({}),
            "host;x-amz-date",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "post-vanilla-query",
            "POST",
            "https://example.amazonaws.com/?Param1=value1",
            json!({}),
            "host;x-amz-date",
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        ),
        (
            "get-utf8",
            "GET",
            "https://example.amazonaws.com/\u{1234}",
            json!({}),
            "host;x-amz-date",
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        ),
        (
            "post-header-key-sort",
            "POST",
            "https://example.amazonaws.com/",
            json!({"My-Header1": "value1"}),
            "host;my-header1;x-amz-date",
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
        ),
        (
            "get-header-key-duplicate",
            "GET",
            "https://example.amazonaws.com/",
            json!({"My-Header1": "value2,value2,value1"}),
            "host;my-header1;x-amz-date",
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        ),
    ];
    for (name, method, url, headers, signed_headers, signature) in vectors {
        let signed = sign(
            json!({"method": method, "url": url, "headers": headers}),
            suite_config(),
            json!(SUITE_TIME_NS),
        );
        assert_eq!(
            authorization(&signed),
            format!(
                "AWS4-HMAC-SHA256 Credential={SUITE_KEY}/20150830/us-east-1/service/aws4_request,\
                 SignedHeaders={signed_headers},Signature={signature}"
            ),
            "{name}"
        );
        assert_eq!(
            signed["headers"]["x-amz-date"], "20150830T123600Z",
            "{name}"
        );
        assert_eq!(signed["headers"]["host"], "example.amazonaws.com", "{name}");
        // Only S3 and Glacier get the payload hash header.
        assert!(
            signed["headers"].get("x-amz-content-sha256").is_none(),
            "{name}"
        );
    }
}

#[test]
fn the_request_comes_back_with_the_aws_headers() {
    let request = json!({
        "method": "get",
        "url": "http://example.com",
        "headers": {"foo": "bar", "User-Agent": "opa", "authorization": "old"},
        "timeout": "5s",
    });
    let mut config = s3_config();
    config["aws_session_token"] = json!("MYAWSSECURITYTOKENGOESHERE");
    let signed = sign(request, config, json!(1_451_311_705_000_000_000_i64));
    let auth = authorization(&signed).to_owned();
    // The headers proxies rewrite are not signed, but kept.
    assert!(
        auth.contains(
            "SignedHeaders=foo;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
        ),
        "{auth}"
    );
    assert_eq!(
        signed,
        json!({
            "method": "get",
            "url": "http://example.com",
            "timeout": "5s",
            "headers": {
                "foo": "bar",
                "User-Agent": "opa",
                "authorization": "old",
                "Authorization": auth,
                "host": "example.com",
                "x-amz-content-sha256":
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "x-amz-date": "20151228T140825Z",
                "x-amz-security-token": "MYAWSSECURITYTOKENGOESHERE",
            },
        })
    );
}

#[test]
fn the_body_is_signed_as_go_serializes_it() {
    let signed = |request: Value| {
        sign(request, s3_config(), json!(1_451_311_705_000_000_000_i64))["headers"]
            ["x-amz-content-sha256"]
            .clone()
    };
    // Keys sorted, compact, `<` `>` `&` escaped as Go does: sha256 of
    // `{"a":"\u003c\u0026\u003e","b":[1,2]}`.
    let body =
        signed(json!({"method": "PUT", "url": "https://h/", "body": {"b": [1, 2], "a": "<&>"}}));
    let raw = signed(json!({
        "method": "PUT",
        "url": "https://h/",
        "raw_body": "{\"a\":\"\\u003c\\u0026\\u003e\",\"b\":[1,2]}",
    }));
    assert_eq!(body, raw);
    assert_eq!(
        body,
        "c281ab336ef2a30adf2f62feef989f7341caa07896e18cc204e679cb5f669423"
    );
}

#[test]
fn refused_calls_fail_without_revealing_the_secret() {
    let request = json!({"method": "GET", "url": "https://example.amazonaws.com/"});
    let time = json!(SUITE_TIME_NS);
    let without = |key: &str| {
        let mut config = suite_config();
        config.as_object_mut().unwrap().remove(key);
        config
    };
    let with = |key: &str, value: Value| {
        let mut config = suite_config();
        config[key] = value;
        config
    };
    let mut messages = vec![
        fails(request.clone(), without("aws_region"), time.clone()),
        fails(request.clone(), with("aws_service", json!(3)), time.clone()),
        fails(
            request.clone(),
            with("aws_session_token", json!(true)),
            time.clone(),
        ),
        fails(
            request.clone(),
            with("disable_payload_signing", json!("yes")),
            time.clone(),
        ),
        fails(request.clone(), suite_config(), json!("now")),
        fails(request.clone(), suite_config(), json!(1.5)),
        fails(request.clone(), suite_config(), json!(1e30)),
    ];
    for bad in [
        json!({"method": "GET"}),
        json!({"url": "https://h/"}),
        json!({"method": "GET", "url": "https://h/", "verb": "GET"}),
        json!({"method": 1, "url": "https://h/"}),
        json!({"method": "GET", "url": "https://h:port/"}),
        json!({"method": "GET", "url": "https://h/%zz"}),
        json!({"method": "GET", "url": "https://h/", "headers": ["a"]}),
        json!({"method": "GET", "url": "https://h/", "headers": {"a": 1}}),
        json!({"method": "GET", "url": "https://h/", "headers": {"A": "1", "a": "2"}}),
        json!({"method": "GET", "url": "https://h/", "raw_body": {"a": 1}}),
    ] {
        messages.push(fails(bad, suite_config(), time.clone()));
    }
    for message in messages {
        assert!(!message.contains(SUITE_SECRET), "{message}");
    }
}

#[test]
fn a_constant_argument_of_the_wrong_type_is_refused_at_compile_time() {
    let refused = compile(
        "package t\nx := providers.aws.sign_req(\"GET\", {}, 0)\n",
        false,
    )
    .unwrap_err();
    assert!(refused.to_string().contains(NAME), "{refused}");
    let refused = compile("package t\nx := providers.aws.sign_req({}, {})\n", false).unwrap_err();
    assert!(refused.to_string().contains("arguments"), "{refused}");
}
