//! ssr-download over loopback beside `curl`, measured in the same run against the same
//! server (ssr-testkit's HTTP server, image held in memory).
//!
//! `cargo bench -p benches --bench download` (a few minutes: it moves several GiB).
//! Criterion sweeps 16 MiB and 256 MiB images; then a 1 GiB image is fetched three
//! times each by `ssr-download` (4 MiB chunks, 4 in flight, signed manifest, every
//! byte SHA-256-checked once against its chunk digest, written to a file), by
//! `curl -o /dev/null`, by `curl -o file`, and by `curl -o file` followed by
//! `sha256sum`; the best times and the ratios are printed, with the bound that hashing
//! every byte once on two cores puts on any verified download (`openssl speed -evp
//! sha256`, measured in the same run).
//! Then the comparison with a server that is not the bottleneck: nginx
//! (sendfile, started on free loopback ports with its own temporary configuration and
//! a throwaway TLS certificate) serves the 1 GiB image over HTTP and HTTPS; best of
//! five, same run: `ssr-download` (signed manifest, every byte hashed once against its
//! chunk digest; once with SHA-256 chunk digests, format 1, once with BLAKE3, format
//! 2) against `aria2c -x4 -s4 --checksum=sha-256=…` and `curl -o file` (HTTP and
//! HTTPS), with the CPU model. Without nginx, aria2c or curl it prints a
//! skip line.
//! Last, a failover run (the first source cuts every answer half-way from the middle
//! of the image on) prints the bytes fetched more than once, in chunks per failure.

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use ssr_download::http::{Options, download_with};
use ssr_download::wire::versions_json;
use ssr_download::{
    ChunkHash, Manifest, ManifestTrust, ReleaseKey, Settings, SourceConfig, SourceKind,
    sign_manifest,
};
use ssr_testkit::http::{Fault, HttpServer, StaticFiles};

const VERSION: &str = "7.1.3";
/// The same image under a manifest with BLAKE3 chunk digests.
const VERSION_BLAKE3: &str = "7.1.3-blake3";
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
            ..ManifestTrust::default()
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
    // hashed once (its chunk), so even with both cores hashing and nothing else to do
    // (no server, no copies, no writes) a download cannot beat two cores' SHA-256 rate.
    if let Some(sha) = benches::openssl_speed(&["-evp", "sha256"], 16384, 2) {
        let bound = 2.0 * sha / (1u64 << 30) as f64;
        println!(
            "download 1 GiB loopback: bound from 1 SHA-256 pass on 2 cores (openssl sha256 {:.2} GiB/s/core): at most {bound:.2} GiB/s = {:.2}x curl -o /dev/null; ssr-download reaches {:.0}% of it",
            bound / 2.0,
            bound / gib_per_s(len, t_curl),
            100.0 * gib_per_s(len, t_ours) / bound
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stderr.is_empty())
}

