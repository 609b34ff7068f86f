//! Certificate revocation lists (RFC 5280 section 5): parsing, signature, lookups.

use std::fmt;
use std::sync::Arc;

use der::Decode;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::name::Name;

use crate::Error;
use crate::cert::{Certificate, hex_upper, unix_seconds};
use crate::pem::{self, PemItem};
use crate::sig;

/// A parsed X.509 v2 CRL.
///
/// Accepted only if both the RFC 5280 decoder and rustls-webpki's CRL profile accept it:
/// version 2, a nextUpdate, no delta CRL, no unknown critical extension.
#[derive(Clone)]
pub struct Crl {
    der: Vec<u8>,
    inner: CertificateList,
    webpki: Arc<webpki::CertRevocationList<'static>>,
}

impl fmt::Debug for Crl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crl")
            .field("issuer", &self.issuer())
            .field("this_update", &self.this_update())
            .field("next_update", &self.next_update())
            .field("revoked", &self.revoked_count())
            .finish()
    }
}

impl PartialEq for Crl {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for Crl {}

/// One entry of a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The revoked serial number, upper-case hex.
    pub serial_hex: String,
    /// revocationDate as Unix seconds.
    pub revocation_date: i64,
    /// The reasonCode entry extension, when present (e.g. `KeyCompromise`).
    pub reason: Option<String>,
}

/// Why [`is_revoked`] says a certificate is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The matching CRL entry.
    pub entry: RevokedEntry,
    /// The issuer of the CRL that lists it.
    pub crl_issuer: String,
}

impl Crl {
    /// Parses one DER CRL; trailing bytes are an error.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let malformed = |reason: String| Error::CrlMalformed { reason };
        let inner = CertificateList::from_der(der).map_err(|e| malformed(e.to_string()))?;
        check_crl_extensions(&inner).map_err(|r| malformed(r.to_owned()))?;
        let owned = webpki::OwnedCertRevocationList::from_der(der)
            .map_err(|e| malformed(format!("{e:?}")))?;
        Ok(Self {
            der: der.to_vec(),
            inner,
            webpki: Arc::new(webpki::CertRevocationList::Owned(owned)),
        })
    }

    /// Parses a PEM text holding exactly one `X509 CRL` block.
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        match pem::parse_single(text, pem::LABEL_CRL)? {
            PemItem::Crl(c) => Ok(c),
            other => Err(Error::PemLabel {
                expected: pem::LABEL_CRL,
                found: other.label().to_owned(),
            }),
        }
    }

    /// The CRL as PEM (RFC 7468).
    pub fn to_pem(&self) -> String {
        pem::encode(pem::LABEL_CRL, &self.der)
    }

    /// The DER encoding, exactly as parsed.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub(crate) fn webpki(&self) -> &webpki::CertRevocationList<'static> {
        &self.webpki
    }

    /// True when this CRL names `cert` as its issuer.
    pub(crate) fn issued_by_name_of(&self, cert: &Certificate) -> bool {
        self.issuer_name() == cert.subject_name()
    }

    pub(crate) fn issuer_name(&self) -> &Name {
        &self.inner.tbs_cert_list.issuer
    }

    /// The issuer distinguished name (RFC 4514 string).
    pub fn issuer(&self) -> String {
        self.issuer_name().to_string()
    }

    /// thisUpdate as Unix seconds.
    pub fn this_update(&self) -> i64 {
        unix_seconds(&self.inner.tbs_cert_list.this_update)
    }

    /// nextUpdate as Unix seconds (always present: CRLs without it are rejected).
    pub fn next_update(&self) -> i64 {
        self.inner
            .tbs_cert_list
            .next_update
            .as_ref()
            .map_or(i64::MAX, unix_seconds)
    }

    /// True when the CRL is past its nextUpdate at `now_unix`.
    pub fn is_stale(&self, now_unix: i64) -> bool {
        self.next_update() < now_unix
    }

    /// Number of revoked entries.
    pub fn revoked_count(&self) -> usize {
        self.inner
            .tbs_cert_list
            .revoked_certificates
            .as_ref()
            .map_or(0, Vec::len)
    }

    /// The revoked entries, in CRL order.
    pub fn revoked(&self) -> impl Iterator<Item = RevokedEntry> + '_ {
        self.inner
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .map(|rc| RevokedEntry {
                serial_hex: hex_upper(rc.serial_number.as_bytes()),
                revocation_date: unix_seconds(&rc.revocation_date),
                reason: rc.crl_entry_extensions.as_ref().and_then(|exts| {
                    exts.iter()
                        .find(|e| e.extn_id == <CrlReason as der::oid::AssociatedOid>::OID)
                        .and_then(|e| CrlReason::from_der(e.extn_value.as_bytes()).ok())
                        .map(|r| format!("{r:?}"))
                }),
            })
    }

    /// The entry for a serial number (minimal unsigned big-endian bytes), if listed.
    fn find_serial(&self, serial: &[u8]) -> Option<RevokedEntry> {
        let hex = hex_upper(serial);
        self.revoked().find(|e| e.serial_hex == hex)
    }

    /// Checks that `issuer` may have issued this CRL: the names match and the issuer's
    /// keyUsage, when present, allows cRLSign. No signature check.
    pub(crate) fn check_issuer_may_sign(&self, issuer: &Certificate) -> Result<(), Error> {
        if self.issuer_name() != issuer.subject_name() {
            return Err(Error::CrlIssuerMismatch {
                crl_issuer: self.issuer(),
                certificate: issuer.subject(),
            });
        }
        match issuer.key_usage() {
            Some((_, ku)) if !ku.crl_sign() => Err(Error::IssuerNotCrlSigner {
                issuer: issuer.subject(),
            }),
            _ => Ok(()),
        }
    }

    /// Checks that `issuer` signed this CRL: names match, the issuer's keyUsage (if any)
    /// allows cRLSign, and the signature verifies under the algorithm policy.
    pub fn verify_signature(&self, issuer: &Certificate) -> Result<(), Error> {
        self.check_issuer_may_sign(issuer)?;
        let tbs = sig::first_inner_element(&self.der).ok_or(Error::BadSignature)?;
        let signature = self.inner.signature.as_bytes().ok_or(Error::BadSignature)?;
        sig::verify(
            issuer.x509().tbs_certificate().subject_public_key_info(),
            &self.inner.signature_algorithm,
            tbs,
            signature,
        )
    }
}

