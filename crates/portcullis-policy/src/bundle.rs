//! [`Bundle`]: policies and data in OPA's bundle layout, read from a folder or a gzipped
//! tarball, checked against its manifest's roots.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::signing::SIGNATURES_FILE;
use crate::{BundleVerifier, PolicyError};

/// Caps on what a bundle may hold, checked while reading (a tarball is never unpacked
/// beyond them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BundleLimits {
    /// Files in the bundle. Default 10,000.
    pub max_files: usize,
    /// Bytes of one file. Default 16 MiB.
    pub max_file_bytes: u64,
    /// Bytes of all files together, uncompressed. Default 64 MiB.
    pub max_total_bytes: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_files: 10_000,
            max_file_bytes: 16 << 20,
            max_total_bytes: 64 << 20,
        }
    }
}

/// Builders: the struct is `#[non_exhaustive]`, so it can gain limits without breaking
/// callers; start from `BundleLimits::default()`.
impl BundleLimits {
    /// Sets [`max_files`](Self::max_files).
    #[must_use]
    pub fn with_max_files(mut self, max_files: usize) -> Self {
        self.max_files = max_files;
        self
    }

    /// Sets [`max_file_bytes`](Self::max_file_bytes).
    #[must_use]
    pub fn with_max_file_bytes(mut self, max_file_bytes: u64) -> Self {
        self.max_file_bytes = max_file_bytes;
        self
    }

    /// Sets [`max_total_bytes`](Self::max_total_bytes).
    #[must_use]
    pub fn with_max_total_bytes(mut self, max_total_bytes: u64) -> Self {
        self.max_total_bytes = max_total_bytes;
        self
    }
}

/// The `.manifest` file: the bundle's revision, the parts of `data` it owns, and the Rego
/// version its policies are written in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Manifest {
    /// The revision (e.g. a commit id); empty if the manifest names none.
    #[serde(default)]
    pub revision: String,
    /// `/`-separated paths under `data` this bundle owns; `[""]` (the default) is all of
    /// it. Every package and data document must lie under one of them, and no two active
    /// bundles may own overlapping roots.
    #[serde(default = "all_roots")]
    pub roots: Vec<String>,
    /// The Rego version of the bundle's policies: `1` (the default: OPA 1.x syntax) or `0`
    /// (written for OPA before 1.0: rule bodies without `if`, sets without `contains`).
    #[serde(default)]
    pub rego_version: Option<u8>,
    /// Per-file exceptions to `rego_version`: path inside the bundle (a leading `/` is
    /// optional) → version. Paths only: glob patterns are refused.
    #[serde(default)]
    pub file_rego_versions: BTreeMap<String, u8>,
}

/// The `.manifest` keys OPA reads.
const MANIFEST_KEYS: &[&str] = &[
    "revision",
    "roots",
    "rego_version",
    "file_rego_versions",
    "wasm",
    "metadata",
];

fn all_roots() -> Vec<String> {
    vec![String::new()]
}

