//! `cargo xtask vm-image` and `cargo xtask vm-test`: the router in a virtual machine.
//!
//! `vm-image` builds a Debian 12 guest (debootstrap `minbase` from the mirror apt uses
//! here, the distribution kernel, systemd, nftables, tpm2-tools), installs the release
//! `integrity-handler` and `ssr` and `packaging/` as the root README says, and packs it
//! into an ext4 image made with `-O encrypt`. The image is cached by a content hash of
//! everything that goes into it, in a machine-wide directory (`/var/cache/ssr-security-vm`,
//! or `SSR_VM_CACHE`) and linked under `target/vm/<hash>/`; the debootstrap root file
//! system is cached separately, keyed by the guest package list and the mirror, so a
//! change of the binaries only re-packs the image.
//!
//! `vm-test` boots copy-on-write overlays of that image under KVM, with swtpm as a TPM
//! 2.0 (`tpm-crb`), a virtio NIC on a tap inside a network namespace of its own and a QMP
//! socket for hard resets, and checks Configuration Integrity across real boots. A test
//! driver unit in the guest runs the step named on the kernel command line
//! (`ssrvm.step=`) and prints `SSRVM key value` lines on the second serial port; the
//! first serial port is the console (kernel, systemd, journald broadcasts, a root
//! autologin shell). Plain std, like the rest of xtask.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{Result, apt_install, cargo, is_root, root, step};

/// Host packages `vm-image` and `vm-test` need (installed by them, not by `deps`).
const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-utils",
    "debootstrap",
    "swtpm",
    "swtpm-tools",
    "e2fsprogs",
    "iproute2",
    "iputils-ping",
];

/// The guest's packages on top of debootstrap's `minbase`.
const GUEST_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "linux-image-amd64",
    "initramfs-tools",
    "kmod",
    "nftables",
    "tpm2-tools",
    "libtss2-esys-3.0.2-0",
    "libtss2-tcti-device0",
    "e2fsprogs",
    "iproute2",
    "iputils-ping",
    "procps",
];

const SUITE: &str = "bookworm";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Size of the guest's root file system (sparse).
const IMAGE_SIZE: &str = "2G";
/// The protected directory the checks use (in `packaging/integrity-handler.toml`).
const PROTECTED: &str = "/etc/128technology/secure";
/// The network inside the test's namespace: the tap's address and the guest's.
const TAP_ADDR: &str = "10.77.0.1";
const GUEST_ADDR: &str = "10.77.0.2";

// ---------------------------------------------------------------------------------
// Guest files. They are part of this source file, so the image hash covers them.

const FSTAB: &str = "/dev/vda / ext4 defaults 0 1\n";

const AUTOLOGIN: &str = "[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
";

/// The test driver unit: after boot, runs the step named on the kernel command line.
const DRIVER_UNIT: &str = "[Unit]
Description=ssr-security VM test driver (ssrvm.step= on the kernel command line)
After=multi-user.target
ConditionKernelCommandLine=ssrvm.step

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ssr-vm-check
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// The test driver. Every result line goes to /dev/ttyS1 as `SSRVM key value`.
const DRIVER: &str = r#"#!/bin/bash
# ssr-security VM test driver: runs the step named by ssrvm.step= on the kernel command
# line and reports on /dev/ttyS1 as "SSRVM key value" lines (read by cargo xtask vm-test).
set -u
out=/dev/ttyS1
stty -F "$out" raw -echo 2>/dev/null
m() { printf 'SSRVM %s\n' "$*" > "$out"; }
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^ssrvm\.$1=//p" | head -n1; }
unit=integrity-handler.service
cfg=/etc/integrity-handler.toml
dir=/etc/128technology/secure
file=$dir/probe.txt
ih() { /usr/sbin/integrity-handler --config "$cfg" "$@"; }
prop() { systemctl show -P "$1" "$2"; }

# Waits until the unit has finished starting: active, or failed / waiting to restart.
wait_unit() {
    for _ in $(seq 1 1500); do
        case "$(prop ActiveState $unit)/$(prop SubState $unit)" in
            active/*) break ;;
            failed/* | */auto-restart) break ;;
        esac
        sleep 0.2
    done
    m unit "$(prop ActiveState $unit)/$(prop SubState $unit) result=$(prop Result $unit) restarts=$(prop NRestarts $unit)"
}

report_status() {
    ih status 2>&1 | while IFS= read -r l; do m status "$l"; done
}

report_journal() {
    journalctl -b "$1" -u $unit -o cat --no-pager 2>/dev/null \
        | grep -E 'onboard|resum|unlock|FEK|locked|Integrity event|starts again|unusable' \
        | while IFS= read -r l; do m "journal$1" "$l"; done
}

net_check() {
    ip link set lo up
    for _ in $(seq 1 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
    ip link set eth0 up
    ip addr add "$(arg addr)/24" dev eth0 2>/dev/null
    sleep 1
    if ping -c 3 -i 0.3 -W 1 "$(arg peer)" > /dev/null 2>&1; then m ping_peer ok; else m ping_peer fail; fi
    if ping -c 2 -i 0.3 -W 1 127.0.0.1 > /dev/null 2>&1; then m ping_lo ok; else m ping_lo fail; fi
    if nft list table inet integrity_handler > /dev/null 2>&1; then m nft present; else m nft absent; fi
    m net_ready
    sleep 8
}

bench_one() { # DIR LABEL
    local f=$1/ssrvm-bench.bin t0 t1 t2 t3
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(date +%s%N)
    dd if=/dev/zero of="$f" bs=1M count=256 conv=fsync status=none
    t1=$(date +%s%N)
    echo 3 > /proc/sys/vm/drop_caches
    t2=$(date +%s%N)
    dd if="$f" of=/dev/null bs=1M status=none
    t3=$(date +%s%N)
    rm -f "$f"; sync
    m perf "$2 $((t1 - t0)) $((t3 - t2))"
}

bench() {
    mkdir -p /root/plain
    for _ in 1 2 3; do
        bench_one "$dir" protected
        bench_one /root/plain unprotected
    done
    m aes_cpu "$(grep -m1 -o -w aes /proc/cpuinfo || echo none)"
    m aes_driver "$(awk '/^name/{n=$3} /^driver/{if (n=="xts(aes)") {print $3; exit}}' /proc/crypto)"
    m lsattr_plain "$(lsattr -d /root/plain 2>&1)"
}

step=$(arg step)
m step "$step"
case "$step" in
first)
    wait_unit
    m lsattr "$(lsattr -d $dir 2>&1)"
    report_status
    report_journal 0
    token=$(cat /proc/sys/kernel/random/uuid)
    if echo "$token" > "$file" && sync "$file"; then m wrote "$token"; else m wrote FAILED; fi
    ;;