/// CRL extensions this crate understands.
const KNOWN_CRL_EXTENSIONS: &[&str] = &[
    "2.5.29.35", // authorityKeyIdentifier
    "2.5.29.18", // issuerAltName
    "2.5.29.20", // cRLNumber
    "2.5.29.28", // issuingDistributionPoint
    "2.5.29.46", // freshestCRL
];
const OID_CRL_NUMBER: &str = "2.5.29.20";

/// RFC 5280 5.2: a cRLNumber is mandatory and non-critical; no unknown critical extension.
fn check_crl_extensions(crl: &CertificateList) -> Result<(), &'static str> {
    let exts = crl
        .tbs_cert_list
        .crl_extensions
        .as_deref()
        .unwrap_or_default();
    let mut crl_number = None;
    for ext in exts {
        let oid = ext.extn_id.to_string();
        if oid == OID_CRL_NUMBER {
            crl_number = Some(ext.critical);
        } else if ext.critical && !KNOWN_CRL_EXTENSIONS.contains(&oid.as_str()) {
            return Err("unknown critical CRL extension");
        }
    }
    match crl_number {
        None => Err("no cRLNumber extension (RFC 5280 5.2.3)"),
        Some(true) => Err("cRLNumber marked critical (RFC 5280 5.2.3)"),
        Some(false) => Ok(()),
    }
}

/// Looks `cert` up in `crls`: the first CRL whose issuer is the certificate's issuer and
/// that lists its serial number.
///
/// This is a pure lookup: the caller vouches for the CRLs (checked with
/// [`Crl::verify_signature`] when they were accepted). [`verify_chain`](crate::verify_chain)
/// checks CRL signatures, the issuer's cRLSign and freshness itself.
pub fn is_revoked(cert: &Certificate, crls: &[Crl]) -> Option<Revocation> {
    crls.iter()
        .filter(|crl| crl.issuer_name() == cert.issuer_name())
        .find_map(|crl| {
            crl.find_serial(cert.serial_bytes())
                .map(|entry| Revocation {
                    entry,
                    crl_issuer: crl.issuer(),
                })
        })
}
