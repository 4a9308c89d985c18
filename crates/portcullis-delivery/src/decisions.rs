//! Hosts' decision logs in OPA's upload shape (`POST /logs`: a JSON array of decision
//! events, usually gzipped), counted per bundle and revision for the pipeline's thresholds.

use std::collections::BTreeMap;
use std::io::Read;

use portcullis_policy::{Metrics, counts_as_denial};
use serde::Deserialize;
use serde_json::Value;

use crate::DeliveryError;

/// The largest upload read, once decompressed.
pub const MAX_LOG_BYTES: usize = 8 << 20;
/// The most events one upload may hold.
pub const MAX_EVENTS: usize = 10_000;

/// Decision counts by `(bundle, revision)`, the revision as the bundle's manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecisionCounts {
    /// The counts.
    pub counts: BTreeMap<(String, String), Metrics>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    bundles: BTreeMap<String, EventBundle>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Compact {
    bundles: Vec<CompactBundle>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactBundle {
    name: String,
    revision: String,
    decisions: u64,
    #[serde(default)]
    denies: u64,
    #[serde(default)]
    errors: u64,
}

#[derive(Deserialize)]
struct EventBundle {
    #[serde(default)]
    revision: Option<String>,
}

impl DecisionCounts {
    /// Counts an upload: gzip when `gzip` is set (OPA sends `Content-Encoding: gzip`), then a
    /// JSON array of OPA decision events. An event with an `error` is an error; one whose
    /// result denies ([`counts_as_denial`]) a denial; each counts for every bundle it names.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Status`] for bad gzip, a body over [`MAX_LOG_BYTES`] decompressed,
    /// more than [`MAX_EVENTS`] events, or JSON that is not an array of events.
    pub fn parse(body: &[u8], gzip: bool) -> Result<DecisionCounts, DeliveryError> {
        let bad = |m: String| DeliveryError::Status(format!("decision log upload: {m}"));
        let text = if gzip {
            let mut out = Vec::new();
            let limit = u64::try_from(MAX_LOG_BYTES)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let mut decoder = flate2::bufread::GzDecoder::new(body);
            (&mut decoder)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("gzip: {e}")))?;
            // One gzip member, nothing after it (within the size limit: past it the
            // upload is refused below anyway).
            if out.len() <= MAX_LOG_BYTES && !decoder.into_inner().is_empty() {
                return Err(bad("data after the end of the gzip stream".to_owned()));
            }
            out
        } else {
            body.to_vec()
        };
        if text.len() > MAX_LOG_BYTES {
            return Err(bad(format!("larger than {MAX_LOG_BYTES} bytes")));
        }
        let events: Vec<Event> =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not OPA's shape: {e}")))?;
        if events.len() > MAX_EVENTS {
            return Err(bad(format!("more than {MAX_EVENTS} events")));
        }
        let mut counts: BTreeMap<(String, String), Metrics> = BTreeMap::new();
        for event in events {
            let error = event.error.as_ref().is_some_and(|e| !e.is_null());
            let deny = !error && counts_as_denial(event.result.as_ref());
            for (bundle, named) in event.bundles {
                let Some(revision) = named.revision else {
                    continue;
                };
                let m = counts.entry((bundle, revision)).or_default();
                m.decisions = m.decisions.saturating_add(1);
                m.denies = m.denies.saturating_add(u64::from(deny));
                m.errors = m.errors.saturating_add(u64::from(error));
            }
        }
        Ok(DecisionCounts { counts })
    }
}

