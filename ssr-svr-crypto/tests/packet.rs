//! Packet protection: published vectors (NIST SP 800-38A, RFC 4231), the `openssl` CLI as
//! an oracle for the whole sealed packet, and rejection of tampered / replayed packets.

use std::process::Command;

use aes::Aes256;
use cipher::{BlockCipherEncrypt, KeyInit};
use ssr_svr_crypto::Error;
use ssr_svr_crypto::packet::{
    CbcHmacOpener, CbcHmacSealer, GcmOpener, GcmSealer, HEADER_LEN, LANES, TAG_LEN, gcm_sealed_len,
    kat, sealed_len,
};
use ssr_svr_crypto::secret::PacketKeyMaterial;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

fn material(seed: u8) -> PacketKeyMaterial {
    let mut b = [0u8; 80];
    for (i, x) in b.iter_mut().enumerate() {
        *x = seed.wrapping_mul(31).wrapping_add(i as u8);
    }
    PacketKeyMaterial::from_bytes(b)
}

// NIST SP 800-38A F.2.5 (CBC-AES256.Encrypt).
const NIST_KEY: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
const NIST_IV: &str = "000102030405060708090a0b0c0d0e0f";
const NIST_PT: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
const NIST_CT: &str = "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b";

#[test]
fn open_decrypts_nist_sp800_38a_cbc_vector() {
    let mut m = [0u8; 80];
    m[..32].copy_from_slice(&h(NIST_KEY));
    m[32..].copy_from_slice(&[0x42; 48]);
    let key = PacketKeyMaterial::from_bytes(m);
    // Packet: seq | NIST IV | NIST ciphertext | one PKCS#7 padding block | tag.
    let ct = h(NIST_CT);
    let mut pad = [16u8; 16];
    for (p, c) in pad.iter_mut().zip(&ct[48..64]) {
        *p ^= c;
    }
    let aes = Aes256::new_from_slice(&h(NIST_KEY)).unwrap();
    let mut blk = aes::Block::from(pad);
    aes.encrypt_block(&mut blk);
    let mut pkt = 7u64.to_be_bytes().to_vec();
    pkt.extend_from_slice(&h(NIST_IV));
    pkt.extend_from_slice(&ct);
    pkt.extend_from_slice(&blk);
    let tag = kat::hmac_sha384(&[0x42; 48], &pkt);
    pkt.extend_from_slice(&tag[..TAG_LEN]);
    let mut out = [0u8; 128];
    let mut opener = CbcHmacOpener::new(&key);
    let n = opener.open(&pkt, &mut out).unwrap();
    assert_eq!(&out[..n], &h(NIST_PT)[..]);
}

#[test]
fn hmac_sha384_rfc4231_vectors() {
    // Test cases 1, 2, 3, 4, 6, 7 of RFC 4231 (HMAC-SHA-384; 6 and 7 hash a key longer
    // than the block first; 5 tests truncation to 128 bits, which we do not use).
    let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
        ),
        (
            h("0102030405060708090a0b0c0d0e0f10111213141516171819"),
            vec![0xcd; 50],
            "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
        ),
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
        ),
        (
            vec![0xaa; 131],
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
            "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
        ),
    ];
    for (k, d, want) in cases {
        assert_eq!(kat::hmac_sha384(&k, &d).to_vec(), h(want));
    }
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn sealed_packet_matches_openssl_enc_and_dgst() {
    assert!(
        have_openssl(),
        "the openssl CLI is the oracle for this test"
    );
    let key = material(3);
    let mut sealer = CbcHmacSealer::new(&key);
    let dir = tempfile::tempdir().unwrap();
    // The IV-encryption key: HMAC-SHA-384(material, "svr cbc iv key v1")[..32], by openssl.
    let labelf = dir.path().join("label");
    std::fs::write(&labelf, b"svr cbc iv key v1").unwrap();
    let ivk = Command::new("openssl")
        .args([
            "dgst",
            "-sha384",
            "-mac",
            "HMAC",
            "-macopt",
            &format!("hexkey:{}", hex::encode(key.secret_bytes())),
            "-binary",
        ])
        .arg(&labelf)
        .output()
        .unwrap();
    assert!(ivk.status.success());
    let iv_key = hex::encode(&ivk.stdout[..32]);
    assert_ne!(
        iv_key,
        hex::encode(&key.secret_bytes()[..32]),
        "not the CBC key"
    );
    // Lengths around the SHA-512 block and padding boundaries of the stitched MAC
    // (header 24 bytes, 128-byte blocks, one- or two-block tails) and long packets.
    for len in [
        0usize, 1, 15, 16, 17, 87, 88, 100, 103, 104, 231, 232, 1400, 1401, 2047, 9000, 65000,
    ] {
        let pt: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let seq = sealer.next_seq();
        let mut out = vec![0u8; sealed_len(len)];
        let n = sealer.seal(&pt, &mut out).unwrap();
        assert_eq!(n, sealed_len(len));
        assert_eq!(&out[..8], &seq.to_be_bytes());
        let iv = &out[8..HEADER_LEN];
        // The IV is AES-Kiv(seq | 0x80 | 0…) under the separate IV key, as the wire
        // format says.
        let mut iv_in = [0u8; 16];
        iv_in[..8].copy_from_slice(&seq.to_be_bytes());
        iv_in[8] = 0x80;
        let ivf = dir.path().join("iv_in");
        std::fs::write(&ivf, iv_in).unwrap();
        let ecb = Command::new("openssl")
            .args(["enc", "-aes-256-ecb", "-nopad", "-K", &iv_key, "-in"])
            .arg(&ivf)
            .output()
            .unwrap();
        assert!(ecb.status.success());
        assert_eq!(ecb.stdout, iv, "IV for seq {seq}");
        let ct = &out[HEADER_LEN..n - TAG_LEN];
        let ptf = dir.path().join("pt");
        std::fs::write(&ptf, &pt).unwrap();
        let enc = Command::new("openssl")
            .args([
                "enc",
                "-aes-256-cbc",
                "-K",
                &hex::encode(&key.secret_bytes()[..32]),
                "-iv",
                &hex::encode(iv),
                "-in",
            ])
            .arg(&ptf)
            .output()
            .unwrap();
        assert!(enc.status.success());
        assert_eq!(enc.stdout, ct, "ciphertext for len {len}");
        let bodyf = dir.path().join("body");
        std::fs::write(&bodyf, &out[..n - TAG_LEN]).unwrap();
        let mac = Command::new("openssl")
            .args([
                "dgst",
                "-sha384",
                "-mac",
                "HMAC",
                "-macopt",
                &format!("hexkey:{}", hex::encode(&key.secret_bytes()[32..])),
                "-binary",
            ])
            .arg(&bodyf)
            .output()
            .unwrap();
        assert!(mac.status.success());
        assert_eq!(&mac.stdout[..TAG_LEN], &out[n - TAG_LEN..n]);
    }
}

