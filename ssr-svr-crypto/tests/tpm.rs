//! The router key held in a real (software) TPM signs this router's SVR key exchange:
//! swtpm started per test by the testkit, the key being ssr-tpm's key store entry
//! `router` (the key `ssr cert keygen --tpm` creates, that signs the CSR and the
//! onboarding proof), its certificate issued by a throwaway CA (ssr-testkit's
//! `TestPki`) and validated by `PkiAuthenticator` on the other router.
#![cfg(feature = "tpm")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rand::SeedableRng;
use rand::rngs::StdRng;
use ssr_pki::Certificate;
use ssr_pki::tpm::{ROUTER_KEY_NAME, TpmKey};
use ssr_svr_crypto::Error;
use ssr_svr_crypto::kex::{KexAlgorithm, KexSigner};
use ssr_svr_crypto::peer::{
    FailMode, KeyManager, LocalIdentity, Peer, PeerEvent, RekeyInterval, SecurityConfig,
    SecurityState,
};
use ssr_svr_crypto::pki::{PkiAuthenticator, RouterKeySigner};
use ssr_testkit::Swtpm;
use ssr_testkit::pki::{KeyKind, TestPki, key_pair};

/// 2024-06-01, inside every test leaf's validity.
const JUNE_2024: u64 = 1_717_200_000;

type Signer = Arc<dyn KexSigner + Send + Sync>;
type P<'a> = Peer<&'a PkiAuthenticator>;

fn cert(pem: &str) -> Certificate {
    Certificate::from_pem(pem).expect("test certificate")
}

/// A software-keyed router: its key and a leaf for it.
fn software_router(pki: &TestPki, cn: &str, serial: u64) -> (Signer, Certificate) {
    let key = key_pair(KeyKind::EcdsaP256);
    let signing = SigningKey::from_pkcs8_der(&key.serialize_der()).expect("P-256 PKCS#8");
    (
        Arc::new(signing),
        cert(&pki.issue_leaf(cn, serial, &key, (2024, 2026))),
    )
}

/// A leaf for the TPM key's public part (`TpmKey::spki_der`).
fn tpm_leaf(pki: &TestPki, key: &TpmKey, cn: &str, serial: u64) -> Certificate {
    let vk = VerifyingKey::from_public_key_der(key.spki_der()).expect("P-256 SPKI");
    let point = vk.to_sec1_point(false);
    cert(&pki.issue_leaf_for_p256_point(cn, serial, point.as_bytes(), (2024, 2026)))
}

struct Side<'a> {
    signer: Signer,
    cert: &'a Certificate,
    cn: &'a str,
}

/// Two peer state machines (ECDH P-256) exchanging control messages until quiet.
fn peering<'a>(auth: &'a PkiAuthenticator, a: Side<'_>, b: Side<'_>) -> (P<'a>, P<'a>) {
    let cfg = SecurityConfig::new(
        KexAlgorithm::EcdhP256,
        RekeyInterval::default(),
        RekeyInterval::default(),
        30,
        3600,
        FailMode::FailSoft,
    )
    .unwrap();
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(11);
    let mut make = |me: &Side<'_>, them: &Side<'_>| {
        let mut p = Peer::new(
            cfg.clone(),
            LocalIdentity {
                cert_der: me.cert.der().to_vec(),
                signing_key: Arc::clone(&me.signer),
                common_name: me.cn.into(),
            },
            them.cn,
            auth,
            Duration::ZERO,
            now,
            JUNE_2024,
        );
        p.handle_local_metadata_key(&KeyManager::new(&mut rng, now), now);
        p
    };
    let mut pa = make(&a, &b);
    let mut pb = make(&b, &a);
    for _ in 0..20 {
        let mut quiet = true;
        while let Some(m) = pa.poll_transmit() {
            quiet = false;
            let _ = pb.handle_control(&m, now, &mut rng);
        }
        while let Some(m) = pb.poll_transmit() {
            quiet = false;
            let _ = pa.handle_control(&m, now, &mut rng);
        }
        if quiet {
            break;
        }
    }
    (pa, pb)
}

