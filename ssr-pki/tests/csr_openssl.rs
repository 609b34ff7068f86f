//! Every CSR we produce is accepted by `openssl req -verify` (an independent
//! implementation), carries the router UUID as its only subject attribute (CN), and
//! holds the key we generated.

use std::process::Command;

use getrandom::SysRng;
use rand_core::UnwrapErr;
use ssr_pki::csr::{Csr, RouterUuid};
use ssr_pki::keys::PrivateKey;

fn openssl(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_verifies_our_csrs_for_several_uuids() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = UnwrapErr(SysRng);
    for uuid in [
        "6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e90",
        "00000000-0000-0000-0000-000000000001",
        "FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF",
        "123e4567-e89b-12d3-a456-426614174000",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ] {
        let uuid = RouterUuid::parse(uuid).unwrap();
        let key = PrivateKey::generate(&mut rng);
        let csr = Csr::build(&key, &uuid).unwrap();
        std::fs::write(dir.path().join("r.csr"), csr.to_pem().unwrap()).unwrap();

        let (ok, out) = openssl(dir.path(), &["req", "-in", "r.csr", "-noout", "-verify"]);
        assert!(ok, "openssl req -verify refused the CSR for {uuid}: {out}");
        assert!(
            out.contains("verify OK")
                || out.contains("Certificate request self-signature verify OK"),
            "{out}"
        );

        let (ok, subject) = openssl(
            dir.path(),
            &[
                "req", "-in", "r.csr", "-noout", "-subject", "-nameopt", "RFC2253",
            ],
        );
        assert!(ok, "{subject}");
        assert_eq!(subject.trim(), format!("subject=CN={}", uuid.as_str()));
        assert_eq!(uuid.as_str(), uuid.as_str().to_ascii_lowercase());

        // The public key in the CSR is ours.
        let (ok, pubkey) = openssl(dir.path(), &["req", "-in", "r.csr", "-noout", "-pubkey"]);
        assert!(ok, "{pubkey}");
        assert_eq!(pubkey, key.public_key_pem().unwrap());
    }
}

#[test]
fn openssl_detects_a_tampered_csr() {
    // The oracle is not a rubber stamp: flip one byte of the signed part.
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(&mut UnwrapErr(SysRng));
    let csr = Csr::build(
        &key,
        &RouterUuid::parse("6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e90").unwrap(),
    )
    .unwrap();
    let mut der = csr.der().to_vec();
    // Last byte of the CN value (inside certificationRequestInfo): '0' -> '1'.
    let pos = der.windows(4).position(|w| w == b"7e90").unwrap() + 3;
    der[pos] = b'1';
    std::fs::write(dir.path().join("t.der"), &der).unwrap();
    let (ok, out) = openssl(
        dir.path(),
        &["req", "-inform", "DER", "-in", "t.der", "-noout", "-verify"],
    );
    assert!(!ok || out.contains("verify failure"), "{out}");
}

#[test]
fn private_key_pem_is_read_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(&mut UnwrapErr(SysRng));
    std::fs::write(
        dir.path().join("k.pem"),
        key.secret_pkcs8_pem().unwrap().as_bytes(),
    )
    .unwrap();
    let (ok, out) = openssl(dir.path(), &["pkey", "-in", "k.pem", "-pubout"]);
    assert!(ok, "{out}");
    assert_eq!(out, key.public_key_pem().unwrap());
    let (ok, text) = openssl(dir.path(), &["pkey", "-in", "k.pem", "-noout", "-text"]);
    assert!(ok && text.contains("prime256v1"), "{text}");
}

#[test]
fn invalid_uuids_are_refused() {
    for bad in [
        "",
        "router-1",
        "6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e9",
        "6f1e0c62_8d4b_4f55_9a4e_2b8f3c1d7e90",
    ] {
        let err = RouterUuid::parse(bad).unwrap_err().to_string();
        assert!(err.starts_with("invalid router UUID"), "{err}");
    }
}
