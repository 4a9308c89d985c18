//! `[delivery]`: what this sidecar tells a policy-delivery server — its bundles' active
//! revisions (OPA's status API, `POST /status`) and how many decisions each bundle revision
//! made, denied and failed (`POST /v1/decision-counts`), so the server can judge a
//! candidate against its step's thresholds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis::policy::{Evaluation, PolicyError, PolicyStore};
use serde::Deserialize;
use serde_json::{Value, json};

/// `[delivery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryConfig {
    /// The server, e.g. `http://delivery.internal:8282`.
    pub(crate) url: String,
    /// This host's token (the one the server binds to this host's SPIFFE ID). Not needed
    /// when `[client_tls]` presents this host's SVID to an `https://` server.
    pub(crate) token_file: Option<PathBuf>,
    /// How often to report.
    #[serde(default = "default_report")]
    pub(crate) report_seconds: u64,
}

fn default_report() -> u64 {
    10
}

/// Decisions, denials and errors per (bundle, revision) since the last report.
#[derive(Debug, Default)]
pub(crate) struct DecisionCounter {
    counts: Mutex<BTreeMap<(String, String), [u64; 3]>>,
}

impl DecisionCounter {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), [u64; 3]>> {
        // Counts are plain additions; a panic elsewhere cannot leave them half-updated.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one decision for every bundle revision that answered it (for an error, the
    /// revisions active now).
    pub(crate) fn record(&self, outcome: &Result<Evaluation, PolicyError>, store: &PolicyStore) {
        let (revisions, deny, error) = match outcome {
            Ok(evaluation) => (
                evaluation.revisions.clone(),
                portcullis::policy::counts_as_denial(evaluation.result.as_ref()),
                false,
            ),
            Err(_) => (store.revisions(), false, true),
        };
        let mut counts = self.lock();
        for (bundle, revision) in revisions.iter() {
            let c = counts
                .entry((bundle.clone(), revision.clone()))
                .or_insert([0; 3]);
            c[0] = c[0].saturating_add(1);
            c[1] = c[1].saturating_add(u64::from(deny));
            c[2] = c[2].saturating_add(u64::from(error));
        }
    }

    fn take(&self) -> BTreeMap<(String, String), [u64; 3]> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts counts that could not be sent back, to go with the next report.
    fn restore(&self, taken: BTreeMap<(String, String), [u64; 3]>) {
        let mut counts = self.lock();
        for (key, [d, n, e]) in taken {
            let c = counts.entry(key).or_insert([0; 3]);
            c[0] = c[0].saturating_add(d);
            c[1] = c[1].saturating_add(n);
            c[2] = c[2].saturating_add(e);
        }
    }
}

/// The HTTP client for plain (or server-only TLS) reports: no redirects (a report's token
/// goes to the configured server only), each request within 10 s.
pub(crate) fn plain_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("[delivery] HTTP client: {e}"))
}

/// How long one report may take.
pub(crate) const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `request` with this host's token, if it reports with one (else its client certificate
/// identifies it).
fn authorized(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Reports every `config.report_seconds` until the process ends; a failed report is
/// logged and its counts go with the next one.
pub(crate) async fn run(
    config: DeliveryConfig,
    client: reqwest::Client,
    token: Option<String>,
    counter: Arc<DecisionCounter>,
    store: Arc<PolicyStore>,
    spiffe_id: Option<String>,
) {
    let base = config.url.trim_end_matches('/').to_owned();
    let mut interval = tokio::time::interval(Duration::from_secs(config.report_seconds.max(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let taken = counter.take();
        if !taken.is_empty() {
            let bundles: Vec<Value> = taken
                .iter()
                .map(|((name, revision), [d, n, e])| {
                    json!({"name": name, "revision": revision, "decisions": d, "denies": n, "errors": e})
                })
                .collect();
            let sent = authorized(
                client.post(format!("{base}/v1/decision-counts")),
                token.as_deref(),
            )
            .json(&json!({ "bundles": bundles }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
            if let Err(error) = sent {
                tracing::warn!(%error, "[delivery] decision counts not reported; they go with the next report");
                counter.restore(taken);
            }
        }
        let bundles: serde_json::Map<String, Value> = store
            .status()
            .into_iter()
            .map(|s| {
                let mut entry = serde_json::Map::new();
                entry.insert("name".into(), json!(s.name));
                entry.insert("active_revision".into(), json!(s.active_revision));
                if let Some(error) = &s.last_error {
                    entry.insert("code".into(), json!("bundle_error"));
                    entry.insert("message".into(), json!(error));
                }
                (s.name.clone(), Value::Object(entry))
            })
            .collect();
        let status = json!({
            "labels": {"id": spiffe_id.as_deref().unwrap_or("policy-sidecar"), "version": env!("CARGO_PKG_VERSION")},
            "bundles": bundles,
        });
        let sent = authorized(client.post(format!("{base}/status")), token.as_deref())
            .json(&status)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(error) = sent {
            tracing::warn!(%error, "[delivery] status not reported");
        }
    }
}
