//! The integrity module's error: one line for the operator, context in each variant.

use std::path::PathBuf;

/// What went wrong in the integrity handler.
///
/// Whether a failure is an *integrity event* is decided by the caller (any failure
/// while unlocking an onboarded system is one), not by the variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file cannot be read or is invalid.
    #[error("configuration {}: {reason}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A fscrypt ioctl or policy operation failed.
    #[error("fscrypt: {0}")]
    Fscrypt(#[from] ssr_fscrypt::Error),
    /// The onboarding record is malformed.
    #[error("onboarding record {}: {reason}", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Onboarding cannot proceed without losing or migrating data; nothing was changed.
    #[error("onboarding refused: {0}")]
    Refused(String),
    /// Not onboarded according to the state directory, yet a protected directory holds
    /// content encrypted with a key that cannot be unsealed: the state was lost or
    /// removed. An integrity event; the directory is left untouched.
    #[error(
        "{}: holds encrypted content but no usable sealed FEK or onboarding record exists for it",
        path.display()
    )]
    LostKey {
        /// The directory.
        path: PathBuf,
    },
    /// The unsealed FEK is not the key the protected directories were encrypted with.
    #[error(
        "{}: encrypted with key {expected}, but the unsealed FEK is {actual}",
        path.display()
    )]
    WrongKey {
        /// The directory.
        path: PathBuf,
        /// The key identifier in its policy (or the onboarding record).
        expected: String,
        /// The identifier of the unsealed FEK.
        actual: String,
    },
    /// A protected directory of an onboarded system is not encrypted.
    #[error("{}: protected directory is missing or not encrypted", path.display())]
    NotProtected {
        /// The directory.
        path: PathBuf,
    },
    /// The kernel does not report the FEK present after adding it.
    #[error("{}: key status after adding the FEK is {status}", path.display())]
    KeyNotPresent {
        /// The directory.
        path: PathBuf,
        /// What the kernel reported.
        status: String,
    },
    /// The TPM or the sealed FEK failed.
    #[error("TPM: {0}")]
    Tpm(String),
    /// Loading the nftables ruleset failed.
    #[error("nftables: {0}")]
    Nft(String),
    /// A version string is malformed.
    #[error("invalid version {0:?} (expected MAJOR.MINOR.PATCH with an optional -suffix)")]
    Version(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
