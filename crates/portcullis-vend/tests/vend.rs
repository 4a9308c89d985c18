//! The vendor's rules, cache and single flight over an in-process STS, and — with feature
//! `aws` — the AWS SDK round trip against a real moto server (`scripts/services/moto.sh`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use portcullis_core::{AuthMethod, Clock, ManualClock, Principal, PrincipalKind};
use portcullis_directory::{Directory, DirectoryError, DirectoryUser, Password};
use portcullis_vend::{
    AssumeRoleRequest, CredentialVendor, Credentials, Secret, StsBackend, VendConfig, VendError,
    VendRequest, is_valid_session_name,
};
use proptest::prelude::*;

const MAPPING: &str = r#"
base_role_arn = "arn:aws:iam::123456789012:role/data-access-base"
cache_seconds = 300
refresh_before_seconds = 600

[groups]
analysts = ["read-sales"]
data-eng = ["read-sales", "write-sales"]
finance = ["read-ledger"]
everything = ["r0", "r1", "r2", "r3", "r4", "r5"]

[roles]
read-sales = ["arn:aws:iam::123456789012:policy/sales-read"]
write-sales = ["arn:aws:iam::123456789012:policy/sales-write", "arn:aws:iam::123456789012:policy/sales-read"]
read-ledger = ["arn:aws:iam::123456789012:policy/ledger-read"]
r0 = ["arn:aws:iam::123456789012:policy/p0", "arn:aws:iam::123456789012:policy/p1"]
r1 = ["arn:aws:iam::123456789012:policy/p2", "arn:aws:iam::123456789012:policy/p3"]
r2 = ["arn:aws:iam::123456789012:policy/p4", "arn:aws:iam::123456789012:policy/p5"]
r3 = ["arn:aws:iam::123456789012:policy/p6", "arn:aws:iam::123456789012:policy/p7"]
r4 = ["arn:aws:iam::123456789012:policy/p8", "arn:aws:iam::123456789012:policy/p9"]
r5 = ["arn:aws:iam::123456789012:policy/p10"]
"#;

fn mapping() -> VendConfig {
    VendConfig::from_toml(MAPPING).unwrap()
}

/// A directory whose group memberships the test changes.
#[derive(Debug, Default)]
struct Groups(Mutex<HashMap<String, Vec<String>>>);

impl Groups {
    fn set(&self, user: &str, groups: &[&str]) {
        self.0.lock().unwrap().insert(
            user.to_owned(),
            groups.iter().map(|g| (*g).to_owned()).collect(),
        );
    }
}

#[async_trait]
impl Directory for Groups {
    async fn authenticate(&self, _: &str, _: &Password) -> Result<DirectoryUser, DirectoryError> {
        Err(DirectoryError::InvalidCredentials)
    }
    async fn groups_of(&self, user: &str) -> Result<Vec<String>, DirectoryError> {
        self.0
            .lock()
            .unwrap()
            .get(user)
            .cloned()
            .ok_or_else(|| DirectoryError::UnknownUser(user.to_owned()))
    }
    async fn service_account(&self, _: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        Ok(None)
    }
}

/// An in-process STS issuing credentials that live as long as asked, counting calls.
#[derive(Debug)]
struct LocalSts {
    calls: AtomicUsize,
    clock: Arc<ManualClock>,
    delay: Duration,
    lifetime: Option<Duration>,
    requests: Mutex<Vec<AssumeRoleRequest>>,
}