impl Manifest {
    /// Parses a `.manifest` file (JSON; fields other than `revision`, `roots`,
    /// `rego_version` and `file_rego_versions` are ignored, as OPA does for ones it does
    /// not use).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Bundle`] if it is not a JSON object of that shape, a root is not a
    /// plain path, a Rego version is neither 0 nor 1, or a `file_rego_versions` key is a
    /// pattern.
    pub fn parse(bundle: &str, bytes: &[u8]) -> Result<Manifest, PolicyError> {
        let raw: Value = serde_json::from_slice(bytes)
            .map_err(|e| PolicyError::bundle(bundle, format!(".manifest: {e}")))?;
        // OPA (Go's encoding/json) matches keys case-insensitively: `Roots` would be its
        // roots while this reads `roots`. A key that differs from one OPA reads only in
        // case is refused, not ignored.
        if let Some(object) = raw.as_object() {
            let fold = |key: &str| -> String {
                key.chars()
                    .flat_map(char::to_uppercase)
                    .flat_map(char::to_lowercase)
                    .collect()
            };
            for key in object.keys() {
                let folded = fold(key);
                if let Some(known) = MANIFEST_KEYS
                    .iter()
                    .find(|known| **known != key && fold(known) == folded)
                {
                    return Err(PolicyError::bundle(
                        bundle,
                        format!(
                            ".manifest: key {key:?} differs from {known:?} only in case \
                             (OPA would read it as {known:?})"
                        ),
                    ));
                }
            }
        }
        // OPA would evaluate the listed wasm modules instead of the Rego that was checked
        // and tested here: such a bundle means something else to a stock OPA.
        if raw
            .get("wasm")
            .is_some_and(|w| !(w.is_null() || w.as_array().is_some_and(Vec::is_empty)))
        {
            return Err(PolicyError::bundle(
                bundle,
                ".manifest: wasm modules are not supported (portcullis evaluates the Rego)",
            ));
        }
        let mut manifest: Manifest = serde_json::from_value(raw)
            .map_err(|e| PolicyError::bundle(bundle, format!(".manifest: {e}")))?;
        // The revision is shown to operators and compared with what hosts report: no
        // control or bidirectional-formatting characters that would show it as another.
        if let Some(c) = manifest
            .revision
            .chars()
            .find(|c| portcullis_core::is_unfit_for_label(*c))
        {
            return Err(PolicyError::bundle(
                bundle,
                format!(
                    ".manifest: the revision holds U+{:04X}, a hidden character or a line \
                     break or space other than U+0020",
                    u32::from(c)
                ),
            ));
        }
        let versions = manifest
            .rego_version
            .iter()
            .chain(manifest.file_rego_versions.values());
        if let Some(version) = versions.into_iter().find(|v| **v > 1) {
            return Err(PolicyError::bundle(
                bundle,
                format!(".manifest: rego_version {version} is not 0 or 1"),
            ));
        }
        let mut files = BTreeMap::new();
        for (path, version) in std::mem::take(&mut manifest.file_rego_versions) {
            if path.contains(['*', '?', '[', '{']) {
                return Err(PolicyError::bundle(
                    bundle,
                    format!(
                        ".manifest: file_rego_versions key {path:?} is a pattern; list each file's path"
                    ),
                ));
            }
            files.insert(clean_path(bundle, &path)?, version);
        }
        manifest.file_rego_versions = files;
        for root in &manifest.roots {
            if root.split('/').any(|part| part.is_empty()) && !root.is_empty() {
                return Err(PolicyError::bundle(
                    bundle,
                    format!(".manifest: root {root:?} has an empty segment"),
                ));
            }
        }
        Ok(manifest)
    }

    /// The Rego version (0 or 1) of the policy file at `path` inside the bundle.
    pub fn rego_version_of(&self, path: &str) -> u8 {
        let path = path.trim_start_matches('/');
        self.file_rego_versions
            .get(path)
            .or(self.rego_version.as_ref())
            .copied()
            .unwrap_or(1)
    }

    /// The manifest as JSON, as [`Bundle::to_tar_gz`] writes it.
    fn to_json(&self) -> Value {
        let mut manifest = serde_json::json!({
            "revision": self.revision,
            "roots": self.roots,
        });
        if let Some(object) = manifest.as_object_mut() {
            if let Some(version) = self.rego_version {
                object.insert("rego_version".into(), version.into());
            }
            if !self.file_rego_versions.is_empty() {
                object.insert(
                    "file_rego_versions".into(),
                    serde_json::json!(self.file_rego_versions),
                );
            }
        }
        manifest
    }

    /// The roots, each as its segments (`""` is the empty list: everything).
    pub(crate) fn root_segments(&self) -> Vec<Vec<&str>> {
        self.roots
            .iter()
            .map(|root| {
                if root.is_empty() {
                    Vec::new()
                } else {
                    root.split('/').collect()
                }
            })
            .collect()
    }
}

/// One `.rego` file of a bundle.
#[derive(Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// Its path inside the bundle.
    pub path: String,
    /// Its source.
    pub source: String,
}

impl fmt::Debug for PolicyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyFile")
            .field("path", &self.path)
            .field("bytes", &self.source.len())
            .finish()
    }
}

/// A named bundle: a manifest, policy files and one merged data document.
///
/// Read with [`from_dir`](Bundle::from_dir), [`from_tar_gz`](Bundle::from_tar_gz) or
/// [`from_files`](Bundle::from_files). Reading checks the layout and the roots; whether the
/// policies compile and their tests pass is checked when the bundle is activated
/// ([`PolicyStore::activate`](crate::PolicyStore::activate)), together with the bundles
/// it will run beside.
#[derive(Clone, PartialEq)]
pub struct Bundle {
    name: String,
    manifest: Manifest,
    policies: Vec<PolicyFile>,
    data: Map<String, Value>,
    /// A signed bundle's files as they were verified, `.signatures.json` included: what
    /// is written to keep it, so that it verifies again when read back.
    signed: Option<Arc<Files>>,
}

