//! The crate's one error type.

/// Everything that can go wrong while onboarding.
///
/// Variants are grouped by what the operator must do about them; [`Error::kind`]
/// maps each one to an [`ErrorKind`] (the CLI turns kinds into exit codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PSK that is not exactly 48 ASCII letters and digits.
    #[error("invalid pre-shared key: {reason}")]
    InvalidPsk {
        /// What is wrong (never the key itself).
        reason: &'static str,
    },
    /// A token that is not a well-formed compact JWS of ours.
    #[error("malformed token: {reason}")]
    MalformedToken {
        /// Which part is malformed.
        reason: &'static str,
    },
    /// The token's signature does not verify (the token was altered or is not ours).
    #[error("token signature does not verify")]
    TokenSignature,
    /// The token is expired.
    #[error("token expired at {exp} (now {now})")]
    TokenExpired {
        /// The token's `exp`.
        exp: u64,
        /// The verification time.
        now: u64,
    },
    /// The token is not valid yet.
    #[error("token not valid before {nbf} (now {now})")]
    TokenNotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The verification time.
        now: u64,
    },
    /// The token was issued for another audience, issuer or router.
    #[error("token claim {claim} does not match: expected {expected:?}, got {got:?}")]
    TokenClaimMismatch {
        /// The claim's name.
        claim: &'static str,
        /// What this side expects.
        expected: String,
        /// What the token says.
        got: String,
    },
    /// The token's id was already used: a token works once.
    #[error("token {jti} was already used")]
    TokenReused {
        /// The token id.
        jti: String,
    },
    /// The token is bound to another router key.
    #[error("token is bound to another router key")]
    TokenKeyMismatch,
    /// The conductor does not know the router named in the token.
    #[error("unknown router {router:?}")]
    UnknownRouter {
        /// The router name.
        router: String,
    },
    /// The peer could not prove knowledge of the PSK (one opaque error on purpose).
    #[error("pre-shared key proof failed: {side} does not hold the same PSK")]
    PskMismatch {
        /// "router" or "conductor": whose proof failed.
        side: &'static str,
    },
    /// The router's proof of possession of its private key did not verify.
    #[error("router key proof does not verify")]
    RouterKeyProof,
    /// The conductor's certificate is not trusted (chain, name or pin).
    #[error("conductor not trusted: {reason}")]
    ConductorNotTrusted {
        /// Why.
        reason: String,
    },
    /// A protocol message that does not parse.
    #[error("malformed {message} message: {reason}")]
    MalformedMessage {
        /// Which message.
        message: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A message that is valid but not expected in this state (including replays).
    #[error("unexpected {message} message in state {state}")]
    UnexpectedMessage {
        /// Which message.
        message: &'static str,
        /// The state machine's state.
        state: &'static str,
    },
    /// The peer refused the onboarding.
    #[error("conductor refused onboarding: {code}: {detail}")]
    Refused {
        /// Machine-readable refusal code (see [`crate::msg::RefusalCode`]).
        code: crate::msg::RefusalCode,
        /// Human-readable detail from the peer.
        detail: String,
    },
    /// The router refused the conductor (seen on the conductor side).
    #[error("router refused onboarding: {code}: {detail}")]
    RouterRefused {
        /// Machine-readable refusal code.
        code: crate::msg::RefusalCode,
        /// Human-readable detail from the router.
        detail: String,
    },
    /// Legacy (asset-id) onboarding while SCO is enabled.
    #[error(
        "legacy asset-id onboarding (asset-id {asset_id:?}) refused: secure conductor onboarding is enabled"
    )]
    LegacyRefused {
        /// The asset id presented (sanitised).
        asset_id: String,
    },
    /// The handshake did not finish in time.
    #[error("onboarding timed out")]
    TimedOut,
    /// A bad `onboarding-config.json` or conductor configuration.
    #[error("{file}: field {field:?}: {reason}")]
    Config {
        /// Which file (or "onboarding-config.json").
        file: String,
        /// The offending field (JSON name).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A key (PEM, SPKI, OpenSSH) that does not parse.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong.
        reason: String,
    },
    /// The router's signer (software or TPM) failed.
    #[error("router signer failed: {reason}")]
    Signer {
        /// What failed.
        reason: String,
    },
    /// The used-token store or an output file could not be read or written.
    #[error("{path}: {reason}")]
    Storage {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// A certificate request that does not parse or whose self-signature fails.
    #[error("malformed certificate request: {reason}")]
    MalformedCsr {
        /// What is wrong.
        reason: String,
    },
    /// A certificate request for another key than the one the router proved at
    /// onboarding (or for a router with no onboarding record).
    #[error("certificate request for router {router}: {reason}")]
    CsrKeyMismatch {
        /// The router.
        router: String,
        /// Which check failed.
        reason: String,
    },
    /// The network failed (connect, TLS I/O, HTTP framing).
    #[error("network: {reason}")]
    Network {
        /// What failed.
        reason: String,
    },
}

/// What kind of failure an [`Error`] is: the CLI's exit codes follow these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The token is malformed, altered, expired, reused or not for this router.
    BadToken,
    /// The conductor's certificate is not trusted.
    ConductorNotTrusted,
    /// One side could not prove the PSK.
    PskMismatch,
    /// Connection, TLS I/O, timeouts.
    Network,
    /// Legacy onboarding refused.
    LegacyRefused,
    /// Configuration or key files.
    Config,
    /// Anything else (protocol violations, storage, router key proof).
    Other,
}

impl Error {
    /// The kind of failure (for exit codes and refusal codes).
    pub fn kind(&self) -> ErrorKind {
        use crate::msg::RefusalCode as R;
        match self {
            Error::MalformedToken { .. }
            | Error::TokenSignature
            | Error::TokenExpired { .. }
            | Error::TokenNotYetValid { .. }
            | Error::TokenClaimMismatch { .. }
            | Error::TokenReused { .. }
            | Error::TokenKeyMismatch
            | Error::UnknownRouter { .. } => ErrorKind::BadToken,
            Error::PskMismatch { .. } => ErrorKind::PskMismatch,
            Error::ConductorNotTrusted { .. } => ErrorKind::ConductorNotTrusted,
            Error::Network { .. } | Error::TimedOut => ErrorKind::Network,
            Error::LegacyRefused { .. } => ErrorKind::LegacyRefused,
            Error::InvalidPsk { .. } | Error::Config { .. } | Error::InvalidKey { .. } => {
                ErrorKind::Config
            }
            Error::Refused { code, .. } | Error::RouterRefused { code, .. } => match code {
                R::BadToken => ErrorKind::BadToken,
                R::PskMismatch => ErrorKind::PskMismatch,
                R::LegacyRefused => ErrorKind::LegacyRefused,
                _ => ErrorKind::Other,
            },
            _ => ErrorKind::Other,
        }
    }
}
