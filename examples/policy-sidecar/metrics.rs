//! The sidecar's Prometheus metrics (`GET /metrics`, text exposition format 0.0.4):
//! request counts and latency per handler as OPA names them, decisions by outcome, and
//! bundle activations and failures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// One latency histogram (cumulative counts are computed when rendered).
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound)
            && let Some(bucket) = self.buckets.get(i)
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// Labels of a request series: handler, method, status code.
type RequestKey = (&'static str, &'static str, u16);

/// A method's name without allocating: the standard ones, else `other`.
fn method_name(method: &str) -> &'static str {
    const METHODS: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    METHODS
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("other")
}

/// Every metric the sidecar exports.
#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, Arc<Histogram>>>,
    decisions: Mutex<BTreeMap<&'static str, u64>>,
    loaded: Mutex<BTreeMap<String, u64>>,
    failed: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters only: a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// Counts one answered request.
    pub(crate) fn request(
        &self,
        handler: &'static str,
        method: &str,
        code: u16,
        elapsed: Duration,
    ) {
        let histogram = lock(&self.requests)
            .entry((handler, method_name(method), code))
            .or_default()
            .clone();
        histogram.observe(elapsed);
    }

    /// Counts one decision: `allow`, `deny`, `undefined`, `other` or `error`.
    pub(crate) fn decision(&self, outcome: &'static str) {
        *lock(&self.decisions).entry(outcome).or_default() += 1;
    }

    /// Counts one activation of `bundle`.
    pub(crate) fn bundle_loaded(&self, bundle: &str) {
        *lock(&self.loaded).entry(bundle.to_owned()).or_default() += 1;
    }

    /// Counts one refused or failed fetch of `bundle`.
    pub(crate) fn bundle_failed(&self, bundle: &str) {
        *lock(&self.failed).entry(bundle.to_owned()).or_default() += 1;
    }

    /// The text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let requests: Vec<(RequestKey, Arc<Histogram>)> = lock(&self.requests)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        out.push_str("# HELP http_request_duration_seconds Time the server took to answer, by handler, method and status code.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for ((handler, method, code), histogram) in &requests {
            let labels = format!(
                "code=\"{code}\",handler=\"{handler}\",method=\"{}\"",
                escape(method)
            );
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&histogram.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let sum = Duration::from_nanos(histogram.sum_ns.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{labels}}} {}",
                sum.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        counter(
            &mut out,
            "policy_sidecar_decisions_total",
            "Decisions given (and logged), by outcome.",
            "outcome",
            lock(&self.decisions)
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v)),
        );
        counter(
            &mut out,
            "bundle_loaded_counter",
            "Bundle activations, by bundle name.",
            "name",
            lock(&self.loaded).iter().map(|(k, v)| (k.clone(), *v)),
        );
        counter(
            &mut out,
            "bundle_failed_load_counter",
            "Bundle fetches or activations that failed, by bundle name.",
            "name",
            lock(&self.failed).iter().map(|(k, v)| (k.clone(), *v)),
        );
        out
    }
}

fn counter(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (value, count) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {count}", escape(&value));
    }
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets_and_counters() {
        let metrics = Metrics::default();
        metrics.request("v1/data", "POST", 200, Duration::from_micros(80));
        metrics.request("v1/data", "POST", 200, Duration::from_millis(2));
        metrics.decision("allow");
        metrics.bundle_loaded("a\"b");
        let text = metrics.render();
        let labels = "code=\"200\",handler=\"v1/data\",method=\"POST\"";
        assert!(text.contains(&format!(
            "http_request_duration_seconds_bucket{{{labels},le=\"0.00005\"}} 0\n"
        )));
        assert!(text.contains(&format!(
            "http_request_duration_seconds_bucket{{{labels},le=\"0.0001\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "http_request_duration_seconds_count{{{labels}}} 2\n"
        )));
        assert!(text.contains("policy_sidecar_decisions_total{outcome=\"allow\"} 1\n"));
        assert!(text.contains("bundle_loaded_counter{name=\"a\\\"b\"} 1\n"));
    }
}
