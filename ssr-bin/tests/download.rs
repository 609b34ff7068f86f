//! `ssr download` as a process against loopback HTTP(S) servers: success, a bad
//! configuration, an unknown version, a process killed mid-download that resumes
//! without fetching completed chunks again, manifests signed by `ssr download
//! sign-manifest` with a key made by `openssl` (and the signature checked by
//! `openssl dgst`), tampered / unsigned manifests refused, an untrusted HTTPS source,
//! progress fsynced every 2 s (strace) and the progress bar on a terminal (script).

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ssr_download::Manifest;
use ssr_download::wire::versions_json;
use ssr_testkit::http::{Fault, HttpServer, Request, StaticFiles, TlsIdentity};

const VERSION: &str = "7.1.3";
const FILE: &str = "ssr.img";
const CHUNK: u64 = 64 << 10;

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
}

/// A release key pair made by openssl in its own directory.
struct Release {
    dir: tempfile::TempDir,
}

impl Release {
    fn new() -> Release {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("release.key.pem");
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key_s = key.to_str().unwrap();
        run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key_s,
        ]);
        let pubkey = dir.path().join("release.pub.pem");
        run(&[
            "pkey",
            "-in",
            key_s,
            "-pubout",
            "-out",
            pubkey.to_str().unwrap(),
        ]);
        Release { dir }
    }

    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("release.key.pem")
    }

    fn public(&self) -> std::path::PathBuf {
        self.dir.path().join("release.pub.pem")
    }

    /// The signed manifest of `data`, made by `ssr download sign-manifest`.
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.sign_with(data, &[])
    }

    /// [`Release::sign`] with more `sign-manifest` arguments.
    fn sign_with(&self, data: &[u8], extra: &[&str]) -> Vec<u8> {
        let image = self.dir.path().join(FILE);
        std::fs::write(&image, data).unwrap();
        let chunk = CHUNK.to_string();
        let args = [&["--chunk-size", chunk.as_str()], extra].concat();
        self.sign_file(Command::new(env!("CARGO_BIN_EXE_ssr")), &image, &args)
    }

    /// `sign-manifest` of the file `image` with `extra` arguments, run by `cmd` (the
    /// `ssr` binary, or a wrapper that executes it); the signed manifest.
    fn sign_file(&self, mut cmd: Command, image: &Path, extra: &[&str]) -> Vec<u8> {
        let out_path = self.dir.path().join("manifest.json");
        let out = cmd
            .args(["download", "sign-manifest", "--key"])
            .arg(self.key())
            .arg("--image")
            .arg(image)
            .args(["--version", VERSION])
            .args(extra)
            .arg("--out")
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(out_path).unwrap()
    }

    /// The `[manifest]` section trusting this key.
    fn section(&self) -> String {
        format!(
            "[manifest]\nrelease-keys = [\"{}\"]\n",
            self.public().display()
        )
    }
}

/// The manifest a signed document carries, and its canonical (signed) text.
fn unsigned(signed: &[u8]) -> (Manifest, String) {
    let text = std::str::from_utf8(signed).unwrap();
    let (canonical, _) = text.split_once(",\"signature\":").unwrap();
    let canonical = format!("{canonical}}}");
    (Manifest::parse(canonical.as_bytes()).unwrap(), canonical)
}

fn publish(files: &StaticFiles, data: &[u8], manifest: Vec<u8>) {
    files.insert("/repo/versions", versions_json(&[VERSION]));
    files.insert(&format!("/repo/images/{VERSION}/manifest.json"), manifest);
    files.insert(&format!("/repo/images/{VERSION}/{FILE}"), data.to_vec());
}

fn server(data: &[u8], release: &Release) -> HttpServer {
    let files = StaticFiles::new();
    publish(&files, data, release.sign(data));
    HttpServer::start(files).unwrap()
}

