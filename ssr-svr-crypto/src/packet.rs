//! Packet protection: AES-256-CBC + HMAC-SHA-384 (encrypt-then-MAC) and AES-256-GCM.
//!
//! No allocation on the packet path: every function writes into a caller buffer and
//! returns the number of bytes written (boringtun style).
//!
//! # Wire format (CBC-HMAC suite)
//!
//! ```text
//! seq: u64 BE (8) | IV (16) | AES-256-CBC ciphertext, PKCS#7 padded (16·k) | tag (24)
//! ```
//!
//! * The tag is HMAC-SHA-384 over `seq | IV | ciphertext`, truncated to 192 bits as in
//!   RFC 4868 (HMAC-SHA-384-192). It is checked in constant time, before any decryption.
//! * The IV is explicit on the wire. The sender derives it as `AES-Kiv(seq | 0x80 | 0…)`
//!   (NIST SP 800-38A appendix C: the forward cipher applied to a nonce), so it is
//!   unpredictable without the key and needs no randomness on the packet path. `Kiv` is
//!   a separate IV-encryption key derived beside the CBC and HMAC keys from the same
//!   packet key material: `Kiv = HMAC-SHA-384(material, "svr cbc iv key v1")[..32]`
//!   (`iv_key`), never the CBC key itself.
//! * Sequence numbers start at 0 per key and never wrap: after `u64::MAX - 1` the sealer
//!   refuses ([`Error::SequenceExhausted`]).
//! * The receiver checks the sequence number against a [`ReplayWindow`] first (cheap
//!   reject) and advances the window only after the tag verified.
//!
//! # Wire format (GCM suite)
//!
//! ```text
//! seq: u64 BE (8) | AES-256-GCM ciphertext (n) | tag (16)
//! ```
//! Nonce = 4-byte salt (bytes 32..36 of the key material) | seq; AAD = the seq field.
//!
//! AES-256-CBC comes from RustCrypto `aes`, HMAC-SHA-384 from our `hmac384` module
//! (RustCrypto `sha2` to open; our SHA-512 stitched with the CBC chain to seal one
//! packet, eight lanes wide for batches), AES-256-GCM from `ring` (BoringSSL's
//! assembly: GCM with CTR and GHASH stitched in one pass).

use aes::Aes256;
use cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use ring::aead as raead;
use subtle::ConstantTimeEq;

use crate::Error;
use crate::hmac384::{Interleave, MacKey, WAYS};
use crate::replay::ReplayWindow;
use crate::secret::PacketKeyMaterial;

type Block = aes::Block;

/// Sequence number field length.
pub const SEQ_LEN: usize = 8;
/// CBC block / IV length.
pub const IV_LEN: usize = 16;
/// Truncated HMAC-SHA-384 tag length.
pub const TAG_LEN: usize = 24;
/// CBC-HMAC header length (seq + IV).
pub const HEADER_LEN: usize = SEQ_LEN + IV_LEN;
/// GCM tag length.
pub const GCM_TAG_LEN: usize = 16;
/// Packets interleaved by [`CbcHmacSealer::seal_batch`] (the AES-NI pipeline width).
pub const LANES: usize = 8;

/// Length of a sealed CBC-HMAC packet carrying `plaintext_len` bytes.
pub const fn sealed_len(plaintext_len: usize) -> usize {
    HEADER_LEN + (plaintext_len / 16 + 1) * 16 + TAG_LEN
}

/// Length of a sealed GCM packet carrying `plaintext_len` bytes.
pub const fn gcm_sealed_len(plaintext_len: usize) -> usize {
    SEQ_LEN + plaintext_len + GCM_TAG_LEN
}

/// Counters of a receiving key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenStats {
    /// Packets that authenticated and were delivered.
    pub delivered: u64,
    /// Packets rejected by the replay window.
    pub replayed: u64,
    /// Packets that did not authenticate.
    pub tampered: u64,
}

fn iv_input(seq: u64) -> Block {
    let mut b = Block::default();
    b[..8].copy_from_slice(&seq.to_be_bytes());
    b[8] = 0x80;
    b
}

