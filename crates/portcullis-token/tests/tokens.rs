//! Script and personal tokens over every store: memory, SQLite and a real PostgreSQL
//! (feature `postgres`; `scripts/with-services` sets `PORTCULLIS_TEST_POSTGRES_URL`).
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap or index is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use portcullis_core::{AuthMethod, ManualClock, PrincipalKind, Resource};
use portcullis_token::{
    AuthChain, AuthError, IssueRequest, MemoryTokenStore, TokenAuthenticator, TokenFilter,
    TokenKey, TokenKind, TokenOptions, TokenScope, TokenStore, Tokens,
};
use serde_json::json;

const T0: u64 = 1_800_000_000;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)))
}

fn key() -> TokenKey {
    TokenKey::from_hex(&"ab".repeat(32)).unwrap()
}

fn options(clock: &Arc<ManualClock>) -> TokenOptions {
    TokenOptions::default().with_clock(clock.clone())
}

fn script(name: &str, env: &str) -> IssueRequest {
    IssueRequest {
        kind: TokenKind::Script,
        name: name.into(),
        owner: "alice".into(),
        scope: Some(TokenScope {
            resource: Resource::new("env".parse().unwrap(), env).unwrap(),
            role: "OPERATOR".into(),
        }),
        ttl: None,
    }
}

async fn suite(store: Arc<dyn TokenStore>) {
    let clock = clock();
    let tokens = Arc::new(
        Tokens::open(store.clone(), key(), options(&clock))
            .await
            .unwrap(),
    );

    // Issue and check a script token.
    let issued = tokens
        .issue(script("release-bot", "checkout"))
        .await
        .unwrap();
    let secret = issued.secret.expose().to_owned();
    let p = tokens.check(&secret).unwrap();
    assert_eq!(
        (p.kind(), p.subject()),
        (PrincipalKind::ScriptToken, "release-bot")
    );
    assert_eq!(p.auth_method(), &AuthMethod::SCRIPT_TOKEN);
    assert_eq!(p.claim("scope_resource"), Some(&json!("env:checkout")));
    assert_eq!(p.claim("scope_role"), Some(&json!("OPERATOR")));
    assert_eq!(
        p.claim("token_id"),
        Some(&json!(issued.record.id.to_string()))
    );
    assert_eq!(
        issued.record.expires_at,
        UNIX_EPOCH + Duration::from_secs(T0 + 180 * 86_400),
        "default lifetime is 180 days"
    );

    // The store holds the HMAC only.
    let stored = store.all().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].hash.to_hex(), secret);
    assert!(!format!("{stored:?}").contains(&secret));

    // A personal token authenticates as its owner.
    let personal = tokens
        .issue(IssueRequest {
            kind: TokenKind::Personal,
            name: "laptop".into(),
            owner: "bob".into(),
            scope: None,
            ttl: Some(Duration::from_secs(3600)),
        })
        .await
        .unwrap();
    let p = tokens.check(personal.secret.expose()).unwrap();
    assert_eq!((p.kind(), p.subject()), (PrincipalKind::User, "bob"));
    assert_eq!(p.auth_method(), &AuthMethod::PERSONAL_TOKEN);

    // Names are unique among active tokens of a kind: script ones per scope (a `ci` token
    // on each env, as Teletraan keys them), personal ones per owner.
    assert!(matches!(
        tokens.issue(script("release-bot", "checkout")).await,
        Err(AuthError::Conflict(_))
    ));
    let mut carols = script("laptop", "x");
    carols.kind = TokenKind::Personal;
    carols.owner = "carol".into();
    assert!(
        tokens.issue(carols).await.is_ok(),
        "another owner may reuse the name"
    );

    // Bad requests.
    for bad in [
        IssueRequest {
            name: "has space".into(),
            ..script("x", "e")
        },
        IssueRequest {
            owner: String::new(),
            ..script("y", "e")
        },
        IssueRequest {
            ttl: Some(Duration::ZERO),
            ..script("z", "e")
        },
        IssueRequest {
            ttl: Some(Duration::from_secs(400 * 86_400)),
            ..script("w", "e")
        },
    ] {
        assert!(matches!(
            tokens.issue(bad).await,
            Err(AuthError::InvalidRequest(_))
        ));
    }

    // Unknown, malformed and foreign tokens.
    let unknown = portcullis_token::TokenSecret::generate(TokenKind::Script).unwrap();
    assert!(matches!(
        tokens.check(unknown.expose()),
        Err(AuthError::InvalidToken)
    ));
    let mut typo = secret.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    assert!(matches!(
        tokens.check(&String::from_utf8(typo).unwrap()),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        tokens.check("ghp_somethingelse"),
        Err(AuthError::Unrecognized)
    ));

    // Listing and last use.
    let listed = tokens.list(&TokenFilter {
        kind: Some(TokenKind::Script),
        resource: Some(Resource::new("env".parse().unwrap(), "checkout").unwrap()),
        ..TokenFilter::default()
    });
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].last_used_at,
        Some(UNIX_EPOCH + Duration::from_secs(T0))
    );
    assert_eq!(tokens.flush_usage().await.unwrap(), 2);
    assert_eq!(
        tokens.flush_usage().await.unwrap(),
        0,
        "nothing new to write"
    );
    let in_store = store.all().await.unwrap();
    assert!(in_store.iter().any(|r| r.last_used_at.is_some()));

    // A second instance on the same store sees the tokens; a revocation made by the first
    // reaches it on reload.
    let other = Tokens::open(store.clone(), key(), options(&clock))
        .await
        .unwrap();
    assert!(other.check(&secret).is_ok());
    assert!(tokens.revoke(&issued.record.id).await.unwrap());
    assert!(
        !tokens.revoke(&issued.record.id).await.unwrap(),
        "already revoked"
    );
    assert!(matches!(tokens.check(&secret), Err(AuthError::Revoked)));
    other.reload().await.unwrap();
    assert!(matches!(other.check(&secret), Err(AuthError::Revoked)));
    // The name is free again once the old token is revoked.
    assert!(
        tokens
            .issue(script("release-bot", "checkout"))
            .await
            .is_ok()
    );

    // A key other than the one the tokens were issued under recognises none of them.
    let rekeyed = Tokens::open(
        store.clone(),
        TokenKey::from_hex(&"cd".repeat(32)).unwrap(),
        options(&clock),
    )
    .await
    .unwrap();
    assert!(matches!(
        rekeyed.check(personal.secret.expose()),
        Err(AuthError::InvalidToken)
    ));

    // Expiry is exact: valid until the second before expires_at.
    clock.advance(Duration::from_secs(3599));
    assert!(tokens.check(personal.secret.expose()).is_ok());
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        tokens.check(personal.secret.expose()),
        Err(AuthError::Expired)
    ));
    assert!(
        tokens
            .list(&TokenFilter {
                owner: Some("bob".into()),
                ..TokenFilter::default()
            })
            .is_empty()
    );
    assert_eq!(
        tokens
            .list(&TokenFilter {
                owner: Some("bob".into()),
                include_inactive: true,
                ..TokenFilter::default()
            })
            .len(),
        1
    );

    // The authenticator takes its own kind only.
    let chain = AuthChain::new(vec![
        Arc::new(TokenAuthenticator::new(tokens.clone(), TokenKind::Personal)),
        Arc::new(TokenAuthenticator::new(tokens.clone(), TokenKind::Script)),
    ]);
    let fresh = tokens
        .issue(script("deploy-bot", "payments"))
        .await
        .unwrap();
    let header = format!("token {}", fresh.secret.expose());
    assert_eq!(
        chain
            .authenticate_header(Some(header.as_bytes()))
            .await
            .unwrap()
            .subject(),
        "deploy-bot"
    );

    // Purging drops what expired or was revoked before the cut-off.
    let purged = store
        .purge(UNIX_EPOCH + Duration::from_secs(T0 + 3601))
        .await
        .unwrap();
    assert_eq!(purged, 2, "bob's expired token and the revoked release-bot");
    tokens.reload().await.unwrap();
    assert!(matches!(
        tokens.check(&secret),
        Err(AuthError::InvalidToken)
    ));
}

