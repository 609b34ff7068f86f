//! The state machine under a virtual clock: scripted sources, no sockets, no sleeps.
//! `Sim::step` advances time to the earliest wake-up (an answer or a timer).

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};
use ssr_download::{
    Action, AttemptFailure, ChunkVerdict, Download, End, Error, Event, Failure, Fetch, HaMode,
    Manifest, Resource, Resume, Settings, SourceId, SourceKind, Status,
};

/// What a scripted source does with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Ok,
    Fail(Failure),
    /// Serve the chunks with one flipped byte.
    Corrupt,
    /// Serve everything but say the server ignored `Range`.
    NoRange,
}

type Behaviour = Box<dyn FnMut(&Resource, u64, Duration) -> Outcome>;

struct SimSource {
    versions: Vec<String>,
    manifest: Manifest,
    data: Vec<u8>,
    latency: Duration,
    behave: Behaviour,
    requests: u64,
    chunk_requests: Vec<(u32, u32)>,
    chunk_bytes: u64,
}

struct Sim {
    start: Instant,
    now: Instant,
    dl: Download<StdRng>,
    sources: Vec<SimSource>,
    pending: Vec<(Instant, Fetch)>,
    events: Vec<(Duration, Event)>,
    file: Vec<u8>,
}

fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed ^ (i >> 9) as u8)
        })
        .collect()
}

const VERSION: &str = "6.3.0";
const CHUNK: u64 = 4096;

fn source(data: &[u8], latency_ms: u64, behave: Behaviour) -> SimSource {
    SimSource {
        versions: vec!["6.2.0".into(), VERSION.into()],
        manifest: Manifest::build(VERSION, "ssr.iso", data, CHUNK).unwrap(),
        data: data.to_vec(),
        latency: Duration::from_millis(latency_ms),
        behave,
        requests: 0,
        chunk_requests: Vec::new(),
        chunk_bytes: 0,
    }
}

fn healthy() -> Behaviour {
    Box::new(|_, _, _| Outcome::Ok)
}

fn settings() -> Settings {
    Settings {
        parallel: 1,
        ..Settings::default()
    }
}

