//! Onboarding end to end with the router key held in a real (software) TPM: swtpm
//! started per test by the testkit, the key used over ESAPI, real TLS on loopback.

mod common;

use common::*;
use ssr_onboard::RouterSigner;
use ssr_onboard::https::join;
use ssr_onboard::tpm::TpmSigner;
use ssr_testkit::Swtpm;

#[test]
fn onboarding_with_a_swtpm_held_router_key() {
    let tpm = Swtpm::start().expect("swtpm");
    let signer = TpmSigner::open(&tpm.tcti()).expect("TPM key");
    let spki = signer.public_key_spki().expect("spki");

    // The TPM's signatures verify with the public key it reports.
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
    // The token is bound to the TPM-held key.
    let token = c.token("router-1", unix_now(), 600, Some(&spki));
    let out = join(&r.config, &token, &signer).expect("onboarded with the TPM key");
    assert_eq!(out.ssh_port, 930);
    c.finish();
    let ev = c.audit().pop().expect("audit");
    assert_eq!(ev["event"], "onboarded");
    assert_eq!(
        ev["detail"],
        format!("router key {}", ssr_onboard::token::key_thumbprint(&spki))
    );

    // The key is the TPM's: after a TPM restart over the same state it is the same
    // key; a different TPM has a different one.
    drop(signer);
    let state = tpm.stop().expect("stop").expect("state dir");
    let tpm = Swtpm::builder()
        .state_dir(state.path())
        .start()
        .expect("restart");
    let again = TpmSigner::open(&tpm.tcti()).expect("TPM key again");
    assert_eq!(again.public_key_spki().expect("spki"), spki);
    let other = Swtpm::start().expect("swtpm 2");
    let other_key = TpmSigner::open(&other.tcti()).expect("other key");
    assert_ne!(other_key.public_key_spki().expect("spki"), spki);
    drop(state);
}