impl DecisionCounts {
    /// Reads a compact counters report, as policy-sidecar sends it:
    /// `{"bundles": [{"name", "revision", "decisions", "denies", "errors"}]}` — counts
    /// since its last report, per bundle revision it answered with.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Status`] for a body over [`MAX_LOG_BYTES`], JSON of another shape,
    /// more than [`MAX_EVENTS`] entries, or denials and errors outnumbering decisions.
    pub fn parse_compact(body: &[u8]) -> Result<DecisionCounts, DeliveryError> {
        let bad = |m: String| DeliveryError::Status(format!("decision counts: {m}"));
        if body.len() > MAX_LOG_BYTES {
            return Err(bad(format!("larger than {MAX_LOG_BYTES} bytes")));
        }
        let compact: Compact =
            serde_json::from_slice(body).map_err(|e| bad(format!("not the shape: {e}")))?;
        if compact.bundles.len() > MAX_EVENTS {
            return Err(bad(format!("more than {MAX_EVENTS} entries")));
        }
        let mut counts: BTreeMap<(String, String), Metrics> = BTreeMap::new();
        for b in compact.bundles {
            if b.denies.saturating_add(b.errors) > b.decisions {
                return Err(bad(format!(
                    "{} {}: more denials and errors than decisions",
                    b.name, b.revision
                )));
            }
            let m = counts.entry((b.name, b.revision)).or_default();
            m.decisions = m.decisions.saturating_add(b.decisions);
            m.denies = m.denies.saturating_add(b.denies);
            m.errors = m.errors.saturating_add(b.errors);
        }
        Ok(DecisionCounts { counts })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn opa_decision_logs_are_counted() {
        let events = serde_json::json!([
            {"decision_id": "1", "bundles": {"authz": {"revision": "r2"}}, "result": true},
            {"decision_id": "2", "bundles": {"authz": {"revision": "r2"}}, "result": false},
            {"decision_id": "3", "bundles": {"authz": {"revision": "r2"}}},
            {"decision_id": "4", "bundles": {"authz": {"revision": "r2"}}, "result": {"allow": false}},
            {"decision_id": "5", "bundles": {"authz": {"revision": "r2"}}, "error": {"code": "x"}},
            {"decision_id": "6", "bundles": {"authz": {"revision": "r1"}}, "result": {"allow": true}},
            {"decision_id": "7", "result": false},
        ])
        .to_string();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(events.as_bytes()).unwrap();
        let zipped = gz.finish().unwrap();
        let counts = DecisionCounts::parse(&zipped, true).unwrap();
        assert_eq!(
            counts,
            DecisionCounts::parse(events.as_bytes(), false).unwrap()
        );
        let r2 = counts.counts[&("authz".to_owned(), "r2".to_owned())];
        assert_eq!((r2.decisions, r2.denies, r2.errors), (5, 3, 1));
        let r1 = counts.counts[&("authz".to_owned(), "r1".to_owned())];
        assert_eq!((r1.decisions, r1.denies, r1.errors), (1, 0, 0));
        assert_eq!(counts.counts.len(), 2);
    }

    #[test]
    fn compact_reports_are_counted() {
        let counts = DecisionCounts::parse_compact(
            br#"{"bundles":[{"name":"authz","revision":"r2","decisions":10,"denies":3,"errors":1},
                            {"name":"authz","revision":"r2","decisions":5}]}"#,
        )
        .unwrap();
        let r2 = counts.counts[&("authz".to_owned(), "r2".to_owned())];
        assert_eq!((r2.decisions, r2.denies, r2.errors), (15, 3, 1));
        for bad in [
            &br#"{"bundles":[{"name":"a","revision":"r","decisions":1,"denies":2}]}"#[..],
            br#"{"bundles":[{"name":"a","revision":"r"}]}"#,
            br#"{"bundles":[],"extra":1}"#,
            b"[]",
        ] {
            assert!(DecisionCounts::parse_compact(bad).is_err());
        }
    }

    #[test]
    fn bad_uploads_are_refused() {
        assert!(DecisionCounts::parse(b"{}", false).is_err());
        assert!(DecisionCounts::parse(b"not gzip", true).is_err());
        let bomb = vec![b' '; MAX_LOG_BYTES + 10];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bomb).unwrap();
        let zipped = gz.finish().unwrap();
        assert!(zipped.len() < 100_000);
        assert!(DecisionCounts::parse(&zipped, true).is_err());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"[]").unwrap();
        let mut zipped = gz.finish().unwrap();
        assert!(DecisionCounts::parse(&zipped, true).is_ok());
        zipped.extend_from_slice(b"garbage");
        let err = DecisionCounts::parse(&zipped, true).unwrap_err();
        assert!(err.to_string().contains("after the end"), "{err}");
    }
}