reboot)
    wait_unit
    report_journal -1
    for u in $unit network-pre.target sysinit.target; do
        m times "$u inactive_exit=$(prop InactiveExitTimestampMonotonic $u) active_enter=$(prop ActiveEnterTimestampMonotonic $u)"
    done
    # The journal's order (systemd-analyze critical-chain waits for the end of boot).
    journalctl -b -o short-monotonic --no-pager \
        | grep -E 'integrity-handler\[[0-9]+\]: .*(unlocking|are unlocked)|Reached target network-pre' \
        | while IFS= read -r l; do m order "$l"; done
    m read "$(cat "$file" 2>&1)"
    report_status
    bench
    ;;
othertpm)
    for _ in $(seq 1 1200); do
        [ "$(prop NRestarts $unit)" -ge 2 ] 2>/dev/null && break
        sleep 0.25
    done
    wait_unit
    journalctl -b -u $unit -p 0 -o short-monotonic --no-pager 2>/dev/null \
        | grep 'Integrity event' | while IFS= read -r l; do m emerg "$l"; done
    report_status
    net_check
    ;;
recover | verify)
    wait_unit
    report_journal 0
    m read "$(cat "$file" 2>&1)"
    report_status
    [ "$step" = recover ] && net_check
    ;;
*)
    exit 0
    ;;
esac
m end
if [ "$(arg end)" = reboot ]; then systemctl reboot; else systemctl poweroff; fi
"#;

// ---------------------------------------------------------------------------------
// Image.

/// A built image: the kernel, its initrd and the raw ext4 root file system.
#[derive(Debug)]
pub struct Image {
    hash: String,
    dir: PathBuf,
}

impl Image {
    fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.raw")
    }
}

/// `cargo xtask vm-image`.
pub fn image_cmd() -> Result {
    let image = image()?;
    println!(
        "vm-image {}: {} (kernel, initrd, rootfs.raw)",
        image.hash,
        image.dir.display()
    );
    Ok(())
}

fn cache_root() -> PathBuf {
    env::var_os("SSR_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ssr-security-vm"))
}

fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => root().join(d),
        None => root().join("target"),
    }
}

fn host_deps() -> Result {
    if !is_root() {
        return Err("vm-image / vm-test need root (debootstrap, KVM, network namespaces)".into());
    }
    apt_install("apt-get install (vm)", HOST_PACKAGES)
}

/// The Debian mirror apt uses here for `SUITE` (`SSR_VM_MIRROR` overrides it).
fn mirror() -> String {
    if let Ok(m) = env::var("SSR_VM_MIRROR") {
        return m;
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        let found = if f.extension().is_some_and(|e| e == "sources") {
            mirror_deb822(&text)
        } else {
            mirror_one_line(&text)
        };
        if let Some(m) = found {
            return m;
        }
    }
    DEFAULT_MIRROR.to_string()
}

fn mirror_one_line(text: &str) -> Option<String> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        // Options in brackets: `[arch=amd64 signed-by=…]`.
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']'))?;
            rest.drain(..=end);
        }
        if let [uri, suite, ..] = rest.as_slice()
            && *suite == SUITE
        {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

fn mirror_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let types = field("Types").unwrap_or_default();
        let suites = field("Suites").unwrap_or_default();
        if types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == SUITE)
            && let Some(uris) = field("URIs")
            && let Some(uri) = uris.split_whitespace().next()
        {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

/// SHA-256 (hex, first 16 digits) of named parts, framed so no two part lists hash alike.
fn sha256_hex(parts: &[(String, Vec<u8>)]) -> std::result::Result<String, String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| "sha256sum: no stdin".to_string())?;
        for (name, data) in parts {
            let write = |stdin: &mut std::process::ChildStdin| -> std::io::Result<()> {
                stdin.write_all(&(name.len() as u64).to_le_bytes())?;
                stdin.write_all(name.as_bytes())?;
                stdin.write_all(&(data.len() as u64).to_le_bytes())?;
                stdin.write_all(data)
            };
            write(&mut stdin).map_err(|e| format!("sha256sum: {e}"))?;
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if !out.status.success() || hex.len() != 64 {
        return Err(format!("sha256sum failed ({})", out.status));
    }
    Ok(hex[..16].to_string())
}

fn read(path: &Path) -> std::result::Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

