//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `ssr-tpm`.
///
/// The unlock path must tell these apart, so each failure mode the integrity handler
/// cares about is its own variant: [`Error::NoTpm`], [`Error::KeyMissing`],
/// [`Error::WrongTpm`], [`Error::Corrupt`], [`Error::LockedOut`],
/// [`Error::PcrMismatch`] and [`Error::SealedFekMissing`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No TPM answers at this TCTI (no device, swtpm not running, TCTI library missing).
    #[error("no TPM at {tcti}: {reason}")]
    NoTpm {
        /// The TCTI string that was tried.
        tcti: String,
        /// What the TSS said.
        reason: String,
    },
    /// The TPM answers but holds no key at this persistent handle.
    #[error("TPM has no key at persistent handle {handle:#010x}")]
    KeyMissing {
        /// The persistent handle.
        handle: u32,
    },
    /// The sealed blob was made by another TPM (or for another key): the key at the
    /// handle has a different public key, or the TPM could not decrypt the blob.
    #[error("sealed data belongs to another TPM (key {handle:#010x}: {reason})")]
    WrongTpm {
        /// The persistent handle of the key that was used.
        handle: u32,
        /// Which check failed.
        reason: &'static str,
    },
    /// The object at the sealing key's persistent handle is not a key this crate made:
    /// its public area differs from the template (attributes, auth policy, algorithm,
    /// parameters), or it cannot decrypt what it encrypts (an authorisation value the
    /// public area does not show). Nothing was changed; the object is left in place.
    #[error(
        "the object at persistent handle {handle:#010x} is not this system's sealing key: {reason}; nothing was changed"
    )]
    ForeignKey {
        /// The persistent handle.
        handle: u32,
        /// What differs.
        reason: String,
    },
    /// The TPM's HMAC key does not vouch for the sealed-FEK file: it was forged
    /// (anyone can RSA-encrypt a FEK of their choice to the public sealing key) or
    /// damaged. Nothing was decrypted.
    #[error(
        "sealed FEK is not authenticated by the TPM's HMAC key {handle:#010x}: forged or damaged"
    )]
    NotAuthentic {
        /// The persistent handle of the HMAC key.
        handle: u32,
    },
    /// A sealed-FEK file or key-store entry does not parse or its checksum is wrong.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being parsed ("sealed FEK", "key store entry").
        what: &'static str,
        /// The first problem found.
        reason: &'static str,
    },
    /// The TPM is in dictionary-attack lockout and refuses authorisations.
    #[error("TPM is in dictionary-attack lockout")]
    LockedOut,
    /// The key is bound to PCR values that the platform no longer has (the boot chain
    /// changed).
    #[error("PCR policy of key {handle:#010x} not satisfied: the boot chain changed")]
    PcrMismatch {
        /// The persistent handle of the PCR-bound key.
        handle: u32,
    },
    /// The sealed-FEK file does not exist.
    #[error("sealed FEK file {path} does not exist")]
    SealedFekMissing {
        /// Where it was expected.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("{op} {path}: {reason}")]
    Io {
        /// What was being done ("read", "write", "rename", "fsync", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error kind.
        kind: io::ErrorKind,
        /// The OS error text.
        reason: String,
    },
    /// A TPM command failed for a reason not listed above.
    #[error("TPM {op}: {reason}")]
    Tpm {
        /// The command or step.
        op: &'static str,
        /// The TSS / TPM response code text.
        reason: String,
    },
    /// The TPM returned something that does not match what was asked for.
    #[error("unexpected TPM answer to {op}: {reason}")]
    UnexpectedAnswer {
        /// The command.
        op: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// Which value and why.
        reason: String,
    },
    /// No NV index is defined at this handle.
    #[error("no NV index {index:#010x} in the TPM")]
    NvIndexMissing {
        /// The NV index.
        index: u32,
    },
    /// A certificate (IDevID, DevID) could not be parsed.
    #[error("certificate in {source_name}: {reason}")]
    Certificate {
        /// Where it came from ("NV index 0x01c90000", ...).
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key store has no entry with this name.
    #[error("key store has no key named {name:?}")]
    KeyNotFound {
        /// The name asked for.
        name: String,
    },
    /// A key store entry with this name already exists.
    #[error("key store already has a key named {name:?}")]
    KeyExists {
        /// The name asked for.
        name: String,
    },
    /// A key store name is not acceptable (1-64 of `A-Z a-z 0-9 . _ -`, not starting
    /// with a dot).
    #[error(
        "invalid key name {name:?}: 1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.'"
    )]
    InvalidKeyName {
        /// The rejected name.
        name: String,
    },
}

impl Error {
    /// An [`Error::Io`] from an `io::Error`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, e: &io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            kind: e.kind(),
            reason: e.to_string(),
        }
    }
}
