//! One router's SVR state machines against many simulated peers on a virtual clock: the
//! router ("hub") holds one [`Peer`] per peer, each simulated peer one [`Peer`] for the
//! hub; control messages and data packets travel through an event queue with 5-50 ms of
//! delay. Peers come up at random times in the first ten minutes, rekey at the
//! configured interval plus a random jitter of up to 10 %, and exchange data packets
//! every few minutes in both directions, with a burst of packets around every rekey (one
//! each way every 10 ms for 300 ms) so that packets sealed under the old keys arrive
//! after the first ones under the new keys.
//!
//! Measured: the router's memory per peer (resident-set growth of the process over the
//! set-up and first key exchanges, divided by the number of state machines: both sides
//! hold one of the same kind), the CPU time the router spends in its state machines per
//! simulated day (this thread's CPU clock around those calls), the peak number of key exchanges
//! completed in any one virtual second (start-up and steady state separately), and every
//! data packet that fails to open (none may).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p256::ecdsa::SigningKey;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ssr_svr_crypto::kex::{KexAlgorithm, StaticAuthenticator};
use ssr_svr_crypto::peer::{
    FailMode, KeyManager, LocalIdentity, Peer, PeerEvent, RekeyInterval, SecurityConfig,
};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// Simulated peers of the one router.
    pub peers: usize,
    /// Virtual hours to run.
    pub hours: u64,
    /// `peer-key-rekey-interval` in hours.
    pub rekey_hours: u16,
    /// Key exchange algorithm.
    pub algorithm: KexAlgorithm,
    /// Each peer sends one data packet each way this often.
    pub data_every: Duration,
    /// Random seed (runs replay exactly, timings aside).
    pub seed: u64,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        Self {
            peers: 10_000,
            hours: 48,
            rekey_hours: 24,
            algorithm: KexAlgorithm::EcdhP256,
            data_every: Duration::from_secs(15 * 60),
            seed: 1,
        }
    }
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    /// Peers simulated.
    pub peers: usize,
    /// Virtual hours run.
    pub hours: u64,
    /// Resident memory growth per peer state machine, bytes (`None` off Linux).
    pub bytes_per_peer: Option<u64>,
    /// Key exchanges completed by the router (start-up included).
    pub key_exchanges: u64,
    /// Of which after the first hour (rekeys).
    pub rekeys: u64,
    /// Router CPU seconds in its state machines per simulated day, after the first hour
    /// (rekeys and their retransmissions and timers).
    pub rekey_cpu_s_per_day: f64,
    /// Router CPU seconds in its state machines during the first hour (start-up).
    pub startup_cpu_s: f64,
    /// Most key exchanges completed in one virtual second during the first hour.
    pub peak_kex_per_s_startup: u64,
    /// Most key exchanges completed in one virtual second after the first hour.
    pub peak_kex_per_s_steady: u64,
    /// Data packets sent (both directions).
    pub packets_sent: u64,
    /// Data packets that opened.
    pub packets_delivered: u64,
    /// Of those sent within 30 s after a rekey on that peering (across the key change).
    pub packets_in_overlaps: u64,
    /// Data packets that failed to open after start-up (must be 0).
    pub packets_failed: u64,
    /// Peerings not in service at the end (must be 0).
    pub not_in_service: usize,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
}

impl ScaleReport {
    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "peers": self.peers,
            "virtual_hours": self.hours,
            "bytes_per_peer": self.bytes_per_peer,
            "key_exchanges": self.key_exchanges,
            "rekeys_after_first_hour": self.rekeys,
            "rekey_cpu_seconds_per_simulated_day": self.rekey_cpu_s_per_day,
            "startup_cpu_seconds_first_hour": self.startup_cpu_s,
            "peak_key_exchanges_per_second_startup": self.peak_kex_per_s_startup,
            "peak_key_exchanges_per_second_steady": self.peak_kex_per_s_steady,
            "packets_sent": self.packets_sent,
            "packets_delivered": self.packets_delivered,
            "packets_sent_in_rekey_overlaps": self.packets_in_overlaps,
            "packets_failed": self.packets_failed,
            "peerings_not_in_service": self.not_in_service,
            "wall_seconds": self.wall_s,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Hub,
    Remote,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Start(u32),
    Timer(Side, u32),
    Control(Side, u32, Vec<u8>),
    /// A data packet for `Side` from peering `u32`, sent in a rekey overlap or not.
    Data(Side, u32, Vec<u8>, bool),
    Send(u32, bool),
}

