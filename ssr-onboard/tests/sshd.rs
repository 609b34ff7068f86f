//! After onboarding, a real OpenSSH server (Debian's `sshd`, own config, loopback,
//! port 930) accepts the router's key, and the router's `ssh` accepts the conductor's
//! host key from the exchanged `known_hosts` without prompting (`BatchMode`,
//! `StrictHostKeyChecking=yes`). Root only (sshd on port 930).

mod common;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ssr_onboard::https::join;
use ssr_onboard::{RouterSigner, SoftwareSigner};

struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sshd(dir: &Path, port: u16) -> Sshd {
    // sshd insists on its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let _ = std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755));
    let cfg = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
         UsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\nLogLevel VERBOSE\n",
        hk = dir.join("ssh_host_ed25519_key").display(),
        pid = dir.join("sshd.pid").display(),
        ak = dir.join("authorized_keys").display(),
    );
    let cfg_path = dir.join("sshd_config");
    std::fs::write(&cfg_path, cfg).expect("sshd_config");
    let check = Command::new("/usr/sbin/sshd")
        .arg("-t")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .expect("sshd -t");
    assert!(
        check.status.success(),
        "sshd -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).expect("log"))
        .spawn()
        .expect("sshd");
    let sshd = Sshd(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "sshd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    sshd
}

#[test]
fn real_sshd_accepts_the_router_after_onboarding() {
    if !ssr_testkit::require_root() {
        return;
    }
    // Port 930 is what the router uses after onboarding; it must be free here. The lock
    // makes this test in another process (two suites on one machine) wait its turn.
    let _port = ssr_testkit::lock_fixed_port(930).expect("lock port 930");
    if TcpListener::bind((Ipv4Addr::LOCALHOST, 930)).is_err() {
        panic!("port 930 on 127.0.0.1 is in use: cannot run the post-onboarding SSH test");
    }
    let c = Conductor::start(1);
    let r = router(&c, |_| {});
    let signer = SoftwareSigner::generate(&mut rng());
    let token = c.token(
        "router-1",
        unix_now(),
        600,
        Some(&signer.public_key_spki().expect("spki")),
    );
    let out = join(&r.config, &token, &signer).expect("onboarded");
    assert_eq!(out.ssh_port, 930);

    // Before onboarding's authorized_keys entry is used, show the server is strict:
    // a key it does not know is refused.
    let _sshd = start_sshd(c.dir.path(), 930);
    let stranger = r.dir.path().join("stranger");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .expect("keygen");
    assert!(st.success());
    // Exactly the options the router's next connection uses, spelled out.
    let ssh = |identity: &Path| {
        Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", out.known_hosts.display()))
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg("-i")
            .arg(identity)
            .args(["-p", "930", "root@127.0.0.1", "true"])
            .output()
            .expect("ssh")
    };
    let refused = ssh(&stranger);
    assert!(!refused.status.success(), "an unknown key was accepted");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Permission denied"));

    // The router's onboarded key and the exchanged known_hosts: no prompt.
    let ok = ssh(&out.ssh_private_key);
    assert!(
        ok.status.success(),
        "ssh failed: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&ok.stderr),
        std::fs::read_to_string(c.path("sshd.log")).unwrap_or_default()
    );
    // The same through the ssh_config stanza `join` wrote (`ssh conductor`).
    let via_config = Command::new("ssh")
        .arg("-F")
        .arg(&out.ssh_config)
        .args([
            "-o",
            "BatchMode=yes",
            "-l",
            "root",
            "conductor",
            "echo",
            "onboarded",
        ])
        .output()
        .expect("ssh");
    assert!(
        via_config.status.success(),
        "{}",
        String::from_utf8_lossy(&via_config.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&via_config.stdout), "onboarded\n");

    // And a conductor presenting another host key is refused by the router's ssh.
    drop(_sshd);
    std::fs::remove_file(c.path("ssh_host_ed25519_key")).expect("rm");
    std::fs::remove_file(c.path("ssh_host_ed25519_key.pub")).expect("rm");
    host_key(c.dir.path());
    let _sshd = start_sshd(c.dir.path(), 930);
    let spoofed = ssh(&out.ssh_private_key);
    assert!(!spoofed.status.success());
    assert!(
        String::from_utf8_lossy(&spoofed.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        String::from_utf8_lossy(&spoofed.stderr)
    );
}
