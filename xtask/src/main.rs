//! Dev tasks for the workspace, run as `cargo xtask <task>`:
//!
//! - `deps`: install the Debian packages the project needs (apt-get, as root), the
//!   nightly-only `cargo-fuzz`, and nothing else.
//! - `ci`: everything CI checks, in order: deps, fmt, clippy, tests (real components,
//!   as root), docs, benches built, a short run of every fuzz target.
//! - `demo`: deps, then the device demo on built-in defaults.
//! - `fuzz-smoke [SECONDS]`: build every fuzz target and run each for a few seconds.
//! - `vm-image`, `vm-test`: the router in a KVM guest (see `vm.rs`); `ci` runs
//!   `vm-test` when hardware KVM is usable.
//!
//! Plain std only, so it builds in seconds on a fresh machine.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod vm;

/// Debian packages the tests and the demo use (see README).
const DEBIAN_PACKAGES: &[&str] = &[
    "pkg-config",
    "libtss2-dev",
    "swtpm",
    "swtpm-tools",
    "tpm2-tools",
    "e2fsprogs",
    "mount",
    "openssl",
    "nftables",
    "iproute2",
    "curl",
    "openssh-client",
    "openssh-server",
    "clang",
    "iputils-ping",
];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("deps") => deps(),
        Some("ci") => ci(),
        Some("demo") => deps().and_then(|()| demo(&args[1..])),
        Some("vm-image") => vm::image_cmd(),
        Some("vm-test") => vm::test(),
        Some("fuzz-smoke") => {
            let seconds = args.get(1).map_or(Ok(10), |s| {
                s.parse()
                    .map_err(|_| format!("not a number of seconds: {s}"))
            });
            seconds.and_then(fuzz_smoke)
        }
        _ => Err(
            "usage: cargo xtask <deps|ci|demo|fuzz-smoke [SECONDS]|vm-image|vm-test>".to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs a command, echoing it; a non-zero exit is an error naming the step.
fn step(name: &str, cmd: &mut Command) -> Result {
    let start = Instant::now();
    eprintln!("==> {name}: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: cannot run {:?}: {e}", cmd.get_program()))?;
    eprintln!(
        "<== {name}: {status} after {:.0} s",
        start.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn deps() -> Result {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            return Err(format!(
                "missing Debian packages {missing:?}: run as root (or apt-get install them)"
            ));
        }
        step(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )?;
        step(
            "apt-get install",
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        step(
            "install cargo-fuzz",
            Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]),
        )?;
    }
    Ok(())
}

fn ci() -> Result {
    let start = Instant::now();
    deps()?;
    step("fmt", cargo().args(["fmt", "--all", "--check"]))?;
    step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "test",
        cargo().args(["test", "--workspace", "--all-features"]),
    )?;
    step(
        "doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    step(
        "bench build",
        cargo().args(["bench", "--workspace", "--no-run"]),
    )?;
    fuzz_smoke(10)?;
    vm::ci()?;
    eprintln!(
        "xtask ci: all steps passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fuzz_smoke(seconds: u32) -> Result {
    ensure_cargo_fuzz()?;
    let fuzz_dir = root().join("fuzz");
    let fuzz = || {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&fuzz_dir).args(["+nightly", "fuzz"]);
        cmd
    };
    let list = fuzz()
        .arg("list")
        .output()
        .map_err(|e| format!("cargo fuzz list: {e}"))?;
    let targets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if targets.is_empty() {
        return Err("no fuzz targets found".into());
    }
    step("fuzz build", fuzz().arg("build"))?;
    for target in &targets {
        // An empty corpus directory per run: the smoke run starts from nothing and leaves
        // nothing in the tree.
        let corpus = env::temp_dir().join(format!("ssr-fuzz-{target}"));
        let _ = std::fs::create_dir_all(&corpus);
        step(
            &format!("fuzz {target}"),
            fuzz().args(["run", target]).arg(&corpus).args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048",
            ]),
        )?;
        let _ = std::fs::remove_dir_all(&corpus);
    }
    Ok(())
}

fn demo(args: &[String]) -> Result {
    step(
        "device demo",
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "examples",
                "--example",
                "device-demo",
                "--",
            ])
            .args(args)
            // libtss2 prints its own WARNING/ERROR lines for lookups that are expected
            // to fail (a key not provisioned yet); the demo reports those itself.
            .env("TSS2_LOG", "all+NONE"),
    )
}
