//! Deterministic simulations of peers with a virtual clock over a lossy, reordering,
//! duplicating network (quinn's `Pair` idea): no sleeps, every run replays exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use p256::ecdsa::SigningKey;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ssr_svr_crypto::kex::{KexAlgorithm, KexSigner, StaticAuthenticator};
use ssr_svr_crypto::packet::{CbcHmacOpener, Suite, gcm_sealed_len, sealed_len};
use ssr_svr_crypto::peer::{
    FailMode, KeyManager, LocalIdentity, Peer, PeerEvent, RekeyInterval, SecurityConfig,
    SecurityState,
};
use ssr_svr_crypto::session::{SessionRx, SessionTx};

struct Net {
    queue: Vec<(Instant, usize, usize, Vec<u8>, bool)>, // (at, from, to, bytes, is_data)
    loss: f64,
    dup: f64,
    jitter_ms: u64,
    down: Vec<bool>,
    rng: StdRng,
    sent_data: u64,
    delivered_data: u64,
    /// Every message handed to the network, in order (for capture-and-replay tests):
    /// (from, to, bytes, is_data).
    tap: Vec<(usize, usize, Vec<u8>, bool)>,
}

impl Net {
    fn send(&mut self, now: Instant, from: usize, to: usize, b: Vec<u8>, data: bool) {
        if data {
            self.sent_data += 1;
        }
        self.tap.push((from, to, b.clone(), data));
        if self.down[from] || self.down[to] || self.rng.random_bool(self.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let d = Duration::from_millis(5 + self.rng.random_range(0..=self.jitter_ms));
            self.queue.push((now + d, from, to, b.clone(), data));
        }
    }
    fn next(&self) -> Option<Instant> {
        self.queue.iter().map(|q| q.0).min()
    }
}

struct Node {
    peers: Vec<(usize, Peer<StaticAuthenticator>)>,
    km: KeyManager,
    rng: StdRng,
}

struct World {
    start: Instant,
    now: Instant,
    nodes: Vec<Node>,
    net: Net,
    data_every: Option<Duration>,
    next_data: Instant,
    data_open_failures: u64,
    data_replays: u64,
    keys: Vec<Arc<SigningKey>>,
    auth: StaticAuthenticator,
    cfgs: Vec<SecurityConfig>,
    incarnations: u64,
}

fn cn(i: usize) -> String {
    format!("router-{i:02}")
}

fn cert(i: usize) -> Vec<u8> {
    format!("test certificate of {}", cn(i)).into_bytes()
}

impl World {
    fn new(n: usize, cfg: SecurityConfig, seed: u64, loss: f64, dup: f64) -> Self {
        Self::new_mixed(vec![cfg; n], seed, loss, dup)
    }