impl LocalSts {
    fn new(clock: Arc<ManualClock>) -> Self {
        LocalSts {
            calls: AtomicUsize::new(0),
            clock,
            delay: Duration::ZERO,
            lifetime: None,
            requests: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl StsBackend for LocalSts {
    async fn assume_role(&self, r: &AssumeRoleRequest) -> Result<Credentials, VendError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.requests.lock().unwrap().push(r.clone());
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let lifetime = self
            .lifetime
            .unwrap_or(Duration::from_secs(r.duration_seconds.into()));
        Ok(Credentials {
            access_key_id: format!("ASIA{n:016}"),
            secret_access_key: Secret::new(format!("secret-{n}")),
            session_token: Secret::new(format!("token-{n}")),
            expiration: self.clock.now() + lifetime,
            assumed_role_arn: Some(format!(
                "arn:aws:sts::123456789012:assumed-role/data-access-base/{}",
                r.session_name
            )),
        })
    }
}

fn user(name: &str) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .build()
        .unwrap()
}

struct World {
    vendor: CredentialVendor,
    groups: Arc<Groups>,
    sts: Arc<LocalSts>,
    clock: Arc<ManualClock>,
}

fn world(configure: impl FnOnce(&mut LocalSts)) -> World {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let mut sts = LocalSts::new(clock.clone());
    configure(&mut sts);
    let sts = Arc::new(sts);
    let groups = Arc::new(Groups::default());
    let vendor = CredentialVendor::new(mapping(), groups.clone(), sts.clone())
        .unwrap()
        .with_clock(clock.clone());
    World {
        vendor,
        groups,
        sts,
        clock,
    }
}

#[tokio::test]
async fn vends_exactly_the_mapped_policies_on_the_base_role() {
    let w = world(|_| {});
    w.groups.set("alice", &["data-eng", "unmapped"]);
    let vended = w
        .vendor
        .vend(&user("alice"), &VendRequest::default())
        .await
        .unwrap();
    assert_eq!(
        vended
            .plan
            .policies
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        [
            "arn:aws:iam::123456789012:policy/sales-read",
            "arn:aws:iam::123456789012:policy/sales-write"
        ]
    );
    let request = w.sts.requests.lock().unwrap()[0].clone();
    assert_eq!(
        request.role_arn,
        "arn:aws:iam::123456789012:role/data-access-base"
    );
    assert_eq!(request.session_name, "alice");
    assert_eq!(request.source_identity, "alice");
    assert_eq!(request.duration_seconds, 3600);
    assert!(!vended.from_cache);

    // A subset of roles narrows the policies.
    let narrow = VendRequest {
        roles: Some(vec!["read-sales".into()]),
        duration: Some(Duration::from_secs(900)),
    };
    let vended = w.vendor.vend(&user("alice"), &narrow).await.unwrap();
    assert_eq!(vended.plan.policies.len(), 1);
}

#[tokio::test]
async fn refuses_instead_of_guessing() {
    let w = world(|_| {});
    w.groups.set("bob", &["unmapped"]);
    w.groups.set("alice", &["analysts"]);
    w.groups.set("greedy", &["everything"]);
    let refuse = |r: Result<_, VendError>| r.map(|_| ()).unwrap_err();

    let err = refuse(w.vendor.vend(&user("bob"), &VendRequest::default()).await);
    assert!(matches!(err, VendError::NoRecognisedGroup { .. }), "{err}");
    assert_eq!(err.code(), "no_matching_roles");
    let err = refuse(
        w.vendor
            .vend(&user("nobody"), &VendRequest::default())
            .await,
    );
    assert!(matches!(err, VendError::Directory(_)), "{err}");

    let escalate = VendRequest {
        roles: Some(vec!["write-sales".into()]),
        duration: None,
    };
    let err = refuse(w.vendor.vend(&user("alice"), &escalate).await);
    assert!(matches!(err, VendError::RoleNotAllowed { .. }), "{err}");

    let err = refuse(
        w.vendor
            .vend(&user("greedy"), &VendRequest::default())
            .await,
    );
    assert!(
        matches!(err, VendError::TooManyPolicies { count: 11, max: 10 }),
        "{err}"
    );

    for secs in [0, 899, 43_201] {
        let request = VendRequest {
            roles: None,
            duration: Some(Duration::from_secs(secs)),
        };
        let err = refuse(w.vendor.vend(&user("alice"), &request).await);
        assert!(
            matches!(err, VendError::InvalidDuration { .. }),
            "{secs}: {err}"
        );
    }
    assert_eq!(w.sts.calls.load(Ordering::SeqCst), 0, "nothing reached STS");
}

#[tokio::test]
async fn a_thousand_concurrent_requests_for_one_cold_key_make_one_sts_call() {
    let w = Arc::new(world(|sts| sts.delay = Duration::from_millis(50)));
    w.groups.set("alice", &["analysts"]);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.vendor
                .vend(&user("alice"), &VendRequest::default())
                .await
                .unwrap()
        }));
    }
    let mut keys = BTreeSet::new();
    for task in tasks {
        keys.insert(task.await.unwrap().credentials.access_key_id.clone());
    }
    assert_eq!(w.sts.calls.load(Ordering::SeqCst), 1);
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn the_cache_follows_group_changes_ttl_and_expiry() {
    let w = world(|_| {});
    w.groups.set("alice", &["analysts"]);
    let first = w
        .vendor
        .vend(&user("alice"), &VendRequest::default())
        .await
        .unwrap();
    let again = w
        .vendor
        .vend(&user("alice"), &VendRequest::default())
        .await
        .unwrap();
    assert!(again.from_cache);
    assert_eq!(
        first.credentials.access_key_id,
        again.credentials.access_key_id
    );

    // A new group means a new policy set: new credentials at once.
    w.groups.set("alice", &["analysts", "finance"]);
    let wider = w
        .vendor
        .vend(&user("alice"), &VendRequest::default())
        .await
        .unwrap();
    assert!(!wider.from_cache);
    assert_eq!(wider.plan.policies.len(), 2);

    // Leaving a group: the old, narrower set is cached, but never past cache_seconds.
    w.groups.set("alice", &["analysts"]);
    assert!(
        w.vendor
            .vend(&user("alice"), &VendRequest::default())
            .await
            .unwrap()
            .from_cache
    );
    w.clock.advance(Duration::from_secs(301));
    let renewed = w
        .vendor
        .vend(&user("alice"), &VendRequest::default())
        .await
        .unwrap();
    assert!(!renewed.from_cache);
    assert_eq!(w.sts.calls.load(Ordering::SeqCst), 3);

    // Short-lived credentials are renewed refresh_before_seconds before they expire.
    let w = world(|sts| sts.lifetime = Some(Duration::from_secs(700)));
    w.groups.set("alice", &["analysts"]);
    w.vendor
        .vend(&user("alice"), &VendRequest::default())
        .await
        .unwrap();
    w.clock.advance(Duration::from_secs(101));
    assert!(
        !w.vendor
            .vend(&user("alice"), &VendRequest::default())
            .await
            .unwrap()
            .from_cache
    );

    // Credentials that are already expired are an error, not a vend.
    let w = world(|sts| sts.lifetime = Some(Duration::ZERO));
    w.groups.set("alice", &["analysts"]);
    assert!(matches!(
        w.vendor.vend(&user("alice"), &VendRequest::default()).await,
        Err(VendError::Unavailable(_))
    ));
}

