//! Published test vectors, vendored as data in `tests/data/` (sources and licences in
//! `tests/data/README.md`), for what this crate wrote itself or wires together: the
//! three SHA-512 compression paths of the packet code (NIST examples, CAVP short and
//! long messages), the stitched seal's tag against ring's HMAC-SHA-384 at every length
//! 0..=2048, HKDF-SHA-384 (Wycheproof) and ML-KEM-768 (Wycheproof's FIPS 203 vectors:
//! key generation from seed, encapsulation, decapsulation).

// The Wycheproof files give decapsulation keys in FIPS 203's expanded encoding, which
// ml-kem 0.3 marks deprecated (it prefers seeds); the tests need it to read the vectors.
#![allow(deprecated)]

use ml_kem::ExpandedKeyEncoding;
use ml_kem::MlKem768;
use ml_kem::kem::{Decapsulate, KeyExport, TryKeyInit};
use serde_json::Value;
use ssr_svr_crypto::packet::kat::{self, Path};
use ssr_svr_crypto::packet::{CbcHmacSealer, LANES, TAG_LEN, sealed_len};
use ssr_svr_crypto::secret::PacketKeyMaterial;

fn data(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// (message, digest) pairs of a CAVP byte-oriented `.rsp` file.
fn rsp(name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let text = data(name);
    let mut out = Vec::new();
    let (mut len, mut msg) = (None, None);
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Len = ") {
            len = Some(v.parse::<usize>().unwrap());
        } else if let Some(v) = line.strip_prefix("Msg = ") {
            msg = Some(h(v));
        } else if let Some(v) = line.strip_prefix("MD = ") {
            let bits = len.take().unwrap();
            let mut m = msg.take().unwrap();
            m.truncate(bits / 8); // Len = 0 is written as Msg = 00
            out.push((m, h(v)));
        }
    }
    out
}

const PATHS: [Path; 3] = [Path::Single, Path::Stitched, Path::Lanes];

fn check_path(path: Path, sha384: bool, cases: &[(Vec<u8>, Vec<u8>)], what: &str) {
    let msgs: Vec<&[u8]> = cases.iter().map(|c| &c.0[..]).collect();
    let got = kat::sha2_family(path, sha384, &msgs);
    assert_eq!(got.len(), cases.len());
    for (i, (g, c)) in got.iter().zip(cases).enumerate() {
        assert_eq!(
            hex::encode(g),
            hex::encode(&c.1),
            "{what} {path:?} case {i} ({} bytes)",
            c.0.len()
        );
    }
}

#[test]
fn sha2_nist_examples_on_every_path() {
    let text = data("nist_sha2_examples.txt");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split(' ').collect();
        let sha384 = f[0] == "SHA-384";
        let case = [(f[1].as_bytes().to_vec(), h(f[2]))];
        for p in PATHS {
            check_path(p, sha384, &case, f[0]);
        }
    }
}

#[test]
fn sha2_cavp_short_and_long_messages_on_every_path() {
    for (file, sha384, n) in [
        ("SHA384ShortMsg.rsp", true, 129),
        ("SHA512ShortMsg.rsp", false, 129),
        ("SHA384LongMsg.rsp", true, 24),
        ("SHA512LongMsg.rsp", false, 24),
    ] {
        let cases = rsp(file);
        assert_eq!(cases.len(), n, "{file}");
        for p in PATHS {
            check_path(p, sha384, &cases, file);
        }
    }
}

#[test]
fn stitched_and_batch_seal_tags_equal_ring_hmac_over_the_ciphertext_at_every_length() {
    let mut m = [0u8; 80];
    for (i, b) in m.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(29).wrapping_add(3);
    }
    let material = PacketKeyMaterial::from_bytes(m);
    let ring_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA384, &m[32..]);
    let check = |pkt: &[u8], len: usize, what: &str| {
        let body = &pkt[..pkt.len() - TAG_LEN];
        let tag = ring::hmac::sign(&ring_key, body);
        assert_eq!(
            &tag.as_ref()[..TAG_LEN],
            &pkt[pkt.len() - TAG_LEN..],
            "{what}, {len}-byte payload"
        );
    };
    let mut single = CbcHmacSealer::new(&material);
    let mut batch = CbcHmacSealer::new(&material);
    let pt: Vec<u8> = (0..2048 + LANES).map(|i| (i * 7 + 1) as u8).collect();
    let mut out = vec![0u8; sealed_len(2048)];
    for len in 0..=2048usize {
        let n = single.seal(&pt[..len], &mut out).unwrap();
        check(&out[..n], len, "seal");
    }
    // Batches of eight neighbouring lengths (every lane sees every length class).
    for start in (0..=2048usize).step_by(LANES) {
        let lens: Vec<usize> = (start..start + LANES).map(|l| l.min(2048)).collect();
        let pts: Vec<&[u8]> = lens.iter().map(|&l| &pt[..l]).collect();
        let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0u8; sealed_len(l)]).collect();
        let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        let mut got = [0usize; LANES];
        batch.seal_batch(&pts, &mut outs, &mut got).unwrap();
        for (b, &l) in bufs.iter().zip(&lens) {
            check(b, l, "seal_batch");
        }
    }
}