/// A bundle's files as read: `(path, contents)`.
type Files = Vec<(String, Vec<u8>)>;

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("name", &self.name)
            .field("manifest", &self.manifest)
            .field("policies", &self.policies)
            .field("data_keys", &self.data.len())
            .field("signed", &self.signed.is_some())
            .finish()
    }
}

/// The longest bundle name.
const MAX_NAME: usize = 128;

pub(crate) fn check_name(name: &str) -> Result<(), PolicyError> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || name.starts_with('.')
    {
        return Err(PolicyError::bundle(
            name,
            "a bundle name is 1-128 of A-Z a-z 0-9 - _ . and does not start with a dot",
        ));
    }
    Ok(())
}

/// Normalises a path inside a bundle: `/`-separated, no leading `/` or `./`, no `..`.
pub(crate) fn clean_path(bundle: &str, raw: &str) -> Result<String, PolicyError> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(PolicyError::bundle(
                    bundle,
                    format!("path {raw:?} leaves the bundle"),
                ));
            }
            _ if part.contains('\\') || part.contains('\0') => {
                return Err(PolicyError::bundle(
                    bundle,
                    format!("path {raw:?} has a backslash or NUL"),
                ));
            }
            _ => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

impl Bundle {
    /// A bundle from `(path, contents)` pairs, as a folder or tarball lists them.
    ///
    /// `.manifest` is the manifest; `*.rego` files are policies; a `data.json` in folder
    /// `a/b` is the document at `data.a.b`. A signed bundle (one with a
    /// `.signatures.json`) is refused here — ignoring its signature would be worse; read
    /// it with [`verified`](Bundle::verified). YAML data is refused too; other files are
    /// ignored, as OPA does.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Bundle`] for a bad name, path, manifest or data, or a file that is
    /// not UTF-8; [`PolicyError::OutsideRoots`] if a package or document is outside the
    /// manifest's roots.
    pub fn from_files(
        name: &str,
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Bundle, PolicyError> {
        Bundle::read(name, files, false)
    }

    /// A signed bundle from `(path, contents)` pairs, read only after `verifier` accepts
    /// its `.signatures.json`: a JWS from a trusted key that lists every file with its
    /// digest ([`BundleVerifier::verify`]). An unsigned bundle is refused.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Signature`] if the signature is missing or refused; otherwise as
    /// [`from_files`](Bundle::from_files).
    pub fn verified(
        name: &str,
        files: Vec<(String, Vec<u8>)>,
        verifier: &BundleVerifier,
    ) -> Result<Bundle, PolicyError> {
        check_name(name)?;
        verifier.verify(name, &files)?;
        let signed = files.clone();
        let mut bundle = Bundle::read(name, files, true)?;
        bundle.signed = Some(Arc::new(signed));
        Ok(bundle)
    }

    fn read(
        name: &str,
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
        verified: bool,
    ) -> Result<Bundle, PolicyError> {
        check_name(name)?;
        let mut manifest = None;
        let mut policies = Vec::new();
        let mut data = Map::new();
        let mut seen = std::collections::BTreeSet::new();
        for (raw, bytes) in files {
            let path = clean_path(name, &raw)?;
            if !seen.insert(path.clone()) {
                return Err(PolicyError::bundle(name, format!("{path:?} appears twice")));
            }
            let (folder, file) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            match file {
                ".manifest" if folder.is_empty() => {
                    manifest = Some(Manifest::parse(name, &bytes)?);
                }
                SIGNATURES_FILE if folder.is_empty() && verified => {}
                SIGNATURES_FILE => {
                    return Err(PolicyError::bundle(
                        name,
                        format!(
                            "{path} found: a signed bundle is read with a verifier \
                             (Bundle::verified), never with its signature ignored"
                        ),
                    ));
                }
                "data.yaml" | "data.yml" => {
                    return Err(PolicyError::bundle(
                        name,
                        format!("{path}: YAML data is not supported; use data.json"),
                    ));
                }
                "data.json" => {
                    let value: Value = serde_json::from_slice(&bytes)
                        .map_err(|e| PolicyError::bundle(name, format!("{path}: {e}")))?;
                    let at: Vec<&str> = folder.split('/').filter(|s| !s.is_empty()).collect();
                    merge_at(name, &mut data, &at, value)?;
                }
                _ if file.ends_with(".wasm") => {
                    return Err(PolicyError::bundle(
                        name,
                        format!(
                            "{path}: wasm modules are not supported (portcullis evaluates the Rego)"
                        ),
                    ));
                }
                _ if file.ends_with(".rego") => {
                    let source = String::from_utf8(bytes)
                        .map_err(|_| PolicyError::bundle(name, format!("{path} is not UTF-8")))?;
                    policies.push(PolicyFile { path, source });
                }
                _ => {}
            }
        }
        policies.sort_by(|a, b| a.path.cmp(&b.path));
        let bundle = Bundle {
            name: name.to_owned(),
            manifest: manifest.unwrap_or_else(|| Manifest {
                roots: all_roots(),
                ..Manifest::default()
            }),
            policies,
            data,
            signed: None,
        };
        bundle.check_data_roots()?;
        Ok(bundle)
    }

    /// Reads the bundle in folder `dir` (recursively; symbolic links are refused).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Io`] if it cannot be read, a limit in `limits` is exceeded, or as
    /// [`from_files`](Bundle::from_files).
    pub fn from_dir(
        name: &str,
        dir: impl AsRef<Path>,
        limits: &BundleLimits,
    ) -> Result<Bundle, PolicyError> {
        Bundle::from_files(name, Bundle::files_from_dir(name, dir, limits)?)
    }

    /// The files of the bundle in folder `dir`, within `limits` and without reading them
    /// as a bundle yet: for [`verified`](Bundle::verified).
    ///
    /// # Errors
    ///
    /// As [`from_dir`](Bundle::from_dir), short of reading the bundle.
    pub fn files_from_dir(
        name: &str,
        dir: impl AsRef<Path>,
        limits: &BundleLimits,
    ) -> Result<Vec<(String, Vec<u8>)>, PolicyError> {
        check_name(name)?;
        let mut files = Vec::new();
        let mut total = 0;
        read_dir_into(name, dir.as_ref(), "", limits, &mut files, &mut total)?;
        Ok(files)
    }

    /// Reads a bundle from a gzipped tarball (OPA's bundle format), within `limits`.
    /// Only regular files and folders are accepted: links and devices are refused.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Bundle`] if it is not a gzipped tarball, holds something other than
    /// files and folders, or exceeds a limit; as [`from_files`](Bundle::from_files).
    pub fn from_tar_gz(
        name: &str,
        bytes: &[u8],
        limits: &BundleLimits,
    ) -> Result<Bundle, PolicyError> {
        Bundle::from_files(name, Bundle::files_from_tar_gz(name, bytes, limits)?)
    }

    /// The files of a gzipped tarball, within `limits` and without reading them as a
    /// bundle yet: for [`verified`](Bundle::verified).
    ///
    /// # Errors
    ///
    /// As [`from_tar_gz`](Bundle::from_tar_gz), short of reading the bundle.
    pub fn files_from_tar_gz(
        name: &str,
        bytes: &[u8],
        limits: &BundleLimits,
    ) -> Result<Vec<(String, Vec<u8>)>, PolicyError> {
        check_name(name)?;
        let broken = |e: std::io::Error| PolicyError::bundle(name, format!("tarball: {e}"));
        // Headers take space too; the total cap on file bytes is enforced below, this
        // only stops a decompression bomb of headers.
        let budget = limits
            .max_total_bytes
            .saturating_mul(2)
            .saturating_add(1 << 20);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes).take(budget));
        let mut files = Vec::new();
        let mut total: u64 = 0;
        for entry in archive.entries().map_err(broken)? {
            let entry = entry.map_err(broken)?;
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            let path = entry.path().map_err(broken)?;
            let path = path
                .to_str()
                .ok_or_else(|| PolicyError::bundle(name, "tarball: a path is not UTF-8"))?
                .to_owned();
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                return Err(PolicyError::bundle(
                    name,
                    format!("tarball: {path:?} is not a regular file ({kind:?})"),
                ));
            }
            let size = entry.size();
            admit(name, &path, size, limits, files.len(), &mut total)?;
            let mut contents = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry
                .take(limits.max_file_bytes.saturating_add(1))
                .read_to_end(&mut contents)
                .map_err(broken)?;
            if u64::try_from(contents.len()).unwrap_or(u64::MAX) != size {
                return Err(PolicyError::bundle(
                    name,
                    format!("tarball: {path:?} is truncated"),
                ));
            }
            files.push((path, contents));
        }
        Ok(files)
    }

    /// The bundle as a gzipped tarball: `.manifest`, the policy files and one top-level
    /// `data.json`. [`from_tar_gz`](Bundle::from_tar_gz) reads it back unchanged.
    ///
    /// A signed bundle (read with [`verified`](Bundle::verified)) is written as it was
    /// signed instead — every file byte for byte, `.signatures.json` included — so it
    /// reads back only through [`files_from_tar_gz`](Bundle::files_from_tar_gz) and
    /// [`verified`](Bundle::verified) again: a changed copy does not verify.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Io`] if writing to memory fails (it does not, short of allocation).
    pub fn to_tar_gz(&self) -> Result<Vec<u8>, PolicyError> {
        let fail = |e: std::io::Error| PolicyError::io(format!("bundle {:?}", self.name), e);
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mut add = |path: &str, bytes: &[u8]| -> Result<(), std::io::Error> {
            let mut header = tar::Header::new_gnu();
            header.set_size(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, bytes)
        };
        if let Some(files) = &self.signed {
            for (path, bytes) in files.iter() {
                add(&clean_path(&self.name, path)?, bytes).map_err(fail)?;
            }
            let mut gz = builder.into_inner().map_err(fail)?;
            gz.flush().map_err(fail)?;
            return gz.finish().map_err(fail);
        }
        add(".manifest", self.manifest.to_json().to_string().as_bytes()).map_err(fail)?;
        for policy in &self.policies {
            add(&policy.path, policy.source.as_bytes()).map_err(fail)?;
        }
        add(
            "data.json",
            Value::Object(self.data.clone()).to_string().as_bytes(),
        )
        .map_err(fail)?;
        let mut gz = builder.into_inner().map_err(fail)?;
        gz.flush().map_err(fail)?;
        gz.finish().map_err(fail)
    }

    /// The bundle's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifest (a default one, owning everything, if the bundle has none).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest's revision.
    pub fn revision(&self) -> &str {
        &self.manifest.revision
    }

    /// The Rego version (0 or 1) of the policy file at `path`, as the manifest sets it.
    pub fn rego_version(&self, path: &str) -> u8 {
        self.manifest.rego_version_of(path)
    }

    /// A signed bundle's files as they were verified, `.signatures.json` included; `None`
    /// for a bundle read without a signature.
    pub fn signed_files(&self) -> Option<&[(String, Vec<u8>)]> {
        self.signed.as_deref().map(Vec::as_slice)
    }

    /// The policy files, by path.
    pub fn policies(&self) -> &[PolicyFile] {
        &self.policies
    }

    /// The merged data document (the object under `data`).
    pub fn data(&self) -> &Map<String, Value> {
        &self.data
    }

    /// Every document of `data` lies under a root.
    fn check_data_roots(&self) -> Result<(), PolicyError> {
        let roots = self.manifest.root_segments();
        let mut path = Vec::new();
        check_object_roots(self, &roots, &self.data, &mut path)
    }

    /// Checks a package path (`a.b`, without `data.`) against the roots.
    pub(crate) fn check_package_root(&self, package: &str) -> Result<(), PolicyError> {
        let segments: Vec<&str> = package.split('.').collect();
        let covered = self
            .manifest
            .root_segments()
            .iter()
            .any(|root| segments.starts_with(root));
        if covered {
            Ok(())
        } else {
            Err(PolicyError::OutsideRoots {
                bundle: self.name.clone(),
                what: "package",
                path: segments.join("/"),
                roots: self.manifest.roots.clone(),
            })
        }
    }
}

