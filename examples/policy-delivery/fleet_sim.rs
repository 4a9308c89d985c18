//! A simulated fleet for `policy-delivery` (issue 33's scale measurement): N hosts, each
//! polling its bundles every `--interval` with its own token and its last `ETag` (OPA's
//! bundle service protocol) on a connection of its own, and reporting its status
//! (`POST /status`) and decision counts (`POST /v1/decision-counts`) every
//! `--report-interval`, as policy-sidecar's `[delivery]` does. Optionally an operator
//! promotes an artifact mid-run, and the simulator measures, per host, how long after the
//! promote call's answer that host's next poll brought the new revision.
//!
//! ```sh
//! cargo run --release --example delivery-fleet-sim -- \
//!   --server http://127.0.0.1:8282 --hosts-file hosts.txt --hosts 10000 \
//!   --interval 2 --report-interval 10 --duration 60 \
//!   --promote-at 30 --artifact authz --operator-token-file alice.token
//! ```
//!
//! The hosts file has one host a line: `SPIFFE_ID TOKEN` (`#` starts a comment).
//! Prints poll and report rates, exact latency percentiles (from every sample of the
//! measured window, after `--warmup`), errors, and the promotion's propagation against one
//! poll interval + 1 s; the last line, `SUMMARY key=value …`, is for scripts
//! (`scripts/load-policy-delivery`).
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line load generator prints its results and errors"
)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use clap::Parser;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The largest bundle read back (the server's default `max_bundle_bytes`).
const MAX_BUNDLE: usize = 8 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "delivery-fleet-sim",
    about = "Simulates a fleet of hosts polling a policy-delivery server with ETags and reporting status."
)]
struct Args {
    /// The delivery server, http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The hosts: one `SPIFFE_ID TOKEN` a line.
    #[arg(long, value_name = "FILE")]
    hosts_file: PathBuf,
    /// How many hosts to simulate (the file's first N).
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// The bundles each host polls, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "authz")]
    bundles: Vec<String>,
    /// Seconds between two polls of a host (each host starts at its own offset within the
    /// first interval, so the load is even).
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Seconds between two reports of a host (0: no reports).
    #[arg(long, default_value_t = 10.0)]
    report_interval: f64,
    /// Decisions each report counts per bundle (0: no decision counts are sent).
    #[arg(long, default_value_t = 100)]
    decisions: u64,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds at the start left out of the rates and latencies (every host's first
    /// download happens then); default two intervals.
    #[arg(long)]
    warmup: Option<f64>,
    /// Promote `--artifact` this many seconds after the start.
    #[arg(long, requires_all = ["artifact", "operator_token_file"])]
    promote_at: Option<f64>,
    /// The artifact to promote.
    #[arg(long)]
    artifact: Option<String>,
    /// A file holding an operator's token.
    #[arg(long, value_name = "FILE")]
    operator_token_file: Option<PathBuf>,
    /// Seconds a request may take before it counts as an error.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

/// What stops the simulation before it starts (or the promotion).
#[derive(Debug, thiserror::Error)]
enum SimError {
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    HostLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("--hosts {wanted}: {path} lists only {found} hosts")]
    TooFewHosts {
        wanted: usize,
        path: PathBuf,
        found: usize,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the promotion failed: {0}")]
    Promote(String),
}

/// The longest time any flag may give: a day (which also keeps every instant computed from
/// them far from overflowing).
const MAX_SECONDS: f64 = 86_400.0;

fn seconds(flag: &'static str, value: f64, zero_ok: bool) -> Result<Duration, SimError> {
    let bad = |message: String| SimError::Flag { flag, message };
    if value == 0.0 && zero_ok {
        return Ok(Duration::ZERO);
    }
    if !value.is_finite() || value <= 0.0 || value > MAX_SECONDS {
        return Err(bad(format!(
            "{value} is not a number of seconds above 0 and at most {MAX_SECONDS}"
        )));
    }
    Duration::try_from_secs_f64(value).map_err(|e| bad(format!("{value}: {e}")))
}

/// One simulated host.
#[derive(Debug)]
struct Host {
    spiffe_id: String,
    authorization: HeaderValue,
}

fn read_hosts(path: &PathBuf, wanted: usize) -> Result<Vec<Host>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
        path: path.clone(),
        source,
    })?;
    let mut hosts = Vec::with_capacity(wanted);
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let bad = |message: &str| SimError::HostLine {
            path: path.clone(),
            line: n + 1,
            message: message.to_owned(),
        };
        let mut fields = line.split_whitespace();
        let (Some(spiffe_id), Some(token), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("a line is SPIFFE_ID TOKEN"));
        };
        let mut authorization = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| bad("the token is not a valid header value"))?;
        authorization.set_sensitive(true);
        hosts.push(Host {
            spiffe_id: spiffe_id.to_owned(),
            authorization,
        });
        if hosts.len() == wanted {
            return Ok(hosts);
        }
    }
    Err(SimError::TooFewHosts {
        wanted,
        path: path.clone(),
        found: hosts.len(),
    })
}

