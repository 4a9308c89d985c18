//! What an outside black-box run of the deploy gate broke, one test per finding: strangers
//! acting on someone else's approval, client input turned into 503s or unaudited refusals,
//! dot and look-alike names, altered percent-encoding, non-JSON errors, and the gaps a new
//! user hit (stage case, Teletraan's extra parameters, per-env script-token names,
//! `hash-password`).

use super::*;

/// Sends `raw_target` exactly as written (reqwest would re-encode some of it).
async fn raw_request(s: &Server, method: &str, raw_target: &str, auth: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = s.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{method} {raw_target} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {auth}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A request body: its content type and text.
type Body = (&'static str, String);

/// The body of a JSON error answer, checked for the one shape every error has.
fn assert_json_error(status: u16, body: &str, context: &str) -> Value {
    let value: Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|_| panic!("{context}: {status} answered non-JSON: {body:?}"));
    assert!(
        value["error"].is_string() && value["message"].is_string(),
        "{context}: {body}"
    );
    value
}

#[tokio::test]
async fn a_stranger_cannot_touch_someone_elses_pending_deploy() {
    let (s, bob, carol, dave) = production_setup().await;
    let (status, body) = s.deploy(&bob, "prod", "&approver=carol").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();
    let deploy = body["deploy"]["id"].as_str().unwrap().to_owned();

    // dave (no role) and carol (OPERATOR, and the approver) try to resume bob's deploy.
    for intruder in [&dave, &carol] {
        let (status, body) = s
            .deploy(intruder, "prod", &format!("&approval_id={approval}"))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (_, record) = s.get(&format!("/v1/deploys/{deploy}"), &bob).await;
        assert_eq!(record["state"], "pending_approval", "{record}");
        assert!(record["detail"].is_null(), "{record}");
    }
    // bob resuming before the vote: still pending, still nothing changed.
    let (status, _) = s
        .deploy(&bob, "prod", &format!("&approval_id={approval}"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // carol approves: the deploy proceeds as bob's.
    let (status, body) = s
        .post(&format!("/v1/approvals/{approval}/approve"), &carol, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deploy"]["state"], "accepted", "{body}");
    assert_eq!(body["deploy"]["operator"], "bob");
}

#[tokio::test]
async fn client_input_is_a_json_400_before_anything_is_audited() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    let admin = s.admin();
    let long = "x".repeat(65_000);
    for target in [
        "/v1/envs/checkout/user_roles?note=a%0Ab".to_owned(),
        "/v1/audit?resource=env:checkout&note=a%0Ab".to_owned(),
        "/v1/envs/checkout/staging/deploys?build_id=1&description=a%0Ab".to_owned(),
        "/v1/envs/checkout/staging/deploys?build_id=%ZZ%C3%28".to_owned(),
        "/v1/envs/checkout/staging/deploys?build_id=%C3%28".to_owned(),
        "/v1/envs/checkout/staging/deploys?build_id=1%E2%80%8B".to_owned(),
        "/v1/envs/check%ZZout/staging/deploys?build_id=1".to_owned(),
        format!("/v1/envs/checkout/user_roles?note={long}"),
        format!("/v1/audit?resource=env:checkout&note={long}"),
    ] {
        let method = if target.contains("deploys") {
            "POST"
        } else {
            "GET"
        };
        let (status, body) = raw_request(&s, method, &target, &admin).await;
        assert!(
            status == 400 || status == 414,
            "{} → {status} {body}",
            &target[..target.len().min(80)]
        );
        assert_json_error(status, &body, &target[..target.len().min(80)]);
    }
    // Nothing was deployed, and the audit log is still up.
    let (status, list) = s.get("/v1/envs/checkout/staging/deploys", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]));
    let (status, deploy) = s.deploy(&admin, "staging", "").await;
    assert_eq!(status, StatusCode::CREATED, "{deploy}");
}

#[tokio::test]
async fn undeclared_parameters_are_ignored_and_not_recorded() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    let admin = s.admin();
    // Teletraan clients send parameters this service does not read.
    let (status, deploy, headers) = s
        .call(
            Method::POST,
            "/v1/envs/checkout/staging/deploys?build_id=5&deliveryType=x&agentId=7",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{deploy}");
    let correlation = headers["x-request-id"].to_str().unwrap().to_owned();
    let (_, page) = s
        .get(
            &format!("/v1/audit?resource=env_stage:checkout/staging&correlation_id={correlation}"),
            &admin,
        )
        .await;
    let parameters = &page["records"][0]["event"]["request"]["parameters"];
    assert_eq!(parameters["build_id"], "5", "{page}");
    assert!(parameters.get("deliveryType").is_none(), "{page}");
    // A guarded route records none of a client's extra parameters.
    let (status, _, headers) = s
        .call(
            Method::GET,
            "/v1/envs/checkout/user_roles?note=hello",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let correlation = headers["x-request-id"].to_str().unwrap().to_owned();
    let (_, page) = s
        .get(
            &format!("/v1/audit?resource=env:checkout&correlation_id={correlation}"),
            &admin,
        )
        .await;
    let text = page.to_string();
    assert!(!text.contains("hello"), "{page}");
}

#[tokio::test]
async fn dot_and_look_alike_names_are_refused() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    let admin = s.admin();
    for target in [
        "/v1/envs/../staging/deploys?build_id=1",
        "/v1/envs/%2e%2e/staging/deploys?build_id=1",
        "/v1/envs/checkout/%2E/deploys?build_id=1",
        "/v1/envs/./staging/deploys?build_id=1",
        "/v1/envs/check%E2%80%8Bout/staging/deploys?build_id=1",
        "/v1/envs/checkout/prod%E2%80%AE/deploys?build_id=1",
        "/v1/envs/%2e%2e/user_roles",
    ] {
        let method = if target.contains("deploys") {
            "POST"
        } else {
            "GET"
        };
        let (status, body) = raw_request(&s, method, target, &admin).await;
        // `..` as written may be resolved by the router (404); encoded it reaches the name
        // check (400). Never a 2xx.
        assert!(status == 400 || status == 404, "{target} → {status} {body}");
        assert_json_error(status, &body, target);
    }
    let (_, list) = s.get("/v1/envs/%2e%2e/staging/deploys", &admin).await;
    assert!(list.get("error").is_some(), "{list}");
}

#[tokio::test]
async fn every_error_answer_is_json() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    let admin = s.admin();
    let cases: Vec<(Method, String, Option<Body>)> = vec![
        (Method::GET, "/no/such/route".into(), None),
        (Method::DELETE, "/v1/login".into(), None),
        (
            Method::PATCH,
            "/v1/envs/checkout/staging/deploys".into(),
            None,
        ),
        (
            Method::POST,
            "/v1/login".into(),
            Some(("text/plain", "user=bob".into())),
        ),
        (
            Method::POST,
            "/v1/login".into(),
            Some(("application/json", "{not json".into())),
        ),
        (
            Method::POST,
            "/v1/login".into(),
            Some(("application/json", "{\"username\": 1}".into())),
        ),
        (
            Method::GET,
            "/v1/envs/checkout/staging/deploys?limit=lots".into(),
            None,
        ),
    ];
    for (method, path, body) in cases {
        let mut request = s
            .http
            .request(method.clone(), format!("{}{path}", s.base))
            .header("authorization", &admin);
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        assert!(status.is_client_error(), "{method} {path} → {status}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        assert_json_error(status.as_u16(), &text, &format!("{method} {path}"));
    }

    // A body over the limit: 413, as JSON, whether or not the client got to send it all.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = s.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let size = 3 * 1024 * 1024;
    let head = format!(
        "POST /v1/login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..size / chunk.len() {
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert_json_error(413, body, "a body over the limit");
}

#[tokio::test]
async fn stage_names_are_case_insensitive_so_prod_is_production() {
    let (s, bob, _carol, _dave) = production_setup().await;
    for stage in ["PROD", "Prod"] {
        let (status, body) = s.deploy(&bob, stage, "").await;
        assert_eq!(
            status,
            StatusCode::PRECONDITION_REQUIRED,
            "{stage} must need approval: {body}"
        );
    }
    let (status, body) = s.deploy(&bob, "PROD", "&approver=carol").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["deploy"]["stage"], "prod");
    // Roles granted on `Checkout` are roles on `checkout`.
    s.grant("user_roles", "Search", "bob", "OPERATOR").await;
    let (status, body) = s
        .post("/v1/envs/search/staging/deploys?build_id=1", &bob, None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn script_token_names_are_per_env() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    let checkout = s
        .grant("token_roles", "checkout", "deployer", "OPERATOR")
        .await;
    let search = s.grant("token_roles", "search", "deployer", "READER").await;
    assert_ne!(checkout["token"], search["token"]);
    // The same name twice on one env is a conflict.
    let (status, body) = s
        .post(
            "/v1/envs/checkout/token_roles",
            &s.admin(),
            Some(json!({ "name": "deployer", "role": "OPERATOR" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Each acts only inside its env, with its own role there.
    let on_checkout = format!("token {}", checkout["token"].as_str().unwrap());
    let on_search = format!("token {}", search["token"].as_str().unwrap());
    assert_eq!(
        s.deploy(&on_checkout, "staging", "").await.0,
        StatusCode::CREATED
    );
    let (status, _) = s
        .post(
            "/v1/envs/search/staging/deploys?build_id=1",
            &on_search,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "READER on search");
    let (status, _) = s
        .post(
            "/v1/envs/search/staging/deploys?build_id=1",
            &on_checkout,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "scoped to checkout");
}

#[test]
fn hash_password_reads_stdin_and_never_argv() {
    use std::io::Write;
    let mut child = std::process::Command::new(binary())
        .args(["hash-password", "--iterations", "10000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let hash: PasswordHash = line.trim().parse().unwrap();
    assert!(hash.verify(&Password::new("correct horse").unwrap()));
    assert!(!hash.verify(&Password::new("correct horse\n").unwrap()));
    // A password on the command line is not an option.
    let refused = std::process::Command::new(binary())
        .args(["hash-password", "hunter2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[tokio::test]
async fn an_envs_audit_log_includes_its_stages_unless_exact() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    let admin = s.admin();
    for stage in ["staging", "canary"] {
        assert_eq!(s.deploy(&admin, stage, "").await.0, StatusCode::CREATED);
    }
    s.grant("user_roles", "checkout", "bob", "OPERATOR").await;
    s.grant("user_roles", "checkout-2", "bob", "OPERATOR").await;
    let resources = |page: &Value| -> Vec<String> {
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let res = &r["event"]["resource"];
                format!(
                    "{}:{}",
                    res["kind"].as_str().unwrap(),
                    res["id"].as_str().unwrap()
                )
            })
            .collect()
    };
    let (status, page) = s.get("/v1/audit?resource=env:checkout", &admin).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let all = resources(&page);
    for expected in [
        "env:checkout",
        "env_stage:checkout/staging",
        "env_stage:checkout/canary",
    ] {
        assert!(
            all.iter().any(|r| r == expected),
            "{expected} missing: {all:?}"
        );
    }
    assert!(!all.iter().any(|r| r.contains("checkout-2")), "{all:?}");
    let (_, page) = s
        .get("/v1/audit?resource=env:checkout&exact=true", &admin)
        .await;
    assert!(
        resources(&page).iter().all(|r| r == "env:checkout"),
        "{page}"
    );
}

#[tokio::test]
async fn production_look_alikes_are_not_stage_names() {
    let (s, bob, _carol, _dave) = production_setup().await;
    for stage in [
        "prod%EF%B8%8F",                        // prod + variation selector 16
        "prod%CD%8F",                           // combining grapheme joiner
        "prod%E3%85%A4",                        // Hangul filler
        "%D1%80rod",                            // Cyrillic р
        "%EF%BD%90%EF%BD%92%EF%BD%8F%EF%BD%84", // fullwidth ｐｒｏｄ
        "PRODUCT%C4%B0ON",                      // PRODUCTİON (dotted capital I)
        "prod%EE%80%80",                        // private use
    ] {
        let target = format!("/v1/envs/checkout/{stage}/deploys?build_id=1");
        let (status, body) = raw_request(&s, "POST", &target, &bob).await;
        assert_eq!(status, 400, "{stage} → {status} {body}");
        assert_json_error(status, &body, stage);
    }
    let (status, body) = raw_request(
        &s,
        "POST",
        "/v1/envs/checkout/staging/deploys?build_id=1%EF%B8%8F",
        &s.admin(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

/// A call with a chosen `x-request-id`, so its audit records can be found.
async fn traced(s: &Server, method: Method, path: &str, auth: &str, id: &str) -> StatusCode {
    s.http
        .request(method, format!("{}{path}", s.base))
        .header("authorization", auth)
        .header("x-request-id", id)
        .send()
        .await
        .unwrap()
        .status()
}

async fn records_of(s: &Server, resource: &str, id: &str) -> Vec<Value> {
    let (status, page) = s
        .get(
            &format!("/v1/audit?resource={resource}&correlation_id={id}"),
            &s.admin(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["records"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_refusal_leaves_a_record_under_the_requests_id() {
    let (s, bob, carol, dave) = production_setup().await;
    let (_, body) = s.deploy(&bob, "prod", "&approver=carol").await;
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();

    let cases = [
        (
            Method::POST,
            format!("/v1/envs/checkout/prod/deploys?build_id=12345&approval_id={approval}"),
            dave.clone(),
            "req-stranger-resume",
            StatusCode::FORBIDDEN,
            "env_stage:checkout/prod",
        ),
        (
            Method::POST,
            "/v1/envs/checkout/prod/deploys?build_id=1".to_owned(),
            bob.clone(),
            "req-needs-approver",
            StatusCode::PRECONDITION_REQUIRED,
            "env_stage:checkout/prod",
        ),
        (
            Method::GET,
            "/v1/envs/checkout/user_roles".to_owned(),
            dave.clone(),
            "req-read-roles",
            StatusCode::FORBIDDEN,
            "env:checkout",
        ),
        (
            Method::GET,
            "/v1/envs/checkout/prod/deploys".to_owned(),
            dave.clone(),
            "req-read-deploys",
            StatusCode::FORBIDDEN,
            "env_stage:checkout/prod",
        ),
    ];
    for (method, path, auth, id, expected, resource) in cases {
        assert_eq!(
            traced(&s, method, &path, &auth, id).await,
            expected,
            "{path}"
        );
        let records = records_of(&s, resource, id).await;
        assert_eq!(records.len(), 1, "{id}: {records:?}");
        let event = &records[0]["event"];
        assert_eq!(event["kind"], "decision", "{event}");
        assert_ne!(event["decision"]["effect"], "allow", "{event}");
        assert_eq!(event["request"]["target"], path.split('?').next().unwrap());
    }
    // A personal token cannot enroll TOTP, on the record.
    let (_, token) = s
        .post(
            "/v1/users/me/tokens",
            &carol,
            Some(json!({ "name": "cli" })),
        )
        .await;
    let personal = format!("token {}", token["token"].as_str().unwrap());
    let status = traced(
        &s,
        Method::POST,
        "/v1/users/me/totp",
        &personal,
        "req-totp-pat",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(records_of(&s, "user:carol", "req-totp-pat").await.len(), 1);
    // A vote is recorded under the id of the request that carried it.
    let status = traced(
        &s,
        Method::POST,
        &format!("/v1/approvals/{approval}/approve"),
        &carol,
        "req-carols-vote",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let records = records_of(&s, "env_stage:checkout/prod", "req-carols-vote").await;
    assert!(
        records
            .iter()
            .any(|r| r["event"]["request"]["parameters"]["approval_id"] == approval.as_str()),
        "{records:?}"
    );
}

#[tokio::test]
async fn role_changes_say_what_changed_and_scopes_hold_for_listing() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    let admin = s.admin();
    let status = traced(&s, Method::POST, "/v1/envs/zeta/token_roles", &admin, "x").await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a grant needs a JSON body"
    );
    let zeta = s.grant("token_roles", "zeta", "deployer", "OPERATOR").await;
    s.grant("token_roles", "secret", "deployer", "ADMIN").await;
    let zetas = format!("token {}", zeta["token"].as_str().unwrap());
    for kind in ["user_roles", "token_roles", "group_roles"] {
        let (status, body) = s.get(&format!("/v1/envs/secret/{kind}"), &zetas).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: {body}");
    }

    let grant = s
        .http
        .post(format!("{}/v1/envs/zeta/user_roles", s.base))
        .header("authorization", &admin)
        .header("x-request-id", "req-grant-bob")
        .json(&json!({ "name": "bob", "role": "OPERATOR" }))
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), StatusCode::CREATED);
    assert_eq!(
        traced(
            &s,
            Method::DELETE,
            "/v1/envs/zeta/group_roles/bob",
            &admin,
            "req-del"
        )
        .await,
        StatusCode::NOT_FOUND
    );
    let records = records_of(&s, "env:zeta", "req-grant-bob").await;
    let intent = &records[0]["event"];
    assert_eq!(intent["request"]["target"], "/v1/envs/zeta/user_roles");
    // The intent, written before the change, already says who gets which role.
    assert_eq!(intent["request"]["parameters"]["name"], "bob", "{intent}");
    assert_eq!(
        intent["request"]["parameters"]["role"], "OPERATOR",
        "{intent}"
    );
    let outcome = records
        .iter()
        .find(|r| r["event"]["kind"] == "outcome")
        .unwrap();
    assert_eq!(
        outcome["event"]["outcome"]["detail"], "HTTP 201: granted OPERATOR to user:bob on env:zeta",
        "{records:?}"
    );
    let records = records_of(&s, "env:zeta", "req-del").await;
    assert_eq!(
        records[0]["event"]["request"]["target"],
        "/v1/envs/zeta/group_roles/bob"
    );
}

#[tokio::test]
async fn ambiguous_or_mismatched_requests_are_400s() {
    let (s, bob, carol, _dave) = production_setup().await;
    // Two credentials.
    let two = s
        .http
        .get(format!("{}/v1/envs/checkout/prod/deploys", s.base))
        .header("authorization", &bob)
        .header("authorization", s.admin())
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), StatusCode::BAD_REQUEST);
    // A resume naming another build.
    let (_, body) = s.deploy(&bob, "prod", "&approver=carol").await;
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();
    s.post(&format!("/v1/approvals/{approval}/approve"), &carol, None)
        .await;
    let (status, body) = s
        .post(
            &format!("/v1/envs/checkout/prod/deploys?build_id=99&approval_id={approval}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Page sizes out of range; names folded in audit queries too.
    let (status, _) = s.get("/v1/envs/checkout/prod/deploys?limit=0", &bob).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, page) = s.get("/v1/audit?resource=env:CHECKOUT", &s.admin()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    // A 405 says which methods are allowed.
    let (status, body, headers) = s.call(Method::DELETE, "/v1/login", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    assert!(!body["message"].as_str().unwrap().ends_with(": "), "{body}");
}

#[tokio::test]
async fn a_chain_of_tokens_still_belongs_to_the_person_who_started_it() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    // admin makes an ADMIN token; that token makes an OPERATOR token.
    let first = s.grant("token_roles", "checkout", "adm-a", "ADMIN").await;
    let first = format!("token {}", first["token"].as_str().unwrap());
    let (status, second) = s
        .post(
            "/v1/envs/checkout/token_roles",
            &first,
            Some(json!({ "name": "adm-b", "role": "OPERATOR" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second = format!("token {}", second["token"].as_str().unwrap());
    // The second token names admin — the person behind both — as its approver: refused.
    let (status, body) = s.deploy(&second, "prod", "&approver=admin").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("own request"),
        "{body}"
    );
}

#[tokio::test]
async fn people_list_and_revoke_their_own_personal_tokens() {
    let (s, bob, carol, _dave) = production_setup().await;
    let (_, issued) = s
        .post(
            "/v1/users/me/tokens",
            &bob,
            Some(json!({ "name": "laptop" })),
        )
        .await;
    let secret = issued["token"].as_str().unwrap().to_owned();
    let id = issued["id"].as_str().unwrap().to_owned();
    let bobs_token = format!("token {secret}");
    let (status, list) = s.get("/v1/users/me/tokens", &bob).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["id"], id.as_str());
    assert!(!list.to_string().contains(&secret), "never the secret");
    // carol cannot revoke bob's token: it is not hers.
    let (status, _, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/users/me/tokens/{id}"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.get("/v1/envs/checkout/prod/deploys", &bobs_token).await.0,
        StatusCode::OK
    );
    let (status, _, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/users/me/tokens/{id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/v1/envs/checkout/prod/deploys", &bobs_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, all) = s.get("/v1/users/me/tokens?all=true", &bob).await;
    assert!(all[0]["revoked_at"].is_u64(), "{all}");
}
