//! Key exchange: FFDH over RFC 3526 group 16, ECDH P-256, and ML-KEM-768 hybrids,
//! combined with HKDF-SHA-384 over all shared secrets and the transcript hash, and
//! authenticated by P-256 ECDSA signatures with the peers' certificate keys.
//!
//! # Protocol (two messages)
//!
//! ```text
//! initiator -> responder: Hello { alg, salt_i, share_i [, mlkem_ek], sig_i }
//! responder -> initiator: Reply { alg, salt_r, share_r [, mlkem_ct], sig_r }
//! ```
//! `sig_i` signs `"svr-kex-hello" | cn_i | cn_r | nonce_r | hello-without-signature`;
//! `sig_r` signs `"svr-kex-reply" | SHA-384(cn_i | cn_r | nonce_r | hello) | reply-without-signature`
//! (each field u16-length-prefixed). `nonce_r` is the responder's freshness nonce
//! (`peer::Control::KexRequest`): a hello signed for an older nonce does not verify.
//! The keys are `HKDF-SHA-384(salt = salt_i | salt_r, ikm = dh_ss | mlkem_ss,
//! info = "svr peer key v1" | SHA-384(transcript))`,
//! expanded into two directional packet keys. Each side's fresh salt and ephemeral
//! share give forward secrecy.

use std::sync::OnceLock;

use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U512, U4096};
use hkdf::Hkdf;
use ml_kem::{
    MlKem768,
    kem::{Decapsulate, Encapsulate, Kem, KeyExport, TryKeyInit},
};
use p256::ecdsa::{
    Signature, SigningKey, VerifyingKey,
    signature::{Signer, Verifier},
};
use rand_core::CryptoRng;
use sha2::{Digest, Sha384};
use zeroize::Zeroize;

use crate::Error;
use crate::secret::{PacketKeyMaterial, SecretBytes};

/// RFC 3526 group 16 (4096-bit MODP) prime, generator 2.
pub const MODP4096_P_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D788719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA993B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF";
/// FFDH public value / shared secret length in bytes.
pub const FFDH_LEN: usize = 512;
/// Bits of the FFDH private exponent: 325, the short exponent RFC 7919 gives for
/// 4096-bit groups (twice the group's ~152-bit strength, rounded up), as OpenSSL uses.
pub const FFDH_EXP_BITS: u32 = 325;

fn modp_params() -> &'static FixedMontyParams<{ U4096::LIMBS }> {
    static P: OnceLock<FixedMontyParams<{ U4096::LIMBS }>> = OnceLock::new();
    P.get_or_init(|| {
        let p = U4096::from_be_hex(MODP4096_P_HEX);
        FixedMontyParams::new_vartime(Odd::new(p).expect("the RFC 3526 prime is odd"))
    })
}

/// The group prime p.
pub fn modp_prime() -> U4096 {
    U4096::from_be_hex(MODP4096_P_HEX)
}

/// An FFDH private exponent (zeroized on drop) and the public bound on its length.
pub struct FfdhPrivate(U512, u32);

impl core::fmt::Debug for FfdhPrivate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("[redacted]")
    }
}
impl Drop for FfdhPrivate {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl FfdhPrivate {
    /// A fresh random exponent of exactly [`FFDH_EXP_BITS`] bits (top bit set).
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut b = [0u8; 64];
        rng.fill_bytes(&mut b);
        // Keep the low 325 bits: byte 64-41 = 23 holds bits 320..327.
        let top = 64 - (FFDH_EXP_BITS as usize).div_ceil(8);
        b[..top].fill(0);
        let rem = FFDH_EXP_BITS % 8; // 5 bits used in the top byte
        b[top] &= (1u8 << rem) - 1;
        b[top] |= 1u8 << (rem - 1);
        let x = U512::from_be_slice(&b);
        b.zeroize();
        Self(x, FFDH_EXP_BITS)
    }

    fn pow(&self, base: &FixedMontyForm<{ U4096::LIMBS }>) -> U4096 {
        let mut e: U4096 = self.0.resize();
        let r = base.pow_amm_bounded_exp(&e, self.1).retrieve();
        e.zeroize();
        r
    }

