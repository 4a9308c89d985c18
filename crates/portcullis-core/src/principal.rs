//! Who is asking: a [`Principal`] is an authenticated identity with its groups, how it was
//! proved, and until when.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::{Error, Field, echo};
use crate::ident::{ident_newtype, validate_name};

/// What sort of party a [`Principal`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PrincipalKind {
    /// A person.
    User,
    /// A machine identity: a workload, a host agent, a service account.
    Service,
    /// Automation acting through a server-issued script token; the subject is the token's
    /// name (or accessor), never its secret.
    ScriptToken,
}

impl PrincipalKind {
    /// The canonical name: `user`, `service` or `script_token`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Service => "service",
            PrincipalKind::ScriptToken => "script_token",
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrincipalKind {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        [
            PrincipalKind::User,
            PrincipalKind::Service,
            PrincipalKind::ScriptToken,
        ]
        .into_iter()
        .find(|kind| kind.as_str().eq_ignore_ascii_case(input))
        .ok_or_else(|| Error::UnknownPrincipalKind { value: echo(input) })
    }
}

ident_newtype!(
    /// How a [`Principal`] proved who it is: an open set of lower-case identifiers, so an
    /// embedder's own method (say `mtls`) fits beside the built-in ones.
    AuthMethod, Field::AuthMethod, "authentication method"
);

impl AuthMethod {
    /// A JWT access or ID token verified against an OIDC provider's JWKS.
    pub const OIDC: AuthMethod = AuthMethod::from_static("oidc");
    /// An opaque OAuth token verified by RFC 7662 introspection.
    pub const OAUTH_INTROSPECTION: AuthMethod = AuthMethod::from_static("oauth_introspection");
    /// An opaque OAuth token verified at the provider's userinfo endpoint.
    pub const OAUTH_USERINFO: AuthMethod = AuthMethod::from_static("oauth_userinfo");
    /// A long-lived personal token issued by this server.
    pub const PERSONAL_TOKEN: AuthMethod = AuthMethod::from_static("personal_token");
    /// A script token issued by this server for automation.
    pub const SCRIPT_TOKEN: AuthMethod = AuthMethod::from_static("script_token");
    /// A JWT this server issued itself, e.g. after a directory login.
    pub const ISSUED_JWT: AuthMethod = AuthMethod::from_static("issued_jwt");
    /// A user name and password checked against a directory (LDAP).
    pub const PASSWORD: AuthMethod = AuthMethod::from_static("password");
}

/// An authenticated identity: the input to every authorization decision.
///
/// A `Principal` carries a subject id, its [`PrincipalKind`], the groups (teams) it belongs
/// to, the [`AuthMethod`] that proved it, an optional expiry and extra claims (for example
/// `email` from an OIDC token). It never carries a credential: claims are for facts about
/// the subject, not secrets.
///
/// Principals are built with [`Principal::builder`], which validates every part, or parsed
/// from the JSON form:
///
/// ```json
/// {"subject":"alice","kind":"user","groups":["deployers"],"auth_method":"oidc",
///  "expires_at":1767225600,"claims":{"email":"alice@example.org"}}
/// ```
///
/// `groups`, `expires_at` and `claims` may be left out; unknown fields are rejected.
/// `expires_at` is whole seconds since the Unix epoch: an expiry given with a fraction of a
/// second is rounded *down*, so a principal never outlives the credential that proved it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use portcullis_core::{AuthMethod, Principal, PrincipalKind};
/// let alice = Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
///     .group("deployers")
///     .expires_at(UNIX_EPOCH + Duration::from_secs(1_000))
///     .build()?;
/// assert!(alice.in_group("deployers"));
/// assert!(alice.is_expired_at(UNIX_EPOCH + Duration::from_secs(1_000)));
/// assert_eq!(alice.to_string(), "user:alice");
/// # Ok::<(), portcullis_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PrincipalJson", into = "PrincipalJson")]
pub struct Principal {
    subject: String,
    kind: PrincipalKind,
    groups: BTreeSet<String>,
    auth_method: AuthMethod,
    expires_at: Option<SystemTime>,
    claims: BTreeMap<String, serde_json::Value>,
}

impl Principal {
    /// Starts building a principal; [`PrincipalBuilder::build`] validates it.
    pub fn builder(
        kind: PrincipalKind,
        subject: impl Into<String>,
        auth_method: AuthMethod,
    ) -> PrincipalBuilder {
        PrincipalBuilder {
            subject: subject.into(),
            kind,
            groups: Vec::new(),
            auth_method,
            expires_at: None,
            claims: BTreeMap::new(),
        }
    }

