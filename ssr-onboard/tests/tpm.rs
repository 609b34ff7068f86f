//! Onboarding with the router key held in a real (software) TPM: swtpm started per
//! test by the testkit, the key being ssr-tpm's key store entry `router` (the same key
//! `ssr cert keygen --tpm` creates and `ssr cert csr` signs with), real TLS on loopback.
//! The refusal cases of `tests/https.rs` run here with the TPM key too.

mod common;

use std::process::Command;

use common::*;
use ssr_onboard::https::join;
use ssr_onboard::msg::RefusalCode;
use ssr_onboard::tpm::{ROUTER_KEY_NAME, TpmKey, open_router_key};
use ssr_onboard::{Error, ErrorKind, RouterSigner, SoftwareSigner, Token};
use ssr_pki::csr::{Csr, RouterUuid};
use ssr_testkit::Swtpm;

const UUID: &str = "6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e90";

/// The public key of a CSR as `openssl req -verify -pubkey` reads it (DER SPKI),
/// after openssl checked the CSR's signature.
fn openssl_csr_public_key(dir: &std::path::Path, csr: &Csr) -> Vec<u8> {
    let path = dir.join("router.csr");
    std::fs::write(&path, csr.to_pem().expect("pem")).expect("write");
    let out = Command::new("openssl")
        .args(["req", "-noout", "-verify", "-pubkey", "-in"])
        .arg(&path)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).expect("utf8");
    use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
    p256::PublicKey::from_public_key_pem(&pem)
        .expect("P-256")
        .to_public_key_der()
        .expect("der")
        .as_bytes()
        .to_vec()
}

#[test]
fn one_router_key_for_the_csr_and_the_onboarding_proof() {
    let tpm = Swtpm::start().expect("swtpm");
    let keys = tempfile::tempdir().expect("key store");
    // `ssr cert keygen --tpm`: the key store entry `router`, then the CSR signed by it
    // inside the TPM.
    let created = TpmKey::create(&tpm.tcti(), keys.path(), ROUTER_KEY_NAME, false).expect("create");
    assert!(keys.path().join("router.key").exists());
    let csr = Csr::build(&created, &RouterUuid::parse(UUID).expect("uuid")).expect("csr");
    let csr_key = openssl_csr_public_key(keys.path(), &csr);
    assert_eq!(csr_key, created.spki_der());
    drop(created);

    // Onboarding opens the same entry: the same key proves possession.
    let signer = open_router_key(&tpm.tcti(), keys.path()).expect("TPM key");
    let spki = signer.public_key_spki().expect("spki");
    assert_eq!(spki, csr_key);
    {
        use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
        use p256::pkcs8::DecodePublicKey;
        let vk = VerifyingKey::from_public_key_der(&spki).expect("vk");
        let sig = Signature::from_slice(&signer.sign(b"challenge").expect("sign")).expect("sig");
        vk.verify(b"challenge", &sig)
            .expect("TPM signature verifies");
        assert!(vk.verify(b"other", &sig).is_err());
    }

    let c = Conductor::start(1);
    let r = router(&c, |_| {});
    let token = c.token("router-1", unix_now(), 600, Some(&spki));
    let out = join(&r.config, &token, &signer).expect("onboarded with the TPM key");
    assert_eq!(out.ssh_port, 930);
    c.finish();
    // What the conductor recorded is the CSR's key.
    let ev = c.audit().pop().expect("audit");
    assert_eq!(ev["event"], "onboarded");
    assert_eq!(
        ev["detail"],
        format!(
            "router key {}",
            ssr_onboard::token::key_thumbprint(&csr_key)
        )
    );

    // The key survives a TPM restart over the same state; on another TPM the entry is
    // useless (its master key did not wrap it) and nothing is silently re-created.
    drop(signer);
    let state = tpm.stop().expect("stop").expect("state dir");
    let tpm = Swtpm::builder()
        .state_dir(state.path())
        .start()
        .expect("restart");
    let again = open_router_key(&tpm.tcti(), keys.path()).expect("TPM key again");
    assert_eq!(again.public_key_spki().expect("spki"), spki);
    let other = Swtpm::start().expect("swtpm 2");
    let e = open_router_key(&other.tcti(), keys.path()).unwrap_err();
    assert!(e.to_string().contains("no key at persistent handle"), "{e}");
    // With its own master key at the same handle, the other TPM still cannot use it.
    let other_keys = tempfile::tempdir().expect("other store");
    TpmKey::create(&other.tcti(), other_keys.path(), "x", false).expect("master key");
    let e = open_router_key(&other.tcti(), keys.path()).unwrap_err();
    assert!(matches!(e, Error::Signer { .. }), "{e:?}");
    assert!(e.to_string().contains("did not wrap this key"), "{e}");
    assert_eq!(
        std::fs::read_dir(keys.path()).expect("dir").count(),
        2,
        "only router.key and router.csr"
    );
    drop(state);
}

