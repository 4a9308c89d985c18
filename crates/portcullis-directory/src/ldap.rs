//! [`LdapDirectory`]: people, groups and service accounts in LDAP (OpenLDAP, Active
//! Directory), on `ldap3` with rustls.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ldap3::{
    LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, dn_escape, ldap_escape,
};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{Directory, DirectoryError, DirectoryUser, Password};

/// LDAP result code for a failed simple bind.
const INVALID_CREDENTIALS: u32 = 49;
/// The longest user name sent to the directory.
const MAX_NAME: usize = 256;
/// At most this many groups are read for one user (nested groups included).
const MAX_GROUPS: usize = 1000;
/// Nested groups are followed this deep.
const MAX_NESTING: usize = 8;

/// How a user's groups are found.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum GroupMembership {
    /// Read an attribute of the user's entry holding group DNs (`memberOf`, kept by
    /// Active Directory and OpenLDAP's memberof overlay).
    MemberOf {
        /// The attribute (default `memberOf`).
        #[serde(default = "member_of")]
        attribute: String,
    },
    /// Search group entries whose member attribute holds the user's DN (`groupOfNames`).
    Search {
        /// Where the groups are (`ou=groups,dc=example,dc=org`).
        base: String,
        /// The member attribute (default `member`).
        #[serde(default = "member")]
        member_attribute: String,
        /// The group object class (default `groupOfNames`).
        #[serde(default = "group_of_names")]
        object_class: String,
    },
}

fn member_of() -> String {
    "memberOf".into()
}
fn member() -> String {
    "member".into()
}
fn group_of_names() -> String {
    "groupOfNames".into()
}

/// Settings of an [`LdapDirectory`].
///
/// ```toml
/// url = "ldaps://ldap.example.org"
/// bind_dn = "cn=reader,ou=services,dc=example,dc=org"
/// bind_password_env = "LDAP_READER_PASSWORD"
/// user_base = "ou=people,dc=example,dc=org"
/// user_attribute = "uid"                 # the login name
/// groups = { type = "search", base = "ou=groups,dc=example,dc=org" }
/// nested_groups = true
/// service_base = "ou=services,dc=example,dc=org"
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade `ldap://` with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// The service account that searches (absent: anonymous searches).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// Its password (set directly, or read from `bind_password_env` by
    /// [`LdapConfig::from_toml`]). Never shown by `Debug`.
    #[serde(skip)]
    pub bind_password: Option<Password>,
    /// The environment variable holding the service account's password.
    #[serde(default)]
    pub bind_password_env: Option<String>,
    /// Where people are.
    pub user_base: String,
    /// The attribute holding the login name (default `uid`; `sAMAccountName` in AD).
    #[serde(default = "uid")]
    pub user_attribute: String,
    /// Bind directly as this DN, `{user}` replaced by the DN-escaped login name, instead of
    /// searching for the user first (`uid={user},ou=people,dc=example,dc=org`).
    #[serde(default)]
    pub user_dn_template: Option<String>,
    /// The attribute with a human-readable name (default `cn`).
    #[serde(default = "cn")]
    pub display_name_attribute: String,
    /// How groups are found.
    pub groups: GroupMembership,
    /// The attribute naming a group (default `cn`).
    #[serde(default = "cn")]
    pub group_name_attribute: String,
    /// Also count the groups that contain the user's groups (with [`GroupMembership::Search`]).
    #[serde(default)]
    pub nested_groups: bool,
    /// Where service accounts are (absent: there are none).
    #[serde(default)]
    pub service_base: Option<String>,
    /// Seconds to wait for a connection (default 5).
    #[serde(default = "five")]
    pub connect_timeout_seconds: u64,
    /// Seconds to wait for one operation (default 5).
    #[serde(default = "five")]
    pub operation_timeout_seconds: u64,
    /// Service connections kept open (default 4).
    #[serde(default = "four")]
    pub pool_size: usize,
}

fn uid() -> String {
    "uid".into()
}
fn cn() -> String {
    "cn".into()
}
fn five() -> u64 {
    5
}
fn four() -> usize {
    4
}

