//! `LdapDirectory` against a real OpenLDAP slapd started by `scripts/services/ldap.sh`
//! (`scripts/with-services` exports `PORTCULLIS_TEST_LDAP_*`). Faults (the server going away
//! and coming back, a server that accepts but never answers) are injected by a TCP relay in
//! front of the real server.
#![cfg(feature = "ldap")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use portcullis_core::ManualClock;
use portcullis_directory::{
    CachingDirectory, Directory, DirectoryError, GroupMembership, LdapConfig, LdapDirectory,
    Password,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through scripts/test or scripts/with-services, \
             which start an OpenLDAP slapd on 127.0.0.1"
        )
    })
}

fn config(url: &str, groups: GroupMembership) -> LdapConfig {
    let base = env("PORTCULLIS_TEST_LDAP_BASE");
    LdapConfig {
        url: url.to_owned(),
        starttls: false,
        bind_dn: Some(env("PORTCULLIS_TEST_LDAP_BIND_DN")),
        bind_password: Some(Password::new(env("PORTCULLIS_TEST_LDAP_BIND_PASSWORD")).unwrap()),
        bind_password_env: None,
        user_base: format!("ou=people,{base}"),
        user_attribute: "uid".into(),
        user_dn_template: None,
        display_name_attribute: "cn".into(),
        groups,
        group_name_attribute: "cn".into(),
        nested_groups: false,
        service_base: Some(format!("ou=services,{base}")),
        connect_timeout_seconds: 2,
        operation_timeout_seconds: 1,
        pool_size: 2,
    }
}

fn search() -> GroupMembership {
    GroupMembership::Search {
        base: format!("ou=groups,{}", env("PORTCULLIS_TEST_LDAP_BASE")),
        member_attribute: "member".into(),
        object_class: "groupOfNames".into(),
    }
}

fn directory(groups: GroupMembership) -> LdapDirectory {
    LdapDirectory::new(config(&env("PORTCULLIS_TEST_LDAP_URL"), groups)).unwrap()
}

fn pw(text: &str) -> Password {
    Password::new(text).unwrap()
}

#[tokio::test]
async fn logs_people_in_with_their_groups() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    for groups in [
        search(),
        GroupMembership::MemberOf {
            attribute: "memberOf".into(),
        },
    ] {
        let ldap = directory(groups.clone());
        let alice = ldap
            .authenticate("alice", &pw("alice-password"))
            .await
            .unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.display_name.as_deref(), Some("Alice Anders"));
        assert_eq!(alice.groups, ["deployers", "platform"], "{groups:?}");
        assert_eq!(ldap.groups_of("bob").await.unwrap(), ["deployers"]);
        assert!(ldap.groups_of("dave").await.unwrap().is_empty());
    }
}

/// LDAP matches `uid` without regard to case, so "ALICE" binds as alice. The user is then
/// named as the directory spells it: a second spelling must never become a second principal
/// (it would approve its own deploys under four-eyes, and hold roles of its own).
#[tokio::test]
async fn a_name_in_other_case_is_the_directory_spelling() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let ldap = directory(search());
    for typed in ["ALICE", "Alice", "aLiCe"] {
        let user = ldap
            .authenticate(typed, &pw("alice-password"))
            .await
            .unwrap();
        assert_eq!(user.name, "alice", "{typed}");
        assert_eq!(user.groups, ["deployers", "platform"]);
    }
    let mut templated = config(&env("PORTCULLIS_TEST_LDAP_URL"), search());
    templated.user_dn_template = Some(format!(
        "uid={{user}},ou=people,{}",
        env("PORTCULLIS_TEST_LDAP_BASE")
    ));
    let templated = LdapDirectory::new(templated).unwrap();
    let user = templated
        .authenticate("ALICE", &pw("alice-password"))
        .await
        .unwrap();
    assert_eq!(user.name, "alice");
    let bot = ldap.service_account("DEPLOY-BOT").await.unwrap().unwrap();
    assert_eq!(bot.name, "deploy-bot");
}

