//! HMAC-SHA-384 (RFC 2104, FIPS 198-1) for the packet path, in three shapes:
//!
//! * A message known in full ([`MacKey::tag`], `open`): RustCrypto `sha2`'s SHA-512
//!   compression function (AVX2 where the CPU has it).
//! * A message produced while it is hashed ([`MacKey::tag_interleaved`], `seal`): our
//!   own compression, scalar rounds with the message schedule two words at a time in
//!   vector registers, calling the producer (one CBC block) between groups of rounds
//!   so the out-of-order core overlaps the latency-bound CBC chain with the hash.
//! * Eight messages at once ([`MacKey::tag_lanes`], `seal_batch`): a compression over
//!   eight 64-bit lanes, every lane operation a loop over eight `u64`s that LLVM turns
//!   into vector instructions (one 512-bit or two 256-bit).
//!
//! The last two run inside the AES backend's call (`encrypt_with_backend`), whose
//! target features (VAES with AVX-512 or AVX2 on current x86) the inlined code
//! inherits, so no `unsafe` and no CPU detection of our own is needed; on a CPU without
//! them the same code runs in narrower registers, slower but with identical results.
//!
//! The key is kept only as the two SHA-384 midstates after the `key ⊕ ipad` and
//! `key ⊕ opad` blocks (what RFC 2104 §4 suggests precomputing), zeroized on drop.

use sha2::Digest;
use sha2::block_api::compress512;
use zeroize::Zeroize;

const BLOCK: usize = 128;
/// HMAC-SHA-384 output length.
pub(crate) const OUT: usize = 48;
/// Messages per [`MacKey::tag_lanes`] call.
pub(crate) const WAYS: usize = 8;

/// SHA-384 initial hash value (FIPS 180-4 §5.3.4).
const IV384: [u64; 8] = [
    0xcbbb_9d5d_c105_9ed8,
    0x629a_292a_367c_d507,
    0x9159_015a_3070_dd17,
    0x152f_ecd8_f70e_5939,
    0x6733_2667_ffc0_0b31,
    0x8eb4_4a87_6858_1511,
    0xdb0c_2e0d_64f9_8fa7,
    0x47b5_481d_befa_4fa4,
];

/// SHA-512 round constants (FIPS 180-4 §4.2.3); `sha2` keeps its copy private.
#[rustfmt::skip]
const K: [u64; 80] = [
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
];

/// An HMAC-SHA-384 key as its two keyed midstates.
pub(crate) struct MacKey {
    inner: [u64; 8],
    outer: [u64; 8],
}

impl Drop for MacKey {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

impl core::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MacKey([redacted])")
    }
}

impl MacKey {
    /// Keys longer than the 128-byte block are hashed first; shorter ones are zero
    /// padded (RFC 2104 §2).
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut k = [0u8; BLOCK];
        if key.len() > BLOCK {
            let mut d = sha2::Sha384::digest(key);
            k[..OUT].copy_from_slice(&d);
            d.zeroize();
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let midstate = |pad: u8| {
            let mut b = [[0u8; BLOCK]];
            for (o, k) in b[0].iter_mut().zip(&k) {
                *o = k ^ pad;
            }
            let mut s = IV384;
            compress512(&mut s, &b);
            b.zeroize();
            s
        };
        let key = Self {
            inner: midstate(0x36),
            outer: midstate(0x5c),
        };
        k.zeroize();
        key
    }

    /// The tag of `msg`.
    pub(crate) fn tag(&self, msg: &[u8]) -> [u8; OUT] {
        let mut s = self.inner;
        let (full, _) = msg.as_chunks::<BLOCK>();
        compress512(&mut s, full);
        let tail = Tail::of(msg);
        compress512(&mut s, tail.blocks());
        let tag = self.outer_tag(s);
        s.zeroize();
        tag
    }

