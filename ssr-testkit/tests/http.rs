//! The HTTP fixture checked with an independent client: the `curl` CLI.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssr_testkit::http::{Fault, HttpServer, Response, StaticFiles, TlsIdentity};

fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn payload() -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 251) as u8).collect()
}

fn files() -> Arc<StaticFiles> {
    let files = StaticFiles::new();
    files.insert("/f", payload());
    files
}

#[test]
fn serves_files_and_ranges() {
    let server = HttpServer::start(files()).unwrap();
    let url = format!("{}/f", server.url());
    let (code, body, _) = curl(&[&url]);
    assert_eq!(code, 0);
    assert_eq!(body, payload());
    let (_, body, _) = curl(&["-r", "10-19", &url]);
    assert_eq!(body, &payload()[10..20]);
    let (_, head, _) = curl(&["-D", "-", "-o", "/dev/null", "-r", "99990-", &url]);
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(
        head.contains("Content-Range: bytes 99990-99999/100000"),
        "{head}"
    );
    let (_, head, _) = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{}/missing", server.url()),
    ]);
    assert!(String::from_utf8(head).unwrap().starts_with("HTTP/1.1 404"));
    let stats = server.stats();
    assert_eq!(stats.requests, 4);
    assert_eq!(
        stats.body_bytes,
        100_000 + 10 + 10 + "not found".len() as u64
    );
}

#[test]
fn keeps_connections_alive() {
    let server = HttpServer::start(files()).unwrap();
    let url = format!("{}/f", server.url());
    let (code, body, err) = curl(&["-v", "-H", "Range: bytes=1-2", &url, &url]);
    assert_eq!(code, 0);
    assert_eq!(body, [&payload()[1..3], &payload()[1..3]].concat());
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );
}

#[test]
fn injects_faults() {
    let server = HttpServer::start(files()).unwrap();
    let url = format!("{}/f", server.url());
    server.set_faults(|_, n| match n {
        0 => Some(Fault::Status(503)),
        1 => Some(Fault::Truncate(1000)),
        2 => Some(Fault::Close),
        3 => Some(Fault::WrongContentRange),
        4 => Some(Fault::IgnoreRange),
        5 => Some(Fault::Corrupt),
        6 => Some(Fault::Stall(Duration::from_millis(300))),
        _ => None,
    });
    let (_, head, _) = curl(&["-D", "-", "-o", "/dev/null", &url]);
    assert!(String::from_utf8(head).unwrap().starts_with("HTTP/1.1 503"));
    let (code, body, _) = curl(&[&url]);
    assert_ne!(code, 0, "a truncated body must fail the transfer");
    assert_eq!(body.len(), 1000);
    let (code, body, _) = curl(&[&url]);
    assert_ne!(code, 0);
    assert!(body.is_empty());
    let (_, head, _) = curl(&["-D", "-", "-o", "/dev/null", "-r", "0-9", &url]);
    assert!(
        String::from_utf8(head)
            .unwrap()
            .contains("Content-Range: bytes 10-19/100000")
    );
    let (_, body, _) = curl(&["-r", "0-9", &url]);
    assert_eq!(body.len(), 100_000, "Range ignored: the whole file");
    let (_, body, _) = curl(&[&url]);
    assert_eq!(body.len(), 100_000);
    assert_ne!(body, payload());
    assert_eq!(
        body.iter()
            .zip(payload())
            .filter(|(a, b)| **a != *b)
            .count(),
        1
    );
    let start = Instant::now();
    let (_, body, _) = curl(&[&url]);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(body, payload());
    server.clear_faults();
    let served = server.served();
    assert_eq!(served.len(), 7);
    assert_eq!(served[1].body_bytes, 1000);
    assert_eq!(served[2].status, 0);
    assert_eq!(
        served[6].fault,
        Some(Fault::Stall(Duration::from_millis(300)))
    );
}

#[test]
fn custom_handler_sees_method_and_body() {
    let server = HttpServer::start(|req: &ssr_testkit::http::Request| {
        Response::new(
            200,
            format!(
                "{} {} {}",
                req.method,
                req.path,
                String::from_utf8_lossy(&req.body)
            )
            .as_str(),
        )
    })
    .unwrap();
    let (_, body, _) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        "hello",
        &format!("{}/x", server.url()),
    ]);
    assert_eq!(body, b"POST /x hello");
}

#[test]
fn https_with_generated_ca() {
    let identity = TlsIdentity::generate(&["localhost", "127.0.0.1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, identity.ca_pem()).unwrap();
    let server = HttpServer::start_tls(files(), &identity).unwrap();
    let url = format!("{}/f", server.url());
    assert!(url.starts_with("https://localhost:"));
    let (code, body, err) = curl(&["--cacert", ca.to_str().unwrap(), &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, payload());
    // Without the CA the certificate is not trusted.
    let (code, _, _) = curl(&[&url]);
    assert_ne!(code, 0);
}

#[test]
fn stops_on_drop() {
    let server = HttpServer::start(files()).unwrap();
    let addr = server.addr();
    drop(server);
    assert!(std::net::TcpStream::connect(addr).is_err());
}
