//! [`S3Store`]: revisions as objects in an S3 bucket (feature `s3`), for several server
//! instances sharing one artifact store.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;

use super::{ArtifactStore, verified};
use crate::revision::check_artifact_name;
use crate::{DeliveryError, RevisionId};

/// The largest object [`S3Store::get`](ArtifactStore::get) reads by default: 64 MiB, the
/// most a bundle may hold uncompressed by `BundleLimits`' default.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 64 << 20;

/// The longest prefix (S3 keys are at most 1,024 bytes; an artifact name and a revision
/// take up to 204 of them).
const MAX_PREFIX: usize = 512;

/// Where an [`S3Store`] keeps revisions and how it reaches S3. Credentials are not here:
/// they come from the standard AWS chain ([`S3Store::connect`]) or the embedder's own AWS
/// configuration ([`S3Store::from_sdk_config`]).
///
/// ```
/// use std::time::Duration;
/// use portcullis_delivery::S3Options;
/// let options = S3Options::new("policy-artifacts")
///     .with_prefix("delivery/")
///     .with_region("eu-west-1")
///     .with_max_object_bytes(8 << 20)
///     .with_timeout(Duration::from_secs(20));
/// assert_eq!(options.bucket, "policy-artifacts");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Options {
    /// The bucket (which must exist).
    pub bucket: String,
    /// Put before every key: empty (the default) or ending in `/`, e.g. `delivery/`.
    /// Objects are `{prefix}{artifact}/{revision}.tar.gz`.
    pub prefix: String,
    /// The AWS region; `None` (the default) takes it from the standard chain
    /// (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// Another S3-compatible endpoint (moto, MinIO, a VPC endpoint), e.g.
    /// `http://127.0.0.1:5000`; `None` (the default) is AWS's own (or `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`) instead of virtual-hosted ones
    /// (`bucket.endpoint/key`), as most S3-compatible servers need. Default `false`.
    pub force_path_style: bool,
    /// The largest object read or written: a bigger one is refused before its body is read.
    /// Default [`DEFAULT_MAX_OBJECT_BYTES`].
    pub max_object_bytes: u64,
    /// How long one operation may take, retries included. Default 30 s.
    pub timeout: Duration,
}