/// The CBC key (bytes 0..32) and the HMAC key (the rest, 48 bytes: a key shorter than
/// the hash block is used as is, RFC 2104). The raw bytes stay in the zeroizing
/// [`PacketKeyMaterial`]; the AES round keys are RustCrypto's (zeroized on drop with its
/// `zeroize` feature), the HMAC midstates ours.
fn keys(material: &PacketKeyMaterial) -> (Aes256, MacKey) {
    let m = material.secret_bytes();
    let (enc, rest) = m.split_at(32);
    let mut enc_key = aes::cipher::Key::<Aes256>::default();
    enc_key.copy_from_slice(enc);
    let aes = Aes256::new(&enc_key);
    enc_key.iter_mut().for_each(|b| *b = 0);
    (aes, MacKey::new(rest))
}

/// Label of the IV-encryption key derivation.
const IV_KEY_LABEL: &[u8] = b"svr cbc iv key v1";

/// The IV-encryption key of `material`: `HMAC-SHA-384(material, "svr cbc iv key v1")`,
/// first 32 bytes (HMAC as a PRF keyed by the whole 80-byte material, a label no other
/// derivation uses), expanded into AES round keys. Only the sealer needs it: the IV is
/// explicit on the wire.
fn iv_key(material: &PacketKeyMaterial) -> Aes256 {
    let mut full = MacKey::new(material.secret_bytes()).tag(IV_KEY_LABEL);
    let mut k = aes::cipher::Key::<Aes256>::default();
    k.copy_from_slice(&full[..32]);
    let aes = Aes256::new(&k);
    k.iter_mut().for_each(|b| *b = 0);
    full.iter_mut().for_each(|b| *b = 0);
    aes
}

/// Sending half of a CBC-HMAC key.
pub struct CbcHmacSealer {
    aes: Aes256,
    iv_aes: Aes256,
    mac: MacKey,
    next_seq: u64,
}