    /// The tag of a `len`-byte message that `work` produces while it is hashed: block
    /// `m` is read once `work.ensure` has it, and `work.step()` runs between the rounds,
    /// so a latency-bound producer (a CBC chain) overlaps the SHA-512 arithmetic
    /// (OpenSSL's "stitching", here left to the out-of-order core).
    ///
    /// `#[inline(always)]`, like the producer's methods, so that the whole loop is one
    /// function compiled with the caller's target features.
    #[inline(always)]
    pub(crate) fn tag_interleaved<W: Interleave>(&self, len: usize, work: &mut W) -> [u8; OUT] {
        let mut s = self.inner;
        let mut scratch = Scratch {
            k: K,
            w: [Lane([0; 2]); 40],
            wk: [0; 80],
        };
        let scratch = core::hint::black_box(&mut scratch);
        for m in 0..len / BLOCK {
            let msg = work.ensure((m + 1) * BLOCK);
            let w: [u64; 16] = core::array::from_fn(|i| word_at(msg, m * BLOCK + 8 * i));
            compress_interleaved(&mut s, &w, scratch, work);
        }
        scratch.w.iter_mut().for_each(|p| p.0.zeroize());
        scratch.wk.zeroize();
        let tail = Tail::of(work.ensure(len));
        compress512(&mut s, tail.blocks());
        let tag = self.outer_tag(s);
        s.zeroize();
        tag
    }

    /// The tags of [`WAYS`] messages of any lengths, computed side by side in lanes for
    /// as many blocks as they have in common, then one by one.
    ///
    /// `#[inline(always)]` so that the lanes vectorize with the caller's target
    /// features (see the module documentation).
    #[inline(always)]
    pub(crate) fn tag_lanes(&self, msgs: [&[u8]; WAYS]) -> [[u8; OUT]; WAYS] {
        let tails = msgs.map(Tail::of);
        let counts: [usize; WAYS] = core::array::from_fn(|l| msgs[l].len() / BLOCK + tails[l].n);
        let common = counts.iter().copied().min().unwrap_or(0);
        let block = |l: usize, k: usize| -> &[u8; BLOCK] {
            let (full, _) = msgs[l].as_chunks::<BLOCK>();
            match full.get(k) {
                Some(b) => b,
                None => &tails[l].blocks()[k - full.len()],
            }
        };
        let mut state = [Lane::<WAYS>([0; WAYS]); 8];
        // The lane state goes through memory between blocks: promoted to registers, the
        // loop-carried state keeps LLVM's SLP vectorizer from vectorizing the rounds
        // (measured: half the speed). `black_box` only hides the address; if it does
        // nothing, the result is the same, only slower.
        let lanes = core::hint::black_box(&mut state);
        for (x, &v) in lanes.iter_mut().zip(&self.inner) {
            *x = Lane([v; WAYS]);
        }
        for k in 0..common {
            compress_lanes(lanes, core::array::from_fn(|l| block(l, k)));
        }
        let mut inner: [[u64; 8]; WAYS] =
            core::array::from_fn(|l| core::array::from_fn(|i| lanes[i].0[l]));
        for (l, s) in inner.iter_mut().enumerate() {
            for k in common..counts[l] {
                compress512(s, core::slice::from_ref(block(l, k)));
            }
        }
        let outer_blocks = inner.map(|s| outer_block(&s));
        for (x, &v) in lanes.iter_mut().zip(&self.outer) {
            *x = Lane([v; WAYS]);
        }
        compress_lanes(lanes, core::array::from_fn(|l| &outer_blocks[l]));
        let tags = core::array::from_fn(|l| digest(&core::array::from_fn(|i| lanes[i].0[l])));
        for x in lanes.iter_mut() {
            x.0.zeroize();
        }
        inner.zeroize();
        tags
    }

    /// The outer hash over the inner digest; the keyed working states are wiped.
    fn outer_tag(&self, inner: [u64; 8]) -> [u8; OUT] {
        let mut s = self.outer;
        compress512(&mut s, &[outer_block(&inner)]);
        let tag = digest(&s);
        s.zeroize();
        tag
    }
}

/// The padded end of an inner-hash message: its last partial block, `0x80`, zeros and
/// the 128-bit bit length (the key block included), in one or two blocks.
struct Tail {
    buf: [[u8; BLOCK]; 2],
    n: usize,
}

impl Tail {
    fn of(msg: &[u8]) -> Tail {
        let rest = msg.len() % BLOCK;
        let n = if rest + 1 + 16 <= BLOCK { 1 } else { 2 };
        let mut flat = [0u8; 2 * BLOCK];
        flat[..rest].copy_from_slice(&msg[msg.len() - rest..]);
        flat[rest] = 0x80;
        let bits = (BLOCK as u128 + msg.len() as u128) * 8;
        flat[n * BLOCK - 16..n * BLOCK].copy_from_slice(&bits.to_be_bytes());
        let (blocks, _) = flat.as_chunks::<BLOCK>();
        Tail {
            buf: [blocks[0], blocks[1]],
            n,
        }
    }

