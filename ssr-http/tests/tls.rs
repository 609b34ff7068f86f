//! The client against ssr-testkit's HTTP(S) servers on loopback, with throwaway CAs.

use std::io::Read;
use std::time::Duration;

use ssr_http::{Client, ClientConfig, Error, Pin};
use ssr_testkit::http::{Fault, HttpServer, StaticFiles, TlsIdentity};

const T: Option<Duration> = Some(Duration::from_secs(10));

fn files() -> std::sync::Arc<StaticFiles> {
    let files = StaticFiles::new();
    files.insert("/x", b"hello over tls".to_vec());
    files.insert(
        "/big",
        (0..=255u8).cycle().take(1 << 20).collect::<Vec<u8>>(),
    );
    files
}

fn tls_server() -> (HttpServer, TlsIdentity) {
    let id = TlsIdentity::generate(&["localhost", "127.0.0.1"]).unwrap();
    (HttpServer::start_tls(files(), &id).unwrap(), id)
}

fn client(ca: &str, pins: Vec<Pin>) -> Result<Client, Error> {
    Client::new(&ClientConfig {
        ca_bundle_pem: Some(ca.as_bytes().to_vec()),
        pins,
        read_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    })
}

fn cert_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn https_through_the_configured_ca() {
    let (server, id) = tls_server();
    let c = client(id.ca_pem(), vec![]).unwrap();
    let r = c.get(&format!("{}/x", server.url()), None, T).unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.read_limited(1 << 10).unwrap(), b"hello over tls");
    // A Range request is answered 206 with the asked bytes.
    let mut r = c
        .get(&format!("{}/big", server.url()), Some(256..=511), T)
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.content_range(), Some("bytes 256-511/1048576"));
    let mut body = Vec::new();
    r.read_to_end(&mut body).unwrap();
    assert_eq!(body, (0..=255u8).collect::<Vec<_>>());
}

#[test]
fn an_unknown_ca_is_refused_with_a_tls_error() {
    let (server, _) = tls_server();
    let other = TlsIdentity::generate(&["localhost"]).unwrap();
    let c = client(other.ca_pem(), vec![]).unwrap();
    let e = c.get(&format!("{}/x", server.url()), None, T).unwrap_err();
    let Error::Tls { reason, .. } = &e else {
        panic!("{e:?}")
    };
    // (Both throwaway CAs have the same name: rustls says BadSignature, not UnknownIssuer.)
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    assert_eq!(server.stats().requests, 0, "no request may go out");
    // No CA bundle at all: https is refused before connecting.
    let plain = Client::new(&ClientConfig::default()).unwrap();
    let e = plain
        .get(&format!("{}/x", server.url()), None, T)
        .unwrap_err();
    assert!(e.to_string().contains("CA bundle"), "{e}");
}

#[test]
fn pins_are_checked_after_the_chain() {
    let (server, id) = tls_server();
    let der = cert_der(id.cert_pem());
    let url = format!("{}/x", server.url());
    for pin in [
        Pin::of_cert(&der, true).unwrap(),
        Pin::of_cert(&der, false).unwrap(),
    ] {
        let c = client(id.ca_pem(), vec![pin]).unwrap();
        assert_eq!(c.get(&url, None, T).unwrap().status(), 200, "{pin}");
    }
    // The SPKI pin is the one openssl computes.
    let ca_der = cert_der(id.ca_pem());
    for wrong in [
        Pin::Spki([7; 32]),
        Pin::of_cert(&ca_der, true).unwrap(),
        Pin::Cert([1; 32]),
    ] {
        let c = client(id.ca_pem(), vec![wrong]).unwrap();
        let e = c.get(&url, None, T).unwrap_err();
        assert!(
            matches!(&e, Error::Tls { reason, .. } if reason.contains("pins")),
            "{e:?}"
        );
    }
    // A pin without a CA bundle is a configuration error.
    let e = Client::new(&ClientConfig {
        pins: vec![Pin::Spki([0; 32])],
        ..ClientConfig::default()
    })
    .unwrap_err();
    assert!(matches!(e, Error::Config { what: "pins", .. }));
}

#[test]
fn spki_pin_matches_openssl() {
    let id = TlsIdentity::generate(&["localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("cert.pem");
    std::fs::write(&pem, id.cert_pem()).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
            pem.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = String::from_utf8(out.stdout).unwrap();
    let expected: Pin = format!("sha256-spki:{}", &hex[..64]).parse().unwrap();
    assert_eq!(
        Pin::of_cert(&cert_der(id.cert_pem()), true).unwrap(),
        expected
    );
}

#[test]
fn a_body_that_stops_moving_is_cut_off_by_the_per_read_deadline() {
    let server = HttpServer::start(files()).unwrap();
    server.set_faults(|_, _| {
        Some(Fault::Trickle {
            piece: 64 << 10,
            pause: Duration::from_secs(5),
        })
    });
    let c = Client::new(&ClientConfig {
        read_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    })
    .unwrap();
    let start = std::time::Instant::now();
    let mut r = c.get(&format!("{}/big", server.url()), None, T).unwrap();
    let mut body = Vec::new();
    let e = r.read_to_end(&mut body).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert_eq!(body.len(), 64 << 10);
    assert!(start.elapsed() < Duration::from_secs(4));
    assert!(matches!(
        ssr_http::io_error("u", &e),
        Error::TimedOut { .. }
    ));
}