impl core::fmt::Debug for CbcHmacSealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CbcHmacSealer")
            .field("key", &"[redacted]")
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl CbcHmacSealer {
    /// A sealer starting at sequence number 0.
    pub fn new(material: &PacketKeyMaterial) -> Self {
        let (aes, mac) = keys(material);
        Self {
            aes,
            iv_aes: iv_key(material),
            mac,
            next_seq: 0,
        }
    }

    /// Next sequence number to be used.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn take_seq(&mut self) -> Result<u64, Error> {
        if self.next_seq == u64::MAX {
            return Err(Error::SequenceExhausted);
        }
        let s = self.next_seq;
        self.next_seq += 1;
        Ok(s)
    }

    /// Seals `plaintext` into `out`, returning the packet length ([`sealed_len`]).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let n = sealed_len(plaintext.len());
        if out.len() < n {
            return Err(Error::BufferTooSmall {
                needed: n,
                have: out.len(),
            });
        }
        let seq = self.take_seq()?;
        let out = &mut out[..n];
        out[..SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
        // The IV under its own key, then one backend call for the whole packet: the CBC
        // chain interleaved with the MAC's SHA-512 rounds.
        let mut iv = iv_input(seq);
        self.iv_aes.encrypt_block(&mut iv);
        self.aes.encrypt_with_backend(SealOne {
            mac: &self.mac,
            iv,
            pt: plaintext,
            packet: out,
        });
        Ok(n)
    }

    /// Seals several packets at once, interleaving their independent CBC chains so the
    /// AES unit works on up to [`LANES`] blocks in parallel (CBC encryption of a single
    /// packet is latency bound), then computing their tags side by side in vector
    /// lanes. Packet `i` is `plaintexts[i]` sealed into `outs[i]`,
    /// its length written to `lens[i]`; sequence numbers are assigned in order.
    pub fn seal_batch(
        &mut self,
        plaintexts: &[&[u8]],
        outs: &mut [&mut [u8]],
        lens: &mut [usize],
    ) -> Result<(), Error> {
        if outs.len() < plaintexts.len() || lens.len() < plaintexts.len() {
            return Err(Error::BufferTooSmall {
                needed: plaintexts.len(),
                have: outs.len().min(lens.len()),
            });
        }
        for (p, o) in plaintexts.iter().zip(outs.iter()) {
            let n = sealed_len(p.len());
            if o.len() < n {
                return Err(Error::BufferTooSmall {
                    needed: n,
                    have: o.len(),
                });
            }
        }
        if self
            .next_seq
            .checked_add(plaintexts.len() as u64)
            .is_none_or(|e| e == u64::MAX)
        {
            return Err(Error::SequenceExhausted);
        }
        let mut base = 0;
        for (pts, outs_chunk) in plaintexts.chunks(LANES).zip(outs.chunks_mut(LANES)) {
            self.seal_lanes(pts, outs_chunk);
            for (i, p) in pts.iter().enumerate() {
                if let Some(l) = lens.get_mut(base + i) {
                    *l = sealed_len(p.len());
                }
            }
            base += pts.len();
        }
        Ok(())
    }

    /// Up to LANES packets; buffer sizes already checked.
    fn seal_lanes(&mut self, pts: &[&[u8]], outs: &mut [&mut [u8]]) {
        let k = pts.len().min(LANES);
        // Lane order: longest packet first, so the active lanes are always a prefix.
        let mut ord = [0usize; LANES];
        for (i, o) in ord.iter_mut().enumerate() {
            *o = i;
        }
        let nblocks = |i: usize| pts.get(i).map_or(0, |p| p.len() / 16 + 1);
        ord[..k].sort_unstable_by_key(|&i| core::cmp::Reverse(nblocks(i)));
        let mut chains = [Block::default(); LANES];
        let base = self.next_seq;
        self.next_seq += k as u64;
        for p in 0..k {
            let i = ord[p];
            let seq = base + i as u64;
            outs[i][..SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
            chains[p] = iv_input(seq);
        }
        self.iv_aes.encrypt_blocks(&mut chains[..k]);
        for p in 0..k {
            outs[ord[p]][SEQ_LEN..HEADER_LEN].copy_from_slice(&chains[p]);
        }
        let aes = &self.aes;
        aes.encrypt_with_backend(CbcLanes {
            chains: &mut chains,
            ord: &ord,
            k,
            pts,
            outs,
        });
        // Tags: all packets side by side in vector lanes (lanes beyond `k` repeat the
        // first packet and are dropped) when there are enough to pay for the full width,
        // else one by one.
        if k >= WIDE_MIN {
            let mut lens = [0usize; LANES];
            for (l, p) in lens.iter_mut().zip(pts) {
                *l = sealed_len(p.len());
            }
            aes.encrypt_with_backend(TagLanes {
                mac: &self.mac,
                packets: &mut outs[..k],
                lens: &lens,
            });
        } else {
            for (o, p) in outs.iter_mut().zip(pts).take(k) {
                tag_into(&self.mac, &mut o[..sealed_len(p.len())]);
            }
        }
    }
}

/// Fewest packets for which the eight-lane HMAC beats one-by-one tags (measured: eight
/// lanes cost about as much as three single tags).
const WIDE_MIN: usize = 3;

const _: () = assert!(LANES == WAYS, "one seal_lanes call fills the HMAC lanes");

/// Seals one packet whose sequence number is in place: CBC encryption from `iv`
/// stitched with the HMAC ([`MacKey::tag_interleaved`]).
struct SealOne<'a> {
    mac: &'a MacKey,
    /// The packet's IV (already encrypted under the IV key).
    iv: Block,
    pt: &'a [u8],
    /// The whole packet, [`sealed_len`] long.
    packet: &'a mut [u8],
}

impl cipher::BlockSizeUser for SealOne<'_> {
    type BlockSize = cipher::consts::U16;
}

