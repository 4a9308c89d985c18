//! The built-ins that read attacker-controlled text in new ways (`src/builtins/` of
//! portcullis-policy, and regorus's `yaml.*` it enables): JWT decoding and verification
//! (tokens and key material), JWT signing (headers and JWKs), YAML, JSON Patch paths,
//! CIDRs, `sprintf` formats, globs and replacement patterns, AWS request signing (the URL,
//! headers, body and credentials), X.509 certificates, requests and private keys (as PEM,
//! base64 and DER), GraphQL queries, schemas and AST objects (`graphql.*`), JSON Schema
//! (documents and schemas), Go templates, each given the same arbitrary string, in default
//! and in strict built-in error mode. Never a panic: a bad string is undefined or, in strict
//! mode, an evaluation error.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_policy::{Bundle, EvalLimits, PolicyEngine, RegoEngine};

const POLICY: &str = r#"package f

decode := io.jwt.decode(input.s)
hs256 := io.jwt.verify_hs256(input.s, "secret")
rs256_key := io.jwt.verify_rs256("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", input.s)
es256 := io.jwt.verify_es256(input.s, input.s)
decode_verify := io.jwt.decode_verify(input.s, {"secret": "secret", "time": 0})
decode_verify_cert := io.jwt.decode_verify("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", {"cert": input.s})
yaml := yaml.unmarshal(input.s)
yaml_valid := yaml.is_valid(input.s)
patch := json.patch({"a": [1, {"b": 2}]}, [{"op": "add", "path": input.s, "value": 1}])
merge := net.cidr_merge([input.s, "10.0.0.0/8"])
intersects := net.cidr_intersects(input.s, "10.0.0.0/8")
encode_sign_raw := io.jwt.encode_sign_raw(input.s, "{}", input.s)
encode_sign := io.jwt.encode_sign({"alg": "HS256"}, {}, object.union({"kty": "oct"}, {"k": input.s}))
replace_n := strings.replace_n({"": "-", "a": "b", "ab": "c"}, input.s)
globs := regex.globs_match(input.s, "a.*b+[c-e]")
sprintf := sprintf(input.s, [1, 2.5, "s", [1], {"a": set()}])
count_s := count(input.s)
hashes := [crypto.md5(input.s), crypto.hmac.sha256(input.s, input.s)]
aws_config := {"aws_access_key": input.s, "aws_secret_access_key": input.s, "aws_service": "s3", "aws_region": input.s, "aws_session_token": input.s}
aws_url := providers.aws.sign_req({"method": input.s, "url": input.s}, aws_config, 0)
aws_headers := providers.aws.sign_req({"method": "GET", "url": "https://h/", "headers": {input.s: input.s, "Host": "h"}, "raw_body": input.s}, aws_config, -1)
schema_doc := json.match_schema(input.s, {"type": "object", "properties": {"a": {"pattern": "^a+$", "format": "email"}}, "required": ["a"]})
schema_self := json.match_schema({"a": ["x", 1.5]}, input.s)
schema_verify := json.verify_schema(input.s)
template := strings.render_template(input.s, {"a": [1, "b", {"c": null}], "s": input.s})
aws_body := providers.aws.sign_req({"method": "PUT", "url": concat("", ["https://", input.s, "/", input.s]), "body": {input.s: [input.s, 1.5]}}, aws_config, 9223372036854775807)
x509_certs := [crypto.x509.parse_certificates(input.s), crypto.x509.parse_certificates(base64.encode(input.s))]
x509_pem := crypto.x509.parse_certificates(concat("", ["-----BEGIN CERTIFICATE-----\n", base64.encode(input.s), "\n-----END CERTIFICATE-----\n"]))
x509_csr := crypto.x509.parse_certificate_request(base64.encode(input.s))
x509_verify := [crypto.x509.parse_and_verify_certificates(input.s), crypto.x509.parse_and_verify_certificates_with_options(base64.encode(input.s), {"DNSName": input.s, "KeyUsages": ["KeyUsageAny"], "CurrentTime": 0})]
x509_keypair := crypto.x509.parse_keypair(base64.encode(input.s), base64.encode(input.s))
x509_rsa_key := crypto.x509.parse_rsa_private_key(concat("", ["-----BEGIN RSA PRIVATE KEY-----\n", base64.encode(input.s), "\n-----END RSA PRIVATE KEY-----\n"]))
x509_keys := [crypto.parse_private_keys(input.s), crypto.parse_private_keys(concat("", ["-----BEGIN PRIVATE KEY-----\n", base64.encode(input.s), "\n-----END PRIVATE KEY-----\n-----BEGIN EC PRIVATE KEY-----\n", base64.encode(input.s), "\n-----END EC PRIVATE KEY-----\n"]))]
gql_query := graphql.parse_query(input.s)
gql_schema := graphql.parse_schema(input.s)
gql_valid := graphql.is_valid(input.s, input.s)
gql_schema_valid := graphql.schema_is_valid(input.s)
gql_verify := graphql.parse_and_verify(input.s, "type Query { a(b: [Int!] = [1], e: E): String @deprecated } enum E { X }")
gql_parse := graphql.parse("query($v: Int) { a(b: [$v]) }", input.s)
gql_objects := graphql.parse_and_verify(graphql.parse_query(input.s), graphql.parse_schema(input.s))
gql_object := graphql.is_valid({"Operations": [{"Operation": input.s, "Name": input.s, "SelectionSet": [{"Alias": input.s, "Name": input.s, "Arguments": [{"Name": input.s, "Value": {"Kind": count(input.s) % 10, "Raw": input.s, "Children": [{"Name": input.s, "Value": {"Kind": 3, "Raw": input.s}}]}}]}]}]}, {"Definitions": [{"Kind": "OBJECT", "Name": "Query", "Fields": [{"Name": input.s, "Type": {"NamedType": input.s}}]}]})
"#;

fn engines() -> &'static [RegoEngine] {
    static ENGINES: OnceLock<Vec<RegoEngine>> = OnceLock::new();
    ENGINES.get_or_init(|| {
        let files = vec![("f/f.rego".to_owned(), POLICY.as_bytes().to_vec())];
        let Ok(bundle) = Bundle::from_files("fuzz", files) else {
            return Vec::new();
        };
        [false, true]
            .into_iter()
            .filter_map(|strict| {
                let limits = EvalLimits::default()
                    .with_strict_builtin_errors(strict)
                    .with_time_limit(Some(std::time::Duration::from_millis(200)));
                RegoEngine::compile([&bundle], limits).ok()
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let engines = engines();
    assert_eq!(engines.len(), 2, "the fuzzed policy compiles");
    let input = serde_json::json!({ "s": text });
    for engine in engines {
        for rule in [
            "decode",
            "hs256",
            "rs256_key",
            "es256",
            "decode_verify",
            "decode_verify_cert",
            "yaml",
            "yaml_valid",
            "patch",
            "schema_doc",
            "schema_self",
            "schema_verify",
            "template",
            "merge",
            "intersects",
            "encode_sign_raw",
            "encode_sign",
            "replace_n",
            "globs",
            "sprintf",
            "count_s",
            "hashes",
            "aws_url",
            "aws_headers",
            "aws_body",
            "x509_certs",
            "x509_pem",
            "x509_csr",
            "x509_verify",
            "x509_keypair",
            "x509_rsa_key",
            "x509_keys",
            "gql_query",
            "gql_schema",
            "gql_valid",
            "gql_schema_valid",
            "gql_verify",
            "gql_parse",
            "gql_objects",
            "gql_object",
        ] {
            let _ = engine.evaluate(&format!("data.f.{rule}"), &input);
        }
    }
});