fn config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("download.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// The trust section and the sources.
fn sources(release: &Release, pairs: &[(&str, &HttpServer)]) -> String {
    let list: String = pairs
        .iter()
        .map(|(k, s)| format!("[[source]]\nkind = \"{k}\"\nurl = \"{}/repo\"\n", s.url()))
        .collect();
    format!("{}{list}", release.section())
}

fn ssr(config: &Path, dest: &Path, version: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssr"));
    cmd.args(["download", "--config"])
        .arg(config)
        .args(["--version", version, "--dest"])
        .arg(dest);
    cmd
}

fn is_image(r: &Request) -> bool {
    r.path.ends_with(FILE)
}

fn chunk_of(range: Option<&str>) -> Option<u64> {
    let spec = range?.strip_prefix("bytes=")?;
    Some(spec.split('-').next()?.parse::<u64>().ok()? / CHUNK)
}

#[test]
fn downloads_with_failover_and_prints_the_verified_file() {
    let data = image(3 << 20);
    let release = Release::new();
    let bad = server(&data, &release);
    bad.set_faults(|r, _| is_image(r).then_some(Fault::Status(503)));
    let good = server(&data, &release);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "access-mode = \"prefer-conductor\"\n[health]\nmin-rate = 0\n{}",
            sources(&release, &[("conductor-1", &bad), ("repository", &good)])
        ),
    );
    let dest = dir.path().join("images");
    let out = ssr(&cfg, &dest, VERSION).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let path = dest.join(FILE);
    // sha256sum is the independent oracle.
    let sum = Command::new("sha256sum").arg(&path).output().unwrap();
    let sum = String::from_utf8(sum.stdout).unwrap();
    let hex = sum.split_whitespace().next().unwrap();
    assert_eq!(stdout.trim(), format!("{} sha256:{hex}", path.display()));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert!(
        stderr.contains("marked unavailable (6 failed requests in the window)"),
        "{stderr}"
    );
}

#[test]
fn configuration_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, expected) in [
        (
            "[retry]\ntimeout = 100\n",
            "timeout = 100 is outside 1800-604800",
        ),
        (
            "[retry]\nmaximum-retry-delay = 90000\n",
            "maximum-retry-delay = 90000 is outside 0-86400",
        ),
        ("[retry]\ntries = 3\n", "unknown field `tries`"),
    ] {
        let cfg = config(
            dir.path(),
            &format!(
                "access-mode = \"offline-mode\"\n{extra}[[source]]\nkind = \"conductor-1\"\nurl = \"http://127.0.0.1:1\"\n"
            ),
        );
        let out = ssr(&cfg, dir.path(), VERSION).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn unknown_version_fails_with_the_reason() {
    let data = image(100_000);
    let release = Release::new();
    let s = server(&data, &release);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "access-mode = \"internet-only\"\n[retry]\nattempts = 1\n{}",
            sources(&release, &[("repository", &s)])
        ),
    );
    let out = ssr(&cfg, dir.path(), "9.9.9").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("download failed after 1 attempts: no source has version 9.9.9"),
        "{stderr}"
    );
}

#[test]
fn killed_process_resumes_without_fetching_completed_chunks() {
    let data = image(4 << 20);
    let chunks = data.len() as u64 / CHUNK;
    let stop_at = 23;
    let release = Release::new();
    let s = server(&data, &release);
    // Chunk 23 hangs: the process is killed while waiting for it.
    s.set_faults(move |r, _| {
        (is_image(r) && chunk_of(r.header("range")) == Some(stop_at))
            .then_some(Fault::Stall(Duration::from_secs(30)))
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "access-mode = \"conductor-only\"\n[transfer]\nparallel = 1\n[health]\nmin-rate = 0\n{}",
            sources(&release, &[("conductor-1", &s)])
        ),
    );
    let dest = dir.path().join("out");
    let mut child = ssr(&cfg, &dest, VERSION)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s
        .served()
        .iter()
        .any(|x| chunk_of(x.range.as_deref()) == Some(stop_at))
    {
        assert!(Instant::now() < deadline, "never reached chunk {stop_at}");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("ssr exited early: {status}");
        }
        thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = s.body_bytes_for(FILE);
    assert_eq!(first, stop_at * CHUNK);
    assert!(!dest.join(FILE).exists());

    s.clear_faults();
    let before = s.served().len();
    let out = ssr(&cfg, &dest, VERSION).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dest.join(FILE)).unwrap(), data);
    let second: Vec<_> = s.served()[before..]
        .iter()
        .filter(|x| x.path.ends_with(FILE))
        .cloned()
        .collect();
    let fetched: Vec<u64> = second
        .iter()
        .filter_map(|x| chunk_of(x.range.as_deref()))
        .collect();
    assert_eq!(fetched, (stop_at..chunks).collect::<Vec<_>>());
    assert_eq!(
        second.iter().map(|x| x.body_bytes).sum::<u64>(),
        data.len() as u64 - stop_at * CHUNK
    );
}