impl cipher::BlockCipherEncClosure for SealOne<'_> {
    // Inlined into the backend's `#[target_feature]` function, with everything it calls,
    // so the AES rounds inline between the SHA-512 rounds.
    #[inline(always)]
    fn call<B: cipher::BlockCipherEncBackend<BlockSize = Self::BlockSize>>(self, backend: &B) {
        let Self {
            mac,
            iv: chain,
            pt,
            packet,
        } = self;
        packet[SEQ_LEN..HEADER_LEN].copy_from_slice(&chain);
        let body_len = packet.len() - TAG_LEN;
        let (body, tag_out) = packet.split_at_mut(body_len);
        // The plaintext and its PKCS#7 padding go into the packet first and the CBC chain
        // encrypts them in place: the producer then needs one buffer and no padding
        // branch, which keeps its state in registers beside the SHA-512 rounds'.
        let (text, pad) = body[HEADER_LEN..].split_at_mut(pt.len());
        text.copy_from_slice(pt);
        pad.fill(pad.len() as u8);
        let mut cbc = CbcProducer {
            backend,
            chain,
            body,
            done: HEADER_LEN,
        };
        let tag = mac.tag_interleaved(body_len, &mut cbc);
        tag_out.copy_from_slice(&tag[..TAG_LEN]);
    }
}

/// The CBC chain of one packet as the MAC's message producer: `body` is the packet
/// without its tag, ciphertext up to `done`, padded plaintext after it.
struct CbcProducer<'a, B> {
    backend: &'a B,
    chain: Block,
    body: &'a mut [u8],
    done: usize,
}

impl<B: cipher::BlockCipherEncBackend<BlockSize = cipher::consts::U16>> CbcProducer<'_, B> {
    /// Encrypts the next block, if any is left.
    #[inline(always)]
    fn next_block(&mut self) {
        let Some(block) = self.body.get_mut(self.done..self.done + 16) else {
            return;
        };
        for (x, y) in self.chain.iter_mut().zip(block.iter()) {
            *x ^= y;
        }
        self.backend.encrypt_block_inplace(&mut self.chain);
        block.copy_from_slice(&self.chain);
        self.done += 16;
    }
}

impl<B: cipher::BlockCipherEncBackend<BlockSize = cipher::consts::U16>> Interleave
    for CbcProducer<'_, B>
{
    #[inline(always)]
    fn ensure(&mut self, n: usize) -> &[u8] {
        while self.done < n.min(self.body.len()) {
            self.next_block();
        }
        &self.body[..n.min(self.body.len())]
    }

    #[inline(always)]
    fn step(&mut self) {
        self.next_block();
    }
}

/// Writes the tag of `packet[..len - TAG_LEN]` into its last [`TAG_LEN`] bytes.
fn tag_into(mac: &MacKey, packet: &mut [u8]) {
    let body = packet.len() - TAG_LEN;
    let tag = mac.tag(&packet[..body]);
    packet[body..].copy_from_slice(&tag[..TAG_LEN]);
}

/// Interleaved CBC over up to LANES packets inside one backend call.
struct CbcLanes<'a, 'p, 'o> {
    chains: &'a mut [Block; LANES],
    ord: &'a [usize; LANES],
    k: usize,
    pts: &'a [&'p [u8]],
    outs: &'a mut [&'o mut [u8]],
}

impl cipher::BlockSizeUser for CbcLanes<'_, '_, '_> {
    type BlockSize = cipher::consts::U16;
}

impl cipher::BlockCipherEncClosure for CbcLanes<'_, '_, '_> {
    // Inlined into the backend's `#[target_feature]` function: outlined, the AES rounds
    // would be compiled without AES-NI enabled and become calls.
    #[inline(always)]
    fn call<B: cipher::BlockCipherEncBackend<BlockSize = Self::BlockSize>>(self, backend: &B) {
        use cipher::typenum::Unsigned;
        let par = <B::ParBlocksSize as Unsigned>::USIZE;
        let Self {
            chains,
            ord,
            k,
            pts,
            outs,
        } = self;
        // Lane `p` (in `ord` order, longest first): its plaintext and its ciphertext area.
        let mut lane_pt: [&[u8]; LANES] = [&[]; LANES];
        let mut lane_ct: [&mut [u8]; LANES] = Default::default();
        let mut rank = [0usize; LANES];
        for (p, &i) in ord.iter().enumerate().take(k) {
            rank[i] = p;
        }
        for (i, o) in outs.iter_mut().enumerate().take(k) {
            let n = sealed_len(pts[i].len());
            lane_pt[rank[i]] = pts[i];
            lane_ct[rank[i]] = &mut o[HEADER_LEN..n - TAG_LEN];
        }
        let maxb = lane_ct[0].len() / 16;
        let mut active = k;
        for j in 0..maxb {
            while active > 0 && lane_ct[active - 1].len() / 16 <= j {
                active -= 1;
            }
            let start = j * 16;
            for (chain, pt) in chains.iter_mut().zip(&lane_pt).take(active) {
                let block = match pt.get(start..start + 16) {
                    Some(b) => <[u8; 16]>::try_from(b).unwrap_or_default(),
                    None => pad_block(pt.get(start..).unwrap_or_default()),
                };
                let x = u128::from_ne_bytes(chain.0) ^ u128::from_ne_bytes(block);
                chain.0 = x.to_ne_bytes();
            }
            let mut done = 0;
            while active - done >= par && par > 1 {
                match <&mut cipher::ParBlocks<B>>::try_from(&mut chains[done..done + par]) {
                    Ok(pb) => backend.encrypt_par_blocks_inplace(pb),
                    Err(_) => break,
                }
                done += par;
            }
            backend.encrypt_tail_blocks_inplace(&mut chains[done..active]);
            for (ct, chain) in lane_ct.iter_mut().zip(chains.iter()).take(active) {
                ct[start..start + 16].copy_from_slice(chain);
            }
        }
    }
}