#[test]
fn round_trip_replay_tamper_wrong_key() {
    let key = material(1);
    let mut s = CbcHmacSealer::new(&key);
    let mut o = CbcHmacOpener::new(&key);
    let mut wrong = CbcHmacOpener::new(&material(2));
    let mut pkts = Vec::new();
    for i in 0..50usize {
        let pt = vec![i as u8; i * 13];
        let mut out = vec![0u8; sealed_len(pt.len())];
        let n = s.seal(&pt, &mut out).unwrap();
        out.truncate(n);
        pkts.push((pt, out));
    }
    let mut buf = [0u8; 2048];
    // Reordered delivery (reverse), all accepted once.
    for (pt, p) in pkts.iter().rev() {
        assert_eq!(wrong.open(p, &mut buf), Err(Error::Unauthenticated));
        let n = o.open(p, &mut buf).unwrap();
        assert_eq!(&buf[..n], &pt[..]);
    }
    for (_, p) in &pkts {
        assert!(matches!(o.open(p, &mut buf), Err(Error::Replay { .. })));
    }
    // Every single-bit flip anywhere is rejected and does not move the window.
    let mut s2 = CbcHmacSealer::new(&key);
    for _ in 0..50 {
        s2.seal(b"x", &mut buf).unwrap();
    }
    let mut fresh = vec![0u8; sealed_len(40)];
    let n = s2.seal(&[9u8; 40], &mut fresh).unwrap();
    let mut out = [0u8; 128];
    for bit in 0..n * 8 {
        let mut t = fresh[..n].to_vec();
        t[bit / 8] ^= 1 << (bit % 8);
        assert!(o.open(&t, &mut out).is_err(), "bit {bit}");
    }
    assert_eq!(o.open(&fresh[..n], &mut out), Ok(40));
    let st = o.stats();
    assert_eq!(st.delivered, 51);
    // Flips of the sequence field that land on an already seen number are replays.
    let seq_replays = (0..64).filter(|k| (50u64 ^ (1u64 << k)) < 50).count() as u64;
    assert_eq!(st.replayed, 50 + seq_replays);
    assert_eq!(st.tampered + st.replayed, (n * 8) as u64 + 50);
    assert_eq!(
        o.open(&fresh[..n], &mut out),
        Err(Error::Replay { seq: 50 })
    );
}

#[test]
fn beyond_window_is_rejected() {
    let key = material(4);
    let mut s = CbcHmacSealer::new(&key);
    let mut o = CbcHmacOpener::new(&key);
    let mut first = vec![0u8; sealed_len(10)];
    s.seal(&[1; 10], &mut first).unwrap();
    let mut buf = vec![0u8; 64];
    for _ in 0..3000 {
        let n = s.seal(&[2; 10], &mut buf).unwrap();
        o.open(&buf[..n], &mut [0u8; 64]).unwrap();
    }
    assert_eq!(
        o.open(&first, &mut [0u8; 64]),
        Err(Error::Replay { seq: 0 })
    );
}

