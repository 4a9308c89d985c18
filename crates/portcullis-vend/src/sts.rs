//! The STS boundary: what is asked, what comes back, and the JSON forms AWS SDKs read.

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::VendError;

/// One AssumeRole call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleRequest {
    /// The base role.
    pub role_arn: String,
    /// `RoleSessionName` (validated: 2–64 of `[\w+=,.@-]`).
    pub session_name: String,
    /// `SourceIdentity`: the user, as the session name.
    pub source_identity: String,
    /// The managed policies that narrow the session (1–10).
    pub policy_arns: Vec<String>,
    /// Session length in seconds (validated against the mapping's limits).
    pub duration_seconds: u32,
}

/// A secret string that `Debug` never shows.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the response that hands it over.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Temporary credentials from STS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `ASIA…`.
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: Secret,
    /// The session token.
    pub session_token: Secret,
    /// When they stop working.
    pub expiration: SystemTime,
    /// The assumed-role ARN STS reported, if any.
    pub assumed_role_arn: Option<String>,
}

impl Credentials {
    fn expiration_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.expiration).to_string()
    }

    /// The `credential_process` form (`Version: 1`), for `~/.aws/config`'s
    /// `credential_process = …`.
    pub fn credential_process_json(&self) -> Value {
        json!({
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key.expose(),
            "SessionToken": self.session_token.expose(),
            "Expiration": self.expiration_rfc3339(),
        })
    }

    /// The ECS container-credentials form, served at `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub fn ecs_json(&self) -> Value {
        let mut value = json!({
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key.expose(),
            "Token": self.session_token.expose(),
            "Expiration": self.expiration_rfc3339(),
        });
        if let (Some(arn), Some(map)) = (&self.assumed_role_arn, value.as_object_mut()) {
            map.insert("RoleArn".into(), Value::String(arn.clone()));
        }
        value
    }
}

/// Where sessions come from: AWS STS (`AwsSts`, feature `aws`) or anything that speaks
/// AssumeRole. Async, object safe.
#[async_trait]
pub trait StsBackend: Send + Sync + fmt::Debug {
    /// Assumes the role. Implementations pass every field through; the vendor has already
    /// enforced the rules STS-compatible test servers do not.
    async fn assume_role(&self, request: &AssumeRoleRequest) -> Result<Credentials, VendError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sdk_forms() {
        let creds = Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: Secret::new("s3cr3t"),
            session_token: Secret::new("t0k3n"),
            expiration: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            assumed_role_arn: Some("arn:aws:sts::123456789012:assumed-role/base/alice".into()),
        };
        let process = creds.credential_process_json();
        assert_eq!(process["Version"], 1);
        assert_eq!(process["SecretAccessKey"], "s3cr3t");
        assert_eq!(process["Expiration"], "2023-11-14T22:13:20Z");
        let ecs = creds.ecs_json();
        assert_eq!(ecs["Token"], "t0k3n");
        assert_eq!(
            ecs["RoleArn"],
            "arn:aws:sts::123456789012:assumed-role/base/alice"
        );
        let shown = format!("{creds:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("t0k3n"),
            "{shown}"
        );
    }
}
