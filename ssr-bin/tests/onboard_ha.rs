//! Conductor HA: two `ssr onboard serve` processes share one used-token store in a
//! real PostgreSQL server (a throwaway cluster started by the test). Two routers race
//! the same token, one to each conductor: exactly one onboarding succeeds, the other
//! gets exit 10 (bad token: reused), and the audit logs of all four agree.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::json;

fn ssr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ssr"))
}

fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write");
    p
}

fn audit(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line"))
        .collect()
}

fn events(a: &[serde_json::Value]) -> Vec<&str> {
    a.iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect()
}

/// A running `ssr onboard serve`, killed on drop.
struct Serve {
    child: Child,
    addr: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &Path) -> Serve {
    let mut child = ssr()
        .args(["onboard", "serve", "--connections", "1", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ssr onboard serve");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdout.read_line(&mut line).expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Serve {
        child,
        addr,
        _stdout: stdout,
    }
}

#[test]
fn two_conductors_on_one_database_honour_single_use() {
    let pg = ssr_testkit::Postgres::start().expect("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ident = ssr_testkit::http::TlsIdentity::generate(&["127.0.0.1"]).expect("tls");
    write(d, "ca.pem", ident.ca_pem());
    let cert = write(d, "conductor.pem", ident.cert_pem());
    let key = write(d, "conductor-key.pem", ident.key_pem());
    let token_key = write(
        d,
        "token-key.pem",
        &rcgen::KeyPair::generate().expect("key").serialize_pem(),
    );
    let host =
        ssr_onboard::ssh::Ed25519SshKey::generate(&mut ssr_testkit::TestRng(7)).expect("host key");
    let host_pub = write(
        d,
        "host.pub",
        &host.public_key().authorized_keys_line("conductor"),
    );
    let psk = String::from_utf8(
        ssr()
            .args(["onboard", "psk", "generate"])
            .output()
            .expect("psk")
            .stdout,
    )
    .expect("utf8")
    .trim()
    .to_owned();
    // Two conductor nodes: same identity, keys and routers, one database.
    let node = |n: &str| {
        let cfg = json!({
            "version": 1,
            "name": "conductor-ha",
            "listen": "127.0.0.1:0",
            "certificate": cert,
            "private-key": key,
            "token-key": token_key,
            "routers": { "edge-1": psk },
            "used-tokens-database": pg.params(),
            "audit-log": d.join(format!("audit-{n}.jsonl")),
            "ssh-host-key": host_pub,
            "authorized-keys": d.join(format!("authorized_keys-{n}")),
        });
        write(d, &format!("conductor-{n}.json"), &cfg.to_string())
    };
    let (ca, cb) = (node("a"), node("b"));
    let token = d.join("edge-1.jwt");
    let out = ssr()
        .args([
            "onboard", "token", "create", "--router", "edge-1", "--config",
        ])
        .arg(&ca)
        .arg("--out")
        .arg(&token)
        .output()
        .expect("token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jti = std::fs::read_to_string(d.join("audit-a.jsonl")).expect("audit a");
    let jti = serde_json::from_str::<serde_json::Value>(jti.trim()).expect("json")["jti"]
        .as_str()
        .expect("jti")
        .to_owned();

    let (sa, sb) = (serve(&ca), serve(&cb));
    // Two routers holding the same token (e.g. a copied token), one per conductor.
    let router = |n: &str, addr: &str| {
        let r = d.join(format!("router-{n}"));
        std::fs::create_dir_all(r.join("ssh")).expect("dir");
        let cfg = json!({
            "version": 1,
            "router-name": "edge-1",
            "conductor-address": addr,
            "ca-certificate": d.join("ca.pem"),
            "conductor-certificate": d.join("conductor.pem"),
            "pre-shared-key": psk,
            "router-key": write(&r, "router-key.pem",
                &rcgen::KeyPair::generate().expect("key").serialize_pem()),
            "ssh-dir": r.join("ssh"),
            "audit-log": r.join("audit.jsonl"),
        });
        write(&r, "onboarding-config.json", &cfg.to_string())
    };
    let (ra, rb) = (router("a", &sa.addr), router("b", &sb.addr));
    let join = |cfg: &Path| {
        ssr()
            .args(["onboard", "join", "--token"])
            .arg(&token)
            .arg("--config")
            .arg(cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("join")
    };
    // Both at once.
    let (ja, jb) = (join(&ra), join(&rb));
    let (oa, ob) = (
        ja.wait_with_output().expect("join a"),
        jb.wait_with_output().expect("join b"),
    );
    let codes = [oa.status.code(), ob.status.code()];
    let winner = match codes {
        [Some(0), Some(10)] => "a",
        [Some(10), Some(0)] => "b",
        _ => panic!(
            "expected exactly one success and one exit 10, got {codes:?}\na: {}\nb: {}",
            String::from_utf8_lossy(&oa.stderr),
            String::from_utf8_lossy(&ob.stderr)
        ),
    };
    let loser = if winner == "a" { "b" } else { "a" };
    let loser_err = if winner == "a" {
        &ob.stderr
    } else {
        &oa.stderr
    };
    assert!(
        String::from_utf8_lossy(loser_err).contains("bad token"),
        "{}",
        String::from_utf8_lossy(loser_err)
    );

    // The audit logs agree: the winner's conductor used the token and onboarded the
    // router, the loser's refused the same token id as reused; each router saw its side.
    let aw = audit(&d.join(format!("audit-{winner}.jsonl")));
    let al = audit(&d.join(format!("audit-{loser}.jsonl")));
    let used: Vec<_> = aw
        .iter()
        .filter(|e| e["event"] != "token-created")
        .collect();
    assert_eq!(
        used.iter()
            .map(|e| e["event"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["token-used", "onboarded"],
        "{aw:?}"
    );
    assert!(used.iter().all(|e| e["jti"] == jti.as_str()));
    let refused: Vec<_> = al
        .iter()
        .filter(|e| e["event"] != "token-created")
        .collect();
    assert_eq!(refused.len(), 1, "{al:?}");
    assert_eq!(refused[0]["event"], "token-rejected");
    assert_eq!(refused[0]["jti"], jti.as_str());
    assert!(
        refused[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("already used"),
        "{al:?}"
    );
    let rw = audit(&d.join(format!("router-{winner}/audit.jsonl")));
    let rl = audit(&d.join(format!("router-{loser}/audit.jsonl")));
    assert_eq!(events(&rw), ["onboarded"]);
    assert_eq!(events(&rl), ["token-rejected"]);
    assert_eq!(rl[0]["jti"], jti.as_str());
    // Only the winner's conductor authorised a router key; the database holds the id once.
    assert!(d.join(format!("authorized_keys-{winner}")).exists());
    assert!(!d.join(format!("authorized_keys-{loser}")).exists());
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM ssr_used_tokens WHERE jti = '{jti}'"
        ))
        .expect("psql")
        .trim(),
        "1"
    );
    drop((sa, sb));

    // The onboarding record is in the shared database: the other node checks the
    // router's certificate request against the key the router proved on the first.
    let csr = |n: &str| {
        let out = Command::new("openssl")
            .args(["req", "-new", "-sha256", "-subj", "/CN=edge-1", "-key"])
            .arg(d.join(format!("router-{n}/router-key.pem")))
            .arg("-out")
            .arg(d.join(format!("router-{n}/csr.pem")))
            .output()
            .expect("openssl req");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d.join(format!("router-{n}/csr.pem"))
    };
    let other_node = if winner == "a" { &cb } else { &ca };
    let check = |csr: &Path| {
        ssr()
            .args(["onboard", "check-csr", "--router", "edge-1", "--config"])
            .arg(other_node)
            .arg("--csr")
            .arg(csr)
            .output()
            .expect("check-csr")
    };
    let ok = check(&csr(winner));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = check(&csr(loser));
    assert_eq!(
        refused.status.code(),
        Some(15),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM ssr_onboarding_records WHERE router = 'edge-1'")
            .expect("psql")
            .trim(),
        "1"
    );
}
