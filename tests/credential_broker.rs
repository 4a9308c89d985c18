//! End-to-end test of `examples/credential-broker` against a real slapd (groups, passwords)
//! and a real moto (STS), both started by `scripts/with-services`.
#![cfg(all(
    feature = "gate",
    feature = "axum",
    feature = "vend",
    feature = "aws",
    feature = "ldap",
    feature = "sqlite"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod common;
use common::{env, example_binary};

fn binary() -> PathBuf {
    example_binary("credential-broker", "--all-features")
}

fn config() -> String {
    let base = env("PORTCULLIS_TEST_LDAP_BASE");
    format!(
        r#"
audit_url = "sqlite://audit.db"
directory_cache_seconds = 60

[directory.ldap]
url = "{ldap}"
bind_dn = "{bind_dn}"
bind_password_env = "TEST_LDAP_PASSWORD"
user_base = "ou=people,{base}"
groups = {{ type = "search", base = "ou=groups,{base}" }}

[vend]
base_role_arn = "arn:aws:iam::123456789012:role/data-access-base"
[vend.groups]
deployers = ["deploy-artifacts"]
platform = ["read-logs"]
[vend.roles]
deploy-artifacts = ["arn:aws:iam::123456789012:policy/artifacts-write"]
read-logs = ["arn:aws:iam::123456789012:policy/logs-read"]

[sts]
endpoint_url = "{moto}"
access_key_env = "TEST_BROKER_KEY"
secret_key_env = "TEST_BROKER_SECRET"
"#,
        ldap = env("PORTCULLIS_TEST_LDAP_URL"),
        bind_dn = env("PORTCULLIS_TEST_LDAP_BIND_DN"),
        moto = env("PORTCULLIS_TEST_MOTO_URL"),
    )
}