    /// Router `i` configured with `cfgs[i]`.
    fn new_mixed(cfgs: Vec<SecurityConfig>, seed: u64, loss: f64, dup: f64) -> Self {
        let n = cfgs.len();
        let start = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed);
        let keys: Vec<Arc<SigningKey>> = (0..n)
            .map(|_| {
                Arc::new(
                    <SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(&mut rng),
                )
            })
            .collect();
        let mut auth = StaticAuthenticator::new();
        for (i, k) in keys.iter().enumerate() {
            auth.trust(&cert(i), &cn(i), *k.verifying_key());
        }
        let mut nodes = Vec::new();
        #[allow(clippy::needless_range_loop)]
        for i in 0..n {
            let mut nrng = StdRng::seed_from_u64(seed * 1000 + i as u64);
            let km = KeyManager::new(&mut nrng, start);
            let mut peers = Vec::new();
            for j in (0..n).filter(|&j| j != i) {
                let me = LocalIdentity {
                    cert_der: cert(i),
                    signing_key: keys[i].clone(),
                    common_name: cn(i),
                };
                let jitter = Duration::from_secs(nrng.random_range(0..360));
                let mut p = Peer::new(
                    cfgs[i].clone(),
                    me,
                    cn(j),
                    auth.clone(),
                    jitter,
                    start,
                    1_700_000_000,
                );
                p.handle_local_metadata_key(&km, start);
                peers.push((j, p));
            }
            nodes.push(Node {
                peers,
                km,
                rng: nrng,
            });
        }
        let net = Net {
            queue: Vec::new(),
            loss,
            dup,
            jitter_ms: 200,
            down: vec![false; n],
            rng: StdRng::seed_from_u64(seed ^ 0xabcdef),
            sent_data: 0,
            delivered_data: 0,
            tap: Vec::new(),
        };
        let mut w = Self {
            start,
            now: start,
            nodes,
            net,
            data_every: None,
            next_data: start,
            data_open_failures: 0,
            data_replays: 0,
            keys,
            auth,
            cfgs,
            incarnations: seed * 1000 + 500,
        };
        w.drain();
        w
    }

    fn drain(&mut self) {
        for i in 0..self.nodes.len() {
            for k in 0..self.nodes[i].peers.len() {
                let j = self.nodes[i].peers[k].0;
                while let Some(m) = self.nodes[i].peers[k].1.poll_transmit() {
                    self.net.send(self.now, i, j, m, false);
                }
            }
        }
    }

    fn peer_mut(&mut self, i: usize, j: usize) -> &mut Peer<StaticAuthenticator> {
        &mut self.nodes[i].peers.iter_mut().find(|p| p.0 == j).unwrap().1
    }

    fn peer(&self, i: usize, j: usize) -> &Peer<StaticAuthenticator> {
        &self.nodes[i].peers.iter().find(|p| p.0 == j).unwrap().1
    }

    /// Advances to the earliest event (bounded by `until`) and processes it.
    fn step(&mut self, until: Instant) -> bool {
        let timers = self
            .nodes
            .iter()
            .flat_map(|n| n.peers.iter().filter_map(|p| p.1.poll_timeout()))
            .min();
        let data = self.data_every.map(|_| self.next_data);
        let Some(t) = [self.net.next(), timers, data].into_iter().flatten().min() else {
            return false;
        };
        if t > until {
            return false;
        }
        self.now = self.now.max(t);
        let now = self.now;
        // Deliver due packets.
        let (due, rest): (Vec<_>, Vec<_>) = self.net.queue.drain(..).partition(|q| q.0 <= now);
        self.net.queue = rest;
        for (_, from, to, bytes, is_data) in due {
            if is_data {
                self.net.delivered_data += 1;
                let mut out = vec![0u8; bytes.len()];
                match self.peer_mut(to, from).open_data(&bytes, &mut out, now) {
                    Ok(_) => {}
                    Err(ssr_svr_crypto::Error::Replay { .. }) => self.data_replays += 1,
                    Err(_) => self.data_open_failures += 1,
                }
            } else {
                let node = &mut self.nodes[to];
                let p = &mut node.peers.iter_mut().find(|p| p.0 == from).unwrap().1;
                let _ = p.handle_control(&bytes, now, &mut node.rng);
            }
        }
        for node in &mut self.nodes {
            for (_, p) in &mut node.peers {
                if p.poll_timeout().is_some_and(|t| t <= now) {
                    p.handle_timeout(now, &mut node.rng);
                }
            }
        }
        if let Some(every) = self.data_every.filter(|_| self.next_data <= now) {
            {
                self.next_data = now + every;
                let mut sends = Vec::new();
                for (i, node) in self.nodes.iter_mut().enumerate() {
                    for (j, p) in &mut node.peers {
                        let mut buf = vec![0u8; 200];
                        if let Ok(n) = p.seal_data(b"svr data packet payload", &mut buf) {
                            buf.truncate(n);
                            sends.push((i, *j, buf));
                        }
                    }
                }
                for (i, j, b) in sends {
                    self.net.send(now, i, j, b, true);
                }
            }
        }
        self.drain();
        true
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = until;
    }

    fn all_complete(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.peers
                .iter()
                .all(|p| p.1.state() == SecurityState::MkeyExchComp)
        })
    }

    /// Router `i`'s process restarts: all its state is lost (a new metadata key with
    /// index 1, new peer state machines), its certificate and name stay.
    fn restart(&mut self, i: usize) {
        self.incarnations += 1;
        let mut nrng = StdRng::seed_from_u64(self.incarnations);
        let km = KeyManager::new(&mut nrng, self.now);
        let n = self.nodes.len();
        let mut peers = Vec::new();
        for j in (0..n).filter(|&j| j != i) {
            let me = LocalIdentity {
                cert_der: cert(i),
                signing_key: self.keys[i].clone(),
                common_name: cn(i),
            };
            let mut p = Peer::new(
                self.cfgs[i].clone(),
                me,
                cn(j),
                self.auth.clone(),
                Duration::from_secs(nrng.random_range(0..360)),
                self.now,
                self.unix(),
            );
            p.handle_local_metadata_key(&km, self.now);
            peers.push((j, p));
        }
        self.nodes[i] = Node {
            peers,
            km,
            rng: nrng,
        };
        self.drain();
    }

    /// The routers' (synchronised) wall clock at the current virtual time.
    fn unix(&self) -> u64 {
        1_700_000_000 + self.now.duration_since(self.start).as_secs()
    }

    fn reset_counters(&mut self) {
        self.data_open_failures = 0;
        self.data_replays = 0;
    }

    fn regenerate(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.km.regenerate(&mut node.rng, now);
        for (_, p) in &mut node.peers {
            p.handle_local_metadata_key(&node.km, now);
        }
        self.drain();
    }
}

fn cfg(alg: KexAlgorithm, rekey_h: u16) -> SecurityConfig {
    SecurityConfig::new(
        alg,
        RekeyInterval::hours(rekey_h).unwrap(),
        RekeyInterval::default(),
        30,
        3600,
        FailMode::FailSoft,
    )
    .unwrap()
}

#[test]
fn two_peers_converge_over_a_bad_network_for_every_algorithm() {
    for (seed, alg) in [
        (1, KexAlgorithm::EcdhP256),
        (2, KexAlgorithm::Ffdh4096),
        (3, KexAlgorithm::MlKem768EcdhP256),
        (4, KexAlgorithm::MlKem768Ffdh4096),
    ] {
        let mut w = World::new(2, cfg(alg, 24), seed, 0.3, 0.2);
        w.run_for(Duration::from_secs(600));
        assert!(w.all_complete(), "{alg:?}: {:?}", w.peer(0, 1).status());
        let a = w.peer(0, 1).status();
        let b = w.peer(1, 0).status();
        assert_eq!(a.salt, b.peer_salt);
        assert_eq!(a.peer_salt, b.salt);
        assert_eq!(a.key_index, b.peer_key_index);
        assert!(a.cert_rec && a.cert_ack && a.salt_rec && a.salt_ack && a.key_rec && a.key_ack);
        // Keys work: data flows both ways.
        w.data_every = Some(Duration::from_secs(1));
        w.next_data = w.now;
        w.run_for(Duration::from_secs(60));
        assert_eq!(w.data_open_failures, 0);
        assert!(w.peer(0, 1).status().data.delivered > 20);
        assert!(w.peer(1, 0).status().data.delivered > 20);
    }
}

