//! Contents encryption: AES-256-XTS over whole data units, as the kernel does it.
//!
//! The tweak of data unit `i` is its 16-byte IV (for the default policy the
//! little-endian data unit index followed by zeros). Data units are multiples of
//! 16 bytes (512 to 65536), so ciphertext stealing never happens for contents.
//!
//! Speed: the whole buffer goes through one call into the data cipher's backend
//! (AES-NI or VAES, chosen at run time by the `aes` crate). Inside it, per batch of
//! 64 blocks (1 KiB, so everything stays in L1): the tweaks are generated in
//! vectorisable 64-bit halves, XORed in, the batch goes through the backend's
//! multi-block path, and the tweaks are XORed in again. No per-block cipher calls,
//! no scratch buffers beyond one batch of tweaks on the stack.

use aes::Aes256;
use cipher::array::Array;
use cipher::consts::U16;
use cipher::typenum::Unsigned;
use cipher::{
    BlockCipherDecBackend, BlockCipherDecClosure, BlockCipherDecrypt, BlockCipherEncBackend,
    BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser, KeyInit, ParBlocks,
};

use crate::error::{Error, Result};
use crate::key::ModeKey;

/// AES block size.
const BLOCK: usize = 16;
/// Blocks whose tweaks are generated together (the widest backend batch, VAES-512).
const BATCH: usize = 64;
/// Independent tweak chains.
const LANES: usize = 8;

type Block = Array<u8, U16>;

/// An AES-256-XTS contents cipher for one (per-file or per-mode) 64-byte key.
pub struct ContentsCipher {
    data: Aes256,
    tweak: Aes256,
}

impl core::fmt::Debug for ContentsCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ContentsCipher([redacted])")
    }
}

impl ContentsCipher {
    /// From a 64-byte AES-256-XTS key (first half encrypts data, second half tweaks).
    pub fn new(key: &ModeKey) -> Result<ContentsCipher> {
        Self::from_key_bytes(key.secret_bytes())
    }

    /// From raw 64-byte key material.
    pub fn from_key_bytes(key: &[u8]) -> Result<ContentsCipher> {
        if key.len() != 64 {
            return Err(Error::Length {
                what: "AES-256-XTS key",
                expected: 64,
                got: key.len(),
            });
        }
        let (k1, k2) = key.split_at(32);
        let data = Aes256::new_from_slice(k1).map_err(|_| Error::Length {
            what: "AES-256 key",
            expected: 32,
            got: k1.len(),
        })?;
        let tweak = Aes256::new_from_slice(k2).map_err(|_| Error::Length {
            what: "AES-256 key",
            expected: 32,
            got: k2.len(),
        })?;
        Ok(ContentsCipher { data, tweak })
    }

    /// Encrypts one data unit in place with the given 16-byte IV.
    /// The unit must be a non-empty multiple of 16 bytes.
    pub fn encrypt_data_unit(&self, iv: &[u8; 16], unit: &mut [u8]) -> Result<()> {
        self.xts(iv, unit, true)
    }

    /// Decrypts one data unit in place with the given 16-byte IV.
    pub fn decrypt_data_unit(&self, iv: &[u8; 16], unit: &mut [u8]) -> Result<()> {
        self.xts(iv, unit, false)
    }

    /// Encrypts (or decrypts) consecutive data units of `unit_len` bytes in place,
    /// unit `i` with IV `iv(i)`, all in one call into the cipher backend.
    pub fn crypt_data_units(
        &self,
        buf: &mut [u8],
        unit_len: usize,
        encrypt: bool,
        mut iv: impl FnMut(usize) -> Result<[u8; 16]>,
    ) -> Result<()> {
        if unit_len == 0 || !buf.len().is_multiple_of(unit_len) || !unit_len.is_multiple_of(BLOCK) {
            return Err(Error::DataUnitLength {
                len: buf.len(),
                data_unit_size: unit_len,
            });
        }
        let mut outcome = Ok(());
        let units = XtsUnits {
            tweak: &self.tweak,
            buf,
            unit_len,
            iv: &mut iv,
            outcome: &mut outcome,
        };
        if encrypt {
            self.data.encrypt_with_backend(units);
        } else {
            self.data.decrypt_with_backend(units);
        }
        outcome
    }

    fn xts(&self, iv: &[u8; 16], unit: &mut [u8], encrypt: bool) -> Result<()> {
        if unit.is_empty() || !unit.len().is_multiple_of(BLOCK) {
            return Err(Error::DataUnitLength {
                len: unit.len(),
                data_unit_size: BLOCK,
            });
        }
        let len = unit.len();
        self.crypt_data_units(unit, len, encrypt, |_| Ok(*iv))
    }
}

