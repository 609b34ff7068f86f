//! `integrity-handler` end to end: a real swtpm, a real loop-mounted ext4 with the
//! `encrypt` feature, the journal record read from a socket the test binds, and the
//! nftables ruleset checked inside network namespaces the test creates. Root only
//! (CI runs as root); the network is never blocked in the host namespace.

use std::collections::HashMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Condvar, Mutex};

use ssr_testkit::{LoopExt4, Swtpm};

const EVENT: &str =
    "integrity-handler: Integrity event detected. A clean installation is required.";
const EXIT_INTEGRITY_EVENT: i32 = 3;

/// One system under test: a state directory and protected directories on an ext4,
/// a configuration file, and a journal socket.
struct System {
    root: PathBuf,
    config: PathBuf,
    journal: Journal,
    dirs: Vec<PathBuf>,
    /// More configuration lines (after the defaults above; a key given here must not
    /// be among them).
    extra_config: String,
}

/// A bound datagram socket standing in for journald, drained by a thread (the kernel
/// queues only a few datagrams).
struct Journal {
    path: PathBuf,
    records: Arc<Mutex<Vec<Vec<u8>>>>,
    seen_marker: Arc<(Mutex<u64>, Condvar)>,
    markers: u64,
}

const MARKER: &[u8] = b"TEST_MARKER\n";

impl Journal {
    fn bind(path: &Path) -> Journal {
        let _ = fs::remove_file(path);
        let socket = UnixDatagram::bind(path).unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let seen_marker = Arc::new((Mutex::new(0u64), Condvar::new()));
        let (r, m) = (records.clone(), seen_marker.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = socket.recv(&mut buf) {
                if &buf[..n] == MARKER {
                    *m.0.lock().unwrap() += 1;
                    m.1.notify_all();
                } else {
                    r.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        });
        Journal {
            path: path.to_path_buf(),
            records,
            seen_marker,
            markers: 0,
        }
    }

    /// Every record received so far (datagrams are FIFO: once our marker is back,
    /// everything sent before it has been read).
    fn drain(&mut self) -> Vec<Vec<u8>> {
        self.markers += 1;
        UnixDatagram::unbound()
            .unwrap()
            .send_to(MARKER, &self.path)
            .unwrap();
        let (lock, cvar) = &*self.seen_marker;
        let mut seen = lock.lock().unwrap();
        while *seen < self.markers {
            seen = cvar.wait(seen).unwrap();
        }
        std::mem::take(&mut *self.records.lock().unwrap())
    }
}

impl System {
    /// Lays out a system under `root` (on the ext4) talking to the TPM at `tcti`.
    fn new(root: &Path, tcti: &str) -> System {
        fs::create_dir_all(root).unwrap();
        let dirs = vec![root.join("etc/secure"), root.join("var/secure")];
        let journal = Journal::bind(&root.join("journal.sock"));
        let system = System {
            root: root.to_path_buf(),
            config: root.join("integrity-handler.toml"),
            journal,
            dirs,
            extra_config: String::new(),
        };
        system.configure(tcti, false);
        system
    }