fn events(p: &mut P<'_>) -> Vec<PeerEvent> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

fn data_flows(from: &mut P<'_>, to: &mut P<'_>) {
    let mut pkt = vec![0u8; 512];
    let n = from
        .seal_data(b"over the TPM-keyed peering", &mut pkt)
        .unwrap();
    let mut out = vec![0u8; 512];
    let m = to.open_data(&pkt[..n], &mut out, Instant::now()).unwrap();
    assert_eq!(&out[..m], b"over the TPM-keyed peering");
}

fn tpm_side<'a>(signer: &Signer, cert: &'a Certificate, cn: &'a str) -> Side<'a> {
    Side {
        signer: Arc::clone(signer),
        cert,
        cn,
    }
}

#[test]
fn the_tpm_router_key_signs_the_key_exchange_and_another_keys_certificate_is_refused() {
    let swtpm = Swtpm::start().expect("swtpm");
    let store = tempfile::tempdir().expect("key store");
    // `ssr cert keygen --tpm`: the key store entry `router`.
    let key = TpmKey::create(&swtpm.tcti(), store.path(), ROUTER_KEY_NAME, false).expect("create");
    let pki = TestPki::new(KeyKind::EcdsaP256, "svr");
    let auth = PkiAuthenticator::new(vec![cert(&pki.root_pem)], vec![cert(&pki.intermediate_pem)]);
    let east_cert = tpm_leaf(&pki, &key, "router-east", 0x7001);
    let zulu_cert = tpm_leaf(&pki, &key, "router-zulu", 0x7002);
    let tpm: Signer = Arc::new(RouterKeySigner::new(key));
    let (west_key, west_cert) = software_router(&pki, "router-west", 0x7003);
    let west = || tpm_side(&west_key, &west_cert, "router-west");

    // The TPM router as initiator ("router-east" < "router-west"): its hello is signed
    // in the TPM; then as responder ("router-zulu"): its reply.
    for (tpm_cert, tpm_cn) in [(&east_cert, "router-east"), (&zulu_cert, "router-zulu")] {
        let (mut r, mut w) = peering(&auth, tpm_side(&tpm, tpm_cert, tpm_cn), west());
        assert_eq!(r.state(), SecurityState::MkeyExchComp, "{tpm_cn}");
        assert_eq!(w.state(), SecurityState::MkeyExchComp, "{tpm_cn}");
        assert!(events(&mut w).contains(&PeerEvent::PeerKeyEstablished));
        assert_eq!(w.status().key_change_errors, 0);
        assert_eq!(r.status().key_change_errors, 0);
        data_flows(&mut r, &mut w);
        data_flows(&mut w, &mut r);
    }
    assert_eq!(auth.counters(), Default::default());

    // A valid certificate of the same authority and name, but for another key than the
    // TPM's: the TPM's signature does not verify under it; no key, in either role.
    let (_, other_east) = software_router(&pki, "router-east", 0x7004);
    let (_, other_zulu) = software_router(&pki, "router-zulu", 0x7005);
    for (tpm_cert, tpm_cn) in [(&other_east, "router-east"), (&other_zulu, "router-zulu")] {
        let (mut r, mut w) = peering(&auth, tpm_side(&tpm, tpm_cert, tpm_cn), west());
        assert_ne!(w.state(), SecurityState::MkeyExchComp, "{tpm_cn}");
        assert_ne!(r.state(), SecurityState::MkeyExchComp, "{tpm_cn}");
        assert!(!events(&mut w).contains(&PeerEvent::PeerKeyEstablished));
        if tpm_cn == "router-east" {
            // (A responder derives its key when it replies; the initiator refuses that
            // reply, so neither side ever reaches MKEY_EXCH_COMP.)
            assert!(!events(&mut r).contains(&PeerEvent::PeerKeyEstablished));
        }
        // West checked the TPM's signature (the hello, then the reply) and counted the
        // failure.
        assert!(w.status().key_change_errors > 0, "{tpm_cn}");
    }

    // The TPM gone: the hello cannot be signed; nothing is sent for it, the failure is
    // reported and counted.
    drop(swtpm.stop().expect("stop swtpm"));
    let (mut r, w) = peering(&auth, tpm_side(&tpm, &east_cert, "router-east"), west());
    assert_ne!(w.state(), SecurityState::MkeyExchComp);
    let ev = events(&mut r);
    assert!(
        ev.iter()
            .any(|e| matches!(e, PeerEvent::SigningFailed(Error::Signer { reason }) if reason.contains("tpm key"))),
        "{ev:?}"
    );
    assert!(r.status().key_change_errors > 0);
}
