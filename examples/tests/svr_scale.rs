//! The svr-scale simulation, scaled down: every peering keyed and in service, rekeys at
//! the interval, no data packet lost across any key change.

use examples::svr_scale::{ScaleConfig, run};

#[test]
fn many_peers_rekey_for_hours_without_losing_a_packet() {
    let cfg = ScaleConfig {
        peers: 60,
        hours: 4,
        rekey_hours: 1,
        ..ScaleConfig::default()
    };
    let r = run(&cfg).unwrap();
    assert_eq!(r.not_in_service, 0, "{:?}", r);
    assert_eq!(r.packets_failed, 0, "{:?}", r);
    assert!(
        r.packets_in_overlaps > 0,
        "packets crossed key changes: {r:?}"
    );
    // Only packets still in flight when the run ends are missing.
    assert!(r.packets_sent - r.packets_delivered <= 2 * 60, "{r:?}");
    // Start-up, then one rekey per peer per hour (jitter up to 6 minutes).
    assert!(
        r.key_exchanges >= 60 * 3 && r.key_exchanges <= 60 * 5,
        "{r:?}"
    );
    assert!(r.peak_kex_per_s_startup >= 1 && r.rekey_cpu_s_per_day > 0.0);
}
