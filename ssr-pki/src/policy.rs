//! Per-certificate checks: validity, role (basicConstraints, keyUsage, EKU), extensions,
//! and the algorithm policy. Usable on a leaf, an intermediate, and a root alike (common
//! path validators never look at the root itself; this does).

use std::fmt;

use der::asn1::ObjectIdentifier;
use der::oid::AssociatedOid;
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName,
    SubjectKeyIdentifier,
};

use crate::cert::{Certificate, KeyAlgorithm, OID_ANY_EKU, OID_KP_CLIENT_AUTH, OID_KP_SERVER_AUTH};
use crate::sig;

/// The role a certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An end-entity certificate (a router's own or a peer's).
    Leaf,
    /// A CA certificate below the root.
    Intermediate,
    /// A self-signed trust anchor.
    Root,
}

/// One problem found in a certificate, with the subject it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Subject of the certificate (RFC 4514).
    pub subject: String,
    /// What is wrong.
    pub kind: IssueKind,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.kind)
    }
}

/// The typed reason of an [`Issue`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueKind {
    /// notAfter is before the check time.
    #[error("expired: notAfter {not_after} < now {now} (Unix seconds)")]
    Expired {
        /// notAfter.
        not_after: i64,
        /// The check time.
        now: i64,
    },
    /// notBefore is after the check time.
    #[error("not yet valid: notBefore {not_before} > now {now} (Unix seconds)")]
    NotYetValid {
        /// notBefore.
        not_before: i64,
        /// The check time.
        now: i64,
    },
    /// notBefore is after notAfter.
    #[error("validity period is empty: notBefore {not_before} > notAfter {not_after}")]
    EmptyValidityPeriod {
        /// notBefore.
        not_before: i64,
        /// notAfter.
        not_after: i64,
    },
    /// A v1/v2 certificate carries extensions, or a CA certificate is not v3.
    #[error("certificate version {version} not allowed here")]
    BadVersion {
        /// 1, 2 or 3.
        version: u8,
    },
    /// The serial number is zero, negative or longer than 20 octets.
    #[error("serial number is not a positive integer of at most 20 octets")]
    BadSerialNumber,
    /// Signed with a known-weak algorithm (SHA-1, MD5, MD2).
    #[error("weak signature algorithm {algorithm}")]
    WeakSignatureAlgorithm {
        /// Its name.
        algorithm: String,
    },
    /// Signed with an algorithm outside the policy.
    #[error("unsupported signature algorithm {algorithm}")]
    UnsupportedSignatureAlgorithm {
        /// Its name or OID.
        algorithm: String,
    },
    /// The signature algorithm inside and outside the signed part differ.
    #[error("signature algorithm in tbsCertificate differs from the outer one")]
    SignatureAlgorithmMismatch,
    /// RSA modulus smaller than 2048 bits.
    #[error("RSA key too small: {bits} bits (minimum 2048)")]
    RsaKeyTooSmall {
        /// Modulus size.
        bits: usize,
    },
    /// EC key on a curve other than P-256 / P-384.
    #[error("unsupported elliptic curve {curve}")]
    UnsupportedCurve {
        /// Curve OID.
        curve: String,
    },
    /// A key type outside the policy.
    #[error("unsupported public key algorithm: {algorithm}")]
    UnsupportedKeyAlgorithm {
        /// Description.
        algorithm: String,
    },
    /// An extension appears twice.
    #[error("extension {oid} appears more than once")]
    DuplicateExtension {
        /// Its OID.
        oid: String,
    },
    /// A critical extension this crate does not process.
    #[error("unknown critical extension {oid}")]
    UnknownCriticalExtension {
        /// Its OID.
        oid: String,
    },
    /// An extension whose value does not decode.
    #[error("malformed extension {oid}")]
    MalformedExtension {
        /// Its OID.
        oid: String,
    },
    /// A CA certificate without basicConstraints cA = TRUE.
    #[error("not a CA certificate (basicConstraints cA is not TRUE)")]
    NotCa,
    /// policyConstraints not marked critical (RFC 5280 4.2.1.11: MUST be critical).
    #[error("policyConstraints is not marked critical")]
    PolicyConstraintsNotCritical,
    /// A CA certificate whose basicConstraints is not critical.
    #[error("basicConstraints of a CA certificate is not critical")]
    BasicConstraintsNotCritical,
    /// pathLenConstraint on a certificate that is not a CA.
    #[error("pathLenConstraint present but cA is not TRUE")]
    PathLenWithoutCa,
    /// A CA certificate offered as a leaf.
    #[error("CA certificate (cA = TRUE) used as an end-entity certificate")]
    CaUsedAsLeaf,
    /// A CA certificate without keyUsage.
    #[error("CA certificate has no keyUsage extension")]
    KeyUsageMissing,
    /// A CA certificate whose keyUsage lacks keyCertSign.
    #[error("keyUsage lacks keyCertSign")]
    KeyUsageMissingKeyCertSign,
    /// keyCertSign asserted on a certificate that is not a CA.
    #[error("keyUsage asserts keyCertSign but cA is not TRUE")]
    KeyCertSignWithoutCa,
    /// A keyUsage with no bit set.
    #[error("keyUsage has no bit set")]
    KeyUsageEmpty,
    /// A leaf whose keyUsage lacks digitalSignature.
    #[error("keyUsage lacks digitalSignature")]
    KeyUsageMissingDigitalSignature,
    /// A leaf whose extendedKeyUsage has neither serverAuth, clientAuth nor any.
    #[error("extendedKeyUsage allows neither serverAuth nor clientAuth")]
    EkuNotForTls,
    /// An extendedKeyUsage or subjectAltName with no entry.
    #[error("extension {oid} is empty")]
    EmptyExtension {
        /// Its OID.
        oid: String,
    },
    /// A CA certificate without subjectKeyIdentifier.
    #[error("CA certificate has no subjectKeyIdentifier")]
    SubjectKeyIdMissing,
    /// A certificate not self-issued without authorityKeyIdentifier.
    #[error("certificate has no authorityKeyIdentifier")]
    AuthorityKeyIdMissing,
    /// authorityKeyIdentifier marked critical.
    #[error("authorityKeyIdentifier is marked critical")]
    AuthorityKeyIdCritical,
    /// subjectKeyIdentifier marked critical.
    #[error("subjectKeyIdentifier is marked critical")]
    SubjectKeyIdCritical,
    /// A CA certificate with an empty subject.
    #[error("CA certificate has an empty subject")]
    EmptySubject,
    /// An empty subject without a critical subjectAltName.
    #[error("empty subject requires a critical subjectAltName")]
    EmptySubjectWithoutCriticalSan,
    /// A root that is not self-issued or whose self-signature fails.
    #[error("root is not self-signed: {reason}")]
    NotSelfSigned {
        /// Why.
        reason: String,
    },
}

