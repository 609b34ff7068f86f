//! `ssr download` as a process against loopback HTTP servers: success, a bad
//! configuration, an unknown version, and a process killed mid-download that resumes
//! without fetching completed chunks again.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ssr_download::Manifest;
use ssr_download::wire::versions_json;
use ssr_testkit::http::{Fault, HttpServer, Request, StaticFiles};

const VERSION: &str = "7.1.3";
const FILE: &str = "ssr.img";
const CHUNK: u64 = 64 << 10;

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
}

fn server(data: &[u8]) -> HttpServer {
    let files = StaticFiles::new();
    let m = Manifest::build(VERSION, FILE, data, CHUNK).unwrap();
    files.insert("/repo/versions", versions_json(&[VERSION]));
    files.insert(
        &format!("/repo/images/{VERSION}/manifest.json"),
        m.to_json(),
    );
    files.insert(&format!("/repo/images/{VERSION}/{FILE}"), data.to_vec());
    HttpServer::start(files).unwrap()
}

fn config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("download.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn sources(pairs: &[(&str, &HttpServer)]) -> String {
    pairs
        .iter()
        .map(|(k, s)| format!("[[source]]\nkind = \"{k}\"\nurl = \"{}/repo\"\n", s.url()))
        .collect()
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
    let bad = server(&data);
    bad.set_faults(|r, _| is_image(r).then_some(Fault::Status(503)));
    let good = server(&data);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "access-mode = \"prefer-conductor\"\n[health]\nmin-rate = 0\n{}",
            sources(&[("conductor-1", &bad), ("repository", &good)])
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
    let s = server(&data);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "access-mode = \"internet-only\"\n[retry]\nattempts = 1\n{}",
            sources(&[("repository", &s)])
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
    let s = server(&data);
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
            sources(&[("conductor-1", &s)])
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
    let first: u64 = s
        .served()
        .iter()
        .filter(|x| x.path.ends_with(FILE))
        .map(|x| x.body_bytes)
        .sum();
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
