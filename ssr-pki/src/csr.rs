//! PKCS#10 certificate signing requests whose subject is `CN=<router UUID>`.
//!
//! The request carries the router's P-256 public key, no attributes, and an
//! ecdsa-with-SHA256 self-signature made by the router key wherever it is held
//! ([`RouterKey`]: software, deterministic RFC 6979; or inside the TPM). PEM output
//! uses the RFC 7468 label `CERTIFICATE REQUEST`.

use core::fmt;
use core::str::FromStr;

use der::{Decode, Encode, EncodePem, asn1::BitString, pem::LineEnding};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};
use x509_cert::spki::{SignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned};

use crate::Error;
use crate::keys::{RouterKey, sign_checked};

/// A router UUID in canonical form: 36 characters, `8-4-4-4-12` hexadecimal groups,
/// stored lower-case (RFC 9562 §4: UUIDs are output in lower case; upper-case input is
/// accepted and normalised). Braces, `urn:uuid:` prefixes and other spellings are
/// refused so that the CN is always spelled one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouterUuid([u8; 36]);

impl RouterUuid {
    /// Parses a UUID in canonical form.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason: &'static str| Error::InvalidUuid {
            input: input.chars().take(64).collect(),
            reason,
        };
        let bytes = input.as_bytes();
        if bytes.len() != 36 {
            return Err(bad("a UUID is 36 characters (8-4-4-4-12 hex digits)"));
        }
        let mut out = [0u8; 36];
        for (i, (&b, o)) in bytes.iter().zip(out.iter_mut()).enumerate() {
            *o = match i {
                8 | 13 | 18 | 23 if b == b'-' => b'-',
                8 | 13 | 18 | 23 => return Err(bad("dashes must be at positions 9, 14, 19, 24")),
                _ if b.is_ascii_hexdigit() => b.to_ascii_lowercase(),
                _ => return Err(bad("only hexadecimal digits and dashes are allowed")),
            };
        }
        if out.iter().all(|&b| b == b'0' || b == b'-') {
            return Err(bad("the nil UUID does not name a router"));
        }
        Ok(Self(out))
    }

    /// The canonical lower-case spelling.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever stored.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl FromStr for RouterUuid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Display for RouterUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signed PKCS#10 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    der: Vec<u8>,
    uuid: RouterUuid,
}

impl Csr {
    /// Builds and signs the request for `uuid` with `key` (the software key or the
    /// TPM-held one). The signature is checked against the key's public key before the
    /// request is returned.
    pub fn build(key: &(impl RouterKey + ?Sized), uuid: &RouterUuid) -> Result<Self, Error> {
        let csr_err = |what: &str, e: &dyn fmt::Display| Error::Csr {
            reason: format!("{what}: {e}"),
        };
        let subject = Name::from_str(&format!("CN={uuid}")).map_err(|e| csr_err("subject", &e))?;
        let public_key = SubjectPublicKeyInfoOwned::from_der(&key.public_key_der()?)
            .map_err(|e| csr_err("public key", &e))?;
        let info = CertReqInfo {
            version: Version::V1,
            subject,
            public_key,
            attributes: Default::default(),
        };
        let tbs = info.to_der().map_err(|e| csr_err("encoding", &e))?;
        let (vk, signature) = sign_checked(key, &tbs)?;
        if SubjectPublicKeyInfoOwned::from_key(&vk).ok().as_ref() != Some(&info.public_key) {
            return Err(csr_err("public key", &"not a P-256 key"));
        }
        let signature = signature.to_der();
        let req = CertReq {
            info,
            algorithm: p256::ecdsa::SigningKey::SIGNATURE_ALGORITHM_IDENTIFIER.into(),
            signature: BitString::from_bytes(signature.as_bytes())
                .map_err(|e| csr_err("signature", &e))?,
        };
        let der = req.to_der().map_err(|e| csr_err("encoding", &e))?;
        Ok(Self { der, uuid: *uuid })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The UUID in the subject CN.
    pub fn uuid(&self) -> &RouterUuid {
        &self.uuid
    }

    /// PEM (`-----BEGIN CERTIFICATE REQUEST-----`, LF line endings).
    pub fn to_pem(&self) -> Result<String, Error> {
        CertReq::from_der(&self.der)
            .and_then(|req| req.to_pem(LineEnding::LF))
            .map_err(|e| Error::Csr {
                reason: format!("PEM encoding: {e}"),
            })
    }

    /// The SHA-256 of the DER, for audit events.
    pub fn fingerprint_sha256(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(&self.der).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{DerSignature, VerifyingKey};
    use ssr_testkit::TestRng;

    #[test]
    fn uuid_forms() {
        let u = RouterUuid::parse("0A1B2C3D-4E5F-4a6b-8c7d-9e0f1a2b3c4d").unwrap();
        assert_eq!(u.as_str(), "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
        for bad in [
            "",
            "0a1b2c3d4e5f4a6b8c7d9e0f1a2b3c4d",
            "{0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d}",
            "urn:uuid:0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4g",
            "0a1b2c3d-4e5f-4a6b-8c7d9-e0f1a2b3c4d",
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4\u{e9}",
            "00000000-0000-0000-0000-000000000000",
            "0a1b2c3d,4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        ] {
            assert!(
                matches!(RouterUuid::parse(bad), Err(Error::InvalidUuid { .. })),
                "{bad:?}"
            );
        }
    }

    /// A signer whose signatures are not its key's (a faulty TPM, a key mix-up).
    struct Faulty(PrivateKey, PrivateKey);

    impl RouterKey for Faulty {
        fn public_key_der(&self) -> Result<Vec<u8>, Error> {
            self.0.public_key_der()
        }
        fn sign_p256(&self, message: &[u8]) -> Result<[u8; 64], Error> {
            self.1.sign_p256(message)
        }
        fn holder(&self) -> &'static str {
            "tpm"
        }
    }

    #[test]
    fn a_signature_that_does_not_verify_never_makes_a_csr() {
        let uuid = RouterUuid::parse("6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e90").unwrap();
        let faulty = Faulty(
            PrivateKey::generate(&mut TestRng(5)),
            PrivateKey::generate(&mut TestRng(6)),
        );
        let err = Csr::build(&faulty, &uuid).unwrap_err();
        assert!(
            err.to_string()
                .contains("tpm key's signature does not verify"),
            "{err}"
        );
        // The same key on both sides is fine.
        let good = Faulty(
            PrivateKey::generate(&mut TestRng(5)),
            PrivateKey::generate(&mut TestRng(5)),
        );
        assert!(Csr::build(&good, &uuid).is_ok());
    }

    #[test]
    fn csr_has_cn_and_valid_self_signature() {
        let key = PrivateKey::generate(&mut TestRng(3));
        let uuid = RouterUuid::parse("6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e90").unwrap();
        let csr = Csr::build(&key, &uuid).unwrap();
        let req = CertReq::from_der(csr.der()).unwrap();
        assert_eq!(
            req.info.subject.to_string(),
            "CN=6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e90"
        );
        let tbs = req.info.to_der().unwrap();
        let vk = {
            use p256::pkcs8::DecodePublicKey;
            VerifyingKey::from_public_key_der(&req.info.public_key.to_der().unwrap()).unwrap()
        };
        assert_eq!(&vk, key.verifying_key());
        let sig = DerSignature::try_from(req.signature.raw_bytes()).unwrap();
        vk.verify(&tbs, &sig).unwrap();
        let pem = csr.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    }
}
