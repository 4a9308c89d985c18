//! The command-line side: `login` (a session token into a private file), `process` (the
//! AWS `credential_process` protocol) and `hash-password` (for a users file).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use serde_json::{Value, json};

/// Where `login` reads the password from when it is set (scripts, tests).
pub(crate) const PASSWORD_ENV: &str = "CREDENTIAL_BROKER_PASSWORD";

/// A password: from the terminal without echo, else the first line of standard input.
fn read_password(prompt: &str) -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(prompt).map_err(|e| e.to_string());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_owned())
}

/// `hash-password`: the PBKDF2 hash of a password, for `password_hash` in a users file.
/// On a terminal the password is asked twice, without echo.
pub(crate) fn hash_password(iterations: u32) -> Result<String, String> {
    use portcullis::directory::{Password, PasswordHash};
    let password = read_password("password: ")?;
    if std::io::stdin().is_terminal() && read_password("again: ")? != password {
        return Err("the two passwords differ".into());
    }
    let password = Password::new(password).map_err(|e| e.to_string())?;
    PasswordHash::create_with_iterations(&password, iterations)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

fn message(answer: &Value) -> &str {
    answer
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no reason given")
}

/// Writes `text` to `path`, readable by its owner only, replacing what was there: a new
/// file (mode 0600) renamed over it, so the token is never in a file others may read.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let shown = path.display();
    let mut staged = path.as_os_str().to_owned();
    staged.push(format!(".{}.new", std::process::id()));
    let staged = std::path::PathBuf::from(staged);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&staged)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
        })
        .and_then(|()| std::fs::rename(&staged, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staged);
        return Err(format!("{shown}: {e}"));
    }
    Ok(())
}

/// "60 minutes", "2 hours", "90 seconds".
fn lasting(seconds: u64) -> String {
    match seconds {
        s if s % 3600 == 0 && s >= 7200 => format!("{} hours", s / 3600),
        3600 => "1 hour".into(),
        s if s % 60 == 0 && s >= 60 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// `login`: asks the broker for a session and writes its token to `token_file` (mode
/// 0600), for `process` to use; says how long the session lasts.
pub(crate) async fn login(url: &str, username: &str, token_file: &Path) -> Result<(), String> {
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(password) => password,
        Err(_) => read_password(&format!("password for {username}: "))?,
    };
    let response = reqwest::Client::new()
        .post(format!("{}/v1/login", url.trim_end_matches('/')))
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
    let lasts = answer
        .get("expires_in")
        .and_then(Value::as_u64)
        .map_or_else(|| "a while".to_owned(), lasting);
    let file = token_file.display();
    eprintln!(
        "logged in as {username}: the session lasts {lasts}; its token is in {file} (mode 0600). \
         `credential-broker process --url {url} --token-file {file}` uses it; log in again when \
         it ends."
    );
    Ok(())
}

/// `credential_process` mode: print the broker's answer, nothing else, on stdout.
pub(crate) async fn process(
    url: &str,
    token_file: &Path,
    roles: &[String],
    duration_seconds: Option<u64>,
) -> Result<(), String> {
    let token = std::fs::read_to_string(token_file).map_err(|e| {
        format!(
            "{}: {e} (run `credential-broker login --url {url} --username NAME --token-file {}` first)",
            token_file.display(),
            token_file.display()
        )
    })?;
    let mut body = serde_json::Map::new();
    if !roles.is_empty() {
        body.insert("roles".into(), json!(roles));
    }
    if let Some(secs) = duration_seconds {
        body.insert("duration_seconds".into(), json!(secs));
    }
    let response = reqwest::Client::new()
        .post(format!("{}/v1/credentials", url.trim_end_matches('/')))
        .bearer_auth(token.trim())
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("the broker could not be reached: {e}"))?;
    let status = response.status();
    let mut answer: Value = response
        .json()
        .await
        .map_err(|e| format!("the broker answered {status} with no JSON: {e}"))?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "the session in {} has ended or is not valid here ({}): run `credential-broker login` again",
            token_file.display(),
            message(&answer)
        ));
    }
    if !status.is_success() {
        return Err(format!(
            "the broker refused ({status}): {}",
            message(&answer)
        ));
    }
    if let Some(map) = answer.as_object_mut() {
        map.remove("Vended");
    }
    println!("{answer}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lengths_read_naturally() {
        assert_eq!(lasting(3600), "1 hour");
        assert_eq!(lasting(7200), "2 hours");
        assert_eq!(lasting(1800), "30 minutes");
        assert_eq!(lasting(5400), "90 minutes");
        assert_eq!(lasting(45), "45 seconds");
    }

    #[test]
    fn the_token_file_is_private_and_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("credential-broker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        write_private(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
