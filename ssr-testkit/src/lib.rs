#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod ext4;
pub mod http;
pub mod pki;
mod postgres;
mod rng;
mod swtpm;

pub use ext4::{LoopExt4, list_names};
pub use postgres::Postgres;
pub use rng::TestRng;
pub use swtpm::{Swtpm, SwtpmBuilder};

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// True when the test process runs as root.
pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// Gate for tests that need root (loop mounts, nftables, network namespaces).
///
/// Returns `true` when running as root. Otherwise it prints why the test is skipped and
/// returns `false`, except when the `CI` environment variable is set: CI runs as root,
/// so a missing privilege there is a failure, never a silent skip.
///
/// ```no_run
/// if !ssr_testkit::require_root() {
///     return;
/// }
/// ```
#[track_caller]
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    let caller = std::panic::Location::caller();
    if std::env::var_os("CI").is_some() {
        panic!("{caller}: this test needs root and CI is set; run the suite as root");
    }
    eprintln!("{caller}: skipped: needs root");
    false
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // "Uid:\treal\teffective\tsaved\tfs"
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// A free TCP port `p` on 127.0.0.1 such that `p + 1` was free too when probed.
///
/// Another process may still take them before use; callers retry on bind failure.
pub fn free_port_pair() -> io::Result<u16> {
    for _ in 0..64 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = first.local_addr()?.port();
        if port == u16::MAX {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free TCP port pair on 127.0.0.1",
    ))
}

/// Runs a command to completion; a non-zero exit becomes an error carrying its stderr.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let output = cmd.output().map_err(|e| {
        io::Error::new(e.kind(), format!("cannot run {:?}: {e}", cmd.get_program()))
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Polls `ready` every 10 ms until it returns true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True when `path` is a mount point (listed in /proc/self/mounts).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canonical) = path.canonicalize() else {
        return false;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|m| Path::new(&unescape_mount_path(m)) == canonical)
}

/// /proc/self/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pair_is_bindable() {
        let p = free_port_pair().unwrap();
        let _a = TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
        let _b = TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1)).unwrap();
    }

    #[test]
    fn uid_is_read() {
        assert!(effective_uid().is_some());
    }

    #[test]
    fn root_is_mount_point_and_tmp_dir_is_not() {
        assert!(is_mount_point(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()));
    }
}
