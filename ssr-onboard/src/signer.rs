//! The router's signing key, behind a small trait so the TPM-held key and a software
//! key are interchangeable. Every [`ssr_pki::keys::RouterKey`] is a [`RouterSigner`]:
//! the router key is one key, the one its CSR carries (`ssr cert keygen [--tpm]`).

use core::fmt;

use p256::ecdsa::{Signature, SigningKey, VerifyingKey, signature::Signer, signature::Verifier};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use ssr_pki::keys::RouterKey;

use crate::Error;

/// The router's private key: held in the TPM in production, in software in unit tests.
///
/// The key is ECDSA P-256; signatures are ES256 (SHA-256, `r || s`, 64 bytes).
pub trait RouterSigner {
    /// The public key as DER SubjectPublicKeyInfo.
    fn public_key_spki(&self) -> Result<Vec<u8>, Error>;
    /// Signs `message` (hashed with SHA-256 by the signer).
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error>;
}

/// A P-256 key in memory (tests, and routers without a TPM).
pub struct SoftwareSigner {
    key: SigningKey,
}

impl SoftwareSigner {
    /// Wraps a key.
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| Error::InvalidKey {
            reason: format!("not a PKCS#8 P-256 private key: {e}"),
        })?;
        Ok(Self { key })
    }

    /// A fresh random key.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            key: SigningKey::generate_from_rng(rng),
        }
    }
}

impl fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SoftwareSigner([redacted])")
    }
}

impl RouterKey for SoftwareSigner {
    fn public_key_der(&self) -> Result<Vec<u8>, ssr_pki::Error> {
        let der = self.key.verifying_key().to_public_key_der().map_err(|e| {
            ssr_pki::Error::InvalidKey {
                reason: e.to_string(),
            }
        })?;
        Ok(der.as_bytes().to_vec())
    }

    fn sign_p256(&self, message: &[u8]) -> Result<[u8; 64], ssr_pki::Error> {
        let sig: Signature = self.key.sign(message);
        Ok(sig.to_bytes().into())
    }

    fn holder(&self) -> &'static str {
        "software"
    }
}

/// Any router key of ssr-pki (the software [`ssr_pki::keys::PrivateKey`] of
/// `router.key`, [`SoftwareSigner`], or with feature `tpm` ssr-tpm's TPM-held key)
/// signs the onboarding proof.
impl<K: RouterKey + ?Sized> RouterSigner for K {
    fn public_key_spki(&self) -> Result<Vec<u8>, Error> {
        self.public_key_der().map_err(|e| Error::Signer {
            reason: e.to_string(),
        })
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        self.sign_p256(message).map_err(|e| Error::Signer {
            reason: e.to_string(),
        })
    }
}

/// Verifies an ES256 signature by the key in `spki_der` (either S form is accepted:
/// the signed transcript is session-bound, so malleability gains nothing).
pub(crate) fn verify_router_signature(
    spki_der: &[u8],
    message: &[u8],
    sig: &[u8; 64],
) -> Result<(), Error> {
    let key = VerifyingKey::from_public_key_der(spki_der).map_err(|_| Error::RouterKeyProof)?;
    let sig = Signature::from_slice(sig).map_err(|_| Error::RouterKeyProof)?;
    key.verify(message, &sig).map_err(|_| Error::RouterKeyProof)
}