impl Sim {
    fn new(
        settings: Settings,
        kinds: &[SourceKind],
        sources: Vec<SimSource>,
        resume: Option<Resume>,
    ) -> Sim {
        let start = Instant::now();
        let dl = Download::new(
            settings,
            VERSION,
            kinds,
            resume,
            StdRng::seed_from_u64(7),
            start,
        )
        .unwrap();
        Sim {
            start,
            now: start,
            dl,
            sources,
            pending: Vec::new(),
            events: Vec::new(),
            file: Vec::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// One wake-up; false when nothing is left to do.
    fn step(&mut self) -> bool {
        while let Some(action) = self.dl.poll_action() {
            match action {
                Action::Fetch(f) => {
                    let at = self.now + self.sources[f.source.0].latency;
                    self.pending.push((at, f));
                }
                Action::Prepare(m) => self.file = vec![0; m.size() as usize],
                Action::VerifyFile => {
                    let d: [u8; 32] = Sha256::digest(&self.file).into();
                    self.dl.handle_file_digest(&d, self.now);
                }
            }
        }
        while let Some(e) = self.dl.poll_event() {
            self.events.push((self.elapsed(), e));
        }
        if self.dl.is_finished() {
            return false;
        }
        let next_answer = self.pending.iter().map(|(t, _)| *t).min();
        let next = [next_answer, self.dl.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        if let Some(pos) = self.pending.iter().position(|(t, _)| *t <= self.now) {
            let (_, fetch) = self.pending.remove(pos);
            self.answer(fetch);
        } else {
            self.dl.handle_timeout(self.now);
        }
        true
    }

    fn answer(&mut self, f: Fetch) {
        let elapsed = self.elapsed();
        let src = &mut self.sources[f.source.0];
        let n = src.requests;
        src.requests += 1;
        let outcome = (src.behave)(&f.resource, n, elapsed);
        match f.resource {
            Resource::Versions | Resource::Manifest => {
                let body = match f.resource {
                    Resource::Versions => {
                        let v: Vec<&str> = src.versions.iter().map(String::as_str).collect();
                        ssr_download::wire::versions_json(&v)
                    }
                    _ => src.manifest.to_json(),
                };
                let answer = match outcome {
                    Outcome::Fail(fl) => Err(fl),
                    _ => Ok(body.as_slice()),
                };
                self.dl.handle_body(f.id, answer, self.now);
            }
            Resource::Chunks { first, last, .. } => {
                src.chunk_requests.push((first, last));
                if let Outcome::Fail(fl) = outcome {
                    self.dl.handle_end(f.id, End::Failed(fl), self.now);
                    return;
                }
                for i in first..=last {
                    let r = src.manifest.chunk_range(i);
                    let mut bytes = src.data[r.start as usize..r.end as usize].to_vec();
                    src.chunk_bytes += bytes.len() as u64;
                    if outcome == Outcome::Corrupt {
                        bytes[0] ^= 1;
                    }
                    let d: [u8; 32] = Sha256::digest(&bytes).into();
                    match self.dl.handle_chunk(f.id, i, &d, self.now) {
                        ChunkVerdict::Accept => {
                            self.file[r.start as usize..r.end as usize].copy_from_slice(&bytes)
                        }
                        ChunkVerdict::Reject => return,
                    }
                }
                let ranged = outcome != Outcome::NoRange;
                self.dl.handle_end(f.id, End::Complete { ranged }, self.now);
            }
        }
    }

    fn run(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            if !self.step() {
                return;
            }
        }
        panic!(
            "simulation did not settle in {max_steps} steps: {:?}",
            self.dl.status()
        );
    }

    fn succeeded(&self, data: &[u8]) {
        assert_eq!(
            self.dl.status(),
            Status::Succeeded,
            "events: {:?}",
            self.events
        );
        assert_eq!(self.file, data);
    }

    fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(|(_, e)| f(e))
    }
}

fn is_chunk(r: &Resource) -> bool {
    matches!(r, Resource::Chunks { .. })
}

#[test]
fn window_rule_moves_on_after_more_than_half_fail() {
    use SourceKind::*;
    let data = image(40 * CHUNK as usize + 100, 1);
    let bad = source(
        &data,
        5,
        Box::new(|r, _, _| {
            if is_chunk(r) {
                Outcome::Fail(Failure::Status(500))
            } else {
                Outcome::Ok
            }
        }),
    );
    let good = source(&data, 5, healthy());
    let mut sim = Sim::new(settings(), &[Conductor1, Repository], vec![bad, good], None);
    sim.run(10_000);
    sim.succeeded(&data);
    // Window of 10: the 6th failure is the first "more than 50%".
    assert_eq!(sim.sources[0].chunk_requests.len(), 6);
    assert!(sim.has_event(|e| *e
        == Event::SourceUnavailable {
            source: SourceId(0),
            failures: 6
        }));
    // Every chunk came from the good source exactly once.
    assert_eq!(sim.sources[1].chunk_bytes, data.len() as u64);
}

#[test]
fn exactly_half_failing_is_not_unavailable() {
    let data = image(30 * CHUNK as usize, 2);
    let flaky = source(
        &data,
        5,
        Box::new(|r, n, _| {
            if is_chunk(r) && n % 2 == 0 {
                Outcome::Fail(Failure::ShortBody)
            } else {
                Outcome::Ok
            }
        }),
    );
    let backup = source(&data, 5, healthy());
    let mut sim = Sim::new(
        settings(),
        &[SourceKind::Conductor1, SourceKind::Conductor2],
        vec![flaky, backup],
        None,
    );
    sim.run(10_000);
    sim.succeeded(&data);
    assert!(!sim.has_event(|e| matches!(e, Event::SourceUnavailable { .. })));
    assert!(sim.sources[1].chunk_requests.is_empty());
}

#[test]
fn window_size_is_tunable() {
    let data = image(20 * CHUNK as usize, 3);
    let bad = source(
        &data,
        5,
        Box::new(|r, _, _| {
            if is_chunk(r) {
                Outcome::Fail(Failure::Connect)
            } else {
                Outcome::Ok
            }
        }),
    );
    let good = source(&data, 5, healthy());
    let mut s = settings();
    s.health.window = 4;
    let mut sim = Sim::new(
        s,
        &[SourceKind::Conductor1, SourceKind::Repository],
        vec![bad, good],
        None,
    );
    sim.run(10_000);
    sim.succeeded(&data);
    assert_eq!(sim.sources[0].chunk_requests.len(), 3);
}

#[test]
fn slow_chunks_count_as_failures_but_keep_their_bytes() {
    let data = image(20 * CHUNK as usize, 4);
    // 4 KiB in 2 s is below the 64 KiB/s floor.
    let slow = source(&data, 2000, healthy());
    let fast = source(&data, 5, healthy());
    let mut sim = Sim::new(
        settings(),
        &[SourceKind::Conductor1, SourceKind::Repository],
        vec![slow, fast],
        None,
    );
    sim.run(10_000);
    sim.succeeded(&data);
    assert_eq!(sim.sources[0].chunk_requests.len(), 6);
    let total: u64 = sim.sources.iter().map(|s| s.chunk_bytes).sum();
    assert_eq!(
        total,
        data.len() as u64,
        "slow chunks were kept, not fetched again"
    );
}

#[test]
fn probe_after_cool_down_returns_to_the_higher_priority_source() {
    let data = image(400 * CHUNK as usize, 5);
    // The conductor fails for its first 30 s, then recovers.
    let conductor = source(
        &data,
        10,
        Box::new(|r, _, t| {
            if is_chunk(r) && t < Duration::from_secs(30) {
                Outcome::Fail(Failure::Status(503))
            } else {
                Outcome::Ok
            }
        }),
    );
    // The repository is healthy but slow-ish (still above the floor).
    let repo = source(&data, 200, healthy());
    let mut s = settings();
    s.health.min_rate = 0;
    let mut sim = Sim::new(
        s,
        &[SourceKind::Conductor1, SourceKind::Repository],
        vec![conductor, repo],
        None,
    );
    sim.run(100_000);
    sim.succeeded(&data);
    assert!(sim.has_event(|e| *e
        == Event::SourceRestored {
            source: SourceId(0)
        }));
    // The probe came after the 60 s cool-down, and the last chunks came from the conductor.
    let restored_at = sim
        .events
        .iter()
        .find(|(_, e)| {
            *e == Event::SourceRestored {
                source: SourceId(0),
            }
        })
        .unwrap()
        .0;
    assert!(restored_at >= Duration::from_secs(60), "{restored_at:?}");
    let last = sim.dl.manifest().unwrap().chunk_count() - 1;
    assert!(
        sim.sources[0]
            .chunk_requests
            .iter()
            .any(|&(_, l)| l == last)
    );
    assert!(!sim.sources[1].chunk_requests.is_empty());
}

#[test]
fn failed_probe_cools_down_again() {
    let data = image(600 * CHUNK as usize, 6);
    let dead = source(
        &data,
        10,
        Box::new(|r, _, _| {
            if is_chunk(r) {
                Outcome::Fail(Failure::Connect)
            } else {
                Outcome::Ok
            }
        }),
    );
    let repo = source(&data, 300, healthy());
    let mut s = settings();
    s.health.min_rate = 0;
    let mut sim = Sim::new(
        s,
        &[SourceKind::Conductor1, SourceKind::Repository],
        vec![dead, repo],
        None,
    );
    sim.run(100_000);
    sim.succeeded(&data);
    // 6 to trip the window, then one probe per 60 s cool-down over ~180 s.
    let probes = sim.sources[0].chunk_requests.len() - 6;
    let secs = sim.elapsed().as_secs();
    assert!(secs > 150, "{secs}");
    // Each cool-down restarts after the failed probe's answer (10 ms later).
    assert!(
        (secs / 61..=secs / 60).contains(&(probes as u64)),
        "{probes} probes in {secs} s"
    );
    assert!(probes >= 2);
}

fn backoff_run(settings: Settings, attempts_to_watch: usize) -> Sim {
    let data = image(4 * CHUNK as usize, 7);
    let down = source(
        &data,
        100,
        Box::new(|_, _, _| Outcome::Fail(Failure::Connect)),
    );
    let mut sim = Sim::new(settings, &[SourceKind::Repository], vec![down], None);
    for _ in 0..attempts_to_watch * 4 {
        if !sim.step() {
            break;
        }
    }
    sim
}

fn retry_delays(sim: &Sim) -> Vec<Duration> {
    sim.events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::AttemptFailed {
                retry_in: Some(d), ..
            } => Some(*d),
            _ => None,
        })
        .collect()
}