/// Extensions this crate understands (it processes them, or they are informational).
const KNOWN_EXTENSIONS: &[&str] = &[
    "2.5.29.14",               // subjectKeyIdentifier
    "2.5.29.15",               // keyUsage
    "2.5.29.17",               // subjectAltName
    "2.5.29.18",               // issuerAltName
    "2.5.29.19",               // basicConstraints
    "2.5.29.30",               // nameConstraints (rustls-webpki enforces them)
    "2.5.29.31",               // cRLDistributionPoints
    "2.5.29.32",               // certificatePolicies (non-critical use only, see below)
    "2.5.29.35",               // authorityKeyIdentifier
    "2.5.29.37",               // extKeyUsage
    "2.5.29.46",               // freshestCRL
    "1.3.6.1.5.5.7.1.1",       // authorityInfoAccess
    "1.3.6.1.5.5.7.1.11",      // subjectInfoAccess
    "1.3.6.1.4.1.11129.2.4.2", // CT precertificate SCTs
];

/// Extensions we recognise but cannot honour when marked critical: policy processing.
const CRITICAL_UNSUPPORTED: &[&str] = &[
    "2.5.29.32", // certificatePolicies
    "2.5.29.33", // policyMappings
    "2.5.29.36", // policyConstraints
    "2.5.29.54", // inhibitAnyPolicy
];

