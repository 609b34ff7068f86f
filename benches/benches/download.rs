//! ssr-download over loopback beside `curl`, measured in the same run against the same
//! server (ssr-testkit's HTTP server, image held in memory).
//!
//! `cargo bench -p benches --bench download` (a few minutes: it moves several GiB).
//! Criterion sweeps 16 MiB and 256 MiB images; then a 1 GiB image is fetched three
//! times each by `ssr-download` (4 MiB chunks, 4 in flight, every chunk and the whole
//! file SHA-256-checked, written to a file), by `curl -o /dev/null`, by `curl -o file`,
//! and by `curl -o file` followed by `sha256sum`; the best times and the ratios are
//! printed, with the bound that hashing every byte twice puts on any verified download
//! (one core's `openssl speed -evp sha256`, measured in the same run).
//! Last, a failover run (the first source cuts every answer half-way from the middle
//! of the image on) prints the bytes fetched more than once, in chunks per failure.

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use ssr_download::http::{Options, download_with};
use ssr_download::wire::versions_json;
use ssr_download::{
    Manifest, ManifestTrust, ReleaseKey, Settings, SourceConfig, SourceKind, sign_manifest,
};
use ssr_testkit::http::{Fault, HttpServer, StaticFiles};

const VERSION: &str = "7.1.3";
const FILE: &str = "ssr.img";
const CHUNK: u64 = 4 << 20;

fn image(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The bench's release key (a fixed scalar: it signs only bench images).
fn release() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x7b; 32]).expect("key")
}

/// Trusts `release()`, as a router configured with its public key does.
fn options() -> Options {
    Options {
        trust: ManifestTrust {
            keys: vec![ReleaseKey::of(&release())],
            allow_unsigned: false,
        },
        ..Options::default()
    }
}

fn serve(data: Vec<u8>) -> HttpServer {
    let files = StaticFiles::new();
    let m = Manifest::build(VERSION, FILE, &data, CHUNK).expect("manifest");
    files.insert("/versions", versions_json(&[VERSION]));
    files.insert(
        &format!("/images/{VERSION}/manifest.json"),
        sign_manifest(&m, &release()),
    );
    files.insert(&format!("/images/{VERSION}/{FILE}"), data);
    HttpServer::start(files).expect("server")
}

fn settings() -> Settings {
    let mut s = Settings::default();
    s.health.min_rate = 0;
    s
}

fn ours(server: &HttpServer, dir: &std::path::Path) -> Duration {
    let sources = [SourceConfig {
        kind: SourceKind::Repository,
        url: server.url(),
    }];
    let _ = std::fs::remove_file(dir.join(FILE));
    let t = Instant::now();
    download_with(&sources, settings(), &options(), VERSION, dir, &mut |_| {}).expect("download");
    t.elapsed()
}

fn curl(server: &HttpServer, out: &str, then_sha256sum: bool) -> Duration {
    let url = format!("{}/images/{VERSION}/{FILE}", server.url());
    let t = Instant::now();
    let ok = Command::new("curl")
        .args(["-sS", "-o", out, &url])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "curl failed");
    if then_sha256sum {
        let ok = Command::new("sha256sum")
            .arg(out)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "sha256sum failed");
    }
    t.elapsed()
}

/// A scratch directory in memory when possible (/dev/shm), so the figures measure the
/// transfer and the hashing, not this machine's disk.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir")
}

fn best(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().unwrap_or_default()
}

fn gib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / (1u64 << 30) as f64
}

fn sweep(c: &mut Criterion) {
    let dir = scratch();
    let mut g = c.benchmark_group("download/loopback");
    g.sample_size(10);
    for mib in [16usize, 256] {
        let server = serve(image(mib << 20));
        g.throughput(Throughput::Bytes((mib as u64) << 20));
        g.bench_function(BenchmarkId::new("ssr-download", format!("{mib}MiB")), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| ours(&server, dir.path())).sum())
        });
        g.bench_function(BenchmarkId::new("curl-devnull", format!("{mib}MiB")), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| curl(&server, "/dev/null", false)).sum())
        });
    }
    g.finish();
}

