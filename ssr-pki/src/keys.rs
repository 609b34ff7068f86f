//! The router's P-256 key. [`RouterKey`] is what every user of the router key signs
//! through (the CSR here, the onboarding proof of possession in ssr-onboard, SVR peer
//! authentication): [`PrivateKey`] is the software key for routers without a TPM,
//! generated from the caller's CSPRNG, stored as PKCS#8 PEM (RFC 7468 label
//! `PRIVATE KEY`), zeroized when dropped; with feature `tpm`, ssr-tpm's `TpmKey` (the
//! key store entry `router`, private part only ever inside the TPM) is one too.

use core::fmt;

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use zeroize::Zeroizing;

use crate::Error;

/// An ECDSA P-256 private key.
///
/// Not `Clone`; `Debug` prints `[redacted]`; the scalar is zeroized on drop (the
/// inner `SigningKey` zeroizes itself). Its bytes leave only through
/// [`PrivateKey::secret_pkcs8_pem`], whose result zeroizes too.
pub struct PrivateKey {
    key: SigningKey,
}

impl PrivateKey {
    /// A fresh key drawn from `rng` (the caller's CSPRNG: the core reads no OS
    /// randomness).
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            key: SigningKey::generate_from_rng(rng),
        }
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), P-256 only.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| Error::InvalidKey {
            reason: format!("not a PKCS#8 P-256 private key: {e}"),
        })?;
        Ok(Self { key })
    }

    /// The key as PKCS#8 PEM with LF line endings. Write it with mode 0600.
    pub fn secret_pkcs8_pem(&self) -> Result<Zeroizing<String>, Error> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::InvalidKey {
                reason: format!("cannot encode private key: {e}"),
            })
    }

    /// The public key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> Result<String, Error> {
        self.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::InvalidKey {
                reason: format!("cannot encode public key: {e}"),
            })
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        self.key.verifying_key()
    }
}

/// The router's ECDSA P-256 key, wherever it is held: every signature is ES256
/// (SHA-256 of the message, `r || s`, 64 bytes).
pub trait RouterKey {
    /// The public key, DER SubjectPublicKeyInfo.
    fn public_key_der(&self) -> Result<Vec<u8>, Error>;
    /// Signs SHA-256(`message`): `r || s`.
    fn sign_p256(&self, message: &[u8]) -> Result<[u8; 64], Error>;
    /// Where the key is held, for audit events and operator output
    /// (`"software"`, `"tpm"`).
    fn holder(&self) -> &'static str;
}

/// The P-256 public key of a DER SubjectPublicKeyInfo.
pub fn verifying_key_from_der(spki_der: &[u8]) -> Result<VerifyingKey, Error> {
    VerifyingKey::from_public_key_der(spki_der).map_err(|e| Error::InvalidKey {
        reason: format!("not a P-256 public key: {e}"),
    })
}

/// Signs `message` with `key` and checks the signature against the key's own public
/// key before handing it out, so a faulty signer (a TPM answering garbage) yields an
/// error, never a CSR or proof that does not verify.
pub fn sign_checked(
    key: &(impl RouterKey + ?Sized),
    message: &[u8],
) -> Result<(VerifyingKey, p256::ecdsa::Signature), Error> {
    let vk = verifying_key_from_der(&key.public_key_der()?)?;
    let raw = key.sign_p256(message)?;
    let bad = || Error::InvalidKey {
        reason: format!(
            "the {} key's signature does not verify under its public key",
            key.holder()
        ),
    };
    let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|_| bad())?;
    vk.verify(message, &sig).map_err(|_| bad())?;
    Ok((vk, sig))
}

impl RouterKey for PrivateKey {
    fn public_key_der(&self) -> Result<Vec<u8>, Error> {
        self.verifying_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| Error::InvalidKey {
                reason: format!("cannot encode public key: {e}"),
            })
    }

    fn sign_p256(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        let sig: p256::ecdsa::Signature = self.key.sign(message);
        Ok(sig.to_bytes().into())
    }

    fn holder(&self) -> &'static str {
        "software"
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ssr_testkit::TestRng;

    #[test]
    fn pem_round_trip_and_redacted_debug() {
        let key = PrivateKey::generate(&mut TestRng(1));
        let pem = key.secret_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = PrivateKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.verifying_key(), key.verifying_key());
        assert_eq!(format!("{key:?}"), "PrivateKey([redacted])");
        assert!(
            key.public_key_pem()
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
        let other = PrivateKey::generate(&mut TestRng(2));
        assert_ne!(other.verifying_key(), key.verifying_key());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            PrivateKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(Error::InvalidKey { .. })
        ));
        assert!(PrivateKey::from_pkcs8_pem("").is_err());
    }
}