/// Walks `object` at `path`: a key whose path is under a root is fine; one that is only a
/// prefix of a root must be an object, walked further; anything else is outside.
fn check_object_roots<'a>(
    bundle: &Bundle,
    roots: &[Vec<&str>],
    object: &'a Map<String, Value>,
    path: &mut Vec<&'a str>,
) -> Result<(), PolicyError> {
    for (key, value) in object {
        path.push(key);
        if !roots.iter().any(|root| path.starts_with(root)) {
            let prefix_of_root = roots
                .iter()
                .any(|root| root.len() > path.len() && root.starts_with(path));
            match value {
                Value::Object(inner) if prefix_of_root => {
                    check_object_roots(bundle, roots, inner, path)?;
                }
                _ => {
                    return Err(PolicyError::OutsideRoots {
                        bundle: bundle.name.clone(),
                        what: "data",
                        path: path.join("/"),
                        roots: bundle.manifest.roots.clone(),
                    });
                }
            }
        }
        path.pop();
    }
    Ok(())
}

/// Puts `value` at `at` inside `data`, merging objects; two documents for one path clash.
fn merge_at(
    bundle: &str,
    data: &mut Map<String, Value>,
    at: &[&str],
    value: Value,
) -> Result<(), PolicyError> {
    match at.split_first() {
        None => match value {
            Value::Object(object) => merge_objects(bundle, data, object, &mut Vec::new()),
            _ => Err(PolicyError::bundle(
                bundle,
                "the top-level data.json must hold an object",
            )),
        },
        Some((first, rest)) => {
            let slot = data
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            match slot {
                Value::Object(inner) if !rest.is_empty() => merge_at(bundle, inner, rest, value),
                Value::Object(inner) => match value {
                    Value::Object(object) => {
                        merge_objects(bundle, inner, object, &mut vec![(*first).to_owned()])
                    }
                    other if inner.is_empty() => {
                        *slot = other;
                        Ok(())
                    }
                    _ => Err(clash(bundle, &[first])),
                },
                _ => Err(clash(bundle, &[first])),
            }
        }
    }
}