#[test]
fn rekeys_lose_no_packets_thanks_to_the_overlap() {
    let mut w = World::new(2, cfg(KexAlgorithm::EcdhP256, 1), 7, 0.05, 0.1);
    w.run_for(Duration::from_secs(300));
    assert!(w.all_complete());
    w.data_every = Some(Duration::from_millis(500));
    w.next_data = w.now;
    for hour in 0..5 {
        w.run_for(Duration::from_secs(1800));
        w.regenerate(hour % 2); // manual metadata-key regenerate, alternating routers
        w.run_for(Duration::from_secs(1800));
    }
    let a = w.peer(0, 1).status();
    let b = w.peer(1, 0).status();
    assert!(
        a.peer_rekey_count >= 5,
        "peer key rekeyed every hour: {}",
        a.peer_rekey_count
    );
    assert_eq!(a.peer_rekey_count, b.peer_rekey_count);
    assert!(a.key_index.unwrap() >= 3 && b.key_index.unwrap() >= 3);
    assert_eq!(w.data_open_failures, 0, "no packet lost to a key change");
    assert!(
        w.data_replays > 0,
        "the network duplicated packets and they were rejected"
    );
    assert_eq!(a.data.replayed + b.data.replayed, w.data_replays);
    assert_eq!(
        a.data.delivered + b.data.delivered + w.data_replays,
        w.net.delivered_data
    );
    assert!(w.all_complete());
}

#[test]
fn timeout_invalid_then_retry_at_timeout_interval_and_recover() {
    let mut w = World::new(2, cfg(KexAlgorithm::EcdhP256, 24), 9, 0.0, 0.0);
    w.net.down[1] = true;
    w.run_for(Duration::from_secs(2 * 3600));
    let st = w.peer(0, 1).status();
    assert_eq!(st.state, SecurityState::Invalid);
    assert!(!w.peer(0, 1).in_service());
    let mut events = Vec::new();
    while let Some(e) = w.peer_mut(0, 1).poll_event() {
        events.push(e);
    }
    assert!(events.contains(&PeerEvent::PeerInvalid));
    // While invalid the next attempt is a full timeout interval away.
    let next = w.peer(0, 1).poll_timeout().unwrap();
    assert!(
        next > w.now + Duration::from_secs(60),
        "retry at the timeout interval"
    );
    // Interface up: retry at once, recover within seconds.
    w.net.down[1] = false;
    let now = w.now;
    {
        let node = &mut w.nodes[0];
        node.peers[0].1.handle_interface_up(now, &mut node.rng);
    }
    {
        let node = &mut w.nodes[1];
        node.peers[0].1.handle_interface_up(now, &mut node.rng);
    }
    w.drain();
    w.run_for(Duration::from_secs(5));
    assert!(w.all_complete(), "{:?}", w.peer(0, 1).status());
}

#[test]
fn retransmits_follow_the_configured_interval() {
    let mut w = World::new(2, cfg(KexAlgorithm::EcdhP256, 24), 10, 0.0, 0.0);
    w.net.down[1] = true;
    let t0 = w.now;
    let mut wakeups = Vec::new();
    while w.now < t0 + Duration::from_secs(600) {
        let t = w.peer(0, 1).poll_timeout().unwrap();
        wakeups.push(t.duration_since(t0).as_secs());
        w.run_for(t.duration_since(w.now) + Duration::from_millis(1));
    }
    // Every 30 s (peer-key-retransmit-interval).
    for pair in wakeups.windows(2) {
        assert_eq!(pair[1] - pair[0], 30, "{wakeups:?}");
    }
}

#[test]
fn many_peers_converge_with_jittered_rekeys() {
    let mut w = World::new(6, cfg(KexAlgorithm::EcdhP256, 1), 11, 0.2, 0.1);
    w.run_for(Duration::from_secs(900));
    assert!(w.all_complete());
    let nexts: Vec<_> = (0..6)
        .flat_map(|i| (0..6).filter(move |&j| j != i).map(move |j| (i, j)))
        .filter_map(|(i, j)| w.peer(i, j).status().next_rekey)
        .collect();
    let mut uniq = nexts.clone();
    uniq.sort();
    uniq.dedup();
    assert!(
        uniq.len() > 10,
        "rekeys are spread out: {} distinct of {}",
        uniq.len(),
        nexts.len()
    );
    w.data_every = Some(Duration::from_secs(2));
    w.next_data = w.now;
    w.run_for(Duration::from_secs(3 * 3600));
    for i in 0..6 {
        for j in (0..6).filter(|&j| j != i) {
            let st = w.peer(i, j).status();
            assert_eq!(st.state, SecurityState::MkeyExchComp, "{i}->{j}: {st:?}");
        }
    }
    assert_eq!(w.data_open_failures, 0);
}

