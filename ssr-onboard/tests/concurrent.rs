//! The conductor endpoint under load and abuse, over loopback with real TLS: silent
//! and byte-per-second clients do not stall other routers' onboarding; the limits
//! (per-source cap, request and handshake timeouts, size caps) close abusers.
//!
//! Abusers connect from other loopback addresses (127.0.0.2 and up: all of 127/8 is
//! local on Linux) so that the per-source cap is per abuser, as on a real network.

mod common;

use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use ssr_onboard::Psk;
use ssr_onboard::SoftwareSigner;
use ssr_onboard::config::{ConductorConfig, OnboardingConfig};
use ssr_onboard::https::{ConductorServer, ServerLimits, conductor_policy, join};
use ssr_testkit::http::TlsIdentity;

/// A conductor knowing routers `router-0` … `router-{n-1}`, serving forever in a thread
/// (the thread ends with the test process).
struct Fleet {
    dir: tempfile::TempDir,
    ident: TlsIdentity,
    psks: Vec<String>,
    addr: SocketAddr,
    config: std::path::PathBuf,
}

fn fleet(n: usize, limits: ServerLimits) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ident = TlsIdentity::generate(&["127.0.0.1"]).expect("tls identity");
    write(d, "conductor.pem", ident.cert_pem());
    write(d, "conductor-key.pem", ident.key_pem());
    write(d, "token-key.pem", &token_key_pem());
    host_key(d);
    let psks: Vec<String> = (0..n)
        .map(|_| Psk::generate(&mut rng()).secret_str().to_owned())
        .collect();
    let routers: serde_json::Map<String, serde_json::Value> = psks
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("router-{i}"), p.clone().into()))
        .collect();
    let cfg = json!({
        "version": 1,
        "name": "conductor-1",
        "listen": "127.0.0.1:0",
        "certificate": d.join("conductor.pem"),
        "private-key": d.join("conductor-key.pem"),
        "token-key": d.join("token-key.pem"),
        "routers": routers,
        "used-tokens": d.join("used-tokens.jsonl"),
        "audit-log": d.join("conductor-audit.jsonl"),
        "ssh-host-key": d.join("ssh_host_ed25519_key.pub"),
        "authorized-keys": d.join("authorized_keys"),
    });
    let config = write(d, "conductor-config.json", &cfg.to_string());
    let mut server = ConductorServer::from_config(
        ConductorConfig::parse(cfg.to_string().as_bytes()).expect("cfg"),
    )
    .expect("server");
    server.set_limits(limits);
    let addr = server.local_addr().expect("addr");
    thread::spawn(move || server.serve(None, &mut |_| {}));
    Fleet {
        dir,
        ident,
        psks,
        addr,
        config,
    }
}

impl Fleet {
    /// Router `i`'s configuration in a directory of its own.
    fn router(&self, i: usize) -> (tempfile::TempDir, OnboardingConfig) {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(d, "ca.pem", self.ident.ca_pem());
        write(d, "conductor.pem", self.ident.cert_pem());
        std::fs::create_dir(d.join("ssh")).expect("ssh dir");
        let v = json!({
            "version": 1,
            "router-name": format!("router-{i}"),
            "conductor-address": self.addr.to_string(),
            "ca-certificate": d.join("ca.pem"),
            "conductor-certificate": d.join("conductor.pem"),
            "pre-shared-key": self.psks[i],
            "ssh-dir": d.join("ssh"),
        });
        let cfg = OnboardingConfig::parse(v.to_string().as_bytes()).expect("router config");
        (dir, cfg)
    }

    fn token(&self, i: usize) -> ssr_onboard::Token {
        let mut cfg =
            ConductorConfig::parse(&std::fs::read(&self.config).expect("cfg")).expect("parse");
        let policy = conductor_policy(&mut cfg).expect("policy");
        policy
            .issue_token(&format!("router-{i}"), unix_now(), 600, None, &mut rng())
            .expect("issue")
            .0
    }

    /// A TLS client (trusting the conductor's CA) on a TCP connection from `from`.
    fn tls_from(&self, from: Ipv4Addr) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ident.ca_pem().as_bytes()).expect("ca"))
            .expect("root");
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            ServerName::try_from("127.0.0.1").expect("name"),
        )
        .expect("client");
        let tcp = connect_from(from, self.addr);
        // A server that never answers fails the test instead of hanging it.
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).expect("TLS handshake");
        }
        s
    }
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
            sock.connect(to).await?.into_std()
        })
        .expect("connect");
    s.set_nonblocking(false).expect("blocking");
    s
}