impl S3Options {
    /// Options for `bucket`, everything else at its default.
    #[must_use]
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Options {
            bucket: bucket.into(),
            prefix: String::new(),
            region: None,
            endpoint_url: None,
            force_path_style: false,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Builders: the struct is `#[non_exhaustive]`, so it can gain settings without breaking
/// callers; start from [`S3Options::new`].
impl S3Options {
    /// Sets [`prefix`](Self::prefix).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`region`](Self::region).
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets [`endpoint_url`](Self::endpoint_url).
    #[must_use]
    pub fn with_endpoint_url(mut self, endpoint_url: impl Into<String>) -> Self {
        self.endpoint_url = Some(endpoint_url.into());
        self
    }

    /// Sets [`force_path_style`](Self::force_path_style).
    #[must_use]
    pub fn with_force_path_style(mut self, force_path_style: bool) -> Self {
        self.force_path_style = force_path_style;
        self
    }

    /// Sets [`max_object_bytes`](Self::max_object_bytes).
    #[must_use]
    pub fn with_max_object_bytes(mut self, max_object_bytes: u64) -> Self {
        self.max_object_bytes = max_object_bytes;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Refuses what S3 would refuse later, or what would make keys ambiguous.
    fn check(&self) -> Result<(), DeliveryError> {
        let bucket = &self.bucket;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(DeliveryError::Invalid(format!(
                "S3 bucket {:?}: a bucket name is 3 to 63 of a-z 0-9 . - and starts and ends \
                 with a letter or digit",
                bucket.chars().take(80).collect::<String>()
            )));
        }
        let prefix = &self.prefix;
        let prefix_ok = prefix.is_empty()
            || (prefix.len() <= MAX_PREFIX
                && prefix.ends_with('/')
                && !prefix.starts_with('/')
                && prefix.split('/').all(|part| part != "." && part != "..")
                && !prefix.contains("//")
                && !prefix.chars().any(char::is_control));
        if !prefix_ok {
            return Err(DeliveryError::Invalid(format!(
                "S3 prefix {:?}: empty, or at most {MAX_PREFIX} bytes ending in `/` (e.g. \
                 `delivery/`), without a leading `/`, `//`, `.` or `..` parts or control \
                 characters",
                prefix.chars().take(80).collect::<String>()
            )));
        }
        if self.max_object_bytes == 0 {
            return Err(DeliveryError::Invalid(
                "S3 max_object_bytes must be more than 0".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(DeliveryError::Invalid(
                "S3 timeout must be more than 0".into(),
            ));
        }
        Ok(())
    }
}

/// Revisions as objects `{prefix}{artifact}/{revision}.tar.gz` in an S3 bucket, so that
/// several server instances share them.
///
/// - **Immutable.** [`put`](ArtifactStore::put) is a conditional write (`If-None-Match:
///   *`): S3 refuses it with `412 Precondition Failed` if the key exists, atomically, and
///   that is [`DeliveryError::Exists`]. Nothing is read first, so two servers publishing
///   the same revision at once cannot both win. A server that ignores the header (some
///   S3-compatible stores) would store the same bytes again under the same key — the key
///   is their hash — and answer `Ok` instead of `Exists`.
/// - **Durable, and whole.** S3 acknowledges a `PutObject` only once the object is stored
///   redundantly. The upload carries the tarball's SHA-256 (the revision id) as
///   `x-amz-checksum-sha256`, so S3 refuses a body damaged on the way.
/// - **Checked on read.** [`get`](ArtifactStore::get) refuses an object larger than
///   [`S3Options::max_object_bytes`] before reading its body, then hashes it:
///   [`DeliveryError::Corrupt`] if it was replaced behind the store's back. A missing key
///   is [`DeliveryError::NotFound`]; a missing bucket, refused credentials or an
///   unreachable endpoint are [`DeliveryError::Remote`] with S3's error code.
///
/// The credentials need `s3:PutObject` and `s3:GetObject` on the keys and
/// `s3:ListBucket` on the bucket (without it S3 answers `403` instead of `404` for a
/// missing key, which is then an error, not `NotFound`). Object Lock or a bucket policy
/// denying `s3:PutObject` on existing keys and `s3:DeleteObject` adds a second guard
/// outside this process.
///
/// ```no_run
/// # async fn demo() -> Result<(), portcullis_delivery::DeliveryError> {
/// use portcullis_delivery::{ArtifactStore, S3Options, S3Store};
/// let store = S3Store::connect(
///     S3Options::new("policy-artifacts").with_prefix("delivery/").with_region("eu-west-1"),
/// )
/// .await?;
/// let revision = store.put("authz", b"a bundle tarball").await?;
/// assert_eq!(store.get("authz", &revision).await?, b"a bundle tarball");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    options: S3Options,
}

impl std::fmt::Debug for S3Store {
    // The options only: the client's configuration holds the credentials provider.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store with credentials and, unless `options` name them, region and endpoint from
    /// the standard AWS chain — environment (`AWS_ACCESS_KEY_ID`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, …), the shared config and credentials files (`AWS_PROFILE`,
    /// `credential_process`), web identity (EKS), the ECS and EC2 metadata services —
    /// after checking that the bucket exists and the credentials may list it.
    ///
    /// SSO profiles are not read (their provider would bring a second crypto library):
    /// use `aws configure export-credentials` or a `credential_process`, or build the
    /// configuration yourself and call [`from_sdk_config`](Self::from_sdk_config).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Invalid`] for bad options or no region anywhere;
    /// [`DeliveryError::Remote`] if the bucket cannot be reached (`NoSuchBucket`,
    /// `AccessDenied`, no credentials, no connection).
    pub async fn connect(options: S3Options) -> Result<S3Store, DeliveryError> {
        options.check()?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let store = S3Store::from_sdk_config(&loader.load().await, options)?;
        store.check_bucket().await?;
        Ok(store)
    }

    /// A store on the embedder's own AWS configuration: its credentials provider (an
    /// assumed role, a custom provider), HTTP client, retry and connect-timeout settings,
    /// shared with its other AWS clients. `options` set the path style and the operation
    /// timeout, and override the region and endpoint where they name one. Makes no request
    /// (see [`check_bucket`](Self::check_bucket)).
    ///
    /// This is the one signature with an AWS type in it: an embedder that already loads
    /// AWS configuration should not have to describe it again in [`S3Options`]. It follows
    /// `aws-config` 1.x.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Invalid`] for bad options or no region in either.
    pub fn from_sdk_config(
        sdk: &aws_config::SdkConfig,
        options: S3Options,
    ) -> Result<S3Store, DeliveryError> {
        options.check()?;
        let mut config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(options.force_path_style)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(options.timeout)
                    .build(),
            );
        if let Some(region) = &options.region {
            config = config.region(aws_sdk_s3::config::Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            config = config.endpoint_url(url);
        }
        let config = config.build();
        if config.region().is_none() {
            return Err(DeliveryError::Invalid(
                "S3: no AWS region; set the store's region or AWS_REGION".into(),
            ));
        }
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(config),
            options,
        })
    }

    /// The options this store was made with.
    #[must_use]
    pub fn options(&self) -> &S3Options {
        &self.options
    }

    /// Checks that the bucket exists and the credentials may reach it (`HeadBucket`, which
    /// needs `s3:ListBucket`), so that a misconfiguration shows at start rather than at
    /// the first publish or download. [`connect`](Self::connect) calls it.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Remote`].
    pub async fn check_bucket(&self) -> Result<(), DeliveryError> {
        match self
            .client
            .head_bucket()
            .bucket(&self.options.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => Err(self.remote(String::new(), &err)),
        }
    }

    /// The key of `revision` of `artifact`.
    fn key(&self, artifact: &str, revision: &RevisionId) -> Result<String, DeliveryError> {
        check_artifact_name(artifact)?;
        Ok(format!(
            "{}{artifact}/{revision}.tar.gz",
            self.options.prefix
        ))
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.options.bucket)
    }

