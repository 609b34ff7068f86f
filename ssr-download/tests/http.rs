//! The HTTP driver against real HTTP servers on loopback (ssr-testkit's server with
//! its fault plans), a few MiB each.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use p256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};
use ssr_download::http::{Downloaded, Options, Report, download_with};
use ssr_download::wire::versions_json;
use ssr_download::{
    ChunkHash, Error, Event, Manifest, ManifestTrust, ReleaseKey, Settings, SourceConfig,
    SourceKind, sign_manifest,
};
use ssr_testkit::http::{Fault, HttpServer, Request, Served, StaticFiles, TlsIdentity};

const VERSION: &str = "7.1.3-r2";
const CHUNK: u64 = 64 << 10;
const FILE: &str = "ssr-7.1.3.img";

fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The release key the tests publish with (a fixed test scalar).
fn release_key() -> SigningKey {
    SigningKey::from_slice(&[0x5a; 32]).unwrap()
}

/// Options trusting `release_key()` (and no CA).
fn options() -> Options {
    Options {
        trust: ManifestTrust {
            keys: vec![ReleaseKey::of(&release_key())],
            ..ManifestTrust::default()
        },
        ..Options::default()
    }
}

/// Publishes `data` as VERSION in `files`, the manifest signed by `release_key()`.
fn publish(files: &StaticFiles, data: &[u8]) -> Manifest {
    publish_with(files, data, ChunkHash::Sha256)
}

/// [`publish`] with `hash` chunk digests.
fn publish_with(files: &StaticFiles, data: &[u8], hash: ChunkHash) -> Manifest {
    let m = Manifest::build_with(VERSION, FILE, data, CHUNK, hash).unwrap();
    files.insert("/versions", versions_json(&["7.0.0", VERSION]));
    files.insert(
        &format!("/images/{VERSION}/manifest.json"),
        sign_manifest(&m, &release_key()),
    );
    files.insert(&format!("/images/{VERSION}/{FILE}"), data.to_vec());
    m
}

/// A server publishing `data` as VERSION.
fn server(data: &[u8]) -> (HttpServer, Manifest) {
    server_with(data, ChunkHash::Sha256)
}

/// [`server`] with `hash` chunk digests.
fn server_with(data: &[u8], hash: ChunkHash) -> (HttpServer, Manifest) {
    let files = StaticFiles::new();
    let m = publish_with(&files, data, hash);
    (HttpServer::start(files).unwrap(), m)
}

fn is_image(r: &Request) -> bool {
    r.path.ends_with(FILE)
}

/// The chunk a request starts at.
fn chunk_of(r: &Request) -> Option<u64> {
    let spec = r.header("range")?.strip_prefix("bytes=")?;
    Some(spec.split('-').next()?.parse::<u64>().ok()? / CHUNK)
}

fn settings() -> Settings {
    let mut s = Settings {
        parallel: 2,
        ..Settings::default()
    };
    s.health.min_rate = 0;
    s.health.request_timeout = Duration::from_secs(2);
    s
}

/// `settings()` with a single attempt.
fn one_try() -> Settings {
    let mut s = settings();
    s.retry.attempts = 1;
    s
}

/// From chunk `from` on, every image request `s` gets is answered with HTTP `status`.
fn fail_image_from_chunk(s: &HttpServer, from: u64, status: u16) {
    s.set_faults(move |r, _| {
        (is_image(r) && chunk_of(r).is_some_and(|c| c >= from)).then_some(Fault::Status(status))
    });
}

fn src(kind: SourceKind, s: &HttpServer) -> SourceConfig {
    SourceConfig { kind, url: s.url() }
}

fn run(
    sources: &[SourceConfig],
    settings: Settings,
    dest: &Path,
) -> (Result<Downloaded, Error>, Vec<Event>) {
    let (result, events, _) = run_with(sources, settings, &options(), dest);
    (result, events)
}