/// Seals `lens`-long packets as one batch and one by one; both must match byte for byte
/// and open.
fn check_batch(lens: &[usize]) {
    let key = material(5);
    let mut single = CbcHmacSealer::new(&key);
    let mut batch = CbcHmacSealer::new(&key);
    let pts: Vec<Vec<u8>> = lens
        .iter()
        .map(|&l| (0..l).map(|i| (i * 3 + l) as u8).collect())
        .collect();
    let refs: Vec<&[u8]> = pts.iter().map(|p| &p[..]).collect();
    let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0u8; sealed_len(l)]).collect();
    let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    let mut got = vec![0usize; lens.len()];
    batch.seal_batch(&refs, &mut outs, &mut got).unwrap();
    let mut o = CbcHmacOpener::new(&key);
    for (i, p) in pts.iter().enumerate() {
        let mut want = vec![0u8; sealed_len(p.len())];
        let n = single.seal(p, &mut want).unwrap();
        assert_eq!(got[i], n);
        assert_eq!(bufs[i], want, "lens {lens:?} packet {i}");
        let mut out = vec![0u8; n];
        let m = o.open(&bufs[i], &mut out).unwrap();
        assert_eq!(&out[..m], &p[..]);
    }
}

#[test]
fn batch_seal_equals_single_seal() {
    // Mixed lengths (lanes finish at different blocks), more packets than lanes.
    check_batch(&[1400, 0, 15, 16, 64, 1399, 700, 33, 1, 2000, 17]);
    // Every batch size around the lane count, equal and unequal lengths.
    for n in 1..=LANES + 2 {
        check_batch(&vec![1400; n]);
        check_batch(&(0..n).map(|i| 100 + 37 * i).collect::<Vec<_>>());
    }
}

#[test]
fn gcm_round_trip_and_rejections() {
    assert!(have_openssl());
    let key = material(6);
    let mut s = GcmSealer::new(&key);
    let mut o = GcmOpener::new(&key);
    let mut w = GcmOpener::new(&material(7));
    let mut buf = vec![0u8; gcm_sealed_len(1400)];
    let pt = vec![0x5a; 1400];
    let n = s.seal(&pt, &mut buf).unwrap();
    let mut out = vec![0u8; 1400];
    assert_eq!(w.open(&buf[..n], &mut out), Err(Error::Unauthenticated));
    let mut t = buf[..n].to_vec();
    t[100] ^= 1;
    assert_eq!(o.open(&t, &mut out), Err(Error::Unauthenticated));
    assert_eq!(o.open(&buf[..n], &mut out), Ok(1400));
    assert_eq!(out, pt);
    assert_eq!(o.open(&buf[..n], &mut out), Err(Error::Replay { seq: 0 }));
    assert_eq!(o.stats().tampered, 1);
    assert_eq!(o.stats().replayed, 1);
}

/// The GCM wire format, checked against RustCrypto `aes-gcm` as an independent
/// implementation: `seq | AES-256-GCM(key[..32], nonce = key[32..36] | seq, aad = seq) | tag`,
/// for several sequence numbers and lengths (empty, partial block, 1400 bytes).
#[test]
fn gcm_wire_format_matches_independent_aes_gcm() {
    use aes_gcm::{Aes256Gcm, KeyInit as _, aead::Aead, aead::Payload};
    let key = material(9);
    let m = key.secret_bytes();
    let oracle = Aes256Gcm::new_from_slice(&m[..32]).unwrap();
    let mut s = GcmSealer::new(&key);
    let mut o = GcmOpener::new(&key);
    for (seq, len) in [(0u64, 0usize), (1, 1), (2, 17), (3, 1400)] {
        let pt: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let mut buf = vec![0u8; gcm_sealed_len(len)];
        assert_eq!(s.seal(&pt, &mut buf), Ok(gcm_sealed_len(len)));
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&m[32..36]);
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        let aad = seq.to_be_bytes();
        let ct = oracle
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &pt,
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(&buf[..8], &aad);
        assert_eq!(&buf[8..], &ct[..], "seq {seq} len {len}");
        let mut out = vec![0u8; len];
        assert_eq!(o.open(&buf, &mut out), Ok(len));
        assert_eq!(out, pt);
    }
}

#[test]
fn too_small_buffers_are_errors_not_panics() {
    let key = material(8);
    let mut s = CbcHmacSealer::new(&key);
    let mut o = CbcHmacOpener::new(&key);
    let mut small = [0u8; 10];
    assert!(matches!(
        s.seal(&[0; 40], &mut small),
        Err(Error::BufferTooSmall { .. })
    ));
    for len in 0..100 {
        assert!(o.open(&vec![0u8; len], &mut [0u8; 200]).is_err());
    }
}