    /// From 64 big-endian bytes (tests, interop). Rejects exponents under 325 bits.
    pub fn from_be_bytes(b: &[u8; 64]) -> Result<Self, Error> {
        let x = U512::from_be_slice(b);
        if x.bits() < 325 {
            return Err(Error::Config {
                name: "ffdh exponent bits",
                value: u64::from(x.bits()),
            });
        }
        Ok(Self(x, 512))
    }

    /// g^x mod p, 512 big-endian bytes. Constant time in the exponent.
    pub fn public(&self) -> [u8; FFDH_LEN] {
        let g = FixedMontyForm::new(&U4096::from_u8(2), modp_params());
        to_be(&self.pow(&g))
    }

    /// y^x mod p after checking y ([`ffdh_check_public`]).
    pub fn derive(&self, peer_public: &[u8]) -> Result<SecretBytes<FFDH_LEN>, Error> {
        let y = ffdh_check_public(peer_public)?;
        let y = FixedMontyForm::new(&y, modp_params());
        let mut z = self.pow(&y);
        let out = SecretBytes::from_bytes(to_be(&z));
        z.zeroize();
        Ok(out)
    }
}

fn to_be(x: &U4096) -> [u8; FFDH_LEN] {
    let mut out = [0u8; FFDH_LEN];
    for (i, limb) in x.as_words().iter().rev().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_be_bytes());
    }
    out
}

/// Checks a peer's FFDH public value: exactly 512 bytes, 1 < y < p-1, and y in the
/// prime-order subgroup of order q = (p-1)/2. As p is a safe prime, y^q == 1 exactly when
/// the Legendre symbol (y|p) is 1 (Euler's criterion); we compute the symbol (variable
/// time, y is public), which costs far less than a 4096-bit exponentiation. The test
/// suite checks both agree.
pub fn ffdh_check_public(bytes: &[u8]) -> Result<U4096, Error> {
    const ALG: &str = "ffdh4096";
    if bytes.len() != FFDH_LEN {
        return Err(Error::InvalidPublicValue {
            alg: ALG,
            reason: "length is not 512 bytes",
        });
    }
    let y = U4096::from_be_slice(bytes);
    let p = modp_prime();
    let pm1 = p.wrapping_sub(&U4096::ONE);
    if y <= U4096::ONE || y >= pm1 {
        return Err(Error::InvalidPublicValue {
            alg: ALG,
            reason: "not in (1, p-1)",
        });
    }
    if jacobi_vartime(y.as_words(), p.as_words()) != 1 {
        return Err(Error::InvalidPublicValue {
            alg: ALG,
            reason: "not in the order-q subgroup",
        });
    }
    Ok(y)
}

/// The Jacobi symbol (a | n) for odd n > 0 (limbs little-endian), as -1, 0 or 1.
///
/// Variable time: only ever called on public values. Binary algorithm on whole limbs
/// (Cohen, *A Course in Computational Algebraic Number Theory*, alg. 1.4.10, with
/// subtraction instead of division): strip factors of two from `a` (each flips the sign
/// when n ≡ ±3 mod 8), make `a ≥ n` by swapping (reciprocity: flip when a ≡ n ≡ 3 mod 4),
/// subtract. The operands shrink from the top, so the work is on ever fewer limbs.
pub fn jacobi_vartime(a: &[u64], n: &[u64]) -> i8 {
    let len = a.len().max(n.len());
    let mut x = vec![0u64; len];
    let mut m = vec![0u64; len];
    x[..a.len()].copy_from_slice(a);
    m[..n.len()].copy_from_slice(n);
    let (mut lx, mut lm) = (limbs_len(&x), limbs_len(&m));
    if lm == 0 || m[0] & 1 == 0 {
        return 0; // not defined for even n; callers pass an odd prime
    }
    let mut neg = false;
    // (2|m) = -1 exactly when m ≡ 3, 5 (mod 8).
    let two_flips = |tz: u32, m: &[u64]| tz & 1 == 1 && matches!(m[0] & 7, 3 | 5);
    if lx == 0 {
        return i8::from(lm == 1 && m[0] == 1); // (0|1) = 1, else gcd = n > 1
    }
    let tz = shr_trailing_zeros(&mut x[..lx]);
    neg ^= two_flips(tz, &m);
    lx = limbs_len(&x[..lx]);
    // Invariant: x and m odd and positive.
    loop {
        if lm == 1 && m[0] == 1 {
            return if neg { -1 } else { 1 };
        }
        match cmp_limbs(&x[..lx], &m[..lm]) {
            // gcd(a, n) = x = m > 1.
            core::cmp::Ordering::Equal => return 0,
            core::cmp::Ordering::Less => {
                // (x|m) = (m|x), negated when both are 3 mod 4.
                core::mem::swap(&mut x, &mut m);
                core::mem::swap(&mut lx, &mut lm);
                neg ^= x[0] & m[0] & 2 != 0;
            }
            core::cmp::Ordering::Greater => {}
        }
        // x > m: (x|m) = (x-m|m), then strip the factors of two of x - m.
        let tz = sub_shr(&mut x[..lx], &m[..lm]);
        neg ^= two_flips(tz, &m);
        lx = limbs_len(&x[..lx]);
    }
}

