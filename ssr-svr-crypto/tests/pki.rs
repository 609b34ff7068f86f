//! Peer certificates validated by ssr-pki (feature `pki`): real X.509 chains from a test
//! CA (root -> intermediate -> router leaf, rcgen), CRLs, and two peer state machines
//! that authenticate each other with them.
#![cfg(feature = "pki")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use ssr_pki::{Certificate, Crl};
use ssr_svr_crypto::Error;
use ssr_svr_crypto::kex::{KexAlgorithm, PeerAuthenticator};
use ssr_svr_crypto::peer::{
    FailMode, KeyManager, LocalIdentity, Peer, PeerEvent, RekeyInterval, SecurityConfig,
    SecurityState,
};
use ssr_svr_crypto::pki::PkiAuthenticator;
use ssr_testkit::pki::{KeyKind, LEAF_SERIAL, TestPki, key_pair};

/// 2024-06-01, inside every test leaf's validity.
const JUNE_2024: u64 = 1_717_200_000;

fn cert(pem: &str) -> Certificate {
    Certificate::from_pem(pem).expect("test certificate")
}

/// A router's P-256 key and a leaf for it with commonName `cn`.
fn router(pki: &TestPki, cn: &str, serial: u64, years: (i32, i32)) -> (SigningKey, Certificate) {
    let key = key_pair(KeyKind::EcdsaP256);
    let signing = SigningKey::from_pkcs8_der(&key.serialize_der()).expect("P-256 PKCS#8");
    (signing, cert(&pki.issue_leaf(cn, serial, &key, years)))
}

fn authenticator(pki: &TestPki) -> PkiAuthenticator {
    PkiAuthenticator::new(vec![cert(&pki.root_pem)], vec![cert(&pki.intermediate_pem)])
}

fn refused(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::PeerCertificate { reason }) => reason,
        other => panic!("expected a refused peer certificate, got {other:?}"),
    }
}

#[test]
fn a_valid_chain_yields_the_leaf_common_name_and_key() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "svr");
    let (key, leaf) = router(&pki, "router-east", 0x4001, (2024, 2026));
    let auth = authenticator(&pki);
    let p = auth.authenticate(leaf.der(), JUNE_2024).unwrap();
    assert_eq!(p.common_name, "router-east");
    assert_eq!(&p.public_key, key.verifying_key());
    assert_eq!(auth.counters(), Default::default());
}

#[test]
fn refusals_name_the_reason_and_count_as_expired_or_invalid() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "svr");
    let (_, leaf) = router(&pki, "router-east", 0x4001, (2024, 2025));
    let auth = authenticator(&pki);

    // Expired (2026) and not yet valid (2023).
    refused(auth.authenticate(leaf.der(), 1_767_225_600));
    assert_eq!(auth.counters().peer_certificate_expired, 1);
    refused(auth.authenticate(leaf.der(), 1_672_531_200));
    // A leaf of another authority with the same names.
    let other = TestPki::new(KeyKind::EcdsaP256, "svr");
    let (_, stranger) = router(&other, "router-east", 0x4001, (2024, 2025));
    refused(auth.authenticate(stranger.der(), JUNE_2024));
    // Not a certificate at all.
    refused(auth.authenticate(b"not DER", JUNE_2024));
    // A CA certificate is not a router's.
    refused(auth.authenticate(cert(&pki.intermediate_pem).der(), JUNE_2024));
    let c = auth.counters();
    assert_eq!(c.peer_certificate_expired, 1);
    assert_eq!(c.peer_certificate_invalid, 4, "{c:?}");
    assert_eq!(c.peer_certificate_revoked, 0);
    assert_eq!(
        c.certificate_invalid, 0,
        "a peer's refusal is not the router's own"
    );
}

#[test]
fn a_valid_rsa_chain_is_refused_for_its_key() {
    let pki = TestPki::new(KeyKind::Rsa2048, "svr-rsa");
    let auth = authenticator(&pki);
    let reason = refused(auth.authenticate(cert(&pki.leaf_pem).der(), JUNE_2024));
    assert!(reason.contains("not P-256"), "{reason}");
    assert_eq!(auth.counters().peer_certificate_invalid, 1);
}

