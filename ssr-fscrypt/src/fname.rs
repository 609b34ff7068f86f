//! Filename encryption: AES-256-CBC-CTS (CS3, the kernel's `cts(cbc(aes))`) over the
//! name NUL-padded to the policy's padding (at least 16 bytes, at most 255), and the
//! kernel's "no-key" names (what `readdir` shows while the key is absent).

use aes::Aes256;
use cipher::array::Array;
use cipher::consts::U16;
use cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::key::ModeKey;
use crate::policy::Padding;

/// Shortest ciphertext name (`FSCRYPT_FNAME_MIN_MSG_LEN`).
pub const MIN_CIPHERTEXT_NAME_LEN: usize = 16;
/// Longest name on ext4 and most Linux file systems (`NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

type Block = Array<u8, U16>;

/// Length of the ciphertext of a `len`-byte name: `min(round_up(max(len, 16), padding), max_len)`.
pub fn encrypted_name_len(len: usize, padding: Padding, max_len: usize) -> Result<usize> {
    if len == 0 || len > max_len {
        return Err(Error::InvalidName {
            len,
            reason: "must be 1 to NAME_MAX bytes",
        });
    }
    let p = padding.bytes();
    let padded = len.max(MIN_CIPHERTEXT_NAME_LEN).div_ceil(p) * p;
    Ok(padded.min(max_len))
}

/// An AES-256-CBC-CTS filename cipher for one 32-byte key.
pub struct FilenameCipher {
    aes: Aes256,
}

impl core::fmt::Debug for FilenameCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FilenameCipher([redacted])")
    }
}

impl FilenameCipher {
    /// From a derived key: the first 32 bytes are used (a 64-byte per-file key
    /// derived for XTS starts with the 32-byte CTS key, as HKDF output is a prefix
    /// code).
    pub fn new(key: &ModeKey) -> Result<FilenameCipher> {
        let bytes = key.secret_bytes();
        Self::from_key_bytes(bytes.get(..32).ok_or(Error::Length {
            what: "AES-256-CTS key",
            expected: 32,
            got: bytes.len(),
        })?)
    }

    /// From a raw 32-byte key.
    pub fn from_key_bytes(key: &[u8]) -> Result<FilenameCipher> {
        let aes = Aes256::new_from_slice(key).map_err(|_| Error::Length {
            what: "AES-256-CTS key",
            expected: 32,
            got: key.len(),
        })?;
        Ok(FilenameCipher { aes })
    }

    /// Encrypts a plaintext name (1..=`max_len` bytes, no NUL or `/`) with the IV
    /// (all zeros for the default policy), padding it as the kernel does.
    pub fn encrypt_name(
        &self,
        iv: &[u8; 16],
        name: &[u8],
        padding: Padding,
        max_len: usize,
    ) -> Result<Vec<u8>> {
        let len = encrypted_name_len(name.len(), padding, max_len.min(MAX_NAME_LEN))?;
        if name.contains(&0) || name.contains(&b'/') {
            return Err(Error::InvalidName {
                len: name.len(),
                reason: "contains NUL or '/'",
            });
        }
        let mut buf = vec![0u8; len];
        buf[..name.len()].copy_from_slice(name);
        self.cts_encrypt(iv, &mut buf)?;
        Ok(buf)
    }

    /// Decrypts a ciphertext name (16..=255 bytes); the plaintext ends at the first NUL
    /// (the kernel's `strnlen`).
    pub fn decrypt_name(&self, iv: &[u8; 16], ciphertext: &[u8]) -> Result<Vec<u8>> {
        if !(MIN_CIPHERTEXT_NAME_LEN..=MAX_NAME_LEN).contains(&ciphertext.len()) {
            return Err(Error::Decrypt);
        }
        let mut buf = ciphertext.to_vec();
        self.cts_decrypt(iv, &mut buf)?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        buf.truncate(end);
        Ok(buf)
    }

