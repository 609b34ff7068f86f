//! The crate's one error type.

use crate::policy::Issue;

/// Everything that can go wrong in `ssr-pki`, each variant naming its reason.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // ---- parsing (pki-verify) ----
    /// The text is not a well-formed RFC 7468 PEM document or bundle.
    #[error("malformed PEM at line {line}: {reason}")]
    Pem {
        /// 1-based line of the text where the problem was found.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A PEM document carried another label than the one expected.
    #[error("expected a PEM block labelled {expected:?}, found {found:?}")]
    PemLabel {
        /// The label the caller asked for.
        expected: &'static str,
        /// The label found.
        found: String,
    },
    /// The caller asked for exactly one PEM block and got another number.
    #[error("expected exactly one PEM block, found {found}")]
    PemCount {
        /// How many blocks the text holds.
        found: usize,
    },
    /// The bytes are not a DER X.509 certificate this crate accepts.
    #[error("malformed certificate: {reason}")]
    CertificateMalformed {
        /// What the decoder reported.
        reason: String,
    },
    /// The bytes are not a DER X.509 v2 CRL this crate accepts.
    #[error("malformed CRL: {reason}")]
    CrlMalformed {
        /// What the decoder reported.
        reason: String,
    },

    // ---- signatures and CRLs (pki-verify) ----
    /// A signature did not verify under the issuer's key.
    #[error("signature does not verify under the issuer's public key")]
    BadSignature,
    /// The signature or key algorithm is outside the policy (SHA-1, RSA < 2048, other curves).
    #[error("signature algorithm not allowed by policy: {algorithm}")]
    UnsupportedSignatureAlgorithm {
        /// The algorithm, by name when known, else its OID.
        algorithm: String,
    },
    /// A CRL's issuer name does not match the certificate offered as its issuer.
    #[error("CRL issued by {crl_issuer:?}, not by {certificate:?}")]
    CrlIssuerMismatch {
        /// The CRL's issuer name.
        crl_issuer: String,
        /// The subject of the certificate offered as issuer.
        certificate: String,
    },
    /// The CRL issuer's keyUsage does not allow cRLSign.
    #[error("CRL issuer {issuer} lacks the cRLSign key usage")]
    IssuerNotCrlSigner {
        /// The issuer's subject.
        issuer: String,
    },
    /// A CRL's signature does not verify under its issuer's key.
    #[error("CRL signature does not verify under the issuer's public key")]
    CrlBadSignature,
    /// A CRL's thisUpdate is after the validation time.
    #[error("CRL not yet valid: thisUpdate {this_update} is after {now} (Unix seconds)")]
    CrlNotYetValid {
        /// The CRL's thisUpdate.
        this_update: i64,
        /// The validation time.
        now: i64,
    },
    /// A CRL was past its nextUpdate at the validation time.
    #[error("CRL is stale: nextUpdate {next_update} is before {now} (Unix seconds)")]
    CrlExpired {
        /// The CRL's nextUpdate.
        next_update: i64,
        /// The validation time.
        now: i64,
    },

    // ---- chain validation (pki-verify) ----
    /// No path from the certificate to a trust anchor could be built.
    #[error("no valid path to a trusted CA (unknown issuer)")]
    UnknownIssuer,
    /// A certificate of the path is expired at the validation time.
    #[error("certificate expired: notAfter {not_after} is before {now} (Unix seconds)")]
    Expired {
        /// The certificate's notAfter.
        not_after: i64,
        /// The validation time.
        now: i64,
    },
    /// A certificate of the path is not yet valid at the validation time.
    #[error("certificate not yet valid: notBefore {not_before} is after {now} (Unix seconds)")]
    NotYetValid {
        /// The certificate's notBefore.
        not_before: i64,
        /// The validation time.
        now: i64,
    },
    /// A certificate of the path is revoked by a CRL.
    #[error("certificate revoked (serial {serial_hex}, issuer {issuer:?})")]
    Revoked {
        /// Serial number, upper-case hex.
        serial_hex: String,
        /// The revoked certificate's issuer.
        issuer: String,
    },
    /// CRLs were required for every certificate of the path and one had none.
    #[error("revocation status unknown: no CRL from the issuer")]
    UnknownRevocationStatus,
    /// A CA's pathLenConstraint is exceeded.
    #[error("path length constraint violated")]
    PathLenConstraintViolated,
    /// The path is longer than the caller allows.
    #[error("path longer than the allowed {max} intermediate certificates")]
    MaxDepthExceeded {
        /// The configured maximum.
        max: usize,
    },
    /// A CA certificate was presented as the peer (end-entity) certificate.
    #[error("a CA certificate is used as an end-entity certificate")]
    CaUsedAsEndEntity,
    /// An end-entity certificate was used to issue another certificate.
    #[error("an end-entity certificate is used as a CA")]
    EndEntityUsedAsCa,
    /// The end-entity certificate lacks the required extended key usage.
    #[error("required extended key usage {required} not present")]
    RequiredEkuNotFound {
        /// The purpose required, by name.
        required: &'static str,
    },
    /// Path building gave up: the inputs would cost more work than the budget allows.
    #[error("path building budget exhausted ({what})")]
    BudgetExceeded {
        /// Which budget ran out.
        what: &'static str,
    },
    /// A certificate of the best candidate path fails the crate's own checks.
    #[error("certificate in the path is unacceptable: {issue}")]
    PathCertificate {
        /// The offending certificate's subject.
        subject: String,
        /// What is wrong with it.
        issue: Issue,
    },
    /// Path validation failed for a reason without a dedicated variant.
    #[error("path validation failed: {reason}")]
    PathInvalid {
        /// The validator's reason.
        reason: String,
    },

    // ---- peer identity (pki-verify) ----
    /// The peer's certificate does not name the configured peer.
    #[error("peer certificate names {found:?}, expected {expected:?}")]
    PeerIdentityMismatch {
        /// The configured identity (router UUID or peering-common-name).
        expected: String,
        /// The identities the certificate carries (CN and SANs).
        found: Vec<String>,
    },

    // ---- keys, CSRs, import, trust bundles, CRL manager (pki-ops) ----
    /// A private key that does not parse or encode.
    #[error("invalid private key: {reason}")]
    InvalidKey {
        /// What is wrong (never key material).
        reason: String,
    },
    /// A router UUID that is not in canonical 8-4-4-4-12 form.
    #[error("invalid router UUID {input:?}: {reason}")]
    InvalidUuid {
        /// The input (at most 64 characters of it).
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The CSR could not be built or encoded.
    #[error("cannot build CSR: {reason}")]
    Csr {
        /// What failed.
        reason: String,
    },
    /// A configuration value out of range.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The setting's name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Import check 1: the PEM text carries a private key.
    #[error(
        "rejected: the bundle carries a private key (PEM block {label:?}); certificates are imported without their key"
    )]
    PrivateKeyInBundle {
        /// The PEM label of the key block.
        label: String,
    },
    /// The PEM text holds no certificate.
    #[error("rejected: no certificate in the PEM text")]
    NoCertificate,
    /// Import check 2: the certificate fails validation (every issue listed).
    #[error("rejected: {}", issues.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; "))]
    CertificateRejected {
        /// The issues found.
        issues: Vec<Issue>,
    },
    /// The certificate's public key is not the router's key.
    #[error("rejected: the certificate's public key is not the router's key")]
    KeyMismatch,
    /// Import check 2 cannot be met: no trusted CA is installed, so the certificate's
    /// chain cannot be checked.
    #[error(
        "rejected: no trusted CA bundle is installed, so the certificate's chain cannot be checked (install one with `ssr cert install-ca`, or pass --no-chain-check to import without a chain check, which is audited)"
    )]
    NoTrustAnchor,
    /// A trust bundle with issues under `validation-mode strict`.
    #[error("trust bundle rejected (strict): {}", issues.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; "))]
    TrustBundleRejected {
        /// Every issue, each naming its certificate.
        issues: Vec<crate::trust::BundleIssue>,
    },
    /// A CRL was not fetched (network, HTTP status, size limit).
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A CRL from an issuer that is not a trusted CA.
    #[error("CRL issuer {issuer:?} is not a trusted CA")]
    CrlIssuerUnknown {
        /// The CRL's issuer name.
        issuer: String,
    },
    /// A file of the store could not be read or written.
    #[error("{path}: {reason}")]
    Storage {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A stored file (master revoked list, CRL state) that does not parse.
    #[error("{what}: {reason}")]
    StateMalformed {
        /// Which file format.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}
