//! Helpers the end-to-end tests of the example binaries share. Each test crate uses a
//! subset of them.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    reason = "shared by test crates that each use a subset; a failed expectation is a test failure"
)]

use std::path::PathBuf;

/// An environment variable `scripts/with-services` sets; a clear failure if it is missing.
pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test or scripts/with-services")
    })
}

/// The example binary `name` that cargo built next to this test
/// (`target/<profile>/examples/<name>`); `features` says how to get it built.
pub(crate) fn example_binary(name: &str, features: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test {features}` builds it",
        path.display()
    );
    path
}

/// A new, empty PostgreSQL database named `{tag}_{pid}` on the server of `admin_url` (the
/// `PORTCULLIS_TEST_POSTGRES_URL` of `scripts/with-services`), dropped first if a previous
/// run left it; its URL.
pub(crate) async fn fresh_database(admin_url: &str, tag: &str) -> String {
    let name = format!("{tag}_{}", std::process::id());
    let admin = sqlx::PgPool::connect(admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (server, _) = admin_url.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

/// Drops the database at `url` (made by [`fresh_database`]) on the server of `admin_url`.
pub(crate) async fn drop_database(admin_url: &str, url: &str) {
    let (_, name) = url.rsplit_once('/').unwrap();
    let admin = sqlx::PgPool::connect(admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

/// Starts `binary --config CONFIG --listen 127.0.0.1:0 --log-level warn` (stdout piped, killed
/// when dropped) and waits up to 60 s for its `LISTENING <url>` line: the child and the URL.
pub(crate) async fn spawn_listening(
    binary: &std::path::Path,
    config: &std::path::Path,
) -> (tokio::process::Child, String) {
    spawn_listening_with_env(binary, config, &[]).await
}

/// [`spawn_listening`] with `env` added to the child's environment.
pub(crate) async fn spawn_listening_with_env(
    binary: &std::path::Path,
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().copied())
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--log-level")
        .arg("warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("LISTENING ") {
                return url.to_owned();
            }
        }
        panic!("{} exited before listening", binary.display());
    })
    .await
    .unwrap_or_else(|_| panic!("{} did not start within 60 s", binary.display()));
    (child, url)
}

/// Headless Chromium at `width`×`height` CSS pixels (scale 1), driven through ChromeDriver
/// (`PORTCULLIS_TEST_WEBDRIVER_URL`, binary `PORTCULLIS_TEST_CHROMIUM`, both set by
/// `scripts/with-services`), with a fresh profile in `profile` and its browser log kept
/// (ChromeDriver's `goog:loggingPrefs`), so a test can fail on console errors.
pub(crate) async fn chromium(
    profile: &std::path::Path,
    width: u32,
    height: u32,
) -> fantoccini::Client {
    let capabilities = serde_json::json!({
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "binary": env("PORTCULLIS_TEST_CHROMIUM"),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", format!("--window-size={width},{height}"),
                "--force-device-scale-factor=1",
                format!("--user-data-dir={}", profile.display()),
            ],
        }
    });
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&env("PORTCULLIS_TEST_WEBDRIVER_URL"))
        .await
        .unwrap()
}
