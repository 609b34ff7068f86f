//! The Filesystem Encryption Key and the sealed-FEK file format.

use std::fmt;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroize as _;

use crate::{Error, PcrSelection, fsutil};

/// Length of the FEK in bytes (256 bits).
pub const FEK_LEN: usize = 32;

/// The Filesystem Encryption Key: 32 bytes from TPM2_GetRandom.
///
/// Zeroized on drop, not `Clone`, `Debug` prints `[redacted]`; the bytes are reachable
/// only through [`Fek::secret_bytes`]. Kept behind a `Box` so moving a `Fek` around does
/// not leave copies of the key on the stack.
pub struct Fek(Box<[u8; FEK_LEN]>);

impl Fek {
    /// The key bytes, for handing to the kernel (fscrypt add-key).
    pub fn secret_bytes(&self) -> &[u8; FEK_LEN] {
        &self.0
    }

    /// Builds a FEK from exactly 32 bytes; the caller zeroizes its own copy (TSS
    /// buffers do this on drop).
    pub fn from_slice(bytes: &[u8]) -> Result<Fek, Error> {
        let mut key = Box::new([0u8; FEK_LEN]);
        if bytes.len() != FEK_LEN {
            return Err(Error::UnexpectedAnswer {
                op: "FEK",
                reason: "not 32 bytes",
            });
        }
        key.copy_from_slice(bytes);
        Ok(Fek(key))
    }
}

impl Drop for Fek {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Fek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fek([redacted])")
    }
}

/// Magic at the start of a sealed-FEK file.
pub const SEALED_FEK_MAGIC: [u8; 4] = *b"SFEK";
/// The format version this crate writes: authenticated by a TPM-resident HMAC key.
/// Version 1 (no TPM authentication) is still read; see [`SealedFek::is_authenticated`].
pub const SEALED_FEK_VERSION: u8 = 2;
/// Size of an RSA-2048 ciphertext.
pub const RSA2048_CIPHERTEXT_LEN: usize = 256;
/// Size of a version-1 sealed-FEK file (no TPM authentication).
pub const SEALED_FEK_V1_LEN: usize = 8 + 4 + 32 + 4 + 2 + RSA2048_CIPHERTEXT_LEN + 32;
/// Size of a version-2 sealed-FEK file.
pub const SEALED_FEK_LEN: usize = SEALED_FEK_V1_LEN + 4 + 32 + 32;
/// Offset of the TPM HMAC tag in a version-2 file: it covers every byte before it.
const TAG_AT: usize = SEALED_FEK_V1_LEN - 32 + 4 + 32;

/// How the FEK is encrypted.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealAlgorithm {
    /// RSA-2048 OAEP with SHA-256 and an empty label, by a TPM-resident key.
    Rsa2048OaepSha256,
}

impl SealAlgorithm {
    fn code(self) -> u8 {
        match self {
            SealAlgorithm::Rsa2048OaepSha256 => 1,
        }
    }

    fn from_code(code: u8) -> Option<SealAlgorithm> {
        match code {
            1 => Some(SealAlgorithm::Rsa2048OaepSha256),
            _ => None,
        }
    }
}

/// The TPM authentication of a version-2 sealed-FEK file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMac {
    /// Persistent handle of the HMAC-SHA-256 key.
    pub key_handle: u32,
    /// Its Name digest (SHA-256 of its TPMT_PUBLIC).
    pub key_fingerprint: [u8; 32],
    /// TPM2_HMAC by that key over every byte of the file before the tag.
    pub tag: [u8; 32],
}

