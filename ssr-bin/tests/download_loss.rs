//! `ssr download` across a lossy link: two network namespaces joined by a veth pair,
//! nftables in the server's namespace dropping 10% of packets at random in both
//! directions. The server runs in one namespace (this test binary re-executed as
//! `loss_server_child`), the `ssr` client in the other. Needs root; everything it
//! creates is removed on drop, even when the test fails.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ssr_download::Manifest;
use ssr_download::wire::versions_json;
use ssr_testkit::http::{HttpServer, StaticFiles};

const VERSION: &str = "7.1.3";
const FILE: &str = "ssr.img";
const CHUNK: u64 = 64 << 10;
const SERVE_DIR: &str = "SSR_DL_LOSS_SERVE_DIR";
const LISTEN: &str = "SSR_DL_LOSS_LISTEN";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces and a veth pair; deleted (with the server) on drop.
struct Netns {
    server_ns: String,
    client_ns: String,
    server: Option<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Netns {
    fn create(tag: u32) -> Netns {
        let ns = Netns {
            server_ns: format!("ssrdl-s{tag}"),
            client_ns: format!("ssrdl-c{tag}"),
            server: None,
        };
        let (a, b) = (format!("dls{tag}"), format!("dlc{tag}"));
        ip(&["netns", "add", &ns.server_ns]);
        ip(&["netns", "add", &ns.client_ns]);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &ns.server_ns]);
        ip(&["link", "set", &b, "netns", &ns.client_ns]);
        ip(&[
            "-n",
            &ns.server_ns,
            "addr",
            "add",
            "10.231.77.1/30",
            "dev",
            &a,
        ]);
        ip(&[
            "-n",
            &ns.client_ns,
            "addr",
            "add",
            "10.231.77.2/30",
            "dev",
            &b,
        ]);
        for (n, dev) in [(&ns.server_ns, &a), (&ns.client_ns, &b)] {
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn exec(&self, ns: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }
}

#[test]
fn completes_over_a_link_dropping_ten_percent_of_packets() {
    if !ssr_testkit::require_root() {
        return;
    }
    // The full PID: names stay unique among concurrent test processes (veth names <= 15
    // bytes: "dls" + 7 digits).
    let tag = std::process::id();
    let mut ns = Netns::create(tag);
    // Each chain counts every packet crossing the veth, then drops 10% of them with a
    // counter of its own: the counters are the witness that the loss really happened.
    let rules = format!(
        "table inet {LOSS_TABLE} {{\n\
        chain input {{ type filter hook input priority 0; policy accept; iifname != \"lo\" counter; iifname != \"lo\" numgen random mod 100 < 10 counter drop; }}\n\
        chain output {{ type filter hook output priority 0; policy accept; oifname != \"lo\" counter; oifname != \"lo\" numgen random mod 100 < 10 counter drop; }}\n\
    }}\n"
    );
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &ns.server_ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success(), "nft rules");

    // The image, published in a directory the server child serves.
    let data: Vec<u8> = (0..(2usize << 20))
        .map(|i| (i * 13 + i / 777) as u8)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::build(VERSION, FILE, &data, CHUNK).unwrap();
    std::fs::write(dir.path().join("versions"), versions_json(&[VERSION])).unwrap();
    std::fs::write(dir.path().join("manifest.json"), manifest.to_json()).unwrap();
    std::fs::write(dir.path().join(FILE), &data).unwrap();

