//! The mapping: directory groups → roles → managed policy ARNs, and the session limits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::VendError;

/// The most managed policies one AssumeRole call accepts.
pub const MAX_POLICY_ARNS: usize = 10;
/// The shortest session STS grants.
pub const MIN_DURATION: Duration = Duration::from_secs(900);
/// The longest session of a role assumed with long-term credentials.
pub const MAX_DURATION: Duration = Duration::from_secs(43_200);
/// The longest session of a role assumed with role credentials (role chaining).
pub const MAX_CHAINED_DURATION: Duration = Duration::from_secs(3600);

/// The mapping file.
///
/// ```toml
/// base_role_arn = "arn:aws:iam::123456789012:role/data-access-base"
/// chained = false               # true when the vendor itself runs on role credentials
/// default_duration_seconds = 3600
/// max_duration_seconds = 43200
/// cache_seconds = 300           # a group change takes effect within this time
/// refresh_before_seconds = 600  # renew cached credentials this long before they expire
///
/// [groups]                      # directory group → roles
/// analysts = ["read-sales"]
/// data-eng = ["read-sales", "write-sales"]
///
/// [roles]                       # role → IAM managed policy ARNs
/// read-sales = ["arn:aws:iam::123456789012:policy/sales-read"]
/// write-sales = ["arn:aws:iam::123456789012:policy/sales-write"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendConfig {
    /// The role every session assumes; the policies narrow it.
    pub base_role_arn: String,
    /// Whether the vendor's own credentials come from a role (caps sessions at one hour).
    #[serde(default)]
    pub chained: bool,
    /// Session length when none is asked for.
    #[serde(default = "hour")]
    pub default_duration_seconds: u64,
    /// The longest session that may be asked for.
    #[serde(default = "twelve_hours")]
    pub max_duration_seconds: u64,
    /// How long vended credentials are reused for the same user and policy set.
    #[serde(default = "five_minutes")]
    pub cache_seconds: u64,
    /// Cached credentials are renewed this long before they expire.
    #[serde(default = "ten_minutes")]
    pub refresh_before_seconds: u64,
    /// Group → roles.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Role → managed policy ARNs.
    pub roles: BTreeMap<String, Vec<String>>,
}

fn hour() -> u64 {
    3600
}
fn twelve_hours() -> u64 {
    43_200
}
fn five_minutes() -> u64 {
    300
}
fn ten_minutes() -> u64 {
    600
}

/// `arn:<partition>:iam::<12 digits or "aws">:<kind>/<path and name>`.
fn check_arn(arn: &str, kind: &str) -> Result<(), VendError> {
    let bad = || VendError::Config(format!("`{arn}` is not an IAM {kind} ARN"));
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let partition_ok = partition.starts_with("aws")
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-');
    let account_ok = (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        || (kind == "policy" && account == "aws");
    let name = resource
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('/'));
    let name_ok = name.is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 512
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
    });
    if partition_ok && account_ok && name_ok && arn.len() <= 2048 {
        Ok(())
    } else {
        Err(bad())
    }
}

/// What a user gets: the roles and the exact policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The roles granted by the user's groups (narrowed to those requested).
    pub roles: BTreeSet<String>,
    /// Their managed policies: never empty, at most [`MAX_POLICY_ARNS`].
    pub policies: BTreeSet<String>,
}