    /// CBC-CS3 encryption in place (length ≥ 16; the last two blocks always swapped
    /// when longer than one block).
    pub fn cts_encrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        if len < 16 {
            return Err(Error::Decrypt);
        }
        let n = len.div_ceil(16);
        let d = len - 16 * (n - 1);
        let mut prev = Block::from(*iv);
        // CBC over the first n-1 blocks (all of them when n == 1).
        let full = if n == 1 { 1 } else { n - 1 };
        for i in 0..full {
            let chunk = &mut buf[16 * i..16 * i + 16];
            let mut b = Block::default();
            for (o, (p, c)) in b.iter_mut().zip(chunk.iter().zip(prev.iter())) {
                *o = p ^ c;
            }
            self.aes.encrypt_block(&mut b);
            chunk.copy_from_slice(&b);
            prev = b;
        }
        if n == 1 {
            return Ok(());
        }
        // prev = C_{n-1}' (in place at block n-2). Last plaintext block zero-padded.
        let start = 16 * (n - 1);
        let mut last = Block::default();
        for (i, o) in last.iter_mut().enumerate() {
            let p = if i < d { buf[start + i] } else { 0 };
            *o = p ^ prev[i];
        }
        self.aes.encrypt_block(&mut last);
        // Output: ..., E(C_{n-1}' ^ P_n), head(C_{n-1}', d).
        let before = 16 * (n - 2);
        buf[before..before + 16].copy_from_slice(&last);
        buf[start..start + d].copy_from_slice(&prev[..d]);
        Ok(())
    }

    /// CBC-CS3 decryption in place (length ≥ 16).
    pub fn cts_decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        if len < 16 {
            return Err(Error::Decrypt);
        }
        let n = len.div_ceil(16);
        let d = len - 16 * (n - 1);
        if n == 1 {
            let mut b = Block::default();
            b.copy_from_slice(buf);
            self.aes.decrypt_block(&mut b);
            for (o, (x, v)) in buf.iter_mut().zip(b.iter().zip(iv.iter())) {
                *o = x ^ v;
            }
            return Ok(());
        }
        let before = 16 * (n - 2);
        let start = 16 * (n - 1);
        // X = E(C_{n-1}' ^ P_n); D = C_{n-1}' ^ P_n.
        let mut dx = Block::default();
        dx.copy_from_slice(&buf[before..before + 16]);
        self.aes.decrypt_block(&mut dx);
        // C_{n-1}' = head (d bytes stored last) || tail of D.
        let mut cprev = Block::default();
        cprev[..d].copy_from_slice(&buf[start..start + d]);
        cprev[d..].copy_from_slice(&dx[d..]);
        // P_n = D ^ C_{n-1}' (first d bytes).
        for i in 0..d {
            buf[start + i] = dx[i] ^ cprev[i];
        }
        buf[before..before + 16].copy_from_slice(&cprev);
        // Now the first n-1 blocks are plain CBC ciphertext: decrypt back to front.
        for i in (0..n - 1).rev() {
            let mut b = Block::default();
            b.copy_from_slice(&buf[16 * i..16 * i + 16]);
            self.aes.decrypt_block(&mut b);
            let mut chain = [0u8; 16];
            if i == 0 {
                chain = *iv;
            } else {
                chain.copy_from_slice(&buf[16 * (i - 1)..16 * i]);
            }
            for (j, o) in buf[16 * i..16 * i + 16].iter_mut().enumerate() {
                *o = b[j] ^ chain[j];
            }
        }
        Ok(())
    }
}

/// Bytes of ciphertext kept verbatim in a no-key name (`sizeof(nokey_name.bytes)`).
pub const NOKEY_NAME_BYTES: usize = 149;
/// Size of the longest no-key name structure (`FSCRYPT_NOKEY_NAME_MAX`).
pub const NOKEY_NAME_MAX: usize = 8 + NOKEY_NAME_BYTES + 32;

/// A decoded no-key name (`struct fscrypt_nokey_name`): what `readdir` of a locked
/// directory returns, base64url-encoded without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoKeyName {
    /// The directory hash and minor hash the file system supplied (zeros when none).
    pub dirhash: [u32; 2],
    /// The ciphertext (all of it, or its first 149 bytes).
    pub bytes: Vec<u8>,
    /// SHA-256 of the ciphertext beyond the first 149 bytes, for long names.
    pub sha256: Option<[u8; 32]>,
}

impl NoKeyName {
    /// The no-key name of a ciphertext name, as `fscrypt_fname_disk_to_usr` builds it.
    pub fn from_ciphertext(ciphertext: &[u8], hash: u32, minor_hash: u32) -> NoKeyName {
        if ciphertext.len() <= NOKEY_NAME_BYTES {
            NoKeyName {
                dirhash: [hash, minor_hash],
                bytes: ciphertext.to_vec(),
                sha256: None,
            }
        } else {
            let (head, rest) = ciphertext.split_at(NOKEY_NAME_BYTES);
            NoKeyName {
                dirhash: [hash, minor_hash],
                bytes: head.to_vec(),
                sha256: Some(Sha256::digest(rest).into()),
            }
        }
    }

    /// True when this no-key name designates `ciphertext` (ignoring the hashes).
    pub fn matches(&self, ciphertext: &[u8]) -> bool {
        let other = NoKeyName::from_ciphertext(ciphertext, self.dirhash[0], self.dirhash[1]);
        other == *self
    }