    fn blocks(&self) -> &[[u8; BLOCK]] {
        &self.buf[..self.n]
    }
}

/// The outer hash's only message block: the 48-byte inner digest, padded.
fn outer_block(inner: &[u64; 8]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..OUT].copy_from_slice(&digest(inner));
    b[OUT] = 0x80;
    b[BLOCK - 16..].copy_from_slice(&((BLOCK + OUT) as u128 * 8).to_be_bytes());
    b
}

/// SHA-384's output: the first six state words, big-endian.
fn digest(s: &[u64; 8]) -> [u8; OUT] {
    let mut d = [0u8; OUT];
    for (o, w) in d.chunks_exact_mut(8).zip(s) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    d
}

/// A SHA-512 word: `u64`, or one word in each of `N` lanes ([`Lane`]).
trait Word: Copy {
    fn splat(x: u64) -> Self;
    fn add(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn and(self, o: Self) -> Self;
    fn ror(self, n: u32) -> Self;
    fn shr(self, n: u32) -> Self;
}

impl Word for u64 {
    #[inline(always)]
    fn splat(x: u64) -> Self {
        x
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.wrapping_add(o)
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        self ^ o
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        self & o
    }
    #[inline(always)]
    fn ror(self, n: u32) -> Self {
        self.rotate_right(n)
    }
    #[inline(always)]
    fn shr(self, n: u32) -> Self {
        self >> n
    }
}

/// One SHA-512 word in each of `N` lanes; every operation is a loop over the lanes,
/// which LLVM vectorizes.
#[derive(Clone, Copy)]
struct Lane<const N: usize>([u64; N]);

impl<const N: usize> Lane<N> {
    #[inline(always)]
    fn map2(self, o: Self, f: impl Fn(u64, u64) -> u64) -> Self {
        let mut r = self.0;
        for (x, &y) in r.iter_mut().zip(&o.0) {
            *x = f(*x, y);
        }
        Lane(r)
    }