/// The tags of up to [`LANES`] packets whose bodies are in place, inside a backend call
/// so the lane-wise HMAC is compiled with the backend's target features.
struct TagLanes<'a, 'o> {
    mac: &'a MacKey,
    /// Sealed packets (body, then room for the tag), at least one; `lens[i]` long.
    packets: &'a mut [&'o mut [u8]],
    lens: &'a [usize; LANES],
}

impl cipher::BlockSizeUser for TagLanes<'_, '_> {
    type BlockSize = cipher::consts::U16;
}

impl cipher::BlockCipherEncClosure for TagLanes<'_, '_> {
    // Inlined into the backend's `#[target_feature]` function: an outlined `call` would
    // be compiled without those features and the lanes would not vectorize.
    #[inline(always)]
    fn call<B: cipher::BlockCipherEncBackend<BlockSize = Self::BlockSize>>(self, _: &B) {
        let Self { mac, packets, lens } = self;
        let k = packets.len();
        let tags = mac.tag_lanes(core::array::from_fn(|l| {
            let i = if l < k { l } else { 0 };
            packets.get(i).map_or(&[][..], |p| &p[..lens[i] - TAG_LEN])
        }));
        for ((p, t), &n) in packets.iter_mut().zip(&tags).zip(lens) {
            p[n - TAG_LEN..n].copy_from_slice(&t[..TAG_LEN]);
        }
    }
}

fn pad_block(rest: &[u8]) -> [u8; 16] {
    let pad = (16 - rest.len()) as u8;
    let mut b = [pad; 16];
    b[..rest.len()].copy_from_slice(rest);
    b
}

/// Receiving half of a CBC-HMAC key, with its replay window and counters.
pub struct CbcHmacOpener {
    aes: Aes256,
    mac: MacKey,
    window: ReplayWindow,
    stats: OpenStats,
}

impl core::fmt::Debug for CbcHmacOpener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CbcHmacOpener")
            .field("key", &"[redacted]")
            .field("stats", &self.stats)
            .finish()
    }
}

