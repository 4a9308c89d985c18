//! HMAC of sensitive fields, so the log itself leaks no secrets yet can still answer "was
//! this value ever used here?" to someone holding the key.

use std::fmt;

use aws_lc_rs::hmac;
use serde_json::Value;

use crate::AuditError;

/// The prefix of a redacted value.
pub const HMAC_PREFIX: &str = "hmac-sha256:";

/// Replaces the values at configured paths of an event's JSON with
/// `hmac-sha256:<hex>` under a per-log key. `Debug` never shows the key.
///
/// Paths are dotted, from the event's top level: `request.parameters.token`,
/// `fields.password`.
///
/// ```
/// use portcullis_audit::Redactor;
/// use serde_json::json;
/// let redactor = Redactor::new(b"a per-log secret key of 32 bytes", ["fields.token"])?;
/// let mut event = json!({"fields": {"token": "s3cr3t", "env": "prod"}});
/// redactor.apply(&mut event);
/// let stored = event["fields"]["token"].as_str().unwrap();
/// assert!(stored.starts_with("hmac-sha256:"));
/// assert!(redactor.matches(stored, &json!("s3cr3t")));
/// assert_eq!(event["fields"]["env"], "prod");
/// # Ok::<(), portcullis_audit::AuditError>(())
/// ```
pub struct Redactor {
    key: hmac::Key,
    paths: Vec<Vec<String>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("key", &"<redacted>")
            .field("paths", &self.paths)
            .finish()
    }
}

impl Redactor {
    /// A redactor with `key` (at least 16 bytes) for `paths`.
    ///
    /// # Errors
    ///
    /// [`AuditError::Invalid`] for a short key, a path with an empty segment, or the path
    /// `id` (the event's id is what records are found by, and what a database log's `id`
    /// column holds: verification checks that column against the record).
    pub fn new<I, S>(key: &[u8], paths: I) -> Result<Self, AuditError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if key.len() < 16 {
            return Err(AuditError::Invalid(
                "the HMAC key must be at least 16 bytes".into(),
            ));
        }
        let paths = paths
            .into_iter()
            .map(|p| {
                let parts: Vec<String> = p.as_ref().split('.').map(str::to_owned).collect();
                if parts.iter().any(String::is_empty) {
                    Err(AuditError::Invalid(format!(
                        "redaction path `{}` has an empty segment",
                        p.as_ref()
                    )))
                } else if parts == ["id"] {
                    Err(AuditError::Invalid(
                        "the event `id` cannot be redacted: records are found by it, and a \
                         database log indexes it beside the record (redact fields that hold \
                         secrets; an id is a random UUID)"
                            .into(),
                    ))
                } else {
                    Ok(parts)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Redactor {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            paths,
        })
    }

    /// The stored form of `value`: `hmac-sha256:` and the HMAC of its canonical JSON.
    #[must_use]
    pub fn fingerprint(&self, value: &Value) -> String {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        let tag = hmac::sign(&self.key, &bytes);
        format!("{HMAC_PREFIX}{}", hex::encode(tag.as_ref()))
    }

    /// Whether `stored` is the fingerprint of `value` (constant-time comparison).
    #[must_use]
    pub fn matches(&self, stored: &str, value: &Value) -> bool {
        let Some(tag) = stored
            .strip_prefix(HMAC_PREFIX)
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        hmac::verify(&self.key, &bytes, &tag).is_ok()
    }

    /// Replaces every configured path present in `event` with its fingerprint.
    pub fn apply(&self, event: &mut Value) {
        for path in &self.paths {
            if let Some(slot) = lookup_mut(event, path) {
                *slot = Value::String(self.fingerprint(slot));
            }
        }
    }
}

fn lookup_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(value, |current, key| current.as_object_mut()?.get_mut(key))
}

/// The value at a dotted path of `value`.
pub(crate) fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |current, key| current.as_object()?.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database log's `id` column is the caller's id, checked against the record by
    /// verification: a redacted id would never match it.
    #[test]
    fn the_event_id_cannot_be_redacted() {
        let key = b"a per-log key of enough bytes";
        let err = Redactor::new(key, ["fields.token", "id"]).unwrap_err();
        assert!(
            matches!(&err, AuditError::Invalid(why) if why.contains("`id`")),
            "{err}"
        );
        assert!(Redactor::new(key, ["outcome_of", "fields.id", "request.parameters.id"]).is_ok());
    }
}