#[test]
fn invalid_certificate_fail_soft_and_fail_hard() {
    for mode in [FailMode::FailSoft, FailMode::FailHard] {
        let c = SecurityConfig::new(
            KexAlgorithm::EcdhP256,
            RekeyInterval::default(),
            RekeyInterval::NEVER,
            5,
            60,
            mode,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let ka = <SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(&mut rng);
        let kb = <SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(&mut rng);
        let mut auth = StaticAuthenticator::new();
        auth.trust(&cert(1), &cn(1), *kb.verifying_key());
        auth.revoke(&cert(1));
        let now = Instant::now();
        let me = LocalIdentity {
            cert_der: cert(0),
            signing_key: Arc::new(ka),
            common_name: cn(0),
        };
        let mut p = Peer::new(c, me, cn(1), auth, Duration::ZERO, now, 0);
        let msg = ssr_svr_crypto::peer::Control::Cert(cert(1)).encode();
        assert!(p.handle_control(&msg, now, &mut rng).is_err());
        let mut ev = Vec::new();
        while let Some(e) = p.poll_event() {
            ev.push(e);
        }
        assert!(matches!(
            ev.first(),
            Some(PeerEvent::UnableToAuthenticate(_))
        ));
        match mode {
            FailMode::FailHard => {
                assert_eq!(p.state(), SecurityState::Removed);
                assert!(ev.contains(&PeerEvent::PeeringRemoved));
                assert_eq!(p.poll_timeout(), None);
            }
            FailMode::FailSoft => {
                assert_ne!(p.state(), SecurityState::Removed);
                assert!(p.poll_timeout().is_some(), "keeps trying");
            }
        }
    }
}

#[test]
fn ha_export_import_keeps_the_metadata_key() {
    let mut rng = StdRng::seed_from_u64(6);
    let now = Instant::now();
    let mut km = KeyManager::new(&mut rng, now);
    let exp = km.regenerate(&mut rng, now);
    assert_eq!(km.index(), 2);
    let redundant = KeyManager::import_ha(exp.secret_bytes(), now).unwrap();
    assert_eq!(redundant.index(), 2);
    assert_eq!(redundant.key(), km.key());
    assert_eq!(redundant.state_str(), "Redundant Peer");
    assert!(KeyManager::import_ha(&exp.secret_bytes()[..84], now).is_err());
    let mut v2 = *exp.secret_bytes();
    v2[0] = 2;
    assert!(KeyManager::import_ha(&v2, now).is_err());
    assert_eq!(format!("{exp:?}"), "[redacted]");
    let st = km.status(
        now + Duration::from_secs(1224),
        RekeyInterval::hours(1).unwrap(),
    );
    assert_eq!(st.manager_state, "Active Leader");
    assert_eq!(st.rekey_index, 2);
    assert_eq!(st.key_change_count, 1);
    assert_eq!(st.last_rekey, Duration::from_secs(1224));
    assert_eq!(st.next_rekey, Some(Duration::from_secs(3600 - 1224)));
    assert_eq!(km.status(now, RekeyInterval::NEVER).next_rekey, None);
}

#[test]
fn config_ranges() {
    assert!(RekeyInterval::hours(0).is_err());
    assert!(RekeyInterval::hours(721).is_err());
    assert!(RekeyInterval::hours(720).is_ok());
    let mk = |r, t| {
        SecurityConfig::new(
            KexAlgorithm::EcdhP256,
            RekeyInterval::NEVER,
            RekeyInterval::NEVER,
            r,
            t,
            FailMode::FailSoft,
        )
    };
    assert!(mk(4, 3600).is_err());
    assert!(mk(3601, 7200).is_err());
    assert!(mk(5, 3600).is_ok());
}

#[test]
fn payload_keys_travel_in_session_metadata() {
    let mut w = World::new(2, cfg(KexAlgorithm::EcdhP256, 24), 21, 0.0, 0.0);
    w.run_for(Duration::from_secs(60));
    assert!(w.all_complete());
    let now = w.now;
    let mut rng = StdRng::seed_from_u64(22);
    let sid = [7u8; 16];
    let mut tx = SessionTx::new(sid, RekeyInterval::NEVER, now, &mut rng).unwrap();
    let mut md = [0u8; 512];
    let n = w
        .peer_mut(0, 1)
        .seal_session_metadata(tx.key(), &mut md)
        .unwrap();
    // It is SVR metadata: the strict parser accepts it and finds the cookie.
    assert!(ssr_svr_crypto::tlv::Metadata::parse(&md[..n]).is_ok());
    let got = w
        .peer_mut(1, 0)
        .open_session_metadata(&md[..n], now)
        .unwrap();
    assert_eq!(&got, tx.key());
    // Payloads travel under that payload key (not the data key).
    let mut rx = SessionRx::new(&got);
    let mut pkt = [0u8; 256];
    let mut out = [0u8; 256];
    let k = tx.seal(b"session payload", &mut pkt).unwrap();
    let mut direct = CbcHmacOpener::new(&got.key);
    assert_eq!(direct.open(&pkt[4..k], &mut out).unwrap(), 15);
    let m = rx.open(&pkt[..k], &mut out).unwrap();
    assert_eq!(&out[..m], b"session payload");
    let key = tx.key();
    // Replayed, tampered, or sent the wrong way: rejected.
    assert!(
        w.peer_mut(1, 0)
            .open_session_metadata(&md[..n], now)
            .is_err()
    );
    let n2 = w
        .peer_mut(0, 1)
        .seal_session_metadata(key, &mut md)
        .unwrap();
    let mut t = md[..n2].to_vec();
    t[40] ^= 1;
    assert!(w.peer_mut(1, 0).open_session_metadata(&t, now).is_err());
    assert!(
        w.peer_mut(0, 1)
            .open_session_metadata(&md[..n2], now)
            .is_err()
    );
    // The clear session id must match the sealed one.
    let mut swapped = md[..n2].to_vec();
    let pos = swapped.windows(16).position(|w| w == sid).unwrap();
    swapped[pos] ^= 1;
    assert!(
        w.peer_mut(1, 0)
            .open_session_metadata(&swapped, now)
            .is_err()
    );
    let n3 = w
        .peer_mut(0, 1)
        .seal_session_metadata(key, &mut md)
        .unwrap();
    assert!(
        w.peer_mut(1, 0)
            .open_session_metadata(&md[..n3], now)
            .is_ok()
    );
}

/// The IV field of a data packet (after the 12-byte data header and the 8-byte sequence
/// number): `AES-Kiv(seq | 0x80 | 0…)`, so one (key, sequence number) pair used twice
/// shows as one IV seen twice.
fn iv_of(p: &[u8]) -> [u8; 16] {
    p[20..36].try_into().unwrap()
}

fn data_sent(w: &World, from: usize, to: usize, since: usize) -> usize {
    w.net.tap[since..]
        .iter()
        .filter(|t| t.3 && t.0 == from && t.1 == to)
        .count()
}

#[test]
fn a_restarted_router_never_reuses_a_key_and_sequence_number_and_is_accepted() {
    // router-00 initiates the key exchange, router-01 responds: restart each in turn.
    for who in [0usize, 1] {
        let mut w = World::new(
            2,
            cfg(KexAlgorithm::EcdhP256, 24),
            31 + who as u64,
            0.0,
            0.0,
        );
        w.run_for(Duration::from_secs(60));
        assert!(w.all_complete());
        w.data_every = Some(Duration::from_millis(100));
        w.next_data = w.now;
        w.run_for(Duration::from_secs(30));
        assert_eq!(w.data_open_failures, 0);
        let survivor = 1 - who;
        let before_restart: Vec<Vec<u8>> = w
            .net
            .tap
            .iter()
            .filter(|t| t.3 && t.0 == who && t.1 == survivor)
            .map(|t| t.2.clone())
            .collect();
        // The process restarts: new metadata key (index 1 again), new state machines,
        // sequence numbers from 0 again.
        w.restart(who);
        // (A metadata key that overtakes the exchange's reply waits for its retransmission.)
        w.run_for(Duration::from_secs(60));
        assert!(
            w.all_complete(),
            "restart of {who}: {:?} / {:?}",
            w.peer(0, 1).status(),
            w.peer(1, 0).status()
        );
        w.reset_counters();
        let mark = w.net.tap.len();
        w.run_for(Duration::from_secs(60));
        assert_eq!(w.data_open_failures, 0, "restart of {who}");
        assert_eq!(
            w.data_replays, 0,
            "restart of {who}: no packet taken for a replay"
        );
        assert!(data_sent(&w, 0, 1, mark) >= 590 && data_sent(&w, 1, 0, mark) >= 590);
        // Never the same (key, sequence number) twice: no IV repeats in either direction
        // over both incarnations.
        let mut seen = std::collections::HashSet::new();
        for (from, to, p, data) in &w.net.tap {
            if *data {
                assert!(
                    seen.insert((*from, *to, iv_of(p))),
                    "restart of {who}: an IV (a key and sequence number) was used twice"
                );
            }
        }
        assert!(seen.len() > 1500);
        // The old incarnation's epoch is retired (the overlap is long over): its packets,
        // replayed now, are refused, not taken for a new epoch with a fresh window.
        let now = w.now;
        let delivered = w.peer(survivor, who).status().data.delivered;
        let mut out = vec![0u8; 256];
        for p in &before_restart {
            assert!(
                w.peer_mut(survivor, who)
                    .open_data(p, &mut out, now)
                    .is_err(),
                "restart of {who}: a packet of the retired epoch was accepted again"
            );
        }
        assert_eq!(w.peer(survivor, who).status().data.delivered, delivered);
    }
}

#[test]
fn ha_failover_refuses_every_captured_packet_and_accepts_the_new_nodes_first_packets() {
    let mut w = World::new(2, cfg(KexAlgorithm::EcdhP256, 24), 51, 0.0, 0.0);
    w.run_for(Duration::from_secs(60));
    assert!(w.all_complete());
    w.data_every = Some(Duration::from_millis(100));
    w.next_data = w.now;
    w.run_for(Duration::from_secs(30));
    // HA sync of router-01 (metadata key and the peer's data path), then more traffic
    // before the failover: the export lags behind.
    let km_export = w.nodes[1].km.export_ha();
    let peer_export = w.peer(1, 0).export_ha(w.now);
    assert_eq!(format!("{peer_export:?}"), "[redacted]");
    w.run_for(Duration::from_secs(10));
    w.data_every = None;
    w.run_for(Duration::from_secs(1)); // in-flight packets land
    let captured: Vec<Vec<u8>> = w
        .net
        .tap
        .iter()
        .filter(|t| t.3 && t.0 == 0 && t.1 == 1)
        .map(|t| t.2.clone())
        .collect();
    assert!(captured.len() > 350);
    // Failover: the redundant node takes over router-01 from the exports.
    let now = w.now;
    let mut rng = StdRng::seed_from_u64(52);
    let km = KeyManager::import_ha(km_export.secret_bytes(), now).unwrap();
    let me = LocalIdentity {
        cert_der: cert(1),
        signing_key: w.keys[1].clone(),
        common_name: cn(1),
    };
    let mut p = Peer::new(
        w.cfgs[1].clone(),
        me,
        cn(0),
        w.auth.clone(),
        Duration::ZERO,
        now,
        w.unix(),
    );
    assert!(
        p.import_ha(&peer_export.secret_bytes()[1..], now, &mut rng)
            .is_err()
    );
    let mut trailing = peer_export.secret_bytes().to_vec();
    trailing.push(0);
    assert!(p.import_ha(&trailing, now, &mut rng).is_err());
    p.import_ha(peer_export.secret_bytes(), now, &mut rng)
        .unwrap();
    p.handle_local_metadata_key(&km, now);
    w.nodes[1] = Node {
        peers: vec![(0, p)],
        km,
        rng,
    };
    // Every packet captured before the failover, replayed to the new node: refused,
    // those sent after the export included.
    let mut out = vec![0u8; 256];
    for c in &captured {
        assert!(w.peer_mut(1, 0).open_data(c, &mut out, now).is_err());
    }
    assert_eq!(w.peer(1, 0).status().data.delivered, 0);
    // The new node's first packets are accepted by the peer at once (fresh epoch).
    for i in 0..5u8 {
        let mut pkt = vec![0u8; 256];
        let n = w.peer_mut(1, 0).seal_data(&[i; 40], &mut pkt).unwrap();
        let m = w
            .peer_mut(0, 1)
            .open_data(&pkt[..n], &mut out, now)
            .unwrap();
        assert_eq!(&out[..m], &[i; 40]);
    }
    // The control exchange runs again and data flows both ways without loss.
    w.drain();
    w.run_for(Duration::from_secs(60));
    assert!(w.all_complete(), "{:?}", w.peer(1, 0).status());
    w.reset_counters();
    w.data_every = Some(Duration::from_millis(100));
    w.next_data = w.now;
    w.run_for(Duration::from_secs(30));
    assert_eq!(w.data_open_failures, 0);
    assert_eq!(
        w.data_replays,
        0,
        "{:?}\n{:?}",
        w.peer(1, 0).status(),
        w.peer(0, 1).status()
    );
    assert!(w.peer(1, 0).status().data.delivered >= 290);
}

#[test]
fn a_replayed_hello_is_refused_counted_and_installs_no_key() {
    // Hourly peer rekeys: several hellos go by.
    let mut w = World::new(2, cfg(KexAlgorithm::EcdhP256, 1), 61, 0.0, 0.0);
    w.run_for(Duration::from_secs(3 * 3600));
    assert!(w.all_complete());
    let hellos: Vec<Vec<u8>> = w
        .net
        .tap
        .iter()
        .filter(|t| !t.3 && t.0 == 0 && t.1 == 1 && t.2.get(1) == Some(&3))
        .map(|t| t.2.clone())
        .collect();
    assert!(hellos.len() >= 3, "{}", hellos.len());
    let before = w.peer(1, 0).status();
    assert_eq!(before.stale_hellos, 0);
    let now = w.now;
    // Older hellos replayed to the responder: refused, counted, no key installed.
    for (k, h) in hellos[..hellos.len() - 1].iter().enumerate() {
        let node = &mut w.nodes[1];
        let r = node.peers[0].1.handle_control(h, now, &mut node.rng);
        assert_eq!(r, Err(ssr_svr_crypto::Error::StaleHello));
        assert_eq!(w.peer(1, 0).status().stale_hellos, k as u64 + 1);
    }
    let after = w.peer(1, 0).status();
    assert_eq!(after.peer_rekey_count, before.peer_rekey_count);
    assert_eq!(after.salt, before.salt);
    // Keys still agree: data flows both ways.
    w.drain();
    w.reset_counters();
    w.data_every = Some(Duration::from_secs(1));
    w.next_data = w.now;
    w.run_for(Duration::from_secs(60));
    assert_eq!(w.data_open_failures, 0);
    assert_eq!(
        w.peer(0, 1).status().peer_rekey_count,
        after.peer_rekey_count
    );
    // After a restart of the responder, even the last hello is stale.
    w.restart(1);
    let now = w.now;
    let last = hellos.last().unwrap();
    for m in [
        &w.net
            .tap
            .iter()
            .find(|t| !t.3 && t.0 == 0 && t.1 == 1 && t.2.get(1) == Some(&1))
            .unwrap()
            .2
            .clone(),
        last,
    ] {
        let node = &mut w.nodes[1];
        let _ = node.peers[0].1.handle_control(m, now, &mut node.rng);
    }
    let st = w.peer(1, 0).status();
    assert_eq!(st.peer_rekey_count, 0, "no key from a replayed hello");
    assert_eq!(st.stale_hellos, 1);
}

#[test]
fn payload_keys_are_rekeyed_at_the_interval_with_an_overlap_and_then_retired() {
    let mut w = World::new(2, cfg(KexAlgorithm::EcdhP256, 24), 71, 0.0, 0.0);
    w.run_for(Duration::from_secs(60));
    assert!(w.all_complete());
    let mut rng = StdRng::seed_from_u64(72);
    let t0 = w.now;
    let interval = RekeyInterval::hours(1).unwrap();
    let mut tx = SessionTx::new([9u8; 16], interval, t0, &mut rng).unwrap();
    let mut md = [0u8; 512];
    let n = w
        .peer_mut(0, 1)
        .seal_session_metadata(tx.key(), &mut md)
        .unwrap();
    let mut rx = SessionRx::new(
        &w.peer_mut(1, 0)
            .open_session_metadata(&md[..n], t0)
            .unwrap(),
    );
    // 3.5 hours, a payload every second; payloads are delayed 0-5 s and reordered, the
    // metadata with a new key arrives after 0.2 s, so packets under the old key arrive
    // after the new one is installed.
    let mut inflight: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut metadata: Vec<(Instant, Vec<u8>)> = Vec::new();
    let (mut sent, mut failed, mut rekeys) = (0u64, 0u64, 0u32);
    let mut max_gens = 0;
    for s in 0..(3 * 3600 + 1800u64) {
        let now = t0 + Duration::from_secs(s);
        if tx.poll_rekey(now, &mut rng).unwrap() {
            rekeys += 1;
            let n = w
                .peer_mut(0, 1)
                .seal_session_metadata(tx.key(), &mut md)
                .unwrap();
            metadata.push((now + Duration::from_millis(200), md[..n].to_vec()));
        }
        let mut pkt = vec![0u8; 128];
        let k = tx.seal(&s.to_be_bytes(), &mut pkt).unwrap();
        pkt.truncate(k);
        inflight.push((now + Duration::from_millis(rng.random_range(0..5000)), pkt));
        sent += 1;
        for (_, m) in metadata.extract_if(.., |(t, _)| *t <= now) {
            let key = w.peer_mut(1, 0).open_session_metadata(&m, now).unwrap();
            rx.install(&key, now).unwrap();
        }
        let mut out = [0u8; 128];
        for (_, p) in inflight.extract_if(.., |(t, _)| *t <= now) {
            if rx.open(&p, &mut out).is_err() {
                failed += 1;
            }
        }
        if rx.poll_timeout().is_some_and(|t| t <= now) {
            rx.handle_timeout(now);
        }
        max_gens = max_gens.max(rx.generations().len());
    }
    assert_eq!(rekeys, 3, "a new payload key every hour");
    assert_eq!(failed, 0, "no payload lost to a payload rekey");
    assert_eq!(rx.stats().delivered + inflight.len() as u64, sent);
    assert_eq!(max_gens, 2, "old and new during the overlap only");
    // Long after the last rekey only the newest generation is left: a packet sealed
    // under a retired key is refused.
    assert_eq!(rx.generations(), vec![4]);
    let mut old = SessionTx::new([9u8; 16], RekeyInterval::NEVER, t0, &mut rng).unwrap();
    let mut pkt = [0u8; 128];
    let k = old.seal(b"x", &mut pkt).unwrap();
    assert!(rx.open(&pkt[..k], &mut [0u8; 128]).is_err());
}

#[test]
fn the_gcm_suite_is_negotiated_per_peer_and_a_downgrade_is_refused() {
    let gcm = cfg(KexAlgorithm::EcdhP256, 24).with_suite(Suite::Aes256Gcm);
    let cbc = cfg(KexAlgorithm::EcdhP256, 24);
    let payload = b"svr data packet payload".len();
    // Both configured for GCM: GCM data packets, delivered.
    let mut w = World::new(2, gcm.clone(), 81, 0.1, 0.1);
    w.run_for(Duration::from_secs(300));
    assert!(w.all_complete());
    w.data_every = Some(Duration::from_secs(1));
    w.next_data = w.now;
    w.run_for(Duration::from_secs(60));
    assert_eq!(w.data_open_failures, 0);
    assert!(w.peer(1, 0).status().data.delivered > 40);
    let data: Vec<usize> = w
        .net
        .tap
        .iter()
        .filter(|t| t.3)
        .map(|t| t.2.len())
        .collect();
    assert!(data.iter().all(|&l| l == 12 + gcm_sealed_len(payload)));
    assert_ne!(gcm_sealed_len(payload), sealed_len(payload));
    // GCM against CBC: no key at all (both must agree), the refusals counted.
    let mut w = World::new_mixed(vec![gcm, cbc], 82, 0.0, 0.0);
    w.run_for(Duration::from_secs(600));
    assert!(!w.peer(0, 1).in_service() && !w.peer(1, 0).in_service());
    assert_eq!(w.peer(1, 0).status().peer_rekey_count, 0);
    assert!(w.peer(1, 0).status().key_change_errors > 0);
    // A downgrade: the GCM hello with its suite byte rewritten to CBC, for the CBC
    // responder. The suite is signed: refused, no key.
    let hello = w
        .net
        .tap
        .iter()
        .rev()
        .find(|t| !t.3 && t.0 == 0 && t.2.get(1) == Some(&3))
        .unwrap()
        .2
        .clone();
    // version | type | nonce (16) | suite | kex message
    assert_eq!(hello[18], Suite::Aes256Gcm.code());
    let mut forged = hello.clone();
    forged[18] = Suite::CbcHmacSha384.code();
    let errors = w.peer(1, 0).status().key_change_errors;
    let now = w.now;
    let node = &mut w.nodes[1];
    let r = node.peers[0].1.handle_control(&forged, now, &mut node.rng);
    assert_eq!(r, Err(ssr_svr_crypto::Error::Unauthenticated));
    let st = w.peer(1, 0).status();
    assert_eq!(st.peer_rekey_count, 0, "no key from a downgraded hello");
    assert_eq!(st.key_change_errors, errors + 1);
}

#[test]
fn a_packet_of_the_previous_epoch_opens_during_the_overlap_and_not_after() {
    // Hourly peer rekeys: every rekey gives each sender a new epoch.
    let mut w = World::new(2, cfg(KexAlgorithm::EcdhP256, 1), 91, 0.0, 0.0);
    w.run_for(Duration::from_secs(60));
    assert!(w.all_complete());
    let seal = |w: &mut World| {
        let mut b = vec![0u8; 256];
        let n = w.peer_mut(0, 1).seal_data(b"old or new", &mut b).unwrap();
        b.truncate(n);
        b
    };
    let old_a = seal(&mut w);
    let old_b = seal(&mut w);
    // The receiver holds the old epoch (a packet under it arrived).
    let first = seal(&mut w);
    let now = w.now;
    w.peer_mut(1, 0)
        .open_data(&first, &mut vec![0u8; 256], now)
        .unwrap();
    let rekeys = w.peer(0, 1).status().peer_rekey_count;
    while w.peer(0, 1).status().peer_rekey_count == rekeys {
        w.run_for(Duration::from_secs(10));
    }
    // The metadata keys go again under the new peer key (a key that overtook the reply
    // waits for its retransmission); then the sender has a new epoch.
    let mut new = seal(&mut w);
    for _ in 0..24 {
        if new[4..12] != old_a[4..12] {
            break;
        }
        w.run_for(Duration::from_secs(5));
        new = seal(&mut w);
    }
    assert_ne!(new[4..12], old_a[4..12], "a new epoch after the rekey");
    let mut out = vec![0u8; 256];
    let now = w.now;
    w.peer_mut(1, 0).open_data(&new, &mut out, now).unwrap();
    // Sealed before the switch, arriving 0.1 s after it: still opens.
    w.run_for(Duration::from_millis(100));
    let now = w.now;
    w.peer_mut(1, 0).open_data(&old_a, &mut out, now).unwrap();
    // After the 30 s overlap the old epoch is retired.
    w.run_for(Duration::from_secs(31));
    let now = w.now;
    assert!(w.peer_mut(1, 0).open_data(&old_b, &mut out, now).is_err());
}

/// A router key whose holder can stop answering (a TPM gone) and come back.
struct SwitchableKey {
    key: SigningKey,
    up: AtomicBool,
}

impl KexSigner for SwitchableKey {
    fn sign_kex(&self, msg: &[u8]) -> Result<[u8; 64], ssr_svr_crypto::Error> {
        if self.up.load(Ordering::SeqCst) {
            self.key.sign_kex(msg)
        } else {
            Err(ssr_svr_crypto::Error::Signer {
                reason: "tpm key: no answer".into(),
            })
        }
    }
}

#[test]
fn a_key_that_cannot_sign_is_reported_and_the_first_exchange_and_rekeys_are_retried() {
    let cfg = SecurityConfig::new(
        KexAlgorithm::EcdhP256,
        RekeyInterval::hours(1).unwrap(),
        RekeyInterval::NEVER,
        5,
        60,
        FailMode::FailSoft,
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(61);
    let ka = Arc::new(SwitchableKey {
        key: <SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(&mut rng),
        up: AtomicBool::new(false),
    });
    let kb = <SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(&mut rng);
    let mut auth = StaticAuthenticator::new();
    auth.trust(&cert(0), &cn(0), *ka.key.verifying_key());
    auth.trust(&cert(1), &cn(1), *kb.verifying_key());
    let mut now = Instant::now();
    let km = KeyManager::new(&mut rng, now);
    // router-00 < router-01: a is the initiator, its hellos need its key.
    let mut a = Peer::new(
        cfg.clone(),
        LocalIdentity {
            cert_der: cert(0),
            signing_key: ka.clone(),
            common_name: cn(0),
        },
        cn(1),
        &auth,
        Duration::ZERO,
        now,
        0,
    );
    let mut b = Peer::new(
        cfg,
        LocalIdentity {
            cert_der: cert(1),
            signing_key: Arc::new(kb),
            common_name: cn(1),
        },
        cn(0),
        &auth,
        Duration::ZERO,
        now,
        0,
    );
    a.handle_local_metadata_key(&km, now);
    b.handle_local_metadata_key(&km, now);
    let step = |a: &mut Peer<&StaticAuthenticator>,
                b: &mut Peer<&StaticAuthenticator>,
                now: Instant,
                rng: &mut StdRng| {
        a.handle_timeout(now, rng);
        b.handle_timeout(now, rng);
        for _ in 0..20 {
            let mut quiet = true;
            while let Some(m) = a.poll_transmit() {
                quiet = false;
                let _ = b.handle_control(&m, now, rng);
            }
            while let Some(m) = b.poll_transmit() {
                quiet = false;
                let _ = a.handle_control(&m, now, rng);
            }
            if quiet {
                break;
            }
        }
        std::iter::from_fn(|| a.poll_event())
            .filter(|e| matches!(e, PeerEvent::SigningFailed(_)))
            .count()
    };
    // The key cannot sign: no hello, the failure reported; no key on either side.
    assert!(step(&mut a, &mut b, now, &mut rng) >= 1);
    assert_ne!(a.state(), SecurityState::MkeyExchComp);
    assert_ne!(b.state(), SecurityState::MkeyExchComp);
    assert!(a.status().key_change_errors >= 1);
    // It answers again: the exchange is retried at the retransmit interval.
    ka.up.store(true, Ordering::SeqCst);
    now += Duration::from_secs(5);
    assert_eq!(step(&mut a, &mut b, now, &mut rng), 0);
    assert_eq!(a.state(), SecurityState::MkeyExchComp);
    assert_eq!(b.state(), SecurityState::MkeyExchComp);
    let rekeys = a.status().peer_rekey_count;
    // Down over the hourly rekey: the old key stays in service, each attempt reported.
    ka.up.store(false, Ordering::SeqCst);
    let mut failed = 0;
    for _ in 0..90 {
        now += Duration::from_secs(60);
        failed += step(&mut a, &mut b, now, &mut rng);
        assert_eq!(a.state(), SecurityState::MkeyExchComp);
    }
    assert!(failed >= 2, "{failed}");
    assert_eq!(a.status().peer_rekey_count, rekeys);
    // Back: the rekey is retried and happens.
    ka.up.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        now += Duration::from_secs(5);
        step(&mut a, &mut b, now, &mut rng);
    }
    assert!(a.status().peer_rekey_count > rekeys);
    assert_eq!(b.state(), SecurityState::MkeyExchComp);
}