/// Runs a download; returns its result, the events and the per-source error lines.
fn run_with(
    sources: &[SourceConfig],
    settings: Settings,
    options: &Options,
    dest: &Path,
) -> (Result<Downloaded, Error>, Vec<Event>, Vec<String>) {
    let mut events = Vec::new();
    let mut details = Vec::new();
    let result = download_with(
        sources,
        settings,
        options,
        VERSION,
        dest,
        &mut |r| match r {
            Report::Event(e) => events.push(e.clone()),
            Report::SourceError { reason, .. } => details.push(reason),
            Report::Progress(_) => {}
        },
    );
    (result, events, details)
}

fn check_file(path: &Path, data: &[u8]) {
    let got = std::fs::read(path).unwrap();
    assert_eq!(Sha256::digest(&got), Sha256::digest(data));
}

/// Downloads `data` from `s` as conductor 1 with a healthy repository behind it: the
/// image must arrive intact. Returns the repository's server and the events.
fn run_with_healthy_backup(s: &HttpServer, data: &[u8]) -> (HttpServer, Vec<Event>) {
    let (backup, _) = server(data);
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        src(SourceKind::Conductor1, s),
        src(SourceKind::Repository, &backup),
    ];
    let (result, events) = run(&sources, settings(), dir.path());
    check_file(&result.unwrap().path, data);
    (backup, events)
}

#[test]
fn failing_dying_and_healthy_servers() {
    let data = image(4 << 20, 1);
    // Conductor 1 answers versions and manifest but fails every image request.
    let (failing, _) = server(&data);
    failing.set_faults(|r, _| is_image(r).then_some(Fault::Status(500)));
    // Conductor 2 serves 20 chunks, then the process dies (listener closed).
    let (dying, _) = server(&data);
    let dying_url = dying.url();
    // The repository is healthy.
    let (healthy, _) = server(&data);
    let sources = [
        SourceConfig {
            kind: SourceKind::Conductor1,
            url: failing.url(),
        },
        SourceConfig {
            kind: SourceKind::Conductor2,
            url: dying_url,
        },
        src(SourceKind::Repository, &healthy),
    ];
    let killer = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while dying.body_bytes_for(FILE) < 20 * CHUNK && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let served = dying.body_bytes_for(FILE);
        drop(dying);
        served
    });
    let dir = tempfile::tempdir().unwrap();
    let (result, events) = run(&sources, settings(), dir.path());
    let done = result.unwrap();
    check_file(&done.path, &data);
    assert_eq!(done.path, dir.path().join(FILE));
    let dying_served = killer.join().unwrap();
    // The window rule took conductor 1 out after 6 failed requests (one more may
    // already have been in flight: two run at once).
    let failed = failing
        .served()
        .iter()
        .filter(|s| s.path.ends_with(FILE))
        .count();
    assert!((6..=7).contains(&failed), "{failed}: {events:?}");
    assert!(events.contains(&Event::SourceUnavailable {
        source: ssr_download::SourceId(0),
        failures: 6
    }));
    assert!(events.contains(&Event::SourceUnavailable {
        source: ssr_download::SourceId(1),
        failures: 6
    }));
    assert!(dying_served >= 20 * CHUNK);
    // Bytes fetched more than once: at most one chunk per request cut by the death
    // (two in flight).
    // (The dying server's count is taken just before it dies, so it may miss a few
    // bytes of its last answers: the bound below stays conservative.)
    let total = dying_served + healthy.body_bytes_for(FILE);
    let extra = total.saturating_sub(data.len() as u64);
    assert!(extra <= 2 * CHUNK, "{total} for {}", data.len());
    // Nothing left behind but the image and the record of it.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!(".ssr-download-{VERSION}.verified"),
            FILE.to_string()
        ]
    );
}

#[test]
fn corrupted_chunk_is_caught_by_its_hash() {
    let data = image(2 << 20, 2);
    let (s, _) = server(&data);
    s.set_faults(|r, _| (is_image(r) && chunk_of(r) == Some(5)).then_some(Fault::Corrupt));
    let (backup, events) = run_with_healthy_backup(&s, &data);
    assert!(events.contains(&Event::ChunkRejected {
        source: ssr_download::SourceId(0),
        index: 5
    }));
    // Chunk 5 came corrupt once; the backup served it (and only it), conductor 1 stayed
    // in use for everything else.
    assert_eq!(image_chunks_served(&backup.served()), [5]);
    let from_s = image_chunks_served(&s.served());
    assert_eq!(from_s.iter().filter(|&&c| c == 5).count(), 1);
    assert_eq!(from_s.len() as u64, (2 << 20) / CHUNK);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::SourceUnavailable { .. }))
    );
}