fn cn(i: usize) -> String {
    format!("peer-{i:05}")
}

const HUB: &str = "hub";
const MS: u64 = 1_000_000;

/// CPU time of this thread (the simulation runs on one).
fn cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Resident set size in bytes, from `/proc/self/statm` (this process's own pages).
fn rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

struct Sim<'a> {
    t0: Instant,
    now_ns: u64,
    q: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    n: u64,
    hub: Vec<Peer<&'a StaticAuthenticator>>,
    remote: Vec<Option<Peer<&'a StaticAuthenticator>>>,
    rng: StdRng,
    /// CPU time inside the hub's state machine calls.
    hub_time: Duration,
    kex_per_s: HashMap<u64, u64>,
    last_rekey_ns: Vec<u64>,
}

impl Sim<'_> {
    fn at(&self, ns: u64) -> Instant {
        self.t0 + Duration::from_nanos(ns)
    }
    fn push(&mut self, ns: u64, e: Ev) {
        self.n += 1;
        self.q.push(Reverse((ns, self.n, e)));
    }
    fn delay(&mut self) -> u64 {
        self.now_ns + self.rng.random_range(5..=50) * MS
    }
    /// After any call into peering `i` on `side`: ship its messages, note its events,
    /// arm its timer.
    fn after(&mut self, side: Side, i: u32) {
        let mut out = Vec::new();
        let mut kex = false;
        let next = {
            let p = match side {
                Side::Hub => Some(&mut self.hub[i as usize]),
                Side::Remote => self.remote[i as usize].as_mut(),
            };
            let Some(p) = p else { return };
            while let Some(m) = p.poll_transmit() {
                out.push(m);
            }
            while let Some(e) = p.poll_event() {
                kex |= e == PeerEvent::PeerKeyEstablished;
            }
            p.poll_timeout()
        };
        let to = match side {
            Side::Hub => Side::Remote,
            Side::Remote => Side::Hub,
        };
        for m in out {
            let d = self.delay();
            self.push(d, Ev::Control(to, i, m));
        }
        if kex && side == Side::Hub {
            *self
                .kex_per_s
                .entry(self.now_ns / 1_000_000_000)
                .or_default() += 1;
            self.last_rekey_ns[i as usize] = self.now_ns;
            // A burst across the key change: a packet each way every 10 ms for 300 ms,
            // while both ends move to new data keys; with 5-50 ms of delay some packets
            // sealed under the old keys arrive after the first under the new ones.
            for k in 0..30u64 {
                let t = self.now_ns + k * 10 * MS;
                self.push(t, Ev::Send(i, true));
            }
        }
        if let Some(t) = next {
            let ns = t.saturating_duration_since(self.t0).as_nanos() as u64;
            self.push(ns.max(self.now_ns), Ev::Timer(side, i));
        }
    }
}

