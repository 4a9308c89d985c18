//! `S3Store` against a real moto S3 (`scripts/services/moto.sh`, which exports
//! `PORTCULLIS_TEST_MOTO_URL`): skipped without it, failed under
//! `PORTCULLIS_REQUIRE_SERVICES=1`.
//!
//! ```sh
//! PORTCULLIS_REQUIRE_SERVICES=1 scripts/with-services \
//!     cargo test -p portcullis-delivery --features s3 --test s3_store
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_s3::primitives::ByteStream;
use portcullis_delivery::{ArtifactStore, DeliveryError, RevisionId, S3Options, S3Store};

const SECRET: &str = "moto-secret-access-key-never-printed";

/// The configuration an embedder would load, pointed at moto with static keys.
fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            SECRET,
            None,
            None,
            "test",
        )))
        .build()
}

/// A plain SDK client on moto, for what the store itself never does (make buckets,
/// overwrite objects behind its back).
fn raw_client(endpoint: &str) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk(endpoint))
            .force_path_style(true)
            .build(),
    )
}

/// A new bucket named after `tag` and this process; its name.
async fn bucket(endpoint: &str, tag: &str) -> String {
    let name = format!("pcd-{tag}-{}", std::process::id());
    raw_client(endpoint)
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    name
}

fn store(endpoint: &str, options: S3Options) -> S3Store {
    S3Store::from_sdk_config(&sdk(endpoint), options.with_force_path_style(true)).unwrap()
}