/// The DER encoding of an ECDSA signature given as `r || s` (for `openssl dgst`).
fn der_signature(raw: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let mut v: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let body = [int(&raw[..32]), int(&raw[32..])].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[test]
fn signed_manifests_from_the_cli_verify_and_tampered_or_unsigned_are_refused() {
    let data = image(1 << 20);
    let release = Release::new();
    let signed = release.sign(&data);
    // openssl, as an independent oracle, verifies the signature over the canonical
    // manifest (the document without its signature member).
    let text = String::from_utf8(signed.clone()).unwrap();
    let (m, canonical) = unsigned(&signed);
    assert_eq!(m.to_json(), canonical.as_bytes());
    let sig_hex = text
        .split("\"sig\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let raw = hex::decode(sig_hex).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.json"), &canonical).unwrap();
    std::fs::write(dir.path().join("sig.der"), der_signature(&raw)).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(release.public())
        .arg("-signature")
        .arg(dir.path().join("sig.der"))
        .arg(dir.path().join("c.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let tampered = text.replacen(&format!("\"size\":{}", data.len()), "\"size\":1048575", 1);
    assert_ne!(tampered, text);
    let other = Release::new();
    for (name, manifest, expected) in [
        ("signed", signed.clone(), None),
        ("tampered", tampered.into_bytes(), Some("does not verify")),
        ("unsigned", m.to_json(), Some("not signed")),
        ("other key", other.sign(&data), Some("does not trust")),
    ] {
        let files = StaticFiles::new();
        publish(&files, &data, manifest);
        let s = HttpServer::start(files).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            &format!(
                "access-mode = \"internet-only\"\n[retry]\nattempts = 1\n{}",
                sources(&release, &[("repository", &s)])
            ),
        );
        let dest = dir.path().join("out");
        let out = ssr(&cfg, &dest, VERSION).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match expected {
            None => {
                assert!(out.status.success(), "{name}: {stderr}");
                assert_eq!(std::fs::read(dest.join(FILE)).unwrap(), data);
            }
            Some(why) => {
                assert_eq!(out.status.code(), Some(4), "{name}: {stderr}");
                assert!(stderr.contains(why), "{name}: {stderr}");
                assert!(!dest.join(FILE).exists());
                let image_bytes = s.body_bytes_for(FILE);
                assert_eq!(image_bytes, 0, "{name}");
            }
        }
    }
    // No release key and no allow-unsigned: a configuration error, before any request.
    let cfg = config(
        dir.path(),
        "access-mode = \"internet-only\"\n[[source]]\nkind = \"repository\"\nurl = \"http://127.0.0.1:1\"\n",
    );
    let out = ssr(&cfg, dir.path(), VERSION).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest.release-keys"));
}

