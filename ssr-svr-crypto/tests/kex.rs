//! Key exchange: interop with the `openssl` CLI (`pkeyutl -derive`) for FFDH (RFC 3526
//! group 16 = OpenSSL `modp_4096`) and ECDH P-256, HKDF against `openssl kdf`, public
//! value checks, and full authenticated exchanges for every algorithm.

use std::path::Path;
use std::process::Command;

use crypto_bigint::U4096;
use p256::ecdsa::SigningKey;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use rand::SeedableRng;
use rand::rngs::StdRng;
use ssr_svr_crypto::Error;
use ssr_svr_crypto::kex::{
    self, AuthenticatedPeer, FfdhPrivate, KexAlgorithm, ffdh_check_public, modp_prime,
};

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    ssr_testkit::run(Command::new("openssl").args(args).current_dir(dir))
        .unwrap()
        .stdout
}

/// Minimal DER walker: (tag, header_len, content_len) at `off`.
fn tlv(b: &[u8], off: usize) -> (u8, usize, usize) {
    let tag = b[off];
    let l = b[off + 1] as usize;
    if l < 0x80 {
        (tag, 2, l)
    } else {
        let n = l & 0x7f;
        let mut len = 0;
        for i in 0..n {
            len = (len << 8) | b[off + 2 + i] as usize;
        }
        (tag, 2 + n, len)
    }
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else if len < 0x100 {
        vec![0x81, len as u8]
    } else {
        vec![0x82, (len >> 8) as u8, len as u8]
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(der_len(content.len()));
    v.extend_from_slice(content);
    v
}

/// Splits a DH SubjectPublicKeyInfo into (AlgorithmIdentifier DER, y as 512 bytes).
fn split_dh_spki(spki: &[u8]) -> (Vec<u8>, [u8; 512]) {
    let (_, oh, _) = tlv(spki, 0);
    let (_, ah, al) = tlv(spki, oh);
    let alg = spki[oh..oh + ah + al].to_vec();
    let bs = oh + ah + al;
    let (tag, bh, _) = tlv(spki, bs);
    assert_eq!(tag, 0x03);
    let int_off = bs + bh + 1; // skip "unused bits"
    let (tag, ih, il) = tlv(spki, int_off);
    assert_eq!(tag, 0x02);
    let mut y = &spki[int_off + ih..int_off + ih + il];
    while y.len() > 512 && y[0] == 0 {
        y = &y[1..];
    }
    let mut out = [0u8; 512];
    out[512 - y.len()..].copy_from_slice(y);
    (alg, out)
}

fn dh_spki(alg: &[u8], y: &[u8; 512]) -> Vec<u8> {
    let mut yi = y.to_vec();
    while yi.len() > 1 && yi[0] == 0 {
        yi.remove(0);
    }
    if yi[0] & 0x80 != 0 {
        yi.insert(0, 0);
    }
    let mut bits = vec![0u8];
    bits.extend(der(0x02, &yi));
    let mut body = alg.to_vec();
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

fn strip(v: &[u8]) -> &[u8] {
    let i = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[i..]
}

#[test]
fn ffdh_interop_with_openssl_modp_4096() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    openssl(
        &[
            "genpkey",
            "-genparam",
            "-algorithm",
            "DH",
            "-pkeyopt",
            "group:modp_4096",
            "-out",
            "params.pem",
        ],
        p,
    );
    openssl(
        &["genpkey", "-paramfile", "params.pem", "-out", "theirs.pem"],
        p,
    );
    let spki = openssl(
        &["pkey", "-in", "theirs.pem", "-pubout", "-outform", "DER"],
        p,
    );
    let (alg, their_y) = split_dh_spki(&spki);
    let mut rng = StdRng::seed_from_u64(1);
    let x = FfdhPrivate::random(&mut rng);
    let our_y = x.public();
    std::fs::write(p.join("ours.der"), dh_spki(&alg, &our_y)).unwrap();
    let theirs = openssl(
        &[
            "pkeyutl",
            "-derive",
            "-inkey",
            "theirs.pem",
            "-peerkey",
            "ours.der",
            "-peerform",
            "DER",
        ],
        p,
    );
    let ours = x.derive(&their_y).unwrap();
    assert_eq!(strip(ours.secret_bytes()), strip(&theirs));
    assert!(theirs.len() > 400, "a 4096-bit secret");
}

#[test]
fn ecdh_interop_with_openssl_p256() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "theirs.pem",
        ],
        p,
    );
    let spki = openssl(
        &["pkey", "-in", "theirs.pem", "-pubout", "-outform", "DER"],
        p,
    );
    let their_pk = p256::PublicKey::from_public_key_der(&spki).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let ours = <p256::ecdh::EphemeralSecret as p256::elliptic_curve::Generate>::generate_from_rng(
        &mut rng,
    );
    let our_der = ours.public_key().to_public_key_der().unwrap();
    std::fs::write(p.join("ours.der"), our_der.as_bytes()).unwrap();
    let theirs = openssl(
        &[
            "pkeyutl",
            "-derive",
            "-inkey",
            "theirs.pem",
            "-peerkey",
            "ours.der",
            "-peerform",
            "DER",
        ],
        p,
    );
    let ss = kex::ecdh_derive(&ours, &their_pk.to_sec1_bytes()).unwrap();
    assert_eq!(&ss.secret_bytes()[..], &theirs[..]);
    assert!(
        kex::ecdh_derive(&ours, &[4u8; 65]).is_err(),
        "not on the curve"
    );
}

