//! A Teletraan-style deploy service built only from Portcullis crates: token authentication,
//! tiered roles on environments and stages, four-eyes approval of production deploys, and a
//! write-before-act audit log. It records deploy requests; it does not run deploys.
//!
//! ```sh
//! cargo run --example deploy-gate                       # built-in config, data in ./deploy-gate-data
//! cargo run --example deploy-gate -- --help
//! cargo run --example deploy-gate -- --print-config > deploy-gate.toml
//! cargo run --example deploy-gate -- --config deploy-gate.toml
//! ```
//!
//! See `examples/deploy-gate/README.md` for a curl walkthrough.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line service prints its banner and start-up errors"
)]

mod app;
mod config;
mod deploys;
#[cfg(feature = "postgres")]
mod fleet;
#[path = "../common/tls.rs"]
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ABOUT: &str = "A Teletraan-style deploy gate: who may ship what, where, with whose approval.";

const LONG_ABOUT: &str = "\
A Teletraan-style deploy gate built from the Portcullis crates. It records deploy requests
(it does not run deploys) after authenticating the caller, checking their role on the
environment or stage, getting a second person's approval for production stages, and
writing the decision to a tamper-evident audit log before anything is stored.

ENDPOINTS (send `Authorization: token <t>` or `Authorization: Bearer <t>`)
  POST /v1/login                              {username, password} -> session JWT (if configured)
  POST /v1/envs/{env}/{stage}/deploys?build_id=..&description=..[&approver=NAME]
                                              needs OPERATOR on the env or stage; production
                                              stages answer 202 and wait for the approver
  GET  /v1/envs/{env}/{stage}/deploys         the stage's deploys (READER)
  GET  /v1/deploys/{id}                       one deploy (READER)
  GET  /v1/approvals/{id}                     an approval and its votes
  POST /v1/approvals/{id}/approve|deny        {factor: in_app|totp|duo, code} as the approver
  GET|POST /v1/envs/{env}/user_roles          list, or grant {name, role} (ADMIN to change)
  GET|PUT|DELETE /v1/envs/{env}/user_roles/{name}
  ... the same for group_roles, and token_roles (POST returns a new script token once)
  POST /v1/users/me/tokens                    {name, ttl_days} -> a personal token, shown once
  GET  /v1/users/me/tokens[?all=true]         your personal tokens (never their secrets)
  DELETE /v1/users/me/tokens/{id}             revokes one of them
  POST /v1/users/me/totp                      start TOTP enrollment -> otpauth:// URI, shown once
  POST /v1/users/me/totp/confirm              {code} -> confirms it with a first valid code
  GET  /v1/audit?resource=env:NAME&actor=..&action=..&correlation_id=..&after=..&limit=..
                                              the audit log, for ADMINs of the resource; an
                                              env's includes its stages (&exact=true: not)
  GET  /health                                unprotected liveness

CONFIGURATION
  A TOML file whose sections switch parts on: [authentication], [authorization], [approval],
  [audit]. A missing section means closed: no [authentication] -> every request is 401,
  no [authorization] -> every action is 403, no [approval] -> production deploys are 403,
  no [audit] -> every action is 503. Without --config the built-in configuration is used
  (print it with --print-config): script, personal and session tokens; Teletraan's roles;
  one in-app or TOTP approval for stages named prod/production; audit to SQLite.
  [store] url = \"postgres://…\" (built with --features postgres) moves every store, the audit
  log and the keys to one PostgreSQL that several instances share.

FIRST START
  The bootstrap admin (`bootstrap_admin` in [authorization], `admin` by default) gets ADMIN
  on system:* and a personal token, printed once on standard output. Keys are generated into
  DATA_DIR/secrets.toml (mode 0600); the stores are SQLite files in DATA_DIR.