/// `sign-manifest --chunk-hash blake3`: each chunk digest is what `b3sum` (an
/// independent build of BLAKE3) prints for that chunk, the whole-file digest what
/// `sha256sum` prints; `ssr download` verifies such an image, and a router configured
/// with `sha256-chunks-only` refuses it before asking for any image byte.
#[test]
fn blake3_manifests_match_b3sum_and_sha256_only_routers_refuse_them() {
    let data = image((1 << 20) + 4321);
    let release = Release::new();
    let signed = release.sign_with(&data, &["--chunk-hash", "blake3"]);
    let (m, _) = unsigned(&signed);
    assert_eq!(m.chunk_hash(), ssr_download::ChunkHash::Blake3);
    let dir = tempfile::tempdir().unwrap();
    let oracle = |tool: &str, bytes: &[u8]| {
        let path = dir.path().join("piece");
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new(tool).arg(&path).output().unwrap();
        assert!(out.status.success(), "{tool}");
        let line = String::from_utf8(out.stdout).unwrap();
        hex::decode(line.split_whitespace().next().unwrap()).unwrap()
    };
    for index in 0..m.chunk_count() {
        let r = m.chunk_range(index);
        let piece = &data[r.start as usize..r.end as usize];
        assert_eq!(
            oracle("b3sum", piece),
            m.chunk_digest(index).unwrap(),
            "chunk {index}"
        );
    }
    assert_eq!(oracle("sha256sum", &data), m.sha256());

    let download = |fips: bool| {
        let files = StaticFiles::new();
        publish(&files, &data, signed.clone());
        let s = HttpServer::start(files).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let only = if fips {
            "sha256-chunks-only = true\n"
        } else {
            ""
        };
        let cfg = config(
            dir.path(),
            &format!(
                "access-mode = \"internet-only\"\n[retry]\nattempts = 1\n{}{only}[[source]]\nkind = \"repository\"\nurl = \"{}/repo\"\n",
                release.section(),
                s.url()
            ),
        );
        let dest = dir.path().join("out");
        let out = ssr(&cfg, &dest, VERSION).output().unwrap();
        let image_bytes = s.body_bytes_for(FILE);
        (out, std::fs::read(dest.join(FILE)).ok(), image_bytes)
    };
    let (out, got, served) = download(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(got.as_deref(), Some(&data[..]));
    assert_eq!(served, data.len() as u64);
    let (out, got, served) = download(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("sha256-chunks-only"), "{stderr}");
    assert_eq!((got, served), (None, 0));

    // An unknown hash name is a usage error naming the choices.
    let out = Command::new(env!("CARGO_BIN_EXE_ssr"))
        .args(["download", "sign-manifest", "--key"])
        .arg(release.key())
        .args([
            "--image",
            "/dev/null",
            "--version",
            VERSION,
            "--chunk-hash",
            "md5",
            "--out",
        ])
        .arg(dir.path().join("m.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blake3"));
}

/// `sign-manifest` streams the image: a 768 MiB image is signed in a process whose
/// address space is limited to 512 MiB (where reading the image whole cannot work, as
/// the control shows), and the manifest describes the file's bytes.
#[test]
fn sign_manifest_streams_an_image_larger_than_its_memory() {
    const LEN: u64 = 768 << 20;
    let limited = |program: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg("ulimit -v 524288; exec \"$@\"")
            .arg("bash")
            .arg(program);
        cmd
    };
    let control = limited("python3")
        .args(["-c", &format!("bytearray({LEN})")])
        .output()
        .unwrap();
    assert!(!control.status.success(), "control: the limit must bite");

    let release = Release::new();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join(FILE);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&image)
        .unwrap();
    f.set_len(LEN).unwrap();
    // A marker in chunk 100, so not every chunk is the same.
    std::os::unix::fs::FileExt::write_all_at(&f, b"ssr release 7.1.3", 100 * (4 << 20) + 5)
        .unwrap();
    let signed = release.sign_file(
        limited(env!("CARGO_BIN_EXE_ssr")),
        &image,
        &["--chunk-hash", "blake3"],
    );
    let (m, _) = unsigned(&signed);
    assert_eq!((m.size(), m.chunk_count()), (LEN, 192));
    let mut chunk = vec![0u8; 4 << 20];
    for index in [0, 100, 191] {
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut chunk, index as u64 * (4 << 20))
            .unwrap();
        assert_eq!(
            m.chunk_digest(index),
            Some(&ssr_download::ChunkHash::Blake3.digest(&chunk)),
            "chunk {index}"
        );
    }
    assert_ne!(m.chunk_digest(0), m.chunk_digest(100));
}

#[test]
fn https_sources_use_the_configured_ca_and_refuse_others() {
    let data = image(1 << 20);
    let release = Release::new();
    let files = StaticFiles::new();
    publish(&files, &data, release.sign(&data));
    let trusted_id = TlsIdentity::generate(&["localhost"]).unwrap();
    let trusted = HttpServer::start_tls(files.clone(), &trusted_id).unwrap();
    let untrusted =
        HttpServer::start_tls(files, &TlsIdentity::generate(&["localhost"]).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, trusted_id.ca_pem()).unwrap();
    for (server, ok) in [(&trusted, true), (&untrusted, false)] {
        let cfg = config(
            dir.path(),
            &format!(
                "access-mode = \"internet-only\"\n[retry]\nattempts = 1\n[tls]\nca-bundle = \"{}\"\n{}",
                ca.display(),
                sources(&release, &[("repository", server)])
            ),
        );
        let dest = dir.path().join(if ok { "ok" } else { "refused" });
        let out = ssr(&cfg, &dest, VERSION).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if ok {
            assert!(out.status.success(), "{stderr}");
            assert_eq!(std::fs::read(dest.join(FILE)).unwrap(), data);
        } else {
            assert_eq!(out.status.code(), Some(4), "{stderr}");
            assert!(
                stderr.contains("repository: TLS with https://localhost")
                    && stderr.contains("invalid peer certificate"),
                "{stderr}"
            );
            assert_eq!(untrusted.stats().requests, 0);
        }
    }
}

