//! [`PolicyError`]: everything that can go wrong loading, validating or evaluating policy.

use crate::CheckError;

/// A policy failure. Loading and validation errors name the bundle and the file; none of
/// them changes what is active.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The bundle's layout, manifest or data is wrong (a bad path, a file that is not UTF-8
    /// or not JSON, conflicting data, an unsupported file, a limit exceeded).
    #[error("bundle {bundle:?}: {message}")]
    Bundle {
        /// The bundle's name.
        bundle: String,
        /// What is wrong.
        message: String,
    },
    /// A policy file does not parse or the policies do not compile together.
    #[error("bundle {bundle:?}: {file} does not compile: {message}")]
    Compile {
        /// The bundle's name.
        bundle: String,
        /// The policy file (or `<bundle set>` when only the combination fails).
        file: String,
        /// The compiler's message.
        message: String,
    },
    /// The policies parse but fail a check OPA's compiler makes (an unknown function, a
    /// wrong number or type of arguments, an unsafe variable, recursion, two defaults, a
    /// rule where data is): refused rather than failing or misanswering decisions later.
    #[error("bundle {bundle:?}: {}", describe_checks(errors))]
    Check {
        /// The bundle (or bundles, comma-separated) whose files are at fault.
        bundle: String,
        /// What is wrong, each with its file, line and column (at most 10).
        errors: Vec<CheckError>,
    },
    /// A `test_*` rule of the bundle is not true.
    #[error("bundle {bundle:?}: test {test} failed: {detail}")]
    TestFailed {
        /// The bundle's name.
        bundle: String,
        /// The test rule's full path (`data.pkg.test_name`).
        test: String,
        /// Undefined, false, or the evaluation error.
        detail: String,
    },
    /// A signed bundle's signature is missing, does not verify, or does not cover the
    /// bundle's files exactly.
    #[error("bundle {bundle:?}: signature refused: {message}")]
    Signature {
        /// The bundle's name.
        bundle: String,
        /// What is wrong.
        message: String,
    },
    /// A package or data path lies outside the roots the bundle's manifest declares.
    #[error("bundle {bundle:?}: {what} {path:?} is outside the manifest roots {roots:?}")]
    OutsideRoots {
        /// The bundle's name.
        bundle: String,
        /// `package` or `data`.
        what: &'static str,
        /// The path, `/`-separated.
        path: String,
        /// The declared roots.
        roots: Vec<String>,
    },
    /// Two bundles claim overlapping roots, so one could change the other's documents.
    #[error("bundle {bundle:?}: root {root:?} overlaps root {other_root:?} of bundle {other:?}")]
    RootsOverlap {
        /// The bundle being activated.
        bundle: String,
        /// Its root.
        root: String,
        /// The active bundle it clashes with.
        other: String,
        /// That bundle's root.
        other_root: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A rule path is not `data.a.b` or `a/b` made of identifiers.
    #[error("invalid rule path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given (truncated when long).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The input exceeds a configured limit.
    #[error("input rejected: {0}")]
    Input(String),
    /// Evaluation failed (a built-in error, a conflict, the time limit).
    #[error("evaluating {path} failed: {message}")]
    Eval {
        /// The rule or document path.
        path: String,
        /// The evaluator's message.
        message: String,
    },
    /// A rollout configuration, state or operation is not valid.
    #[error("rollout {artifact:?}: {message}")]
    Rollout {
        /// The artifact (or `<config>`).
        artifact: String,
        /// What is wrong.
        message: String,
    },
    /// A decision could not be recorded in the decision log.
    #[error("decision log: {0}")]
    DecisionLog(String),
    /// No bundle is active: every decision is a failure, never an implicit allow.
    #[error("no policy bundle is active")]
    NoPolicy,
}

fn describe_checks(errors: &[CheckError]) -> String {
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let noun = if errors.len() == 1 { "error" } else { "errors" };
    format!("{} policy {noun}: {}", errors.len(), listed.join("; "))
}

impl PolicyError {
    pub(crate) fn bundle(bundle: &str, message: impl Into<String>) -> Self {
        PolicyError::Bundle {
            bundle: bundle.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        PolicyError::Io {
            path: path.to_string(),
            source,
        }
    }
}