impl CbcHmacOpener {
    /// An opener with an empty replay window.
    pub fn new(material: &PacketKeyMaterial) -> Self {
        let (aes, mac) = keys(material);
        Self {
            aes,
            mac,
            window: ReplayWindow::new(),
            stats: OpenStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> OpenStats {
        self.stats
    }

    /// Peeks at a packet's sequence number (unauthenticated).
    pub fn peek_seq(packet: &[u8]) -> Option<u64> {
        let s: [u8; 8] = packet.get(..SEQ_LEN)?.try_into().ok()?;
        Some(u64::from_be_bytes(s))
    }

    /// Authenticates and decrypts `packet` into `out` (which needs room for the padded
    /// ciphertext length, `packet.len() - 48`), returning the plaintext length.
    ///
    /// Errors: [`Error::Replay`] (counted), [`Error::Unauthenticated`] (counted), or
    /// [`Error::BufferTooSmall`].
    pub fn open(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        match self.open_inner(packet, out) {
            Ok(n) => {
                self.stats.delivered += 1;
                Ok(n)
            }
            Err(e @ Error::Replay { .. }) => {
                self.stats.replayed += 1;
                Err(e)
            }
            Err(e @ Error::BufferTooSmall { .. }) => Err(e),
            Err(_) => {
                self.stats.tampered += 1;
                Err(Error::Unauthenticated)
            }
        }
    }

    fn open_inner(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let len = packet.len();
        if len < HEADER_LEN + 16 + TAG_LEN || !(len - HEADER_LEN - TAG_LEN).is_multiple_of(16) {
            return Err(Error::Unauthenticated);
        }
        let ct_len = len - HEADER_LEN - TAG_LEN;
        if out.len() < ct_len {
            return Err(Error::BufferTooSmall {
                needed: ct_len,
                have: out.len(),
            });
        }
        let seq = Self::peek_seq(packet).ok_or(Error::Unauthenticated)?;
        self.window.check(seq)?;
        let (body, tag) = packet.split_at(len - TAG_LEN);
        let full = self.mac.tag(body);
        if !bool::from(full[..TAG_LEN].ct_eq(tag)) {
            return Err(Error::Unauthenticated);
        }
        // Decrypt: all blocks in parallel, then XOR with the previous ciphertext block.
        let ivct = &body[SEQ_LEN..];
        let out = &mut out[..ct_len];
        out.copy_from_slice(&ivct[IV_LEN..]);
        let (blocks, _) = Array::slice_as_chunks_mut(out);
        self.aes.decrypt_blocks(blocks);
        for (k, b) in out.iter_mut().enumerate() {
            *b ^= ivct[k];
        }
        let pad = out[ct_len - 1] as usize;
        if pad == 0 || pad > 16 || out[ct_len - pad..].iter().any(|&b| b as usize != pad) {
            return Err(Error::Unauthenticated);
        }
        self.window.commit(seq);
        Ok(ct_len - pad)
    }
}

/// Sending half of a GCM key.
pub struct GcmSealer {
    aead: raead::LessSafeKey,
    salt: [u8; 4],
    next_seq: u64,
}

impl core::fmt::Debug for GcmSealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GcmSealer")
            .field("key", &"[redacted]")
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

/// The GCM key, expanded once per packet key by `ring` straight from the zeroizing
/// [`PacketKeyMaterial`] (no copy of ours to wipe). The AES round keys and GHASH key
/// inside `ring::aead::LessSafeKey` are ring's own key schedule: ring does not zeroize
/// them on drop, and we cannot.
fn gcm_keys(material: &PacketKeyMaterial) -> (raead::LessSafeKey, [u8; 4]) {
    let m = material.secret_bytes();
    let key = raead::UnboundKey::new(&raead::AES_256_GCM, &m[..32])
        .expect("AES-256-GCM takes exactly the 32-byte key given");
    let mut salt = [0u8; 4];
    salt.copy_from_slice(&m[32..36]);
    (raead::LessSafeKey::new(key), salt)
}

/// The nonce of packet `seq`: unique per key because sequence numbers never repeat.
fn gcm_nonce(salt: &[u8; 4], seq: u64) -> raead::Nonce {
    let mut n = [0u8; raead::NONCE_LEN];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(&seq.to_be_bytes());
    raead::Nonce::assume_unique_for_key(n)
}

impl GcmSealer {
    /// A sealer starting at sequence number 0.
    pub fn new(material: &PacketKeyMaterial) -> Self {
        let (aead, salt) = gcm_keys(material);
        Self {
            aead,
            salt,
            next_seq: 0,
        }
    }

    /// Seals `plaintext` into `out`, returning [`gcm_sealed_len`].
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let n = gcm_sealed_len(plaintext.len());
        if out.len() < n {
            return Err(Error::BufferTooSmall {
                needed: n,
                have: out.len(),
            });
        }
        if self.next_seq == u64::MAX {
            return Err(Error::SequenceExhausted);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let out = &mut out[..n];
        let (hdr, rest) = out.split_at_mut(SEQ_LEN);
        hdr.copy_from_slice(&seq.to_be_bytes());
        let (ct, tag) = rest.split_at_mut(plaintext.len());
        // ring encrypts in place: copy the plaintext into the packet first.
        ct.copy_from_slice(plaintext);
        let t = self
            .aead
            .seal_in_place_separate_tag(gcm_nonce(&self.salt, seq), raead::Aad::from(&*hdr), ct)
            .map_err(|_| Error::BadLength {
                what: "gcm plaintext",
                len: plaintext.len(),
            })?;
        tag.copy_from_slice(t.as_ref());
        Ok(n)
    }
}

/// Receiving half of a GCM key.
pub struct GcmOpener {
    aead: raead::LessSafeKey,
    salt: [u8; 4],
    window: ReplayWindow,
    stats: OpenStats,
}

impl core::fmt::Debug for GcmOpener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GcmOpener")
            .field("key", &"[redacted]")
            .field("stats", &self.stats)
            .finish()
    }
}