/// The overall deadline and the attempt count are kept in the state directory: a
/// process killed during its retry wait leaves `clock` (start time, failed
/// attempts); the next process continues both. Made to look 1795 s old (of the
/// 1800 s timeout), the restarted download times out within seconds (exit 3) and
/// numbers its attempt 2.
#[test]
fn a_restarted_process_keeps_the_deadline_and_the_attempt_count() {
    let data = image(100_000);
    let release = Release::new();
    let s = server(&data, &release);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "access-mode = \"internet-only\"\n[retry]\ntimeout = 1800\nattempts = 0\nmaximum-retry-delay = 3600\n{}",
            sources(&release, &[("repository", &s)])
        ),
    );
    let dest = dir.path().join("out");
    let clock = dest.join(".ssr-download-9.9.9").join("clock");
    let mut child = ssr(&cfg, &dest, "9.9.9")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Attempt 1 fails at once (nobody has 9.9.9); the process then waits ~30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&clock).unwrap_or_default();
        if text.ends_with(" 1\n") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no clock with one failed attempt: {text:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields[..2], ["ssr-download-clock", "1"]);
    let started: u64 = fields[2].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(started <= now && now - started < 60);
    // Pretend the first process started 1795 s ago.
    std::fs::write(&clock, format!("ssr-download-clock 1 {} 1\n", now - 1795)).unwrap();
    let t = Instant::now();
    let out = ssr(&cfg, &dest, "9.9.9").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("timed out after 1800s"), "{stderr}");
    assert!(stderr.contains("attempt 2 failed"), "{stderr}");
    assert!(!stderr.contains("attempt 1 failed"), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(20));
    // A download that ended leaves no clock: the next run gets a new deadline.
    assert!(!clock.exists());
}

/// A download of twelve chunks from a source that takes 250 ms per chunk, one request
/// at a time, with `cmd` wrapped as the caller needs (strace, a terminal).
fn slow_download(dir: &Path, wrap: impl FnOnce(Command) -> Command) -> std::process::Output {
    let data = image(12 * CHUNK as usize);
    let release = Release::new();
    let s = server(&data, &release);
    s.set_faults(|r, _| is_image(r).then_some(Fault::Stall(Duration::from_millis(250))));
    let cfg = config(
        dir,
        &format!(
            "access-mode = \"conductor-only\"\n[transfer]\nparallel = 1\n[health]\nmin-rate = 0\n{}",
            sources(&release, &[("conductor-1", &s)])
        ),
    );
    let dest = dir.join("out");
    let out = wrap(ssr(&cfg, &dest, VERSION)).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dest.join(FILE)).unwrap(), data);
    out
}

/// The partial file and its journal are fdatasync'ed while the download runs (every
/// 2 s here: 768 KiB is far below the 64 MiB trigger), not after every chunk: counted
/// by strace on the real process.
#[test]
fn a_long_download_syncs_its_progress_every_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let started = Instant::now();
    slow_download(dir.path(), |cmd| {
        let mut s = Command::new("strace");
        s.args(["-f", "-e", "trace=fdatasync", "-o"])
            .arg(&log)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        s
    });
    let took = started.elapsed();
    let syncs = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("fdatasync("))
        .count();
    // One image + one journal sync per 2 s that passed (12 x 250 ms = 3 s or more).
    let intervals = (took.as_secs_f64() / 2.0).floor() as usize;
    assert!(
        (2..=2 * intervals.max(1)).contains(&syncs),
        "{syncs} fdatasync calls in {took:?}:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

/// On a terminal the progress is an indicatif bar: bytes, rate, ETA and the source.
#[test]
fn a_terminal_shows_a_progress_bar_with_rate_eta_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = slow_download(dir.path(), |cmd| {
        // script(1) gives the process a pseudo-terminal as stdin, stdout and stderr.
        let line = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| format!("'{}'", a.to_str().unwrap()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut s = Command::new("script");
        s.args(["-qfec", &line, "/dev/null"]).env("TERM", "xterm");
        s
    });
    let shown = String::from_utf8_lossy(&out.stdout);
    for want in ["[#", "KiB/", "MiB/s", "ETA ", "via conductor-1", "sha256:"] {
        assert!(shown.contains(want), "{want:?} not in {shown:?}");
    }
    // Without a terminal (the other tests) there is no bar.
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir(&plain_dir).unwrap();
    let plain = slow_download(&plain_dir, |c| c);
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("[#"));
}