/// x = (x - m) >> tz for odd x > m (`m.len() <= x.len()`), tz the trailing zeros of
/// x - m, returned. One pass in the common case where the low limb of x - m is nonzero.
fn sub_shr(x: &mut [u64], m: &[u64]) -> u32 {
    let (d0, b0) = x[0].overflowing_sub(m[0]);
    if d0 == 0 {
        sub_assign_limbs(x, m);
        return shr_trailing_zeros(x);
    }
    let s = d0.trailing_zeros(); // 1..=63: d0 is even and nonzero
    let mut borrow = u64::from(b0);
    let mut prev = d0;
    let lx = x.len();
    for i in 1..lx {
        let mi = m.get(i).copied().unwrap_or(0);
        let (d, b1) = x[i].overflowing_sub(mi);
        let (d, b2) = d.overflowing_sub(borrow);
        borrow = u64::from(b1 | b2);
        x[i - 1] = (prev >> s) | (d << (64 - s));
        prev = d;
    }
    x[lx - 1] = prev >> s;
    s
}

fn limbs_len(x: &[u64]) -> usize {
    x.iter().rposition(|&w| w != 0).map_or(0, |i| i + 1)
}

fn cmp_limbs(a: &[u64], b: &[u64]) -> core::cmp::Ordering {
    // Both trimmed: a longer operand is larger.
    a.len()
        .cmp(&b.len())
        .then_with(|| a.iter().rev().cmp(b.iter().rev()))
}

/// a -= b for a ≥ b (`b.len() <= a.len()`).
fn sub_assign_limbs(a: &mut [u64], b: &[u64]) {
    let mut borrow = false;
    for (i, ai) in a.iter_mut().enumerate() {
        let bi = b.get(i).copied().unwrap_or(0);
        if i >= b.len() && !borrow {
            break;
        }
        let (d, b1) = ai.overflowing_sub(bi);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        *ai = d;
        borrow = b1 | b2;
    }
}

/// Shifts a nonzero `x` right by its number of trailing zero bits, which it returns.
fn shr_trailing_zeros(x: &mut [u64]) -> u32 {
    let words = x.iter().position(|&w| w != 0).unwrap_or(x.len());
    if words == x.len() {
        return 0;
    }
    let bits = x[words].trailing_zeros();
    let n = x.len();
    if bits == 0 {
        x.copy_within(words.., 0);
    } else {
        for i in 0..n - words {
            let hi = if i + words + 1 < n {
                x[i + words + 1]
            } else {
                0
            };
            x[i] = (x[i + words] >> bits) | (hi << (64 - bits));
        }
    }
    x[n - words..].fill(0);
    words as u32 * 64 + bits
}

/// y^q mod p (vartime; y public): the textbook subgroup test, kept for tests.
pub fn ffdh_subgroup_power(y: &U4096) -> U4096 {
    let q = modp_prime().wrapping_sub(&U4096::ONE).shr_vartime(1);
    FixedMontyForm::new(y, modp_params())
        .pow_vartime(&q)
        .retrieve()
}