/// What every host shares.
#[derive(Debug)]
struct Plan {
    server: String,
    bundles: Vec<(String, Uri)>,
    interval: Duration,
    report_interval: Duration,
    decisions: u64,
    timeout: Duration,
    start: Instant,
    end: Instant,
    /// Requests finished and failed so far, for the progress line.
    done: AtomicU64,
    failed: AtomicU64,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    NotModified,
    Downloaded,
    Reported,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// When it finished, in ms since the start.
    at_ms: u64,
    micros: u64,
    outcome: Outcome,
    /// Whether it was a poll with `If-None-Match` (every poll after a host's first download).
    conditional: bool,
}

/// What one task saw.
#[derive(Debug, Default)]
struct Tally {
    polls: Vec<Sample>,
    reports: Vec<Sample>,
    /// Failures by kind (`GET 503`, `timeout`, …).
    errors: BTreeMap<String, u64>,
    /// (ETag, when it first arrived) for each new ETag a poll brought.
    received: Vec<(String, Instant)>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.polls.extend(other.polls);
        self.reports.extend(other.reports);
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

type HttpClient = Client<HttpConnector, Body>;

fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(300))
        .build(connector)
}

/// Sends `request` and reads the whole answer; the status, headers and body, or why not.
async fn send(
    client: &HttpClient,
    request: Request<Body>,
    timeout: Duration,
) -> Result<(StatusCode, axum::http::HeaderMap, axum::body::Bytes), String> {
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(Body::new(body), MAX_BUNDLE)
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err("timeout".to_owned()))
}

fn since(plan: &Plan, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(plan.start).as_millis()).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The revision a bundle tarball's `.manifest` names, if it names one.
fn manifest_revision(tarball: &[u8]) -> Option<String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = entry.path().ok()?.to_string_lossy().into_owned();
        if path.trim_start_matches("./").trim_start_matches('/') == ".manifest" {
            let mut text = String::new();
            entry.read_to_string(&mut text).ok()?;
            let manifest: Value = serde_json::from_str(&text).ok()?;
            return manifest.get("revision")?.as_str().map(str::to_owned);
        }
    }
    None
}

/// An even spread over `[0, period)` for host `n`: the golden-ratio sequence.
fn offset(n: usize, period: Duration, seed: f64) -> Duration {
    let fraction = (n as f64 * 0.618_033_988_749_894_9 + seed).fract();
    period.mul_f64(fraction)
}

/// Host `n` until the end: polls each bundle every interval with its last ETag, and reports
/// every report interval, on one connection (one request at a time, as one agent's client).
async fn simulate(n: usize, host: Host, plan: Arc<Plan>) -> Tally {
    let mut state = HostState {
        host,
        client: client(),
        tally: Tally::default(),
        etags: vec![None; plan.bundles.len()],
        active: vec![None; plan.bundles.len()],
    };
    let mut polls =
        tokio::time::interval_at(plan.start + offset(n, plan.interval, 0.0), plan.interval);
    polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Without reports, a report tick that never comes.
    let report_every = if plan.report_interval.is_zero() {
        plan.end.saturating_duration_since(plan.start) + Duration::from_secs(3600)
    } else {
        plan.report_interval
    };
    let mut reports =
        tokio::time::interval_at(plan.start + offset(n, report_every, 0.5), report_every);
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let (poll, at) = tokio::select! {
            at = polls.tick() => (true, at),
            at = reports.tick() => (false, at),
        };
        if at >= plan.end {
            return state.tally;
        }
        if poll {
            state.poll(&plan).await;
        } else {
            state.report(&plan).await;
        }
    }
}

/// A simulated host's agent: its connection, its bundles' ETags and manifest revisions,
/// and what it saw.
#[derive(Debug)]
struct HostState {
    host: Host,
    client: HttpClient,
    tally: Tally,
    etags: Vec<Option<HeaderValue>>,
    /// The manifest revision of each bundle it has, for its reports.
    active: Vec<Option<String>>,
}