/// The sealed-FEK file: what is written to disk instead of the FEK.
///
/// Version 2, big-endian, fixed size ([`SEALED_FEK_LEN`] = 406 bytes):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `SFEK` |
/// | 4 | 1 | version = 2 (1: the same without bytes 306..374, 338 bytes) |
/// | 5 | 1 | algorithm: 1 = RSA-2048 OAEP SHA-256 (TPM-resident key) |
/// | 6 | 2 | reserved, zero |
/// | 8 | 4 | persistent handle of the sealing key |
/// | 12 | 32 | fingerprint of the sealing key: SHA-256 of its TPMT_PUBLIC (its TPM Name digest, [`crate::KeyInfo::name_digest`]) |
/// | 44 | 4 | PCR selection (SHA-256 bank, bit *n* = PCR *n*, 0 = not PCR-bound) |
/// | 48 | 2 | ciphertext length = 256 |
/// | 50 | 256 | RSA-OAEP ciphertext of the FEK |
/// | 306 | 4 | persistent handle of the HMAC key (v2) |
/// | 310 | 32 | fingerprint of the HMAC key (v2) |
/// | 342 | 32 | TPM2_HMAC-SHA-256 by that key over bytes 0..342 (v2) |
/// | 374 | 32 | SHA-256 of all bytes before it (v1: at 306, over 0..306) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFek {
    algorithm: SealAlgorithm,
    key_handle: u32,
    key_fingerprint: [u8; 32],
    pcrs: PcrSelection,
    ciphertext: Vec<u8>,
    mac: Option<FileMac>,
}

const CORRUPT: fn(&'static str) -> Error = |reason| Error::Corrupt {
    what: "sealed FEK",
    reason,
};

impl SealedFek {
    /// A version-2 sealed FEK from its parts (used by [`crate::seal_new_fek`]); the
    /// tag is set afterwards with [`SealedFek::set_tag`] from the TPM's HMAC over
    /// [`SealedFek::authenticated_bytes`].
    pub fn new(
        key_handle: u32,
        key_fingerprint: [u8; 32],
        pcrs: PcrSelection,
        ciphertext: Vec<u8>,
        mac: FileMac,
    ) -> Result<SealedFek, Error> {
        let mut sealed = SealedFek::new_v1(key_handle, key_fingerprint, pcrs, ciphertext)?;
        sealed.mac = Some(mac);
        Ok(sealed)
    }

    /// A version-1 sealed FEK (no TPM authentication), as earlier releases wrote.
    pub fn new_v1(
        key_handle: u32,
        key_fingerprint: [u8; 32],
        pcrs: PcrSelection,
        ciphertext: Vec<u8>,
    ) -> Result<SealedFek, Error> {
        if ciphertext.len() != RSA2048_CIPHERTEXT_LEN {
            return Err(Error::UnexpectedAnswer {
                op: "RSA_Encrypt",
                reason: "ciphertext is not 256 bytes",
            });
        }
        Ok(SealedFek {
            algorithm: SealAlgorithm::Rsa2048OaepSha256,
            key_handle,
            key_fingerprint,
            pcrs,
            ciphertext,
            mac: None,
        })
    }

