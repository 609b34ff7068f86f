//! Trusted CA bundles (`trusted-ca-certificate` in the product): one PEM file with
//! the issuing CA and every certificate up to the root, installed with
//! `validation-mode strict` (any issue rejects the whole bundle) or `warn` (accepted,
//! every issue listed).
//!
//! Every certificate is checked with [`check_certificate`] for its role (a self-issued
//! certificate as [`Role::Root`], including its own self-signature; any other as
//! [`Role::Intermediate`]), and the bundle as a whole must form chains: each
//! non-root certificate is signed by another certificate of the bundle, and there is
//! at least one root. A bundle carrying a private key is refused in both modes.

use core::fmt;
use core::str::FromStr;

use crate::Error;
use crate::cert::Certificate;
use crate::import::reject_private_keys;
use crate::pem::{PemItem, parse_pem_bundle};
use crate::policy::{Issue, Role, check_certificate};

/// `validation-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValidationMode {
    /// Any issue rejects the bundle.
    #[default]
    Strict,
    /// The bundle is accepted and every issue is reported.
    Warn,
}

impl FromStr for ValidationMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "strict" => Ok(Self::Strict),
            "warn" => Ok(Self::Warn),
            other => Err(Error::InvalidConfig {
                field: "validation-mode",
                reason: format!("{other:?} is not strict or warn"),
            }),
        }
    }
}

/// One problem with a trust bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleIssue {
    /// A certificate fails its own checks.
    Certificate(Issue),
    /// No certificate of the bundle signed this one.
    IssuerNotInBundle {
        /// The certificate.
        subject: String,
        /// Its issuer name.
        issuer: String,
    },
    /// The bundle has no self-signed root.
    NoRoot,
    /// The same certificate appears twice.
    Duplicate {
        /// Its subject.
        subject: String,
    },
    /// A PEM block that is neither a certificate nor allowed here.
    UnexpectedBlock {
        /// Its label.
        label: String,
    },
}

impl fmt::Display for BundleIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleIssue::Certificate(issue) => issue.fmt(f),
            BundleIssue::IssuerNotInBundle { subject, issuer } => write!(
                f,
                "{subject}: issuer {issuer:?} is not in the bundle (or its signature does not verify)"
            ),
            BundleIssue::NoRoot => f.write_str("the bundle has no self-signed root certificate"),
            BundleIssue::Duplicate { subject } => write!(f, "{subject}: appears more than once"),
            BundleIssue::UnexpectedBlock { label } => {
                write!(
                    f,
                    "unexpected PEM block {label:?} (only certificates belong in a trust bundle)"
                )
            }
        }
    }
}

/// An installed trust bundle.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    certificates: Vec<Certificate>,
    warnings: Vec<BundleIssue>,
}

impl TrustBundle {
    /// Parses and checks `pem` at `now_unix` under `mode`.
    pub fn install(pem: &str, mode: ValidationMode, now_unix: i64) -> Result<Self, Error> {
        reject_private_keys(pem)?;
        let mut issues = Vec::new();
        let mut certificates: Vec<Certificate> = Vec::new();
        for item in parse_pem_bundle(pem)? {
            match item {
                PemItem::Certificate(c) => {
                    if certificates.iter().any(|k| k.der() == c.der()) {
                        issues.push(BundleIssue::Duplicate {
                            subject: c.subject(),
                        });
                    } else {
                        certificates.push(c);
                    }
                }
                PemItem::PrivateKey { label } => return Err(Error::PrivateKeyInBundle { label }),
                other => issues.push(BundleIssue::UnexpectedBlock {
                    label: other.label().to_string(),
                }),
            }
        }
        if certificates.is_empty() {
            return Err(Error::NoCertificate);
        }
        let mut roots = 0;
        for cert in &certificates {
            let role = if cert.is_self_issued() {
                roots += 1;
                Role::Root
            } else {
                let signed_here = certificates
                    .iter()
                    .any(|i| i.subject() == cert.issuer() && cert.verify_signed_by(i).is_ok());
                if !signed_here {
                    issues.push(BundleIssue::IssuerNotInBundle {
                        subject: cert.subject(),
                        issuer: cert.issuer(),
                    });
                }
                Role::Intermediate
            };
            issues.extend(
                check_certificate(cert, role, now_unix)
                    .into_iter()
                    .map(BundleIssue::Certificate),
            );
        }
        if roots == 0 {
            issues.push(BundleIssue::NoRoot);
        }
        match mode {
            ValidationMode::Strict if !issues.is_empty() => {
                Err(Error::TrustBundleRejected { issues })
            }
            _ => Ok(Self {
                certificates,
                warnings: issues,
            }),
        }
    }

    /// Every certificate, in bundle order.
    pub fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }

    /// The self-issued certificates (trust anchors).
    pub fn roots(&self) -> impl Iterator<Item = &Certificate> {
        self.certificates.iter().filter(|c| c.is_self_issued())
    }

    /// The certificates below the roots.
    pub fn intermediates(&self) -> impl Iterator<Item = &Certificate> {
        self.certificates.iter().filter(|c| !c.is_self_issued())
    }

    /// The issues found (always empty after a strict install).
    pub fn warnings(&self) -> &[BundleIssue] {
        &self.warnings
    }

    /// The bundle as PEM, certificates in bundle order.
    pub fn to_pem(&self) -> String {
        self.certificates.iter().map(Certificate::to_pem).collect()
    }
}