/// The case: one source corrupts two chunks on every request, one dies after
/// ten chunks, one is dead from the start, one is healthy. Bytes fetched more than
/// once stay within one chunk per failed request, counted at the servers.
#[test]
fn corrupting_dying_and_dead_sources_refetch_at_most_one_chunk_per_failure() {
    let data = image(4 << 20, 12);
    let chunks = data.len() as u64 / CHUNK;
    let (corrupting, _) = server(&data);
    corrupting.set_faults(|r, _| {
        (is_image(r) && matches!(chunk_of(r), Some(3 | 40))).then_some(Fault::Corrupt)
    });
    let (dying, _) = server(&data);
    // Versions, manifest, one chunk; then it closes every connection.
    dying.set_faults(|r, n| (is_image(r) && n >= 3).then_some(Fault::Close));
    let (healthy, _) = server(&data);
    let sources = [
        SourceConfig {
            kind: SourceKind::HaPeer,
            // Nobody listens on port 1 (a port freed just now could be taken by another
            // test's server before we connect).
            url: "http://127.0.0.1:1".to_owned(),
        },
        src(SourceKind::Conductor1, &corrupting),
        src(SourceKind::Conductor2, &dying),
        src(SourceKind::Repository, &healthy),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (result, events) = run(&sources, settings(), dir.path());
    check_file(&result.unwrap().path, &data);
    let rejected = events
        .iter()
        .filter(|e| matches!(e, Event::ChunkRejected { .. }))
        .count() as u64;
    assert_eq!(rejected, 2, "{events:?}");
    let total: u64 = [&corrupting, &dying, &healthy]
        .iter()
        .map(|s| s.body_bytes_for(FILE))
        .sum();
    let extra = total - data.len() as u64;
    assert!(extra <= rejected * CHUNK, "{extra} bytes fetched twice");
    // The corrupting source stayed in use: it was asked for every chunk once.
    let from_corrupting = image_chunks_served(&corrupting.served());
    assert_eq!(from_corrupting.len() as u64, chunks);
    // The two corrupt chunks came from the other sources (the dying one, then the
    // healthy one once the dying one was unavailable), nothing else did.
    let mut others: Vec<u64> = [&dying, &healthy]
        .iter()
        .flat_map(|s| image_chunks_served(&s.served()))
        .collect();
    others.sort_unstable();
    others.dedup();
    assert_eq!(others, [3, 40]);
}

fn chunk_of_served(s: &Served) -> Option<u64> {
    let spec = s.range.as_deref()?.strip_prefix("bytes=")?;
    Some(spec.split('-').next()?.parse::<u64>().ok()? / CHUNK)
}

/// The chunks the image requests in `log` started at.
fn image_chunks_served(log: &[Served]) -> Vec<u64> {
    log.iter()
        .filter(|x| x.path.ends_with(FILE))
        .filter_map(chunk_of_served)
        .collect()
}

#[test]
fn server_ignoring_range_is_read_in_one_pass() {
    let data = image(3 << 20, 3);
    let (s, _) = server(&data);
    s.set_faults(|r, _| is_image(r).then_some(Fault::IgnoreRange));
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = run(&[src(SourceKind::Repository, &s)], settings(), dir.path());
    check_file(&result.unwrap().path, &data);
    let image_requests = s.served().iter().filter(|x| x.path.ends_with(FILE)).count();
    // Up to `parallel` single-chunk requests before the 200s are seen, then one pass.
    assert!(image_requests <= 3, "{image_requests} requests");
}

#[test]
fn wrong_content_range_truncation_and_stalls_are_failures() {
    let data = image(2 << 20, 4);
    let (s, _) = server(&data);
    s.set_faults(|r, n| {
        if !is_image(r) {
            return None;
        }
        match n % 5 {
            0 => Some(Fault::WrongContentRange),
            1 => Some(Fault::Truncate(1000)),
            2 => Some(Fault::Stall(Duration::from_secs(5))),
            _ => None,
        }
    });
    let (_, events) = run_with_healthy_backup(&s, &data);
    assert!(events.contains(&Event::SourceUnavailable {
        source: ssr_download::SourceId(0),
        failures: 6
    }));
}

#[test]
fn interrupted_download_resumes_without_refetching() {
    let data = image(4 << 20, 5);
    let (s, _) = server(&data);
    // The first run: chunks 0..24 arrive, then the server fails everything.
    fail_image_from_chunk(&s, 24, 503);
    let dir = tempfile::tempdir().unwrap();
    let sources = [src(SourceKind::Repository, &s)];
    let (result, _) = run(&sources, one_try(), dir.path());
    assert!(
        matches!(result, Err(Error::AttemptsExhausted { attempts: 1, .. })),
        "{result:?}"
    );
    let first_run = s.body_bytes_for(FILE);
    assert_eq!(first_run, 24 * CHUNK);
    // The second run resumes: only chunks 24.. are served.
    s.clear_faults();
    let (result, _) = run(&sources, settings(), dir.path());
    let done = result.unwrap();
    check_file(&done.path, &data);
    assert_eq!(done.resumed_chunks, 24);
    assert_eq!(
        s.body_bytes_for(FILE) - first_run,
        data.len() as u64 - 24 * CHUNK
    );
}

#[test]
fn tampered_partial_chunk_is_fetched_again_on_resume() {
    for hash in [ChunkHash::Sha256, ChunkHash::Blake3] {
        tampered_partial_chunk_is_fetched_again(hash);
    }
}

fn tampered_partial_chunk_is_fetched_again(hash: ChunkHash) {
    let data = image(1 << 20, 6);
    let (s, _) = server_with(&data, hash);
    fail_image_from_chunk(&s, 8, 500);
    let dir = tempfile::tempdir().unwrap();
    let sources = [src(SourceKind::Repository, &s)];
    assert!(run(&sources, one_try(), dir.path()).0.is_err());
    // Flip a byte of chunk 3 in the partial file.
    let part = dir
        .path()
        .join(format!(".ssr-download-{VERSION}/image.part"));
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[3 * CHUNK as usize + 7] ^= 0x40;
    std::fs::write(&part, bytes).unwrap();
    s.clear_faults();
    let before = s.served().len();
    let (result, _) = run(&sources, settings(), dir.path());
    let done = result.unwrap();
    check_file(&done.path, &data);
    assert_eq!(done.resumed_chunks, 7);
    let refetched = image_chunks_served(&s.served()[before..]);
    assert!(
        refetched.contains(&3) && !refetched.contains(&2),
        "{hash:?}: {refetched:?}"
    );
}

/// BLAKE3 chunk digests (manifest format 2) go through the same checks as SHA-256
/// ones: a corrupt chunk is refetched from the backup (a tampered partial chunk on
/// resume: `tampered_partial_chunk_is_fetched_again_on_resume`), and a router set to
/// `sha256-chunks-only` refuses the manifest before any image byte is asked for.
#[test]
fn blake3_chunk_digests_are_checked_and_can_be_refused() {
    let data = image(1 << 20, 9);
    let blake3_server = || server_with(&data, ChunkHash::Blake3);
    let (s, m) = blake3_server();
    assert_eq!(m.chunk_hash(), ChunkHash::Blake3);
    // A corrupt chunk 5 at conductor 1, a healthy repository behind it.
    s.set_faults(|r, _| (is_image(r) && chunk_of(r) == Some(5)).then_some(Fault::Corrupt));
    let (backup, _) = blake3_server();
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        src(SourceKind::Conductor1, &s),
        src(SourceKind::Repository, &backup),
    ];
    let (result, events) = run(&sources, one_try(), dir.path());
    check_file(&result.unwrap().path, &data);
    assert!(events.contains(&Event::ChunkRejected {
        source: ssr_download::SourceId(0),
        index: 5
    }));
    assert_eq!(image_chunks_served(&backup.served()), [5]);
    // Run again: the placed image is trusted as it is...
    let (result, _) = run(&sources, one_try(), dir.path());
    assert!(result.unwrap().already_present);
    // ...but not by a router since set to SHA-256 chunks only.
    let mut strict = options();
    strict.trust.sha256_chunks_only = true;
    let (result, _, details) = run_with(&sources, one_try(), &strict, dir.path());
    assert!(result.is_err(), "{result:?}");
    assert!(
        details.iter().any(|d| d.contains("sha256-chunks-only")),
        "{details:?}"
    );

    // A FIPS-minded router refuses the format-2 manifest.
    let (s, _) = blake3_server();
    let dir = tempfile::tempdir().unwrap();
    let sources = [src(SourceKind::Repository, &s)];
    let (result, _, details) = run_with(&sources, one_try(), &strict, dir.path());
    assert!(result.is_err());
    assert!(
        details.iter().any(|d| d.contains("sha256-chunks-only")),
        "{details:?}"
    );
    assert_eq!(s.body_bytes_for(FILE), 0);
}