#[test]
fn backoff_doubles_from_30s_with_jitter_capped_then_attempts_run_out() {
    let mut s = settings();
    s.retry.maximum_retry_delay = Duration::from_secs(600);
    let mut sim = backoff_run(s, 20);
    sim.run(1000);
    let delays = retry_delays(&sim);
    let nominal = [30, 60, 120, 240, 480, 600, 600, 600, 600];
    assert_eq!(delays.len(), nominal.len());
    for (d, n) in delays.iter().zip(nominal) {
        let n = Duration::from_secs(n);
        assert!(*d <= n && *d >= n * 9 / 10, "{d:?} vs {n:?}");
    }
    assert!(delays.windows(2).any(|w| w[0] != w[1]), "jitter");
    assert_eq!(
        sim.dl.status(),
        Status::Failed(Error::AttemptsExhausted {
            attempts: 10,
            last: AttemptFailure::NoSourceHasVersion {
                version: VERSION.into()
            }
        })
    );
}

#[test]
fn zero_max_delay_retries_at_once() {
    let mut s = settings();
    s.retry.maximum_retry_delay = Duration::ZERO;
    s.retry.attempts = 3;
    let mut sim = backoff_run(s, 10);
    sim.run(100);
    assert_eq!(retry_delays(&sim), [Duration::ZERO; 2]);
    assert!(matches!(
        sim.dl.status(),
        Status::Failed(Error::AttemptsExhausted { attempts: 3, .. })
    ));
}

