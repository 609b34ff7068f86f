//! Secret key newtypes: zeroized on drop, not `Clone`, `Debug` prints `[redacted]`,
//! bytes only through [`SecretBytes::secret_bytes`].

use core::fmt;

use rand_core::TryCryptoRng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// A fixed-size secret byte string.
pub struct SecretBytes<const N: usize>([u8; N]);

impl<const N: usize> SecretBytes<N> {
    /// Wraps bytes (the caller's copy should be zeroized by the caller).
    pub fn from_bytes(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Copies from a slice of exactly `N` bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let arr: [u8; N] = bytes.try_into().map_err(|_| Error::BadLength {
            what: "secret",
            len: bytes.len(),
        })?;
        Ok(Self(arr))
    }

    /// Fresh random bytes.
    pub fn random<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self, Error> {
        let mut b = [0u8; N];
        rng.try_fill_bytes(&mut b).map_err(|_| Error::Rng)?;
        Ok(Self(b))
    }

    /// The secret bytes. Named so every use is visible in review.
    pub fn secret_bytes(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> Drop for SecretBytes<N> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}
impl<const N: usize> ZeroizeOnDrop for SecretBytes<N> {}

impl<const N: usize> fmt::Debug for SecretBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<const N: usize> PartialEq for SecretBytes<N> {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl<const N: usize> Eq for SecretBytes<N> {}

/// Key material of one packet-protection key: 32 bytes AES-256 key and 48 bytes
/// HMAC-SHA-384 key (the GCM suite uses the AES key and 4 bytes of the HMAC key as nonce salt).
pub type PacketKeyMaterial = SecretBytes<80>;