    /// Strict parser: exact length for the version, known magic/version/algorithm,
    /// zero reserved bits, handles in the owner range, a PCR mask within PCR 0-23, a
    /// valid checksum. (The TPM tag of version 2 is checked by [`crate::unseal_fek`].)
    ///
    /// ```
    /// use ssr_tpm::{Error, SealedFek};
    /// let err = SealedFek::parse(b"SFEK\x02 too short").unwrap_err();
    /// assert!(matches!(err, Error::Corrupt { what: "sealed FEK", .. }));
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<SealedFek, Error> {
        if bytes.len() < 8 {
            return Err(CORRUPT("truncated header"));
        }
        if bytes[0..4] != SEALED_FEK_MAGIC {
            return Err(CORRUPT("bad magic"));
        }
        let len = match bytes[4] {
            1 => SEALED_FEK_V1_LEN,
            2 => SEALED_FEK_LEN,
            _ => return Err(CORRUPT("unknown version")),
        };
        if bytes.len() != len {
            return Err(CORRUPT("wrong length"));
        }
        let (body, sum) = bytes.split_at(len - 32);
        let expected = Sha256::digest(body);
        if !bool::from(expected.as_slice().ct_eq(sum)) {
            return Err(CORRUPT("checksum mismatch"));
        }
        let algorithm = SealAlgorithm::from_code(bytes[5]).ok_or(CORRUPT("unknown algorithm"))?;
        if bytes[6..8] != [0, 0] {
            return Err(CORRUPT("reserved bytes not zero"));
        }
        let be32 = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let key_handle = be32(8);
        if !crate::is_owner_persistent(key_handle) {
            return Err(CORRUPT("key handle outside 0x81000000-0x8100ffff"));
        }
        let mut key_fingerprint = [0u8; 32];
        key_fingerprint.copy_from_slice(&bytes[12..44]);
        let pcrs = PcrSelection::from_mask(be32(44)).map_err(|_| CORRUPT("PCR outside 0-23"))?;
        let ct_len = usize::from(u16::from_be_bytes([bytes[48], bytes[49]]));
        if ct_len != RSA2048_CIPHERTEXT_LEN {
            return Err(CORRUPT("ciphertext length is not 256"));
        }
        let mac = if bytes[4] == 2 {
            let at = 50 + RSA2048_CIPHERTEXT_LEN;
            let handle = be32(at);
            if !crate::is_owner_persistent(handle) || handle == key_handle {
                return Err(CORRUPT(
                    "HMAC key handle outside 0x81000000-0x8100ffff or the sealing key's",
                ));
            }
            let mut fingerprint = [0u8; 32];
            fingerprint.copy_from_slice(&bytes[at + 4..at + 36]);
            let mut tag = [0u8; 32];
            tag.copy_from_slice(&bytes[TAG_AT..TAG_AT + 32]);
            Some(FileMac {
                key_handle: handle,
                key_fingerprint: fingerprint,
                tag,
            })
        } else {
            None
        };
        Ok(SealedFek {
            algorithm,
            key_handle,
            key_fingerprint,
            pcrs,
            ciphertext: bytes[50..50 + RSA2048_CIPHERTEXT_LEN].to_vec(),
            mac,
        })
    }

    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.authenticated_bytes();
        if let Some(mac) = &self.mac {
            out.extend_from_slice(&mac.tag);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// The bytes the TPM's HMAC covers: the whole file before the tag (for version 1,
    /// the file before its checksum).
    pub fn authenticated_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEALED_FEK_LEN);
        out.extend_from_slice(&SEALED_FEK_MAGIC);
        out.push(if self.mac.is_some() { 2 } else { 1 });
        out.push(self.algorithm.code());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.key_handle.to_be_bytes());
        out.extend_from_slice(&self.key_fingerprint);
        out.extend_from_slice(&self.pcrs.mask().to_be_bytes());
        // Length checked in `new` / `parse`: always 256.
        out.extend_from_slice(&(self.ciphertext.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.ciphertext);
        if let Some(mac) = &self.mac {
            out.extend_from_slice(&mac.key_handle.to_be_bytes());
            out.extend_from_slice(&mac.key_fingerprint);
        }
        out
    }

    /// Sets the TPM's HMAC tag of a version-2 file (no effect on version 1).
    pub fn set_tag(&mut self, tag: [u8; 32]) {
        if let Some(mac) = &mut self.mac {
            mac.tag = tag;
        }
    }

    /// Reads and parses a sealed-FEK file; a missing file is
    /// [`Error::SealedFekMissing`].
    pub fn read(path: &Path) -> Result<SealedFek, Error> {
        match fsutil::read_limited(path, SEALED_FEK_LEN as u64) {
            Ok(bytes) => SealedFek::parse(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::SealedFekMissing {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(Error::io("read", path, &e)),
        }
    }

    /// Writes the file atomically (temporary file, fsync, rename, fsync directory),
    /// mode 0600.
    pub fn write_atomic(&self, path: &Path) -> Result<(), Error> {
        fsutil::write_atomic(path, &self.to_bytes())
    }

    /// The sealing algorithm.
    pub fn algorithm(&self) -> SealAlgorithm {
        self.algorithm
    }

    /// The format version: 2, or 1 for a file from an earlier release.
    pub fn version(&self) -> u8 {
        if self.mac.is_some() { 2 } else { 1 }
    }

    /// True for version 2: the TPM's HMAC key vouches for every field. A version-1
    /// file can be written by anyone holding the (public) RSA key.
    pub fn is_authenticated(&self) -> bool {
        self.mac.is_some()
    }

    /// The TPM authentication (version 2).
    pub fn mac(&self) -> Option<&FileMac> {
        self.mac.as_ref()
    }

    /// The persistent handle of the sealing key.
    pub fn key_handle(&self) -> u32 {
        self.key_handle
    }

    /// The fingerprint of the sealing key's public key.
    pub fn key_fingerprint(&self) -> &[u8; 32] {
        &self.key_fingerprint
    }

    /// The PCRs the sealing key is bound to (empty when not PCR-bound).
    pub fn pcrs(&self) -> PcrSelection {
        self.pcrs
    }

    /// The RSA-OAEP ciphertext.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
}
