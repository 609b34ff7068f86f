//! Audit events (one JSON object per line) and the security counters.
//!
//! ```json
//! {"type":"system.generate_csr","time":1700000000,"common_name":"6f1e…","key":"ecdsa-p256","fingerprint":"AB:…"}
//! {"type":"system.ingest_certificate","time":…,"common_name":"…","subject":"…","issuer":"…","serial":"…","fingerprint":"…","crl_urls":["http://…"],"certificate_authority":false}
//! {"type":"system.import_without_chain_check","time":…,"subject":"…","issuer":"…","fingerprint":"…","trusted_certificates":0}
//! {"type":"system.crl_update","time":…,"crl_url":"…","success":true,"issuer":"…","this_update":…,"next_update":…,"size":…,"total_entries":…,"added_entries":…,"removed_entries":…}
//! ```
//! Fingerprints are SHA-256 over the DER, upper-case hex in colon-separated pairs
//! (as `openssl x509 -fingerprint -sha256` prints them). Events never hold a secret.

use serde::{Deserialize, Serialize};

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A CSR was generated.
    #[serde(rename = "system.generate_csr")]
    GenerateCsr {
        /// Unix seconds.
        time: i64,
        /// The subject CN (the router UUID).
        common_name: String,
        /// The key algorithm.
        key: &'static str,
        /// SHA-256 of the CSR's DER.
        fingerprint: String,
    },
    /// A certificate passed the import checks and was stored.
    #[serde(rename = "system.ingest_certificate")]
    IngestCertificate {
        /// Unix seconds.
        time: i64,
        /// Subject CN, if any.
        common_name: Option<String>,
        /// Subject DN.
        subject: String,
        /// Issuer DN.
        issuer: String,
        /// Serial number, hex.
        serial: String,
        /// SHA-256 of the DER.
        fingerprint: String,
        /// CRL distribution point URLs found in the certificate.
        crl_urls: Vec<String>,
        /// Whether the certificate is a CA.
        certificate_authority: bool,
    },
    /// A certificate was imported without the chain check, by the operator's explicit
    /// choice (`ssr cert import --no-chain-check`). Written before the certificate's
    /// `system.ingest_certificate`.
    #[serde(rename = "system.import_without_chain_check")]
    ImportWithoutChainCheck {
        /// Unix seconds.
        time: i64,
        /// Subject DN.
        subject: String,
        /// Issuer DN (not checked against any trusted CA).
        issuer: String,
        /// SHA-256 of the DER.
        fingerprint: String,
        /// How many trusted CA certificates were installed (and not used).
        trusted_certificates: usize,
    },
    /// A certificate was refused at import.
    #[serde(rename = "system.reject_certificate")]
    RejectCertificate {
        /// Unix seconds.
        time: i64,
        /// SHA-256 of the DER when a certificate was parsed.
        fingerprint: Option<String>,
        /// Why (the import error, one line).
        reason: String,
    },
    /// A CRL was fetched (or failed to be).
    #[serde(rename = "system.crl_update")]
    CrlUpdate {
        /// Unix seconds.
        time: i64,
        /// Where it came from.
        crl_url: String,
        /// Whether it was fetched and ingested.
        success: bool,
        /// The CRL issuer DN (when ingested).
        #[serde(skip_serializing_if = "Option::is_none")]
        issuer: Option<String>,
        /// `thisUpdate`, Unix seconds (when ingested).
        #[serde(skip_serializing_if = "Option::is_none")]
        this_update: Option<i64>,
        /// `nextUpdate`, Unix seconds, when present.
        #[serde(skip_serializing_if = "Option::is_none")]
        next_update: Option<i64>,
        /// Body size in bytes.
        size: usize,
        /// Revoked entries in this CRL.
        total_entries: usize,
        /// Entries not in this URL's previous CRL.
        added_entries: usize,
        /// Entries of the previous CRL no longer listed.
        removed_entries: usize,
        /// The failure, when `success` is false.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl AuditEvent {
    /// The event as one JSON line (with the trailing newline).
    pub fn to_json_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// A SHA-256 fingerprint as `AB:CD:…` (upper-case hex pairs, colon separated).
pub fn fingerprint_hex(digest: &[u8]) -> String {
    let mut s = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// One security counter (the product's `show stats security …` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Counter {
    /// `CSR success`
    CsrSuccess,
    /// `CSR failure`
    CsrFailure,
    /// `certificate import success`
    ImportSuccess,
    /// `certificate import failure`
    ImportFailure,
    /// `CRL fetch success`
    CrlFetchSuccess,
    /// `CRL fetch failure`
    CrlFetchFailure,
    /// `CRL ingestion success`
    CrlIngestionSuccess,
    /// `CRL ingestion failure`
    CrlIngestionFailure,
    /// `certificate expired`
    CertificateExpired,
    /// `certificate invalid`
    CertificateInvalid,
    /// `certificate revoked`
    CertificateRevoked,
    /// `peer certificate expired`
    PeerCertificateExpired,
    /// `peer certificate invalid`
    PeerCertificateInvalid,
    /// `peer certificate revoked`
    PeerCertificateRevoked,
}

/// The security counters. Serialises to a flat JSON object (the CLI stores it next to
/// the audit log); unknown fields are refused when reading it back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct Counters {
    pub csr_success: u64,
    pub csr_failure: u64,
    pub import_success: u64,
    pub import_failure: u64,
    pub crl_fetch_success: u64,
    pub crl_fetch_failure: u64,
    pub crl_ingestion_success: u64,
    pub crl_ingestion_failure: u64,
    pub certificate_expired: u64,
    pub certificate_invalid: u64,
    pub certificate_revoked: u64,
    pub peer_certificate_expired: u64,
    pub peer_certificate_invalid: u64,
    pub peer_certificate_revoked: u64,
}

