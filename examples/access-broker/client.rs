//! The command-line client: log in, call a service through the broker, or run a bulk job
//! with a progress bar.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Where the client keeps the session token between calls.
fn read_token(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file)
        .map(|t| t.trim().to_owned())
        .map_err(|e| format!("{}: {e} (run `access-broker login` first)", file.display()))
}

fn message(answer: &Value) -> &str {
    answer
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no reason given")
}

/// `login`: asks the broker for a session token and writes it to `token_file` (mode 600).
pub(crate) async fn login(url: &str, username: &str, token_file: &Path) -> Result<(), String> {
    let password = match std::env::var("ACCESS_BROKER_PASSWORD") {
        Ok(password) => password,
        // On a terminal without echo; otherwise the first line of standard input.
        Err(_) if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            rpassword::prompt_password(format!("password for {username}: "))
                .map_err(|e| e.to_string())?
        }
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let response = reqwest::Client::new()
        .post(format!("{}/login", url.trim_end_matches('/')))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .map_err(|e| format!("the broker could not be reached: {e}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    let token = answer
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("login refused ({status}): {}", message(&answer)))?;
    write_private(token_file, token)?;
    eprintln!("logged in as {username}; token in {}", token_file.display());
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `call`: one request through the broker; the response body on stdout, an error status
/// as a failure.
pub(crate) async fn call(
    url: &str,
    token_file: &Path,
    method: &str,
    path: &str,
    data: Option<&str>,
) -> Result<(), String> {
    let token = read_token(token_file)?;
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{method:?} is not an HTTP method"))?;
    let path = path.trim_start_matches('/');
    let mut request = reqwest::Client::new()
        .request(
            method,
            format!("{}/proxy/{path}", url.trim_end_matches('/')),
        )
        .bearer_auth(token);
    if let Some(data) = data {
        request = request
            .header("content-type", "application/json")
            .body(data.to_owned());
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("the broker could not be reached: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    std::io::stdout()
        .write_all(&body)
        .and_then(|()| std::io::stdout().write_all(b"\n"))
        .map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// What `bulk` sends.
pub(crate) struct BulkArgs<'a> {
    pub(crate) url: &'a str,
    pub(crate) token_file: &'a Path,
    pub(crate) method: &'a str,
    pub(crate) path_template: &'a str,
    pub(crate) body_template: Option<&'a str>,
    pub(crate) ids_file: &'a Path,
    pub(crate) concurrency: usize,
    pub(crate) rate: u32,
}

/// `bulk`: starts a bulk job and follows it with a progress bar; Ctrl-C cancels it.
pub(crate) async fn bulk(args: BulkArgs<'_>) -> Result<(), String> {
    let token = read_token(args.token_file)?;
    let ids: Vec<String> = std::fs::read_to_string(args.ids_file)
        .map_err(|e| format!("{}: {e}", args.ids_file.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let base = args.url.trim_end_matches('/');
    let path = format!("/proxy/{}", args.path_template.trim_start_matches('/'));
    let http = reqwest::Client::new();
    let mut job = json!({
        "method": args.method.to_ascii_uppercase(),
        "path_template": path,
        "ids": ids,
        "concurrency": args.concurrency,
        "rate_per_second": args.rate,
    });
    if let (Some(body), Some(map)) = (args.body_template, job.as_object_mut()) {
        map.insert("body_template".into(), json!(body));
        map.insert("content_type".into(), json!("application/json"));
    }
    let response = http
        .post(format!("{base}/api/bulk"))
        .bearer_auth(&token)
        .json(&job)
        .send()
        .await
        .map_err(|e| format!("the broker could not be reached: {e}"))?;
    let status = response.status();
    let started: Value = response.json().await.unwrap_or(Value::Null);
    let id = started
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("bulk refused ({status}): {}", message(&started)))?
        .to_owned();
    let total = started.get("total").and_then(Value::as_u64).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} ({per_sec}, {eta} left) {msg}",
        )
        .map_err(|e| e.to_string())?,
    );
    bar.set_message("0 failed");
    let mut cancelled = false;
    let last = loop {
        let view: Value = http
            .get(format!("{base}/api/bulk/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        bar.set_position(count(&view, "done"));
        bar.set_message(format!(
            "{} failed{}",
            count(&view, "failed"),
            if cancelled { ", cancelling…" } else { "" }
        ));
        if view.get("state").and_then(Value::as_str) != Some("running") {
            break view;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                cancelled = true;
                // Shown whether or not the bar is (it is hidden when stderr is no terminal).
                bar.suspend(|| {
                    eprintln!("cancelling…: ids under way finish, no new ones start");
                });
                let _ = http
                    .post(format!("{base}/api/bulk/{id}/cancel"))
                    .bearer_auth(&token)
                    .send()
                    .await;
            }
        }
    };
    // The bar goes (`finish` would fill it to the end, as if every id had been sent), and
    // its line with it: what follows starts on a line of its own.
    bar.finish_and_clear();
    let failures: Vec<&Value> = last
        .get("results")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter(|r| r.get("error").is_some()).collect())
        .unwrap_or_default();
    for failure in &failures {
        eprintln!(
            "{}: HTTP {} {}",
            failure.get("id").and_then(Value::as_str).unwrap_or("?"),
            failure.get("status").and_then(Value::as_u64).unwrap_or(0),
            failure
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
    }
    eprintln!("{}", summary(&last));
    println!("{last}");
    match (last.get("state").and_then(Value::as_str), failures.len()) {
        (Some("done"), 0) => Ok(()),
        (state, _) => Err(format!(
            "bulk job {id} {}: {} failed, {} never sent",
            state.unwrap_or("ended"),
            count(&last, "failed"),
            count(&last, "not_started"),
        )),
    }
}

/// A number from a job's view (0 if missing).
fn count(view: &Value, name: &str) -> u64 {
    view.get(name).and_then(Value::as_u64).unwrap_or(0)
}

/// One line on how a job ended: what was sent, what failed, what was never sent.
fn summary(view: &Value) -> String {
    let state = view.get("state").and_then(Value::as_str).unwrap_or("ended");
    let (total, done) = (count(view, "total"), count(view, "done"));
    let (succeeded, failed) = (count(view, "succeeded"), count(view, "failed"));
    let mut line =
        format!("{state}: {done} of {total} sent ({succeeded} succeeded, {failed} failed)");
    let never = count(view, "not_started");
    if never > 0 {
        line.push_str(&format!(", {never} never sent"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_was_sent_failed_and_never_sent() {
        let cancelled = json!({
            "state": "cancelled", "total": 40, "done": 8, "succeeded": 7, "failed": 1,
            "not_started": 32,
        });
        assert_eq!(
            summary(&cancelled),
            "cancelled: 8 of 40 sent (7 succeeded, 1 failed), 32 never sent"
        );
        let done = json!({
            "state": "done", "total": 4, "done": 4, "succeeded": 4, "failed": 0,
            "not_started": 0,
        });
        assert_eq!(summary(&done), "done: 4 of 4 sent (4 succeeded, 0 failed)");
    }
}