    #[inline(always)]
    fn shl(self, n: u32) -> Self {
        self.map2(self, |x, _| x << n)
    }
}

impl<const N: usize> Word for Lane<N> {
    #[inline(always)]
    fn splat(x: u64) -> Self {
        Lane([x; N])
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.map2(o, u64::wrapping_add)
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        self.map2(o, |x, y| x ^ y)
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        self.map2(o, |x, y| x & y)
    }
    #[inline(always)]
    fn ror(self, n: u32) -> Self {
        self.map2(self, |x, _| x.rotate_right(n))
    }
    #[inline(always)]
    fn shr(self, n: u32) -> Self {
        self.map2(self, |x, _| x >> n)
    }
}

/// One SHA-512 round (FIPS 180-4 §6.4.2) with `$wk` = W[t] + K[t]; the callers rotate
/// the names instead of moving the eight working variables. `$bc` carries `b ^ c` from
/// round to round: Maj(a, b, c) = ((a ^ b) & (b ^ c)) ^ b, and this round's `a ^ b` is
/// the next round's `b ^ c`.
macro_rules! round {
    ($bc:ident, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $wk:expr) => {
        let t1 = $h
            .add($wk)
            .add($f.xor($g).and($e).xor($g))
            .add($e.ror(14).xor($e.ror(18)).xor($e.ror(41)));
        let ab = $a.xor($b);
        let t2 = $a
            .ror(28)
            .xor($a.ror(34))
            .xor($a.ror(39))
            .add(ab.and($bc).xor($b));
        $bc = ab;
        $d = $d.add(t1);
        $h = t1.add(t2);
    };
}

/// Rounds `r..r + 8`, the schedule computed in the 16-word ring `$w`.
#[rustfmt::skip]
macro_rules! eight_rounds {
    ($bc:ident, $w:ident, $r:expr, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident) => {
        let r = $r;
        round!($bc, $a, $b, $c, $d, $e, $f, $g, $h, schedule(&mut $w, r).add(Word::splat(K[r])));
        round!($bc, $h, $a, $b, $c, $d, $e, $f, $g, schedule(&mut $w, r + 1).add(Word::splat(K[r + 1])));
        round!($bc, $g, $h, $a, $b, $c, $d, $e, $f, schedule(&mut $w, r + 2).add(Word::splat(K[r + 2])));
        round!($bc, $f, $g, $h, $a, $b, $c, $d, $e, schedule(&mut $w, r + 3).add(Word::splat(K[r + 3])));
        round!($bc, $e, $f, $g, $h, $a, $b, $c, $d, schedule(&mut $w, r + 4).add(Word::splat(K[r + 4])));
        round!($bc, $d, $e, $f, $g, $h, $a, $b, $c, schedule(&mut $w, r + 5).add(Word::splat(K[r + 5])));
        round!($bc, $c, $d, $e, $f, $g, $h, $a, $b, schedule(&mut $w, r + 6).add(Word::splat(K[r + 6])));
        round!($bc, $b, $c, $d, $e, $f, $g, $h, $a, schedule(&mut $w, r + 7).add(Word::splat(K[r + 7])));
    };
}

/// Message schedule word `t`, the words from 16 on computed in a 16-word ring.
///
/// Closures are not used on these paths unless trivially inlined: LLVM may outline
/// one, and an outlined function does not inherit the caller's target features.
#[inline(always)]
fn schedule<W: Word>(w: &mut [W; 16], t: usize) -> W {
    if t < 16 {
        return w[t];
    }
    let w15 = w[(t + 1) & 15];
    let w2 = w[(t + 14) & 15];
    let s0 = w15.ror(1).xor(w15.ror(8)).xor(w15.shr(7));
    let s1 = w2.ror(19).xor(w2.ror(61)).xor(w2.shr(6));
    let v = w[t & 15].add(s0).add(w[(t + 9) & 15]).add(s1);
    w[t & 15] = v;
    v
}

/// Message schedule words `t` and `t + 1` (`t` even, 16..80) for one message, two at a
/// time in one 128-bit vector (the most the recurrence allows: word `t + 2` needs word
/// `t`), into `wp` (the schedule as pairs: `wp[p]` = words `2p`, `2p + 1`) and, as
/// W + K, into `wk`. Both stay in memory: as a ring of eight vector registers the
/// schedule leaves too few registers for the rounds beside it (measured 2% slower).
///
/// σ0 and σ1 are spelled as shifts, the two left shifts xored together first: written as
/// rotations (or with a left shift next to its right shift, which LLVM turns back into
/// one) they are rotations of a two-lane vector, which AVX-512F alone cannot do, and
/// LLVM then computes most of the schedule in scalar registers (measured slower).
#[inline(always)]
fn schedule_pair(sc: &mut Scratch, t: usize) {
    let Scratch { k, w: wp, wk } = sc;
    let p = t / 2;
    let w15 = Lane([wp[p - 8].0[1], wp[p - 7].0[0]]);
    let w7 = Lane([wp[p - 4].0[1], wp[p - 3].0[0]]);
    let w2 = wp[p - 1];
    let s0 = w15
        .shr(1)
        .xor(w15.shr(7))
        .xor(w15.shr(8))
        .xor(w15.shl(63).xor(w15.shl(56)));
    let s1 = w2
        .shr(19)
        .xor(w2.shr(61))
        .xor(w2.shr(6))
        .xor(w2.shl(45).xor(w2.shl(3)));
    let v = wp[p - 8].add(s0).add(w7).add(s1);
    wp[p] = v;
    wk[t] = v.0[0].wrapping_add(k[t]);
    wk[t + 1] = v.0[1].wrapping_add(k[t + 1]);
}

/// Big-endian word `i` of a block.
#[inline(always)]
fn word(block: &[u8; BLOCK], i: usize) -> u64 {
    word_at(block, i * 8)
}

/// The big-endian word at byte `at` of `msg` (zero past its end).
#[inline(always)]
fn word_at(msg: &[u8], at: usize) -> u64 {
    let w = msg
        .get(at..)
        .and_then(|m| m.first_chunk::<8>())
        .copied()
        .unwrap_or_default();
    u64::from_be_bytes(w)
}

/// Work the caller interleaves with the SHA-512 rounds ([`MacKey::tag_interleaved`]).
pub(crate) trait Interleave {
    /// The first `n` bytes of the message, producing whatever is still missing.
    fn ensure(&mut self, n: usize) -> &[u8];
    /// Produces a little more of the message ahead of need (one AES block, say); called
    /// eight times per SHA-512 block, between groups of rounds.
    fn step(&mut self);
}

/// The SHA-512 compression function of message words `w`, with `work.step()` after
/// every group of eight rounds (ten per block: eight would keep up with a CBC chain,
/// the other two let it run ahead).
///
/// The schedule runs in vector registers ([`schedule_pair`]), one pair of words sixteen
/// rounds ahead of every two rounds, so the out-of-order core overlaps it with the
/// scalar rounds; the rounds read W + K from memory (`black_box` keeps the arrays
/// there: promoted to registers, LLVM moves the schedule back into scalar code). A loop
/// of sixteen rounds: within 3% of eighty unrolled ones (measured), in a fifth of the
/// code.
#[inline(always)]
#[allow(unused_assignments)] // the last round's `b ^ c` for a next round
fn compress_interleaved<I: Interleave>(
    state: &mut [u64; 8],
    w: &[u64; 16],
    sc: &mut Scratch,
    work: &mut I,
) {
    for (i, p) in sc.w.iter_mut().take(8).enumerate() {
        *p = Lane([w[2 * i], w[2 * i + 1]]);
    }
    for ((o, &v), &k) in sc.wk.iter_mut().zip(w).zip(&sc.k) {
        *o = v.wrapping_add(k);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    let mut bc = b ^ c;
    macro_rules! two_rounds {
        ($r:expr, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $ahead:expr) => {
            if $ahead {
                schedule_pair(sc, $r + 16);
            }
            round!(bc, $a, $b, $c, $d, $e, $f, $g, $h, sc.wk[$r]);
            round!(bc, $h, $a, $b, $c, $d, $e, $f, $g, sc.wk[$r + 1]);
        };
    }
    macro_rules! eight {
        ($r:expr, $ahead:expr) => {
            let r8 = $r;
            two_rounds!(r8, a, b, c, d, e, f, g, h, $ahead);
            two_rounds!(r8 + 2, g, h, a, b, c, d, e, f, $ahead);
            two_rounds!(r8 + 4, e, f, g, h, a, b, c, d, $ahead);
            two_rounds!(r8 + 6, c, d, e, f, g, h, a, b, $ahead);
        };
    }
    let mut r = 0;
    while r < 64 {
        eight!(r, true);
        work.step();
        eight!(r + 8, true);
        work.step();
        r += 16;
    }
    eight!(64, false);
    work.step();
    eight!(72, false);
    work.step();
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

/// The single-message compression's working memory ([`compress_interleaved`]): the
/// schedule as pairs, W + K, and a copy of K beside them. All three are on the stack
/// at fixed distances from each other; K read from its static table instead makes the
/// rounds' loads falsely depend on the schedule's stores whenever the stack happens to
/// sit a multiple of 4 KiB away (measured: 315-457 MB/s depending on stack depth).
struct Scratch {
    k: [u64; 80],
    w: [Lane<2>; 40],
    wk: [u64; 80],
}

/// The SHA-512 compression function on `N` lanes, lane `l` compressing `blocks[l]`.
/// A loop over the round groups: unrolled, the lanes vectorize worse and compile for
/// minutes.
#[inline(always)]
fn compress_lanes<const N: usize>(state: &mut [Lane<N>; 8], blocks: [&[u8; BLOCK]; N]) {
    let mut w: [Lane<N>; 16] = core::array::from_fn(|i| Lane(blocks.map(|b| word(b, i))));
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    let mut bc = b.xor(c);
    for r in (0..80).step_by(8) {
        eight_rounds!(bc, w, r, a, b, c, d, e, f, g, h);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.add(v);
    }
    for x in &mut w {
        x.0.zeroize();
    }
}

/// Which SHA-512 compression the known-answer hook runs (`sha2_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// RustCrypto `sha2`'s compression, as `MacKey::tag` (`open`) uses it.
    Single,
    /// Our rounds with the producer between round groups (`MacKey::tag_interleaved`,
    /// `seal`), the producer doing nothing here.
    Stitched,
    /// Our eight-lane rounds (`MacKey::tag_lanes`, `seal_batch`).
    Lanes,
}

/// SHA-512 / SHA-384 initial states (FIPS 180-4 §5.3.5, §5.3.4).
const IV512: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// FIPS 180-4 padding of a whole message: its blocks, `0x80`, zeros, the 128-bit length.
fn padded(msg: &[u8]) -> Vec<[u8; BLOCK]> {
    let mut v = msg.to_vec();
    v.push(0x80);
    while v.len() % BLOCK != BLOCK - 16 {
        v.push(0);
    }
    v.extend_from_slice(&(msg.len() as u128 * 8).to_be_bytes());
    let (blocks, _) = v.as_chunks::<BLOCK>();
    blocks.to_vec()
}

struct NoWork<'a>(&'a [u8]);

impl Interleave for NoWork<'_> {
    fn ensure(&mut self, n: usize) -> &[u8] {
        &self.0[..n.min(self.0.len())]
    }
    fn step(&mut self) {}
}