#[tokio::test]
async fn nested_groups_are_followed_when_asked() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let flat = directory(search());
    assert_eq!(flat.groups_of("bob").await.unwrap(), ["deployers"]);
    let mut nested = config(&env("PORTCULLIS_TEST_LDAP_URL"), search());
    nested.nested_groups = true;
    let nested = LdapDirectory::new(nested).unwrap();
    assert_eq!(
        nested.groups_of("bob").await.unwrap(),
        ["deployers", "release"]
    );
    assert_eq!(nested.groups_of("carol").await.unwrap(), ["release"]);
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_look_the_same() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let ldap = directory(search());
    for (user, password) in [
        ("alice", "wrong"),
        ("alice", "bob-password"),
        ("nobody", "x"),
        ("reader", "reader-password"), // a service account is not a person
    ] {
        let err = ldap.authenticate(user, &pw(password)).await.unwrap_err();
        assert!(
            matches!(err, DirectoryError::InvalidCredentials),
            "{user}: {err}"
        );
    }
    assert!(matches!(
        ldap.groups_of("nobody").await,
        Err(DirectoryError::UnknownUser(_))
    ));
}

#[tokio::test]
async fn hostile_names_match_nothing() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let ldap = directory(search());
    for user in [
        "*",
        ")(",
        "alice)(uid=*",
        "*)(objectClass=*",
        "al*",
        "alice\\",
        "(uid=alice)",
    ] {
        let err = ldap
            .authenticate(user, &pw("alice-password"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DirectoryError::InvalidCredentials),
            "{user:?}: {err}"
        );
        assert!(
            matches!(
                ldap.groups_of(user).await,
                Err(DirectoryError::UnknownUser(_))
            ),
            "{user:?}"
        );
    }
    for user in ["", "a\0b", "line\nbreak"] {
        assert!(matches!(
            ldap.authenticate(user, &pw("x")).await,
            Err(DirectoryError::InvalidInput { .. })
        ));
    }

    // Binding by DN template: the name is DN-escaped, so it cannot add RDNs.
    let mut templated = config(&env("PORTCULLIS_TEST_LDAP_URL"), search());
    templated.user_dn_template = Some(format!(
        "uid={{user}},ou=people,{}",
        env("PORTCULLIS_TEST_LDAP_BASE")
    ));
    let templated = LdapDirectory::new(templated).unwrap();
    assert_eq!(
        templated
            .authenticate("alice", &pw("alice-password"))
            .await
            .unwrap()
            .groups,
        ["deployers", "platform"]
    );
    for user in ["alice,ou=people", "alice+cn=x", "*"] {
        assert!(matches!(
            templated.authenticate(user, &pw("alice-password")).await,
            Err(DirectoryError::InvalidCredentials)
        ));
    }
}

#[tokio::test]
async fn service_accounts_are_found_by_name() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let ldap = directory(search());
    let bot = ldap.service_account("deploy-bot").await.unwrap().unwrap();
    assert_eq!(bot.name, "deploy-bot");
    assert!(ldap.service_account("alice").await.unwrap().is_none());
    assert!(ldap.service_account("*").await.unwrap().is_none());
}

/// A TCP relay to the real server that can drop every connection and refuse new ones
/// (the server "restarts"), or accept and never answer (the server hangs).
struct Relay {
    url: String,
    mode: Arc<AtomicU8>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const HANG: u8 = 2;

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let target = upstream.trim_start_matches("ldap://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ldap://{}", listener.local_addr().unwrap());
        let mode = Arc::new(AtomicU8::new(UP));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (m, c) = (mode.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let task = match m.load(Ordering::SeqCst) {
                    DOWN => continue, // dropped: connection closed at once
                    HANG => tokio::spawn(async move {
                        let _held = client;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }),
                    _ => tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    }),
                };
                c.lock().await.push(task);
            }
        });
        Relay {
            url,
            mode,
            connections,
            _accept: accept,
        }
    }

    async fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        for task in self.connections.lock().await.drain(..) {
            task.abort();
        }
    }
}