#[test]
fn no_source_reachable_fails_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on (tcpmux, privileged; a port freed just now could be taken
    // by another test's server before we connect).
    let sources = [SourceConfig {
        kind: SourceKind::Repository,
        url: "http://127.0.0.1:1".to_owned(),
    }];
    let (result, _) = run(&sources, one_try(), dir.path());
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("download failed after 1 attempts: no source has version {VERSION}")
    );
}

#[test]
fn sequenced_second_node_waits_for_its_peer_then_falls_back() {
    let data = image(2 << 20, 8);
    // The peer holds the image but does not list it yet (its own download runs), and
    // fails every chunk from 10 on once it serves.
    let peer_files = StaticFiles::new();
    publish(&peer_files, &data);
    peer_files.insert("/versions", versions_json(&["7.0.0"]));
    let peer = HttpServer::start(std::sync::Arc::clone(&peer_files)).unwrap();
    fail_image_from_chunk(&peer, 10, 500);
    let (conductor, _) = server(&data);
    let mut s = settings();
    s.ha = ssr_download::HaMode::SequencedSecond;
    s.peer_poll = Duration::from_secs(1);
    let sources = [
        src(SourceKind::HaPeer, &peer),
        src(SourceKind::Conductor1, &conductor),
    ];
    let conductor_log = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let waiter = thread::spawn(move || {
            let r = run(&sources, s, &path);
            (r, dir)
        });
        // Waiting: the peer is polled (twice: it keeps polling), nothing else is asked.
        // Polled for, not slept for: a loaded machine may take longer than 1 s a poll.
        let polls = || {
            peer.served()
                .iter()
                .filter(|x| x.path == "/versions")
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while polls() < 2 {
            assert!(Instant::now() < deadline, "the peer was not polled twice");
            thread::sleep(Duration::from_millis(10));
        }
        assert!(conductor.served().is_empty());
        peer_files.insert("/versions", versions_json(&["7.0.0", VERSION]));
        let ((result, events), _dir) = waiter.join().unwrap();
        check_file(&result.unwrap().path, &data);
        assert!(events.contains(&Event::PeerReady));
        conductor.served()
    };
    // Chunks 0..10 came from the peer; the conductor served only the rest.
    let mut from_peer: Vec<u64> = peer
        .served()
        .iter()
        .filter(|x| x.status == 206)
        .filter_map(chunk_of_served)
        .collect();
    from_peer.sort_unstable();
    assert_eq!(from_peer, (0..10).collect::<Vec<_>>());
    let from_conductor = image_chunks_served(&conductor_log);
    assert!(
        from_conductor.iter().all(|&c| c >= 10),
        "{from_conductor:?}"
    );
    assert_eq!(from_conductor.len() as u64, (2 << 20) / CHUNK - 10);
}