impl HostState {
    /// Polls each bundle once, with its last ETag.
    async fn poll(&mut self, plan: &Plan) {
        let bundles = plan
            .bundles
            .iter()
            .zip(&mut self.etags)
            .zip(&mut self.active);
        for (((_, uri), etag), active) in bundles {
            let mut request = Request::builder()
                .method(Method::GET)
                .uri(uri.clone())
                .header(header::AUTHORIZATION, self.host.authorization.clone());
            if let Some(tag) = etag.as_ref() {
                request = request.header(header::IF_NONE_MATCH, tag.clone());
            }
            let conditional = etag.is_some();
            let started = Instant::now();
            let answer = match request.body(Body::empty()) {
                Ok(request) => send(&self.client, request, plan.timeout).await,
                Err(e) => Err(format!("request: {e}")),
            };
            let finished = Instant::now();
            let outcome = match answer {
                Ok((StatusCode::NOT_MODIFIED, _, _)) => Outcome::NotModified,
                Ok((StatusCode::OK, headers, body)) => {
                    if let Some(tag) = headers.get(header::ETAG) {
                        let text = String::from_utf8_lossy(tag.as_bytes()).into_owned();
                        if self.tally.received.iter().all(|(seen, _)| *seen != text) {
                            self.tally.received.push((text, finished));
                        }
                        *etag = Some(tag.clone());
                    }
                    *active = manifest_revision(&body);
                    Outcome::Downloaded
                }
                Ok((status, _, _)) => {
                    *self
                        .tally
                        .errors
                        .entry(format!("GET {status}"))
                        .or_default() += 1;
                    Outcome::Failed
                }
                Err(kind) => {
                    *self.tally.errors.entry(format!("GET {kind}")).or_default() += 1;
                    Outcome::Failed
                }
            };
            record(
                plan,
                &mut self.tally.polls,
                (started, finished),
                outcome,
                conditional,
            );
        }
    }