#[test]
fn timeout_bounds_the_whole_download_including_retries() {
    let mut s = settings();
    s.retry.attempts = 0;
    s.retry.timeout = Duration::from_secs(1800);
    let mut sim = backoff_run(s, 1000);
    sim.run(1000);
    assert_eq!(
        sim.dl.status(),
        Status::Failed(Error::TimedOut {
            after: Duration::from_secs(1800)
        })
    );
    assert_eq!(sim.elapsed(), Duration::from_secs(1800));
    // 30+60+120+240+480 = 930 s, +960 = 1890 s nominal: six or seven attempts
    // (jitter), the last retry scheduled before the deadline.
    let delays = retry_delays(&sim);
    assert!((6..=7).contains(&delays.len()), "{delays:?}");
    let starts = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Discovered { .. } | Event::AttemptFailed { .. }));
    assert!(starts.clone().all(|(t, _)| *t < Duration::from_secs(1800)));
}

#[test]
fn forever_mode_retries_until_a_source_comes_back() {
    let data = image(8 * CHUNK as usize, 8);
    let mut s = settings();
    s.retry.attempts = 0;
    s.retry.enable_timeout = false;
    s.retry.maximum_retry_delay = Duration::from_secs(86_400);
    let cutoff = Duration::from_secs(90 * 86_400);
    let repo = source(
        &data,
        100,
        Box::new(move |_, _, t| {
            if t < cutoff {
                Outcome::Fail(Failure::Connect)
            } else {
                Outcome::Ok
            }
        }),
    );
    let mut sim = Sim::new(s, &[SourceKind::Repository], vec![repo], None);
    sim.run(10_000);
    sim.succeeded(&data);
    let delays = retry_delays(&sim);
    assert!(delays.len() > 90, "{}", delays.len());
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(86_400)));
    assert!(delays.last().unwrap() >= &Duration::from_secs(77_760));
}