    fn configure(&self, tcti: &str, block_network: bool) {
        let dirs = self
            .dirs
            .iter()
            .map(|d| format!("{:?}", d.display().to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        fs::write(
            &self.config,
            format!(
                "tcti = {tcti:?}\nstate-dir = {:?}\ndirectories = [{dirs}]\nblock-network-on-event = {block_network}\njournal-socket = {:?}\n{}{}",
                self.state_dir().display().to_string(),
                self.root.join("journal.sock").display().to_string(),
                if self.extra_config.contains("tpm-wait-seconds") {
                    ""
                } else {
                    "tpm-wait-seconds = 0\n"
                },
                self.extra_config,
            ),
        )
        .unwrap();
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    fn sealed_fek(&self) -> PathBuf {
        self.state_dir().join("sealed-fek")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_integrity-handler"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("JOURNAL_STREAM")
            .env_remove("INTEGRITY_HANDLER_KILL_AFTER_STEP");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a subcommand that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The journal records received so far, each as its fields.
    fn journal_records(&mut self) -> Vec<HashMap<String, String>> {
        self.journal
            .drain()
            .into_iter()
            .map(|datagram| {
                String::from_utf8(datagram)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        let (k, v) = l.split_once('=').expect("KEY=value lines");
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .collect()
    }

    /// `start` with the handler killed (SIGKILL) right after durable step `step`.
    fn start_killed_after(&self, step: &str) -> Output {
        self.command(&["start"])
            .env("INTEGRITY_HANDLER_KILL_AFTER_STEP", step)
            .output()
            .unwrap()
    }

    /// The exit code of `check-target` with `args`.
    fn check_target(&self, args: &[&str]) -> Option<i32> {
        let args: Vec<&str> = ["check-target"].iter().chain(args).copied().collect();
        self.run(&args).status.code()
    }

    /// Onboards, writes the files, locks, and drains the journal.
    fn onboard_with_files_locked(&mut self) {
        self.ok(&["start"]);
        self.write_files();
        self.ok(&["lock"]);
        self.journal_records();
    }

    /// A simulated reboot of an onboarded system holding the files: locks (the files
    /// are gone), starts again (they are back).
    fn lock_and_unlock(&self) {
        self.ok(&["lock"]);
        self.assert_locked();
        self.ok(&["start"]);
        self.assert_files_read_back();
    }

    /// `start` must be an integrity event; returns its output.
    fn start_is_integrity_event(&mut self) -> Output {
        let out = self.run(&["start"]);
        assert_integrity_event(self, &out);
        out
    }

    fn write_files(&self) {
        for (i, d) in self.dirs.iter().enumerate() {
            fs::write(d.join("router.key"), format!("secret {i}")).unwrap();
        }
    }

    fn assert_files_read_back(&self) {
        for (i, d) in self.dirs.iter().enumerate() {
            assert_eq!(
                fs::read_to_string(d.join("router.key")).unwrap(),
                format!("secret {i}")
            );
        }
    }

    fn assert_locked(&self) {
        for d in &self.dirs {
            // Without the key the kernel shows only no-key names.
            assert!(
                !d.join("router.key").exists(),
                "{} still unlocked",
                d.display()
            );
            assert_eq!(fs::read_dir(d).unwrap().count(), 1);
        }
    }
}

/// Root only (`None`, and the test returns, otherwise): a loop-mounted ext4 of
/// `size_mib` MiB with the `encrypt` feature and a fresh swtpm.
fn ext4_and_tpm(size_mib: u64) -> Option<(LoopExt4, Swtpm)> {
    if !ssr_testkit::require_root() {
        return None;
    }
    Some((
        LoopExt4::create(size_mib, 4096).unwrap(),
        Swtpm::start().unwrap(),
    ))
}

/// [`ext4_and_tpm`] with a system laid out on that ext4 and talking to that TPM.
fn system_on_ext4(size_mib: u64) -> Option<(LoopExt4, Swtpm, System)> {
    let (ext4, tpm) = ext4_and_tpm(size_mib)?;
    let system = System::new(&ext4.mount_point().join("sys"), &tpm.tcti());
    Some((ext4, tpm, system))
}

/// A TCTI on a free port pair where no TPM answers.
fn absent_tpm_tcti() -> String {
    let port = ssr_testkit::free_port_pair().unwrap();
    format!("swtpm:host=127.0.0.1,port={port}")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_stderr_contains(out: &Output, needle: &str) {
    assert!(stderr(out).contains(needle), "{}", stderr(out));
}

fn assert_integrity_event(system: &mut System, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(EXIT_INTEGRITY_EVENT),
        "{}",
        stderr(out)
    );
    assert!(
        stderr(out).lines().any(|l| l == EVENT),
        "stderr lacks the event line: {}",
        stderr(out)
    );
    let records = system.journal_records();
    let event: Vec<_> = records
        .iter()
        .filter(|r| r.get("PRIORITY").map(String::as_str) == Some("0"))
        .collect();
    assert_eq!(event.len(), 1, "{records:?}");
    assert_eq!(event[0]["MESSAGE"], EVENT);
    assert_eq!(event[0]["SYSLOG_IDENTIFIER"], "integrity-handler");
}

#[test]
fn onboards_locks_and_unlocks_with_files_intact() {
    let Some((_fs, _tpm, mut system)) = system_on_ext4(32) else {
        return;
    };

    assert!(system.ok(&["status"]).contains("onboarded: no"));
    system.ok(&["start"]);
    let records = system.journal_records();
    let messages: Vec<&str> = records.iter().map(|r| r["MESSAGE"].as_str()).collect();
    for want in [
        "capability check: TPM 2.0 present and usable",
        "capability check: the file system supports encryption",
        "FEK generated by the TPM",
        "sealed FEK stored at",
        "directory created, empty",
        "encrypted (fscrypt v2",
        "onboarding recorded",
    ] {
        let want = want.replace("directory created", "");
        assert!(
            messages.iter().any(|m| m.contains(want.trim())),
            "no journal record contains {want:?}: {messages:#?}"
        );
    }
    assert!(
        records
            .iter()
            .all(|r| r["PRIORITY"] == "6" && r["SYSLOG_IDENTIFIER"] == "integrity-handler")
    );
    assert!(system.sealed_fek().exists());
    for d in &system.dirs {
        let policy = ssr_fscrypt::kernel::get_policy(d)
            .unwrap()
            .expect("encrypted");
        assert_eq!(fs::read_dir(d).unwrap().count(), 0, "created empty");
        assert!(system.ok(&["status"]).contains(&format!(
            "onboarded: yes (FEK key identifier {})",
            policy.key_identifier()
        )));
    }
    system.write_files();

    // A simulated reboot: lock, then start again.
    system.ok(&["lock"]);
    system.assert_locked();
    let status = system.ok(&["status"]);
    assert_eq!(status.matches(": locked").count(), 2, "{status}");
    system.journal_records();
    system.ok(&["start"]);
    system.assert_files_read_back();
    let messages: Vec<String> = system
        .journal_records()
        .into_iter()
        .map(|r| r["MESSAGE"].clone())
        .collect();
    for d in &system.dirs {
        assert!(messages.contains(&format!("directory {} unlocked", d.display())));
    }
    assert!(messages.iter().any(|m| m.starts_with("FEK retrieved")));
    assert_eq!(system.ok(&["status"]).matches(": unlocked").count(), 2);

    // Lock with a file open: reported, and the key is still removed.
    let open = fs::File::open(system.dirs[0].join("router.key")).unwrap();
    let out = system.run(&["lock"]);
    assert!(out.status.success());
    assert_stderr_contains(&out, "still open");
    drop(open);
    system.ok(&["lock"]);
    system.assert_locked();

    // The downgrade guard, onboarded: --previous alone allows nothing.
    assert_eq!(system.check_target(&["7.1.2"]), Some(4));
    assert_eq!(
        system.check_target(&["7.1.2", "--previous", "7.1.2-R1"]),
        Some(4)
    );
    assert_eq!(system.check_target(&["7.2.0"]), Some(0));
    assert_eq!(system.check_target(&["seven"]), Some(2));
    // The installer of 7.1.3 recorded that it replaced 7.1.2: a rollback to it is
    // allowed, unless the installer's claim contradicts the history.
    system.ok(&["record-installed", "7.1.3-R1", "--previous", "7.1.2"]);
    assert_eq!(
        fs::read_to_string(system.state_dir().join("installed-versions")).unwrap(),
        "integrity-handler installed versions v1\n7.1.2\n7.1.3\n"
    );
    assert_eq!(system.check_target(&["7.1.2"]), Some(0));
    assert_eq!(
        system.check_target(&["7.1.2", "--previous", "7.1.2"]),
        Some(0)
    );
    assert_eq!(
        system.check_target(&["7.1.2", "--previous", "7.1.1"]),
        Some(4)
    );
    assert_eq!(
        system.check_target(&["7.1.1", "--previous", "7.1.1"]),
        Some(4)
    );
    // After an upgrade to 7.2.0 the previous version is 7.1.3: 7.1.2 is refused,
    // whatever --previous says.
    system.ok(&["record-installed", "7.2.0", "--previous", "7.1.2"]);
    assert_eq!(
        system.check_target(&["7.1.2", "--previous", "7.1.2"]),
        Some(4)
    );
    assert_eq!(system.check_target(&["7.1.3"]), Some(0));
    // A damaged history shows no previous version.
    fs::write(system.state_dir().join("installed-versions"), "7.1.2\n").unwrap();
    assert_eq!(
        system.check_target(&["7.1.2", "--previous", "7.1.2"]),
        Some(4)
    );
}

#[test]
fn corrupt_or_missing_sealed_fek_is_an_integrity_event_and_destroys_nothing() {
    let Some((_fs, tpm, mut system)) = system_on_ext4(32) else {
        return;
    };
    system.onboard_with_files_locked();
    let original = fs::read(system.sealed_fek()).unwrap();

    // One flipped bit in the ciphertext.
    let mut corrupt = original.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x01;
    fs::write(system.sealed_fek(), &corrupt).unwrap();
    system.start_is_integrity_event();
    assert_eq!(
        fs::read(system.sealed_fek()).unwrap(),
        corrupt,
        "sealed FEK rewritten"
    );
    system.assert_locked();

    // Missing.
    fs::remove_file(system.sealed_fek()).unwrap();
    let out = system.start_is_integrity_event();
    assert_stderr_contains(&out, "does not exist");
    assert!(!system.sealed_fek().exists());
    system.assert_locked();

    fs::write(system.sealed_fek(), &original).unwrap();

    // No TPM answering on an onboarded system.
    let no_tpm = absent_tpm_tcti();
    system.configure(&no_tpm, false);
    let out = system.start_is_integrity_event();
    assert_stderr_contains(&out, "no TPM at");
    system.configure(&tpm.tcti(), false);

    // A damaged onboarding record.
    let record = system.state_dir().join("onboarded");
    let good_record = fs::read(&record).unwrap();
    fs::write(&record, b"integrity-handler onboarding record v9\n").unwrap();
    let out = system.start_is_integrity_event();
    assert_stderr_contains(&out, "unsupported version");
    fs::write(&record, &good_record).unwrap();
    system.assert_locked();

    // The whole state directory gone: the directories still hold encrypted files, so
    // this is an integrity event, not a fresh onboarding.
    let state_backup = system.root.join("state-backup");
    fs::rename(system.state_dir(), &state_backup).unwrap();
    let out = system.start_is_integrity_event();
    assert_stderr_contains(&out, "holds encrypted content");
    assert!(!system.state_dir().join("onboarded").exists());
    system.assert_locked();
    // The same without a TPM: still an integrity event, not "stays unencrypted".
    system.configure(&no_tpm, false);
    let out = system.start_is_integrity_event();
    assert_stderr_contains(&out, "holds encrypted content");
    system.configure(&tpm.tcti(), false);
    let _ = fs::remove_dir_all(system.state_dir());
    fs::rename(&state_backup, system.state_dir()).unwrap();

    // Everything put back: nothing was lost. A second `start` (a restart of an
    // unlocked system) is harmless.
    system.ok(&["start"]);
    system.assert_files_read_back();
    system.ok(&["start"]);
    system.assert_files_read_back();
}

#[test]
fn file_system_without_encryption_stays_unencrypted() {
    if !ssr_testkit::require_root() {
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    ssr_testkit::run(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(mnt.path()),
    )
    .unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            // Lazy: the journal reader thread may still hold its socket here.
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path());
    let tpm = Swtpm::start().unwrap();
    let mut system = System::new(&mnt.path().join("sys"), &tpm.tcti());
    let out = system.run(&["start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_contains(&out, "does not support encryption");
    assert_stderr_contains(&out, "stays unencrypted");
    assert!(
        system
            .journal_records()
            .iter()
            .any(|r| r["MESSAGE"].starts_with("capability check: TPM 2.0 present and usable"))
    );
    assert!(!system.sealed_fek().exists());
    assert!(system.dirs.iter().all(|d| !d.exists()));
    drop(system);
}

#[test]
fn no_tpm_stays_unencrypted() {
    let dir = tempfile::tempdir().unwrap();
    let mut system = System::new(dir.path(), &absent_tpm_tcti());
    let out = system.run(&["start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_contains(&out, "stays unencrypted");
    let records = system.journal_records();
    assert!(
        records
            .iter()
            .any(|r| r["MESSAGE"].contains("no usable TPM 2.0") && r["PRIORITY"] == "4")
    );
    for d in &system.dirs {
        assert!(!d.exists());
    }
    assert!(!system.state_dir().exists());
    assert!(system.ok(&["status"]).contains("onboarded: no"));
    // Not onboarded: any version may be installed.
    assert_eq!(system.check_target(&["6.3.0"]), Some(0));
}

#[test]
fn refuses_to_migrate_plaintext() {
    let Some((_fs, _tpm, system)) = system_on_ext4(16) else {
        return;
    };
    fs::create_dir_all(&system.dirs[1]).unwrap();
    fs::write(system.dirs[1].join("old.conf"), b"plaintext").unwrap();
    let out = system.run(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_contains(&out, "plaintext is never migrated");
    assert!(!system.sealed_fek().exists());
    assert!(!system.dirs[0].exists());
    assert_eq!(
        fs::read(system.dirs[1].join("old.conf")).unwrap(),
        b"plaintext"
    );
    assert_eq!(
        ssr_fscrypt::kernel::get_policy(&system.dirs[1]).unwrap(),
        None
    );
}

/// Kills onboarding (SIGKILL) right after each durable step in turn, and the resumed
/// onboarding again at the same step; the next `start` must finish onboarding into a
/// system that locks and unlocks with its files.
#[test]
fn onboarding_survives_a_kill_at_every_step() {
    let Some((ext4, tpm)) = ext4_and_tpm(32) else {
        return;
    };
    let mut step = 1;
    loop {
        let system = System::new(
            &ext4.mount_point().join(format!("kill-{step}")),
            &tpm.tcti(),
        );
        let out = system.start_killed_after(&step.to_string());
        if out.status.success() {
            // Past the last step: onboarding ran to the end.
            assert!(step > 6, "only {} steps", step - 1);
            break;
        }
        assert_eq!(
            out.status.signal(),
            Some(9),
            "step {step}: {}",
            stderr(&out)
        );
        assert_stderr_contains(&out, &format!("killed after step {step}"));
        // The resumed onboarding is killed at the same step again when it gets that
        // far (a second power loss), then runs to the end.
        let again = system.start_killed_after(&step.to_string());
        assert!(
            again.status.success() || again.status.signal() == Some(9),
            "step {step}, second kill: {}",
            stderr(&again)
        );
        system.ok(&["start"]);
        let status = system.ok(&["status"]);
        assert!(status.contains("onboarded: yes"), "step {step}: {status}");
        system.write_files();
        system.lock_and_unlock();
        system.ok(&["lock"]);
        step += 1;
    }
}

/// An onboarding interrupted after directories were encrypted, whose TPM is then
/// replaced: the stale sealed FEK is set aside (not deleted), the empty directories
/// are recreated under a new FEK, and onboarding completes.
#[test]
fn interrupted_onboarding_with_a_lost_tpm_starts_again_cleanly() {
    let Some((_fs, _first, system)) = system_on_ext4(16) else {
        return;
    };
    // Steps: capabilities, FEK generated, FEK stored, key added, dir 0 created,
    // dir 0 policy set (6).
    let out = system.start_killed_after("6");
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    let old = ssr_fscrypt::kernel::get_policy(&system.dirs[0])
        .unwrap()
        .unwrap();
    let stale = fs::read(system.sealed_fek()).unwrap();

    let second = Swtpm::start().unwrap();
    system.configure(&second.tcti(), false);
    let out = system.run(&["start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_contains(&out, "onboarding starts again");
    assert_eq!(
        fs::read(system.state_dir().join("sealed-fek.unusable-1")).unwrap(),
        stale
    );
    let new = ssr_fscrypt::kernel::get_policy(&system.dirs[0])
        .unwrap()
        .unwrap();
    assert_ne!(new.key_identifier(), old.key_identifier());
    system.write_files();
    system.lock_and_unlock();
}

/// A network namespace created by the test, deleted on drop.
struct NetNs(String);

impl NetNs {
    fn add(name: String) -> NetNs {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        ssr_testkit::run(Command::new("ip").args(["netns", "add", &name])).unwrap();
        let ns = NetNs(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        ssr_testkit::run(Command::new("ip").args(["-n", &self.0]).args(args)).unwrap();
    }

    /// A command run inside the namespace.
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }

    fn ping(&self, addr: &str) -> bool {
        self.exec("ping")
            .args(["-c", "1", "-W", "1", addr])
            .output()
            .unwrap()
            .status
            .success()
    }

    fn ping6(&self, addr: &str) -> bool {
        self.exec("ping")
            .args(["-6", "-c", "1", "-W", "1", addr])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// The handler's drop table is loaded in this namespace.
    fn has_drop_table(&self) -> bool {
        self.exec("nft")
            .args(["list", "table", "inet", "integrity_handler"])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// `integrity-handler … start` run inside the namespace.
    fn start_handler(&self, system: &System) -> Output {
        self.exec(env!("CARGO_BIN_EXE_integrity-handler"))
            .arg("--config")
            .arg(&system.config)
            .arg("start")
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap()
    }

    /// swtpm inside the namespace on its loopback, port 2321/2322, over `state`.
    fn swtpm(&self, state: &Path) -> Killed {
        let child = self
            .exec("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args([
                "--server",
                "type=tcp,port=2321,bindaddr=127.0.0.1",
                "--ctrl",
                "type=tcp,port=2322,bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let killed = Killed(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.loopback_connects(2321) {
            assert!(
                std::time::Instant::now() < deadline,
                "swtpm in the namespace did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        killed
    }

    /// A TCP connection to 127.0.0.1:port inside the namespace succeeds.
    fn loopback_connects(&self, port: u16) -> bool {
        self.exec("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sealed FEK next to a different TPM: an integrity event. The handler runs in a
/// network namespace (with that other swtpm inside it, on its loopback) joined by a
/// veth pair to a peer namespace; after the event the nftables table is in place,
/// the peer's pings are dropped, loopback still works. Restarting fails again the
/// same way, and nothing on disk is touched.
#[test]
fn other_tpm_is_an_integrity_event_that_blocks_the_network() {
    let Some((_fs, tpm, mut system)) = system_on_ext4(32) else {
        return;
    };
    system.onboard_with_files_locked();
    let sealed = fs::read(system.sealed_fek()).unwrap();

    let id = std::process::id();
    let host = NetNs::add(format!("ih-test-{id}-h"));
    let peer = NetNs::add(format!("ih-test-{id}-p"));
    host.ip(&[
        "link", "add", "ih0", "type", "veth", "peer", "name", "ih1", "netns", &peer.0,
    ]);
    host.ip(&["addr", "add", "192.0.2.1/24", "dev", "ih0"]);
    peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "ih1"]);
    host.ip(&["link", "set", "ih0", "up"]);
    peer.ip(&["link", "set", "ih1", "up"]);
    assert!(peer.ping("192.0.2.1"), "veth pair does not carry pings");

    // The other TPM, inside the handler's namespace.
    let state = tempfile::tempdir().unwrap();
    let other = Killed(
        host.exec("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.path().display()))
            .args([
                "--server",
                "type=tcp,port=2321,bindaddr=127.0.0.1",
                "--ctrl",
                "type=tcp,port=2322,bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !host.loopback_connects(2321) {
        assert!(
            std::time::Instant::now() < deadline,
            "swtpm in the namespace did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    system.configure("swtpm:host=127.0.0.1,port=2321", true);

    for attempt in 0..2 {
        let out = host
            .exec(env!("CARGO_BIN_EXE_integrity-handler"))
            .arg("--config")
            .arg(&system.config)
            .arg("start")
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap();
        assert_integrity_event(&mut system, &out);
        assert!(
            stderr(&out).contains("TPM: TPM has no key at persistent handle"),
            "attempt {attempt}: {}",
            stderr(&out)
        );
        let table = host
            .exec("nft")
            .args(["list", "table", "inet", "integrity_handler"])
            .output()
            .unwrap();
        assert!(table.status.success(), "{}", stderr(&table));
        let table = String::from_utf8_lossy(&table.stdout);
        assert_eq!(table.matches("policy drop").count(), 3, "{table}");
        assert!(
            !peer.ping("192.0.2.1"),
            "traffic to the handler's namespace still flows"
        );
        assert!(
            !host.ping("192.0.2.2"),
            "traffic from the handler's namespace still flows"
        );
        assert!(host.loopback_connects(2321), "loopback must stay open");
    }
    drop(other);
    assert_eq!(fs::read(system.sealed_fek()).unwrap(), sealed);
    system.assert_locked();
    // The host namespace has no such table.
    let host_table = Command::new("nft")
        .args(["list", "table", "inet", "integrity_handler"])
        .output()
        .unwrap();
    assert!(!host_table.status.success());

    // Back with its own TPM, the system unlocks with its files.
    system.configure(&tpm.tcti(), false);
    system.ok(&["start"]);
    system.assert_files_read_back();
}

/// Runs a tool (tpm2-tools get `tpm` as their TCTI), asserting success.
fn tool(tpm: Option<&Swtpm>, program: &str, args: &[&str]) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(tpm) = tpm {
        cmd.env("TPM2TOOLS_TCTI", tpm.tcti());
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
}

/// Replaces the ciphertext of the sealed FEK and fixes its checksum (a forger with
/// write access to the state directory can do both).
fn with_ciphertext(sealed: &[u8], ct: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut bytes = sealed.to_vec();
    bytes[50..306].copy_from_slice(ct);
    let n = bytes.len() - 32;
    let sum = sha2::Sha256::digest(&bytes[..n]);
    bytes[n..].copy_from_slice(&sum);
    bytes
}

/// A sealed FEK forged with the public sealing key (`openssl pkeyutl`, OAEP SHA-256)
/// is an integrity event: the TPM's HMAC does not vouch for it. A version-1 file (an
/// earlier release) still unlocks and is upgraded to an authenticated one; a
/// version-1 file is never resumed from.
#[test]
fn a_forged_sealed_fek_is_an_integrity_event_and_a_version_1_file_is_upgraded() {
    let Some((_fs, tpm, mut system)) = system_on_ext4(32) else {
        return;
    };
    system.onboard_with_files_locked();
    let genuine = fs::read(system.sealed_fek()).unwrap();
    assert_eq!(genuine[4], 2, "version 2 written");
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    tool(
        Some(&tpm),
        "tpm2_readpublic",
        &["-Q", "-c", "0x81000100", "-f", "pem", "-o", &p("key.pem")],
    );
    fs::write(p("fek.bin"), [0x33u8; 32]).unwrap();
    tool(
        None,
        "openssl",
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            &p("key.pem"),
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            &p("fek.bin"),
            "-out",
            &p("ct.bin"),
        ],
    );
    let forged = with_ciphertext(&genuine, &fs::read(p("ct.bin")).unwrap());
    fs::write(system.sealed_fek(), &forged).unwrap();
    let out = system.start_is_integrity_event();
    assert_stderr_contains(&out, "not authenticated by the TPM's HMAC key");
    assert_eq!(fs::read(system.sealed_fek()).unwrap(), forged);
    system.assert_locked();

    // The genuine file as version 1 (what an earlier release wrote): unlocks, and is
    // rewritten as version 2.
    use sha2::Digest as _;
    let mut v1 = genuine[..306].to_vec();
    v1[4] = 1;
    let sum = sha2::Sha256::digest(&v1);
    v1.extend_from_slice(&sum);
    fs::write(system.sealed_fek(), &v1).unwrap();
    let out = system.run(&["start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_contains(&out, "upgraded to version 2");
    system.assert_files_read_back();
    let upgraded = fs::read(system.sealed_fek()).unwrap();
    assert_eq!(upgraded.len(), genuine.len());
    assert_eq!(upgraded[4], 2);
    system.lock_and_unlock();

    // Without the onboarding record (an interrupted onboarding), a version-1 file
    // is not resumed from, even a genuine one: it is set aside.
    let fresh = System::new(&system.root.join("fresh"), &tpm.tcti());
    fs::create_dir_all(fresh.state_dir()).unwrap();
    fs::write(fresh.sealed_fek(), &v1).unwrap();
    let out = fresh.run(&["start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_contains(&out, "version 1 (not authenticated by the TPM)");
    assert_eq!(
        fs::read(fresh.state_dir().join("sealed-fek.unusable-1")).unwrap(),
        v1
    );
}

/// Transient objects and sessions loaded in the TPM (tpm2_getcap), as a raw TPM keeps
/// them after the process that loaded them died.
fn tpm_loaded(tpm: &Swtpm) -> usize {
    [
        "handles-transient",
        "handles-loaded-session",
        "handles-saved-session",
    ]
    .iter()
    .map(|what| {
        let out = Command::new("tpm2_getcap")
            .arg(what)
            .env("TPM2TOOLS_TCTI", tpm.tcti())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.trim_start().starts_with("- 0x"))
            .count()
    })
    .sum()
}

/// Onboarding SIGKILLed from outside at moments spread over its TPM work, again and
/// again, without restarting the TPM (swtpm has no resource manager, like
/// `/dev/tpm0`): each kill that lands mid-command leaves transient objects or sessions
/// loaded. The next `start` flushes them and completes.
#[test]
fn onboarding_killed_mid_tpm_command_leaves_no_stale_tpm_objects_behind() {
    let Some((_fs, tpm, mut system)) = system_on_ext4(32) else {
        return;
    };
    let mut kills_that_left_objects = 0;
    for attempt in 0..60u64 {
        let mut child = system.command(&["start"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(15 + (attempt * 37) % 700));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            // Finished before the kill: start over on a fresh system.
            system = System::new(&system.root.join(format!("again-{attempt}")), &tpm.tcti());
            continue;
        }
        if tpm_loaded(&tpm) > 0 {
            kills_that_left_objects += 1;
            if kills_that_left_objects == 3 {
                break;
            }
        }
    }
    assert_eq!(
        kills_that_left_objects, 3,
        "no kill landed while the TPM held an object or session"
    );
    let out = system.run(&["start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_contains(&out, "stale transient object(s)/session(s)");
    assert_eq!(tpm_loaded(&tpm), 0);
    system.write_files();
    system.lock_and_unlock();
}

/// Two namespaces joined by a veth pair, with IPv4 and IPv6 addresses: the handler's
/// (`.0`, 192.0.2.1 / 2001:db8::1) and a peer (`.1`, 192.0.2.2 / 2001:db8::2).
fn veth_pair() -> (NetNs, NetNs) {
    let id = format!("{}-{}", std::process::id(), rand_suffix());
    let host = NetNs::add(format!("ih-{id}-h"));
    let peer = NetNs::add(format!("ih-{id}-p"));
    host.ip(&[
        "link", "add", "ih0", "type", "veth", "peer", "name", "ih1", "netns", &peer.0,
    ]);
    host.ip(&["addr", "add", "192.0.2.1/24", "dev", "ih0"]);
    peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "ih1"]);
    host.ip(&["-6", "addr", "add", "2001:db8::1/64", "dev", "ih0", "nodad"]);
    peer.ip(&["-6", "addr", "add", "2001:db8::2/64", "dev", "ih1", "nodad"]);
    host.ip(&["link", "set", "ih0", "up"]);
    peer.ip(&["link", "set", "ih1", "up"]);
    (host, peer)
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ (t.as_secs() as u32)
}

/// Traffic in both directions, IPv4 and IPv6, between the two namespaces.
fn traffic_flows(host: &NetNs, peer: &NetNs) -> [bool; 4] {
    [
        peer.ping("192.0.2.1"),
        host.ping("192.0.2.2"),
        peer.ping6("2001:db8::1"),
        host.ping6("2001:db8::2"),
    ]
}

/// An integrity event that goes away: the TPM does not answer (not started yet), so
/// `start` is an integrity event that blocks IPv4 and IPv6 both ways; once the TPM
/// answers, the next `start` unlocks, removes the drop table, says so in the journal,
/// and traffic flows again.
#[test]
fn a_later_unlock_lifts_the_block_of_an_earlier_event_ipv4_and_ipv6() {
    let Some((_fs, tpm, mut system)) = system_on_ext4(32) else {
        return;
    };
    system.onboard_with_files_locked();
    let state = tpm.stop().unwrap().expect("own state");
    let (host, peer) = veth_pair();
    // IPv6 with nodad is usable at once; give the link a moment anyway.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while traffic_flows(&host, &peer) != [true; 4] {
        assert!(
            std::time::Instant::now() < deadline,
            "veth pair does not carry pings: {:?}",
            traffic_flows(&host, &peer)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    system.configure("swtpm:host=127.0.0.1,port=2321", true);

    let out = host.start_handler(&system);
    assert_integrity_event(&mut system, &out);
    assert_stderr_contains(&out, "no TPM at");
    assert!(host.has_drop_table());
    assert_eq!(
        traffic_flows(&host, &peer),
        [false; 4],
        "IPv4 and IPv6 blocked both ways"
    );
    system.assert_locked();

    // The TPM answers now (the same one, its state kept).
    let _tpm = host.swtpm(state.path());
    let out = host.start_handler(&system);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = system.journal_records();
    assert!(
        records
            .iter()
            .any(|r| r["MESSAGE"].starts_with("network unblocked") && r["PRIORITY"] == "6"),
        "{records:?}"
    );
    assert!(!host.has_drop_table());
    assert_eq!(traffic_flows(&host, &peer), [true; 4]);
    system.assert_files_read_back();
    // Another start of the unlocked system says nothing about the network.
    let out = host.start_handler(&system);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("network unblocked"));
}

/// A missing, unreadable or invalid configuration on a system whose state directory
/// shows it onboarded is an integrity event (network blocked, emergency record), not
/// a configuration error; on a system that is not onboarded it stays exit 2.
#[test]
fn a_broken_configuration_of_an_onboarded_system_is_an_integrity_event() {
    let Some((_fs, _tpm, mut system)) = system_on_ext4(16) else {
        return;
    };
    system.onboard_with_files_locked();
    let good = fs::read(&system.config).unwrap();
    let ns = NetNs::add(format!("ih-{}-{}-c", std::process::id(), rand_suffix()));
    let start = |system: &System, state: &Path| {
        ns.exec(env!("CARGO_BIN_EXE_integrity-handler"))
            .arg("--config")
            .arg(&system.config)
            .arg("start")
            .env_remove("JOURNAL_STREAM")
            .env("INTEGRITY_HANDLER_STATE_DIR", state)
            .env("INTEGRITY_HANDLER_JOURNAL_SOCKET", &system.journal.path)
            .output()
            .unwrap()
    };
    for (what, broken) in [
        ("invalid", Some(&b"tcti = 7\n"[..])),
        ("not TOML", Some(&b"\xff\xfe garbage"[..])),
        ("missing", None),
    ] {
        match broken {
            Some(text) => fs::write(&system.config, text).unwrap(),
            None => fs::remove_file(&system.config).unwrap(),
        }
        let out = start(&system, &system.state_dir());
        assert_integrity_event(&mut system, &out);
        assert_stderr_contains(&out, "configuration");
        assert!(ns.has_drop_table(), "{what}");
        ns.exec("nft")
            .args(["delete", "table", "inet", "integrity_handler"])
            .status()
            .unwrap();
        // Not onboarded (an empty state directory): a configuration error.
        let empty = tempfile::tempdir().unwrap();
        let out = start(&system, empty.path());
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert!(!ns.has_drop_table());
        system.journal_records();
    }
    fs::write(&system.config, good).unwrap();
    system.ok(&["start"]);
    system.assert_files_read_back();
}

/// Kernel status line `field` (e.g. `VmLck`) of a process, in kB, if it is running.
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Runs `program args` with an unlimited core size in `dir`, waits until it has
/// locked memory (or `settle` has passed), sends SIGQUIT; returns whether a core was
/// dumped (the wait status's core bit, which the kernel sets for a dump to a file or
/// to a core_pattern pipe such as systemd-coredump) and the VmLck it showed. Where
/// core_pattern names a relative file (the kernel default `core`), the file in `dir`
/// must agree with the bit.
fn quit_with_core_limit(dir: &Path, program: &Path, args: &[&str], settle: bool) -> (bool, u64) {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg("ulimit -c unlimited; exec \"$@\"")
        .arg("bash")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut locked = 0;
    loop {
        if let Some(kb) = proc_status_kb(pid, "VmLck").filter(|&kb| kb > 0) {
            locked = kb;
            break;
        }
        if settle || std::time::Instant::now() > deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // It must still be running (mid-onboarding) for the test to mean anything.
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before the signal"
    );
    // SIGQUIT: its default action dumps a core, and Rust's runtime does not catch it
    // (it does catch SIGSEGV, for stack overflows).
    ssr_testkit::run(Command::new("kill").args(["-QUIT", &pid.to_string()])).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(3), "{status:?}");
    let pattern = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let pattern = pattern.trim();
    if !pattern.starts_with(['|', '/']) && !pattern.is_empty() {
        let prefix = pattern.split('%').next().unwrap_or(pattern);
        let cores = fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(prefix)
            })
            .count();
        assert_eq!(
            status.core_dumped(),
            cores > 0,
            "{status:?}, {cores} core files ({pattern})"
        );
    }
    (status.core_dumped(), locked)
}

/// No core dump can carry the FEK: during onboarding the handler has locked its
/// memory (`VmLck` in /proc/<pid>/status) and a SIGQUIT leaves no core, while the
/// same signal under the same limits and core_pattern dumps a core of a plain
/// process (the control that shows the test can fail).
#[test]
fn the_handler_is_not_dumpable_and_locks_its_memory_during_onboarding() {
    let Some((_fs, _tpm, system)) = system_on_ext4(16) else {
        return;
    };
    let control = tempfile::tempdir().unwrap();
    let (dumped, _) = quit_with_core_limit(control.path(), Path::new("sleep"), &["30"], true);
    assert!(
        dumped,
        "control: a plain process must dump a core here (core_pattern {:?}, or dumps disabled?)",
        fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default()
    );

    let dir = tempfile::tempdir().unwrap();
    let config = system.config.to_str().unwrap().to_owned();
    let (dumped, locked) = quit_with_core_limit(
        dir.path(),
        Path::new(env!("CARGO_BIN_EXE_integrity-handler")),
        &["--config", &config, "start"],
        false,
    );
    assert!(locked > 0, "VmLck stayed 0: memory not locked");
    assert!(!dumped, "the handler dumped a core");
}

/// `pcrs = [7]`: the sealing keys are bound to PCR 7. Extending PCR 7 (as a changed
/// Secure Boot state would) makes `start` an integrity event; the TPM rebooted
/// (PCRs back to their boot values) unlocks again.
#[test]
fn pcr_binding_from_the_configuration() {
    let Some((_fs, tpm, mut system)) = system_on_ext4(32) else {
        return;
    };
    system.extra_config = "pcrs = [7]\n".into();
    system.configure(&tpm.tcti(), false);
    system.onboard_with_files_locked();
    let sealed = fs::read(system.sealed_fek()).unwrap();
    assert_eq!(&sealed[44..48], &0x80u32.to_be_bytes(), "PCR 7 in the file");
    tool(
        Some(&tpm),
        "tpm2_pcrextend",
        &[&format!("7:sha256={}", "ab".repeat(32))],
    );
    let out = system.start_is_integrity_event();
    assert_stderr_contains(&out, "PCR policy");
    system.assert_locked();

    let state = tpm.stop().unwrap().expect("own state");
    let rebooted = ssr_testkit::Swtpm::builder()
        .state_dir(state.path())
        .start()
        .unwrap();
    system.configure(&rebooted.tcti(), false);
    system.ok(&["start"]);
    system.assert_files_read_back();
    drop(rebooted);
}

/// On an onboarded system a TPM that does not answer yet is waited for (bounded by
/// `tpm-wait-seconds`): the TPM comes up a second after `start` and it unlocks.
#[test]
fn start_waits_for_a_late_tpm() {
    let Some((_fs, tpm, mut system)) = system_on_ext4(32) else {
        return;
    };
    system.onboard_with_files_locked();
    let state = tpm.stop().unwrap().expect("own state");
    let port = ssr_testkit::free_port_pair().unwrap();
    system.extra_config = "tpm-wait-seconds = 30\n".into();
    system.configure(&format!("swtpm:host=127.0.0.1,port={port}"), false);
    let handler = system.command(&["start"]).output_later();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let _late = Killed(
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.path().display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = handler.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_contains(&out, "waiting up to 30 s");
    assert_stderr_contains(&out, "the TPM answered after");
    system.assert_files_read_back();
    // Without the wait it is an integrity event at once.
    system.extra_config = "tpm-wait-seconds = 0\n".into();
    let absent = absent_tpm_tcti();
    system.configure(&absent, false);
    system.journal_records();
    system.start_is_integrity_event();
}

trait OutputLater {
    fn output_later(self) -> std::thread::JoinHandle<Output>;
}

impl OutputLater for Command {
    /// Runs the command on a thread; join for its output.
    fn output_later(mut self) -> std::thread::JoinHandle<Output> {
        std::thread::spawn(move || self.output().unwrap())
    }
}

/// Persistent handles in the TPM (tpm2_getcap).
fn tpm_persistent(tpm: &Swtpm) -> Vec<String> {
    let out = Command::new("tpm2_getcap")
        .arg("handles-persistent")
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches(['-', ' ']).to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A key at the sealing handle that this code did not create (one with a password,
/// one with an auth policy, placed with tpm2_create + tpm2_evictcontrol): onboarding
/// is refused with a clear error (exit 1) and nothing is touched: no state directory,
/// no protected directory, no other TPM key.
#[test]
fn a_foreign_key_at_the_sealing_handle_refuses_onboarding_and_touches_nothing() {
    if !ssr_testkit::require_root() {
        return;
    }
    let ext4 = LoopExt4::create(16, 4096).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    fs::write(p("policy"), [0x42u8; 32]).unwrap();
    let ours = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|decrypt";
    for (i, extra) in [["-p", "secret"], ["-L", &p("policy")]].iter().enumerate() {
        let tpm = Swtpm::start().unwrap();
        let t = Some(&tpm);
        tool(
            t,
            "tpm2_createprimary",
            &["-Q", "-C", "o", "-c", &p("prim.ctx")],
        );
        tool(t, "tpm2_flushcontext", &["-t"]);
        let (prim, public, private) = (p("prim.ctx"), p("k.pub"), p("k.priv"));
        let mut create = vec![
            "-Q",
            "-C",
            &prim,
            "-G",
            "rsa2048:oaep-sha256:null",
            "-a",
            ours,
            "-u",
            &public,
            "-r",
            &private,
        ];
        create.extend_from_slice(extra);
        tool(t, "tpm2_create", &create);
        tool(t, "tpm2_flushcontext", &["-t"]);
        tool(
            t,
            "tpm2_load",
            &[
                "-Q",
                "-C",
                &p("prim.ctx"),
                "-u",
                &p("k.pub"),
                "-r",
                &p("k.priv"),
                "-c",
                &p("k.ctx"),
            ],
        );
        tool(
            t,
            "tpm2_evictcontrol",
            &["-Q", "-C", "o", "-c", &p("k.ctx"), "0x81000100"],
        );
        tool(t, "tpm2_flushcontext", &["-t"]);
        let before = tpm_persistent(&tpm);
        assert_eq!(before, ["0x81000100"]);

        let system = System::new(&ext4.mount_point().join(format!("sys-{i}")), &tpm.tcti());
        let out = system.run(&["start"]);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        assert_stderr_contains(&out, "is not this system's sealing key");
        assert_stderr_contains(&out, "nothing was changed");
        assert!(!system.state_dir().exists(), "{extra:?}");
        assert!(system.dirs.iter().all(|d| !d.exists()), "{extra:?}");
        assert_eq!(tpm_persistent(&tpm), before, "{extra:?}");
    }
}

/// The capabilities the unit keeps (`CapabilityBoundingSet=` of
/// packaging/systemd/integrity-handler.service), as setpriv's `--bounding-set`.
fn unit_bounding_set() -> String {
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/systemd/integrity-handler.service"),
    )
    .unwrap();
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    let mut set = String::from("-all");
    for cap in caps.split_whitespace() {
        let name = cap.strip_prefix("CAP_").expect("CAP_ names");
        set.push_str(&format!(",+{}", name.to_ascii_lowercase()));
    }
    set
}

/// The handler does its whole job with only the capabilities the unit leaves it:
/// onboarding, lock, unlock (next to the test's swtpm), and an integrity event that
/// loads the drop table (in a network namespace; the missing sealed FEK is found
/// before any TPM is asked). Onboarding, lock and unlock also run as under
/// `ProtectSystem=strict` + `ReadWritePaths=`: in a mount namespace where the file
/// system is read-only but for the system's own directory (the fscrypt key ioctls
/// go to the read-only mount point).
#[test]
fn the_handler_works_with_the_units_capability_bounding_set() {
    let Some((fs, _tpm, mut system)) = system_on_ext4(16) else {
        return;
    };
    let set = unit_bounding_set();
    let ns = NetNs::add(format!("ih-{}-{}-k", std::process::id(), rand_suffix()));
    let config = system.config.clone();
    let limited = |mut cmd: Command, args: &[&str]| {
        cmd.args(["--bounding-set", &set, "--"])
            .arg(env!("CARGO_BIN_EXE_integrity-handler"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap()
    };
    let run = |args: &[&str]| {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$2" && shift 2 && exec setpriv "$@""#)
            .arg("sh")
            .arg(&system.root)
            .arg(fs.mount_point());
        limited(cmd, args)
    };
    let out = run(&["start"]);
    assert!(out.status.success(), "{set}: {}", stderr(&out));
    assert_stderr_contains(&out, "onboarding recorded");
    assert!(
        !stderr(&out).contains("mlockall failed"),
        "{}",
        stderr(&out)
    );
    system.write_files();
    let out = run(&["lock"]);
    assert!(out.status.success(), "{set}: {}", stderr(&out));
    system.assert_locked();
    let out = run(&["start"]);
    assert!(out.status.success(), "{set}: {}", stderr(&out));
    system.assert_files_read_back();
    assert!(run(&["lock"]).status.success());
    // Without CAP_IPC_LOCK and with a small RLIMIT_MEMLOCK the handler must not lock
    // (every later allocation would count against the limit): a warning, and it works.
    let out = Command::new("sh")
        .args([
            "-c",
            "ulimit -l 64 && exec setpriv --bounding-set -ipc_lock -- \"$@\"",
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_integrity-handler"))
        .arg("--config")
        .arg(&config)
        .arg("start")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_contains(
        &out,
        "mlockall failed: CAP_IPC_LOCK is not in the effective set",
    );
    system.assert_files_read_back();
    assert!(run(&["lock"]).status.success());
    system.journal_records();

    let sealed = fs::read(system.sealed_fek()).unwrap();
    fs::remove_file(system.sealed_fek()).unwrap();
    system.configure(&absent_tpm_tcti(), true);
    let out = limited(ns.exec("setpriv"), &["start"]);
    assert_integrity_event(&mut system, &out);
    assert!(
        !stderr(&out).contains("cannot block the network"),
        "{}",
        stderr(&out)
    );
    assert!(ns.has_drop_table(), "{}", stderr(&out));
    fs::write(system.sealed_fek(), sealed).unwrap();
}