async fn raw_put(endpoint: &str, bucket: &str, key: &str, body: Vec<u8>) {
    raw_client(endpoint)
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

async fn raw_get(endpoint: &str, bucket: &str, key: &str) -> Vec<u8> {
    let object = raw_client(endpoint)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    object.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn revisions_round_trip_content_addressed_and_immutable() {
    let endpoint = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    let bucket = bucket(&endpoint, "immutable").await;
    let store = store(&endpoint, S3Options::new(&bucket).with_prefix("delivery/"));
    store.check_bucket().await.unwrap();

    let tarball = b"a bundle tarball".to_vec();
    let id = store.put("authz", &tarball).await.unwrap();
    assert_eq!(id, RevisionId::of(&tarball));
    // Content-addressed: the key is the prefix, the artifact and the content's SHA-256.
    let key = format!("delivery/authz/{id}.tar.gz");
    assert_eq!(raw_get(&endpoint, &bucket, &key).await, tarball);
    assert!(store.contains("authz", &id).await.unwrap());
    assert_eq!(store.get("authz", &id).await.unwrap(), tarball);

    // Never replaced: moto honours `If-None-Match: *` (412), which is `Exists`.
    let again = store.put("authz", &tarball).await.unwrap_err();
    assert!(matches!(again, DeliveryError::Exists { .. }), "{again}");
    assert_eq!(store.get("authz", &id).await.unwrap(), tarball);
    // The same content is another artifact's own revision.
    assert_eq!(store.put("other", &tarball).await.unwrap(), id);

    // Missing is NotFound, not an error of the store.
    let missing = RevisionId::of(b"never stored");
    assert!(!store.contains("authz", &missing).await.unwrap());
    let err = store.get("authz", &missing).await.unwrap_err();
    assert!(matches!(err, DeliveryError::NotFound { .. }), "{err}");
    // Names that could leave the artifact's folder never reach S3.
    let err = store.put("../etc", b"x").await.unwrap_err();
    assert!(matches!(err, DeliveryError::Invalid(_)), "{err}");

    // Without a prefix, keys start at the artifact.
    let bare = self::store(&endpoint, S3Options::new(&bucket));
    let id = bare.put("authz", b"bare").await.unwrap();
    assert_eq!(
        raw_get(&endpoint, &bucket, &format!("authz/{id}.tar.gz")).await,
        b"bare"
    );
}

#[tokio::test]
async fn a_replaced_object_is_corrupt_not_served() {
    let endpoint = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    let bucket = bucket(&endpoint, "tamper").await;
    let store = store(&endpoint, S3Options::new(&bucket).with_prefix("p/"));
    let id = store.put("authz", b"the real bundle").await.unwrap();

    // Someone with write access to the bucket replaces it.
    raw_put(
        &endpoint,
        &bucket,
        &format!("p/authz/{id}.tar.gz"),
        b"evil".to_vec(),
    )
    .await;
    match store.get("authz", &id).await.unwrap_err() {
        DeliveryError::Corrupt {
            artifact,
            revision,
            actual,
        } => {
            assert_eq!(artifact, "authz");
            assert_eq!(revision, id.to_string());
            assert_eq!(actual, RevisionId::of(b"evil").to_string());
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[tokio::test]
async fn oversized_objects_are_refused() {
    let endpoint = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    let bucket = bucket(&endpoint, "oversized").await;
    let store = store(
        &endpoint,
        S3Options::new(&bucket).with_max_object_bytes(1024),
    );

    // Not written: a revision the store would refuse to read back.
    let big = vec![7u8; 1025];
    let err = store.put("authz", &big).await.unwrap_err();
    assert!(
        matches!(
            err,
            DeliveryError::TooLarge {
                size: 1025,
                max: 1024,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !store
            .contains("authz", &RevisionId::of(&big))
            .await
            .unwrap()
    );

    // Put there by other means: refused from its announced length, before its body.
    let huge = vec![1u8; 4 << 20];
    let id = RevisionId::of(&huge);
    raw_put(&endpoint, &bucket, &format!("authz/{id}.tar.gz"), huge).await;
    let err = store.get("authz", &id).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::TooLarge { size, max: 1024, .. } if size == 4 << 20),
        "{err}"
    );
    // At the limit is fine.
    let fits = vec![2u8; 1024];
    let id = store.put("authz", &fits).await.unwrap();
    assert_eq!(store.get("authz", &id).await.unwrap(), fits);
}

#[tokio::test]
async fn a_missing_bucket_is_a_typed_error_on_every_call() {
    let endpoint = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    let name = format!("pcd-no-such-bucket-{}", std::process::id());
    let store = store(&endpoint, S3Options::new(&name));
    let id = RevisionId::of(b"x");

    let check = store.check_bucket().await.unwrap_err();
    let put = store.put("authz", b"x").await.unwrap_err();
    let get = store.get("authz", &id).await.unwrap_err();
    let contains = store.contains("authz", &id).await.unwrap_err();
    for err in [check, put, get, contains] {
        match &err {
            DeliveryError::Remote {
                location,
                code,
                message,
            } => {
                assert_eq!(code.as_deref(), Some("NoSuchBucket"), "{err}");
                assert!(location.starts_with(&format!("s3://{name}/")), "{err}");
                assert!(message.contains("does not exist"), "{err}");
            }
            other => panic!("expected Remote, got {other}"),
        }
        assert!(!err.to_string().contains(SECRET));
    }
    // Credentials never show in Debug.
    assert!(!format!("{store:?}").contains(SECRET));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_typed_error() {
    // Needs no service: nothing listens on port 9 (discard) of 127.0.0.1.
    let store = store(
        "http://127.0.0.1:9",
        S3Options::new("bucket").with_timeout(Duration::from_secs(5)),
    );
    let err = store.get("authz", &RevisionId::of(b"x")).await.unwrap_err();
    match &err {
        DeliveryError::Remote {
            code: None,
            message,
            ..
        } => {
            assert!(message.contains("could not be reached"), "{err}");
        }
        other => panic!("expected Remote, got {other}"),
    }
    assert!(!err.to_string().contains(SECRET));
}

/// Servers publishing one revision at once: each put is stored or `Exists`, never an
/// error, and the object is whole afterwards. S3 itself lets exactly one conditional write
/// win; moto checks `If-None-Match` and then writes without a lock, so against it more than
/// one may (with the same bytes, as the key is their hash) and the test cannot ask for one.
#[tokio::test]
async fn racing_puts_of_one_revision_are_stored_or_exist() {
    let endpoint = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    let bucket = bucket(&endpoint, "race").await;
    let store = std::sync::Arc::new(store(&endpoint, S3Options::new(&bucket)));
    for round in 0..5u8 {
        let tarball = vec![round; 100_000];
        let puts: Vec<_> = (0..8)
            .map(|_| {
                let (store, tarball) = (store.clone(), tarball.clone());
                tokio::spawn(async move { store.put("authz", &tarball).await })
            })
            .collect();
        let mut stored = 0;
        for put in puts {
            match put.await.unwrap() {
                Ok(_) => stored += 1,
                Err(DeliveryError::Exists { .. }) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert!(stored >= 1, "round {round}");
        let id = RevisionId::of(&tarball);
        assert_eq!(store.get("authz", &id).await.unwrap(), tarball);
        let again = store.put("authz", &tarball).await.unwrap_err();
        assert!(matches!(again, DeliveryError::Exists { .. }), "{again}");
    }
}