#[test]
fn sequenced_second_waits_for_peer_then_falls_back_when_peer_fails_midway() {
    use SourceKind::*;
    let data = image(50 * CHUNK as usize, 9);
    let mut peer = source(
        &data,
        5,
        Box::new(|r, _, t| {
            // The peer finishes its own download at 100 s, serves 20 chunks, then dies.
            match r {
                Resource::Chunks { first, .. } if *first >= 20 => Outcome::Fail(Failure::Connect),
                _ if t < Duration::from_secs(100) && !is_chunk(r) => Outcome::Ok,
                _ => Outcome::Ok,
            }
        }),
    );
    peer.versions = vec!["6.2.0".into()];
    let conductor = source(&data, 5, healthy());
    let mut s = settings();
    s.ha = HaMode::SequencedSecond;
    let mut sim = Sim::new(s, &[HaPeer, Conductor1], vec![peer, conductor], None);
    assert_eq!(sim.dl.status(), Status::WaitingForPeer);
    // Let it poll the peer for a while, then the peer gets the version.
    while sim.elapsed() < Duration::from_secs(100) {
        assert!(sim.step());
        assert_eq!(sim.dl.status(), Status::WaitingForPeer);
        assert!(
            sim.sources[1].requests == 0,
            "nothing asked of the conductor while waiting"
        );
    }
    sim.sources[0].versions.push(VERSION.into());
    sim.run(10_000);
    sim.succeeded(&data);
    assert!(sim.has_event(|e| *e == Event::PeerReady));
    let peer_first: Vec<u32> = sim.sources[0].chunk_requests.iter().map(|c| c.0).collect();
    assert_eq!(&peer_first[..20], &(0..20).collect::<Vec<_>>()[..]);
    assert!(sim.has_event(|e| *e
        == Event::SourceUnavailable {
            source: SourceId(0),
            failures: 6
        }));
    // The conductor served only what the peer did not: no byte fetched twice.
    assert_eq!(sim.sources[1].chunk_bytes, data.len() as u64 - 20 * CHUNK);
}

#[test]
fn sequenced_second_stops_waiting_for_a_dead_peer() {
    use SourceKind::*;
    let data = image(10 * CHUNK as usize, 10);
    let peer = source(
        &data,
        5,
        Box::new(|_, _, _| Outcome::Fail(Failure::Connect)),
    );
    let conductor = source(&data, 5, healthy());
    let mut s = settings();
    s.ha = HaMode::SequencedSecond;
    let mut sim = Sim::new(s, &[HaPeer, Conductor1], vec![peer, conductor], None);
    sim.run(10_000);
    sim.succeeded(&data);
    assert!(sim.has_event(|e| *e == Event::PeerFailed));
    // Six failed polls, 10 s apart.
    assert!(sim.elapsed() >= Duration::from_secs(50));
}

#[test]
fn resume_fetches_only_missing_chunks() {
    let data = image(16 * CHUNK as usize, 11);
    let src = source(&data, 5, healthy());
    let manifest = src.manifest.clone();
    let done: Vec<u32> = (0..16).filter(|i| i % 3 != 0).collect();
    let mut sim = Sim::new(
        settings(),
        &[SourceKind::Repository],
        vec![src],
        Some(Resume {
            manifest,
            done: done.clone(),
        }),
    );
    // The partial file already holds the done chunks.
    sim.file = vec![0; data.len()];
    for &i in &done {
        let r = i as usize * CHUNK as usize..(i as usize + 1) * CHUNK as usize;
        sim.file[r.clone()].copy_from_slice(&data[r]);
    }
    sim.run(10_000);
    sim.succeeded(&data);
    let fetched: Vec<u32> = sim.sources[0].chunk_requests.iter().map(|c| c.0).collect();
    assert_eq!(fetched, [0, 3, 6, 9, 12, 15]);
}

