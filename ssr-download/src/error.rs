//! The crate's one error type.

use std::time::Duration;

/// Why one download attempt failed (the download itself may still be retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// No allowed source lists the requested version.
    #[error("no source has version {version}")]
    NoSourceHasVersion {
        /// The requested version.
        version: String,
    },
    /// Every source that has the version was marked unavailable.
    #[error("all {count} sources with the version are unavailable")]
    AllSourcesUnavailable {
        /// How many sources had the version.
        count: usize,
    },
    /// Every source that has the version serves a different manifest.
    #[error("no source serves the manifest of the partial download")]
    ManifestMismatch,
}

/// Everything that can go wrong: configuration, wire formats, the download's end
/// state, and (feature `http`) local I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value outside its range.
    #[error("{field} = {value} is outside {min}-{max}")]
    OutOfRange {
        /// The configuration key.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A configuration that is not valid for another reason.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The configuration key (or section).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The configuration file is not the expected TOML.
    #[error("configuration: {0}")]
    ConfigSyntax(String),
    /// A `versions` document that is not a JSON list of version strings.
    #[error("malformed versions list: {0}")]
    MalformedVersions(String),
    /// A manifest that is not valid.
    #[error("malformed manifest: {0}")]
    MalformedManifest(String),
    /// A version string that cannot name an image.
    #[error("invalid version {0:?}: use 1-128 characters from A-Z a-z 0-9 . _ + -")]
    InvalidVersion(String),
    /// The download did not finish within the overall timeout.
    #[error("download timed out after {}s", after.as_secs())]
    TimedOut {
        /// The configured timeout.
        after: Duration,
    },
    /// Every allowed attempt failed.
    #[error("download failed after {attempts} attempts: {last}")]
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: AttemptFailure,
    },
    /// Every chunk matched its hash but the whole file does not match the manifest.
    #[error("whole-file SHA-256 mismatch: manifest {expected}, file {actual}")]
    FileDigestMismatch {
        /// From the manifest (hex).
        expected: String,
        /// Of the assembled file (hex).
        actual: String,
    },
    /// A manifest refused by the signature policy (unsigned, unknown key, does not
    /// verify).
    #[error("manifest signature: {0}")]
    ManifestSignature(String),
    /// Local file-system I/O (the `http` driver; reading an image to build its manifest).
    #[error("{what} {path}: {reason}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file concerned.
        path: String,
        /// The OS error.
        reason: String,
    },
}