/// Data units on their way through one backend call (see the module docs).
struct XtsUnits<'a, F> {
    tweak: &'a Aes256,
    buf: &'a mut [u8],
    unit_len: usize,
    iv: &'a mut F,
    /// The first error of `iv`, if any (units from there on are left untouched).
    outcome: &'a mut Result<()>,
}

impl<F: FnMut(usize) -> Result<[u8; 16]>> XtsUnits<'_, F> {
    /// Runs every unit, `op` being the backend's multi-block operation on up to
    /// `par` blocks (exactly `par` uses its parallel path).
    fn run(self, op: impl Fn(&mut [Block])) {
        let mut tlo = [0u64; BATCH];
        let mut thi = [0u64; BATCH];
        let mut tw = [0u128; BATCH];
        for (i, unit) in self.buf.chunks_exact_mut(self.unit_len).enumerate() {
            let mut t = match (self.iv)(i) {
                Ok(iv) => Block::from(iv),
                Err(e) => {
                    *self.outcome = Err(e);
                    return;
                }
            };
            self.tweak.encrypt_block(&mut t);
            let mut t = u128::from_le_bytes(t.0);
            let (blocks, _) = Block::slice_as_chunks_mut(unit);
            for chunk in blocks.chunks_mut(BATCH) {
                let n = chunk.len();
                t = gen_tweaks(t, &mut tlo[..n], &mut thi[..n]);
                for ((t, l), h) in tw[..n].iter_mut().zip(tlo.iter()).zip(thi.iter()) {
                    *t = (u128::from(*h) << 64) | u128::from(*l);
                }
                xor_tweaks(chunk, &tw[..n]);
                op(chunk);
                xor_tweaks(chunk, &tw[..n]);
            }
        }
    }
}

impl<F> BlockSizeUser for XtsUnits<'_, F> {
    type BlockSize = U16;
}

impl<F: FnMut(usize) -> Result<[u8; 16]>> BlockCipherEncClosure for XtsUnits<'_, F> {
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        let par = B::ParBlocksSize::USIZE;
        self.run(|chunk| {
            for c in chunk.chunks_mut(par) {
                if c.len() == par
                    && let Ok(p) = <&mut ParBlocks<B>>::try_from(&mut *c)
                {
                    backend.encrypt_par_blocks_inplace(p);
                } else {
                    backend.encrypt_tail_blocks_inplace(c);
                }
            }
        });
    }
}

impl<F: FnMut(usize) -> Result<[u8; 16]>> BlockCipherDecClosure for XtsUnits<'_, F> {
    fn call<B: BlockCipherDecBackend<BlockSize = U16>>(self, backend: &B) {
        let par = B::ParBlocksSize::USIZE;
        self.run(|chunk| {
            for c in chunk.chunks_mut(par) {
                if c.len() == par
                    && let Ok(p) = <&mut ParBlocks<B>>::try_from(&mut *c)
                {
                    backend.decrypt_par_blocks_inplace(p);
                } else {
                    backend.decrypt_tail_blocks_inplace(c);
                }
            }
        });
    }
}

/// Fills `tlo`/`thi` with consecutive tweaks starting at `t` (LANES by single
/// steps, the rest from the one LANES back); returns the tweak after the last.
#[inline(always)]
fn gen_tweaks(mut t: u128, tlo: &mut [u64], thi: &mut [u64]) -> u128 {
    let n = tlo.len().min(thi.len());
    let head = n.min(LANES);
    for (l, h) in tlo[..head].iter_mut().zip(thi[..head].iter_mut()) {
        *l = t as u64;
        *h = (t >> 64) as u64;
        t = mul_alpha(t);
    }
    for i in LANES..n {
        let (l, h) = (tlo[i - LANES], thi[i - LANES]);
        let top = h >> 56;
        thi[i] = (h << 8) | (l >> 56);
        tlo[i] = (l << 8) ^ top ^ (top << 1) ^ (top << 2) ^ (top << 7);
    }
    if n > LANES {
        t = mul_alpha((u128::from(thi[n - 1]) << 64) | u128::from(tlo[n - 1]));
    }
    t
}

#[inline(always)]
fn xor_tweaks(blocks: &mut [Array<u8, U16>], tweaks: &[u128]) {
    for (b, t) in blocks.iter_mut().zip(tweaks.iter()) {
        b.0 = (u128::from_le_bytes(b.0) ^ t).to_le_bytes();
    }
}

/// Multiplication by α^8 = x^8: shift by a byte and fold the byte that falls off
/// back with the XTS polynomial (x^7 + x^2 + x + 1), as a carry-less product by a
/// constant: shifts and XORs only, no table (constant time).
#[cfg(test)]
fn mul_alpha8(t: u128) -> u128 {
    let h = t >> 120;
    (t << 8) ^ (h << 7) ^ (h << 2) ^ (h << 1) ^ h
}