#[test]
fn resume_of_a_manifest_nobody_serves_starts_over() {
    let old = image(8 * CHUNK as usize, 12);
    let new = image(8 * CHUNK as usize, 13);
    let src = source(&new, 5, healthy());
    let stale = Manifest::build(VERSION, "ssr.iso", &old, CHUNK).unwrap();
    let mut sim = Sim::new(
        settings(),
        &[SourceKind::Repository],
        vec![src],
        Some(Resume {
            manifest: stale,
            done: vec![0, 1, 2],
        }),
    );
    sim.file = old.clone();
    sim.run(10_000);
    sim.succeeded(&new);
    assert!(sim.has_event(|e| *e == Event::PartialDiscarded));
    assert_eq!(sim.sources[0].chunk_bytes, new.len() as u64);
}

#[test]
fn a_source_with_another_manifest_is_never_mixed_in() {
    use SourceKind::*;
    let data = image(20 * CHUNK as usize, 14);
    let other = image(20 * CHUNK as usize, 15);
    let first = source(
        &data,
        5,
        Box::new(|r, n, _| {
            if is_chunk(r) && n > 8 {
                Outcome::Fail(Failure::Status(502))
            } else {
                Outcome::Ok
            }
        }),
    );
    let different = source(&other, 5, healthy());
    let same = source(&data, 5, healthy());
    let mut sim = Sim::new(
        settings(),
        &[Conductor1, Conductor2, Repository],
        vec![first, different, same],
        None,
    );
    sim.run(10_000);
    sim.succeeded(&data);
    assert!(sim.has_event(|e| *e
        == Event::ManifestMismatch {
            source: SourceId(1)
        }));
    assert!(sim.sources[1].chunk_requests.is_empty());
    assert!(!sim.sources[2].chunk_requests.is_empty());
}

#[test]
fn corrupt_chunk_is_rejected_and_fetched_again() {
    let data = image(10 * CHUNK as usize, 16);
    let src = source(
        &data,
        5,
        Box::new(|r, _, _| match r {
            Resource::Chunks { first: 4, .. } => Outcome::Corrupt,
            _ => Outcome::Ok,
        }),
    );
    let other = source(&data, 5, healthy());
    let mut sim = Sim::new(
        settings(),
        &[SourceKind::Conductor1, SourceKind::Repository],
        vec![src, other],
        None,
    );
    sim.run(10_000);
    sim.succeeded(&data);
    assert!(sim.has_event(|e| *e
        == Event::ChunkRejected {
            source: SourceId(0),
            index: 4
        }));
    // Chunk 4 kept failing at the first source until its window tripped, then came
    // from the second: the first never served anything past it.
    assert!(sim.sources[1].chunk_requests.iter().any(|c| c.0 == 4));
}

#[test]
fn range_ignoring_source_is_read_in_one_pass() {
    let data = image(64 * CHUNK as usize, 17);
    let src = source(&data, 5, Box::new(|_, _, _| Outcome::NoRange));
    let mut s = settings();
    s.parallel = 4;
    let mut sim = Sim::new(s, &[SourceKind::Repository], vec![src], None);
    sim.run(10_000);
    sim.succeeded(&data);
    // The first requests were single chunks (up to `parallel` in flight), then one span
    // covering the rest.
    let reqs = &sim.sources[0].chunk_requests;
    assert!(reqs.len() <= 5, "{reqs:?}");
    assert_eq!(reqs.last().unwrap().1, 63);
}

#[test]
fn no_source_with_the_version_fails_the_attempt() {
    let data = image(4 * CHUNK as usize, 18);
    let mut old = source(&data, 5, healthy());
    old.versions = vec!["1.0".into()];
    let mut s = settings();
    s.retry.attempts = 1;
    let mut sim = Sim::new(s, &[SourceKind::Repository], vec![old], None);
    sim.run(100);
    assert!(matches!(
        sim.dl.status(),
        Status::Failed(Error::AttemptsExhausted {
            attempts: 1,
            last: AttemptFailure::NoSourceHasVersion { .. }
        })
    ));
    assert_eq!(sim.sources[0].chunk_requests.len(), 0);
}