/// HTTPS sources: one whose certificate chains to the configured CA serves the image;
/// one under another CA is refused with a clear TLS error (and serves nothing).
#[test]
fn https_sources_need_the_configured_ca() {
    let data = image(1 << 20, 9);
    let files = StaticFiles::new();
    publish(&files, &data);
    let trusted_id = TlsIdentity::generate(&["localhost"]).unwrap();
    let trusted = HttpServer::start_tls(files.clone(), &trusted_id).unwrap();
    let other_id = TlsIdentity::generate(&["localhost"]).unwrap();
    let untrusted = HttpServer::start_tls(files, &other_id).unwrap();
    let opts = Options {
        ca_bundle_pem: Some(trusted_id.ca_pem().as_bytes().to_vec()),
        ..options()
    };
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        src(SourceKind::Conductor1, &untrusted),
        src(SourceKind::Repository, &trusted),
    ];
    assert!(sources[0].url.starts_with("https://"));
    let (result, _, details) = run_with(&sources, settings(), &opts, dir.path());
    check_file(&result.unwrap().path, &data);
    assert_eq!(untrusted.stats().requests, 0, "no request reached it");
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("TLS with https://localhost") && d.contains("certificate")),
        "{details:?}"
    );
    // Only the untrusted source: the download fails, the reason is in the reports.
    let dir = tempfile::tempdir().unwrap();
    let (result, _, details) = run_with(&sources[..1], one_try(), &opts, dir.path());
    assert!(result.is_err());
    assert!(
        details
            .iter()
            .all(|d| d.contains("invalid peer certificate")),
        "{details:?}"
    );
    assert!(!details.is_empty());
}