const OID_POLICY_CONSTRAINTS: &str = "2.5.29.36";

fn oid_str(oid: &ObjectIdentifier) -> String {
    oid.to_string()
}

fn version_number(v: Version) -> u8 {
    match v {
        Version::V1 => 1,
        Version::V2 => 2,
        Version::V3 => 3,
    }
}

/// Checks one certificate for `role` at `now_unix` (Unix seconds) and lists every issue.
///
/// An empty list means the certificate, on its own, is acceptable: dates, role, extensions
/// and algorithm policy. Signatures between certificates and revocation are the business
/// of [`verify_chain`](crate::verify_chain) and [`is_revoked`](crate::is_revoked); a
/// [`Role::Root`] is checked for its own self-signature here.
///
/// ```
/// use ssr_pki::{Certificate, IssueKind, Role, check_certificate};
/// use ssr_testkit::pki::{KeyKind, TestPki};
///
/// let pki = TestPki::new(KeyKind::EcdsaP256, "Doc");
/// let root = Certificate::from_pem(&pki.root_pem)?;
/// assert!(check_certificate(&root, Role::Root, root.not_before() + 1).is_empty());
/// let late = check_certificate(&root, Role::Root, root.not_after() + 1);
/// assert!(matches!(late[0].kind, IssueKind::Expired { .. }));
/// # Ok::<(), ssr_pki::Error>(())
/// ```
pub fn check_certificate(cert: &Certificate, role: Role, now_unix: i64) -> Vec<Issue> {
    let mut kinds = Vec::new();
    check_validity(cert, now_unix, &mut kinds);
    check_structure(cert, role, &mut kinds);
    if role == Role::Root {
        check_self_signed(cert, &mut kinds);
    }
    let subject = cert.subject();
    kinds
        .into_iter()
        .map(|kind| Issue {
            subject: subject.clone(),
            kind,
        })
        .collect()
}

/// Validity plus the structural checks, for a certificate of a candidate path.
///
/// The anchor is checked too, with three allowances (it is there by an operator's trust
/// decision, not by a CA's say-so): its self-signature is not required (cross-signed
/// anchors exist), a missing keyUsage is accepted (RFC 5280 6.1.4 (n) and 6.3.3 (f) only
/// check the bits when the extension is present), and so is a non-conforming serial
/// number (4.1.2.2: users SHOULD handle them; real roots have serial 0). Bundle install
/// uses [`check_certificate`] with [`Role::Root`], which reports all of them.
pub(crate) fn path_issues(cert: &Certificate, role: Role, now: i64) -> Vec<IssueKind> {
    let mut kinds = Vec::new();
    check_validity(cert, now, &mut kinds);
    check_structure(cert, role, &mut kinds);
    if role == Role::Root {
        kinds.retain(|k| !matches!(k, IssueKind::KeyUsageMissing | IssueKind::BadSerialNumber));
    }
    kinds
}

fn check_validity(cert: &Certificate, now: i64, out: &mut Vec<IssueKind>) {
    let (not_before, not_after) = (cert.not_before(), cert.not_after());
    if not_before > not_after {
        out.push(IssueKind::EmptyValidityPeriod {
            not_before,
            not_after,
        });
    }
    if now > not_after {
        out.push(IssueKind::Expired { not_after, now });
    }
    if now < not_before {
        out.push(IssueKind::NotYetValid { not_before, now });
    }
}