/// Runs the simulation.
pub fn run(cfg: &ScaleConfig) -> Result<ScaleReport, Box<dyn std::error::Error>> {
    let wall = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let n = cfg.peers;
    // One key per router, shared by all of its peer state machines.
    let hub_key =
        Arc::new(<SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(&mut rng));
    let keys: Vec<Arc<SigningKey>> = (0..n)
        .map(|_| {
            Arc::new(<SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(&mut rng))
        })
        .collect();
    let mut auth = StaticAuthenticator::new();
    auth.trust(HUB.as_bytes(), HUB, *hub_key.verifying_key());
    for (i, k) in keys.iter().enumerate() {
        auth.trust(cn(i).as_bytes(), &cn(i), *k.verifying_key());
    }
    let sec = SecurityConfig::new(
        cfg.algorithm,
        RekeyInterval::hours(cfg.rekey_hours)?,
        RekeyInterval::NEVER,
        30,
        3600,
        FailMode::FailSoft,
    )?;
    let interval_s = u64::from(cfg.rekey_hours) * 3600;
    let jitter = |rng: &mut StdRng| Duration::from_secs(rng.random_range(0..=interval_s / 10));
    let t0 = Instant::now();
    let rss0 = rss();
    let mut hub_km_rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
    let hub_km = KeyManager::new(&mut hub_km_rng, t0);
    let mut sim = Sim {
        t0,
        now_ns: 0,
        q: BinaryHeap::new(),
        n: 0,
        hub: Vec::with_capacity(n),
        remote: (0..n).map(|_| None).collect(),
        rng: StdRng::seed_from_u64(cfg.seed ^ 0xabc),
        hub_time: Duration::ZERO,
        kex_per_s: HashMap::new(),
        last_rekey_ns: vec![0; n],
    };
    let hub_start = cpu();
    for i in 0..n {
        let me = LocalIdentity {
            cert_der: HUB.as_bytes().to_vec(),
            signing_key: hub_key.clone(),
            common_name: HUB.into(),
        };
        let j = jitter(&mut rng);
        let mut p = Peer::new(sec.clone(), me, cn(i), &auth, j, t0, 1_700_000_000);
        p.handle_local_metadata_key(&hub_km, t0);
        sim.hub.push(p);
    }
    sim.hub_time += cpu() - hub_start;
    for i in 0..n {
        sim.after(Side::Hub, i as u32);
        let start = rng.random_range(0..600_000) * MS;
        sim.push(start, Ev::Start(i as u32));
        let first_send =
            3600 * 1000 * MS + rng.random_range(0..cfg.data_every.as_millis() as u64) * MS;
        sim.push(first_send, Ev::Send(i as u32, false));
    }
    let end_ns = cfg.hours * 3600 * 1_000_000_000;
    let hour_ns = 3600 * 1_000_000_000u64;
    let mut remote_kms: Vec<Option<KeyManager>> = (0..n).map(|_| None).collect();
    let mut rep = ScaleReport {
        peers: n,
        hours: cfg.hours,
        ..ScaleReport::default()
    };
    let mut startup_time = None;
    let mut measured_mem = false;
    let mut buf = vec![0u8; 512];
    let mut plain = vec![0u8; 512];
    let payload = [0x5au8; 200];
    while let Some(Reverse((t, _, ev))) = sim.q.pop() {
        if t > end_ns {
            break;
        }
        sim.now_ns = t;
        if startup_time.is_none() && t >= hour_ns {
            startup_time = Some(sim.hub_time);
        }
        if !measured_mem && t >= 15 * 60 * 1_000_000_000 {
            // Every peer is up and keyed by now (all started within ten minutes).
            measured_mem = true;
            if let (Some(a), Some(b)) = (rss0, rss()) {
                rep.bytes_per_peer = Some(b.saturating_sub(a) / (2 * n as u64));
            }
        }
        let now = sim.at(t);
        match ev {
            Ev::Start(i) => {
                let me = LocalIdentity {
                    cert_der: cn(i as usize).into_bytes(),
                    signing_key: keys[i as usize].clone(),
                    common_name: cn(i as usize),
                };
                let mut krng = StdRng::seed_from_u64(cfg.seed * 1_000_003 + u64::from(i));
                let km = KeyManager::new(&mut krng, now);
                let j = jitter(&mut rng);
                let mut p = Peer::new(sec.clone(), me, HUB, &auth, j, now, 1_700_000_000);
                p.handle_local_metadata_key(&km, now);
                remote_kms[i as usize] = Some(km);
                sim.remote[i as usize] = Some(p);
                sim.after(Side::Remote, i);
            }
            Ev::Timer(side, i) => {
                let s = cpu();
                let mut r = std::mem::replace(&mut sim.rng, StdRng::seed_from_u64(0));
                let due = match side {
                    Side::Hub => {
                        let p = &mut sim.hub[i as usize];
                        let due = p.poll_timeout().is_some_and(|x| x <= now);
                        if due {
                            p.handle_timeout(now, &mut r);
                        }
                        due
                    }
                    Side::Remote => match sim.remote[i as usize].as_mut() {
                        Some(p) if p.poll_timeout().is_some_and(|x| x <= now) => {
                            p.handle_timeout(now, &mut r);
                            true
                        }
                        _ => false,
                    },
                };
                sim.rng = r;
                if side == Side::Hub {
                    sim.hub_time += cpu() - s;
                }
                if due {
                    sim.after(side, i);
                }
            }
            Ev::Control(side, i, m) => {
                let s = cpu();
                let mut r = std::mem::replace(&mut sim.rng, StdRng::seed_from_u64(0));
                match side {
                    Side::Hub => {
                        let _ = sim.hub[i as usize].handle_control(&m, now, &mut r);
                    }
                    Side::Remote => {
                        if let Some(p) = sim.remote[i as usize].as_mut() {
                            let _ = p.handle_control(&m, now, &mut r);
                        }
                    }
                }
                sim.rng = r;
                if side == Side::Hub {
                    sim.hub_time += cpu() - s;
                }
                sim.after(side, i);
            }
            Ev::Send(i, burst) => {
                let overlap = t.saturating_sub(sim.last_rekey_ns[i as usize]) < 30_000 * MS
                    && sim.last_rekey_ns[i as usize] > 0;
                if let Ok(len) = sim.hub[i as usize].seal_data(&payload, &mut buf) {
                    rep.packets_sent += 1;
                    let d = sim.delay();
                    sim.push(d, Ev::Data(Side::Remote, i, buf[..len].to_vec(), overlap));
                }
                if let Some(p) = sim.remote[i as usize].as_mut()
                    && let Ok(len) = p.seal_data(&payload, &mut buf)
                {
                    rep.packets_sent += 1;
                    let d = sim.delay();
                    sim.push(d, Ev::Data(Side::Hub, i, buf[..len].to_vec(), overlap));
                }
                if !burst {
                    let next = t + cfg.data_every.as_nanos() as u64;
                    sim.push(next, Ev::Send(i, false));
                }
            }
            Ev::Data(side, i, pkt, overlap) => {
                let r = match side {
                    Side::Hub => sim.hub[i as usize].open_data(&pkt, &mut plain, now),
                    Side::Remote => match sim.remote[i as usize].as_mut() {
                        Some(p) => p.open_data(&pkt, &mut plain, now),
                        None => continue,
                    },
                };
                match r {
                    Ok(_) => {
                        rep.packets_delivered += 1;
                        rep.packets_in_overlaps += u64::from(overlap);
                    }
                    Err(_) => rep.packets_failed += 1,
                }
                // Opening can start an old key's overlap: its timer.
                sim.after(side, i);
            }
        }
    }
    let total = sim.hub_time;
    let startup = startup_time.unwrap_or(total);
    rep.startup_cpu_s = startup.as_secs_f64();
    let days = (cfg.hours.saturating_sub(1)) as f64 / 24.0;
    if days > 0.0 {
        rep.rekey_cpu_s_per_day = (total - startup).as_secs_f64() / days;
    }
    for (s, c) in &sim.kex_per_s {
        rep.key_exchanges += c;
        if *s < 3600 {
            rep.peak_kex_per_s_startup = rep.peak_kex_per_s_startup.max(*c);
        } else {
            rep.rekeys += c;
            rep.peak_kex_per_s_steady = rep.peak_kex_per_s_steady.max(*c);
        }
    }
    rep.not_in_service = sim.hub.iter().filter(|p| !p.in_service()).count();
    rep.wall_s = wall.elapsed().as_secs_f64();
    Ok(rep)
}