#[test]
fn onboarding_creates_the_router_key_when_keygen_has_not_run() {
    let tpm = Swtpm::start().expect("swtpm");
    let keys = tempfile::tempdir().expect("key store");
    let first = open_router_key(&tpm.tcti(), keys.path()).expect("created");
    let second = open_router_key(&tpm.tcti(), keys.path()).expect("opened");
    assert_eq!(
        first.public_key_spki().expect("spki"),
        second.public_key_spki().expect("spki")
    );
    // `keygen --tpm` afterwards does not silently replace it.
    assert!(matches!(
        TpmKey::create(&tpm.tcti(), keys.path(), ROUTER_KEY_NAME, false),
        Err(ssr_tpm::Error::KeyExists { .. })
    ));
}

#[test]
fn refusals_with_the_tpm_key() {
    let tpm = Swtpm::start().expect("swtpm");
    let keys = tempfile::tempdir().expect("key store");
    let signer = open_router_key(&tpm.tcti(), keys.path()).expect("TPM key");
    let spki = signer.public_key_spki().expect("spki");
    // Connections: success, reuse, tampered, bound to another key, wrong PSK.
    let c = Conductor::start(5);
    let r = router(&c, |_| {});

    // Reused token: onboarded once, then refused.
    let token = c.token("router-1", unix_now(), 600, Some(&spki));
    join(&r.config, &token, &signer).expect("first use");
    let again = join(&r.config, &token, &signer);
    assert_eq!(kind(&again), ErrorKind::BadToken);

    // Tampered token (exp changed, signature kept).
    let token = c.token("router-1", unix_now(), 600, Some(&spki));
    let parts: Vec<&str> = token.as_str().split('.').collect();
    let mut claims = token.unverified_claims().clone();
    claims.exp += 3600;
    let payload = <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(
        &serde_json::to_vec(&claims).expect("json"),
    );
    let forged = Token::parse(&format!("{}.{payload}.{}", parts[0], parts[2])).expect("parses");
    let res = join(&r.config, &forged, &signer);
    assert!(
        matches!(
            res,
            Err(Error::Refused {
                code: RefusalCode::BadToken,
                ..
            })
        ),
        "{res:?}"
    );

    // A token bound to another key: the router itself refuses before connecting, and
    // the conductor would too (the proof is checked against the bound thumbprint).
    let stranger = SoftwareSigner::generate(&mut rng());
    let bound = c.token(
        "router-1",
        unix_now(),
        600,
        Some(&stranger.public_key_spki().expect("spki")),
    );
    let res = join(&r.config, &bound, &signer);
    assert_eq!(kind(&res), ErrorKind::BadToken);

    // Wrong PSK on the router side.
    let r2 = router(&c, |v| v["pre-shared-key"] = "W".repeat(48).into());
    let token = c.token("router-1", unix_now(), 600, Some(&spki));
    let res = join(&r2.config, &token, &signer);
    assert_eq!(res, Err(Error::PskMismatch { side: "conductor" }));

    // Expired token.
    let token = c.token("router-1", unix_now() - 7200, 3600, Some(&spki));
    let res = join(&r.config, &token, &signer);
    assert!(matches!(res, Err(Error::TokenExpired { .. })), "{res:?}");

    // Conductor certificate from another CA.
    let other = ssr_testkit::http::TlsIdentity::generate(&["127.0.0.1"]).expect("other CA");
    let r3 = router(&c, |_| {});
    std::fs::write(&r3.config.ca_certificate, other.ca_pem()).expect("write");
    let token = c.token("router-1", unix_now(), 600, Some(&spki));
    let res = join(&r3.config, &token, &signer);
    assert_eq!(kind(&res), ErrorKind::ConductorNotTrusted);
}