#[test]
fn hkdf_sha384_combination_matches_openssl_kdf() {
    let d = tempfile::tempdir().unwrap();
    let s1 = [0x11u8; 512];
    let s2 = [0x22u8; 32];
    let th = [0x33u8; 48];
    let got = kex::kat::combine_secrets(&[&s1, &s2], 0x0102030405060708, 0x1112131415161718, &th);
    let mut ikm = s1.to_vec();
    ikm.extend_from_slice(&s2);
    let mut info = b"svr peer key v1".to_vec();
    info.extend_from_slice(&th);
    let out = openssl(
        &[
            "kdf",
            "-keylen",
            "160",
            "-binary",
            "-kdfopt",
            "digest:SHA384",
            "-kdfopt",
            &format!("hexkey:{}", hex::encode(&ikm)),
            "-kdfopt",
            "hexsalt:01020304050607081112131415161718",
            "-kdfopt",
            &format!("hexinfo:{}", hex::encode(&info)),
            "HKDF",
        ],
        d.path(),
    );
    assert_eq!(out, got.to_vec());
}

#[test]
fn ffdh_public_value_checks() {
    let p = modp_prime();
    let be = |x: &U4096| {
        let mut o = [0u8; 512];
        for (i, l) in x.as_words().iter().rev().enumerate() {
            o[i * 8..i * 8 + 8].copy_from_slice(&l.to_be_bytes());
        }
        o
    };
    let pm1 = p.wrapping_sub(&U4096::ONE);
    for bad in [U4096::ZERO, U4096::ONE, pm1, p, U4096::MAX] {
        assert!(ffdh_check_public(&be(&bad)).is_err());
    }
    assert!(ffdh_check_public(&[1u8; 511]).is_err());
    // 2 is a generator of the q-subgroup (p ≡ 7 mod 8); p-2 ≡ -2 is a non-residue.
    assert!(ffdh_check_public(&be(&U4096::from_u8(2))).is_ok());
    let minus2 = p.wrapping_sub(&U4096::from_u8(2));
    assert_eq!(
        ffdh_check_public(&be(&minus2)),
        Err(Error::InvalidPublicValue {
            alg: "ffdh4096",
            reason: "not in the order-q subgroup"
        })
    );
    // The Legendre test agrees with the textbook y^q == 1 on honest and hostile values.
    let mut rng = StdRng::seed_from_u64(3);
    let y = FfdhPrivate::random(&mut rng).public();
    let yv = ffdh_check_public(&y).unwrap();
    assert_eq!(kex::ffdh_subgroup_power(&yv), U4096::ONE);
    assert_ne!(kex::ffdh_subgroup_power(&minus2), U4096::ONE);
    assert!(
        FfdhPrivate::from_be_bytes(&[0u8; 64]).is_err(),
        "exponent below 325 bits"
    );
}

fn ident(seed: u64, cn: &str) -> (SigningKey, AuthenticatedPeer) {
    let mut rng = StdRng::seed_from_u64(seed);
    let sk = <SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(&mut rng);
    let vk = *sk.verifying_key();
    (
        sk,
        AuthenticatedPeer {
            common_name: cn.into(),
            public_key: vk,
        },
    )
}