#[tokio::test]
async fn vends_ldap_mapped_credentials_that_work_with_the_aws_sdk() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let dir = std::env::temp_dir().join(format!("credential-broker-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("broker.toml"), config()).unwrap();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(dir.join("broker.toml"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env(
            "TEST_LDAP_PASSWORD",
            env("PORTCULLIS_TEST_LDAP_BIND_PASSWORD"),
        )
        .env("TEST_BROKER_KEY", "AKIAIOSFODNN7EXAMPLE")
        .env("TEST_BROKER_SECRET", "broker-secret")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("LISTENING ") {
                return url.to_owned();
            }
        }
        panic!("credential-broker exited before listening");
    })
    .await
    .expect("credential-broker did not start within 60 s");
    let http = reqwest::Client::new();
    let login = |user: &str| {
        let body = json!({ "username": user, "password": format!("{user}-password") });
        http.post(format!("{base}/v1/login")).json(&body).send()
    };

    // alice (deployers, platform) logs in with her LDAP password and gets both policies.
    let answer: Value = login("alice").await.unwrap().json().await.unwrap();
    let alice = answer["token"].as_str().unwrap().to_owned();
    let response = http
        .post(format!("{base}/v1/credentials"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let creds: Value = response.json().await.unwrap();
    assert_eq!(creds["Version"], 1);
    assert!(creds["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert_eq!(
        creds["Vended"]["policy_arns"],
        json!([
            "arn:aws:iam::123456789012:policy/artifacts-write",
            "arn:aws:iam::123456789012:policy/logs-read"
        ])
    );

    // The keys work through the AWS SDK, as alice's session on the base role.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .endpoint_url(env("PORTCULLIS_TEST_MOTO_URL"))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                creds["AccessKeyId"].as_str().unwrap(),
                creds["SecretAccessKey"].as_str().unwrap(),
                creds["SessionToken"].as_str().map(str::to_owned),
                None,
                "vended",
            ))
            .build(),
    );
    let identity = sts.get_caller_identity().send().await.unwrap();
    assert!(
        identity
            .arn()
            .unwrap_or_default()
            .ends_with(":assumed-role/data-access-base/alice"),
        "{identity:?}"
    );

    // A role alice's groups do not grant, and a user in no mapped group: 403 with a code.
    let response = http
        .post(format!("{base}/v1/credentials"))
        .bearer_auth(&alice)
        .json(&json!({ "roles": ["admin"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "role_not_allowed"
    );
    let dave: Value = login("dave").await.unwrap().json().await.unwrap();
    let response = http
        .post(format!("{base}/v1/credentials"))
        .bearer_auth(dave["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "no_matching_roles"
    );

    // No credential: 401. A wrong LDAP password: 401.
    let response = http
        .post(format!("{base}/v1/credentials"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = http
        .post(format!("{base}/v1/login"))
        .json(&json!({ "username": "alice", "password": "wrong" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // The ECS container-credentials form, with the header value an SDK sends verbatim.
    let response = http
        .get(format!("{base}/v1/credentials/ecs"))
        .header("authorization", format!("Bearer {alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ecs: Value = response.json().await.unwrap();
    assert!(
        ecs["Token"].is_string() && ecs["Expiration"].is_string(),
        "{ecs}"
    );

    // The session's length is part of the login answer.
    assert_eq!(answer["expires_in"], 3600, "{answer}");

    // `login` writes the token file that `process` reads, readable by its owner only, and
    // says how long the session lasts.
    let token_file = dir.join("token");
    std::fs::write(&token_file, "stale").unwrap();
    let output = Command::new(binary())
        .args([
            "login",
            "--url",
            &base,
            "--username",
            "alice",
            "--token-file",
        ])
        .arg(&token_file)
        .env("CREDENTIAL_BROKER_PASSWORD", "alice-password")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("the session lasts 1 hour"), "{said}");
    let written = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(written.split('.').count(), 3, "a JWT: {written}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // A wrong password writes nothing.
    let refused = Command::new(binary())
        .args([
            "login",
            "--url",
            &base,
            "--username",
            "alice",
            "--token-file",
        ])
        .arg(dir.join("other-token"))
        .env("CREDENTIAL_BROKER_PASSWORD", "wrong")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(!dir.join("other-token").exists());

    // credential_process mode prints exactly the JSON an SDK reads.
    let output = Command::new(binary())
        .arg("process")
        .arg("--url")
        .arg(&base)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--roles")
        .arg("read-logs")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["Version"], 1);
    assert!(printed.get("Vended").is_none());
    // A session that is not (or no longer) valid: the way out is named.
    std::fs::write(&token_file, "not-a-session").unwrap();
    let output = Command::new(binary())
        .args(["process", "--url", &base, "--token-file"])
        .arg(&token_file)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("credential-broker login"), "{said}");
    assert!(output.stdout.is_empty(), "nothing for the SDK to misread");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's first-run configuration, between its marker and the end of its block.
fn readme_first_run_config() -> String {
    let readme = include_str!("../examples/credential-broker/README.md");
    let marker = readme
        .find("<!-- first-run config")
        .expect("the README marks its first-run configuration");
    let block = &readme[marker..];
    let start = block.find("```toml\n").unwrap() + "```toml\n".len();
    let end = block[start..].find("```").unwrap();
    block[start..start + end].to_owned()
}

/// Starts the broker with `config` in `dir` and waits for its address.
async fn serve(dir: &std::path::Path, config: &str) -> (tokio::process::Child, String) {
    std::fs::write(dir.join("broker.toml"), config).unwrap();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(dir.join("broker.toml"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("BROKER_AWS_ACCESS_KEY_ID", "testing")
        .env("BROKER_AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("LISTENING ") {
                return url.to_owned();
            }
        }
        panic!("credential-broker exited before listening");
    })
    .await
    .expect("credential-broker did not start within 60 s");
    (child, base)
}

/// Issue 30: the README's first run pointed at an external OIDC issuer and LDAP. Now it
/// runs on loopback alone: its configuration as written (only moto's port differs), a
/// users file from `hash-password`, `login`, then `process`.
#[tokio::test]
async fn the_readme_first_run_works_on_loopback_alone() {
    let moto = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    let dir = std::env::temp_dir().join(format!("credential-broker-first-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // As the README does it: hash-password reads the password from standard input.
    let mut hashing = Command::new(binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = hashing.stdin.take().unwrap();
        stdin.write_all(b"alice-password\n").await.unwrap();
    }
    let hashed = hashing.wait_with_output().await.unwrap();
    assert!(hashed.status.success());
    let hash = String::from_utf8(hashed.stdout).unwrap();
    assert!(hash.starts_with("pbkdf2-sha256$"), "{hash}");
    std::fs::write(
        dir.join("users.toml"),
        format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{}\"\ngroups = [\"analysts\"]\n",
            hash.trim()
        ),
    )
    .unwrap();

    let config = readme_first_run_config();
    assert!(config.contains("\"http://127.0.0.1:5000\""), "{config}");
    for external in ["oidc", "ldap", "https://"] {
        assert!(!config.contains(external), "{external} in {config}");
    }
    let (_broker, base) = serve(&dir, &config.replace("http://127.0.0.1:5000", &moto)).await;

    let token_file = dir.join("token");
    let login = Command::new(binary())
        .args([
            "login",
            "--url",
            &base,
            "--username",
            "alice",
            "--token-file",
        ])
        .arg(&token_file)
        .env("CREDENTIAL_BROKER_PASSWORD", "alice-password")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&login.stderr);
    assert!(login.status.success(), "{said}");
    assert!(said.contains("the session lasts 1 hour"), "{said}");
    let output = Command::new(binary())
        .args(["process", "--url", &base, "--token-file"])
        .arg(&token_file)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        printed["AccessKeyId"].as_str().unwrap().starts_with("ASIA"),
        "{printed}"
    );
    // The mapping the README shows: analysts → read-sales → its policy.
    let vended: Value = reqwest::Client::new()
        .post(format!("{base}/v1/credentials"))
        .bearer_auth(std::fs::read_to_string(&token_file).unwrap().trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(vended["Vended"]["roles"], json!(["read-sales"]), "{vended}");
    let _ = std::fs::remove_dir_all(&dir);
}
