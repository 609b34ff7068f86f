//! The router's P-256 private key: generated from the caller's CSPRNG, stored as
//! PKCS#8 PEM (RFC 7468 label `PRIVATE KEY`), zeroized when dropped.

use core::fmt;

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
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

    /// The signing key, for the CSR builder inside this crate.
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
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