fn check_self_signed(cert: &Certificate, out: &mut Vec<IssueKind>) {
    if !cert.is_self_issued() {
        out.push(IssueKind::NotSelfSigned {
            reason: "subject differs from issuer".to_owned(),
        });
    } else if let Err(e) = cert.verify_signed_by(cert) {
        out.push(IssueKind::NotSelfSigned {
            reason: e.to_string(),
        });
    }
}

fn check_structure(cert: &Certificate, role: Role, out: &mut Vec<IssueKind>) {
    let tbs = cert.tbs();
    let is_ca_role = role != Role::Leaf;

    // Version and serial number (RFC 5280 4.1.2.1, 4.1.2.2).
    let version = version_number(tbs.version());
    if version != 3 && (tbs.extensions().is_some() || is_ca_role) {
        out.push(IssueKind::BadVersion { version });
    }
    let serial = cert.serial_bytes();
    let serial_ok = match serial {
        [] => false,
        [first, ..] if first & 0x80 != 0 => false,
        [0, rest @ ..] => !rest.is_empty() && rest.len() <= 20 && rest[0] & 0x80 != 0,
        _ => serial.len() <= 20 && serial.iter().any(|b| *b != 0),
    };
    if !serial_ok {
        out.push(IssueKind::BadSerialNumber);
    }

    check_algorithms(cert, out);
    check_extensions(cert, role, out);
}

fn check_algorithms(cert: &Certificate, out: &mut Vec<IssueKind>) {
    let x = cert.x509();
    let outer = x.signature_algorithm();
    if outer != x.tbs_certificate().signature() {
        out.push(IssueKind::SignatureAlgorithmMismatch);
    }
    if sig::is_weak(outer) {
        out.push(IssueKind::WeakSignatureAlgorithm {
            algorithm: sig::algorithm_name(outer),
        });
    } else if !sig::POLICY_ALGORITHMS
        .iter()
        .any(|a| sig::signature_alg_matches(*a, outer))
    {
        out.push(IssueKind::UnsupportedSignatureAlgorithm {
            algorithm: sig::algorithm_name(outer),
        });
    }
    match cert.public_key_algorithm() {
        KeyAlgorithm::Rsa { bits } if bits < 2048 => {
            out.push(IssueKind::RsaKeyTooSmall { bits });
        }
        KeyAlgorithm::Rsa { bits } if bits > 8192 => {
            out.push(IssueKind::UnsupportedKeyAlgorithm {
                algorithm: format!("RSA-{bits} (maximum 8192)"),
            });
        }
        KeyAlgorithm::Rsa { .. } | KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {}
        KeyAlgorithm::EcOther { curve } => out.push(IssueKind::UnsupportedCurve { curve }),
        other => out.push(IssueKind::UnsupportedKeyAlgorithm {
            algorithm: other.to_string(),
        }),
    }
}

