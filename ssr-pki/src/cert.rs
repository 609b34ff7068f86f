//! Parsed X.509 certificates and their accessors.

use std::fmt;

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    BasicConstraints, CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, SubjectAltName,
};
use x509_cert::name::Name;
use x509_cert::time::Time;

use crate::Error;
use crate::pem::{self, PemItem};
use crate::sig;

/// A parsed DER X.509 certificate.
///
/// Parsing is strict DER (no trailing bytes, RFC 5280 profile); semantic checks live in
/// [`check_certificate`](crate::check_certificate) and [`verify_chain`](crate::verify_chain).
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    inner: x509_cert::Certificate,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject())
            .field("issuer", &self.issuer())
            .field("serial", &self.serial_hex())
            .finish()
    }
}

/// The subject public key's algorithm, as far as the policy cares.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA with a modulus of this many bits.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA over NIST P-256.
    EcP256,
    /// ECDSA over NIST P-384.
    EcP384,
    /// An elliptic-curve key on another curve (by OID).
    EcOther {
        /// The named curve's OID, dotted.
        curve: String,
    },
    /// Ed25519.
    Ed25519,
    /// Anything else (by OID).
    Other {
        /// The algorithm OID, dotted.
        oid: String,
    },
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa { bits } => write!(f, "RSA-{bits}"),
            Self::EcP256 => f.write_str("ECDSA P-256"),
            Self::EcP384 => f.write_str("ECDSA P-384"),
            Self::EcOther { curve } => write!(f, "EC curve {curve}"),
            Self::Ed25519 => f.write_str("Ed25519"),
            Self::Other { oid } => write!(f, "key algorithm {oid}"),
        }
    }
}

pub(crate) const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(crate) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// id-kp-serverAuth.
pub(crate) const OID_KP_SERVER_AUTH: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
/// id-kp-clientAuth.
pub(crate) const OID_KP_CLIENT_AUTH: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
/// anyExtendedKeyUsage.
pub(crate) const OID_ANY_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");

#[derive(der::Sequence)]
struct RsaPublicKey<'a> {
    modulus: der::asn1::UintRef<'a>,
    _exponent: der::asn1::UintRef<'a>,
}