impl Counters {
    /// Adds one to `counter` (saturating).
    pub fn incr(&mut self, counter: Counter) {
        let c = self.slot(counter);
        *c = c.saturating_add(1);
    }

    /// Adds every counter of `other` into `self`.
    pub fn merge(&mut self, other: &Counters) {
        for &c in ALL {
            let v = other.get(c);
            let slot = self.slot(c);
            *slot = slot.saturating_add(v);
        }
    }
}

/// One list of (variant, field) pairs gives `get`, `slot` and `ALL`.
macro_rules! counter_fields {
    ($($variant:ident => $field:ident),* $(,)?) => {
        impl Counters {
            /// The value of `counter`.
            pub fn get(&self, counter: Counter) -> u64 {
                match counter {
                    $(Counter::$variant => self.$field,)*
                }
            }

            fn slot(&mut self, counter: Counter) -> &mut u64 {
                match counter {
                    $(Counter::$variant => &mut self.$field,)*
                }
            }
        }

        const ALL: &[Counter] = &[$(Counter::$variant),*];
    };
}

counter_fields! {
    CsrSuccess => csr_success,
    CsrFailure => csr_failure,
    ImportSuccess => import_success,
    ImportFailure => import_failure,
    CrlFetchSuccess => crl_fetch_success,
    CrlFetchFailure => crl_fetch_failure,
    CrlIngestionSuccess => crl_ingestion_success,
    CrlIngestionFailure => crl_ingestion_failure,
    CertificateExpired => certificate_expired,
    CertificateInvalid => certificate_invalid,
    CertificateRevoked => certificate_revoked,
    PeerCertificateExpired => peer_certificate_expired,
    PeerCertificateInvalid => peer_certificate_invalid,
    PeerCertificateRevoked => peer_certificate_revoked,
}

impl Counter {
    /// The expired / invalid / revoked counter for a certificate refused with `err`:
    /// the router's own (`peer == false`) or a peer's.
    pub fn for_rejection(err: &crate::Error, peer: bool) -> Counter {
        use crate::{Error, IssueKind};
        let expired = match err {
            Error::Expired { .. } => true,
            Error::CertificateRejected { issues } => issues
                .iter()
                .any(|i| matches!(i.kind, IssueKind::Expired { .. })),
            _ => false,
        };
        match (err, expired, peer) {
            (Error::Revoked { .. }, _, false) => Counter::CertificateRevoked,
            (Error::Revoked { .. }, _, true) => Counter::PeerCertificateRevoked,
            (_, true, false) => Counter::CertificateExpired,
            (_, true, true) => Counter::PeerCertificateExpired,
            (_, false, false) => Counter::CertificateInvalid,
            (_, false, true) => Counter::PeerCertificateInvalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_and_merge() {
        let mut a = Counters::default();
        a.incr(Counter::CrlFetchFailure);
        a.incr(Counter::CrlFetchFailure);
        a.incr(Counter::PeerCertificateRevoked);
        assert_eq!(a.get(Counter::CrlFetchFailure), 2);
        assert_eq!(a.crl_fetch_failure, 2);
        let mut b = Counters::default();
        b.incr(Counter::CrlFetchFailure);
        b.merge(&a);
        assert_eq!(b.crl_fetch_failure, 3);
        assert_eq!(b.peer_certificate_revoked, 1);
        assert_eq!(b.csr_success, 0);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Counters>(&json).unwrap(), b);
        assert!(serde_json::from_str::<Counters>(r#"{"bogus":1}"#).is_err());
    }

    #[test]
    fn rejection_counters() {
        use crate::Error;
        let revoked = Error::Revoked {
            serial_hex: "01".into(),
            issuer: "CN=x".into(),
        };
        assert_eq!(
            Counter::for_rejection(&revoked, false),
            Counter::CertificateRevoked
        );
        assert_eq!(
            Counter::for_rejection(&revoked, true),
            Counter::PeerCertificateRevoked
        );
        let expired = Error::Expired {
            not_after: 1,
            now: 2,
        };
        assert_eq!(
            Counter::for_rejection(&expired, true),
            Counter::PeerCertificateExpired
        );
        assert_eq!(
            Counter::for_rejection(&Error::UnknownIssuer, false),
            Counter::CertificateInvalid
        );
    }

    #[test]
    fn event_json_shape() {
        let e = AuditEvent::GenerateCsr {
            time: 5,
            common_name: "u".into(),
            key: "ecdsa-p256",
            fingerprint: fingerprint_hex(&[0xab, 0x01]),
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(v["type"], "system.generate_csr");
        assert_eq!(v["fingerprint"], "AB:01");
        assert_eq!(v["time"], 5);
    }
}