    /// A failed call as [`DeliveryError::Remote`], with what to check. The message is S3's
    /// own (codes and messages carry no credentials) or the client's error chain (the
    /// endpoint could not be reached, no credentials were found).
    fn remote<E>(&self, key: String, err: &SdkError<E>) -> DeliveryError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = status_of(err);
        // A HEAD answer has no body, hence no code of S3's own: the SDK says `NotFound`
        // for a 404, which for `HeadBucket` (the empty key) is a missing bucket.
        let code = match (err.code(), status) {
            (None | Some("NotFound"), Some(404)) if key.is_empty() => {
                Some("NoSuchBucket".to_owned())
            }
            (None, Some(403)) => Some("AccessDenied".to_owned()),
            (code, _) => code.map(str::to_owned),
        };
        let bucket = &self.options.bucket;
        let message = match (code.as_deref(), status) {
            (Some("NoSuchBucket"), _) => format!(
                "bucket {bucket:?} does not exist: create it, or correct the bucket name, \
                 region or endpoint"
            ),
            (Some("AccessDenied" | "AllAccessDisabled"), _) | (_, Some(403)) => format!(
                "access denied{}: the credentials need s3:GetObject and s3:PutObject on the \
                 keys and s3:ListBucket on bucket {bucket:?}",
                err.message().map(|m| format!(" ({m})")).unwrap_or_default()
            ),
            (Some(code), status) => format!(
                "{code}{}{}",
                status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
                err.message().map(|m| format!(": {m}")).unwrap_or_default()
            ),
            (None, Some(status)) => format!("HTTP {status} without an error code"),
            (None, None) => format!(
                "S3 could not be reached or the request not made (check the endpoint, \
                 region and credentials): {}",
                DisplayErrorContext(err)
            ),
        };
        DeliveryError::Remote {
            location: self.location(&key),
            code,
            message,
        }
    }

    fn too_large(artifact: &str, revision: &RevisionId, size: u64, max: u64) -> DeliveryError {
        DeliveryError::TooLarge {
            artifact: artifact.to_owned(),
            revision: revision.to_string(),
            size,
            max,
        }
    }
}

fn status_of<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// The SHA-256 a revision id names, as S3's `x-amz-checksum-sha256` wants it (base64).
fn checksum_sha256(revision: &RevisionId) -> Option<String> {
    let digest = hex::decode(revision.as_str()).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(digest))
}

#[async_trait]
impl ArtifactStore for S3Store {
    async fn put(&self, artifact: &str, tarball: &[u8]) -> Result<RevisionId, DeliveryError> {
        let revision = RevisionId::of(tarball);
        let key = self.key(artifact, &revision)?;
        let size = u64::try_from(tarball.len()).unwrap_or(u64::MAX);
        if size > self.options.max_object_bytes {
            return Err(S3Store::too_large(
                artifact,
                &revision,
                size,
                self.options.max_object_bytes,
            ));
        }
        let answer = self
            .client
            .put_object()
            .bucket(&self.options.bucket)
            .key(&key)
            .if_none_match("*")
            .set_checksum_sha256(checksum_sha256(&revision))
            .content_type("application/gzip")
            .body(ByteStream::from(tarball.to_vec()))
            .send()
            .await;
        match answer {
            Ok(_) => Ok(revision),
            Err(err) => match (status_of(&err), err.code()) {
                (Some(412), _) | (_, Some("PreconditionFailed")) => Err(DeliveryError::Exists {
                    artifact: artifact.to_owned(),
                    revision: revision.to_string(),
                }),
                // Another conditional write of this key was in flight (S3 answers 409 to
                // one of two racing writers): the same content, by its key.
                (Some(409), _) | (_, Some("ConditionalRequestConflict"))
                    if self.contains(artifact, &revision).await? =>
                {
                    Err(DeliveryError::Exists {
                        artifact: artifact.to_owned(),
                        revision: revision.to_string(),
                    })
                }
                _ => Err(self.remote(key, &err)),
            },
        }
    }