    /// Parses the JSON form (see the type docs).
    ///
    /// # Errors
    ///
    /// [`Error::Json`] with the parser's or validator's message.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        serde_json::from_str(json).map_err(|err| Error::json("principal", &err))
    }

    /// The subject id: a user name, a service name, or a script token's name.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// What sort of party this is.
    #[must_use]
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The groups (teams) this principal belongs to, in sorted order.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.groups.iter().map(String::as_str)
    }

    /// Whether this principal belongs to `group` (exact, case-sensitive match).
    #[must_use]
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }

    /// How this principal proved who it is.
    #[must_use]
    pub fn auth_method(&self) -> &AuthMethod {
        &self.auth_method
    }

    /// When this principal stops being valid, if ever.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Whether this principal has expired at `now` (it is expired *at* its expiry instant).
    #[must_use]
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|expiry| now >= expiry)
    }

    /// Whether this principal has expired by `clock`'s time.
    #[must_use]
    pub fn is_expired(&self, clock: &dyn Clock) -> bool {
        self.is_expired_at(clock.now())
    }

    /// How long this principal stays valid after `now`: `None` if it never expires,
    /// `Some(Duration::ZERO)` if it already has.
    #[must_use]
    pub fn remaining_at(&self, now: SystemTime) -> Option<Duration> {
        self.expires_at
            .map(|expiry| expiry.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// One extra claim by name.
    #[must_use]
    pub fn claim(&self, name: &str) -> Option<&serde_json::Value> {
        self.claims.get(name)
    }

    /// All extra claims, sorted by name.
    #[must_use]
    pub fn claims(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.claims
    }
}

/// `kind:subject`, e.g. `user:alice`, for logs and reasons.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.subject)
    }
}

/// Collects the parts of a [`Principal`]; [`build`](PrincipalBuilder::build) validates them.
#[derive(Debug, Clone)]
#[must_use]
pub struct PrincipalBuilder {
    subject: String,
    kind: PrincipalKind,
    groups: Vec<String>,
    auth_method: AuthMethod,
    expires_at: Option<SystemTime>,
    claims: BTreeMap<String, serde_json::Value>,
}

impl PrincipalBuilder {
    /// Adds one group (team) membership.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    /// Adds several group memberships; duplicates collapse.
    pub fn groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    /// Sets the expiry (rounded down to a whole second).
    pub fn expires_at(mut self, expiry: SystemTime) -> Self {
        self.expires_at = Some(expiry);
        self
    }