/// Known-answer hook (not a stable API): SHA-512 (`sha384 == false`) or SHA-384 of each
/// message through one compression `path`. With [`Path::Lanes`] up to eight messages go
/// through the lanes side by side, each in its own lane (a lane whose message has ended
/// compresses a dummy block whose result is dropped).
pub fn sha2_family(path: Path, sha384: bool, msgs: &[&[u8]]) -> Vec<Vec<u8>> {
    let iv = if sha384 { IV384 } else { IV512 };
    let out = if sha384 { OUT } else { 64 };
    let finish =
        |s: &[u64; 8]| -> Vec<u8> { s.iter().flat_map(|w| w.to_be_bytes()).take(out).collect() };
    match path {
        Path::Single | Path::Stitched => msgs
            .iter()
            .map(|m| {
                let mut s = iv;
                let blocks = padded(m);
                if path == Path::Single {
                    compress512(&mut s, &blocks);
                } else {
                    let mut sc = Scratch {
                        k: K,
                        w: [Lane([0; 2]); 40],
                        wk: [0; 80],
                    };
                    let flat: Vec<u8> = blocks.concat();
                    let mut work = NoWork(&flat);
                    for b in &blocks {
                        let w: [u64; 16] = core::array::from_fn(|i| word(b, i));
                        compress_interleaved(&mut s, &w, &mut sc, &mut work);
                    }
                }
                finish(&s)
            })
            .collect(),
        Path::Lanes => msgs
            .chunks(WAYS)
            .flat_map(|group| {
                let blocks: Vec<Vec<[u8; BLOCK]>> = group.iter().map(|m| padded(m)).collect();
                let most = blocks.iter().map(Vec::len).max().unwrap_or(0);
                let mut state: [Lane<WAYS>; 8] = core::array::from_fn(|i| Lane([iv[i]; WAYS]));
                let mut done = vec![[0u64; 8]; group.len()];
                let dummy = [0u8; BLOCK];
                for k in 0..most {
                    let bl: [&[u8; BLOCK]; WAYS] = core::array::from_fn(|l| {
                        blocks.get(l).and_then(|b| b.get(k)).unwrap_or(&dummy)
                    });
                    compress_lanes(&mut state, bl);
                    for (l, b) in blocks.iter().enumerate() {
                        if b.len() == k + 1 {
                            done[l] = core::array::from_fn(|i| state[i].0[l]);
                        }
                    }
                }
                done.iter().map(finish).collect::<Vec<_>>()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::hmac;

    fn oracle(key: &[u8], msg: &[u8]) -> [u8; OUT] {
        let t = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA384, key), msg);
        let mut o = [0u8; OUT];
        o.copy_from_slice(t.as_ref());
        o
    }

    #[test]
    fn every_length_around_the_padding_boundaries_matches_ring() {
        let key = MacKey::new(&[0x0b; 48]);
        let msg: Vec<u8> = (0..600u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..msg.len() {
            let m = &msg[..len];
            assert_eq!(key.tag(m), oracle(&[0x0b; 48], m), "len {len}");
        }
        // Lanes whose lengths straddle one- and two-block tails and differ in block
        // count.
        for base in [0usize, 100, 110, 111, 112, 127, 128, 239, 240, 256, 400] {
            let m: [&[u8]; WAYS] = core::array::from_fn(|l| &msg[..base + l * 9]);
            let got = key.tag_lanes(m);
            for l in 0..WAYS {
                assert_eq!(got[l], oracle(&[0x0b; 48], m[l]), "base {base} lane {l}");
            }
        }
    }

    proptest! {
        #[test]
        fn tag_and_tag_lanes_match_ring(
            key in proptest::collection::vec(any::<u8>(), 0..300),
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), WAYS),
        ) {
            let k = MacKey::new(&key);
            let m: [&[u8]; WAYS] = core::array::from_fn(|l| &msgs[l][..]);
            let wide = k.tag_lanes(m);
            for l in 0..WAYS {
                let want = oracle(&key, m[l]);
                prop_assert_eq!(k.tag(m[l]), want);
                prop_assert_eq!(wide[l], want);
            }
        }
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", MacKey::new(b"k")), "MacKey([redacted])");
    }
}