fn check_extensions(cert: &Certificate, role: Role, out: &mut Vec<IssueKind>) {
    let tbs = cert.tbs();
    let exts = tbs.extensions().map(Vec::as_slice).unwrap_or_default();
    let is_ca_role = role != Role::Leaf;

    for (i, ext) in exts.iter().enumerate() {
        let oid = oid_str(&ext.extn_id);
        if exts[..i].iter().any(|e| e.extn_id == ext.extn_id) {
            out.push(IssueKind::DuplicateExtension { oid: oid.clone() });
        }
        if oid == OID_POLICY_CONSTRAINTS && !ext.critical {
            out.push(IssueKind::PolicyConstraintsNotCritical);
        }
        let known = KNOWN_EXTENSIONS.contains(&oid.as_str());
        if ext.critical && (!known || CRITICAL_UNSUPPORTED.contains(&oid.as_str())) {
            out.push(IssueKind::UnknownCriticalExtension { oid });
        }
    }

    // Each known extension must decode; a malformed one is reported once by OID.
    let mut malformed = |oid: ObjectIdentifier, ok: bool| {
        if !ok {
            out.push(IssueKind::MalformedExtension { oid: oid_str(&oid) });
        }
    };
    let bc = tbs.get_extension::<BasicConstraints>();
    malformed(BasicConstraints::OID, bc.is_ok());
    let ku = tbs.get_extension::<KeyUsage>();
    malformed(KeyUsage::OID, ku.is_ok());
    let eku = tbs.get_extension::<ExtendedKeyUsage>();
    malformed(ExtendedKeyUsage::OID, eku.is_ok());
    let san = tbs.get_extension::<SubjectAltName>();
    malformed(SubjectAltName::OID, san.is_ok());
    let ski = tbs.get_extension::<SubjectKeyIdentifier>();
    malformed(SubjectKeyIdentifier::OID, ski.is_ok());
    let aki = tbs.get_extension::<AuthorityKeyIdentifier>();
    malformed(AuthorityKeyIdentifier::OID, aki.is_ok());

    let bc = bc.ok().flatten();
    let ku = ku.ok().flatten();
    let eku = eku.ok().flatten();
    let san = san.ok().flatten();
    let is_ca = bc.as_ref().is_some_and(|(_, b)| b.ca);

    // basicConstraints (4.2.1.9).
    if let Some((_, b)) = &bc
        && b.path_len_constraint.is_some()
        && !b.ca
    {
        out.push(IssueKind::PathLenWithoutCa);
    }
    if is_ca_role {
        match &bc {
            Some((critical, b)) if b.ca => {
                if !critical {
                    out.push(IssueKind::BasicConstraintsNotCritical);
                }
            }
            _ => out.push(IssueKind::NotCa),
        }
    } else if is_ca {
        out.push(IssueKind::CaUsedAsLeaf);
    }

    // keyUsage (4.2.1.3).
    match &ku {
        Some((_, k)) => {
            if k.0.is_empty() {
                out.push(IssueKind::KeyUsageEmpty);
            }
            if k.key_cert_sign() && !is_ca {
                out.push(IssueKind::KeyCertSignWithoutCa);
            }
            if is_ca_role && !k.key_cert_sign() {
                out.push(IssueKind::KeyUsageMissingKeyCertSign);
            }
            if role == Role::Leaf && !k.digital_signature() {
                out.push(IssueKind::KeyUsageMissingDigitalSignature);
            }
        }
        None if is_ca_role => out.push(IssueKind::KeyUsageMissing),
        None => {}
    }

    // extendedKeyUsage (4.2.1.12).
    if let Some((_, e)) = &eku {
        if e.0.is_empty() {
            out.push(IssueKind::EmptyExtension {
                oid: oid_str(&ExtendedKeyUsage::OID),
            });
        } else if role == Role::Leaf
            && !e
                .0
                .iter()
                .any(|p| *p == OID_KP_SERVER_AUTH || *p == OID_KP_CLIENT_AUTH || *p == OID_ANY_EKU)
        {
            out.push(IssueKind::EkuNotForTls);
        }
    }

    // Subject and subjectAltName (4.1.2.6, 4.2.1.6).
    if let Some((_, s)) = &san
        && s.0.is_empty()
    {
        out.push(IssueKind::EmptyExtension {
            oid: oid_str(&SubjectAltName::OID),
        });
    }
    if cert.subject_name().is_empty() {
        if is_ca_role {
            out.push(IssueKind::EmptySubject);
        } else if !san.as_ref().is_some_and(|(critical, _)| *critical) {
            out.push(IssueKind::EmptySubjectWithoutCriticalSan);
        }
    }

    // Key identifiers (4.2.1.1, 4.2.1.2).
    match ski.ok().flatten() {
        Some((true, _)) => out.push(IssueKind::SubjectKeyIdCritical),
        None if is_ca_role => out.push(IssueKind::SubjectKeyIdMissing),
        _ => {}
    }
    match aki.ok().flatten() {
        Some((true, _)) => out.push(IssueKind::AuthorityKeyIdCritical),
        None if !cert.is_self_issued() => out.push(IssueKind::AuthorityKeyIdMissing),
        _ => {}
    }
}