#[test]
fn a_revoked_peer_is_refused_only_with_peer_validation() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "svr");
    let leaf = cert(&pki.leaf_pem);
    let crl = Crl::from_pem(&pki.intermediate_crl(&[LEAF_SERIAL])).expect("CRL");

    let mut off = authenticator(&pki);
    off.set_crls(vec![crl.clone()]);
    assert!(!off.peer_validation());
    assert_eq!(
        off.authenticate(leaf.der(), JUNE_2024).unwrap().common_name,
        pki.leaf_cn
    );

    let mut on = authenticator(&pki).with_peer_validation(true);
    on.set_crls(vec![crl]);
    let reason = refused(on.authenticate(leaf.der(), JUNE_2024));
    assert!(reason.to_lowercase().contains("revoked"), "{reason}");
    assert_eq!(on.counters().peer_certificate_revoked, 1);

    // A CRL that does not list the leaf lets it through.
    on.set_crls(vec![
        Crl::from_pem(&pki.intermediate_crl(&[0x7777])).expect("CRL"),
    ]);
    assert!(on.authenticate(leaf.der(), JUNE_2024).is_ok());
}

/// Two peers, each with its own leaf from one authority (west presents `west_cert`
/// instead when given), exchanging control messages until both are quiet.
fn peering<'a>(
    pki: &TestPki,
    auth: &'a PkiAuthenticator,
    west_cert: Option<Certificate>,
    fail_mode: FailMode,
) -> (Peer<&'a PkiAuthenticator>, Peer<&'a PkiAuthenticator>) {
    let (west_key, own_west) = router(pki, "router-west", 0x5001, (2024, 2026));
    let west_cert = west_cert.unwrap_or(own_west);
    let (east_key, east_cert) = router(pki, "router-east", 0x5002, (2024, 2026));
    let cfg = SecurityConfig::new(
        KexAlgorithm::EcdhP256,
        RekeyInterval::default(),
        RekeyInterval::default(),
        30,
        3600,
        fail_mode,
    )
    .unwrap();
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let mut make = |key: SigningKey, cert: &Certificate, me: &str, them: &str| {
        let mut p = Peer::new(
            cfg.clone(),
            LocalIdentity {
                cert_der: cert.der().to_vec(),
                signing_key: Arc::new(key),
                common_name: me.into(),
            },
            them,
            auth,
            Duration::ZERO,
            now,
            JUNE_2024,
        );
        p.handle_local_metadata_key(&KeyManager::new(&mut rng, now), now);
        p
    };
    let mut west = make(west_key, &west_cert, "router-west", "router-east");
    let mut east = make(east_key, &east_cert, "router-east", "router-west");
    for _ in 0..20 {
        let mut quiet = true;
        while let Some(m) = west.poll_transmit() {
            quiet = false;
            let _ = east.handle_control(&m, now, &mut rng);
        }
        while let Some(m) = east.poll_transmit() {
            quiet = false;
            let _ = west.handle_control(&m, now, &mut rng);
        }
        if quiet {
            break;
        }
    }
    (west, east)
}

#[test]
fn two_peers_with_certificates_from_one_authority_exchange_keys_and_data() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "svr");
    let auth = authenticator(&pki).with_peer_validation(true);
    let (mut west, mut east) = peering(&pki, &auth, None, FailMode::FailSoft);
    assert_eq!(west.state(), SecurityState::MkeyExchComp);
    assert_eq!(east.state(), SecurityState::MkeyExchComp);
    let mut pkt = vec![0u8; 512];
    let n = west.seal_data(b"hello east", &mut pkt).unwrap();
    let mut out = vec![0u8; 512];
    let m = east
        .open_data(&pkt[..n], &mut out, std::time::Instant::now())
        .unwrap();
    assert_eq!(&out[..m], b"hello east");
    assert_eq!(auth.counters(), Default::default());
}

#[test]
fn a_revoked_peer_certificate_removes_the_peering_with_fail_hard() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "svr");
    // West presents a certificate the intermediate has revoked.
    let key = key_pair(KeyKind::EcdsaP256);
    let revoked = cert(&pki.issue_leaf("router-west", 0x6001, &key, (2024, 2026)));
    let mut auth = authenticator(&pki).with_peer_validation(true);
    auth.set_crls(vec![
        Crl::from_pem(&pki.intermediate_crl(&[0x6001])).expect("CRL"),
    ]);
    let (_west, mut east) = peering(&pki, &auth, Some(revoked), FailMode::FailHard);
    assert_eq!(east.state(), SecurityState::Removed);
    assert!(!east.in_service());
    let mut events = Vec::new();
    while let Some(e) = east.poll_event() {
        events.push(e);
    }
    assert!(
        events.iter().any(|e| matches!(
            e,
            PeerEvent::UnableToAuthenticate(Error::PeerCertificate { .. })
        )),
        "{events:?}"
    );
    assert!(events.contains(&PeerEvent::PeeringRemoved), "{events:?}");
    assert!(auth.counters().peer_certificate_revoked >= 1);
}