#[test]
fn authenticated_exchange_every_algorithm() {
    let (ska, a) = ident(10, "router-a");
    let (skb, b) = ident(11, "router-b");
    let (_skc, c) = ident(12, "router-a");
    let mut rng = StdRng::seed_from_u64(13);
    for alg in [
        KexAlgorithm::EcdhP256,
        KexAlgorithm::Ffdh4096,
        KexAlgorithm::MlKem768EcdhP256,
        KexAlgorithm::MlKem768Ffdh4096,
    ] {
        let (st, hello) =
            kex::Initiator::start(alg, &ska, "router-a", "router-b", b"nonce-1", &mut rng).unwrap();
        // The signature on the wire: ECDSA P-256 `r || s`.
        assert_eq!(hello.signature.len(), 64);
        // Wire round trip.
        let hello = kex::KexMessage::decode(&hello.encode()).unwrap();
        let (reply, kb) = kex::respond(&hello, &a, &skb, "router-b", b"nonce-1", &mut rng).unwrap();
        let ka = st.finish(&reply, &b).unwrap();
        assert_eq!(ka.i2r, kb.i2r, "{alg:?}");
        assert_eq!(ka.r2i, kb.r2i);
        assert_ne!(ka.i2r, ka.r2i);
        assert_eq!(ka.transcript, kb.transcript);
        // Wrong signer identity, tampered share, tampered signature.
        assert_eq!(
            kex::respond(&hello, &c, &skb, "router-b", b"nonce-1", &mut rng).err(),
            Some(Error::Unauthenticated)
        );
        let mut t = hello.clone();
        t.share[10] ^= 1;
        assert_eq!(
            kex::respond(&t, &a, &skb, "router-b", b"nonce-1", &mut rng).err(),
            Some(Error::Unauthenticated)
        );
        // A hello signed for another responder nonce (a replay): refused.
        assert_eq!(
            kex::respond(&hello, &a, &skb, "router-b", b"nonce-2", &mut rng).err(),
            Some(Error::Unauthenticated)
        );
        let mut r2 = reply.clone();
        r2.signature[5] ^= 1;
        assert_eq!(st.finish(&r2, &b).err(), Some(Error::Unauthenticated));
        if !r2.kem.is_empty() {
            let mut r3 = reply.clone();
            r3.kem[0] ^= 1;
            assert_eq!(st.finish(&r3, &b).err(), Some(Error::Unauthenticated));
        }
        // Strict decoding.
        let enc = reply.encode();
        assert!(kex::KexMessage::decode(&enc[..enc.len() - 1]).is_err());
        let mut longer = enc.clone();
        longer.push(0);
        assert!(kex::KexMessage::decode(&longer).is_err());
    }
}

/// A router key whose holder fails (a TPM that does not answer).
struct DeadKey;

impl kex::KexSigner for DeadKey {
    fn sign_kex(&self, _msg: &[u8]) -> Result<[u8; 64], Error> {
        Err(Error::Signer {
            reason: "tpm key: no answer".into(),
        })
    }
}

#[test]
fn a_key_that_cannot_sign_fails_the_exchange_with_a_signer_error() {
    let (ska, a) = ident(20, "router-a");
    let mut rng = StdRng::seed_from_u64(21);
    let alg = KexAlgorithm::EcdhP256;
    let Err(e) = kex::Initiator::start(alg, &DeadKey, "router-a", "router-b", b"n", &mut rng)
    else {
        panic!("no hello without a signature");
    };
    assert!(matches!(e, Error::Signer { .. }), "{e:?}");
    let (_, hello) =
        kex::Initiator::start(alg, &ska, "router-a", "router-b", b"n", &mut rng).unwrap();
    let Err(e) = kex::respond(&hello, &a, &DeadKey, "router-b", b"n", &mut rng) else {
        panic!("no reply without a signature");
    };
    assert!(e.to_string().contains("no answer"), "{e}");
}

#[test]
fn ml_kem_768_deterministic_round_trip() {
    // Determinism from a seeded RNG and implicit rejection; the FIPS 203 vectors are in
    // tests/vectors.rs.
    use ml_kem::MlKem768;
    use ml_kem::kem::{Decapsulate, Encapsulate, Kem, KeyExport};
    let make = |s| {
        let mut r = StdRng::seed_from_u64(s);
        let (dk, ek) = MlKem768::generate_keypair_from_rng(&mut r);
        let (ct, k) = ek.encapsulate_with_rng(&mut r);
        (dk, ek.to_bytes().to_vec(), ct, k)
    };
    let (dk, ek1, ct, k) = make(7);
    let (_, ek2, ct2, k2) = make(7);
    assert_eq!(ek1, ek2);
    assert_eq!(ct, ct2);
    assert_eq!(k, k2);
    assert_eq!(ek1.len(), 1184);
    assert_eq!(dk.decapsulate(&ct), k);
    let mut bad = ct;
    bad[0] ^= 1;
    assert_ne!(dk.decapsulate(&bad), k);
}