impl fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapConfig")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("bind_dn", &self.bind_dn)
            .field(
                "bind_password",
                &self.bind_password.as_ref().map(|_| "<redacted>"),
            )
            .field("user_base", &self.user_base)
            .field("user_attribute", &self.user_attribute)
            .field("user_dn_template", &self.user_dn_template)
            .field("groups", &self.groups)
            .field("nested_groups", &self.nested_groups)
            .field("service_base", &self.service_base)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl LdapConfig {
    /// Parses the TOML form and reads `bind_password_env`.
    ///
    /// # Errors
    ///
    /// [`DirectoryError::Config`] for invalid TOML or an unset password variable.
    pub fn from_toml(text: &str) -> Result<Self, DirectoryError> {
        let mut config: LdapConfig =
            toml::from_str(text).map_err(|e| DirectoryError::Config(e.to_string()))?;
        if let Some(var) = &config.bind_password_env {
            let value = std::env::var(var).map_err(|_| {
                DirectoryError::Config(format!("environment variable `{var}` is not set"))
            })?;
            config.bind_password = Some(Password::new(value)?);
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), DirectoryError> {
        let bad = |m: &str| Err(DirectoryError::Config(m.to_owned()));
        if !(self.url.starts_with("ldap://") || self.url.starts_with("ldaps://")) {
            return bad("url must start with ldap:// or ldaps://");
        }
        // As ldap3 will parse it: a URL without a host (`ldaps://`, `ldaps:///`, `ldaps://@`)
        // would otherwise be accepted here and panic inside ldap3 at the first login.
        match url::Url::parse(&self.url) {
            Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => {}
            Ok(_) => return bad("url must name the directory's host (ldap://HOST[:PORT])"),
            Err(e) => return Err(DirectoryError::Config(format!("url: {e}"))),
        }
        if self.user_base.is_empty() || self.user_attribute.is_empty() {
            return bad("user_base and user_attribute are required");
        }
        if let Some(t) = &self.user_dn_template
            && !t.contains("{user}")
        {
            return bad("user_dn_template must contain {user}");
        }
        if self.bind_dn.is_some() != self.bind_password.is_some() {
            return bad("bind_dn and its password go together");
        }
        if self.pool_size == 0 || self.pool_size > 64 {
            return bad("pool_size must be between 1 and 64");
        }
        if self.connect_timeout_seconds == 0 || self.operation_timeout_seconds == 0 {
            return bad("timeouts must be at least one second");
        }
        if self.connect_timeout_seconds > 300 || self.operation_timeout_seconds > 300 {
            return bad("timeouts must be at most 300 seconds");
        }
        Ok(())
    }
}

/// Login names the directory never sees: empty, too long, control characters or NUL.
fn check_name(name: &str) -> Result<(), DirectoryError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(DirectoryError::InvalidInput {
            what: "user name",
            reason: format!("1 to {MAX_NAME} characters without control characters"),
        });
    }
    Ok(())
}

/// How the directory spells `typed` in `entry`'s `attribute` (see `LdapDirectory::user_of`).
fn canonical_name(entry: &SearchEntry, attribute: &str, typed: &str) -> String {
    // Attribute names are case-insensitive too: the server may answer "UID" for "uid".
    let values: Vec<&String> = entry
        .attrs
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(attribute))
        .flat_map(|(_, values)| values)
        .collect();
    if let Some(exact) = values.iter().find(|v| v.as_str() == typed) {
        return (*exact).clone();
    }
    let folded = typed.to_lowercase();
    if let Some(value) = values.iter().find(|v| v.to_lowercase() == folded) {
        return (*value).clone();
    }
    match values.as_slice() {
        [only] => (*only).clone(),
        // No value to take (the server withheld the attribute): the entry was matched by
        // its name, so the typed spelling is the one the directory accepted.
        _ => typed.to_owned(),
    }
}

fn unavailable(err: &LdapError) -> DirectoryError {
    DirectoryError::Unavailable(err.to_string())
}

/// One service connection; `None` once it failed, so the next use reconnects.
type Slot = Mutex<Option<ldap3::Ldap>>;

/// A [`Directory`] in LDAP.
///
/// - **Login**: the user's entry is found by `(user_attribute=<escaped name>)` under
///   `user_base` (or its DN built from `user_dn_template` with the name DN-escaped), then a
///   fresh connection binds as that DN with the password. An empty password is refused before
///   anything is sent (LDAP would treat it as an anonymous bind). Unknown user and wrong
///   password are the same error.
/// - **Groups**: the `memberOf` attribute, or a search of group entries naming the user's DN;
///   optionally nested, to a bounded depth.
/// - **Connections**: a small pool of service connections (bound as `bind_dn`), each replaced
///   when it fails, so the directory recovers by itself after an LDAP restart; every operation
///   has a timeout.
///
/// Every value put into a filter is escaped (RFC 4515) and every value put into a DN is
/// escaped (RFC 4514), so `*`, `)(`, `\` or NUL in a name match nothing but themselves.
pub struct LdapDirectory {
    config: Arc<LdapConfig>,
    /// The TLS client configuration for `ldaps://` and StartTLS, on aws-lc-rs, built once.
    tls: Arc<rustls::ClientConfig>,
    pool: Vec<Slot>,
    next: AtomicUsize,
}