#[tokio::test]
async fn recovers_after_the_server_goes_away_and_comes_back() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let relay = Relay::start(&env("PORTCULLIS_TEST_LDAP_URL")).await;
    let ldap = LdapDirectory::new(config(&relay.url, search())).unwrap();
    assert_eq!(
        ldap.groups_of("alice").await.unwrap(),
        ["deployers", "platform"]
    );

    relay.set(DOWN).await;
    for _ in 0..3 {
        assert!(matches!(
            ldap.groups_of("alice").await,
            Err(DirectoryError::Unavailable(_))
        ));
    }
    assert!(matches!(
        ldap.authenticate("alice", &pw("alice-password")).await,
        Err(DirectoryError::Unavailable(_))
    ));

    relay.set(UP).await;
    for _ in 0..4 {
        // Every pooled connection reconnects by itself.
        assert_eq!(
            ldap.groups_of("alice").await.unwrap(),
            ["deployers", "platform"]
        );
    }
    assert!(
        ldap.authenticate("alice", &pw("alice-password"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let relay = Relay::start(&env("PORTCULLIS_TEST_LDAP_URL")).await;
    relay.set(HANG).await;
    let ldap = LdapDirectory::new(config(&relay.url, search())).unwrap();
    let started = std::time::Instant::now();
    let err = ldap.groups_of("alice").await.unwrap_err();
    assert!(matches!(err, DirectoryError::Unavailable(_)), "{err}");
    // Connect (2 s) and operation (1 s) timeouts bound the wait; generous for CI.
    assert!(started.elapsed() < Duration::from_secs(20));

    // Nothing listens: refused at once.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}", closed.local_addr().unwrap());
    drop(closed);
    let ldap = LdapDirectory::new(config(&url, search())).unwrap();
    assert!(matches!(
        ldap.authenticate("alice", &pw("alice-password")).await,
        Err(DirectoryError::Unavailable(_))
    ));
}

#[tokio::test]
async fn the_cache_answers_within_its_ttl_and_only_then() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let relay = Relay::start(&env("PORTCULLIS_TEST_LDAP_URL")).await;
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let cached = CachingDirectory::new(
        LdapDirectory::new(config(&relay.url, search())).unwrap(),
        Duration::from_secs(60),
    )
    .unwrap()
    .with_clock(clock.clone());
    assert_eq!(
        cached.groups_of("alice").await.unwrap(),
        ["deployers", "platform"]
    );

    relay.set(DOWN).await;
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        cached.groups_of("alice").await.unwrap(),
        ["deployers", "platform"]
    );
    // Passwords are always checked against the directory.
    assert!(matches!(
        cached.authenticate("alice", &pw("alice-password")).await,
        Err(DirectoryError::Unavailable(_))
    ));
    clock.advance(Duration::from_secs(2));
    assert!(matches!(
        cached.groups_of("alice").await,
        Err(DirectoryError::Unavailable(_))
    ));
    relay.set(UP).await;
    assert_eq!(
        cached.groups_of("alice").await.unwrap(),
        ["deployers", "platform"]
    );
}

/// `ldaps://` in a graph where rustls has two providers (this test's dev-dependencies turn
/// on ring beside the workspace's aws-lc-rs, as an embedder's other dependencies may): ldap3's
/// own TLS configuration asks rustls for the process-level provider and would panic; the
/// directory hands it one on aws-lc-rs, so a server that drops the connection is just
/// unavailable.
#[tokio::test]
async fn ldaps_works_when_the_graph_has_two_rustls_providers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let config = LdapConfig::from_toml(&format!(
        r#"
        url = "ldaps://127.0.0.1:{port}"
        user_base = "ou=people,dc=example,dc=org"
        connect_timeout_seconds = 2
        groups = {{ type = "member_of" }}
        "#
    ))
    .unwrap();
    let directory = LdapDirectory::new(config).unwrap();
    let password = Password::new("secret").unwrap();
    let err = directory
        .authenticate("alice", &password)
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Unavailable(_)), "{err}");
    server.abort();
}
