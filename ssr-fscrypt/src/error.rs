//! The crate's one error type.

#[cfg(feature = "kernel")]
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// Format errors carry what was wrong; decryption of a name that cannot be a
/// ciphertext is one opaque [`Error::Decrypt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A raw master key must be 16 to 64 bytes (the kernel's limits for v2 raw keys).
    #[error("master key must be {min} to {max} bytes, got {len}")]
    MasterKeyLength {
        /// Length given.
        len: usize,
        /// Shortest accepted.
        min: usize,
        /// Longest accepted.
        max: usize,
    },
    /// A fixed-size structure had the wrong size.
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length {
        /// Which structure.
        what: &'static str,
        /// Its size.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// A policy or context version other than v2.
    #[error("{what}: unsupported version {version} (only v2 is supported)")]
    UnsupportedVersion {
        /// Which structure.
        what: &'static str,
        /// Version byte found.
        version: u8,
    },
    /// An encryption mode number the kernel does not define.
    #[error("unknown fscrypt encryption mode {0}")]
    UnknownMode(u8),
    /// A contents/filenames mode pair the kernel does not accept for v2 policies.
    #[error("invalid mode pair: contents {contents}, filenames {filenames}")]
    InvalidModePair {
        /// Contents mode number.
        contents: u8,
        /// Filenames mode number.
        filenames: u8,
    },
    /// Policy flags that are unknown or combined in a way the kernel rejects.
    #[error("invalid policy flags {flags:#04x}: {reason}")]
    InvalidFlags {
        /// The flags byte.
        flags: u8,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// `log2_data_unit_size` outside 0 (file system block size) or 9..=16.
    #[error("invalid log2_data_unit_size {0} (0, or 9 to 16)")]
    InvalidDataUnitSize(u8),
    /// Reserved bytes of a policy or context were not zero.
    #[error("{what}: reserved bytes are not zero")]
    ReservedNotZero {
        /// Which structure.
        what: &'static str,
    },
    /// The policy uses a mode or IV flag this crate does not implement in software.
    #[error("not implemented in software: {what}")]
    Unsupported {
        /// What is missing.
        what: &'static str,
    },
    /// Contents buffers must be whole data units.
    #[error("contents length {len} is not a multiple of the data unit size {data_unit_size}")]
    DataUnitLength {
        /// Buffer length.
        len: usize,
        /// Data unit size in bytes.
        data_unit_size: usize,
    },
    /// A data unit index or inode number does not fit the IV form of the policy.
    #[error("{what} {value} does not fit in 32 bits (required by the IV_INO_LBLK_* policies)")]
    IvOverflow {
        /// Which number.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A plaintext file name that fscrypt cannot encrypt (empty, too long, or
    /// containing `/` or NUL).
    #[error("invalid plaintext name of {len} bytes: {reason}")]
    InvalidName {
        /// Length of the name.
        len: usize,
        /// Why.
        reason: &'static str,
    },
    /// A ciphertext name or no-key name that cannot be decrypted or decoded.
    #[error("decryption failed")]
    Decrypt,
    /// The master key is not the one the policy names.
    #[error("wrong master key: the policy wants {expected}, this key is {actual}")]
    WrongKey {
        /// The policy's key identifier.
        expected: crate::key::KeyIdentifier,
        /// The given key's identifier.
        actual: crate::key::KeyIdentifier,
    },
    /// A kernel call failed.
    #[cfg(feature = "kernel")]
    #[error("{op} on {}: {}", path.display(), std::io::Error::from_raw_os_error(*errno))]
    Kernel {
        /// The operation (ioctl or system call).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error number.
        errno: i32,
    },
    /// Encryption policies are only set on empty directories: plaintext is never
    /// migrated into an encrypted directory.
    #[cfg(feature = "kernel")]
    #[error(
        "{} is not empty: an encryption policy is only set on a fresh, empty directory (plaintext is never migrated)",
        path.display()
    )]
    DirectoryNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The directory already has a different encryption policy.
    #[cfg(feature = "kernel")]
    #[error("{} already has a different encryption policy", path.display())]
    PolicyMismatch {
        /// The directory.
        path: PathBuf,
    },
    /// The file is not encrypted.
    #[cfg(feature = "kernel")]
    #[error("{} is not encrypted", path.display())]
    NotEncrypted {
        /// The path.
        path: PathBuf,
    },
    /// The path is not a directory.
    #[cfg(feature = "kernel")]
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The file system (or kernel) does not support fscrypt there.
    #[cfg(feature = "kernel")]
    #[error("{}: the file system does not support encryption (ext4 needs `-O encrypt`)", path.display())]
    EncryptionUnsupported {
        /// The path.
        path: PathBuf,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;
