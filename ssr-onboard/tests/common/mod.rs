//! A conductor on loopback with real TLS (certificates from the testkit's CA) and a
//! router configuration pointing at it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use getrandom::SysRng;
use rand_core::UnwrapErr;
use serde_json::json;
use ssr_onboard::config::{ConductorConfig, OnboardingConfig};
use ssr_onboard::https::{AuditLog, ConductorServer, conductor_policy};
use ssr_onboard::{Error, Psk, Token};
use ssr_testkit::http::TlsIdentity;

pub fn rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub struct Conductor {
    pub dir: tempfile::TempDir,
    pub ident: TlsIdentity,
    pub psk: String,
    pub addr: std::net::SocketAddr,
    pub config: PathBuf,
    done: mpsc::Receiver<()>,
}

pub fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write");
    p
}

/// A fresh P-256 token-signing key, PKCS#8 PEM.
pub fn token_key_pem() -> String {
    rcgen::KeyPair::generate()
        .expect("token key")
        .serialize_pem()
}

/// Writes an ed25519 host key with `ssh-keygen` (as a real conductor's sshd has).
pub fn host_key(dir: &Path) -> PathBuf {
    let key = dir.join("ssh_host_ed25519_key");
    let st = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "conductor-host",
            "-f",
        ])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    key
}

impl Conductor {
    /// Starts a conductor that serves `connections` connections in a thread.
    pub fn start(connections: usize) -> Conductor {
        let dir = tempfile::tempdir().expect("tempdir");
        let ident = TlsIdentity::generate(&["127.0.0.1", "localhost"]).expect("tls identity");
        let psk = Psk::generate(&mut rng()).secret_str().to_owned();
        Self::start_in(dir, ident, psk, connections)
    }

    pub fn start_in(
        dir: tempfile::TempDir,
        ident: TlsIdentity,
        psk: String,
        connections: usize,
    ) -> Conductor {
        let d = dir.path();
        write(d, "conductor.pem", ident.cert_pem());
        write(d, "conductor-key.pem", ident.key_pem());
        if !d.join("token-key.pem").exists() {
            write(d, "token-key.pem", &token_key_pem());
        }
        write(d, "ca.pem", ident.ca_pem());
        if !d.join("ssh_host_ed25519_key.pub").exists() {
            host_key(d);
        }
        let cfg = json!({
            "version": 1,
            "name": "conductor-1",
            "listen": "127.0.0.1:0",
            "certificate": d.join("conductor.pem"),
            "private-key": d.join("conductor-key.pem"),
            "token-key": d.join("token-key.pem"),
            "routers": { "router-1": psk },
            "used-tokens": d.join("used-tokens.jsonl"),
            "audit-log": d.join("conductor-audit.jsonl"),
            "ssh-host-key": d.join("ssh_host_ed25519_key.pub"),
            "authorized-keys": d.join("authorized_keys"),
            "router-keys": d.join("router-keys.jsonl"),
        });
        let config = write(d, "conductor-config.json", &cfg.to_string());
        let parsed = ConductorConfig::parse(cfg.to_string().as_bytes()).expect("conductor config");
        // Listen on an ephemeral port: bind, learn it, then serve.
        let server = ConductorServer::from_config(parsed).expect("server");
        let addr = server.local_addr().expect("addr");
        let (tx, done) = mpsc::channel();
        thread::spawn(move || {
            let _ = server.serve(Some(connections as u64), &mut |_| {});
            let _ = tx.send(());
        });
        Conductor {
            dir,
            ident,
            psk,
            addr,
            config,
            done,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a token the way `ssr onboard token create` does.
    pub fn token(&self, router: &str, iat: u64, life: u64, bind: Option<&[u8]>) -> Token {
        let mut cfg =
            ConductorConfig::parse(&std::fs::read(&self.config).expect("cfg")).expect("parse");
        let policy = conductor_policy(&mut cfg).expect("policy");
        let (t, ev) = policy
            .issue_token(router, iat, life, bind, &mut rng())
            .expect("issue");
        AuditLog::new(Some(self.path("conductor-audit.jsonl")))
            .write(&ev)
            .expect("audit");
        t
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        read_audit(&self.path("conductor-audit.jsonl"))
    }

    /// Waits until the server thread served all its connections.
    pub fn finish(&self) {
        self.done
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("conductor finished");
    }
}

pub fn read_audit(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// A router side: its own directory with the CA, the conductor certificate and a
/// PKCS#8 key; `edit` may change the JSON before it is parsed.
pub struct Router {
    pub dir: tempfile::TempDir,
    pub config: OnboardingConfig,
}

pub fn router(c: &Conductor, edit: impl FnOnce(&mut serde_json::Value)) -> Router {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "ca.pem", c.ident.ca_pem());
    write(d, "conductor.pem", c.ident.cert_pem());
    std::fs::create_dir(d.join("ssh")).expect("ssh dir");
    let mut v = json!({
        "version": 1,
        "router-name": "router-1",
        "conductor-address": c.addr.to_string(),
        "ca-certificate": d.join("ca.pem"),
        "conductor-certificate": d.join("conductor.pem"),
        "pre-shared-key": c.psk,
        "ssh-dir": d.join("ssh"),
        "audit-log": d.join("router-audit.jsonl"),
    });
    edit(&mut v);
    write(d, "onboarding-config.json", &v.to_string());
    let config = OnboardingConfig::parse(v.to_string().as_bytes()).expect("router config");
    Router { dir, config }
}

impl Router {
    pub fn audit(&self) -> Vec<serde_json::Value> {
        read_audit(&self.dir.path().join("router-audit.jsonl"))
    }
}

pub fn kind(r: &Result<impl std::fmt::Debug, Error>) -> ssr_onboard::ErrorKind {
    r.as_ref().expect_err("expected an error").kind()
}