    let me = std::env::current_exe().unwrap();
    let mut server = ns.exec(&ns.server_ns.clone(), &me);
    server
        .args([
            "--exact",
            "loss_server_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SERVE_DIR, dir.path())
        .env(LISTEN, "10.231.77.1:8080")
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    ns.server = Some(server.spawn().unwrap());
    // The child writes `ready` once it listens.
    let ready = dir.path().join("ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if let Some(status) = ns.server.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("server child exited: {status}");
        }
        assert!(Instant::now() < deadline, "server child not ready");
        std::thread::sleep(Duration::from_millis(10));
    }

    let cfg = dir.path().join("download.toml");
    std::fs::write(
        &cfg,
        "access-mode = \"conductor-only\"\n[health]\nmin-rate = 0\nrequest-timeout = 5\n\
         [manifest]\nallow-unsigned = true\n\
         [[source]]\nkind = \"conductor-1\"\nurl = \"http://10.231.77.1:8080\"\n",
    )
    .unwrap();
    let dest = dir.path().join("out");
    let mut client = ns
        .exec(&ns.client_ns.clone(), Path::new(env!("CARGO_BIN_EXE_ssr")))
        .args(["download", "--quiet", "--config"])
        .arg(&cfg)
        .args(["--version", VERSION, "--dest"])
        .arg(&dest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            let _ = client.wait();
            panic!("ssr download did not finish within 180 s over the lossy link");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    assert_eq!(std::fs::read(dest.join(FILE)).unwrap(), data);
    // The drops really happened, in both directions: the drop rules' own counters moved.
    // (Not TCP's RetransSegs: a drop on the sender's own output path is reported back to
    // TCP as a local error, not counted as a retransmission.) The veth carries GSO
    // packets, so each direction sees ~130 packets; none dropped at 10% has odds ~1e-6.
    let counts = loss_counters(&ns.server_ns);
    for (chain, direction) in [
        ("input", "client to server"),
        ("output", "server to client"),
    ] {
        let c = counts
            .iter()
            .find(|c| c.chain == chain)
            .unwrap_or_else(|| panic!("no counters for chain {chain}: {counts:?}"));
        eprintln!("{direction}: {} of {} packets dropped", c.dropped, c.seen);
        assert!(
            c.dropped > 0,
            "{direction}: the loss rule dropped nothing ({c:?})"
        );
        assert!(
            c.dropped < c.seen,
            "{direction}: every packet dropped, yet the download completed? ({c:?})"
        );
    }
    drop(ns);
}

/// The name of the nftables table (inside the server namespace) that drops packets.
const LOSS_TABLE: &str = "ssrdl_loss";

/// One chain's counters: every packet seen on the veth, and those its drop rule dropped.
#[derive(Debug, Default)]
struct ChainCounts {
    chain: String,
    seen: u64,
    dropped: u64,
}

/// Reads the loss table's counters with `nft -j list table` inside the namespace.
fn loss_counters(netns: &str) -> Vec<ChainCounts> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-j", "list", "table", "inet"])
        .arg(LOSS_TABLE)
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft -j list table: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
    let mut chains: Vec<ChainCounts> = Vec::new();
    for item in doc["nftables"].as_array().expect("nftables array") {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let chain = rule["chain"].as_str().expect("rule chain");
        let exprs = rule["expr"].as_array().expect("rule expr");
        let packets = exprs
            .iter()
            .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
            .expect("every rule of the loss table has a counter");
        let drops = exprs.iter().any(|e| e.get("drop").is_some());
        let i = match chains.iter().position(|c| c.chain == chain) {
            Some(i) => i,
            None => {
                chains.push(ChainCounts {
                    chain: chain.to_owned(),
                    ..ChainCounts::default()
                });
                chains.len() - 1
            }
        };
        if drops {
            chains[i].dropped += packets;
        } else {
            chains[i].seen += packets;
        }
    }
    chains
}

/// The server half, run by the test above inside its namespace. It serves the
/// published directory until its stdin closes (the parent died or finished).
#[test]
#[ignore = "helper: the server half of the loss test, started inside its namespace"]
fn loss_server_child() {
    let (Some(dir), Some(listen)) = (std::env::var_os(SERVE_DIR), std::env::var(LISTEN).ok())
    else {
        return;
    };
    let dir = Path::new(&dir);
    let files = StaticFiles::new();
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    files.insert("/versions", read("versions"));
    files.insert(
        &format!("/images/{VERSION}/manifest.json"),
        read("manifest.json"),
    );
    files.insert(&format!("/images/{VERSION}/{FILE}"), read(FILE));
    let server = HttpServer::start_on(files, listen.parse().unwrap()).unwrap();
    std::fs::write(dir.join("ready"), server.url()).unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