#[tokio::test]
async fn memory_store() {
    suite(Arc::new(MemoryTokenStore::new())).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store_keeps_no_secret_on_disk() {
    let dir = std::env::temp_dir().join(format!("portcullis-token-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("tokens.db").display());
    let store = Arc::new(
        portcullis_token::SqliteTokenStore::connect(&url)
            .await
            .unwrap(),
    );
    suite(store.clone()).await;

    let clock = clock();
    let tokens = Tokens::open(store.clone(), key(), options(&clock))
        .await
        .unwrap();
    let issued = tokens
        .issue(script("disk-check", "checkout"))
        .await
        .unwrap();
    store.pool().close().await;
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let secret = issued.secret.expose().as_bytes();
    assert!(!bytes.windows(secret.len()).any(|w| w == secret));
    assert!(
        bytes.windows(10).any(|w| w == b"disk-check"),
        "the database was written"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let name = format!("tokens_{}", std::process::id());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let (a, b) = tokio::join!(
        portcullis_token::PostgresTokenStore::connect(&url, 4),
        portcullis_token::PostgresTokenStore::connect(&url, 4)
    );
    drop(b.unwrap());
    suite(Arc::new(a.unwrap())).await;
}

#[tokio::test]
async fn lifetimes_are_bounded() {
    let clock = clock();
    for (default_ttl, max_ttl) in [
        (Duration::ZERO, Duration::from_secs(60)),
        (Duration::from_secs(120), Duration::from_secs(60)),
        (Duration::from_secs(60), Duration::MAX),
    ] {
        let options = TokenOptions::default()
            .with_default_ttl(default_ttl)
            .with_max_ttl(max_ttl)
            .with_clock(clock.clone());
        assert!(matches!(
            Tokens::open(Arc::new(MemoryTokenStore::new()), key(), options).await,
            Err(AuthError::Config(_))
        ));
    }
    assert!(TokenKey::from_bytes(&[1; 31]).is_err());
    assert!(TokenKey::from_hex("zz").is_err());
    assert!(!format!("{:?}", key()).contains("ab"));
}

#[tokio::test]
async fn script_token_names_are_unique_per_scope() {
    let clock = clock();
    let tokens = Tokens::open(Arc::new(MemoryTokenStore::new()), key(), options(&clock))
        .await
        .unwrap();
    let checkout = tokens.issue(script("ci", "checkout")).await.unwrap();
    let search = tokens.issue(script("ci", "search")).await.unwrap();
    assert!(matches!(
        tokens.issue(script("ci", "checkout")).await,
        Err(AuthError::Conflict(_))
    ));
    for (issued, env) in [(checkout, "env:checkout"), (search, "env:search")] {
        let p = tokens.check(issued.secret.expose()).unwrap();
        assert_eq!(p.subject(), "ci");
        assert_eq!(p.claim("scope_resource"), Some(&json!(env)));
    }
}