#[test]
fn settings_out_of_range_are_refused() {
    let mut s = Settings::default();
    s.retry.timeout = Duration::from_secs(604_801);
    let err = Download::new(
        s,
        VERSION,
        &[SourceKind::Repository],
        None,
        StdRng::seed_from_u64(1),
        Instant::now(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::OutOfRange {
            field: "timeout",
            value: 604_801,
            min: 1800,
            max: 604_800
        }
    );
}

/// A restarted process keeps the deadline and the attempt count: the first "process"
/// fails two attempts and runs 1000 s of a 1800 s timeout; the second, restored with
/// what the first persisted, times out 800 s after it starts, not 1800 s.
#[test]
fn restored_clock_keeps_the_deadline_and_the_attempts_across_a_restart() {
    let mut settings = Settings::default();
    settings.retry.timeout = Duration::from_secs(1800);
    settings.retry.attempts = 0;
    settings.retry.maximum_retry_delay = Duration::from_secs(400);
    let t0 = Instant::now();
    let nobody_has_it = |dl: &mut Download<StdRng>, now: Instant| {
        while let Some(Action::Fetch(f)) = dl.poll_action() {
            dl.handle_body(f.id, Ok(br#"["1.0"]"#), now);
        }
    };
    let mut first = Download::new(
        settings,
        VERSION,
        &[SourceKind::Repository],
        None,
        StdRng::seed_from_u64(7),
        t0,
    )
    .unwrap();
    let mut now = t0;
    let mut failed = 0;
    while failed < 2 {
        nobody_has_it(&mut first, now);
        while let Some(e) = first.poll_event() {
            if matches!(e, Event::AttemptFailed { .. }) {
                failed += 1;
            }
        }
        if let Some(t) = first.poll_timeout() {
            now = t;
            first.handle_timeout(now);
        }
    }
    assert_eq!(first.attempt(), 3);
    // The process dies 1000 s after it started; another starts at `t1`.
    let spent = Duration::from_secs(1000);
    let t1 = t0 + Duration::from_secs(5000);
    let restart = |restore: bool| {
        let mut dl = Download::new(
            settings,
            VERSION,
            &[SourceKind::Repository],
            None,
            StdRng::seed_from_u64(8),
            t1,
        )
        .unwrap();
        if restore {
            dl.restore_clock(spent, failed, t1);
        }
        let mut now = t1;
        while !dl.is_finished() {
            nobody_has_it(&mut dl, now);
            let Some(t) = dl.poll_timeout() else { break };
            now = t;
            dl.handle_timeout(now);
        }
        (dl, now)
    };
    let (dl, ended) = restart(true);
    assert_eq!(
        dl.status(),
        Status::Failed(Error::TimedOut {
            after: Duration::from_secs(1800)
        })
    );
    assert_eq!(ended - t1, Duration::from_secs(800));
    // Without the restored clock the deadline would start again.
    let (_, ended) = restart(false);
    assert_eq!(ended - t1, Duration::from_secs(1800));
    // An expired deadline fails at once; the attempt count continues.
    let mut dl = Download::new(
        settings,
        VERSION,
        &[SourceKind::Repository],
        None,
        StdRng::seed_from_u64(9),
        t1,
    )
    .unwrap();
    dl.restore_clock(Duration::from_secs(1800), 2, t1);
    assert!(matches!(
        dl.status(),
        Status::Failed(Error::TimedOut { .. })
    ));
    let mut dl = Download::new(
        settings,
        VERSION,
        &[SourceKind::Repository],
        None,
        StdRng::seed_from_u64(9),
        t1,
    )
    .unwrap();
    dl.restore_clock(Duration::from_secs(10), 2, t1);
    assert_eq!(dl.attempt(), 3);
}