#[tokio::test]
async fn hostile_user_names_become_valid_session_names() {
    let w = world(|_| {});
    let mut vended_for = 0;
    for name in [
        "*",
        ")(",
        "alice)(uid=*",
        "Ørjan",
        "Ørjan Ström",
        "a",
        "x/y",
    ] {
        // Names the vocabulary rejects never reach the vendor.
        let Ok(principal) = Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC).build()
        else {
            continue;
        };
        w.groups.set(name, &["analysts"]);
        let vended = w
            .vendor
            .vend(&principal, &VendRequest::default())
            .await
            .unwrap();
        assert!(is_valid_session_name(&vended.session_name), "{name:?}");
        vended_for += 1;
    }
    assert!(
        vended_for >= 3,
        "only {vended_for} hostile names reached the vendor"
    );
}

#[test]
fn mapping_files_are_validated() {
    let base = "base_role_arn = \"arn:aws:iam::123456789012:role/base\"\n";
    for (extra, message) in [
        ("[groups]\na = [\"r\"]\n[roles]\n", "does not define"),
        ("[groups]\na = [\"r\"]\n[roles]\nr = []\n", "no policy"),
        (
            "[groups]\na = [\"r\"]\n[roles]\nr = [\"arn:aws:s3:::bucket\"]\n",
            "not an IAM policy ARN",
        ),
        ("[groups]\n[roles]\n", "maps no group"),
        (
            "chained = true\nmax_duration_seconds = 7200\n[groups]\na = [\"r\"]\n[roles]\nr = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\n",
            "chained",
        ),
        (
            "refresh_before_seconds = 900\n[groups]\na = [\"r\"]\n[roles]\nr = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\n",
            "refresh_before_seconds",
        ),
        ("surprise = 1\n[groups]\n[roles]\n", "unknown field"),
    ] {
        let err = VendConfig::from_toml(&format!("{base}{extra}")).unwrap_err();
        assert!(err.to_string().contains(message), "{extra}: {err}");
    }
}

