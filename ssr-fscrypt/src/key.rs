//! Master keys, key identifiers and the kernel's HKDF-SHA512 derivations.
//!
//! The kernel (`fs/crypto/hkdf.c`) runs HKDF-Extract over the raw master key with no
//! salt (RFC 5869: a hash-length string of zeros) once, then HKDF-Expand with
//! `info = "fscrypt\0" || context byte || extra` for every subkey.

use core::fmt;

use hkdf::Hkdf;
use sha2::Sha512;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::policy::EncryptionMode;

/// Shortest raw master key the kernel accepts for v2 policies (`FSCRYPT_MIN_KEY_SIZE`).
pub const MIN_MASTER_KEY_SIZE: usize = 16;
/// Longest raw master key the kernel accepts (`FSCRYPT_MAX_RAW_KEY_SIZE`).
pub const MAX_MASTER_KEY_SIZE: usize = 64;
/// Size of a master key identifier.
pub const KEY_IDENTIFIER_SIZE: usize = 16;
/// Size of a per-file nonce.
pub const NONCE_SIZE: usize = 16;

/// The HKDF context bytes of `fs/crypto/fscrypt_private.h` (`HKDF_CONTEXT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u8)]
pub enum HkdfContext {
    /// Master key identifier; info is empty.
    KeyIdentifier = 1,
    /// Per-file encryption key; info is the file's nonce.
    PerFileEncKey = 2,
    /// DIRECT_KEY per-mode key; info is the mode number.
    DirectKey = 3,
    /// IV_INO_LBLK_64 per-mode key; info is the mode number and the file system UUID.
    IvInoLblk64Key = 4,
    /// SipHash key for encrypted+casefolded directories; info is the nonce.
    DirhashKey = 5,
    /// IV_INO_LBLK_32 per-mode key; info is the mode number and the file system UUID.
    IvInoLblk32Key = 6,
    /// SipHash key for hashing inode numbers (IV_INO_LBLK_32); info is empty.
    InodeHashKey = 7,
}

/// A raw fscrypt master key (for example the 32-byte FEK unsealed by the TPM).
///
/// Zeroized on drop, not `Clone`, `Debug` prints `[redacted]`. Holds the HKDF
/// pseudo-random key computed once, like the kernel.
pub struct MasterKey {
    raw: Zeroizing<Vec<u8>>,
    prk: Zeroizing<[u8; 64]>,
}

impl MasterKey {
    /// Wraps raw key bytes. The kernel accepts 16 to 64 bytes for v2 raw keys.
    ///
    /// ```
    /// let key = ssr_fscrypt::MasterKey::from_bytes(&[7u8; 32])?;
    /// assert_eq!(key.secret_bytes().len(), 32);
    /// assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
    /// # Ok::<(), ssr_fscrypt::Error>(())
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey> {
        if !(MIN_MASTER_KEY_SIZE..=MAX_MASTER_KEY_SIZE).contains(&bytes.len()) {
            return Err(Error::MasterKeyLength {
                len: bytes.len(),
                min: MIN_MASTER_KEY_SIZE,
                max: MAX_MASTER_KEY_SIZE,
            });
        }
        let raw = Zeroizing::new(bytes.to_vec());
        let (mut prk_out, _) = Hkdf::<Sha512>::extract(None, bytes);
        let mut prk = Zeroizing::new([0u8; 64]);
        prk.copy_from_slice(&prk_out);
        prk_out.zeroize();
        Ok(MasterKey { raw, prk })
    }

    /// The raw key bytes (to hand to the kernel).
    pub fn secret_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The key's identifier, exactly as the kernel computes it
    /// (`HKDF-Expand(PRK, "fscrypt\0" || 1, 16)`).
    pub fn identifier(&self) -> KeyIdentifier {
        let mut id = [0u8; KEY_IDENTIFIER_SIZE];
        self.expand(HkdfContext::KeyIdentifier, &[], &mut id);
        KeyIdentifier(id)
    }

    /// HKDF-Expand with the kernel's info layout: `"fscrypt\0" || context || info`.
    /// `out` is at most 64 bytes in every kernel use; longer outputs (up to
    /// 255 × 64 bytes) follow HKDF, beyond that the output is left zeroed.
    pub fn expand(&self, context: HkdfContext, info: &[u8], out: &mut [u8]) {
        // from_prk only fails for a PRK shorter than the hash output; ours is 64 bytes.
        let Ok(hkdf) = Hkdf::<Sha512>::from_prk(&self.prk[..]) else {
            out.zeroize();
            return;
        };
        let prefix: [u8; 9] = *b"fscrypt\0\0";
        let mut prefix = prefix;
        prefix[8] = context as u8;
        if hkdf.expand_multi_info(&[&prefix, info], out).is_err() {
            out.zeroize();
        }
    }

    /// The per-file key of a file with this nonce for `mode` (v2, no IV flags).
    pub fn derive_file_key(&self, nonce: &[u8; NONCE_SIZE], mode: EncryptionMode) -> ModeKey {
        let mut key = ModeKey::zeroed(mode);
        self.expand(HkdfContext::PerFileEncKey, nonce, key.bytes_mut());
        key
    }

    /// The per-mode key of a DIRECT_KEY policy.
    pub fn derive_direct_key(&self, mode: EncryptionMode) -> ModeKey {
        let mut key = ModeKey::zeroed(mode);
        self.expand(HkdfContext::DirectKey, &[mode.number()], key.bytes_mut());
        key
    }