/// ECDH P-256: derive the x-coordinate shared secret from an uncompressed/compressed SEC1 point.
pub fn ecdh_derive(
    secret: &p256::ecdh::EphemeralSecret,
    peer_sec1: &[u8],
) -> Result<SecretBytes<32>, Error> {
    let pk =
        p256::PublicKey::from_sec1_bytes(peer_sec1).map_err(|_| Error::InvalidPublicValue {
            alg: "ecdh-p256",
            reason: "not a curve point",
        })?;
    let ss = secret.diffie_hellman(&pk);
    SecretBytes::from_slice(ss.raw_secret_bytes())
}

/// `key-exchange-algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KexAlgorithm {
    /// FFDH, RFC 3526 group 16.
    Ffdh4096,
    /// ECDH on P-256.
    EcdhP256,
    /// ML-KEM-768 + FFDH-4096.
    MlKem768Ffdh4096,
    /// ML-KEM-768 + ECDH P-256.
    MlKem768EcdhP256,
}

impl KexAlgorithm {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Ffdh4096 => 1,
            Self::EcdhP256 => 2,
            Self::MlKem768Ffdh4096 => 3,
            Self::MlKem768EcdhP256 => 4,
        }
    }
    /// From wire code.
    pub fn from_code(c: u8) -> Result<Self, Error> {
        Ok(match c {
            1 => Self::Ffdh4096,
            2 => Self::EcdhP256,
            3 => Self::MlKem768Ffdh4096,
            4 => Self::MlKem768EcdhP256,
            _ => {
                return Err(Error::Malformed {
                    what: "kex message",
                    reason: "unknown algorithm",
                });
            }
        })
    }
    fn hybrid(self) -> bool {
        matches!(self, Self::MlKem768Ffdh4096 | Self::MlKem768EcdhP256)
    }
    fn ffdh(self) -> bool {
        matches!(self, Self::Ffdh4096 | Self::MlKem768Ffdh4096)
    }
    /// Configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ffdh4096 => "ffdh4096",
            Self::EcdhP256 => "ecdh-p256",
            Self::MlKem768Ffdh4096 => "mlkem768-ffdh4096",
            Self::MlKem768EcdhP256 => "mlkem768-ecdh-p256",
        }
    }
    /// Parse a configuration name.
    pub fn from_name(s: &str) -> Option<Self> {
        [
            Self::Ffdh4096,
            Self::EcdhP256,
            Self::MlKem768Ffdh4096,
            Self::MlKem768EcdhP256,
        ]
        .into_iter()
        .find(|a| a.name() == s)
    }
}

/// What a [`PeerAuthenticator`] vouches for: the peer's verified certificate key and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedPeer {
    /// Common name from the peer certificate (must equal the configured peering-common-name).
    pub common_name: String,
    /// The certificate's P-256 public key, used to verify the exchange signatures.
    pub public_key: VerifyingKey,
}

/// Peer certificate validation, provided by the PKI layer (ssr-pki) at run time.
/// Kept as a trait so this crate stays pure.
pub trait PeerAuthenticator {
    /// Validates a peer certificate (DER) at Unix time `now_unix`.
    fn authenticate(&self, cert_der: &[u8], now_unix: u64) -> Result<AuthenticatedPeer, Error>;
}

/// The two directional packet keys produced by an exchange, with the peer key id.
#[derive(Debug)]
pub struct PeerKeys {
    /// Key for initiator → responder traffic.
    pub i2r: PacketKeyMaterial,
    /// Key for responder → initiator traffic.
    pub r2i: PacketKeyMaterial,
    /// Transcript hash (public), identifies the exchange.
    pub transcript: [u8; 48],
}

enum Classical {
    Ffdh(FfdhPrivate),
    Ecdh(p256::ecdh::EphemeralSecret),
}

