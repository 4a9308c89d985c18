//! TOTP over restarts and enrollment: a code is accepted once, ever; people enroll their own
//! secret, confirmed by a first code, and only from an interactive sign-in.

use super::*;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn vote(code: &str) -> Option<Value> {
    Some(json!({ "factor": "totp", "code": code }))
}

#[tokio::test]
async fn a_totp_code_is_not_accepted_again_after_a_restart() {
    let (s, bob, carol, _) = production_setup().await;
    let secret = TotpSecret::new(hex::decode(CAROL_TOTP).unwrap()).unwrap();
    let code = totp(&secret, &TotpConfig::default(), now());

    let (_, body) = s.deploy(&bob, "prod", "&approver=carol").await;
    let first = body["approval"]["id"].as_str().unwrap().to_owned();
    let (status, body) = s
        .post(
            &format!("/v1/approvals/{first}/approve"),
            &carol,
            vote(&code),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // SIGTERM, start again on the same data: the used step is in the approval store.
    let (exit, dir) = s.terminate().await;
    assert!(exit.success());
    let s = Server::start_in(dir).await;
    let (bob, carol) = (s.login("bob").await, s.login("carol").await);
    let (status, body) = s.deploy(&bob, "prod", "&approver=carol").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let second = body["approval"]["id"].as_str().unwrap().to_owned();
    let (status, body) = s
        .post(
            &format!("/v1/approvals/{second}/approve"),
            &carol,
            vote(&code),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a replayed code approved: {body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    let (_, view) = s.get(&format!("/v1/approvals/{second}"), &bob).await;
    assert_eq!(view["state"], "pending", "{view}");
}

#[tokio::test]
async fn people_enroll_their_own_totp_and_confirm_it_with_a_first_code() {
    let (s, bob, _carol, dave) = production_setup().await;
    s.grant("user_roles", "checkout", "dave", "OPERATOR").await;

    // Nothing enrolled yet; a personal token cannot enroll (it is no second factor).
    assert_eq!(s.get("/v1/users/me/totp", &dave).await.1["state"], "none");
    let (_, token) = s
        .post("/v1/users/me/tokens", &dave, Some(json!({ "name": "cli" })))
        .await;
    let daves_token = format!("token {}", token["token"].as_str().unwrap());
    let (status, _) = s.post("/v1/users/me/totp", &daves_token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Begin: the otpauth URI, once.
    let (status, begun) = s.post("/v1/users/me/totp", &dave, None).await;
    assert_eq!(status, StatusCode::CREATED, "{begun}");
    let uri = begun["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/deploy-gate:dave?"), "{uri}");
    assert!(
        uri.contains("algorithm=SHA1") && uri.contains("digits=6") && uri.contains("period=30")
    );
    let base32 = begun["secret"].as_str().unwrap();
    assert!(uri.contains(&format!("secret={base32}")));
    let secret = TotpSecret::new(
        data_encoding::BASE32_NOPAD
            .decode(base32.as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        s.get("/v1/users/me/totp", &dave).await.1["state"],
        "pending"
    );

    // A pending secret approves nothing.
    let (_, body) = s.deploy(&bob, "prod", "&approver=dave").await;
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();
    let code = totp(&secret, &TotpConfig::default(), now());
    let (status, _) = s
        .post(
            &format!("/v1/approvals/{approval}/approve"),
            &dave,
            vote(&code),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A wrong code does not confirm; the right one does, and is spent doing so.
    let (status, _) = s
        .post(
            "/v1/users/me/totp/confirm",
            &dave,
            Some(json!({ "code": "000000" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = s
        .post(
            "/v1/users/me/totp/confirm",
            &dave,
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        s.get("/v1/users/me/totp", &dave).await.1["state"],
        "confirmed"
    );
    let (status, _) = s
        .post(
            &format!("/v1/approvals/{approval}/approve"),
            &dave,
            vote(&code),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the confirming code is spent"
    );

    // Enrolling again over a confirmed secret is a conflict.
    let (status, _) = s.post("/v1/users/me/totp", &dave, None).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // The next step's code (inside the ±1 window) approves.
    let next = totp(&secret, &TotpConfig::default(), now() + 30);
    let (status, body) = s
        .post(
            &format!("/v1/approvals/{approval}/approve"),
            &dave,
            vote(&next),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deploy"]["state"], "accepted");

    // The secret is sealed at rest: the base32 secret appears nowhere in the database.
    let db = std::fs::read(s.dir.0.join("data").join("deploy-gate.db")).unwrap_or_default();
    let raw = data_encoding::BASE32_NOPAD
        .decode(base32.as_bytes())
        .unwrap();
    assert!(!db.windows(raw.len()).any(|w| w == raw.as_slice()));
}