/// An nginx on two free loopback ports (HTTP, HTTPS) serving `root`, stopped on drop.
struct Nginx {
    child: std::process::Child,
    http: u16,
    https: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(root: &std::path::Path, cert_pem: &str, key_pem: &str) -> Option<Nginx> {
        let dir = tempfile::tempdir().ok()?;
        let d = dir.path();
        std::fs::write(d.join("cert.pem"), cert_pem).ok()?;
        std::fs::write(d.join("key.pem"), key_pem).ok()?;
        std::fs::create_dir_all(d.join("tmp")).ok()?;
        let (http, https) = (free_port(), free_port());
        let user = if is_root() { "user root;\n" } else { "" };
        let conf = format!(
            "{user}daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n\
               client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  default_type application/octet-stream;\n\
               server {{ listen 127.0.0.1:{http}; root {root}; }}\n\
               server {{ listen 127.0.0.1:{https} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem; root {root}; }}\n}}\n",
            d = d.display(),
            root = root.display()
        );
        std::fs::write(d.join("nginx.conf"), conf).ok()?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut n = Nginx {
            child,
            http,
            https,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", n.https)).is_err() {
            if Instant::now() > deadline || n.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn timed(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// The comparison: nginx serves, ssr-download against aria2c and curl.
fn compare_nginx() {
    if !(have("nginx") && have("aria2c") && have("curl")) {
        println!(
            "download vs nginx: SKIPPED (needs nginx, aria2c and curl: cargo xtask deps installs them)"
        );
        return;
    }
    let len = 1usize << 30;
    let data = image(len);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    let root = scratch();
    let images = root.path().join("images").join(VERSION);
    std::fs::create_dir_all(&images).expect("mkdir");
    let m = Manifest::build(VERSION, FILE, &data, CHUNK).expect("manifest");
    std::fs::write(images.join("manifest.json"), sign_manifest(&m, &release())).expect("write");
    std::fs::write(images.join(FILE), &data).expect("write");
    // The same image published a second time with BLAKE3 chunk digests (format 2).
    let blake3_images = root.path().join("images").join(VERSION_BLAKE3);
    std::fs::create_dir_all(&blake3_images).expect("mkdir");
    let m3 = Manifest::build_with(VERSION_BLAKE3, FILE, &data, CHUNK, ChunkHash::Blake3)
        .expect("manifest");
    std::fs::write(
        blake3_images.join("manifest.json"),
        sign_manifest(&m3, &release()),
    )
    .expect("write");
    std::fs::hard_link(images.join(FILE), blake3_images.join(FILE)).expect("link");
    std::fs::write(
        root.path().join("versions"),
        versions_json(&[VERSION, VERSION_BLAKE3]),
    )
    .expect("write");
    drop(data);
    let id = ssr_testkit::http::TlsIdentity::generate(&["localhost"]).expect("tls identity");
    let Some(nginx) = Nginx::start(root.path(), id.cert_pem(), id.key_pem()) else {
        println!("download vs nginx: SKIPPED (nginx did not start)");
        return;
    };
    let out = scratch();
    let out_file = out.path().join("out.img");
    let http = format!("http://127.0.0.1:{}", nginx.http);
    let https = format!("https://localhost:{}", nginx.https);
    let ca = out.path().join("ca.pem");
    std::fs::write(&ca, id.ca_pem()).expect("write");
    let ours_from = |base: &str, version: &str| {
        let sources = [SourceConfig {
            kind: SourceKind::Repository,
            url: base.to_string(),
        }];
        let opts = Options {
            ca_bundle_pem: Some(id.ca_pem().as_bytes().to_vec()),
            ..options()
        };
        let dest = out.path().join("ours");
        let _ = std::fs::remove_dir_all(&dest);
        let t = Instant::now();
        download_with(&sources, settings(), &opts, version, &dest, &mut |_| {}).expect("download");
        let d = t.elapsed();
        let _ = std::fs::remove_dir_all(&dest);
        d
    };
    let curl_to_file = |url: String| {
        let _ = std::fs::remove_file(&out_file);
        let mut c = Command::new("curl");
        c.args(["-sS", "--cacert"])
            .arg(&ca)
            .arg("-o")
            .arg(&out_file)
            .arg(url);
        let d = timed(c);
        let _ = std::fs::remove_file(&out_file);
        d
    };
    let aria = |url: String| {
        let _ = std::fs::remove_file(&out_file);
        let mut c = Command::new("aria2c");
        c.args(["-q", "-x4", "-s4", "--allow-overwrite=true"])
            .arg(format!("--checksum=sha-256={sha}"))
            .arg("-d")
            .arg(out.path())
            .args(["-o", "out.img"])
            .arg(url);
        let d = timed(c);
        let _ = std::fs::remove_file(&out_file);
        d
    };
    let img = |base: &str| format!("{base}/images/{VERSION}/{FILE}");
    // Warm up: page cache, TLS.
    ours_from(&http, VERSION);
    curl_to_file(img(&http));
    const N: usize = 5;
    // [SHA-256 chunks over HTTP, over HTTPS, BLAKE3 chunks over HTTP, over HTTPS].
    let mut o: [Vec<Duration>; 4] = Default::default();
    let (mut c_http, mut c_https, mut a_http) = (Vec::new(), Vec::new(), Vec::new());
    // Alternated rounds, so a busy moment of the machine hits all of them alike.
    for _ in 0..N {
        o[0].push(ours_from(&http, VERSION));
        c_http.push(curl_to_file(img(&http)));
        o[2].push(ours_from(&http, VERSION_BLAKE3));
        a_http.push(aria(img(&http)));
        o[1].push(ours_from(&https, VERSION));
        c_https.push(curl_to_file(img(&https)));
        o[3].push(ours_from(&https, VERSION_BLAKE3));
    }
    let b = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let (c_http, c_https, a_http) = (b(&c_http), b(&c_https), b(&a_http));
    let r = |other: Duration, ours: Duration| other.as_secs_f64() / ours.as_secs_f64();
    println!(
        "download vs nginx (1 GiB, loopback, best of {N}, {}):",
        cpu_model()
    );
    println!(
        "  aria2c -x4 -s4 --checksum=sha-256 {:.3} s; curl -o file {:.3} s over HTTP, {:.3} s over HTTPS",
        a_http.as_secs_f64(),
        c_http.as_secs_f64(),
        c_https.as_secs_f64()
    );
    for (name, http, https) in [
        ("SHA-256 chunks (format 1)", b(&o[0]), b(&o[1])),
        ("BLAKE3 chunks (format 2)", b(&o[2]), b(&o[3])),
    ] {
        println!(
            "  ssr-download, {name}: HTTP {:.3} s ({:.2} GiB/s), HTTPS {:.3} s ({:.2} GiB/s); \
             {:.2}x aria2c (target >= 2.5), {:.2}x curl over HTTP (target >= 0.8), {:.2}x curl over HTTPS (target >= 0.7)",
            http.as_secs_f64(),
            gib_per_s(len, http),
            https.as_secs_f64(),
            gib_per_s(len, https),
            r(a_http, http),
            r(c_http, http),
            r(c_https, https)
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
    let image_bytes = |s: &HttpServer| s.body_bytes_for(FILE);
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
    compare_nginx();
    failover_refetch();
}