impl Classical {
    fn new<R: CryptoRng>(alg: KexAlgorithm, rng: &mut R) -> (Self, Vec<u8>) {
        if alg.ffdh() {
            let x = FfdhPrivate::random(rng);
            let y = x.public().to_vec();
            (Self::Ffdh(x), y)
        } else {
            let s =
                <p256::ecdh::EphemeralSecret as p256::elliptic_curve::Generate>::generate_from_rng(
                    rng,
                );
            let pk = s.public_key().to_sec1_bytes().to_vec();
            (Self::Ecdh(s), pk)
        }
    }
    fn derive(&self, peer: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(match self {
            Self::Ffdh(x) => x.derive(peer)?.secret_bytes().to_vec(),
            Self::Ecdh(s) => ecdh_derive(s, peer)?.secret_bytes().to_vec(),
        })
    }
}

/// Exchange message (hello or reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KexMessage {
    /// Algorithm.
    pub alg: KexAlgorithm,
    /// Sender's salt (public, 8 bytes: shown by `show peers security`).
    pub salt: u64,
    /// Classical public share.
    pub share: Vec<u8>,
    /// ML-KEM encapsulation key (hello) or ciphertext (reply); empty when not hybrid.
    pub kem: Vec<u8>,
    /// DER-free fixed 64-byte ECDSA P-256 signature.
    pub signature: Vec<u8>,
}

const MSG_VERSION: u8 = 1;

impl KexMessage {
    /// Encodes: version u8 | alg u8 | salt u64 | share_len u16 | share | kem_len u16 | kem | sig (64).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.share.len() + self.kem.len() + 64);
        v.push(MSG_VERSION);
        v.push(self.alg.code());
        v.extend_from_slice(&self.salt.to_be_bytes());
        v.extend_from_slice(&(self.share.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.share);
        v.extend_from_slice(&(self.kem.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.kem);
        v.extend_from_slice(&self.signature);
        v
    }
    /// Strict decoder (version 1 only, exact length).
    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        const W: &str = "kex message";
        let mal = |reason| Error::Malformed { what: W, reason };
        let mut r = crate::tlv::Reader::new(b);
        if r.u8().ok_or(mal("short"))? != MSG_VERSION {
            return Err(mal("unknown version"));
        }
        let alg = KexAlgorithm::from_code(r.u8().ok_or(mal("short"))?)?;
        let salt = r.u64().ok_or(mal("short"))?;
        let n = usize::from(r.u16().ok_or(mal("short"))?);
        let share = r.take(n).ok_or(mal("short share"))?.to_vec();
        let n = usize::from(r.u16().ok_or(mal("short"))?);
        let kem = r.take(n).ok_or(mal("short kem"))?.to_vec();
        let signature = r.take(64).ok_or(mal("short signature"))?.to_vec();
        if !r.is_empty() {
            return Err(mal("trailing bytes"));
        }
        Ok(Self {
            alg,
            salt,
            share,
            kem,
            signature,
        })
    }
    fn signed_part(&self, label: &[u8], ctx: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(label);
        m.extend_from_slice(ctx);
        let mut e = self.encode();
        e.truncate(e.len() - self.signature.len());
        m.extend_from_slice(&e);
        m
    }
}

/// What both signatures and the transcript cover besides the messages: both common
/// names and the responder's freshness nonce (empty when none is used).
fn names_ctx(cn_i: &str, cn_r: &str, freshness: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in [cn_i.as_bytes(), cn_r.as_bytes(), freshness] {
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v.extend_from_slice(s);
    }
    v
}

/// What signs this router's key exchange messages (hello and reply): the private key
/// of the certificate it sends its peers. ECDSA P-256 over SHA-256 of the message; the
/// 64-byte `r || s` goes on the wire as it is.
///
/// Implemented for a software `p256::ecdsa::SigningKey` here and, with feature `pki`,
/// for every `ssr_pki::keys::RouterKey` through [`crate::pki::RouterKeySigner`] (the
/// TPM-held router key with ssr-pki's feature `tpm`, enabled here by feature `tpm`).
pub trait KexSigner {
    /// Signs `msg`: ECDSA P-256, SHA-256, `r || s`. An error (a TPM that does not
    /// answer) fails the exchange being started or answered; nothing is sent.
    fn sign_kex(&self, msg: &[u8]) -> Result<[u8; 64], Error>;
}

