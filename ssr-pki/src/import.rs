//! Certificate import: the three checks, in order, before a certificate is accepted.
//!
//! 1. **No private key**: a PEM text with any `… PRIVATE KEY` block is refused
//!    ([`Error::PrivateKeyInBundle`]), found by label before anything is decoded, so
//!    even a malformed bundle with a key is refused for the key.
//! 2. **Parse and validate**: the first certificate is checked with
//!    [`check_certificate`] for its role (dates, basicConstraints, keyUsage, EKU,
//!    unknown critical extensions, signature and key algorithm policy); any further
//!    certificates (its issuing chain) as intermediates; every issue is listed
//!    ([`Error::CertificateRejected`]). The certificate must chain to one of the
//!    trusted CA certificates ([`verify_chain`]); with none given the check cannot be
//!    met and the import is refused ([`Error::NoTrustAnchor`]) unless the operator
//!    explicitly chose [`ChainCheck::SkippedByOperator`] (which the caller audits).
//!    When the router's key is given, the certificate must carry it
//!    ([`Error::KeyMismatch`]).
//! 3. **Not revoked** by any known CRL ([`Error::Revoked`]).

use p256::pkcs8::EncodePublicKey;

use crate::Error;
use crate::cert::Certificate;
use crate::crl::{Crl, is_revoked};
use crate::pem::{PemItem, parse_pem_bundle};
use crate::policy::{Role, check_certificate};
use crate::verify::{ChainOptions, verify_chain};

/// Whether check 2 verifies the certificate's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainCheck {
    /// The certificate must chain to one of [`ImportPolicy::trusted`]; with no trusted
    /// certificate the import is refused ([`Error::NoTrustAnchor`]). The default.
    Required,
    /// The operator explicitly imports without a chain check (`ssr cert import
    /// --no-chain-check`); the caller must audit it.
    SkippedByOperator,
}

/// What the import checks against.
#[derive(Debug, Clone, Copy)]
pub struct ImportPolicy<'a> {
    /// Check time, Unix seconds.
    pub now_unix: i64,
    /// The role the certificate must have ([`Role::Leaf`] for a router certificate).
    pub role: Role,
    /// Known CRLs (already verified by whoever accepted them, e.g. the CRL manager).
    pub crls: &'a [Crl],
    /// Installed CA certificates (roots and intermediates).
    pub trusted: &'a [Certificate],
    /// The router's public key; `None`: not checked.
    pub router_key: Option<&'a p256::ecdsa::VerifyingKey>,
    /// Whether the chain is verified against `trusted`.
    pub chain_check: ChainCheck,
}

impl<'a> ImportPolicy<'a> {
    /// A leaf at `now_unix`, no CRLs, no key check, the chain check required (and so
    /// refused until trusted certificates are given).
    pub fn new(now_unix: i64) -> Self {
        Self {
            now_unix,
            role: Role::Leaf,
            crls: &[],
            trusted: &[],
            router_key: None,
            chain_check: ChainCheck::Required,
        }
    }

    /// The same policy without the chain check ([`ChainCheck::SkippedByOperator`]).
    pub fn skip_chain_check(self) -> Self {
        Self {
            chain_check: ChainCheck::SkippedByOperator,
            ..self
        }
    }
}

/// An accepted certificate.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The certificate.
    pub certificate: Certificate,
    /// The other certificates of the PEM text (its chain), in order.
    pub chain: Vec<Certificate>,
}

/// Check 1: refuses a text with any PEM block labelled `… PRIVATE KEY`.
pub fn reject_private_keys(text: &str) -> Result<(), Error> {
    for line in text.lines() {
        let label = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"));
        if let Some(label) = label.filter(|l| l.contains("PRIVATE KEY")) {
            return Err(Error::PrivateKeyInBundle {
                label: label.chars().take(64).collect(),
            });
        }
    }
    Ok(())
}

/// Runs the three checks on `pem` and returns the accepted certificate.
pub fn import_certificate(pem: &str, policy: &ImportPolicy<'_>) -> Result<Imported, Error> {
    // 1. No private key.
    reject_private_keys(pem)?;
    let mut certs = Vec::new();
    for item in parse_pem_bundle(pem)? {
        match item {
            PemItem::Certificate(c) => certs.push(c),
            PemItem::PrivateKey { label } => return Err(Error::PrivateKeyInBundle { label }),
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(Error::NoCertificate);
    }
    let certificate = certs.remove(0);
    let chain = certs;

    // 2. Parse and validate.
    let mut issues = check_certificate(&certificate, policy.role, policy.now_unix);
    for c in &chain {
        let role = if c.is_self_issued() {
            Role::Root
        } else {
            Role::Intermediate
        };
        issues.extend(check_certificate(c, role, policy.now_unix));
    }
    if !issues.is_empty() {
        return Err(Error::CertificateRejected { issues });
    }
    if let Some(key) = policy.router_key {
        let spki = key.to_public_key_der().map_err(|e| Error::InvalidKey {
            reason: e.to_string(),
        })?;
        if spki.as_bytes() != certificate.spki_der().as_slice() {
            return Err(Error::KeyMismatch);
        }
    }
    if policy.chain_check == ChainCheck::Required {
        if policy.trusted.is_empty() {
            return Err(Error::NoTrustAnchor);
        }
        let (anchors, mut intermediates): (Vec<Certificate>, Vec<Certificate>) = policy
            .trusted
            .iter()
            .cloned()
            .partition(Certificate::is_self_issued);
        intermediates.extend(chain.iter().filter(|c| !c.is_self_issued()).cloned());
        verify_chain(
            &certificate,
            &intermediates,
            &anchors,
            // Revocation is check 3, on its own, below.
            &ChainOptions::new(policy.now_unix),
        )?;
    }

    // 3. Not revoked by a known CRL.
    for c in std::iter::once(&certificate).chain(&chain) {
        if let Some(r) = is_revoked(c, policy.crls) {
            return Err(Error::Revoked {
                serial_hex: r.entry.serial_hex,
                issuer: c.issuer(),
            });
        }
    }
    Ok(Imported { certificate, chain })
}
