//! The conductor's onboarding records and the certificate-request check.
//!
//! When a router is onboarded the conductor records the public key whose possession
//! the router proved (its TPM-held key signed the session-bound transcript): one JSON
//! line `{"router":"…","key":"<base64url SPKI DER>","jti":"…","time":N}`. The router's
//! later certificate request must carry that same key: [`check_csr`] verifies the
//! request's self-signature (ECDSA P-256, SHA-256) and compares its
//! SubjectPublicKeyInfo with the record, so the certificate the conductor's CA signs
//! is for the key the TPM proved, never for a key swapped in afterwards.
//!
//! Pure: the adapter (feature `https`) appends the records and reads them back.

use der::{Decode, Encode};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use x509_cert::request::CertReq;

use crate::Error;
use crate::b64;

/// ecdsa-with-SHA256 (RFC 5758).
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";

/// One onboarding: the router and the key it proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnboardingRecord {
    /// The router's name.
    pub router: String,
    /// The proved public key, base64url of its DER SubjectPublicKeyInfo.
    pub key: String,
    /// The token id used.
    pub jti: String,
    /// Unix seconds.
    pub time: u64,
}

impl OnboardingRecord {
    /// A record for `router` and its key (DER SPKI).
    pub fn new(router: &str, spki_der: &[u8], jti: &str, unix_now: u64) -> Self {
        Self {
            router: router.to_owned(),
            key: b64::encode(spki_der),
            jti: jti.to_owned(),
            time: unix_now,
        }
    }

    /// The record as one JSON line (with the newline).
    pub fn to_json_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }

    /// Parses one line (strict: unknown fields are errors).
    pub fn parse(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }

    /// The proved key, DER SPKI.
    pub fn key_der(&self) -> Result<Vec<u8>, Error> {
        b64::decode(&self.key).ok_or_else(|| Error::CsrKeyMismatch {
            router: self.router.clone(),
            reason: "the onboarding record's key is not base64url".into(),
        })
    }
}

/// The latest record for `router` among `records` (later lines win: a router
/// onboarded again has a new key).
pub fn latest<'a>(
    records: impl IntoIterator<Item = &'a OnboardingRecord>,
    router: &str,
) -> Option<&'a OnboardingRecord> {
    records.into_iter().filter(|r| r.router == router).last()
}

/// Checks a DER certificate request against `router`'s onboarding record: the
/// request's self-signature must verify (ECDSA P-256 with SHA-256) and its public key
/// must be the one proved at onboarding.
pub fn check_csr(
    router: &str,
    record: Option<&OnboardingRecord>,
    csr_der: &[u8],
) -> Result<(), Error> {
    let bad = |reason: String| Error::MalformedCsr { reason };
    let req = CertReq::from_der(csr_der).map_err(|e| bad(e.to_string()))?;
    if req.algorithm.oid.to_string() != ECDSA_SHA256 {
        return Err(bad(format!(
            "signature algorithm {} (expected ecdsa-with-SHA256)",
            req.algorithm.oid
        )));
    }
    let spki = req
        .info
        .public_key
        .to_der()
        .map_err(|e| bad(e.to_string()))?;
    let key = VerifyingKey::from_public_key_der(&spki)
        .map_err(|e| bad(format!("not a P-256 public key: {e}")))?;
    let tbs = req.info.to_der().map_err(|e| bad(e.to_string()))?;
    let sig = req
        .signature
        .as_bytes()
        .ok_or_else(|| bad("signature has unused bits".into()))
        .and_then(|b| DerSignature::from_bytes(b).map_err(|e| bad(e.to_string())))?;
    key.verify(&tbs, &sig)
        .map_err(|_| bad("the self-signature does not verify".into()))?;
    let mismatch = |reason: &str| Error::CsrKeyMismatch {
        router: router.to_owned(),
        reason: reason.into(),
    };
    let record = record.ok_or_else(|| mismatch("no onboarding record for this router"))?;
    if record.router != router {
        return Err(mismatch("the onboarding record is another router's"));
    }
    if record.key_der()? != spki {
        return Err(mismatch(
            "its public key is not the key the router proved at onboarding",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair and a CSR for it (rcgen), with the key's DER SPKI.
    fn csr() -> (Vec<u8>, Vec<u8>) {
        let kp = rcgen::KeyPair::generate().expect("key");
        let req = rcgen::CertificateParams::new(vec!["r1".to_string()])
            .expect("params")
            .serialize_request(&kp)
            .expect("csr");
        let spki = VerifyingKey::from_public_key_pem(&kp.public_key_pem()).expect("p256");
        let spki = p256::pkcs8::EncodePublicKey::to_public_key_der(&spki).expect("der");
        (req.der().to_vec(), spki.as_bytes().to_vec())
    }

    #[test]
    fn the_latest_record_decides_and_lines_are_strict() {
        let (csr_a, spki_a) = csr();
        let (csr_b, spki_b) = csr();
        let old = OnboardingRecord::new("r1", &spki_a, "j1", 1);
        let new = OnboardingRecord::new("r1", &spki_b, "j2", 2);
        let other = OnboardingRecord::new("r2", &spki_a, "j3", 3);
        let all = [old.clone(), new.clone(), other.clone()];
        assert_eq!(latest(&all, "r1"), Some(&new));
        check_csr("r1", latest(&all, "r1"), &csr_b).expect("re-onboarded key");
        assert!(matches!(
            check_csr("r1", latest(&all, "r1"), &csr_a),
            Err(Error::CsrKeyMismatch { .. })
        ));
        // Another router's record never vouches for this router.
        assert!(matches!(
            check_csr("r1", Some(&other), &csr_a),
            Err(Error::CsrKeyMismatch { .. })
        ));
        assert!(matches!(
            check_csr("r1", None, &csr_a),
            Err(Error::CsrKeyMismatch { .. })
        ));
        assert_eq!(
            OnboardingRecord::parse(old.to_json_line().trim()).expect("parse"),
            old
        );
        assert!(
            OnboardingRecord::parse(r#"{"router":"r","key":"","jti":"","time":1,"x":1}"#).is_err()
        );
    }
}
