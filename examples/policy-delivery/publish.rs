//! `policy-delivery publish`: what CI runs — a bundle folder packed as OPA's tarball,
//! optionally signed as `opa sign` signs it, uploaded as a new revision of an artifact.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis::policy::{Algorithm, Bundle, BundleLimits, BundleSigner, SIGNATURES_FILE};

/// `publish`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    /// The delivery server, e.g. http://127.0.0.1:8282.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The artifact to publish a revision of.
    #[arg(long)]
    artifact: String,
    /// The bundle folder (`.manifest`, `*.rego`, `data.json`).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// A file holding the publisher's token.
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// Sign the bundle with this key: a PEM private key, or the HMAC secret.
    #[arg(long, value_name = "FILE", requires = "signing_alg")]
    signing_key: Option<PathBuf>,
    /// The signing algorithm (RS256, ES256, EdDSA, HS256, …).
    #[arg(long, value_name = "ALG")]
    signing_alg: Option<String>,
    /// The key id written in the signature (`kid`).
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// For an https:// server whose certificate is an X.509-SVID (`[tls]`): the trust bundle
    /// (PEM) of its trust domain. Needs `--server-id`.
    #[arg(long, value_name = "FILE", requires = "server_id")]
    trust_bundle: Option<PathBuf>,
    /// The SPIFFE ID the server's SVID must name (with `--trust-bundle`).
    #[arg(long, value_name = "SPIFFE_ID", requires = "trust_bundle")]
    server_id: Option<String>,
}

/// The HTTP client: one that verifies the server's SVID against `--trust-bundle` and
/// authorizes `--server-id` when given, else the system's roots. No redirects either way:
/// the token goes to `--server` only.
fn client(args: &PublishArgs) -> Result<reqwest::Client, String> {
    let builder = match (&args.trust_bundle, &args.server_id) {
        (Some(bundle), Some(id)) => spiffe_server(bundle, id)?,
        _ => reqwest::Client::builder(),
    };
    builder
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())
}

/// A client builder that accepts only a server whose SVID verifies to `bundle` and names
/// `id` (no client certificate: the token authenticates the publisher).
#[cfg(feature = "tls")]
fn spiffe_server(bundle: &Path, id: &str) -> Result<reqwest::ClientBuilder, String> {
    use portcullis::tls::identity::{
        BundleSet, IdentitySource, Material, PeerIds, SpiffeId, TrustBundle, crypto_provider,
    };
    let id: SpiffeId = id.parse().map_err(|e| format!("--server-id {id:?}: {e}"))?;
    let bundle = TrustBundle::from_pem(id.trust_domain(), &read(bundle)?)
        .map_err(|e| format!("--trust-bundle {}: {e}", bundle.display()))?;
    let source = IdentitySource::fixed(
        Material {
            svid: None,
            bundles: BundleSet::new().with(bundle),
        },
        crypto_provider(),
    );
    portcullis::tls::reqwest_client(&source, PeerIds::exactly(id)).map_err(|e| e.to_string())
}

/// Without the `tls` feature there is no SPIFFE server verification.
#[cfg(not(feature = "tls"))]
fn spiffe_server(_bundle: &Path, _id: &str) -> Result<reqwest::ClientBuilder, String> {
    Err("--trust-bundle and --server-id need a binary built with the `tls` feature".into())
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `files` as a gzipped tarball, in path order, with fixed metadata: the same folder
/// always packs to the same bytes, hence the same revision id.
fn pack(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("packing the bundle: {e}");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, bytes.as_slice())
            .map_err(fail)?;
    }
    let mut gz = builder.into_inner().map_err(fail)?;
    gz.flush().map_err(fail)?;
    gz.finish().map_err(fail)
}

/// Packs, signs (if asked) and uploads; the server's answer on success.
pub(crate) async fn publish(args: PublishArgs) -> Result<String, String> {
    let token_text = String::from_utf8(read(&args.token_file)?)
        .map_err(|_| format!("{}: not UTF-8", args.token_file.display()))?;
    let token = token_text.trim();
    if token.is_empty() {
        return Err(format!(
            "{}: the token file is empty",
            args.token_file.display()
        ));
    }
    let mut files = Bundle::files_from_dir(&args.artifact, &args.dir, &BundleLimits::default())
        .map_err(|e| e.to_string())?;
    files.retain(|(path, _)| path.trim_start_matches("./") != SIGNATURES_FILE);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    if let (Some(key), Some(alg)) = (&args.signing_key, &args.signing_alg) {
        let algorithm: Algorithm = alg
            .parse()
            .map_err(|_| format!("--signing-alg: unknown algorithm {alg:?}"))?;
        let material = read(key)?;
        let mut signer = if algorithm.is_hmac() {
            BundleSigner::hmac(algorithm, material.trim_ascii())
        } else {
            BundleSigner::from_pem(algorithm, &material)
        }
        .map_err(|e| format!("--signing-key: {e}"))?;
        if let Some(id) = &args.key_id {
            signer = signer.key_id(id);
        }
        let signature = signer
            .sign(&args.artifact, &files)
            .map_err(|e| e.to_string())?;
        files.insert(0, (SIGNATURES_FILE.to_owned(), signature));
    }
    let tarball = pack(&files)?;
    let url = format!(
        "{}/v1/artifacts/{}/revisions",
        args.server.trim_end_matches('/'),
        args.artifact
    );
    let response = client(&args)?
        .post(&url)
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(tarball)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or(body);
        Err(format!(
            "the server refused the revision ({status}): {message}"
        ))
    }
}