/// Multiplication by α in GF(2^128) with the XTS (little-endian) convention.
#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    let carry = (t >> 127) as u8;
    (t << 1) ^ u128::from(carry.wrapping_neg() & 0x87)
}

/// The IV of data unit `index` for policies without DIRECT_KEY: `le64(index)` then zeros.
pub fn index_iv(index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&index.to_le_bytes());
    iv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// IEEE P1619 XTS-AES-256 vector 10 (data unit sequence number 0xff, 512 bytes).
    #[test]
    fn ieee_p1619_vector_10() {
        let key = unhex(concat!(
            "2718281828459045235360287471352662497757247093699959574966967627",
            "3141592653589793238462643383279502884197169399375105820974944592"
        ));
        let cipher = ContentsCipher::from_key_bytes(&key).unwrap();
        let mut data: Vec<u8> = (0..512).map(|i| i as u8).collect();
        cipher
            .encrypt_data_unit(&index_iv(0xff), &mut data)
            .unwrap();
        assert_eq!(
            hex::encode(&data[..32]),
            "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b"
        );
        cipher
            .decrypt_data_unit(&index_iv(0xff), &mut data)
            .unwrap();
        assert!(data.iter().enumerate().all(|(i, b)| *b == i as u8));
    }

    /// The lane update in `xts` is this function on 64-bit halves.
    #[test]
    fn alpha8_is_eight_alphas() {
        let mut t = 0x8765_4321_0fed_cba9_ffee_ddcc_bbaa_9988u128;
        for _ in 0..1000 {
            let mut u = t;
            for _ in 0..8 {
                u = mul_alpha(u);
            }
            assert_eq!(mul_alpha8(t), u);
            t = t.rotate_left(13) ^ u;
        }
    }

    /// The batched path against a block-at-a-time XTS written from IEEE 1619, over
    /// units longer than one batch.
    #[test]
    fn batched_matches_naive() {
        let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
        let cipher = ContentsCipher::from_key_bytes(&key).unwrap();
        let k1 = Aes256::new_from_slice(&key[..32]).unwrap();
        let k2 = Aes256::new_from_slice(&key[32..]).unwrap();
        for len in [16usize, 1024, 4096, 16 * 65, 65536] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let iv = index_iv(len as u64 * 3);
            let mut fast = plain.clone();
            cipher.encrypt_data_unit(&iv, &mut fast).unwrap();
            let mut t = Array::<u8, U16>(iv);
            k2.encrypt_block(&mut t);
            let mut naive = plain.clone();
            for block in naive.chunks_mut(16) {
                let mut b = Array::<u8, U16>::default();
                for i in 0..16 {
                    b[i] = block[i] ^ t[i];
                }
                k1.encrypt_block(&mut b);
                for i in 0..16 {
                    block[i] = b[i] ^ t[i];
                }
                // Multiply t by alpha, byte-wise as in the standard.
                let mut carry = 0u8;
                for byte in t.iter_mut() {
                    let next = *byte >> 7;
                    *byte = (*byte << 1) | carry;
                    carry = next;
                }
                if carry == 1 {
                    t[0] ^= 0x87;
                }
            }
            assert_eq!(fast, naive, "length {len}");
            cipher.decrypt_data_unit(&iv, &mut fast).unwrap();
            assert_eq!(fast, plain);
        }
    }

    /// Several units per cipher call give the same bytes as one unit at a time.
    #[test]
    fn grouped_units_match_single_units() {
        let cipher = ContentsCipher::from_key_bytes(&[7; 64]).unwrap();
        for (unit, count) in [
            (512usize, 37usize),
            (4096, 9),
            (1024, 1),
            (16384, 3),
            (65536, 2),
        ] {
            let plain: Vec<u8> = (0..unit * count).map(|i| (i * 31 + 5) as u8).collect();
            let mut grouped = plain.clone();
            cipher
                .crypt_data_units(&mut grouped, unit, true, |i| Ok(index_iv(100 + i as u64)))
                .unwrap();
            let mut single = plain.clone();
            for (i, u) in single.chunks_mut(unit).enumerate() {
                cipher
                    .encrypt_data_unit(&index_iv(100 + i as u64), u)
                    .unwrap();
            }
            assert_eq!(grouped, single, "unit {unit}");
            cipher
                .crypt_data_units(&mut grouped, unit, false, |i| Ok(index_iv(100 + i as u64)))
                .unwrap();
            assert_eq!(grouped, plain);
        }
    }

    #[test]
    fn rejects_partial_blocks() {
        let cipher = ContentsCipher::from_key_bytes(&[1; 64]).unwrap();
        assert!(cipher.encrypt_data_unit(&[0; 16], &mut [0; 17]).is_err());
        assert!(cipher.encrypt_data_unit(&[0; 16], &mut []).is_err());
        assert!(ContentsCipher::from_key_bytes(&[1; 32]).is_err());
    }
}
