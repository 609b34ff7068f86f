//! The crate's one error enum.

/// Everything that can go wrong in ssr-svr-crypto.
///
/// Authentication failures of packets and exchange messages are deliberately one
/// opaque variant ([`Error::Unauthenticated`]): a failed check says nothing about why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A packet or message did not authenticate (bad tag, bad padding, wrong key).
    #[error("message did not authenticate")]
    Unauthenticated,
    /// A key exchange hello made for a responder nonce that is not the current one
    /// (replayed, or older than the responder's incarnation): refused and counted.
    #[error("stale key exchange hello (replayed or for an old nonce)")]
    StaleHello,
    /// A packet's sequence number was already seen or is older than the replay window.
    #[error("replayed or too old packet (sequence {seq})")]
    Replay {
        /// The rejected sequence number.
        seq: u64,
    },
    /// A caller-supplied buffer is too small.
    #[error("buffer too small: need {needed} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// Input is shorter or longer than the format allows.
    #[error("bad length for {what}: {len}")]
    BadLength {
        /// What was being parsed.
        what: &'static str,
        /// The offending length.
        len: usize,
    },
    /// A wire format was malformed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A Diffie-Hellman public value failed its checks (range or subgroup).
    #[error("invalid public key share for {alg}: {reason}")]
    InvalidPublicValue {
        /// Algorithm of the share.
        alg: &'static str,
        /// Which check failed.
        reason: &'static str,
    },
    /// The peer's certificate was rejected by the [`crate::kex::PeerAuthenticator`].
    #[error("peer certificate rejected: {reason}")]
    PeerCertificate {
        /// Why it was rejected.
        reason: String,
    },
    /// The peer's certificate common name is not the configured peering common name.
    #[error("peer common name mismatch: expected {expected}, got {got}")]
    CommonNameMismatch {
        /// Configured peering-common-name.
        expected: String,
        /// Common name in the certificate.
        got: String,
    },
    /// The sequence number space of a key is exhausted; a rekey is needed.
    #[error("sequence numbers exhausted, rekey required")]
    SequenceExhausted,
    /// Configuration out of range.
    #[error("configuration {name} out of range: {value}")]
    Config {
        /// Parameter name.
        name: &'static str,
        /// Offending value.
        value: u64,
    },
    /// This router's key could not sign a key exchange message (a TPM-held key whose
    /// TPM failed); nothing was sent.
    #[error("the router key cannot sign: {reason}")]
    Signer {
        /// What the key's holder reported.
        reason: String,
    },
    /// The random number generator failed.
    #[error("random number generator failed")]
    Rng,
}