fn merge_objects(
    bundle: &str,
    into: &mut Map<String, Value>,
    from: Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), PolicyError> {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (None, value) => {
                into.insert(key, value);
            }
            (Some(Value::Object(existing)), Value::Object(object)) => {
                path.push(key);
                merge_objects(bundle, existing, object, path)?;
                path.pop();
            }
            (Some(_), _) => {
                path.push(key);
                let parts: Vec<&str> = path.iter().map(String::as_str).collect();
                return Err(clash(bundle, &parts));
            }
        }
    }
    Ok(())
}

fn clash(bundle: &str, path: &[&str]) -> PolicyError {
    PolicyError::bundle(
        bundle,
        format!(
            "two data.json files define data.{}",
            path.join(".").trim_end_matches('.')
        ),
    )
}

fn admit(
    bundle: &str,
    path: &str,
    size: u64,
    limits: &BundleLimits,
    count: usize,
    total: &mut u64,
) -> Result<(), PolicyError> {
    if count >= limits.max_files {
        return Err(PolicyError::bundle(
            bundle,
            format!("more than {} files", limits.max_files),
        ));
    }
    if size > limits.max_file_bytes {
        return Err(PolicyError::bundle(
            bundle,
            format!(
                "{path:?} has {size} bytes, over the limit of {}",
                limits.max_file_bytes
            ),
        ));
    }
    *total = total.saturating_add(size);
    if *total > limits.max_total_bytes {
        return Err(PolicyError::bundle(
            bundle,
            format!("more than {} bytes in all", limits.max_total_bytes),
        ));
    }
    Ok(())
}

