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
/// Returns `true` when running as root. Otherwise the test cannot run: see [`skip`]
/// (outside CI it prints `SKIPPED: <test>: needs root` and returns `false`; inside CI,
/// where tests run as root, it panics, so a real-component test never skips there).
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
    skip("needs root (run the suite as root, as `cargo xtask ci` does)");
    false
}

/// True when the `CI` environment variable is set to anything but empty, `0` or
/// `false` (`cargo xtask ci` sets `CI=true` for everything it runs).
pub fn in_ci() -> bool {
    ci_value_means_ci(std::env::var_os("CI").as_deref())
}

fn ci_value_means_ci(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// The one way a test gives up because a prerequisite is missing (root, a tool, a
/// device): call it, then return from the test.
///
/// Inside CI ([`in_ci`]) a missing prerequisite is a failure: this panics with the
/// reason. Outside CI it writes `SKIPPED: <test>: <reason> (<file:line>)` straight to
/// the process's stderr, past libtest's output capture, so the line shows in a normal
/// `cargo test` run; `cargo xtask ci` counts these lines. `<test>` is the test's name
/// (libtest names each test's thread after it).
#[track_caller]
pub fn skip(reason: &str) {
    if in_ci() {
        let (test, caller) = test_and_caller();
        panic!(
            "{test} cannot run: {reason} ({caller}); a missing prerequisite fails the test when CI is set"
        );
    }
    use std::io::Write;
    // Written in one call so lines of parallel tests do not interleave.
    let _ = std::io::stderr().write_all(format!("{}\n", skip_line(reason)).as_bytes());
}

/// `SKIPPED: <test>: <reason> (<file:line>)`.
#[track_caller]
fn skip_line(reason: &str) -> String {
    let (test, caller) = test_and_caller();
    format!("SKIPPED: {test}: {reason} ({caller})")
}

/// The running test's name (libtest names its thread after it) and the caller's place.
#[track_caller]
fn test_and_caller() -> (String, &'static std::panic::Location<'static>) {
    let caller = std::panic::Location::caller();
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>").to_owned();
    (test, caller)
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

/// A machine-wide lock for a test that must use a fixed port (e.g. 930, the port a router
/// uses after onboarding): held until the returned file is dropped, so the same test run
/// by another process at once (two suites on one machine) waits instead of failing on
/// "port in use". The lock file is `<temp dir>/ssr-testkit-port-<port>.lock`.
pub fn lock_fixed_port(port: u16) -> io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!("ssr-testkit-port-{port}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    file.lock()?;
    Ok(file)
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
    fn ci_variable_values() {
        use std::ffi::OsStr;
        assert!(!ci_value_means_ci(None));
        for off in ["", "0", "false", "FALSE"] {
            assert!(!ci_value_means_ci(Some(OsStr::new(off))), "{off:?}");
        }
        for on in ["true", "1", "yes"] {
            assert!(ci_value_means_ci(Some(OsStr::new(on))), "{on:?}");
        }
    }

    #[test]
    fn skip_line_names_the_test_and_the_reason() {
        let line = skip_line("needs a widget");
        assert!(
            line.starts_with(
                "SKIPPED: tests::skip_line_names_the_test_and_the_reason: needs a widget ("
            ),
            "{line}"
        );
        assert!(line.contains("lib.rs:"), "{line}");
    }

    #[test]
    fn skip_fails_inside_ci() {
        // A child process of this test binary, with CI set, runs the skip below.
        if std::env::var_os("SSR_TESTKIT_SKIP_CHILD").is_some() {
            skip("needs a widget");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let run = |ci: &str| {
            std::process::Command::new(&exe)
                .args(["--exact", "tests::skip_fails_inside_ci", "--test-threads=1"])
                .env("SSR_TESTKIT_SKIP_CHILD", "1")
                .env("CI", ci)
                .output()
                .unwrap()
        };
        let inside = run("true");
        assert!(!inside.status.success(), "a skip inside CI must fail");
        let out = String::from_utf8_lossy(&inside.stdout);
        assert!(
            out.contains("tests::skip_fails_inside_ci cannot run: needs a widget (")
                && !out.contains("SKIPPED"),
            "{out}"
        );
        let outside = run("");
        assert!(outside.status.success(), "{outside:?}");
        let err = String::from_utf8_lossy(&outside.stderr);
        assert!(
            err.contains("SKIPPED: tests::skip_fails_inside_ci: needs a widget ("),
            "{err}"
        );
    }

    #[test]
    fn fixed_port_lock_is_exclusive_across_processes() {
        // A child process of this test binary holds the lock for a moment.
        if std::env::var_os("SSR_TESTKIT_LOCK_CHILD").is_some() {
            let _lock = lock_fixed_port(1).unwrap();
            println!("locked");
            std::thread::sleep(Duration::from_millis(1500));
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::fixed_port_lock_is_exclusive_across_processes",
                "--nocapture",
            ])
            .env("SSR_TESTKIT_LOCK_CHILD", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the child holds the lock (it prints `locked`).
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("locked") {
            line.clear();
            assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0);
        }
        let asked = Instant::now();
        let _lock = lock_fixed_port(1).unwrap();
        // The child holds it for 1.5 s after saying so: we cannot have it sooner.
        assert!(
            asked.elapsed() >= Duration::from_secs(1),
            "the lock was granted while another process held it"
        );
        assert!(child.wait().unwrap().success());
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