/// Signed manifests: a good signature passes; a tampered manifest, another signer and
/// an unsigned manifest are refused (unless unsigned is explicitly allowed).
#[test]
fn manifest_signatures_are_enforced() {
    let data = image(256 << 10, 10);
    let m = Manifest::build(VERSION, FILE, &data, CHUNK).unwrap();
    let signed = sign_manifest(&m, &release_key());
    let text = String::from_utf8(signed.clone()).unwrap();
    let tampered = text.replacen(&hex_of(m.chunk_digest(1).unwrap()), &hex_of(&[0x33; 32]), 1);
    let wrong_key = sign_manifest(&m, &SigningKey::from_slice(&[0x11; 32]).unwrap());
    let cases: [(&str, Vec<u8>, Options, Option<&str>); 5] = [
        ("signed", signed.clone(), options(), None),
        (
            "tampered",
            tampered.into_bytes(),
            options(),
            Some("does not verify"),
        ),
        ("wrong key", wrong_key, options(), Some("does not trust")),
        ("unsigned", m.to_json(), options(), Some("not signed")),
        (
            "unsigned, allowed",
            m.to_json(),
            Options {
                trust: ManifestTrust {
                    keys: vec![],
                    allow_unsigned: true,
                    ..ManifestTrust::default()
                },
                ..Options::default()
            },
            None,
        ),
    ];
    for (name, manifest, opts, refusal) in cases {
        let files = StaticFiles::new();
        publish(&files, &data);
        files.insert(&format!("/images/{VERSION}/manifest.json"), manifest);
        let s = HttpServer::start(files).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (result, _, details) = run_with(
            &[src(SourceKind::Repository, &s)],
            one_try(),
            &opts,
            dir.path(),
        );
        match refusal {
            None => check_file(&result.unwrap().path, &data),
            Some(why) => {
                assert!(result.is_err(), "{name}");
                assert!(
                    details.iter().any(|d| d.contains(why)),
                    "{name}: {details:?}"
                );
                assert_eq!(s.body_bytes_for(FILE), 0, "{name}: no image byte fetched");
                assert!(!dir.path().join(FILE).exists());
            }
        }
    }
}