fn read_dir_into(
    bundle: &str,
    dir: &Path,
    prefix: &str,
    limits: &BundleLimits,
    files: &mut Vec<(String, Vec<u8>)>,
    total: &mut u64,
) -> Result<(), PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| PolicyError::io(dir.display(), e))?;
    let mut entries = entries
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PolicyError::io(dir.display(), e))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let file_name = entry.file_name();
        let file_name = file_name.to_str().ok_or_else(|| {
            PolicyError::bundle(bundle, format!("a name in {} is not UTF-8", dir.display()))
        })?;
        let path = if prefix.is_empty() {
            file_name.to_owned()
        } else {
            format!("{prefix}/{file_name}")
        };
        let kind = entry
            .file_type()
            .map_err(|e| PolicyError::io(entry.path().display(), e))?;
        if kind.is_dir() {
            read_dir_into(bundle, &entry.path(), &path, limits, files, total)?;
        } else if kind.is_file() {
            let size = entry
                .metadata()
                .map_err(|e| PolicyError::io(entry.path().display(), e))?
                .len();
            admit(bundle, &path, size, limits, files.len(), total)?;
            let bytes = std::fs::read(entry.path())
                .map_err(|e| PolicyError::io(entry.path().display(), e))?;
            files.push((path, bytes));
        } else {
            return Err(PolicyError::bundle(
                bundle,
                format!("{path:?} is a link or special file"),
            ));
        }
    }
    Ok(())
}

/// The first pair of overlapping roots between `a` and `b`, if any.
pub(crate) fn overlapping_roots<'a>(
    a: &'a Manifest,
    b: &'a Manifest,
) -> Option<(&'a str, &'a str)> {
    for (ra, sa) in a.roots.iter().zip(a.root_segments()) {
        for (rb, sb) in b.roots.iter().zip(b.root_segments()) {
            if sa.starts_with(&sb) || sb.starts_with(&sa) {
                return Some((ra, rb));
            }
        }
    }
    None
}
