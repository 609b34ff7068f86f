#![no_main]
//! The HA node's imports: `KeyManager::import_ha` and `Peer::import_ha` on arbitrary
//! bytes. Neither may panic; a refused peer import changes nothing (the peer's own
//! export is the same before and after); an accepted key-manager import exports
//! exactly what it imported.
use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;
use ssr_svr_crypto::kex::StaticAuthenticator;
use ssr_svr_crypto::peer::{KeyManager, LocalIdentity, Peer, SecurityConfig};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    if let Ok(km) = KeyManager::import_ha(data, now) {
        assert_eq!(km.export_ha().secret_bytes(), data);
    }
    let me = LocalIdentity {
        cert_der: vec![0x30, 0x00],
        signing_key: Arc::new(p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap()),
        common_name: "router-east".into(),
    };
    let mut p = Peer::new(
        SecurityConfig::default(),
        me,
        "router-west",
        StaticAuthenticator::new(),
        std::time::Duration::ZERO,
        now,
        1_700_000_000,
    );
    let before = p.export_ha(now).secret_bytes().to_vec();
    let mut rng = StdRng::seed_from_u64(1);
    if p.import_ha(data, now, &mut rng).is_err() {
        assert_eq!(p.export_ha(now).secret_bytes(), before);
    }
});