fn hex_of(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A source that trickles (1 KiB every 50 ms, 20 KiB/s against a 256 KiB/s floor) is
/// cut off while its request runs, long before the request would end (64 KiB chunks
/// at that rate take over 3 s each), and the healthy source takes over.
#[test]
fn a_trickling_source_is_cut_off_while_it_runs() {
    let data = image(1 << 20, 11);
    let (slow, _) = server(&data);
    slow.set_faults(|r, _| {
        is_image(r).then_some(Fault::Trickle {
            piece: 1 << 10,
            pause: Duration::from_millis(50),
        })
    });
    let (healthy, _) = server(&data);
    let mut s = settings();
    s.health.min_rate = 256 << 10;
    s.health.request_timeout = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let sources = [
        src(SourceKind::Conductor1, &slow),
        src(SourceKind::Repository, &healthy),
    ];
    let (result, events) = run(&sources, s, dir.path());
    check_file(&result.unwrap().path, &data);
    assert!(events.contains(&Event::SourceUnavailable {
        source: ssr_download::SourceId(0),
        failures: 6
    }));
    // Each slow request is cut after ~1.1 s (lagging the floor by the request
    // timeout), not after the 3.2 s it would take: 6 failures, two in flight at a
    // time, stay well under 3 x 3.2 s.
    let slow_bytes: u64 = slow.body_bytes_for(FILE);
    assert!(slow_bytes < 7 * CHUNK, "{slow_bytes}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// Running the same download again with the verified image in place fetches nothing
/// (the record's size and mtime match); a touched file is re-hashed and still fetches
/// nothing; a file changed in place is downloaded again.
#[test]
fn a_rerun_with_the_image_in_place_fetches_nothing() {
    let data = image(1 << 20, 13);
    let (s, _) = server(&data);
    let dir = tempfile::tempdir().unwrap();
    let sources = [src(SourceKind::Repository, &s)];
    let first = run(&sources, settings(), dir.path()).0.unwrap();
    assert!(!first.already_present);
    let requests = s.stats().requests;
    let again = run(&sources, settings(), dir.path()).0.unwrap();
    assert!(again.already_present);
    assert_eq!(again.path, first.path);
    assert_eq!(s.stats().requests, requests, "nothing fetched");
    // Touched (new mtime, same bytes): re-hashed, still nothing fetched.
    let f = std::fs::File::options()
        .write(true)
        .open(&first.path)
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    drop(f);
    assert!(
        run(&sources, settings(), dir.path())
            .0
            .unwrap()
            .already_present
    );
    assert_eq!(s.stats().requests, requests);
    // Changed in place: downloaded again.
    let mut bytes = std::fs::read(&first.path).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&first.path, &bytes).unwrap();
    let fixed = run(&sources, settings(), dir.path()).0.unwrap();
    assert!(!fixed.already_present);
    check_file(&fixed.path, &data);
    assert!(s.stats().requests > requests);
}

/// The whole-file pass is optional: a release whose signed manifest names a wrong
/// whole-file digest (every chunk digest right) is caught only with
/// `whole_file_sha256`; without it every byte is still checked against its chunk
/// digest, and the file is the one the chunk digests describe.
#[test]
fn the_whole_file_pass_runs_when_asked() {
    let data = image(1 << 20, 14);
    let m = Manifest::build(VERSION, FILE, &data, CHUNK).unwrap();
    let wrong_total = String::from_utf8(m.to_json()).unwrap().replacen(
        &hex_of(m.sha256()),
        &hex_of(&[0x44; 32]),
        1,
    );
    let wrong = Manifest::parse(wrong_total.as_bytes()).unwrap();
    let files = StaticFiles::new();
    publish(&files, &data);
    files.insert(
        &format!("/images/{VERSION}/manifest.json"),
        sign_manifest(&wrong, &release_key()),
    );
    let s = HttpServer::start(files).unwrap();
    let sources = [src(SourceKind::Repository, &s)];
    let dir = tempfile::tempdir().unwrap();
    let strict = Options {
        whole_file_sha256: true,
        ..options()
    };
    let (result, _, _) = run_with(&sources, one_try(), &strict, dir.path());
    assert!(
        matches!(result, Err(Error::FileDigestMismatch { .. })),
        "{result:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (result, _, _) = run_with(&sources, one_try(), &options(), dir.path());
    check_file(&result.unwrap().path, &data);
}