fn compare_1gib() {
    let len = 1usize << 30;
    let server = serve(image(len));
    let dir = scratch();
    let file = dir.path().join("curl.out");
    let file = file.to_str().expect("utf-8 path");
    // Warm up both (page cache, server threads).
    ours(&server, dir.path());
    curl(&server, "/dev/null", false);
    let t_ours = best(3, || ours(&server, dir.path()));
    let t_curl = best(3, || curl(&server, "/dev/null", false));
    let t_curl_file = best(3, || curl(&server, file, false));
    let t_curl_sum = best(3, || curl(&server, file, true));
    println!(
        "download 1 GiB loopback: ssr-download {:.2} GiB/s (verified, to file), curl -o /dev/null {:.2} GiB/s, curl -o file {:.2} GiB/s, curl -o file + sha256sum {:.2} GiB/s",
        gib_per_s(len, t_ours),
        gib_per_s(len, t_curl),
        gib_per_s(len, t_curl_file),
        gib_per_s(len, t_curl_sum)
    );
    println!(
        "download 1 GiB loopback: ratio vs curl -o /dev/null {:.2}x, vs curl -o file {:.2}x, vs curl -o file + sha256sum {:.2}x",
        t_curl.as_secs_f64() / t_ours.as_secs_f64(),
        t_curl_file.as_secs_f64() / t_ours.as_secs_f64(),
        t_curl_sum.as_secs_f64() / t_ours.as_secs_f64()
    );
    // The verification floor, from OpenSSL's SHA-256 in the same run: every byte is
    // hashed twice (its chunk, the whole file), so even with both cores hashing and
    // nothing else to do (no server, no copies, no writes) a download cannot beat one
    // core's SHA-256 rate.
    if let Some(sha) = benches::openssl_speed(&["-evp", "sha256"], 16384, 2) {
        let bound = sha / (1u64 << 30) as f64;
        println!(
            "download 1 GiB loopback: bound from 2 SHA-256 passes on 2 cores (openssl sha256 {bound:.2} GiB/s/core): at most {bound:.2} GiB/s = {:.2}x curl -o /dev/null; ssr-download reaches {:.0}% of it",
            bound / gib_per_s(len, t_curl),
            100.0 * gib_per_s(len, t_ours) / bound
        );
    }
}

fn failover_refetch() {
    let len = 256usize << 20;
    let data = image(len);
    let chunks = len as u64 / CHUNK;
    let failing = serve(data.clone());
    // From the middle on, every image answer is cut half-way through its chunk.
    failing.set_faults(move |r, _| {
        let first = r
            .header("range")?
            .strip_prefix("bytes=")?
            .split('-')
            .next()?
            .parse::<u64>()
            .ok()?;
        (first / CHUNK >= chunks / 2).then_some(Fault::Truncate(CHUNK as usize / 2))
    });
    let healthy = serve(data);
    let sources = [
        SourceConfig {
            kind: SourceKind::Conductor1,
            url: failing.url(),
        },
        SourceConfig {
            kind: SourceKind::Repository,
            url: healthy.url(),
        },
    ];
    let dir = scratch();
    download_with(
        &sources,
        settings(),
        &options(),
        VERSION,
        dir.path(),
        &mut |_| {},
    )
    .expect("download");
    let image_bytes = |s: &HttpServer| -> u64 {
        s.served()
            .iter()
            .filter(|x| x.path.ends_with(FILE))
            .map(|x| x.body_bytes)
            .sum()
    };
    let failures = failing
        .served()
        .iter()
        .filter(|x| x.fault.is_some())
        .count();
    let extra = (image_bytes(&failing) + image_bytes(&healthy)).saturating_sub(len as u64);
    println!(
        "download failover (256 MiB, 4 MiB chunks, 4 in flight): {failures} failed requests, {:.2} chunks fetched more than once ({:.2} per failure)",
        extra as f64 / CHUNK as f64,
        extra as f64 / CHUNK as f64 / failures.max(1) as f64
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    sweep(&mut c);
    c.final_summary();
    compare_1gib();
    failover_refetch();
}