impl KexSigner for SigningKey {
    fn sign_kex(&self, msg: &[u8]) -> Result<[u8; 64], Error> {
        let sig: Signature = self.sign(msg);
        Ok(sig.to_bytes().into())
    }
}

fn sign(key: &(impl KexSigner + ?Sized), msg: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(key.sign_kex(msg)?.to_vec())
}

fn verify(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> Result<(), Error> {
    let sig = Signature::from_slice(sig).map_err(|_| Error::Unauthenticated)?;
    key.verify(msg, &sig).map_err(|_| Error::Unauthenticated)
}

fn combine(secrets: &[&[u8]], salt_i: u64, salt_r: u64, transcript: &[u8; 48]) -> PeerKeys {
    let mut salt = [0u8; 16];
    salt[..8].copy_from_slice(&salt_i.to_be_bytes());
    salt[8..].copy_from_slice(&salt_r.to_be_bytes());
    let mut ikm = Vec::new();
    for s in secrets {
        ikm.extend_from_slice(s);
    }
    let hk = Hkdf::<Sha384>::new(Some(&salt), &ikm);
    ikm.zeroize();
    let mut okm = [0u8; 160];
    let mut info = b"svr peer key v1".to_vec();
    info.extend_from_slice(transcript);
    // 160 bytes ≤ 255 × 48: expand cannot fail.
    let _ = hk.expand(&info, &mut okm);
    let mut a = [0u8; 80];
    let mut b = [0u8; 80];
    a.copy_from_slice(&okm[..80]);
    b.copy_from_slice(&okm[80..]);
    okm.zeroize();
    PeerKeys {
        i2r: SecretBytes::from_bytes(a),
        r2i: SecretBytes::from_bytes(b),
        transcript: *transcript,
    }
}

/// Initiator side of an exchange in progress.
pub struct Initiator {
    hello: KexMessage,
    classical: Classical,
    dk: Option<ml_kem::DecapsulationKey<MlKem768>>,
    ctx: Vec<u8>,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Initiator")
            .field("alg", &self.hello.alg)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts an exchange: returns the state and the signed hello. Fails only if
    /// `my_key` cannot sign.
    pub fn start<R: CryptoRng>(
        alg: KexAlgorithm,
        my_key: &(impl KexSigner + ?Sized),
        my_cn: &str,
        peer_cn: &str,
        freshness: &[u8],
        rng: &mut R,
    ) -> Result<(Self, KexMessage), Error> {
        let (classical, share) = Classical::new(alg, rng);
        let (dk, kem) = if alg.hybrid() {
            let (dk, ek) = MlKem768::generate_keypair_from_rng(rng);
            (Some(dk), ek.to_bytes().to_vec())
        } else {
            (None, Vec::new())
        };
        let mut hello = KexMessage {
            alg,
            salt: rng.next_u64(),
            share,
            kem,
            signature: Vec::new(),
        };
        let ctx = names_ctx(my_cn, peer_cn, freshness);
        hello.signature = sign(my_key, &hello.signed_part(b"svr-kex-hello", &ctx))?;
        Ok((
            Self {
                hello: hello.clone(),
                classical,
                dk,
                ctx,
            },
            hello,
        ))
    }

    /// The hello sent.
    pub fn hello(&self) -> &KexMessage {
        &self.hello
    }

    /// Completes with the responder's reply, verified against the peer's certificate key.
    pub fn finish(&self, reply: &KexMessage, peer: &AuthenticatedPeer) -> Result<PeerKeys, Error> {
        if reply.alg != self.hello.alg {
            return Err(Error::Unauthenticated);
        }
        let th = transcript_hash(&self.hello, &self.ctx);
        verify(
            &peer.public_key,
            &reply.signed_part(b"svr-kex-reply", &th),
            &reply.signature,
        )?;
        let dh = self.classical.derive(&reply.share)?;
        let mut kem_ss = Vec::new();
        if let Some(dk) = &self.dk {
            let ss = dk
                .decapsulate_slice(&reply.kem)
                .map_err(|_| Error::Unauthenticated)?;
            kem_ss = ss.to_vec();
        }
        let full = full_transcript(&th, reply);
        let keys = combine(&[&dh, &kem_ss], self.hello.salt, reply.salt, &full);
        Ok(keys)
    }
}

fn transcript_hash(hello: &KexMessage, ctx: &[u8]) -> Vec<u8> {
    let mut h = Sha384::new();
    h.update(ctx);
    h.update(hello.encode());
    h.finalize().to_vec()
}

fn full_transcript(th: &[u8], reply: &KexMessage) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(th);
    h.update(reply.encode());
    let mut out = [0u8; 48];
    out.copy_from_slice(&h.finalize());
    out
}

