//! The `svr-peers` walk-through for every key-exchange algorithm: two peers over real
//! UDP on loopback authenticate with X.509 certificates, exchange keys, and every
//! genuine packet arrives while the injected replays and forgeries are refused, also
//! after router-east restarts (sequence numbers from 0 again, under a new sender epoch).

use ssr_svr_crypto::kex::KexAlgorithm;

#[test]
fn every_algorithm_converges_and_counts_replays_and_forgeries() {
    for alg in [
        KexAlgorithm::Ffdh4096,
        KexAlgorithm::EcdhP256,
        KexAlgorithm::MlKem768Ffdh4096,
        KexAlgorithm::MlKem768EcdhP256,
    ] {
        // 230 packets: every 50th (i % 50 == 7) replayed, every 50th (i % 50 == 9)
        // preceded by a forged copy, i in 0..230: five of each.
        let s = examples::svr::run(alg, 230).unwrap();
        let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
        assert_eq!(s["algorithm"], alg.name(), "{s}");
        assert_eq!(s["state"], "MKEY_EXCH_COMP", "{s}");
        assert_eq!(n("packets_sent"), 230, "{s}");
        assert_eq!(n("delivered"), 230, "{s}");
        // Five replays, and router-east's last packet from before its restart.
        assert_eq!(n("rejected_replay"), 6, "{s}");
        assert_eq!(n("sender_restarts"), 1, "{s}");
        assert_eq!(n("rejected_tampered"), 5, "{s}");
        assert_eq!(n("peer_certificates_refused"), 0, "{s}");
        // The half-way `metadata-key regenerate` on router-west reached router-east.
        assert_eq!(n("metadata_rekeys"), 1, "{s}");
        assert_eq!(n("router_west_key_index"), 2, "{s}");
        assert_eq!(n("router_east_key_index"), 1, "{s}");
    }
}