/// Whether the server closed `s`: EOF or reset within `wait`.
fn closed_within(s: &mut impl Read, sock: &TcpStream, wait: Duration) -> bool {
    sock.set_read_timeout(Some(wait)).expect("timeout");
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

fn patient() -> ServerLimits {
    // Timeouts longer than the test: only concurrency can keep the routers going.
    ServerLimits {
        tls_handshake_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
        connection_deadline: Duration::from_secs(120),
        ..ServerLimits::default()
    }
}

#[test]
fn twenty_routers_onboard_while_idle_and_byte_per_second_clients_hold_connections() {
    const ROUTERS: usize = 20;
    let f = fleet(ROUTERS, patient());
    // 50 silent TCP connections (no TLS ClientHello), 25 from each of two addresses.
    let idle: Vec<TcpStream> = (0..50)
        .map(|i| connect_from(Ipv4Addr::new(127, 0, 0, 2 + (i % 2) as u8), f.addr))
        .collect();
    // 5 clients that finish TLS, then send their HTTP request one byte per second.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let mut s = f.tls_from(Ipv4Addr::new(127, 0, 0, 4));
            let stop = stop.clone();
            thread::spawn(move || {
                let req = b"POST /sco/v1 HTTP/1.1\r\nHost: c\r\nContent-Length: 2\r\n\r\n{}";
                for b in req.iter().take(30) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || s.write_all(&[*b]).and_then(|()| s.flush()).is_err()
                    {
                        return;
                    }
                    thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();

    let routers: Vec<_> = (0..ROUTERS)
        .map(|i| {
            (
                f.router(i),
                f.token(i),
                SoftwareSigner::generate(&mut rng()),
            )
        })
        .collect();
    let start = Instant::now();
    let results: Vec<_> = routers
        .into_iter()
        .map(|((dir, cfg), token, signer)| {
            thread::spawn(move || {
                let r = join(&cfg, &token, &signer).map(|_| ());
                (r, dir)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("router thread").0)
        .collect();
    let elapsed = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "router-{i}: {r:?}");
    }
    assert!(
        elapsed < Duration::from_secs(10),
        "20 onboardings took {elapsed:?} with abusers connected"
    );
    // The abusers were really held open by the server meanwhile.
    for mut s in idle {
        let sock = s.try_clone().expect("clone");
        assert!(!closed_within(&mut s, &sock, Duration::from_millis(10)));
    }
    let ak = std::fs::read_to_string(f.dir.path().join("authorized_keys")).expect("ak");
    assert_eq!(ak.lines().count(), ROUTERS);
    for h in slow {
        h.join().expect("slow client");
    }
}

#[test]
fn abusers_are_closed_by_the_limits_and_honest_routers_still_onboard() {
    let f = fleet(
        1,
        ServerLimits {
            tls_handshake_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            connection_deadline: Duration::from_secs(30),
            handshakes_per_source: 4,
            max_connections: 512,
        },
    );
    let abuser = Ipv4Addr::new(127, 0, 0, 9);
    // Per-source cap: 4 held, the 5th from the same address closed at once.
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect_from(abuser, f.addr)).collect();
    thread::sleep(Duration::from_millis(200));
    let mut fifth = connect_from(abuser, f.addr);
    let sock = fifth.try_clone().expect("clone");
    assert!(
        closed_within(&mut fifth, &sock, Duration::from_millis(500)),
        "the connection over the per-source cap was not closed"
    );
    let first = held.remove(0);
    let sock = first.try_clone().expect("clone");
    let mut first = first;
    assert!(
        !closed_within(&mut first, &sock, Duration::from_millis(100)),
        "a connection under the cap was closed at once"
    );
    // The silent ones are closed by the TLS handshake timeout (1 s), long before the
    // 30 s connection deadline.
    assert!(closed_within(&mut first, &sock, Duration::from_secs(5)));
    drop(held);

    // A byte-per-second request is closed by the request timeout (1 s).
    let mut slow = f.tls_from(abuser);
    slow.write_all(b"POS").expect("write");
    slow.flush().expect("flush");
    let t = Instant::now();
    let sock = slow.sock.try_clone().expect("clone");
    assert!(closed_within(&mut slow, &sock, Duration::from_secs(5)));
    assert!(t.elapsed() < Duration::from_secs(5));

    // Bounded sizes: a body over the message cap and an oversized head are refused.
    let mut big = f.tls_from(abuser);
    big.write_all(b"POST /sco/v1 HTTP/1.1\r\nHost: c\r\nContent-Length: 100000\r\n\r\n")
        .expect("write");
    let _ = big.write_all(&[b'{'; 20_000]);
    let _ = big.flush();
    let mut resp = String::new();
    let _ = big.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp:?}");
    let mut head = f.tls_from(abuser);
    let _ = head.write_all(
        format!(
            "POST /sco/v1 HTTP/1.1\r\nHost: c\r\nX-Pad: {}\r\n",
            "a".repeat(20_000)
        )
        .as_bytes(),
    );
    let _ = head.flush();
    let mut resp = Vec::new();
    let _ = head.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 431"),
        "an oversized head was served: {resp:?}"
    );
    assert!(!resp.starts_with("HTTP/1.1 200"));

    // After all that, an honest router still onboards.
    let (_dir, cfg) = f.router(0);
    join(&cfg, &f.token(0), &SoftwareSigner::generate(&mut rng())).expect("onboarded");
}