    /// The encoded name (base64url, no padding).
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(NOKEY_NAME_MAX);
        raw.extend_from_slice(&self.dirhash[0].to_le_bytes());
        raw.extend_from_slice(&self.dirhash[1].to_le_bytes());
        raw.extend_from_slice(&self.bytes);
        if let Some(h) = &self.sha256 {
            raw.resize(8 + NOKEY_NAME_BYTES, 0);
            raw.extend_from_slice(h);
        }
        base64url_encode(&raw)
    }

    /// Strict decoder (the kernel's size rules: 9..=157 bytes, or exactly 189).
    pub fn decode(name: &str) -> Result<NoKeyName> {
        let raw = base64url_decode(name.as_bytes()).ok_or(Error::Decrypt)?;
        let size = raw.len();
        if size < 9 || (size > 8 + NOKEY_NAME_BYTES && size != NOKEY_NAME_MAX) {
            return Err(Error::Decrypt);
        }
        let word = |i: usize| -> u32 {
            let mut w = [0u8; 4];
            w.copy_from_slice(&raw[i..i + 4]);
            u32::from_le_bytes(w)
        };
        let dirhash = [word(0), word(4)];
        if size == NOKEY_NAME_MAX {
            let mut h = [0u8; 32];
            h.copy_from_slice(&raw[8 + NOKEY_NAME_BYTES..]);
            Ok(NoKeyName {
                dirhash,
                bytes: raw[8..8 + NOKEY_NAME_BYTES].to_vec(),
                sha256: Some(h),
            })
        } else {
            Ok(NoKeyName {
                dirhash,
                bytes: raw[8..].to_vec(),
                sha256: None,
            })
        }
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 4648 base64url without padding (the kernel's `fscrypt_base64url_encode`).
pub fn base64url_encode(src: &[u8]) -> String {
    let mut out = String::with_capacity(src.len().div_ceil(3) * 4);
    let mut ac: u32 = 0;
    let mut bits = 0;
    for &b in src {
        ac = (ac << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(B64URL[((ac >> bits) & 0x3f) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(B64URL[((ac << (6 - bits)) & 0x3f) as usize]));
    }
    out
}

/// Strict base64url decoding without padding: rejects other characters, a length
/// of 1 mod 4 and non-zero leftover bits.
pub fn base64url_decode(src: &[u8]) -> Option<Vec<u8>> {
    if src.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(src.len() * 3 / 4);
    let mut ac: u32 = 0;
    let mut bits = 0;
    for &c in src {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        ac = (ac << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((ac >> bits) as u8);
        }
    }
    if ac & ((1u32 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_lengths() {
        let l = |n, p| encrypted_name_len(n, p, 255).unwrap();
        assert_eq!(l(1, Padding::Pad16), 16);
        assert_eq!(l(1, Padding::Pad32), 32);
        assert_eq!(l(16, Padding::Pad16), 16);
        assert_eq!(l(17, Padding::Pad16), 32);
        assert_eq!(l(17, Padding::Pad4), 20);
        assert_eq!(l(100, Padding::Pad32), 128);
        assert_eq!(l(255, Padding::Pad32), 255);
        assert_eq!(l(250, Padding::Pad4), 252);
        assert!(encrypted_name_len(0, Padding::Pad4, 255).is_err());
        assert!(encrypted_name_len(256, Padding::Pad4, 255).is_err());
    }

    /// Round trip at every name length; the exact bytes are checked against the
    /// kernel (tests/kernel_bytes.rs) and against RFC 3962 below.
    #[test]
    fn cts_round_trips_every_length() {
        let cipher = FilenameCipher::from_key_bytes(&[0x42; 32]).unwrap();
        for len in 16..=255 {
            let plain: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let mut buf = plain.clone();
            cipher.cts_encrypt(&[0; 16], &mut buf).unwrap();
            assert_ne!(buf, plain);
            cipher.cts_decrypt(&[0; 16], &mut buf).unwrap();
            assert_eq!(buf, plain, "length {len}");
        }
    }

    #[test]
    fn base64url() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 91 + 7) as u8).collect();
            let enc = base64url_encode(&data);
            assert!(!enc.contains('='));
            assert_eq!(base64url_decode(enc.as_bytes()).unwrap(), data);
        }
        assert_eq!(base64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(base64url_decode(b"-_9"), None, "non-zero leftover bits");
        assert_eq!(base64url_decode(b"A"), None);
        assert_eq!(base64url_decode(b"AA=="), None);
    }

    #[test]
    fn nokey_names() {
        let short = vec![7u8; 32];
        let n = NoKeyName::from_ciphertext(&short, 0, 0);
        let enc = n.encode();
        assert_eq!(NoKeyName::decode(&enc).unwrap(), n);
        assert!(n.matches(&short));
        let long: Vec<u8> = (0..255).map(|i| i as u8).collect();
        let n = NoKeyName::from_ciphertext(&long, 1, 2);
        let enc = n.encode();
        assert_eq!(enc.len(), 252);
        assert_eq!(NoKeyName::decode(&enc).unwrap(), n);
        assert!(n.matches(&long));
        assert!(!n.matches(&long[..254]));
        assert!(NoKeyName::decode("AAAA").is_err());
    }
}