impl GcmOpener {
    /// An opener with an empty replay window.
    pub fn new(material: &PacketKeyMaterial) -> Self {
        let (aead, salt) = gcm_keys(material);
        Self {
            aead,
            salt,
            window: ReplayWindow::new(),
            stats: OpenStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> OpenStats {
        self.stats
    }

    /// Authenticates and decrypts into `out` (room for `packet.len() - 24` bytes).
    pub fn open(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let r = (|| {
            let len = packet.len();
            if len < SEQ_LEN + GCM_TAG_LEN {
                return Err(Error::Unauthenticated);
            }
            let pt_len = len - SEQ_LEN - GCM_TAG_LEN;
            if out.len() < pt_len {
                return Err(Error::BufferTooSmall {
                    needed: pt_len,
                    have: out.len(),
                });
            }
            let seq = CbcHmacOpener::peek_seq(packet).ok_or(Error::Unauthenticated)?;
            self.window.check(seq)?;
            let (hdr, rest) = packet.split_at(SEQ_LEN);
            let (ct, tag) = rest.split_at(pt_len);
            let out = &mut out[..pt_len];
            out.copy_from_slice(ct);
            let tag = raead::Tag::try_from(tag).map_err(|_| Error::Unauthenticated)?;
            // On a bad tag ring zeroes `out` before returning the error.
            self.aead
                .open_in_place_separate_tag(
                    gcm_nonce(&self.salt, seq),
                    raead::Aad::from(hdr),
                    tag,
                    out,
                    0..,
                )
                .map_err(|_| Error::Unauthenticated)?;
            self.window.commit(seq);
            Ok(pt_len)
        })();
        match &r {
            Ok(_) => self.stats.delivered += 1,
            Err(Error::Replay { .. }) => self.stats.replayed += 1,
            Err(Error::BufferTooSmall { .. }) => {}
            Err(_) => self.stats.tampered += 1,
        }
        r
    }
}

/// Packet protection suite, selectable per peer and negotiated in the key exchange
/// (`peer`): both ends must be configured alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Suite {
    /// AES-256-CBC + HMAC-SHA-384-192 (default).
    #[default]
    CbcHmacSha384,
    /// AES-256-GCM.
    Aes256Gcm,
}

impl Suite {
    /// Wire code (signed in the key exchange).
    pub fn code(self) -> u8 {
        match self {
            Self::CbcHmacSha384 => 1,
            Self::Aes256Gcm => 2,
        }
    }
    /// From the wire code.
    pub fn from_code(c: u8) -> Result<Self, Error> {
        match c {
            1 => Ok(Self::CbcHmacSha384),
            2 => Ok(Self::Aes256Gcm),
            _ => Err(Error::Malformed {
                what: "packet suite",
                reason: "unknown suite",
            }),
        }
    }
    /// Configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::CbcHmacSha384 => "aes-256-cbc-hmac-sha384",
            Self::Aes256Gcm => "aes-256-gcm",
        }
    }
    /// From the configuration name.
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::CbcHmacSha384, Self::Aes256Gcm]
            .into_iter()
            .find(|x| x.name() == s)
    }
    /// Sealed length of a `plaintext_len`-byte payload.
    pub fn sealed_len(self, plaintext_len: usize) -> usize {
        match self {
            Self::CbcHmacSha384 => sealed_len(plaintext_len),
            Self::Aes256Gcm => gcm_sealed_len(plaintext_len),
        }
    }
}