/// Unix seconds of an X.509 time.
pub(crate) fn unix_seconds(t: &Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// Upper-case hex of a byte string.
pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

impl Certificate {
    /// Parses one DER certificate; trailing bytes are an error.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let inner =
            x509_cert::Certificate::from_der(der).map_err(|e| Error::CertificateMalformed {
                reason: e.to_string(),
            })?;
        Ok(Self {
            der: der.to_vec(),
            inner,
        })
    }

    /// Parses a PEM text holding exactly one `CERTIFICATE` block.
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        match pem::parse_single(text, pem::LABEL_CERTIFICATE)? {
            PemItem::Certificate(c) => Ok(c),
            other => Err(Error::PemLabel {
                expected: pem::LABEL_CERTIFICATE,
                found: other.label().to_owned(),
            }),
        }
    }

    /// The certificate as PEM (RFC 7468, 64-column lines, LF).
    pub fn to_pem(&self) -> String {
        pem::encode(pem::LABEL_CERTIFICATE, &self.der)
    }

    /// The DER encoding, exactly as parsed.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 over the DER encoding.
    pub fn fingerprint_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    pub(crate) fn tbs(&self) -> &x509_cert::TbsCertificate {
        self.inner.tbs_certificate()
    }

    pub(crate) fn x509(&self) -> &x509_cert::Certificate {
        &self.inner
    }

    /// Subject distinguished name (RFC 4514 string).
    pub fn subject(&self) -> String {
        self.tbs().subject().to_string()
    }

    /// Issuer distinguished name (RFC 4514 string).
    pub fn issuer(&self) -> String {
        self.tbs().issuer().to_string()
    }

    pub(crate) fn subject_name(&self) -> &Name {
        self.tbs().subject()
    }

    pub(crate) fn issuer_name(&self) -> &Name {
        self.tbs().issuer()
    }

    /// The first commonName of the subject, if any (and if it decodes as a string).
    pub fn subject_cn(&self) -> Option<String> {
        self.subject_name()
            .common_name()
            .ok()
            .flatten()
            .map(|cn| cn.value().into_owned())
    }

    /// The serial number as upper-case hex of its (minimal, unsigned) bytes.
    pub fn serial_hex(&self) -> String {
        hex_upper(self.serial_bytes())
    }

    pub(crate) fn serial_bytes(&self) -> &[u8] {
        self.tbs().serial_number().as_bytes()
    }

    /// notBefore as Unix seconds.
    pub fn not_before(&self) -> i64 {
        unix_seconds(&self.tbs().validity().not_before)
    }

    /// notAfter as Unix seconds.
    pub fn not_after(&self) -> i64 {
        unix_seconds(&self.tbs().validity().not_after)
    }

    /// True when subject and issuer names are equal (a root or a self-issued CA).
    pub fn is_self_issued(&self) -> bool {
        self.subject_name() == self.issuer_name()
    }

    /// True when basicConstraints says cA = TRUE.
    pub fn is_ca(&self) -> bool {
        self.basic_constraints().is_some_and(|(_, bc)| bc.ca)
    }

    /// The pathLenConstraint of a CA certificate, if any.
    pub fn path_len_constraint(&self) -> Option<u8> {
        self.basic_constraints()
            .and_then(|(_, bc)| bc.path_len_constraint)
    }

    /// The basicConstraints extension with its criticality (None when absent or malformed).
    pub(crate) fn basic_constraints(&self) -> Option<(bool, BasicConstraints)> {
        self.tbs()
            .get_extension::<BasicConstraints>()
            .ok()
            .flatten()
    }

    /// The keyUsage extension with its criticality (None when absent or malformed).
    pub(crate) fn key_usage(&self) -> Option<(bool, KeyUsage)> {
        self.tbs().get_extension::<KeyUsage>().ok().flatten()
    }

    /// The extendedKeyUsage purposes (None when absent or malformed).
    pub(crate) fn extended_key_usage(&self) -> Option<Vec<ObjectIdentifier>> {
        self.tbs()
            .get_extension::<ExtendedKeyUsage>()
            .ok()
            .flatten()
            .map(|(_, eku)| eku.0)
    }

    /// The extendedKeyUsage purposes as dotted OIDs (empty when absent).
    pub fn extended_key_usage_oids(&self) -> Vec<String> {
        self.extended_key_usage()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn subject_alt_names(&self) -> Vec<GeneralName> {
        self.tbs()
            .get_extension::<SubjectAltName>()
            .ok()
            .flatten()
            .map(|(_, san)| san.0)
            .unwrap_or_default()
    }

    /// dNSName entries of the subjectAltName extension.
    pub fn san_dns_names(&self) -> Vec<String> {
        self.subject_alt_names()
            .into_iter()
            .filter_map(|n| match n {
                GeneralName::DnsName(s) => Some(s.to_string()),
                _ => None,
            })
            .collect()
    }

    /// uniformResourceIdentifier entries of the subjectAltName extension.
    pub fn san_uris(&self) -> Vec<String> {
        self.subject_alt_names()
            .into_iter()
            .filter_map(|n| match n {
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                _ => None,
            })
            .collect()
    }

    /// The URIs of the cRLDistributionPoints extension (fullName URIs only).
    pub fn crl_distribution_points(&self) -> Vec<String> {
        let Some((_, dps)) = self
            .tbs()
            .get_extension::<CrlDistributionPoints>()
            .ok()
            .flatten()
        else {
            return Vec::new();
        };
        dps.0
            .into_iter()
            .filter_map(|dp| match dp.distribution_point {
                Some(DistributionPointName::FullName(names)) => Some(names),
                _ => None,
            })
            .flatten()
            .filter_map(|n| match n {
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                _ => None,
            })
            .collect()
    }

    /// The subject public key's algorithm (and size or curve).
    pub fn public_key_algorithm(&self) -> KeyAlgorithm {
        let spki = self.tbs().subject_public_key_info();
        let oid = spki.algorithm.oid;
        if oid == OID_RSA_ENCRYPTION {
            let bits = spki
                .subject_public_key
                .as_bytes()
                .and_then(|b| RsaPublicKey::from_der(b).ok())
                .map(|k| {
                    let m = k.modulus.as_bytes();
                    match m.first() {
                        Some(first) => m.len() * 8 - first.leading_zeros() as usize,
                        None => 0,
                    }
                })
                .unwrap_or(0);
            KeyAlgorithm::Rsa { bits }
        } else if oid == OID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve {
                Some(c) if c == OID_P256 => KeyAlgorithm::EcP256,
                Some(c) if c == OID_P384 => KeyAlgorithm::EcP384,
                Some(c) => KeyAlgorithm::EcOther {
                    curve: c.to_string(),
                },
                None => KeyAlgorithm::EcOther {
                    curve: "(missing)".to_owned(),
                },
            }
        } else if oid == OID_ED25519 {
            KeyAlgorithm::Ed25519
        } else {
            KeyAlgorithm::Other {
                oid: oid.to_string(),
            }
        }
    }

    /// The signature algorithm that signed this certificate, by name when known.
    pub fn signature_algorithm(&self) -> String {
        sig::algorithm_name(self.inner.signature_algorithm())
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.tbs()
            .subject_public_key_info()
            .to_der()
            .unwrap_or_default()
    }

    /// Verifies that `issuer`'s key signed this certificate (algorithm policy applies).
    pub fn verify_signed_by(&self, issuer: &Certificate) -> Result<(), Error> {
        // The signed bytes exactly as received: re-encoding could normalise times.
        let tbs = sig::first_inner_element(&self.der).ok_or(Error::BadSignature)?;
        let signature = self
            .inner
            .signature()
            .as_bytes()
            .ok_or(Error::BadSignature)?;
        sig::verify(
            issuer.tbs().subject_public_key_info(),
            self.inner.signature_algorithm(),
            tbs,
            signature,
        )
    }
}