PASSWORDS
  `deploy-gate hash-password` reads a password (from the terminal without echo, asked twice;
  or from standard input, one line) and prints its PBKDF2 hash for the users file.";

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "deploy-gate", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// The configuration file (TOML). Without it, the built-in configuration is used.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides `data_dir`: where the SQLite stores and generated keys live.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides `listen` (e.g. 127.0.0.1:0 for any free port; the bound address is printed).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Prints the built-in configuration and exits.
    #[arg(long)]
    print_config: bool,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    log_level: tracing::Level,
    /// A task other than serving.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Tasks other than serving.
#[derive(Debug, Subcommand)]
enum Command {
    /// Prints the hash of a password for `password_hash` in the users file
    /// (`pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX`). The password is read from the
    /// terminal without echo (asked twice), or from standard input (one line), never from
    /// the command line.
    HashPassword {
        /// PBKDF2-HMAC-SHA256 iterations (at least 10,000).
        #[arg(long, default_value_t = 600_000)]
        iterations: u32,
    },
}

/// Reads the password for `hash-password`: from the terminal without echo (twice, and both
/// must match), or the first line of standard input.
fn read_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_owned())
}

fn hash_password(iterations: u32) -> Result<String, String> {
    use portcullis::directory::{Password, PasswordHash};
    let password = Password::new(read_password()?).map_err(|e| e.to_string())?;
    let hash =
        PasswordHash::create_with_iterations(&password, iterations).map_err(|e| e.to_string())?;
    Ok(hash.to_string())
}

async fn run(cli: Cli) -> Result<(), String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path),
        None => Config::default_config(),
    }
    .map_err(|e| e.to_string())?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    // [tls] loads (and fails) before any store is opened.
    let tls = config
        .tls
        .as_ref()
        .map(tls::TlsConfig::open)
        .transpose()
        .map_err(|e| e.to_string())?;
    let app = app::build(&config).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some((admin, token)) = &app.bootstrap {
        println!("BOOTSTRAP_TOKEN user={admin} token={token}");
        println!(
            "  (shown once: the personal token of the bootstrap admin, who has ADMIN on system:*)"
        );
    }
    for part in &app.closed {
        println!("closed: {part}");
    }
    if let (Some(checkpoints), Some(audit)) = (&app.checkpoints, &config.audit) {
        println!("{}", checkpoints.banner(&audit.url, &config.data_dir));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() {
        tls::warn_if_plain_and_exposed(&address, "deploy-gate");
    }
    println!("LISTENING {scheme}://{address}");
    println!("data in {}", config.data_dir.display());
    let served = match tls {
        Some(tls) => serve_tls(&tls, listener, app.router).await,
        None => axum::serve(listener, app.router)
            .with_graceful_shutdown(portcullis::http::shutdown_signal())
            .await
            .map_err(|e| e.to_string()),
    };
    // Outcomes are written after their answers: write what is still queued before exiting,
    // then sign the head it ends in.
    if let Some(audit) = &app.audit {
        if let Err(err) = audit.flush().await {
            tracing::error!(error = %err, "the audit log could not be flushed at shutdown");
        }
        if let Some(checkpoints) = app.checkpoints {
            checkpoints.finish(audit).await;
        }
    }
    served
}

/// Serves `router` over TLS per `[tls]`, with the identity files watched for rotation.
#[cfg(feature = "tls")]
async fn serve_tls(
    tls: &tls::Tls,
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> Result<(), String> {
    let watch = tls.watch();
    let served = tls
        .server()
        .map_err(|e| e.to_string())?
        .serve(listener, router, portcullis::http::shutdown_signal())
        .await
        .map_err(|e| e.to_string());
    watch.abort();
    served
}

/// Without the `tls` feature there is no [`tls::Tls`] to serve.
#[cfg(not(feature = "tls"))]
async fn serve_tls(
    tls: &tls::Tls,
    _listener: tokio::net::TcpListener,
    _router: axum::Router,
) -> Result<(), String> {
    match *tls {}
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashPassword { iterations }) = cli.command {
        return match hash_password(iterations) {
            Ok(hash) => {
                println!("{hash}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("deploy-gate hash-password: {err}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.print_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("deploy-gate: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("deploy-gate: {err}");
            ExitCode::FAILURE
        }
    }
}