    /// The per-mode key of an IV_INO_LBLK_64 policy on the file system with `fs_uuid`.
    pub fn derive_iv_ino_lblk_64_key(&self, mode: EncryptionMode, fs_uuid: &[u8; 16]) -> ModeKey {
        self.derive_uuid_mode_key(HkdfContext::IvInoLblk64Key, mode, fs_uuid)
    }

    /// The per-mode key of an IV_INO_LBLK_32 policy on the file system with `fs_uuid`.
    pub fn derive_iv_ino_lblk_32_key(&self, mode: EncryptionMode, fs_uuid: &[u8; 16]) -> ModeKey {
        self.derive_uuid_mode_key(HkdfContext::IvInoLblk32Key, mode, fs_uuid)
    }

    fn derive_uuid_mode_key(
        &self,
        context: HkdfContext,
        mode: EncryptionMode,
        fs_uuid: &[u8; 16],
    ) -> ModeKey {
        let mut info = [0u8; 17];
        info[0] = mode.number();
        info[1..].copy_from_slice(fs_uuid);
        let mut key = ModeKey::zeroed(mode);
        self.expand(context, &info, key.bytes_mut());
        key
    }

    /// The SipHash-2-4 key the kernel uses to hash inode numbers (IV_INO_LBLK_32).
    pub fn derive_inode_hash_key(&self) -> SipKey {
        let mut key = SipKey([0u8; 16]);
        self.expand(HkdfContext::InodeHashKey, &[], &mut key.0);
        key
    }

    /// The SipHash-2-4 key of an encrypted+casefolded directory with this nonce.
    pub fn derive_dirhash_key(&self, nonce: &[u8; NONCE_SIZE]) -> SipKey {
        let mut key = SipKey([0u8; 16]);
        self.expand(HkdfContext::DirhashKey, nonce, &mut key.0);
        key
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl PartialEq for MasterKey {
    /// Constant-time comparison of the raw bytes.
    fn eq(&self, other: &Self) -> bool {
        self.raw.len() == other.raw.len() && bool::from(self.raw[..].ct_eq(&other.raw[..]))
    }
}

impl Eq for MasterKey {}

/// A derived encryption key for one mode: 64 bytes for AES-256-XTS, 32 for AES-256-CTS.
/// Zeroized on drop, redacted `Debug`.
pub struct ModeKey {
    bytes: Zeroizing<[u8; 64]>,
    len: usize,
}

impl ModeKey {
    fn zeroed(mode: EncryptionMode) -> ModeKey {
        ModeKey {
            bytes: Zeroizing::new([0u8; 64]),
            len: mode.key_size(),
        }
    }

    /// Wraps raw key bytes (at most 64).
    pub fn from_bytes(bytes: &[u8]) -> Result<ModeKey> {
        if bytes.len() > 64 || bytes.is_empty() {
            return Err(Error::Length {
                what: "mode key",
                expected: 64,
                got: bytes.len(),
            });
        }
        let mut key = ModeKey {
            bytes: Zeroizing::new([0u8; 64]),
            len: bytes.len(),
        };
        key.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(key)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }

    /// The key bytes.
    pub fn secret_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Debug for ModeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModeKey({} bytes, [redacted])", self.len)
    }
}

/// A 128-bit SipHash key (inode hashing, dirhash). Zeroized on drop, redacted `Debug`.
pub struct SipKey([u8; 16]);

impl SipKey {
    /// The key bytes (in the kernel's in-memory order: two little-endian `u64`s).
    pub fn secret_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// SipHash-2-4 of one little-endian `u64`, as the kernel's `siphash_1u64`.
    pub fn hash_u64(&self, value: u64) -> u64 {
        crate::siphash::siphash24(&self.0, &value.to_le_bytes())
    }
}

impl Drop for SipKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SipKey([redacted])")
    }
}

/// A master key identifier: 16 bytes, shown as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyIdentifier(pub [u8; KEY_IDENTIFIER_SIZE]);

impl KeyIdentifier {
    /// The identifier bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_IDENTIFIER_SIZE] {
        &self.0
    }

    /// Parses 32 hex characters (either case).
    pub fn from_hex(hex: &str) -> Result<KeyIdentifier> {
        let mut out = [0u8; KEY_IDENTIFIER_SIZE];
        decode_hex_into(hex, &mut out).ok_or(Error::Length {
            what: "key identifier (hex)",
            expected: 2 * KEY_IDENTIFIER_SIZE,
            got: hex.len(),
        })?;
        Ok(KeyIdentifier(out))
    }
}

impl From<[u8; KEY_IDENTIFIER_SIZE]> for KeyIdentifier {
    fn from(bytes: [u8; KEY_IDENTIFIER_SIZE]) -> Self {
        KeyIdentifier(bytes)
    }
}

impl fmt::Display for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyIdentifier({self})")
    }
}

impl core::str::FromStr for KeyIdentifier {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyIdentifier::from_hex(s)
    }
}

/// Decodes exactly `out.len()` bytes of hex; `None` on any other input.
pub(crate) fn decode_hex_into(hex: &str, out: &mut [u8]) -> Option<()> {
    let bytes = hex.as_bytes();
    if bytes.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = hex_val(*pair.first()?)?;
        let lo = hex_val(*pair.get(1)?)?;
        *o = (hi << 4) | lo;
    }
    Some(())
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