proptest! {
    /// The vended policy set is exactly the union of the policies of the roles of the
    /// user's mapped groups, never empty; a user in no mapped group always gets an error.
    #[test]
    fn the_policy_set_is_the_union_of_the_groups(
        groups in proptest::collection::vec(
            prop_oneof![
                Just("analysts"), Just("data-eng"), Just("finance"),
                Just("unmapped"), Just("other")
            ],
            0..5,
        )
    ) {
        let config = mapping();
        let groups: Vec<String> = groups.into_iter().map(str::to_owned).collect();
        let expected: BTreeSet<String> = groups
            .iter()
            .filter_map(|g| config.groups.get(g))
            .flatten()
            .filter_map(|r| config.roles.get(r))
            .flatten()
            .cloned()
            .collect();
        match config.plan("u", &groups, None) {
            Ok(plan) => {
                prop_assert!(!plan.policies.is_empty());
                prop_assert_eq!(plan.policies, expected);
            }
            Err(VendError::NoRecognisedGroup { .. }) => prop_assert!(expected.is_empty()),
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }
}

#[cfg(feature = "aws")]
mod moto {
    use super::*;
    use aws_sdk_sts::config::{BehaviorVersion, Credentials as StaticKeys, Region};
    use portcullis_vend::AwsSts;

    fn client(endpoint: &str, keys: StaticKeys) -> aws_sdk_sts::Client {
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(keys)
            .build();
        aws_sdk_sts::Client::from_conf(config)
    }

    #[tokio::test]
    async fn vended_credentials_work_with_the_aws_sdk() {
        let endpoint = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
        let broker_keys =
            StaticKeys::new("AKIAIOSFODNN7EXAMPLE", "broker-secret", None, None, "test");
        let sts = AwsSts::new(client(&endpoint, broker_keys));
        let groups = Arc::new(Groups::default());
        groups.set("alice", &["analysts", "finance"]);
        let vendor = CredentialVendor::new(mapping(), groups, Arc::new(sts)).unwrap();

        let vended = vendor
            .vend(&user("alice"), &VendRequest::default())
            .await
            .unwrap();
        let creds = &vended.credentials;
        assert!(
            creds.access_key_id.starts_with("ASIA"),
            "{}",
            creds.access_key_id
        );
        assert!(creds.expiration > SystemTime::now());
        assert_eq!(vended.plan.policies.len(), 2);
        let process = creds.credential_process_json();
        assert_eq!(process["Version"], 1);

        // The vended keys, used through the SDK, are the assumed role with alice's session.
        let as_alice = client(
            &endpoint,
            StaticKeys::new(
                creds.access_key_id.clone(),
                creds.secret_access_key.expose().to_owned(),
                Some(creds.session_token.expose().to_owned()),
                None,
                "vended",
            ),
        );
        let identity = as_alice.get_caller_identity().send().await.unwrap();
        let arn = identity.arn().unwrap_or_default();
        assert!(
            arn.contains(":assumed-role/data-access-base/alice"),
            "{arn}"
        );

        // STS errors are typed, not guessed around: an invalid base role ARN.
        let mut bad = mapping();
        bad.base_role_arn = "arn:aws:iam::123456789012:role/missing".into();
        let sts = AwsSts::new(client(
            "http://127.0.0.1:9",
            StaticKeys::new("AKIAIOSFODNN7EXAMPLE", "x", None, None, "test"),
        ));
        let groups = Arc::new(Groups::default());
        groups.set("alice", &["analysts"]);
        let unreachable = CredentialVendor::new(bad, groups, Arc::new(sts)).unwrap();
        let err = unreachable
            .vend(&user("alice"), &VendRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(err, VendError::Unavailable(_)), "{err}");
    }
}

#[cfg(feature = "aws")]
mod sts_errors {
    use super::*;
    use aws_sdk_sts::config::{BehaviorVersion, Credentials as StaticKeys, Region};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use portcullis_vend::AwsSts;

    /// An STS endpoint answering every call with one scripted error, counting calls.
    async fn failing_sts(code: &'static str, status: StatusCode) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let body = format!(
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>scripted {code}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
                );
                (status, [("content-type", "text/xml")], body).into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, calls)
    }

    fn vendor_at(url: &str) -> CredentialVendor {
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(url)
            .credentials_provider(StaticKeys::new(
                "AKIAIOSFODNN7EXAMPLE",
                "x",
                None,
                None,
                "test",
            ))
            // Only our own retries, so the count below is ours.
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
            .build();
        let groups = Arc::new(Groups::default());
        groups.set("alice", &["analysts"]);
        CredentialVendor::new(
            mapping(),
            groups,
            Arc::new(AwsSts::new(aws_sdk_sts::Client::from_conf(config))),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn sts_refusals_are_typed_and_throttling_is_retried() {
        for code in [
            "MalformedPolicyDocument",
            "PackedPolicyTooLarge",
            "AccessDenied",
        ] {
            let (url, calls) = failing_sts(code, StatusCode::BAD_REQUEST).await;
            let err = vendor_at(&url)
                .vend(&user("alice"), &VendRequest::default())
                .await
                .unwrap_err();
            match &err {
                VendError::Sts { code: got, message } => {
                    assert_eq!(got, code);
                    assert!(message.contains("scripted"), "{message}");
                }
                other => panic!("{code}: {other}"),
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{code} is not retried");
        }
        let (url, calls) = failing_sts("Throttling", StatusCode::BAD_REQUEST).await;
        let err = vendor_at(&url)
            .vend(&user("alice"), &VendRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(err, VendError::Throttled { attempts: 4 }), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