    /// Reports its bundles' active revisions and, if `--decisions`, decision counts for them.
    async fn report(&mut self, plan: &Plan) {
        let mut bundles = serde_json::Map::new();
        let mut counts = Vec::new();
        for ((name, _), revision) in plan.bundles.iter().zip(&self.active) {
            bundles.insert(
                name.clone(),
                json!({"name": name, "active_revision": revision.as_deref().unwrap_or("")}),
            );
            if let (Some(revision), true) = (revision, plan.decisions > 0) {
                counts.push(json!({"name": name, "revision": revision,
                    "decisions": plan.decisions, "denies": 0, "errors": 0}));
            }
        }
        let mut bodies = vec![(
            "/status",
            json!({"labels": {"id": self.host.spiffe_id}, "bundles": bundles}),
        )];
        if !counts.is_empty() {
            bodies.push(("/v1/decision-counts", json!({ "bundles": counts })));
        }
        for (path, body) in bodies {
            let started = Instant::now();
            let answer = match Request::builder()
                .method(Method::POST)
                .uri(format!("{}{path}", plan.server))
                .header(header::AUTHORIZATION, self.host.authorization.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
            {
                Ok(request) => send(&self.client, request, plan.timeout).await,
                Err(e) => Err(format!("request: {e}")),
            };
            let outcome = match answer {
                Ok((StatusCode::OK, _, _)) => Outcome::Reported,
                Ok((status, _, _)) => {
                    let kind = format!("POST {path} {status}");
                    *self.tally.errors.entry(kind).or_default() += 1;
                    Outcome::Failed
                }
                Err(kind) => {
                    let kind = format!("POST {path} {kind}");
                    *self.tally.errors.entry(kind).or_default() += 1;
                    Outcome::Failed
                }
            };
            let timing = (started, Instant::now());
            record(plan, &mut self.tally.reports, timing, outcome, false);
        }
    }
}

fn record(
    plan: &Plan,
    into: &mut Vec<Sample>,
    (started, finished): (Instant, Instant),
    outcome: Outcome,
    conditional: bool,
) {
    plan.done.fetch_add(1, Ordering::Relaxed);
    if outcome == Outcome::Failed {
        plan.failed.fetch_add(1, Ordering::Relaxed);
    }
    into.push(Sample {
        at_ms: since(plan, finished),
        micros: micros(finished.saturating_duration_since(started)),
        outcome,
        conditional,
    });
}

/// An operator's promotion: when it was sent and answered, and the revision it delivers.
#[derive(Debug)]
struct Promotion {
    sent: Instant,
    answered: Instant,
    revision: String,
}

async fn promote(
    plan: Arc<Plan>,
    at: Duration,
    artifact: String,
    token: String,
) -> Result<Promotion, SimError> {
    tokio::time::sleep_until(plan.start + at).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/v1/artifacts/{artifact}/promote", plan.server))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"reason": "fleet simulation"}"#))
        .map_err(|e| SimError::Promote(e.to_string()))?;
    let sent = Instant::now();
    let (status, _, body) = send(&client(), request, plan.timeout)
        .await
        .map_err(SimError::Promote)?;
    let answered = Instant::now();
    let text = String::from_utf8_lossy(&body);
    if status != StatusCode::OK {
        return Err(SimError::Promote(format!("{status}: {text}")));
    }
    let answer: Value =
        serde_json::from_str(&text).map_err(|e| SimError::Promote(format!("{e}: {text}")))?;
    // After the last step the revision is stable; before it, still the candidate.
    let state = answer.get("state");
    let revision = state
        .and_then(|s| s.get("candidate"))
        .and_then(|c| c.get("revision"))
        .or_else(|| state.and_then(|s| s.get("stable")))
        .and_then(Value::as_str)
        .ok_or_else(|| SimError::Promote(format!("no revision in the answer: {text}")))?;
    Ok(Promotion {
        sent,
        answered,
        revision: revision.to_owned(),
    })
}

/// Nearest-rank percentiles of `values` (sorted here), in ms.
fn percentiles(values: &mut [u64], ranks: &[f64]) -> Vec<f64> {
    values.sort_unstable();
    ranks
        .iter()
        .map(|rank| {
            // The rank is within 1..=len: nearest-rank, never interpolated.
            let index = ((rank / 100.0 * values.len() as f64).ceil() as usize).max(1) - 1;
            values.get(index).map_or(f64::NAN, |&v| v as f64 / 1000.0)
        })
        .collect()
}

/// `p50 … max` of the samples' latencies, in ms, and how many there were.
fn latency(samples: impl Iterator<Item = Sample>) -> (usize, Vec<f64>) {
    let mut values: Vec<u64> = samples.map(|s| s.micros).collect();
    let found = percentiles(&mut values, &[50.0, 90.0, 99.0, 100.0]);
    (values.len(), found)
}

fn show(label: &str, count: usize, window: f64, l: &[f64]) {
    let rate = ratio(count, window);
    if let [p50, p90, p99, max] = l {
        println!(
            "{label:<24} {rate:>8.1}/s ({count}); p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
        );
    } else {
        println!("{label:<24} {rate:>8.1}/s ({count})");
    }
}

async fn run(args: Args) -> Result<ExitCode, SimError> {
    let interval = seconds("--interval", args.interval, false)?;
    let report_interval = seconds("--report-interval", args.report_interval, true)?;
    let duration = seconds("--duration", args.duration, false)?;
    let timeout = seconds("--timeout", args.timeout, false)?;
    let warmup = match args.warmup {
        Some(w) => seconds("--warmup", w, true)?,
        None => interval.saturating_mul(2),
    };
    if warmup >= duration {
        return Err(SimError::Flag {
            flag: "--warmup",
            message: format!("{warmup:?} leaves nothing of --duration {duration:?} to measure"),
        });
    }
    let promote_at = match args.promote_at {
        Some(at) => {
            let at = seconds("--promote-at", at, false)?;
            if at >= duration {
                return Err(SimError::Flag {
                    flag: "--promote-at",
                    message: format!("{at:?} is not within --duration {duration:?}"),
                });
            }
            Some(at)
        }
        None => None,
    };
    let server = args.server.trim_end_matches('/').to_owned();
    if !server.starts_with("http://") {
        return Err(SimError::Flag {
            flag: "--server",
            message: format!("{server:?} is not an http:// URL"),
        });
    }
    if args.hosts == 0 || args.bundles.iter().any(|b| b.is_empty()) {
        return Err(SimError::Flag {
            flag: "--hosts/--bundles",
            message: "at least one host and non-empty bundle names".to_owned(),
        });
    }
    let mut bundles = Vec::new();
    for name in &args.bundles {
        let uri: Uri = format!("{server}/bundles/{name}")
            .parse()
            .map_err(|e| SimError::Flag {
                flag: "--server/--bundles",
                message: format!("{server}/bundles/{name}: {e}"),
            })?;
        bundles.push((name.clone(), uri));
    }
    let token = match &args.operator_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| SimError::Read {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let hosts = read_hosts(&args.hosts_file, args.hosts)?;

    let start = Instant::now() + Duration::from_millis(200);
    let plan = Arc::new(Plan {
        server,
        bundles,
        interval,
        report_interval,
        decisions: args.decisions,
        timeout,
        start,
        end: start + duration,
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    println!(
        "fleet: {} hosts, {} bundle(s), a poll every {interval:?}, a report every {report_interval:?}, \
         for {duration:?} (the first {warmup:?} not measured)",
        hosts.len(),
        plan.bundles.len()
    );
    // One task and one connection per host, as separate machines have.
    let tasks: Vec<_> = hosts
        .into_iter()
        .enumerate()
        .map(|(n, host)| tokio::spawn(simulate(n, host, plan.clone())))
        .collect();
    let promotion = match (promote_at, args.artifact, token) {
        (Some(at), Some(artifact), Some(token)) => {
            Some(tokio::spawn(promote(plan.clone(), at, artifact, token)))
        }
        _ => None,
    };
    let progress = tokio::spawn(progress(plan.clone()));

    let mut polls = Tally::default();
    let mut received = Vec::with_capacity(tasks.len());
    let mut lost = 0_usize;
    for task in tasks {
        match task.await {
            Ok(mut tally) => {
                received.push(std::mem::take(&mut tally.received));
                polls.merge(tally);
            }
            Err(_) => lost += 1,
        }
    }
    progress.abort();
    // A failed promotion is a result too: the fleet's numbers are still printed.
    let promotion = match promotion {
        Some(task) => Some(match task.await {
            Ok(done) => done,
            Err(e) => Err(SimError::Promote(e.to_string())),
        }),
        None => None,
    };
    Ok(summarize(
        &plan,
        warmup,
        duration,
        &polls,
        &received,
        promotion.as_ref(),
        lost,
    ))
}

/// A line every 5 s while it runs: requests finished per second, and failures so far.
async fn progress(plan: Arc<Plan>) {
    let mut ticks =
        tokio::time::interval_at(plan.start + Duration::from_secs(5), Duration::from_secs(5));
    let mut last = 0;
    loop {
        let at = ticks.tick().await;
        let done = plan.done.load(Ordering::Relaxed);
        eprintln!(
            "fleet-sim: t={:>4}s {:>7} requests/s, {} failed so far",
            since(&plan, at) / 1000,
            done.saturating_sub(last) / 5,
            plan.failed.load(Ordering::Relaxed)
        );
        last = done;
    }
}

fn summarize(
    plan: &Plan,
    warmup: Duration,
    duration: Duration,
    tally: &Tally,
    received: &[Vec<(String, Instant)>],
    promotion: Option<&Result<Promotion, SimError>>,
    lost: usize,
) -> ExitCode {
    let from = u64::try_from(warmup.as_millis()).unwrap_or(u64::MAX);
    let window = duration.saturating_sub(warmup).as_secs_f64();
    let measured = |s: &&Sample| s.at_ms >= from;
    let polls: Vec<Sample> = tally.polls.iter().filter(measured).copied().collect();
    let reports: Vec<Sample> = tally.reports.iter().filter(measured).copied().collect();
    let of = |kind: Outcome| move |s: &&Sample| s.outcome == kind;
    let failed = polls.iter().filter(of(Outcome::Failed)).count()
        + reports.iter().filter(of(Outcome::Failed)).count();

    let (n, all) = latency(polls.iter().copied());
    show("polls (all outcomes)", n, window, &all);
    let conditional = |s: &&Sample| s.conditional && s.outcome != Outcome::Failed;
    let (n_etag, etag) = latency(polls.iter().filter(conditional).copied());
    show("ETag polls (304 or 200)", n_etag, window, &etag);
    let (n304, not_modified) = latency(polls.iter().filter(of(Outcome::NotModified)).copied());
    show("   of which 304", n304, window, &not_modified);
    let (n200, downloads) = latency(polls.iter().filter(of(Outcome::Downloaded)).copied());
    show("downloads (200)", n200, window, &downloads);
    let (nr, reported) = latency(reports.iter().filter(of(Outcome::Reported)).copied());
    show("reports (status+counts)", nr, window, &reported);
    // Where the slow polls are: the p99 of each 5 s of the run (startup, promotion, …).
    let mut series = String::new();
    let end_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    for from in (0..end_ms).step_by(5000) {
        let (_, l) = latency(
            tally
                .polls
                .iter()
                .filter(|s| s.conditional && s.at_ms >= from && s.at_ms < from + 5000)
                .copied(),
        );
        series.push_str(&format!(" {:.1}", l.get(2).copied().unwrap_or(f64::NAN)));
    }
    println!("ETag poll p99 (ms) per 5 s from the start:{series}");
    println!("errors in the window: {failed}; lost tasks: {lost}");
    for (kind, count) in &tally.errors {
        println!("   {count} × {kind}");
    }
    let budget = plan.interval + Duration::from_secs(1);
    let mut summary = format!(
        "SUMMARY hosts={} polls_per_s={:.1} etag_polls_per_s={:.1} p50_ms={:.2} p90_ms={:.2} \
         p99_ms={:.2} max_ms={:.2} etag_p99_ms={:.2} reports_per_s={:.1} errors={failed} \
         polls_total={} reports_total={}",
        received.len(),
        ratio(n, window),
        ratio(n_etag, window),
        all.first().copied().unwrap_or(f64::NAN),
        all.get(1).copied().unwrap_or(f64::NAN),
        all.get(2).copied().unwrap_or(f64::NAN),
        all.get(3).copied().unwrap_or(f64::NAN),
        etag.get(2).copied().unwrap_or(f64::NAN),
        ratio(nr, window),
        tally.polls.len(),
        tally.reports.len(),
    );
    let mut met = failed == 0 && lost == 0;
    if let Some(Err(err)) = promotion {
        println!("{err}");
        met = false;
        summary.push_str(&format!(
            " propagation_max_s=nan propagation_target_s={:.1} reached=0 missed={} spread_p99_ms=nan",
            budget.as_secs_f64(),
            received.len()
        ));
    }
    if let Some(Ok(p)) = promotion {
        let tag = format!("\"{}\"", p.revision);
        let (mut had, mut missed, mut delays) = (0_usize, 0_usize, Vec::new());
        for host in received {
            match host.iter().find(|(seen, _)| *seen == tag) {
                Some((_, at)) if *at < p.sent => had += 1,
                Some((_, at)) => delays.push(micros(at.saturating_duration_since(p.answered))),
                None => missed += 1,
            }
        }
        let reached = delays.len();
        let d = percentiles(&mut delays, &[50.0, 99.0, 100.0]);
        let max_s = d.get(2).copied().unwrap_or(f64::NAN) / 1000.0;
        let on_time = missed == 0 && max_s <= budget.as_secs_f64();
        met &= on_time;
        println!(
            "promotion at t={:.1}s, answered in {:.1} ms: revision {}",
            since(plan, p.sent) as f64 / 1000.0,
            p.answered.saturating_duration_since(p.sent).as_secs_f64() * 1000.0,
            p.revision
        );
        println!(
            "   reached {reached} of {} hosts that did not have it ({had} had it already, {missed} never got it); \
             delay after the answer p50 {:.2} s, p99 {:.2} s, max {max_s:.2} s; target ≤ {:.1} s (interval + 1 s): {}",
            reached + missed,
            d.first().copied().unwrap_or(f64::NAN) / 1000.0,
            d.get(1).copied().unwrap_or(f64::NAN) / 1000.0,
            budget.as_secs_f64(),
            if on_time { "met" } else { "MISSED" }
        );
        let after = since(plan, p.answered);
        let window_end = after + u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        let (nw, during) = latency(
            tally
                .polls
                .iter()
                .filter(|s| s.at_ms >= after && s.at_ms <= window_end)
                .copied(),
        );
        show("polls while it spread", nw, budget.as_secs_f64(), &during);
        summary.push_str(&format!(
            " propagation_max_s={max_s:.3} propagation_target_s={:.1} reached={reached} missed={missed} \
             spread_p99_ms={:.2}",
            budget.as_secs_f64(),
            during.get(2).copied().unwrap_or(f64::NAN)
        ));
    }
    println!("{summary}");
    if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn ratio(count: usize, window: f64) -> f64 {
    count as f64 / window
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("delivery-fleet-sim: {}", SimError::Runtime(err));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("delivery-fleet-sim: {err}");
            ExitCode::from(2)
        }
    }
}
