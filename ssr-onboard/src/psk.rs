//! The router-level onboarding pre-shared key.

use core::fmt;

use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// Length of a PSK in characters.
pub const PSK_LEN: usize = 48;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A 48-character alphanumeric pre-shared key (router level).
///
/// Zeroized on drop, not `Clone`, `Debug` prints `[redacted]`; the characters are
/// reachable only through [`Psk::secret_bytes`]. A PSK never changes by itself: it is
/// either supplied by the operator (and validated by [`Psk::parse`]) or, when empty,
/// generated once by [`Psk::generate`] and then stored by the caller.
pub struct Psk {
    bytes: [u8; PSK_LEN],
}

impl Psk {
    /// Validates an operator-supplied key: exactly 48 ASCII letters or digits.
    pub fn parse(s: &str) -> Result<Psk, Error> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(Error::InvalidPsk {
                reason: "empty (leave it out to have one generated)",
            });
        }
        if !b.iter().all(u8::is_ascii_alphanumeric) {
            return Err(Error::InvalidPsk {
                reason: "only ASCII letters and digits are allowed",
            });
        }
        let mut bytes = [0u8; PSK_LEN];
        if b.len() != PSK_LEN {
            return Err(Error::InvalidPsk {
                reason: "must be exactly 48 characters",
            });
        }
        bytes.copy_from_slice(b);
        Ok(Psk { bytes })
    }

    /// Generates a PSK uniformly over the 62-character alphabet: each character comes
    /// from one random byte, bytes >= 248 (= 4 * 62) are rejected and redrawn, so there
    /// is no modulo bias.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Psk {
        let mut bytes = [0u8; PSK_LEN];
        let mut pool = Zeroizing::new([0u8; 64]);
        let mut filled = 0;
        while filled < PSK_LEN {
            rng.fill_bytes(pool.as_mut());
            for &r in pool.iter() {
                if filled == PSK_LEN {
                    break;
                }
                if r < 248 {
                    bytes[filled] = ALPHABET[usize::from(r % 62)];
                    filled += 1;
                }
            }
        }
        Psk { bytes }
    }

    /// The key's characters (ASCII). Handle with care.
    pub fn secret_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key as a string (for writing it into a configuration). Handle with care.
    pub fn secret_str(&self) -> &str {
        // Always ASCII alphanumerics by construction.
        core::str::from_utf8(&self.bytes).unwrap_or("")
    }
}

impl Drop for Psk {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ssr_testkit::TestRng;

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let mut rng = TestRng(0);
        let a = Psk::generate(&mut rng);
        let b = Psk::generate(&mut rng);
        assert_eq!(a.secret_bytes().len(), 48);
        assert!(Psk::parse(a.secret_str()).is_ok());
        assert_ne!(a.secret_bytes(), b.secret_bytes());
    }

    #[test]
    fn generation_is_roughly_uniform() {
        // 48 * 400 characters; each of 62 symbols expected ~310 times.
        let mut rng = TestRng(7);
        let mut counts = [0u32; 62];
        for _ in 0..400 {
            let k = Psk::generate(&mut rng);
            for c in k.secret_bytes() {
                let i = ALPHABET.iter().position(|a| a == c).expect("in alphabet");
                counts[i] += 1;
            }
        }
        let (min, max) = (
            *counts.iter().min().expect("non-empty"),
            *counts.iter().max().expect("non-empty"),
        );
        assert!(min > 220 && max < 400, "min {min} max {max}");
    }

    #[test]
    fn validation_errors_are_clear() {
        assert_eq!(
            Psk::parse("abc").unwrap_err(),
            Error::InvalidPsk {
                reason: "must be exactly 48 characters"
            }
        );
        let with_dash = format!("{}-", "a".repeat(47));
        assert!(matches!(
            Psk::parse(&with_dash),
            Err(Error::InvalidPsk { reason }) if reason.contains("letters and digits")
        ));
        assert!(Psk::parse(&"é".repeat(24)).is_err());
        assert!(Psk::parse("").is_err());
        assert!(Psk::parse(&"Z9".repeat(24)).is_ok());
        assert!(Psk::parse(&"Z9".repeat(25)).is_err());
        assert_eq!(
            format!("{:?}", Psk::parse(&"Z9".repeat(24))),
            "Ok(Psk([redacted]))"
        );
    }
}
