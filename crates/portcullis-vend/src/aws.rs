//! [`AwsSts`]: the [`StsBackend`] on `aws-sdk-sts` (feature `aws`).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_sts::error::ProvideErrorMetadata;
use aws_sdk_sts::types::PolicyDescriptorType;

use crate::{AssumeRoleRequest, Credentials, Secret, StsBackend, VendError};

/// Throttled calls are retried this many times in all, with doubling pauses.
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// AWS STS through `aws-sdk-sts`.
///
/// Build the client the way your service loads AWS configuration (usually
/// `aws_config::load_defaults`), or point it at an STS-compatible endpoint with
/// `endpoint_url`:
///
/// ```no_run
/// use portcullis_vend::AwsSts;
/// let config = aws_sdk_sts::Config::builder()
///     .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
///     .region(aws_sdk_sts::config::Region::new("us-east-1"))
///     .endpoint_url("http://127.0.0.1:5000")
///     .credentials_provider(aws_sdk_sts::config::Credentials::new("AKIA…", "…", None, None, "static"))
///     .build();
/// let sts = AwsSts::new(aws_sdk_sts::Client::from_conf(config));
/// ```
#[derive(Debug, Clone)]
pub struct AwsSts {
    client: aws_sdk_sts::Client,
}

impl AwsSts {
    /// STS through `client`.
    pub fn new(client: aws_sdk_sts::Client) -> Self {
        AwsSts { client }
    }
}

fn is_throttling(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException"
        )
    )
}

#[async_trait]
impl StsBackend for AwsSts {
    async fn assume_role(&self, r: &AssumeRoleRequest) -> Result<Credentials, VendError> {
        let duration = i32::try_from(r.duration_seconds)
            .map_err(|_| VendError::Config("the session duration does not fit STS".into()))?;
        let mut pause = FIRST_PAUSE;
        for attempt in 1..=ATTEMPTS {
            let mut call = self
                .client
                .assume_role()
                .role_arn(&r.role_arn)
                .role_session_name(&r.session_name)
                .source_identity(&r.source_identity)
                .duration_seconds(duration);
            for arn in &r.policy_arns {
                call = call.policy_arns(PolicyDescriptorType::builder().arn(arn).build());
            }
            match call.send().await {
                Ok(output) => {
                    let c = output.credentials().ok_or_else(|| {
                        VendError::Unavailable("STS answered without credentials".into())
                    })?;
                    let expiration = SystemTime::try_from(*c.expiration()).map_err(|e| {
                        VendError::Unavailable(format!("STS sent an unreadable expiry: {e}"))
                    })?;
                    return Ok(Credentials {
                        access_key_id: c.access_key_id().to_owned(),
                        secret_access_key: Secret::new(c.secret_access_key()),
                        session_token: Secret::new(c.session_token()),
                        expiration,
                        assumed_role_arn: output.assumed_role_user().map(|u| u.arn().to_owned()),
                    });
                }
                Err(err) => {
                    let code = err.code();
                    if is_throttling(code) && attempt < ATTEMPTS {
                        tracing::warn!(attempt, "STS is throttling; retrying");
                        tokio::time::sleep(pause).await;
                        pause = pause.saturating_mul(2);
                        continue;
                    }
                    if is_throttling(code) {
                        return Err(VendError::Throttled { attempts: attempt });
                    }
                    return Err(match code {
                        Some(code) => VendError::Sts {
                            code: code.to_owned(),
                            message: err.message().unwrap_or_default().to_owned(),
                        },
                        None => VendError::Unavailable(
                            aws_sdk_sts::error::DisplayErrorContext(&err).to_string(),
                        ),
                    });
                }
            }
        }
        Err(VendError::Throttled { attempts: ATTEMPTS })
    }
}