/// A sender of either suite.
// One per peer direction: inline rather than boxed, no extra indirection per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Sealer {
    /// CBC-HMAC.
    Cbc(CbcHmacSealer),
    /// GCM.
    Gcm(GcmSealer),
}

impl Sealer {
    /// A sender of `suite` under `material`, from sequence number 0.
    pub fn new(suite: Suite, material: &PacketKeyMaterial) -> Self {
        match suite {
            Suite::CbcHmacSha384 => Self::Cbc(CbcHmacSealer::new(material)),
            Suite::Aes256Gcm => Self::Gcm(GcmSealer::new(material)),
        }
    }
    /// Seals into `out`, returning the packet length.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        match self {
            Self::Cbc(s) => s.seal(plaintext, out),
            Self::Gcm(s) => s.seal(plaintext, out),
        }
    }
}

/// A receiver of either suite.
#[allow(clippy::large_enum_variant)] // as `Sealer`
#[derive(Debug)]
pub enum Opener {
    /// CBC-HMAC.
    Cbc(CbcHmacOpener),
    /// GCM.
    Gcm(GcmOpener),
}

impl Opener {
    /// A receiver of `suite` under `material` with an empty window.
    pub fn new(suite: Suite, material: &PacketKeyMaterial) -> Self {
        Self::after_opt(suite, material, None)
    }
    /// A receiver that rejects every sequence number up to and including `floor`.
    pub fn after(suite: Suite, material: &PacketKeyMaterial, floor: u64) -> Self {
        Self::after_opt(suite, material, Some(floor))
    }
    fn after_opt(suite: Suite, material: &PacketKeyMaterial, floor: Option<u64>) -> Self {
        let window = floor.map_or_else(ReplayWindow::new, ReplayWindow::after);
        match suite {
            Suite::CbcHmacSha384 => {
                let mut o = CbcHmacOpener::new(material);
                o.window = window;
                Self::Cbc(o)
            }
            Suite::Aes256Gcm => {
                let mut o = GcmOpener::new(material);
                o.window = window;
                Self::Gcm(o)
            }
        }
    }
    /// Authenticates and decrypts into `out`.
    pub fn open(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        match self {
            Self::Cbc(o) => o.open(packet, out),
            Self::Gcm(o) => o.open(packet, out),
        }
    }
    /// Counters so far.
    pub fn stats(&self) -> OpenStats {
        match self {
            Self::Cbc(o) => o.stats(),
            Self::Gcm(o) => o.stats(),
        }
    }
    /// Highest sequence number accepted so far.
    pub fn high_water_mark(&self) -> Option<u64> {
        match self {
            Self::Cbc(o) => o.window.top(),
            Self::Gcm(o) => o.window.top(),
        }
    }
}

/// Entry points for known-answer tests (not a stable API).
#[doc(hidden)]
pub mod kat {
    use super::*;

    pub use crate::hmac384::Path;

    /// HMAC-SHA-384 as the packet path computes it, for RFC 4231 vectors.
    pub fn hmac_sha384(key: &[u8], data: &[u8]) -> [u8; 48] {
        MacKey::new(key).tag(data)
    }

    /// SHA-512 (or SHA-384) digests of `msgs` through one of the three SHA-512
    /// compression paths of the packet code, for the NIST vectors.
    pub fn sha2_family(path: Path, sha384: bool, msgs: &[&[u8]]) -> Vec<Vec<u8>> {
        crate::hmac384::sha2_family(path, sha384, msgs)
    }

    /// HKDF-SHA-384 as the key derivations here call it (`hkdf` crate), for published
    /// vectors: `None` when `out` is longer than 255 × 48 bytes.
    pub fn hkdf_sha384(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) -> Option<()> {
        let hk = hkdf::Hkdf::<sha2::Sha384>::new(Some(salt), ikm);
        hk.expand(info, out).ok()
    }
}