/// Every file under `dir`, sorted, relative to `dir`.
fn walk(dir: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let rd = fs::read_dir(&abs).map_err(|e| format!("cannot list {}: {e}", abs.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("cannot list {}: {e}", abs.display()))?;
            let r = rel.join(e.file_name());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(r);
            } else {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The debootstrap root file system, cached by package list and mirror.
fn base_rootfs() -> std::result::Result<(String, PathBuf), String> {
    let mirror = mirror();
    let key = sha256_hex(&[
        ("suite".into(), SUITE.into()),
        ("mirror".into(), mirror.clone().into_bytes()),
        ("packages".into(), GUEST_PACKAGES.join(",").into_bytes()),
    ])?;
    let dir = cache_root().join(format!("base-{key}"));
    let rootfs = dir.join("rootfs");
    if dir.join("complete").exists() {
        eprintln!("vm-image: base root file system {key} cached");
        return Ok((key, rootfs));
    }
    let tmp = cache_root().join(format!("base-{key}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    step(
        "debootstrap",
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", GUEST_PACKAGES.join(",")))
            .arg(SUITE)
            .arg(tmp.join("rootfs"))
            .arg(&mirror)
            .stdout(Stdio::null()),
    )?;
    // The downloaded packages are not needed in the guest.
    let archives = tmp.join("rootfs/var/cache/apt/archives");
    for deb in fs::read_dir(&archives).into_iter().flatten().flatten() {
        if deb.path().extension().is_some_and(|e| e == "deb") {
            let _ = fs::remove_file(deb.path());
        }
    }
    write(&tmp.join("complete"), b"", 0o644)?;
    match fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another build finished first: use its copy.
        Err(_) if dir.join("complete").exists() => {
            let _ = fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(format!("cannot rename {}: {e}", tmp.display())),
    }
    Ok((key, rootfs))
}

/// Builds (or finds cached) the image.
pub fn image() -> std::result::Result<Image, String> {
    host_deps()?;
    let (base_key, base) = base_rootfs()?;
    step(
        "build release binaries",
        cargo().args(["build", "--release", "-p", "ssr-bin"]),
    )?;
    let release = target_dir().join("release");
    let packaging = root().join("packaging");
    let mut parts: Vec<(String, Vec<u8>)> = vec![
        ("base".into(), base_key.into_bytes()),
        ("xtask/src/vm.rs".into(), include_str!("vm.rs").into()),
    ];
    for bin in ["integrity-handler", "ssr"] {
        parts.push((format!("bin/{bin}"), read(&release.join(bin))?));
    }
    for rel in walk(&packaging)? {
        parts.push((
            format!("packaging/{}", rel.display()),
            read(&packaging.join(&rel))?,
        ));
    }
    let hash = sha256_hex(&parts)?;
    let cached = cache_root().join(&hash);
    if !cached.join("complete").exists() {
        build_image(&hash, &base, &release, &packaging, &cached)?;
    } else {
        eprintln!("vm-image: image {hash} cached in {}", cached.display());
    }
    // Marks it as recently used for `prune`.
    if let Ok(f) = fs::File::options()
        .write(true)
        .open(cached.join("complete"))
    {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    prune(&cache_root(), &hash, 2);
    // Not while a test in this target directory may still boot an older image.
    let vm_dir = target_dir().join("vm");
    let running = fs::read_dir(&vm_dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("run-")
                .is_some_and(|pid| Path::new("/proc").join(pid).exists())
        });
    if !running {
        prune(&vm_dir, &hash, 0);
    }
    // Linked (or copied) under the target directory too.
    let local = target_dir().join("vm").join(&hash);
    if !local.join("complete").exists() {
        fs::create_dir_all(&local)
            .map_err(|e| format!("cannot create {}: {e}", local.display()))?;
        for f in ["vmlinuz", "initrd.img", "rootfs.raw", "complete"] {
            let (from, to) = (cached.join(f), local.join(f));
            let _ = fs::remove_file(&to);
            if fs::hard_link(&from, &to).is_err() {
                step(
                    "copy image",
                    Command::new("cp")
                        .arg("--sparse=always")
                        .arg(&from)
                        .arg(&to),
                )?;
            }
        }
    }
    Ok(Image { hash, dir: local })
}

/// Removes the images under `dir` (16-hex-digit names) but `current` and the `keep`
/// most recently used others; base root file systems and test runs are left alone. A
/// test running from an image removed from the machine cache is unaffected: `target/vm`
/// holds hard links.
fn prune(dir: &Path, current: &str, keep: usize) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    let mut images: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.len() == 16 && name != current && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|e| {
            let used = fs::metadata(e.path().join("complete"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (used, e.path())
        })
        .collect();
    images.sort_by_key(|(used, _)| std::cmp::Reverse(*used));
    for (_, old) in images.into_iter().skip(keep) {
        let _ = fs::remove_dir_all(old);
    }
}

fn build_image(hash: &str, base: &Path, release: &Path, packaging: &Path, dest: &Path) -> Result {
    let tmp = cache_root().join(format!("{hash}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let r = tmp.join("rootfs");
    step(
        "copy base root file system",
        Command::new("cp").arg("-a").arg(base).arg(&r),
    )?;
    let at = |p: &str| r.join(p.trim_start_matches('/'));

    // The binaries and packaging/, as the root README installs them.
    let install = |from: &Path, to: &str, mode: &str| {
        step(
            &format!("install {to}"),
            Command::new("install")
                .args(["-D", "-m", mode])
                .arg(from)
                .arg(at(to)),
        )
    };
    install(
        &release.join("integrity-handler"),
        "/usr/sbin/integrity-handler",
        "0755",
    )?;
    install(&release.join("ssr"), "/usr/bin/ssr", "0755")?;
    install(
        &packaging.join("integrity-handler.toml"),
        "/etc/integrity-handler.toml",
        "0644",
    )?;
    for rel in walk(&packaging.join("systemd"))? {
        install(
            &packaging.join("systemd").join(&rel),
            &format!("/etc/systemd/system/{}", rel.display()),
            "0644",
        )?;
    }
    install(
        &packaging.join("README.md"),
        "/usr/share/doc/ssr/packaging/README.md",
        "0644",
    )?;
    let toml = fs::read_to_string(packaging.join("integrity-handler.toml"))
        .map_err(|e| format!("packaging/integrity-handler.toml: {e}"))?;
    for needed in ["device:/dev/tpmrm0", PROTECTED] {
        if !toml.contains(needed) {
            return Err(format!(
                "packaging/integrity-handler.toml no longer names {needed}: the VM checks rely on it"
            ));
        }
    }

    // The guest's own configuration and the test driver.
    write(&at("/etc/fstab"), FSTAB.as_bytes(), 0o644)?;
    write(&at("/etc/hostname"), b"ssr-vm\n", 0o644)?;
    write(
        &at("/etc/hosts"),
        b"127.0.0.1 localhost\n127.0.1.1 ssr-vm\n",
        0o644,
    )?;
    // A fixed machine id, so `journalctl -b -1` finds the previous boot's journal.
    write(
        &at("/etc/machine-id"),
        format!("{hash}{hash}\n").as_bytes(),
        0o444,
    )?;
    fs::create_dir_all(at("/var/log/journal")).map_err(|e| format!("journal dir: {e}"))?;
    write(
        &at("/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"),
        AUTOLOGIN.as_bytes(),
        0o644,
    )?;
    write(
        &at("/etc/systemd/system/ssr-vm-check.service"),
        DRIVER_UNIT.as_bytes(),
        0o644,
    )?;
    write(
        &at("/usr/local/sbin/ssr-vm-check"),
        DRIVER.as_bytes(),
        0o755,
    )?;
    step(
        "systemctl enable",
        Command::new("systemctl")
            .arg(format!("--root={}", r.display()))
            .args([
                "enable",
                "integrity-handler.service",
                "ssr-vm-check.service",
            ]),
    )?;

    // Kernel and initrd, out of the guest's /boot.
    let boot = at("/boot");
    let pick = |prefix: &str| -> std::result::Result<PathBuf, String> {
        let mut found: Vec<PathBuf> = fs::read_dir(&boot)
            .map_err(|e| format!("cannot list {}: {e}", boot.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .collect();
        found.sort();
        found
            .pop()
            .ok_or_else(|| format!("no {prefix}* in the guest's /boot"))
    };
    let (kernel, initrd) = (pick("vmlinuz-")?, pick("initrd.img-")?);
    fs::copy(&kernel, tmp.join("vmlinuz")).map_err(|e| format!("copy kernel: {e}"))?;
    fs::copy(&initrd, tmp.join("initrd.img")).map_err(|e| format!("copy initrd: {e}"))?;

    step(
        "mkfs.ext4 -O encrypt",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "encrypt", "-L", "ssr-root", "-d"])
            .arg(&r)
            .arg(tmp.join("rootfs.raw"))
            .arg(IMAGE_SIZE),
    )?;
    fs::remove_dir_all(&r).map_err(|e| format!("cannot remove {}: {e}", r.display()))?;
    write(&tmp.join("complete"), b"", 0o644)?;
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))
}

// ---------------------------------------------------------------------------------
// Test.

/// A child process, killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command quietly; a failure is an error with its stderr.
fn quiet(cmd: &mut Command) -> Result {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The test's own network namespace, holding the guest's tap; deleted on drop.
#[derive(Debug)]
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> std::result::Result<Self, String> {
        let name = format!("ssrvm-{}", std::process::id());
        // A namespace left by an earlier process with the same id.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        quiet(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"])?;
        ns.ip(&["addr", "add", &format!("{TAP_ADDR}/24"), "dev", "tap0"])?;
        ns.ip(&["link", "set", "tap0", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result {
        quiet(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Pings the guest from inside the namespace.
    fn ping_guest(&self) -> bool {
        self.exec("ping")
            .args(["-c", "3", "-i", "0.3", "-W", "1", GUEST_ADDR])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One boot to run.
#[derive(Debug)]
struct BootSpec<'a> {
    /// The driver's step (`ssrvm.step=`); `none` runs nothing.
    step: &'a str,
    /// The qcow2 overlay.
    disk: &'a Path,
    /// swtpm's state directory.
    tpm: &'a Path,
    /// The driver ends with `systemctl reboot` instead of `poweroff`.
    reboot: bool,
    /// QMP `system_reset` this long after the console shows the unit starting.
    reset_after_start: Option<Duration>,
    timeout: Duration,
}

/// What one boot showed.
#[derive(Debug, Default)]
struct Boot {
    /// `SSRVM key value` lines from the driver.
    markers: Vec<(String, String)>,
    /// Console lines with the second they appeared (since qemu started).
    console: Vec<(f64, String)>,
    /// When the console showed the unit starting, and finished.
    started: Option<f64>,
    finished: Option<f64>,
    reset_at: Option<f64>,
    /// The namespace's ping of the guest, done when the driver said `net_ready`.
    host_ping: Option<bool>,
    seconds: f64,
}

impl Boot {
    fn get(&self, key: &str) -> Option<&str> {
        self.markers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<&str> {
        self.markers
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn console_times(&self, needle: &str) -> Vec<f64> {
        self.console
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
            .collect()
    }
    fn tail(&self, n: usize) -> String {
        let skip = self.console.len().saturating_sub(n);
        let mut s = String::new();
        for (_, l) in &self.console[skip..] {
            let _ = writeln!(s, "    | {l}");
        }
        s
    }
    fn unlocked(&self) -> bool {
        self.all("status")
            .iter()
            .any(|l| *l == format!("directory {PROTECTED}: unlocked"))
    }
    fn unit_active(&self) -> bool {
        self.get("unit").is_some_and(|u| u.starts_with("active/"))
    }
}

/// Drops terminal escape sequences and carriage returns from a console line.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Reads what was appended to `path` since `offset`, returning complete lines.
fn new_lines(path: &Path, offset: &mut u64, partial: &mut Vec<u8>) -> Vec<String> {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = fs::File::open(path) else {
        return Vec::new();
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(*offset)).is_err() || f.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    *offset += buf.len() as u64;
    partial.extend_from_slice(&buf);
    let mut lines = Vec::new();
    while let Some(i) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=i).collect();
        lines.push(plain(String::from_utf8_lossy(&line[..i]).as_ref()));
    }
    lines
}

/// QMP `system_reset`: with `-no-reboot`, qemu then exits, as at a power loss.
fn qmp_reset(sock: &Path) -> Result {
    let stream = UnixStream::connect(sock).map_err(|e| format!("QMP {}: {e}", sock.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("QMP: {e}"))?;
    let mut writer = stream.try_clone().map_err(|e| format!("QMP: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut expect = |reader: &mut BufReader<UnixStream>, what: &str| -> Result {
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| format!("QMP: waiting for {what}: {e}"))?;
            if n == 0 {
                // qemu went away: the reset already stopped it.
                return Ok(());
            }
            if line.contains(what) {
                return Ok(());
            }
            if line.contains("\"error\"") {
                return Err(format!("QMP: {}", line.trim()));
            }
        }
    };
    expect(&mut reader, "QMP")?;
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .map_err(|e| format!("QMP: {e}"))?;
    expect(&mut reader, "return")?;
    writer
        .write_all(b"{\"execute\":\"system_reset\"}\n")
        .map_err(|e| format!("QMP: {e}"))?;
    // The answer may not come: qemu exits at once.
    let _ = expect(&mut reader, "return");
    Ok(())
}

/// The test run: the image, a work directory, the network namespace.
#[derive(Debug)]
struct Vm {
    image: Image,
    accel: Accel,
    work: PathBuf,
    ns: Netns,
    boots: std::cell::Cell<u32>,
}

impl Vm {
    fn overlay(&self, name: &str) -> std::result::Result<PathBuf, String> {
        let disk = self.work.join(format!("{name}.qcow2"));
        quiet(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(self.image.rootfs())
                .arg(&disk),
        )?;
        Ok(disk)
    }

    fn boot(&self, spec: &BootSpec<'_>) -> std::result::Result<Boot, String> {
        let n = self.boots.get() + 1;
        self.boots.set(n);
        let d = self.work.join(format!("boot-{n:02}-{}", spec.step));
        fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        fs::create_dir_all(spec.tpm)
            .map_err(|e| format!("cannot create {}: {e}", spec.tpm.display()))?;
        let log = |name: &str| {
            fs::File::create(d.join(name)).map_err(|e| format!("cannot create {name}: {e}"))
        };

        let sock = d.join("swtpm.sock");
        let _swtpm = Guard(
            Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", spec.tpm.display()))
                .arg("--ctrl")
                .arg(format!("type=unixio,path={}", sock.display()))
                .stdout(log("swtpm.log")?)
                .stderr(log("swtpm.err")?)
                .spawn()
                .map_err(|e| format!("cannot run swtpm: {e}"))?,
        );
        let t = Instant::now();
        while !sock.exists() {
            if t.elapsed() > Duration::from_secs(10) {
                return Err("swtpm did not create its socket within 10 s".into());
            }
            sleep(Duration::from_millis(20));
        }

        let console = d.join("console.log");
        let markers = d.join("markers.log");
        let qmp = d.join("qmp.sock");
        let append = format!(
            "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 systemd.status_unit_format=name ssrvm.step={} ssrvm.addr={GUEST_ADDR} ssrvm.peer={TAP_ADDR} ssrvm.end={}",
            spec.step,
            if spec.reboot { "reboot" } else { "poweroff" }
        );
        let mut qemu = Guard(
            self.ns
                .exec("qemu-system-x86_64")
                .args(self.accel.qemu_args())
                .args(["-m", "1024", "-smp", "2"])
                .args(["-display", "none", "-vga", "none", "-monitor", "none"])
                .arg("-no-reboot")
                .arg("-serial")
                .arg(format!("file:{}", console.display()))
                .arg("-serial")
                .arg(format!("file:{}", markers.display()))
                .arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", qmp.display()))
                .arg("-kernel")
                .arg(self.image.kernel())
                .arg("-initrd")
                .arg(self.image.initrd())
                .arg("-append")
                .arg(&append)
                .arg("-drive")
                .arg(format!(
                    "file={},if=virtio,format=qcow2",
                    spec.disk.display()
                ))
                .arg("-chardev")
                .arg(format!("socket,id=chrtpm,path={}", sock.display()))
                .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
                .args(["-device", "tpm-crb,tpmdev=tpm0"])
                .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
                .args(["-device", "virtio-net-pci,netdev=n0"])
                .stdout(log("qemu.log")?)
                .stderr(log("qemu.err")?)
                .spawn()
                .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?,
        );

        let start = Instant::now();
        let mut b = Boot::default();
        let (mut con_off, mut con_part, mut mk_off, mut mk_part) = (0, Vec::new(), 0, Vec::new());
        let status = loop {
            let now = start.elapsed().as_secs_f64();
            for l in new_lines(&console, &mut con_off, &mut con_part) {
                if l.contains("integrity-handler.service") && !l.contains("integrity-handler[") {
                    if l.contains("Starting") && b.started.is_none() {
                        b.started = Some(now);
                    }
                    if l.contains("Finished") && b.finished.is_none() {
                        b.finished = Some(now);
                    }
                }
                b.console.push((now, l));
            }
            for l in new_lines(&markers, &mut mk_off, &mut mk_part) {
                let Some(rest) = l.strip_prefix("SSRVM ") else {
                    continue;
                };
                let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                if k == "net_ready" && b.host_ping.is_none() {
                    b.host_ping = Some(self.ns.ping_guest());
                }
                b.markers.push((k.to_string(), v.to_string()));
            }
            if let Ok(Some(status)) = qemu.0.try_wait() {
                break status;
            }
            if let (Some(after), Some(s), None) = (spec.reset_after_start, b.started, b.reset_at)
                && now - s >= after.as_secs_f64()
            {
                qmp_reset(&qmp)?;
                b.reset_at = Some(now);
            }
            if start.elapsed() > spec.timeout {
                let _ = qemu.0.kill();
                let _ = new_lines(&console, &mut con_off, &mut con_part)
                    .into_iter()
                    .map(|l| b.console.push((now, l)))
                    .count();
                return Err(format!(
                    "boot {n} ({}): killed after {} s without an end; last 50 console lines:\n{}",
                    spec.step,
                    spec.timeout.as_secs(),
                    b.tail(50)
                ));
            }
            sleep(Duration::from_millis(20));
        };
        b.seconds = start.elapsed().as_secs_f64();
        let now = b.seconds;
        for l in new_lines(&console, &mut con_off, &mut con_part) {
            b.console.push((now, l));
        }
        for l in new_lines(&markers, &mut mk_off, &mut mk_part) {
            if let Some(rest) = l.strip_prefix("SSRVM ") {
                let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                b.markers.push((k.to_string(), v.to_string()));
            }
        }
        if !status.success() {
            let err = fs::read_to_string(d.join("qemu.err")).unwrap_or_default();
            return Err(format!(
                "boot {n} ({}): qemu {status}: {}\n{}",
                spec.step,
                err.trim(),
                b.tail(50)
            ));
        }
        if spec.reset_after_start.is_none() && spec.step != "none" && b.get("end").is_none() {
            return Err(format!(
                "boot {n} ({}): the guest stopped before the test driver finished; last 50 console lines:\n{}",
                spec.step,
                b.tail(50)
            ));
        }
        eprintln!("vm-test: boot {n} ({}) took {:.1} s", spec.step, b.seconds);
        Ok(b)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if env::var_os("SSR_VM_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.work);
        }
    }
}

/// How qemu runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accel {
    /// Hardware virtualisation (`-enable-kvm -cpu host`): the guest has the host's AES-NI.
    Kvm,
    /// Emulation (`SSR_VM_ACCEL=tcg`): about ten times slower; AES-NI emulated.
    Tcg,
}

impl Accel {
    fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-enable-kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }

    /// A boot's time limit.
    fn timeout(self, kvm_seconds: u64) -> Duration {
        Duration::from_secs(match self {
            Accel::Kvm => kvm_seconds,
            Accel::Tcg => kvm_seconds * 4,
        })
    }
}

/// Hardware KVM, or why not. `/dev/kvm` also exists where it is PVM (`kvm_pvm`, a
/// shadow-paging hypervisor for nested sandboxes), under which a stock Debian kernel
/// spends minutes in its decompressor: that is not usable KVM.
fn is_pvm() -> bool {
    Path::new("/dev/kvm").exists() && Path::new("/sys/module/kvm_pvm").exists()
}

fn kvm() -> std::result::Result<(), String> {
    if !Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm does not exist: this machine cannot run KVM guests".into());
    }
    let module = |m: &str| Path::new("/sys/module").join(m).exists();
    if module("kvm_intel") || module("kvm_amd") {
        Ok(())
    } else if module("kvm_pvm") {
        Err("/dev/kvm is PVM (module kvm_pvm, no hardware virtualisation): a stock Debian kernel does not boot under it in reasonable time; SSR_VM_ACCEL=tcg runs the test under emulation (about a minute a boot)".into())
    } else {
        Err("/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded".into())
    }
}

/// The accelerator: KVM when usable; emulation when asked for (`SSR_VM_ACCEL=tcg`) or
/// when `/dev/kvm` is PVM (a hypervisor without hardware virtualisation, under which a
/// stock kernel does not boot), said in one line. No `/dev/kvm` at all is an error.
fn accel() -> std::result::Result<Accel, String> {
    match env::var("SSR_VM_ACCEL").as_deref() {
        Ok("tcg") => Ok(Accel::Tcg),
        Ok("kvm") => kvm()
            .map(|()| Accel::Kvm)
            .map_err(|e| format!("vm-test: {e}")),
        Err(_) => match kvm() {
            Ok(()) => Ok(Accel::Kvm),
            Err(why) if is_pvm() => {
                eprintln!("==> vm-test: {why}; running under emulation (TCG)");
                Ok(Accel::Tcg)
            }
            Err(why) => Err(format!("vm-test: {why}")),
        },
        Ok(other) => Err(format!(
            "vm-test: SSR_VM_ACCEL={other}: expected kvm or tcg"
        )),
    }
}

/// The `ci` step: `vm-test` where KVM is usable; elsewhere one line saying why not.
/// `Ok(false)`: skipped.
pub fn ci() -> std::result::Result<bool, String> {
    match kvm() {
        Ok(()) => test().map(|()| true),
        Err(why) => {
            eprintln!("==> vm-test skipped: {why}");
            Ok(false)
        }
    }
}

/// A check's figures, or why it failed.
type Check = std::result::Result<Vec<String>, String>;

fn require(ok: bool, what: impl FnOnce() -> String) -> Result {
    if ok { Ok(()) } else { Err(what()) }
}

/// `cargo xtask vm-test`.
pub fn test() -> Result {
    let accel = accel()?;
    let start = Instant::now();
    let image = image()?;
    let work = target_dir()
        .join("vm")
        .join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let vm = Vm {
        image,
        accel,
        ns: Netns::new()?,
        work,
        boots: std::cell::Cell::new(0),
    };
    eprintln!(
        "vm-test: image {}, {:?}, work directory {}, network namespace {}",
        vm.image.hash,
        vm.accel,
        vm.work.display(),
        vm.ns.name
    );

    let mut results: BTreeMap<u32, (&str, Check)> = BTreeMap::new();
    let main = main_sequence(&vm);
    let onboarding = main.onboarding;
    for (n, name, check) in main.checks {
        results.insert(n, (name, check));
    }
    results.insert(
        3,
        ("power loss during onboarding", power_loss(&vm, onboarding)),
    );

    let mut failed = Vec::new();
    for (n, (name, check)) in &results {
        match check {
            Ok(figures) => {
                println!("vm-test check {n} ({name}): PASS");
                for f in figures {
                    println!("    {f}");
                }
            }
            Err(e) => {
                println!("vm-test check {n} ({name}): FAIL");
                for l in e.lines() {
                    println!("    {l}");
                }
                failed.push(n.to_string());
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if failed.is_empty() {
        println!(
            "vm-test: all {} checks passed in {secs:.0} s",
            results.len()
        );
        Ok(())
    } else {
        Err(format!(
            "vm-test: check(s) {} failed ({secs:.0} s)",
            failed.join(", ")
        ))
    }
}

struct MainSequence {
    checks: Vec<(u32, &'static str, Check)>,
    /// How long onboarding took on the first boot (console, seconds).
    onboarding: Option<f64>,
}

/// Checks 1, 2, 5 and 4 on one disk: first boot, clean reboot (with the speed
/// measurement), another TPM, the right TPM again.
fn main_sequence(vm: &Vm) -> MainSequence {
    let mut checks = Vec::new();
    let mut onboarding = None;
    let result = (|| -> std::result::Result<(), String> {
        let disk = vm.overlay("main")?;
        let tpm = vm.work.join("tpm-main");
        let other_tpm = vm.work.join("tpm-other");
        let spec = |step, tpm, reboot, secs| BootSpec {
            step,
            disk: &disk,
            tpm,
            reboot,
            reset_after_start: None,
            timeout: vm.accel.timeout(secs),
        };

        let b1 = vm.boot(&spec("first", &tpm, true, 180));
        let c1 = b1.as_ref().map_err(Clone::clone).and_then(check_first);
        if let Ok(b) = &b1 {
            onboarding = b.started.zip(b.finished).map(|(s, f)| f - s);
        }
        let ok1 = c1.is_ok();
        checks.push((1, "first boot: onboarding", c1));
        let b1 = b1?;
        if !ok1 {
            return Err("check 1 failed: checks 2, 4 and 5 need its disk".into());
        }
        let token = b1.get("wrote").unwrap_or_default().to_string();

        let b2 = vm.boot(&spec("reboot", &tpm, false, 240))?;
        checks.push((
            2,
            "clean reboot: lock, unlock before network-pre",
            check_reboot(&b2, &token),
        ));
        checks.push((5, "encryption at rest: speed", check_speed(&b2)));

        let bo = vm.boot(&spec("othertpm", &other_tpm, false, 300));
        let br = bo
            .as_ref()
            .ok()
            .map(|_| vm.boot(&spec("recover", &tpm, false, 180)));
        let c4 = match (bo, br) {
            (Ok(bo), Some(Ok(br))) => check_other_tpm(&bo, &br, &token),
            (Err(e), _) | (_, Some(Err(e))) => Err(e),
            (Ok(_), None) => Err("no recovery boot".into()),
        };
        checks.push((
            4,
            "another TPM: integrity event, network blocked, recovery",
            c4,
        ));
        Ok(())
    })();
    if let Err(e) = result {
        for (n, name) in [
            (1, "first boot: onboarding"),
            (2, "clean reboot: lock, unlock before network-pre"),
            (5, "encryption at rest: speed"),
            (4, "another TPM: integrity event, network blocked, recovery"),
        ] {
            if !checks.iter().any(|(m, _, _)| *m == n) {
                checks.push((n, name, Err(e.clone())));
            }
        }
    }
    MainSequence { checks, onboarding }
}

fn check_first(b: &Boot) -> Check {
    let mut f = Vec::new();
    require(b.unit_active(), || {
        format!(
            "integrity-handler not active: {:?}\n{}",
            b.get("unit"),
            b.tail(50)
        )
    })?;
    let lsattr = b.get("lsattr").unwrap_or_default();
    require(
        lsattr
            .split_whitespace()
            .next()
            .is_some_and(|a| a.contains('E')),
        || format!("{PROTECTED} not encrypted: lsattr says {lsattr:?}"),
    )?;
    require(b.unlocked(), || format!("status: {:?}", b.all("status")))?;
    let journal = b.all("journal0");
    require(
        journal.iter().any(|l| l.contains("onboarding recorded")),
        || format!("no onboarding in the journal: {journal:?}"),
    )?;
    let wrote = b.get("wrote").unwrap_or("FAILED");
    require(wrote != "FAILED", || "writing the probe file failed".into())?;
    if let (Some(s), Some(e)) = (b.started, b.finished) {
        f.push(format!(
            "unit started {s:.1} s after power-on, onboarding took {:.2} s (console: Starting -> Finished)",
            e - s
        ));
    }
    f.push(format!("lsattr -d: {lsattr}"));
    f.push(format!("status: {}", b.all("status").join("; ")));
    for l in journal {
        f.push(format!("journal: {l}"));
    }
    f.push(format!("wrote {PROTECTED}/probe.txt ({wrote})"));
    Ok(f)
}

/// Microseconds of a `times` marker field, for a unit.
fn unit_time(b: &Boot, unit: &str, field: &str) -> Option<u64> {
    b.all("times").into_iter().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(unit)).then_some(())?;
        w.find_map(|kv| {
            kv.strip_prefix(&format!("{field}="))
                .and_then(|v| v.parse().ok())
        })
    })
}

fn check_reboot(b2: &Boot, token: &str) -> Check {
    let mut f = Vec::new();
    require(b2.unit_active(), || {
        format!(
            "integrity-handler not active: {:?}\n{}",
            b2.get("unit"),
            b2.tail(50)
        )
    })?;
    let prev = b2.all("journal-1");
    require(
        prev.iter()
            .any(|l| l.contains("removed from the kernel: locked")),
        || format!("no lock at shutdown in the previous boot's journal: {prev:?}"),
    )?;
    let unit = "integrity-handler.service";
    let (exit, active, pre) = (
        unit_time(b2, unit, "inactive_exit"),
        unit_time(b2, unit, "active_enter"),
        unit_time(b2, "network-pre.target", "active_enter"),
    );
    let (Some(exit), Some(active), Some(pre)) = (exit, active, pre) else {
        return Err(format!("unit times missing: {:?}", b2.all("times")));
    };
    require(active > 0 && pre > 0 && active <= pre, || {
        format!("unit active at {active} us, network-pre.target at {pre} us: wrong order")
    })?;
    let read = b2.get("read").unwrap_or_default();
    require(read == token, || {
        format!("file read back {read:?}, written {token:?}")
    })?;
    require(b2.unlocked(), || format!("status: {:?}", b2.all("status")))?;
    for l in prev
        .iter()
        .filter(|l| l.contains("removed from the kernel") || l.contains("already locked"))
    {
        f.push(format!("shutdown of boot 1: {l}"));
    }
    f.push(format!(
        "unit start time {:.0} ms (started {:.3} s after kernel start, active at {:.3} s; network-pre.target reached at {:.3} s)",
        active.saturating_sub(exit) as f64 / 1000.0,
        exit as f64 / 1e6,
        active as f64 / 1e6,
        pre as f64 / 1e6
    ));
    let order = b2.all("order");
    let unlocked = order.iter().position(|l| l.contains("are unlocked"));
    let reached = order.iter().position(|l| l.contains("network-pre"));
    require(
        matches!((unlocked, reached), (Some(u), Some(r)) if u < r),
        || format!("journal order: {order:?}"),
    )?;
    for l in order {
        f.push(format!("journal: {l}"));
    }
    f.push(format!("file read back after the reboot: {read}"));
    Ok(f)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn check_speed(b: &Boot) -> Check {
    let mb = 256.0 * 1_048_576.0 / 1e6;
    let mut speeds: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for l in b.all("perf") {
        let w: Vec<&str> = l.split_whitespace().collect();
        if let [label, wns, rns] = w.as_slice()
            && let (Ok(wns), Ok(rns)) = (wns.parse::<f64>(), rns.parse::<f64>())
        {
            let e = speeds.entry(label).or_default();
            e.0.push(mb / (wns / 1e9));
            e.1.push(mb / (rns / 1e9));
        }
    }
    let (Some(p), Some(u)) = (speeds.get("protected"), speeds.get("unprotected")) else {
        return Err(format!("no measurements: {:?}", b.all("perf")));
    };
    let (pw, pr, uw, ur) = (
        median(p.0.clone()),
        median(p.1.clone()),
        median(u.0.clone()),
        median(u.1.clone()),
    );
    let aes = b.get("aes_cpu").unwrap_or_default();
    let driver = b.get("aes_driver").unwrap_or_default();
    require(aes == "aes", || "the guest CPU has no AES-NI".into())?;
    Ok(vec![
        format!("guest CPU flag: {aes}; fscrypt's xts(aes) driver: {driver}"),
        format!(
            "256 MiB sequential, page cache dropped, write with fsync (median of {}):",
            p.0.len()
        ),
        format!(
            "  write: protected {pw:.0} MB/s, unprotected {uw:.0} MB/s, ratio {:.2}",
            pw / uw
        ),
        format!(
            "  read:  protected {pr:.0} MB/s, unprotected {ur:.0} MB/s, ratio {:.2}",
            pr / ur
        ),
    ])
}

/// The monotonic second of a `journalctl -o short-monotonic` line: `[   12.345678] …`.
fn mono_seconds(line: &str) -> Option<f64> {
    let inner = line.strip_prefix('[')?.split(']').next()?;
    inner.trim().parse().ok()
}

fn check_other_tpm(bo: &Boot, br: &Boot, token: &str) -> Check {
    let mut f = Vec::new();
    let line = "Integrity event detected. A clean installation is required.";
    let on_console = bo.console_times(line);
    let broadcasts = bo.console_times("Broadcast message from systemd-journald");
    require(!broadcasts.is_empty(), || {
        format!("no journald broadcast on the console\n{}", bo.tail(50))
    })?;
    let emerg: Vec<f64> = bo
        .all("emerg")
        .iter()
        .filter_map(|l| mono_seconds(l))
        .collect();
    require(emerg.len() >= 3, || {
        format!(
            "fewer than 3 integrity events in the journal: {:?}",
            bo.all("emerg")
        )
    })?;
    let gaps: Vec<f64> = emerg.windows(2).map(|w| w[1] - w[0]).collect();
    require(gaps.iter().all(|g| (29.0..40.0).contains(g)), || {
        format!("restart intervals {gaps:?} s, expected 30 s")
    })?;
    require(bo.get("ping_peer") == Some("fail"), || {
        format!("the guest reached its peer: {:?}", bo.get("ping_peer"))
    })?;
    require(bo.get("ping_lo") == Some("ok"), || {
        "loopback in the guest failed".into()
    })?;
    require(bo.get("nft") == Some("present"), || {
        "no nftables table".into()
    })?;
    require(bo.host_ping == Some(false), || {
        format!("the namespace reached the guest: {:?}", bo.host_ping)
    })?;
    f.push(format!(
        "fresh swtpm state: emergency line on the console {} times, {} journald broadcasts (first at +{:.1} s)",
        on_console.len(),
        broadcasts.len(),
        broadcasts[0]
    ));
    f.push(format!(
        "integrity events in the journal at {} s: restart intervals {} s",
        emerg
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        gaps.iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    f.push(format!(
        "nftables table inet integrity_handler present; guest -> {TAP_ADDR}: fail, guest -> 127.0.0.1: ok, namespace -> guest: fail"
    ));
    require(br.unit_active() && br.unlocked(), || {
        format!(
            "back on the right TPM: {:?} {:?}\n{}",
            br.get("unit"),
            br.all("status"),
            br.tail(50)
        )
    })?;
    let read = br.get("read").unwrap_or_default();
    require(read == token, || {
        format!("file read back {read:?}, written {token:?}")
    })?;
    require(
        br.get("ping_peer") == Some("ok")
            && br.get("ping_lo") == Some("ok")
            && br.host_ping == Some(true),
        || {
            format!(
                "network after recovery: guest -> peer {:?}, loopback {:?}, namespace -> guest {:?}",
                br.get("ping_peer"),
                br.get("ping_lo"),
                br.host_ping
            )
        },
    )?;
    require(br.get("nft") == Some("absent"), || {
        "nftables table still loaded".into()
    })?;
    f.push(format!(
        "right TPM again: unlocked, file read back, guest -> {TAP_ADDR}: ok, loopback: ok, namespace -> guest: ok"
    ));
    Ok(f)
}

/// Check 3: hard resets at several moments of a first onboarding, each on a fresh disk
/// and a fresh TPM; the next boot must onboard or unlock, and a file written then must
/// survive a clean reboot.
fn power_loss(vm: &Vm, onboarding: Option<f64>) -> Check {
    let d = onboarding.unwrap_or(1.0).max(0.2);
    let mut f = vec![format!(
        "onboarding took {d:.2} s on the first boot; resets at fractions of it"
    )];
    // Three boots per moment: fewer moments under emulation, where a boot takes a minute.
    // The first boot's onboarding also waits for what a first boot does beside it; on
    // a fresh disk and TPM later it takes about half as long (seen: 8.8 s first, under
    // 4.4 s after), so the moments sit in the first half to land mid-onboarding.
    let fractions: &[f64] = match vm.accel {
        Accel::Kvm => &[0.04, 0.12, 0.22, 0.35],
        Accel::Tcg => &[0.05, 0.17, 0.32],
    };
    for (i, &frac) in fractions.iter().enumerate() {
        let after = Duration::from_secs_f64(d * frac);
        let disk = vm.overlay(&format!("power-{i}"))?;
        let tpm = vm.work.join(format!("tpm-power-{i}"));
        let spec = |step, reboot, reset_after_start| BootSpec {
            step,
            disk: &disk,
            tpm: &tpm,
            reboot,
            reset_after_start,
            timeout: vm.accel.timeout(180),
        };
        let a = vm.boot(&spec("none", false, Some(after)))?;
        let moment = match (a.reset_at, a.started, a.finished) {
            (Some(r), Some(s), Some(e)) if e <= r => {
                format!("+{:.2} s after the unit started (it had finished)", r - s)
            }
            (Some(r), Some(s), _) => {
                format!("+{:.2} s after the unit started (mid-onboarding)", r - s)
            }
            _ => return Err(format!("moment {i}: no reset happened\n{}", a.tail(50))),
        };
        let b = vm.boot(&spec("first", true, None))?;
        require(b.unit_active() && b.unlocked(), || {
            format!(
                "reset {moment}: next boot {:?} {:?} {:?}\n{}",
                b.get("unit"),
                b.all("status"),
                b.all("journal0"),
                b.tail(50)
            )
        })?;
        let journal = b.all("journal0");
        let outcome = if journal.iter().any(|l| l.contains("resuming")) {
            "resumed the interrupted onboarding"
        } else if journal.iter().any(|l| l.contains("unusable")) {
            "set the unusable sealed FEK aside and onboarded again"
        } else if journal.iter().any(|l| l.contains("onboarding recorded")) {
            "onboarded"
        } else {
            "unlocked"
        };
        let token = b.get("wrote").unwrap_or("FAILED");
        let c = vm.boot(&spec("verify", false, None))?;
        let read = c.get("read").unwrap_or_default();
        require(c.unit_active() && c.unlocked() && read == token, || {
            format!(
                "reset {moment}: after a clean reboot {:?} {:?}, read {read:?}, written {token:?}",
                c.get("unit"),
                c.all("status")
            )
        })?;
        f.push(format!(
            "reset {moment}: next boot {outcome}; file written, read back after a clean reboot"
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_one_line_sources() {
        let text = "# comment\ndeb-src http://x/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://security.debian.org/debian-security bookworm-security main\n\
                    deb [ arch=amd64 ] http://mirror.example/debian/ bookworm main contrib\n";
        assert_eq!(
            mirror_one_line(text).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_one_line("deb http://x/debian trixie main\n"), None);
    }

    #[test]
    fn mirror_from_deb822_sources() {
        let text = "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n\
                    Types: deb-src deb\nURIs: http://deb.example/debian/ http://other/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_deb822(text).as_deref(),
            Some("http://deb.example/debian")
        );
        assert_eq!(
            mirror_deb822("Types: deb-src\nURIs: http://x\nSuites: bookworm\n"),
            None
        );
    }

    #[test]
    fn console_lines_lose_escapes_and_journal_times_parse() {
        assert_eq!(
            plain("[\u{1b}[0;32m  OK  \u{1b}[0m] Finished \u{1b}[0;1;39mx.service\u{1b}[0m.\r"),
            "[  OK  ] Finished x.service."
        );
        assert_eq!(
            mono_seconds("[   39.868431] ssr-vm integrity-handler[212]: line"),
            Some(39.868431)
        );
        assert_eq!(mono_seconds("no time"), None);
    }

    fn boot_with(markers: &[(&str, &str)], console: &[&str]) -> Boot {
        Boot {
            markers: markers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            console: console.iter().map(|l| (1.0, l.to_string())).collect(),
            ..Boot::default()
        }
    }

    #[test]
    fn another_tpm_check_fails_when_the_network_stays_open() {
        let event =
            "integrity-handler: Integrity event detected. A clean installation is required.";
        let other = |peer: &str, host_ping| {
            let mut b = boot_with(
                &[
                    (
                        "emerg",
                        &format!("[   10.0] h integrity-handler[1]: {event}"),
                    ),
                    (
                        "emerg",
                        &format!("[   40.5] h integrity-handler[2]: {event}"),
                    ),
                    (
                        "emerg",
                        &format!("[   71.0] h integrity-handler[3]: {event}"),
                    ),
                    ("ping_peer", peer),
                    ("ping_lo", "ok"),
                    ("nft", "present"),
                ],
                &[
                    "Broadcast message from systemd-journald@ssr-vm (now):",
                    event,
                ],
            );
            b.host_ping = Some(host_ping);
            b
        };
        let mut right = boot_with(
            &[
                ("unit", "active/exited result=success restarts=0"),
                ("status", &format!("directory {PROTECTED}: unlocked")),
                ("read", "t"),
                ("ping_peer", "ok"),
                ("ping_lo", "ok"),
                ("nft", "absent"),
            ],
            &[],
        );
        right.host_ping = Some(true);
        assert!(check_other_tpm(&other("fail", false), &right, "t").is_ok());
        assert!(check_other_tpm(&other("ok", false), &right, "t").is_err());
        assert!(check_other_tpm(&other("fail", true), &right, "t").is_err());
        // The file must read back on the right TPM.
        assert!(check_other_tpm(&other("fail", false), &right, "other").is_err());
    }
}