/// rustls on aws-lc-rs (the workspace's one crypto stack) with the system's root
/// certificates, passed to ldap3 explicitly: ldap3's own configuration asks rustls for the
/// process-level provider, which panics when the final graph enables a second one (ring,
/// which an embedder's other dependencies may bring).
fn tls_config() -> Result<rustls::ClientConfig, DirectoryError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    // Certificates the store cannot parse are skipped, as ldap3 does.
    let _ = roots.add_parsable_certificates(native.certs);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LdapDirectory {
    /// A directory over `config`. Connections are opened on first use.
    ///
    /// # Errors
    ///
    /// [`DirectoryError::Config`] for an invalid configuration.
    pub fn new(config: LdapConfig) -> Result<Self, DirectoryError> {
        config.validate()?;
        let pool = (0..config.pool_size).map(|_| Mutex::new(None)).collect();
        Ok(LdapDirectory {
            config: Arc::new(config),
            tls: Arc::new(tls_config()?),
            pool,
            next: AtomicUsize::new(0),
        })
    }

    fn operation_timeout(&self) -> Duration {
        Duration::from_secs(self.config.operation_timeout_seconds)
    }

    /// A new connection, not bound.
    async fn connect(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(self.config.connect_timeout_seconds))
            .set_starttls(self.config.starttls)
            .set_config(self.tls.clone());
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|e| unavailable(&e))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// A new connection bound as the service account.
    async fn service_connection(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let mut ldap = self.connect().await?;
        if let (Some(dn), Some(password)) = (&self.config.bind_dn, &self.config.bind_password) {
            let result = ldap
                .with_timeout(self.operation_timeout())
                .simple_bind(dn, password.expose())
                .await
                .map_err(|e| unavailable(&e))?;
            if result.rc != 0 {
                return Err(DirectoryError::Config(format!(
                    "the service account could not bind: {result}"
                )));
            }
        }
        Ok(ldap)
    }

    /// Searches with a pooled service connection; a connection that fails is dropped and
    /// the search tried once more on a new one.
    async fn search(
        &self,
        base: &str,
        filter: &str,
        attributes: &[&str],
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len().max(1);
        let Some(slot) = self.pool.get(index) else {
            return Err(DirectoryError::Config(
                "the connection pool is empty".into(),
            ));
        };
        let mut slot = slot.lock().await;
        let mut last = None;
        for _attempt in 0..2 {
            let mut ldap = match slot.take() {
                Some(ldap) => ldap,
                None => self.service_connection().await?,
            };
            let outcome = ldap
                .with_timeout(self.operation_timeout())
                .search(base, Scope::Subtree, filter, attributes.to_vec())
                .await;
            match outcome {
                Ok(result) => {
                    // A well-formed answer keeps the connection, whatever its result code.
                    *slot = Some(ldap);
                    return match result.success() {
                        Ok((entries, _)) => {
                            Ok(entries.into_iter().map(SearchEntry::construct).collect())
                        }
                        // No such base: nothing is there.
                        Err(LdapError::LdapResult { result }) if result.rc == 32 => Ok(Vec::new()),
                        Err(err) => Err(unavailable(&err)),
                    };
                }
                Err(err) => last = Some(unavailable(&err)),
            }
        }
        Err(last.unwrap_or_else(|| DirectoryError::Unavailable("LDAP search failed".into())))
    }

    /// The entry of login name `user`, if exactly one exists.
    async fn find_user(&self, user: &str) -> Result<Option<SearchEntry>, DirectoryError> {
        check_name(user)?;
        let c = &self.config;
        let filter = format!("({}={})", c.user_attribute, ldap_escape(user));
        let mut attributes = vec![c.user_attribute.as_str(), c.display_name_attribute.as_str()];
        if let GroupMembership::MemberOf { attribute } = &c.groups {
            attributes.push(attribute);
        }
        let mut entries = self.search(&c.user_base, &filter, &attributes).await?;
        if entries.len() != 1 {
            return Ok(None);
        }
        Ok(entries.pop())
    }

    /// The names of the groups `entry` belongs to.
    async fn groups_of_entry(&self, entry: &SearchEntry) -> Result<Vec<String>, DirectoryError> {
        let c = &self.config;
        let mut names = Vec::new();
        match &c.groups {
            GroupMembership::MemberOf { attribute } => {
                for dn in entry.attrs.get(attribute).into_iter().flatten() {
                    if let Some(name) = rdn_value(dn, &c.group_name_attribute) {
                        names.push(name);
                    }
                }
            }
            GroupMembership::Search {
                base,
                member_attribute,
                object_class,
            } => {
                let mut frontier = vec![entry.dn.clone()];
                let mut seen = std::collections::BTreeSet::new();
                for _depth in 0..MAX_NESTING {
                    let mut next = Vec::new();
                    for dn in &frontier {
                        let filter = format!(
                            "(&(objectClass={})({}={}))",
                            ldap_escape(object_class.as_str()),
                            member_attribute,
                            ldap_escape(dn.as_str())
                        );
                        let groups = self
                            .search(base, &filter, &[c.group_name_attribute.as_str()])
                            .await?;
                        for group in groups {
                            if seen.insert(group.dn.clone()) {
                                if let Some(name) = group
                                    .attrs
                                    .get(&c.group_name_attribute)
                                    .and_then(|v| v.first())
                                {
                                    names.push(name.clone());
                                }
                                next.push(group.dn);
                            }
                        }
                        if seen.len() > MAX_GROUPS {
                            return Err(DirectoryError::Unavailable(format!(
                                "more than {MAX_GROUPS} groups; refusing to guess"
                            )));
                        }
                    }
                    if !c.nested_groups || next.is_empty() {
                        break;
                    }
                    frontier = next;
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The user of `entry`, named as the directory spells it.
    ///
    /// LDAP matches `uid` (and most naming attributes) without regard to case, so the entry
    /// found for "ALICE" is alice's. Naming the user as typed would make each spelling a
    /// principal of its own — with its own roles, its own failed-login count and, under
    /// four-eyes, a second person to approve one's own request. The name is the entry's
    /// value of `user_attribute` that matches the typed one (exactly, else ignoring case),
    /// or its only value.
    fn user_of(&self, entry: &SearchEntry, name: &str, groups: Vec<String>) -> DirectoryUser {
        DirectoryUser {
            name: canonical_name(entry, &self.config.user_attribute, name),
            display_name: entry
                .attrs
                .get(&self.config.display_name_attribute)
                .and_then(|v| v.first())
                .cloned(),
            groups,
        }
    }

    /// Binds as `dn` with `password` on a fresh connection.
    async fn bind_as(&self, dn: &str, password: &Password) -> Result<bool, DirectoryError> {
        let mut ldap = self.connect().await?;
        let result = ldap
            .with_timeout(self.operation_timeout())
            .simple_bind(dn, password.expose())
            .await
            .map_err(|e| unavailable(&e))?;
        let _ = ldap.unbind().await;
        match result.rc {
            0 => Ok(true),
            INVALID_CREDENTIALS => Ok(false),
            _ => Err(DirectoryError::Unavailable(format!(
                "bind failed: {result}"
            ))),
        }
    }
}

/// The value of the first RDN of `dn` when its attribute is `attribute`
/// (`cn=deployers,ou=groups,…` → `deployers`), unescaped.
fn rdn_value(dn: &str, attribute: &str) -> Option<String> {
    let (name, rest) = dn.split_once('=')?;
    if !name.trim().eq_ignore_ascii_case(attribute) {
        return None;
    }
    let mut value = Vec::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            ',' | '+' => break,
            '\\' => {
                let first = chars.next()?;
                if first.is_ascii_hexdigit() {
                    let second = chars.next()?;
                    let pair = [u8::try_from(first).ok()?, u8::try_from(second).ok()?];
                    let byte = u8::from_str_radix(std::str::from_utf8(&pair).ok()?, 16).ok()?;
                    value.push(byte);
                } else {
                    let mut buf = [0u8; 4];
                    value.extend_from_slice(first.encode_utf8(&mut buf).as_bytes());
                }
            }
            c => {
                let mut buf = [0u8; 4];
                value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    let value = String::from_utf8(value).ok()?;
    (!value.is_empty()).then_some(value)
}

#[async_trait]
impl Directory for LdapDirectory {
    async fn authenticate(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<DirectoryUser, DirectoryError> {
        check_name(user)?;
        // An empty password is an "unauthenticated bind" in LDAP, which servers accept.
        if password.expose().is_empty() {
            return Err(DirectoryError::InvalidCredentials);
        }
        let entry = match &self.config.user_dn_template {
            Some(template) => {
                let dn = template.replace("{user}", &dn_escape(user));
                if !self.bind_as(&dn, password).await? {
                    return Err(DirectoryError::InvalidCredentials);
                }
                self.find_user(user).await?
            }
            None => {
                let Some(entry) = self.find_user(user).await? else {
                    return Err(DirectoryError::InvalidCredentials);
                };
                if !self.bind_as(&entry.dn, password).await? {
                    return Err(DirectoryError::InvalidCredentials);
                }
                Some(entry)
            }
        };
        let Some(entry) = entry else {
            return Err(DirectoryError::InvalidCredentials);
        };
        let groups = self.groups_of_entry(&entry).await?;
        Ok(self.user_of(&entry, user, groups))
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<String>, DirectoryError> {
        let entry = self
            .find_user(user)
            .await?
            .ok_or_else(|| DirectoryError::UnknownUser(user.to_owned()))?;
        self.groups_of_entry(&entry).await
    }

    async fn service_account(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        check_name(name)?;
        let Some(base) = &self.config.service_base else {
            return Ok(None);
        };
        let c = &self.config;
        let filter = format!("({}={})", c.user_attribute, ldap_escape(name));
        let mut entries = self
            .search(
                base,
                &filter,
                &[c.user_attribute.as_str(), c.display_name_attribute.as_str()],
            )
            .await?;
        if entries.len() != 1 {
            return Ok(None);
        }
        let Some(entry) = entries.pop() else {
            return Ok(None);
        };
        let groups = self.groups_of_entry(&entry).await?;
        Ok(Some(self.user_of(&entry, name, groups)))
    }
}

#[cfg(test)]
mod tests {
    use super::{SearchEntry, canonical_name, rdn_value};

    fn entry(attribute: &str, values: &[&str]) -> SearchEntry {
        SearchEntry {
            dn: "uid=x,ou=people,dc=x".into(),
            attrs: [(
                attribute.to_owned(),
                values.iter().map(|v| (*v).to_owned()).collect(),
            )]
            .into(),
            bin_attrs: std::collections::HashMap::new(),
        }
    }

    #[test]
    fn names_are_spelled_as_the_directory_spells_them() {
        assert_eq!(
            canonical_name(&entry("uid", &["alice"]), "uid", "ALICE"),
            "alice"
        );
        assert_eq!(
            canonical_name(&entry("UID", &["alice"]), "uid", "Alice"),
            "alice"
        );
        // Several names: the one that was typed, exactly or else ignoring case.
        let two = entry("uid", &["Alice", "alice.anders"]);
        assert_eq!(canonical_name(&two, "uid", "ALICE.ANDERS"), "alice.anders");
        assert_eq!(canonical_name(&two, "uid", "Alice"), "Alice");
        assert_eq!(canonical_name(&entry("uid", &["Ærø"]), "uid", "æRØ"), "Ærø");
        // Withheld attribute: the spelling the directory matched.
        assert_eq!(
            canonical_name(&entry("cn", &["Alice"]), "uid", "alice"),
            "alice"
        );
    }

    #[test]
    fn urls_without_a_host_are_configuration_errors() {
        for url in [
            "ldaps://",
            "ldaps:///",
            "ldaps://@",
            "ldap://:389",
            "ldap://[::1",
        ] {
            let config = super::LdapConfig::from_toml(&format!(
                "url = \"{url}\"\nuser_base = \"dc=x\"\ngroups = {{ type = \"member_of\" }}\n"
            ))
            .and_then(super::LdapDirectory::new);
            assert!(
                matches!(config, Err(crate::DirectoryError::Config(_))),
                "{url}: {config:?}"
            );
        }
        for url in [
            "ldap://127.0.0.1:389",
            "ldaps://ldap.example.org",
            "ldap://[::1]:389",
        ] {
            let config = super::LdapConfig::from_toml(&format!(
                "url = \"{url}\"\nuser_base = \"dc=x\"\ngroups = {{ type = \"member_of\" }}\n"
            ))
            .and_then(super::LdapDirectory::new);
            assert!(config.is_ok(), "{url}: {config:?}");
        }
    }

    #[test]
    fn rdn_values() {
        assert_eq!(
            rdn_value("cn=deployers,ou=groups,dc=x", "cn").as_deref(),
            Some("deployers")
        );
        assert_eq!(
            rdn_value("CN=Deploy Team,OU=g", "cn").as_deref(),
            Some("Deploy Team")
        );
        assert_eq!(rdn_value("cn=a\\,b,ou=g", "cn").as_deref(), Some("a,b"));
        assert_eq!(rdn_value("cn=a\\5cb,ou=g", "cn").as_deref(), Some("a\\b"));
        assert_eq!(rdn_value("ou=x,dc=y", "cn"), None);
        assert_eq!(rdn_value("cn=,ou=g", "cn"), None);
        assert_eq!(rdn_value("cn=a\\", "cn"), None);
        assert_eq!(
            rdn_value("cn=caf\\c3\\a9,ou=g", "cn").as_deref(),
            Some("café")
        );
    }
}