/// Responder: verifies a hello and answers it, returning the reply and the keys.
pub fn respond<R: CryptoRng>(
    hello: &KexMessage,
    peer: &AuthenticatedPeer,
    my_key: &(impl KexSigner + ?Sized),
    my_cn: &str,
    freshness: &[u8],
    rng: &mut R,
) -> Result<(KexMessage, PeerKeys), Error> {
    let ctx = names_ctx(&peer.common_name, my_cn, freshness);
    verify(
        &peer.public_key,
        &hello.signed_part(b"svr-kex-hello", &ctx),
        &hello.signature,
    )?;
    let alg = hello.alg;
    let (classical, share) = Classical::new(alg, rng);
    let dh = classical.derive(&hello.share)?;
    let (kem, kem_ss) = if alg.hybrid() {
        let ek =
            ml_kem::EncapsulationKey::<MlKem768>::new_from_slice(&hello.kem).map_err(|_| {
                Error::InvalidPublicValue {
                    alg: "ml-kem-768",
                    reason: "bad encapsulation key",
                }
            })?;
        let (ct, ss) = ek.encapsulate_with_rng(rng);
        (ct.to_vec(), ss.to_vec())
    } else {
        (Vec::new(), Vec::new())
    };
    let mut reply = KexMessage {
        alg,
        salt: rng.next_u64(),
        share,
        kem,
        signature: Vec::new(),
    };
    let th = transcript_hash(hello, &ctx);
    reply.signature = sign(my_key, &reply.signed_part(b"svr-kex-reply", &th))?;
    let full = full_transcript(&th, &reply);
    let keys = combine(&[&dh, &kem_ss], hello.salt, reply.salt, &full);
    Ok((reply, keys))
}

/// A [`PeerAuthenticator`] over a fixed table of accepted certificates (exact bytes).
/// Used by tests, the simulator and the loopback example until ssr-pki provides chain
/// validation; a certificate can be marked revoked to exercise fail-soft / fail-hard.
#[derive(Debug, Default, Clone)]
pub struct StaticAuthenticator {
    entries: Vec<(Vec<u8>, AuthenticatedPeer, bool)>,
}

impl StaticAuthenticator {
    /// An empty table (rejects everything).
    pub fn new() -> Self {
        Self::default()
    }
    /// Trusts `cert` as `common_name` with `public_key`.
    pub fn trust(&mut self, cert: &[u8], common_name: &str, public_key: VerifyingKey) {
        self.entries.push((
            cert.to_vec(),
            AuthenticatedPeer {
                common_name: common_name.to_owned(),
                public_key,
            },
            false,
        ));
    }
    /// Marks a trusted certificate as revoked.
    pub fn revoke(&mut self, cert: &[u8]) {
        for e in &mut self.entries {
            if e.0 == cert {
                e.2 = true;
            }
        }
    }
}

impl PeerAuthenticator for StaticAuthenticator {
    fn authenticate(&self, cert_der: &[u8], _now_unix: u64) -> Result<AuthenticatedPeer, Error> {
        match self.entries.iter().find(|e| e.0 == cert_der) {
            Some((_, _, true)) => Err(Error::PeerCertificate {
                reason: "revoked".into(),
            }),
            Some((_, p, false)) => Ok(p.clone()),
            None => Err(Error::PeerCertificate {
                reason: "unknown certificate".into(),
            }),
        }
    }
}