impl VendConfig {
    /// Parses and validates the TOML form.
    ///
    /// # Errors
    ///
    /// [`VendError::Config`] saying what is wrong.
    pub fn from_toml(text: &str) -> Result<Self, VendError> {
        let config: VendConfig =
            toml::from_str(text).map_err(|e| VendError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule the file must follow: ARNs well formed, every role a group names
    /// exists and has at least one policy, durations and cache times within STS's limits.
    ///
    /// # Errors
    ///
    /// [`VendError::Config`].
    pub fn validate(&self) -> Result<(), VendError> {
        let bad = |m: String| Err(VendError::Config(m));
        check_arn(&self.base_role_arn, "role")?;
        let ceiling = self.ceiling().as_secs();
        if self.max_duration_seconds < MIN_DURATION.as_secs() || self.max_duration_seconds > ceiling
        {
            return bad(format!(
                "max_duration_seconds must be {}–{ceiling}{}",
                MIN_DURATION.as_secs(),
                if self.chained {
                    " for a chained role"
                } else {
                    ""
                }
            ));
        }
        if self.default_duration_seconds < MIN_DURATION.as_secs()
            || self.default_duration_seconds > self.max_duration_seconds
        {
            return bad(
                "default_duration_seconds must be between 900 and max_duration_seconds".into(),
            );
        }
        if self.cache_seconds == 0 || self.cache_seconds > 3600 {
            return bad("cache_seconds must be 1–3600".into());
        }
        if self.refresh_before_seconds >= MIN_DURATION.as_secs() {
            return bad("refresh_before_seconds must be below 900 (the shortest session)".into());
        }
        if self.groups.is_empty() {
            return bad("[groups] maps no group, so nobody could get credentials".into());
        }
        for (group, roles) in &self.groups {
            if roles.is_empty() {
                return bad(format!("group `{group}` maps to no role"));
            }
            for role in roles {
                if !self.roles.contains_key(role) {
                    return bad(format!(
                        "group `{group}` names role `{role}`, which [roles] does not define"
                    ));
                }
            }
        }
        for (role, policies) in &self.roles {
            if policies.is_empty() {
                return bad(format!(
                    "role `{role}` has no policy; it would vend the base role unrestricted"
                ));
            }
            if policies.len() > MAX_POLICY_ARNS {
                return bad(format!(
                    "role `{role}` has more than {MAX_POLICY_ARNS} policies"
                ));
            }
            for arn in policies {
                check_arn(arn, "policy")?;
            }
        }
        Ok(())
    }

    fn ceiling(&self) -> Duration {
        if self.chained {
            MAX_CHAINED_DURATION
        } else {
            MAX_DURATION
        }
    }

    /// The session length for `requested` (the default when `None`).
    ///
    /// # Errors
    ///
    /// [`VendError::InvalidDuration`] outside 900 s – `max_duration_seconds`.
    pub fn duration(&self, requested: Option<Duration>) -> Result<Duration, VendError> {
        let secs = requested.map_or(self.default_duration_seconds, |d| d.as_secs());
        if secs < MIN_DURATION.as_secs() || secs > self.max_duration_seconds {
            return Err(VendError::InvalidDuration {
                requested: secs,
                min: MIN_DURATION.as_secs(),
                max: self.max_duration_seconds,
            });
        }
        Ok(Duration::from_secs(secs))
    }

    /// What `user` in `groups` gets, narrowed to `requested` roles if given.
    ///
    /// # Errors
    ///
    /// [`VendError::NoRecognisedGroup`] when no group maps; [`VendError::RoleNotAllowed`]
    /// for a requested role the groups do not grant; [`VendError::TooManyPolicies`] above
    /// [`MAX_POLICY_ARNS`].
    pub fn plan(
        &self,
        user: &str,
        groups: &[String],
        requested: Option<&[String]>,
    ) -> Result<Plan, VendError> {
        let granted: BTreeSet<String> = groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            .flatten()
            .cloned()
            .collect();
        if granted.is_empty() {
            return Err(VendError::NoRecognisedGroup {
                user: user.to_owned(),
            });
        }
        let roles = match requested {
            None => granted,
            Some([]) => granted,
            Some(asked) => {
                let mut roles = BTreeSet::new();
                for role in asked {
                    if !granted.contains(role) {
                        return Err(VendError::RoleNotAllowed {
                            user: user.to_owned(),
                            role: role.clone(),
                        });
                    }
                    roles.insert(role.clone());
                }
                roles
            }
        };
        let policies: BTreeSet<String> = roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .cloned()
            .collect();
        if policies.is_empty() {
            // Validation makes this unreachable; never vend the bare base role regardless.
            return Err(VendError::Config("the roles map to no policy".into()));
        }
        if policies.len() > MAX_POLICY_ARNS {
            return Err(VendError::TooManyPolicies {
                count: policies.len(),
                max: MAX_POLICY_ARNS,
            });
        }
        Ok(Plan { roles, policies })
    }
}

/// `RoleSessionName` (and `SourceIdentity`) for `user`: the name itself when it is already a
/// valid one (2–64 of `[\w+=,.@-]`) that does not end like a made-up one; otherwise its allowed characters (others become `-`,
/// at most 47) followed by `.` and 16 hex digits of the SHA-256 of the whole name, so two
/// different users never share a session name (`o'brien` and `o-brien`, `jürgen` and
/// `j-rgen`, two long names with one prefix) and CloudTrail can tell them apart.
///
/// # Errors
///
/// [`VendError::InvalidSessionName`] for an empty name.
pub fn session_name(user: &str) -> Result<String, VendError> {
    if user.is_empty() {
        return Err(VendError::InvalidSessionName(
            "the user name is empty".into(),
        ));
    }
    // A valid name is its own session name, unless it ends as a made-up one does (`.` and
    // 16 hex digits): then a person could name themselves after someone's made-up name
    // (`spiffe---prod.example-ci.d2d3df1bd553d60e` after `spiffe://prod.example/ci`) and
    // get the same session. Made-up names always end so and given ones never do.
    if is_valid_session_name(user) && !ends_like_a_digest(user) {
        return Ok(user.to_owned());
    }
    let mut name: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(47)
        .collect();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user.as_bytes());
    name.push('.');
    name.push_str(&hex::encode(digest.as_ref().get(..8).unwrap_or_default()));
    Ok(name)
}

/// Whether `name` ends in `.` and 16 hex digits (in either case: some consumers compare
/// session names ignoring case), as [`session_name`] ends the names it makes up.
fn ends_like_a_digest(name: &str) -> bool {
    name.len() >= 17
        && name.as_bytes().get(name.len() - 17) == Some(&b'.')
        && name
            .bytes()
            .skip(name.len() - 16)
            .all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` is a valid `RoleSessionName` / `SourceIdentity` (2–64 of `[\w+=,.@-]`).
pub fn is_valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns() {
        for ok in [
            ("arn:aws:iam::123456789012:role/base", "role"),
            ("arn:aws:iam::123456789012:role/path/to/base", "role"),
            ("arn:aws-cn:iam::123456789012:policy/p", "policy"),
            ("arn:aws:iam::aws:policy/ReadOnlyAccess", "policy"),
        ] {
            check_arn(ok.0, ok.1).unwrap();
        }
        for bad in [
            ("arn:aws:iam::aws:role/x", "role"),
            ("arn:aws:s3:::bucket", "policy"),
            ("arn:aws:iam::12345:policy/p", "policy"),
            ("arn:aws:iam::123456789012:policy/", "policy"),
            ("arn:aws:iam::123456789012:policy/a b", "policy"),
            ("", "role"),
        ] {
            assert!(check_arn(bad.0, bad.1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_names() {
        assert_eq!(session_name("alice").unwrap(), "alice");
        assert_eq!(session_name("o-brien").unwrap(), "o-brien");
        assert!(
            session_name("Ørjan Ström")
                .unwrap()
                .starts_with("-rjan-Str-m.")
        );
        assert!(session_name("*)(uid=*").unwrap().starts_with("---uid=-."));
        assert!(session_name("").is_err());
        // The outside finding: different users shared a session name.
        let made_up = session_name("spiffe://prod.example/ci").unwrap();
        assert_ne!(session_name(&made_up).unwrap(), made_up);
        assert_eq!(session_name("build.2024").unwrap(), "build.2024");
        let shouted = made_up
            .to_uppercase()
            .replace("SPIFFE---PROD.EXAMPLE-CI", "spiffe---prod.example-ci");
        assert_ne!(session_name(&shouted).unwrap(), shouted);
        for (a, b) in [
            ("o'brien", "o-brien"),
            ("x", "x-u"),
            ("jürgen", "j-rgen"),
            (&*"y".repeat(100), &*format!("{}z", "y".repeat(99))),
        ] {
            let (sa, sb) = (session_name(a).unwrap(), session_name(b).unwrap());
            assert_ne!(sa, sb, "{a} and {b}");
            assert!(
                is_valid_session_name(&sa) && is_valid_session_name(&sb),
                "{sa} {sb}"
            );
        }
        for name in ["alice", "a-u", "-rjan-Str-m", "x@y.z"] {
            assert!(is_valid_session_name(name));
        }
        assert!(!is_valid_session_name("a"));
        assert!(!is_valid_session_name("a b"));
    }
}