    async fn get(&self, artifact: &str, revision: &RevisionId) -> Result<Vec<u8>, DeliveryError> {
        let key = self.key(artifact, revision)?;
        let max = self.options.max_object_bytes;
        let mut output = match self
            .client
            .get_object()
            .bucket(&self.options.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(err) if err.code() == Some("NoSuchKey") => {
                return Err(DeliveryError::NotFound {
                    artifact: artifact.to_owned(),
                    revision: revision.to_string(),
                });
            }
            Err(err) => return Err(self.remote(key, &err)),
        };
        // Refused before the body is read; the stream is dropped, closing the connection.
        let length = output
            .content_length()
            .map(|l| u64::try_from(l).unwrap_or(0));
        if let Some(length) = length.filter(|l| *l > max) {
            return Err(S3Store::too_large(artifact, revision, length, max));
        }
        let capacity = length.and_then(|l| usize::try_from(l).ok()).unwrap_or(0);
        let mut bytes = Vec::with_capacity(capacity);
        loop {
            match output.body.try_next().await {
                Ok(Some(chunk)) => {
                    bytes.extend_from_slice(&chunk);
                    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                    // A body longer than announced, or no length announced.
                    if read > max {
                        return Err(S3Store::too_large(artifact, revision, read, max));
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    return Err(DeliveryError::Remote {
                        location: self.location(&key),
                        code: None,
                        message: format!(
                            "the object's body could not be read: {}",
                            DisplayErrorContext(&err)
                        ),
                    });
                }
            }
        }
        verified(artifact, revision, bytes)
    }

    async fn contains(&self, artifact: &str, revision: &RevisionId) -> Result<bool, DeliveryError> {
        let key = self.key(artifact, revision)?;
        match self
            .client
            .head_object()
            .bucket(&self.options.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            // A HEAD answer has no body: a missing bucket is a 404 too, so ask about it.
            Err(err) if status_of(&err) == Some(404) => {
                self.check_bucket().await?;
                Ok(false)
            }
            Err(err) => Err(self.remote(key, &err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_refuse_ambiguous_keys_and_bad_buckets() {
        S3Options::new("policy-artifacts").check().unwrap();
        S3Options::new("a.b-c").with_prefix("x/y/").check().unwrap();
        for bucket in ["", "ab", "Policy", "-a-", "a_b", &"a".repeat(64)] {
            assert!(S3Options::new(bucket).check().is_err(), "{bucket}");
        }
        for prefix in ["x", "/x/", "x//", "../", "a/./", "a\n/"] {
            assert!(
                S3Options::new("bucket")
                    .with_prefix(prefix)
                    .check()
                    .is_err(),
                "{prefix}"
            );
        }
        assert!(
            S3Options::new("bucket")
                .with_max_object_bytes(0)
                .check()
                .is_err()
        );
    }

    #[test]
    fn keys_are_content_addressed() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let store =
            S3Store::from_sdk_config(&sdk, S3Options::new("bucket").with_prefix("p/")).unwrap();
        let id = RevisionId::of(b"x");
        assert_eq!(
            store.key("authz", &id).unwrap(),
            format!("p/authz/{id}.tar.gz")
        );
        assert!(store.key("../x", &id).is_err());
        // No region in either: refused with what to set.
        let regionless = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let err = S3Store::from_sdk_config(&regionless, S3Options::new("bucket")).unwrap_err();
        assert!(err.to_string().contains("AWS_REGION"), "{err}");
        S3Store::from_sdk_config(
            &regionless,
            S3Options::new("bucket").with_region("eu-west-1"),
        )
        .unwrap();
        assert_eq!(
            checksum_sha256(&RevisionId::of(b"abc")).unwrap(),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        // The options only: nothing of the client's configuration.
        let debug = format!("{store:?}");
        assert!(
            debug.contains("bucket") && !debug.contains("credentials"),
            "{debug}"
        );
    }
}