impl<T: PeerAuthenticator + ?Sized> PeerAuthenticator for &T {
    fn authenticate(&self, cert_der: &[u8], now_unix: u64) -> Result<AuthenticatedPeer, Error> {
        (**self).authenticate(cert_der, now_unix)
    }
}

/// Entry points for known-answer and interop tests (not a stable API).
#[doc(hidden)]
pub mod kat {
    use super::*;

    /// The HKDF-SHA-384 combination used by the exchange (160 bytes: i2r | r2i).
    pub fn combine_secrets(
        secrets: &[&[u8]],
        salt_i: u64,
        salt_r: u64,
        transcript: &[u8; 48],
    ) -> [u8; 160] {
        let k = combine(secrets, salt_i, salt_r, transcript);
        let mut out = [0u8; 160];
        out[..80].copy_from_slice(k.i2r.secret_bytes());
        out[80..].copy_from_slice(k.r2i.secret_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_bigint::{JacobiSymbol, Random};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn oracle(a: &U4096, n: &U4096) -> i8 {
        match a.jacobi_symbol_vartime(&Odd::new(*n).expect("odd")) {
            JacobiSymbol::Zero => 0,
            JacobiSymbol::One => 1,
            JacobiSymbol::MinusOne => -1,
        }
    }

    fn random_bits(rng: &mut StdRng, bits: u32) -> U4096 {
        let x = U4096::random_from_rng(rng);
        x.shr_vartime(4096 - bits)
    }

    #[test]
    fn jacobi_matches_crypto_bigint_on_all_sizes() {
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..100u32 {
            let nbits = 1 + rng.random_range(0..4096u32);
            let n = random_bits(&mut rng, nbits) | U4096::ONE;
            // a below, around and above n, sometimes sharing a factor with it.
            let a = match round % 4 {
                0 => random_bits(&mut rng, nbits),
                1 => {
                    let bits = 1 + rng.random_range(0..4096u32);
                    random_bits(&mut rng, bits)
                }
                2 => n
                    .wrapping_mul(&U4096::from_u8(3))
                    .wrapping_add(&U4096::from_u8(3)),
                _ => n.wrapping_mul(&U4096::from_u64(rng.random())),
            };
            assert_eq!(
                jacobi_vartime(a.as_words(), n.as_words()),
                oracle(&a, &n),
                "round {round}"
            );
        }
        for n in (1u64..200).step_by(2) {
            for a in 0..2 * n + 3 {
                let (au, nu) = (U4096::from_u64(a), U4096::from_u64(n));
                assert_eq!(jacobi_vartime(&[a], &[n]), oracle(&au, &nu), "({a}|{n})");
            }
        }
    }

    #[test]
    fn legendre_mod_p_agrees_with_euler_criterion() {
        let p = modp_prime();
        let mut rng = StdRng::seed_from_u64(11);
        let (mut residues, mut non_residues) = (0, 0);
        let mut check = |y: U4096| {
            let euler = ffdh_subgroup_power(&y) == U4096::ONE;
            let l = jacobi_vartime(y.as_words(), p.as_words());
            assert_eq!(l, if euler { 1 } else { -1 });
            assert_eq!(l, oracle(&y, &p));
            if euler {
                residues += 1
            } else {
                non_residues += 1
            }
        };
        let pm1 = p.wrapping_sub(&U4096::ONE);
        for y in [
            U4096::from_u8(2),
            U4096::from_u8(3),
            pm1,
            p.wrapping_sub(&U4096::from_u8(2)),
            U4096::ONE.shl_vartime(4000),
        ] {
            check(y);
        }
        for _ in 0..10 {
            let y = U4096::random_from_rng(&mut rng).rem_vartime(&p.to_nz().expect("p"));
            check(y);
        }
        for _ in 0..2 {
            let x = FfdhPrivate::random(&mut rng);
            check(U4096::from_be_slice(&x.public()));
        }
        assert!(
            residues >= 4 && non_residues >= 4,
            "{residues} {non_residues}"
        );
        assert_eq!(jacobi_vartime(&[0], p.as_words()), 0);
        assert_eq!(jacobi_vartime(p.as_words(), p.as_words()), 0);
    }
}
