//! Hosts' reports in OPA's status API shape (`POST /status`): which revision of each
//! bundle is active, and the last error.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::DeliveryError;

/// The largest report body read.
pub const MAX_STATUS_BYTES: usize = 256 * 1024;
/// The most bundles one report may name.
pub const MAX_BUNDLES: usize = 256;
/// Longer names, revisions and messages are refused (names, revisions) or cut (messages).
pub const MAX_FIELD: usize = 1024;

/// One bundle's state as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    /// The bundle's name.
    pub name: String,
    /// The revision the host has active (OPA's `active_revision`; for bundles from this
    /// server, the manifest's revision).
    pub active_revision: Option<String>,
    /// OPA's `code: message` of the last failure, if any (cut to [`MAX_FIELD`]).
    pub error: Option<String>,
}

/// A parsed status report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusReport {
    /// The bundles reported, by name.
    pub bundles: Vec<BundleReport>,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    bundles: Option<BTreeMap<String, WireBundle>>,
}

#[derive(Deserialize)]
struct WireBundle {
    #[serde(default)]
    active_revision: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<Vec<Value>>,
}

/// `text` cut to [`MAX_FIELD`] bytes, with every character unfit for a one-line label
/// ([`portcullis_core::is_unfit_for_label`]: controls, bidi overrides, line breaks…) shown
/// as U+FFFD: a host's error message is kept, but cannot rewrite what is shown around it.
fn cut(text: &str) -> String {
    // Replaced first, then cut: U+FFFD is longer than the control character it replaces.
    let shown: String = text
        .chars()
        .map(|c| {
            if portcullis_core::is_unfit_for_label(c) {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect();
    let mut end = shown.len().min(MAX_FIELD);
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    shown.get(..end).unwrap_or_default().to_owned()
}

fn plain(what: &str, text: &str) -> Result<(), DeliveryError> {
    if text.len() > MAX_FIELD || text.chars().any(portcullis_core::is_unfit_for_label) {
        return Err(DeliveryError::Status(format!(
            "{what} is longer than {MAX_FIELD} bytes or has hidden characters, line breaks \
             or spaces other than U+0020"
        )));
    }
    Ok(())
}

impl StatusReport {
    /// Parses an OPA status report (JSON; other fields — labels, plugins, metrics — are
    /// accepted and ignored).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Status`] for a body over [`MAX_STATUS_BYTES`], invalid JSON, a
    /// `bundles` that is not an object of objects, more than [`MAX_BUNDLES`] bundles, or a
    /// name or revision over [`MAX_FIELD`] bytes or with control characters.
    pub fn parse(body: &[u8]) -> Result<StatusReport, DeliveryError> {
        if body.len() > MAX_STATUS_BYTES {
            return Err(DeliveryError::Status(format!(
                "the body is larger than {MAX_STATUS_BYTES} bytes"
            )));
        }
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| DeliveryError::Status(format!("not OPA's status shape: {e}")))?;
        let bundles = wire.bundles.unwrap_or_default();
        if bundles.len() > MAX_BUNDLES {
            return Err(DeliveryError::Status(format!(
                "{} bundles reported, at most {MAX_BUNDLES} are accepted",
                bundles.len()
            )));
        }
        let mut report = StatusReport::default();
        for (name, bundle) in bundles {
            plain("a bundle name", &name)?;
            if let Some(revision) = &bundle.active_revision {
                plain("an active_revision", revision)?;
            }
            let error = match (&bundle.code, &bundle.message) {
                (None, None) => bundle
                    .errors
                    .as_ref()
                    .and_then(|e| e.first())
                    .map(|e| cut(&e.to_string())),
                (code, message) => Some(cut(&format!(
                    "{}: {}",
                    code.as_deref().unwrap_or("error"),
                    message.as_deref().unwrap_or("")
                ))),
            };
            report.bundles.push(BundleReport {
                name,
                active_revision: bundle.active_revision.filter(|r| !r.is_empty()),
                error,
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opa_status_reports_parse() {
        let report = StatusReport::parse(
            br#"{"labels":{"id":"x","version":"1.0"},
                 "bundles":{"authz":{"name":"authz","active_revision":"r1",
                   "last_successful_activation":"2026-12-07T10:00:00Z"},
                   "broken":{"name":"broken","code":"bundle_error","message":"no","errors":["a"]}},
                 "metrics":{"prometheus":{}}}"#,
        )
        .unwrap();
        assert_eq!(
            report.bundles,
            [
                BundleReport {
                    name: "authz".into(),
                    active_revision: Some("r1".into()),
                    error: None
                },
                BundleReport {
                    name: "broken".into(),
                    active_revision: None,
                    error: Some("bundle_error: no".into())
                },
            ]
        );
        assert_eq!(StatusReport::parse(b"{}").unwrap(), StatusReport::default());
        // A host's error message is kept, its hidden characters shown as U+FFFD.
        let report = StatusReport::parse(
            br#"{"bundles":{"a":{"code":"e\u202e","message":"line\nbreak \u001b[2J"}}}"#,
        )
        .unwrap();
        assert_eq!(
            report.bundles[0].error.as_deref(),
            Some("e\u{fffd}: line\u{fffd}break \u{fffd}[2J")
        );
        // However many it replaces, the message stays within MAX_FIELD bytes.
        let controls = "\\u0001".repeat(MAX_FIELD);
        let report = StatusReport::parse(
            format!(r#"{{"bundles":{{"a":{{"message":"{controls}"}}}}}}"#).as_bytes(),
        )
        .unwrap();
        let error = report.bundles[0].error.as_deref().unwrap();
        assert!(error.len() <= MAX_FIELD, "{}", error.len());
    }

    #[test]
    fn bad_reports_are_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"bundles":[1]}"#,
            br#"{"bundles":{"a":{"active_revision":7}}}"#,
            br#"{"bundles":{"a\u0000":{}}}"#,
            br#"{"bundles":{"a":{"active_revision":"demo-6\u202e1-omed"}}}"#,
            br#"{"bundles":{"a":{"active_revision":"r1\u2028"}}}"#,
            br#"{"bundles":{"a":{"active_revision":"r\u00a01"}}}"#,
        ] {
            assert!(
                StatusReport::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: BTreeMap<String, Value> = (0..=MAX_BUNDLES)
            .map(|i| (format!("b{i}"), serde_json::json!({})))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "bundles": many })).unwrap();
        assert!(StatusReport::parse(&body).is_err());
        let long = format!(
            r#"{{"bundles":{{"a":{{"message":"{}"}}}}}}"#,
            "é".repeat(MAX_FIELD)
        );
        let report = StatusReport::parse(long.as_bytes()).unwrap();
        assert!(report.bundles[0].error.as_ref().unwrap().len() <= MAX_FIELD);
    }
}