#[test]
fn hkdf_sha384_wycheproof() {
    let v: Value = serde_json::from_str(&data("hkdf_sha384_test.json")).unwrap();
    let mut n = 0;
    for g in v["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let s = |k: &str| h(t[k].as_str().unwrap());
            let size = t["size"].as_u64().unwrap() as usize;
            let mut out = vec![0u8; size];
            let r = kat::hkdf_sha384(&s("salt"), &s("ikm"), &s("info"), &mut out);
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert!(r.is_some(), "tcId {}", t["tcId"]);
                    assert_eq!(
                        hex::encode(&out),
                        t["okm"].as_str().unwrap(),
                        "tcId {}",
                        t["tcId"]
                    );
                }
                _ => assert!(r.is_none(), "tcId {} must be refused", t["tcId"]),
            }
            n += 1;
        }
    }
    assert_eq!(n, v["numberOfTests"].as_u64().unwrap());
}

#[test]
fn ml_kem_768_keygen_from_seed_fips203_vectors() {
    let v: Value = serde_json::from_str(&data("mlkem_768_keygen_seed_test.json")).unwrap();
    let mut n = 0;
    for g in v["testGroups"].as_array().unwrap() {
        assert_eq!(g["parameterSet"], "ML-KEM-768");
        for t in g["tests"].as_array().unwrap() {
            let seed = h(t["seed"].as_str().unwrap());
            let dk = ml_kem::DecapsulationKey::<MlKem768>::from_seed(
                seed.as_slice().try_into().unwrap(),
            );
            let ek = dk.encapsulation_key().to_bytes();
            assert_eq!(
                hex::encode(ek),
                t["ek"].as_str().unwrap(),
                "tcId {}",
                t["tcId"]
            );
            let expanded = dk.to_expanded_bytes();
            assert_eq!(
                hex::encode(expanded),
                t["dk"].as_str().unwrap(),
                "tcId {}",
                t["tcId"]
            );
            n += 1;
        }
    }
    assert_eq!(n, 16);
}

#[test]
fn ml_kem_768_encapsulation_fips203_vectors() {
    let v: Value = serde_json::from_str(&data("mlkem_768_encaps_test.json")).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for g in v["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let s = |k: &str| h(t[k].as_str().unwrap());
            let ek = ml_kem::EncapsulationKey::<MlKem768>::new_from_slice(&s("ek"));
            match t["result"].as_str().unwrap() {
                "valid" => {
                    let ek = ek.unwrap_or_else(|_| panic!("tcId {}", t["tcId"]));
                    let m: [u8; 32] = s("m").try_into().unwrap();
                    let (c, k) = ek.encapsulate_deterministic(&m.into());
                    assert_eq!(
                        hex::encode(c),
                        t["c"].as_str().unwrap(),
                        "tcId {}",
                        t["tcId"]
                    );
                    assert_eq!(
                        hex::encode(k),
                        t["K"].as_str().unwrap(),
                        "tcId {}",
                        t["tcId"]
                    );
                    valid += 1;
                }
                _ => {
                    // The FIPS 203 §7.2 modulus check refuses these keys.
                    assert!(ek.is_err(), "tcId {} must be refused", t["tcId"]);
                    invalid += 1;
                }
            }
        }
    }
    assert!(
        valid >= 6 && invalid >= 6,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn ml_kem_768_decapsulation_fips203_vectors() {
    let v: Value = serde_json::from_str(&data("mlkem_768_semi_expanded_decaps_test.json")).unwrap();
    let mut valid = 0;
    for g in v["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let s = |k: &str| h(t[k].as_str().unwrap());
            let dk = s("dk");
            let c = s("c");
            let outcome = (|| {
                let arr = dk.as_slice().try_into().ok()?;
                let dk = ml_kem::DecapsulationKey::<MlKem768>::from_expanded_bytes(arr).ok()?;
                let k = dk.decapsulate_slice(&c).ok()?;
                Some(k.to_vec())
            })();
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert_eq!(
                        outcome.map(hex::encode).as_deref(),
                        Some(t["K"].as_str().unwrap()),
                        "tcId {}",
                        t["tcId"]
                    );
                    valid += 1;
                }
                _ => assert!(outcome.is_none(), "tcId {} must be refused", t["tcId"]),
            }
        }
    }
    assert!(valid >= 1);
}
