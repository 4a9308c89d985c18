//! `crypto.x509.*` and `crypto.parse_private_keys` through a compiled engine, and string
//! literals too long for regorus's lexer (a PEM on one line), which the source rewrite
//! hoists into functions so that the module compiles as OPA compiles it.
#![expect(
    clippy::unwrap_used,
    reason = "tests: helpers outside #[test] functions fail the test they serve"
)]

use base64::Engine as _;
use portcullis_policy::{Bundle, EvalLimits, PolicyEngine, PolicyError, RegoEngine};
use serde_json::{Value, json};

const EC_CERT: &str = include_str!("fixtures/x509/ec-test-only.crt.pem");
const EC_KEY: &str = include_str!("fixtures/x509/ec-test-only.key.pem");
const RSA_CERT: &str = include_str!("fixtures/x509/rsa-test-only.crt.pem");

/// Two certificates, over 1.5 kB as one literal.
fn chain() -> String {
    format!("{EC_CERT}{RSA_CERT}")
}

fn compile_files(files: &[(&str, &str)], strict: bool) -> Result<RegoEngine, PolicyError> {
    let files: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(path, text)| ((*path).to_owned(), text.as_bytes().to_vec()))
        .collect();
    let bundle = Bundle::from_files("t", files)?;
    RegoEngine::compile(
        [&bundle],
        EvalLimits::default().with_strict_builtin_errors(strict),
    )
}

fn eval(engine: &RegoEngine, path: &str, input: &Value) -> Result<Option<Value>, PolicyError> {
    engine.evaluate(path, input).map(|e| e.result)
}

/// `text` as one Rego string literal (escaped as JSON).
fn literal(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

#[test]
fn a_pem_on_one_line_compiles_and_reads() {
    let pem = literal(&chain());
    assert!(pem.len() > 1500);
    let rego = format!(
        "package t\n\ncerts := {pem}\n\nnames := [c.Subject.CommonName | some c in crypto.x509.parse_certificates(certs)]\n\
         same if {pem} == certs\nline := 7\n"
    );
    let engine = compile_files(&[("t/t.rego", &rego)], false).unwrap();
    assert_eq!(
        eval(&engine, "data.t.names", &json!({})).unwrap(),
        Some(json!(["ec.example", "rsa.example"]))
    );
    assert_eq!(
        eval(&engine, "data.t.same", &json!({})).unwrap(),
        Some(json!(true))
    );
    // The package's value is its rules only: the hoisted functions are not data.
    let package = eval(&engine, "data.t", &json!({})).unwrap().unwrap();
    let mut keys: Vec<&String> = package.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["certs", "line", "names", "same"]);
    // A raw string on one line: base64 of the chain.
    let b64 = base64::engine::general_purpose::STANDARD.encode(chain());
    let raw = format!("package r\n\nn := count(crypto.x509.parse_certificates(`{b64}`))\n");
    let engine = compile_files(&[("r/r.rego", &raw)], false).unwrap();
    assert_eq!(
        eval(&engine, "data.r.n", &json!({})).unwrap(),
        Some(json!(2))
    );
    // Two modules of one package with the same literal: no conflict.
    let other = format!("package t\n\nalso := {pem}\n");
    let engine = compile_files(&[("t/t.rego", &rego), ("t/u.rego", &other)], false).unwrap();
    assert_eq!(
        eval(&engine, "data.t.also", &json!({})).unwrap(),
        Some(json!(chain()))
    );
}

#[test]
fn a_long_literal_in_rego_v0_and_in_calls_with_output_arguments() {
    let pem = literal(&chain());
    let v0 = format!(
        "package t\n\nnames[n] {{ crypto.x509.parse_certificates({pem}, certs); n := certs[_].Subject.CommonName }}\n"
    );
    let bundle = Bundle::from_files(
        "t",
        vec![
            (
                ".manifest".to_owned(),
                br#"{"roots": ["t"], "rego_version": 0}"#.to_vec(),
            ),
            ("t/t.rego".to_owned(), v0.into_bytes()),
        ],
    )
    .unwrap();
    let engine = RegoEngine::compile([&bundle], EvalLimits::default()).unwrap();
    assert_eq!(
        eval(&engine, "data.t.names", &json!({})).unwrap(),
        Some(json!(["ec.example", "rsa.example"]))
    );
}

#[test]
fn a_long_literal_is_still_type_checked_and_errors_keep_their_lines() {
    let long = literal(&"x".repeat(2000));
    // A string where a number is expected is refused at compile, as for a short one.
    let refused = compile_files(
        &[("t/t.rego", &format!("package t\nx := abs({long})\n"))],
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("abs"), "{refused}");
    // An error after the literal names its own line.
    let refused = compile_files(
        &[(
            "t/t.rego",
            &format!("package t\nx := {long}\ny := nope(1)\n"),
        )],
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains(":3:"), "{refused}");
    // A default's value must be constant: left as written, and regorus refuses the line.
    let refused = compile_files(
        &[("t/t.rego", &format!("package t\ndefault x := {long}\n"))],
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("column"), "{refused}");
}

#[test]
fn x509_builtins_fail_as_builtins_do() {
    let rego = "package t\n\ncerts := crypto.x509.parse_certificates(input.s)\n\
                csr := crypto.x509.parse_certificate_request(input.s)\n\
                pair := crypto.x509.parse_keypair(input.s, input.k)\n\
                jwk := crypto.x509.parse_rsa_private_key(input.s)\n\
                keys := crypto.parse_private_keys(input.s)\n";
    let lenient = compile_files(&[("t/t.rego", rego)], false).unwrap();
    let strict = compile_files(&[("t/t.rego", rego)], true).unwrap();
    let bad = json!({"s": "not base64!", "k": "x"});
    for rule in ["certs", "csr", "pair", "jwk"] {
        let path = format!("data.t.{rule}");
        assert_eq!(eval(&lenient, &path, &bad).unwrap(), None, "{rule}");
        match eval(&strict, &path, &bad) {
            Err(PolicyError::Eval { message, .. }) => {
                assert!(message.contains("illegal base64"), "{message}");
            }
            other => panic!("{rule}: {other:?}"),
        }
    }
    assert_eq!(eval(&strict, "data.t.keys", &bad).unwrap(), Some(json!([])));
    let good = json!({"s": EC_CERT, "k": EC_KEY});
    let pair = eval(&strict, "data.t.pair", &good).unwrap().unwrap();
    assert_eq!(pair["Leaf"]["Subject"]["CommonName"], json!("ec.example"));
    // A constant argument of the wrong type is refused at compile.
    let refused = compile_files(
        &[(
            "t/t.rego",
            "package t\nx := crypto.x509.parse_keypair(1, \"k\")\n",
        )],
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("crypto.x509.parse_keypair"), "{refused}");
}
