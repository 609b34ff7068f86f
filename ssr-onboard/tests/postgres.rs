//! The PostgreSQL used-token store against a real server (a throwaway cluster):
//! single use within one node and across nodes racing, and a database that is gone
//! refuses tokens instead of accepting them unrecorded.

use std::sync::{Arc, Barrier};
use std::thread;

use ssr_onboard::used_tokens::{PgUsedTokens, UsedTokens};

#[test]
fn each_token_id_is_consumed_once_across_nodes() {
    let pg = ssr_testkit::Postgres::start().expect("postgres");
    let mut a = PgUsedTokens::connect(&pg.params()).expect("node a");
    assert!(a.consume("jti-1", 1_900_000_000).expect("consume"));
    assert!(!a.consume("jti-1", 1_900_000_000).expect("again"));
    assert!(a.contains("jti-1").expect("contains"));
    assert!(!a.contains("jti-2").expect("contains"));
    assert!(
        !format!("{a:?}").contains("port="),
        "parameters leak in Debug"
    );

    // Two nodes (own connections, created concurrently) race 200 token ids.
    let barrier = Arc::new(Barrier::new(2));
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            let params = pg.params();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut s = PgUsedTokens::connect(&params).expect("node");
                barrier.wait();
                (0..200)
                    .map(|i| s.consume(&format!("race-{i}"), u64::MAX).expect("consume"))
                    .collect::<Vec<bool>>()
            })
        })
        .collect();
    let won: Vec<Vec<bool>> = nodes.into_iter().map(|h| h.join().expect("node")).collect();
    for (i, (a, b)) in won[0].iter().zip(&won[1]).enumerate() {
        assert!(a ^ b, "token race-{i}: {a} {b}");
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM ssr_used_tokens WHERE jti LIKE 'race-%'")
            .expect("psql")
            .trim(),
        "200"
    );

    // The database goes away: tokens are refused (a storage error), not accepted.
    drop(pg);
    let e = a
        .consume("jti-3", 1_900_000_000)
        .expect_err("database gone");
    assert!(matches!(e, ssr_onboard::Error::Storage { .. }), "{e:?}");
}