    /// Adds an extra claim; a later claim of the same name replaces an earlier one.
    pub fn claim(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// Validates and builds the principal.
    ///
    /// # Errors
    ///
    /// If the subject, a group name or a claim name is empty, longer than 256 bytes, or has
    /// whitespace or control characters.
    pub fn build(self) -> Result<Principal, Error> {
        validate_name(Field::Subject, &self.subject)?;
        for group in &self.groups {
            validate_name(Field::Group, group)?;
        }
        for name in self.claims.keys() {
            validate_name(Field::ClaimName, name)?;
        }
        Ok(Principal {
            subject: self.subject,
            kind: self.kind,
            groups: self.groups.into_iter().collect(),
            auth_method: self.auth_method,
            expires_at: self.expires_at.map(floor_to_second),
            claims: self.claims,
        })
    }
}

/// Rounds down to a whole second since the epoch; instants before the epoch become the
/// epoch (long expired either way).
fn floor_to_second(time: SystemTime) -> SystemTime {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The serialized form of a [`Principal`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalJson {
    subject: String,
    kind: PrincipalKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    auth_method: AuthMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    claims: BTreeMap<String, serde_json::Value>,
}

impl TryFrom<PrincipalJson> for Principal {
    type Error = Error;

    fn try_from(json: PrincipalJson) -> Result<Self, Self::Error> {
        let mut builder =
            Principal::builder(json.kind, json.subject, json.auth_method).groups(json.groups);
        if let Some(secs) = json.expires_at {
            let expiry = UNIX_EPOCH
                .checked_add(Duration::from_secs(secs))
                .ok_or_else(|| Error::Json {
                    what: "principal",
                    message: format!("expires_at {secs} is beyond the representable time"),
                })?;
            builder = builder.expires_at(expiry);
        }
        builder.claims = json.claims;
        builder.build()
    }
}

impl From<Principal> for PrincipalJson {
    fn from(principal: Principal) -> Self {
        PrincipalJson {
            subject: principal.subject,
            kind: principal.kind,
            groups: principal.groups.into_iter().collect(),
            auth_method: principal.auth_method,
            expires_at: principal.expires_at.map(|expiry| {
                expiry
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs())
            }),
            claims: principal.claims,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alice() -> PrincipalBuilder {
        Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
    }

    #[test]
    fn builder_validates_every_part() {
        assert!(alice().build().is_ok());
        assert!(matches!(
            Principal::builder(PrincipalKind::User, "", AuthMethod::OIDC).build(),
            Err(Error::Empty {
                field: Field::Subject
            })
        ));
        assert!(matches!(
            alice().group("team a").build(),
            Err(Error::InvalidChar {
                field: Field::Group,
                ..
            })
        ));
        assert!(matches!(
            alice().claim("", json!(1)).build(),
            Err(Error::Empty {
                field: Field::ClaimName
            })
        ));
    }

    #[test]
    fn expiry_is_inclusive_and_rounded_down() {
        let at = UNIX_EPOCH + Duration::from_millis(10_900);
        let p = alice().expires_at(at).build().unwrap();
        assert_eq!(p.expires_at(), Some(UNIX_EPOCH + Duration::from_secs(10)));
        assert!(!p.is_expired_at(UNIX_EPOCH + Duration::from_millis(9_999)));
        assert!(p.is_expired_at(UNIX_EPOCH + Duration::from_secs(10)));
        assert_eq!(
            p.remaining_at(UNIX_EPOCH + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            p.remaining_at(UNIX_EPOCH + Duration::from_secs(40)),
            Some(Duration::ZERO)
        );
        let forever = alice().build().unwrap();
        assert!(!forever.is_expired_at(SystemTime::now()));
        assert_eq!(forever.remaining_at(SystemTime::now()), None);
    }

    #[test]
    fn expiry_uses_the_clock() {
        let clock = crate::ManualClock::new(UNIX_EPOCH + Duration::from_secs(5));
        let p = alice()
            .expires_at(UNIX_EPOCH + Duration::from_secs(10))
            .build()
            .unwrap();
        assert!(!p.is_expired(&clock));
        clock.advance(Duration::from_secs(5));
        assert!(p.is_expired(&clock));
    }

    #[test]
    fn json_form_is_stable() {
        let p = alice()
            .groups(["eng", "deployers", "eng"])
            .expires_at(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
            .claim("email", json!("alice@example.org"))
            .build()
            .unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            json!({"subject":"alice","kind":"user","groups":["deployers","eng"],
                   "auth_method":"oidc","expires_at":1_767_225_600_u64,
                   "claims":{"email":"alice@example.org"}})
        );
        assert_eq!(Principal::from_json(&json.to_string()).unwrap(), p);
        let minimal = r#"{"subject":"ci","kind":"script_token","auth_method":"script_token"}"#;
        let ci = Principal::from_json(minimal).unwrap();
        assert_eq!(ci.to_string(), "script_token:ci");
        assert_eq!(ci.groups().len(), 0);
    }

    #[test]
    fn json_rejects_bad_principals() {
        for (json, needle) in [
            (
                r#"{"subject":"a","kind":"robot","auth_method":"oidc"}"#,
                "unknown variant",
            ),
            (
                r#"{"subject":"a b","kind":"user","auth_method":"oidc"}"#,
                "principal subject",
            ),
            (
                r#"{"subject":"a","kind":"user","auth_method":"o idc"}"#,
                "authentication method",
            ),
            (
                r#"{"subject":"a","kind":"user","auth_method":"oidc","admin":true}"#,
                "unknown field",
            ),
            (r#"{"subject":"a","kind":"user"}"#, "auth_method"),
            (
                r#"{"subject":"a","kind":"user","auth_method":"oidc","expires_at":18446744073709551615}"#,
                "beyond",
            ),
        ] {
            let err = Principal::from_json(json).unwrap_err();
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn principal_kind_parses_case_insensitively() {
        assert_eq!(
            "USER".parse::<PrincipalKind>().unwrap(),
            PrincipalKind::User
        );
        assert_eq!(
            "script_token".parse::<PrincipalKind>().unwrap(),
            PrincipalKind::ScriptToken
        );
        assert!("robot".parse::<PrincipalKind>().is_err());
    }
}
