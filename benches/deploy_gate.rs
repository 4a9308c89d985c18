//! Load test of the deploy-gate example: authenticated + authorized + audited deploy
//! requests against the same server's unprotected `/health`, both driven by the same
//! closed-loop load generator (keep-alive HTTP/1.1 connections, one request in flight each).
//!
//! ```sh
//! cargo bench --bench deploy_gate                       # 64 connections, 10 s per endpoint
//! LOAD_CONNECTIONS=32 LOAD_SECONDS=20 cargo bench --bench deploy_gate
//! LOAD_AUDIT=jsonl://audit cargo bench --bench deploy_gate   # the JSONL audit log instead
//! ```
//!
//! `scripts/load-deploy-gate` measures the same with `wrk` against the release binary.
//!
//! The target (issue 7): deploys reach at least 25% of the health endpoint's throughput,
//! with no errors. Server and load generator share the machine, as they would in a
//! single-host load test with `oha` or `wrk`.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a load test prints its results and stops at the first setup failure"
)]

// The example's own modules, so the bench serves exactly what the binary serves; the parts
// only `main.rs` uses are dead here.
#[path = "../examples/deploy-gate/app.rs"]
#[allow(dead_code, reason = "shared with the example binary")]
mod app;
#[path = "../examples/deploy-gate/config.rs"]
#[allow(dead_code, reason = "shared with the example binary")]
mod config;
#[path = "../examples/deploy-gate/deploys.rs"]
#[allow(dead_code, reason = "shared with the example binary")]
mod deploys;
#[cfg(feature = "postgres")]
#[path = "../examples/deploy-gate/fleet.rs"]
mod fleet;
#[path = "../examples/common/tls.rs"]
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    ok: u64,
    errors: u64,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Builds request `n` on a client.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// Drives `connections` closed loops of `request` for `seconds`.
async fn load(
    connections: u64,
    seconds: u64,
    request: MakeRequest,
    expect: reqwest::StatusCode,
) -> Run {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (ok, errors, request) = (ok.clone(), errors.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut latencies = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = request(&client, c * 1_000_000 + n).send().await;
                n += 1;
                match result {
                    Ok(r) if r.status() == expect => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                        latencies
                            .push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    Ok(r) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            println!(
                                "unexpected {}: {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            );
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            println!("request failed: {e}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| {
        let i = ((all.len() as f64) * q) as usize;
        all.get(i.min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Run {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p50_us: at(0.5),
        p99_us: at(0.99),
    }
}

fn report(name: &str, run: &Run) -> f64 {
    let rate = run.ok as f64 / run.seconds;
    println!(
        "{name:<40} {rate:>9.0} req/s  ok {:>8}  errors {:>3}  p50 {:>6} µs  p99 {:>6} µs",
        run.ok, run.errors, run.p50_us, run.p99_us
    );
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and expects a
    // quick run: check the setup with a one-second load.
    let quick = !std::env::args().any(|a| a == "--bench");
    let connections = env_number("LOAD_CONNECTIONS", 64);
    let seconds = if quick {
        1
    } else {
        env_number("LOAD_SECONDS", 10)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = std::env::temp_dir().join(format!("deploy-gate-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = config::Config::default_config().unwrap();
        config.data_dir = dir.clone();
        if let (Ok(url), Some(audit)) = (std::env::var("LOAD_AUDIT"), config.audit.as_mut()) {
            audit.url = url;
        }
        let app = app::build(&config).await.unwrap();
        let (_, token) = app
            .bootstrap
            .clone()
            .expect("a fresh data dir prints the bootstrap token");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app.router).await.unwrap() });

        println!("{connections} connections, {seconds} s per endpoint");
        let health_url = format!("{base}/health");
        let health = load(
            connections,
            seconds,
            Arc::new(move |c: &reqwest::Client, _| c.get(&health_url)),
            reqwest::StatusCode::OK,
        )
        .await;
        let health_rate = report("GET /health (unprotected)", &health);

        let auth = format!("token {token}");
        let deploy_base = base.clone();
        let deploys = load(
            connections,
            seconds,
            Arc::new(move |c: &reqwest::Client, n| {
                c.post(format!(
                    "{deploy_base}/v1/envs/checkout/staging/deploys?build_id={n}&description=load"
                ))
                .header("authorization", &auth)
            }),
            reqwest::StatusCode::CREATED,
        )
        .await;
        let deploy_rate = report("POST deploy (authn+authz+audit+store)", &deploys);
        println!(
            "deploys reach {:.1}% of the health endpoint's throughput (target ≥ 25%, no errors)",
            100.0 * deploy_rate / health_rate
        );
        assert_eq!(
            health.errors + deploys.errors,
            0,
            "the load test saw errors"
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
