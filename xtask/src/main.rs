//! Dev tasks for the workspace, run as `cargo xtask <task>`:
//!
//! - `deps`: install the Debian packages the project needs (apt-get, as root), the
//!   nightly-only `cargo-fuzz`, and nothing else.
//! - `ci`: everything CI checks, in order: deps, fmt, clippy, tests (real components,
//!   as root), docs, benches built, a short run of every fuzz target. Refuses to start
//!   unless root; runs every step with `CI=true` (so a test missing a prerequisite fails
//!   instead of skipping) and ends with a table (see `summary`).
//! - `demo`: deps, then the device demo on built-in defaults.
//! - `fuzz-smoke [SECONDS]`: build every fuzz target and run each for a few seconds,
//!   starting from its seed corpus (`fuzz/corpus/<target>/`).
//! - `fuzz-seeds`: regenerate those seed corpora with the project's own encoders.
//! - `vm-image`, `vm-test`: the router in a KVM guest (see `vm.rs`); `ci` runs
//!   `vm-test` when hardware KVM is usable.
//!
//! Plain std only, so it builds in seconds on a fresh machine.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod summary;
mod vm;

use summary::Summary;

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
    "postgresql",
    "clang",
    "iputils-ping",
    // ssr-bin tests: strace counts the download's fdatasync calls; script(1) gives it a terminal.
    "strace",
    "bsdutils",
    // ssr-bin tests: b3sum is the independent oracle for BLAKE3 chunk digests.
    "b3sum",
    // The download bench: nginx (sendfile) serves, aria2c is the downloader compared.
    "nginx",
    "aria2",
];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("deps") => deps(),
        Some("ci") => ci(),
        Some("demo") => deps().and_then(|()| demo(&args[1..])),
        Some("fuzz-seeds") => fuzz_seeds(),
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
            "usage: cargo xtask <deps|ci|demo|fuzz-smoke [SECONDS]|fuzz-seeds|vm-image|vm-test>"
                .to_string(),
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
    apt_install("apt-get install", DEBIAN_PACKAGES)
}

/// Installs those of `packages` that are not installed yet (apt-get, as root); the
/// install step is named `name`. Checks again afterwards: installing one package can
/// remove another (a machine with a backported `qemu-utils` loses it when Debian's
/// `qemu-system-x86` comes in), so what went missing is installed in a second pass, and
/// anything still missing then is an error.
fn apt_install(name: &str, packages: &[&str]) -> Result {
    let missing = || -> Vec<&str> { packages.iter().copied().filter(|p| !installed(p)).collect() };
    for pass in 0..2 {
        let now_missing = missing();
        if now_missing.is_empty() {
            return Ok(());
        }
        if !is_root() {
            return Err(format!(
                "missing Debian packages {now_missing:?}: run as root (or apt-get install them)"
            ));
        }
        if pass == 0 {
            step(
                "apt-get update",
                Command::new("apt-get").args(["update", "-qq"]),
            )?;
        }
        step(
            name,
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&now_missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    match missing()[..] {
        [] => Ok(()),
        ref still => Err(format!(
            "{name}: Debian packages {still:?} are still not installed after two apt-get passes"
        )),
    }
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
    if !is_root() {
        return Err(
            "ci needs root (loop mounts, network namespaces, nftables): run it as root, e.g. `sudo -E cargo xtask ci`"
                .into(),
        );
    }
    let start = Instant::now();
    let mut run = CiRun::default();
    let result = ci_steps(&mut run);
    eprintln!("{}", run.summary.table());
    result?;
    eprintln!(
        "xtask ci: all steps passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The steps of `ci`, each run with `CI=true` and recorded in the summary table.
fn ci_steps(run: &mut CiRun) -> Result {
    let deps_start = Instant::now();
    let deps_result = deps();
    run.summary.record("deps", deps_start, deps_result.is_ok());
    deps_result?;
    run.step("fmt", cargo().args(["fmt", "--all", "--check"]))?;
    run.step(
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
    run.tests(&["test", "--workspace", "--all-features"])?;
    run.step(
        "doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    run.step(
        "bench build",
        cargo().args(["bench", "--workspace", "--no-run"]),
    )?;
    fuzz_smoke_steps(10, &mut |name, cmd| run.step(name, cmd))?;
    let start = Instant::now();
    let vm = vm::ci();
    let name = match vm {
        Ok(false) => "vm-test (skipped: no hardware KVM)",
        _ => "vm-test",
    };
    run.summary.record(name, start, vm.is_ok());
    vm?;
    Ok(())
}

/// A `ci` run: steps get `CI=true` and their times go into the summary.
#[derive(Debug, Default)]
struct CiRun {
    summary: Summary,
}

impl CiRun {
    fn step(&mut self, name: &str, cmd: &mut Command) -> Result {
        let start = Instant::now();
        let result = step(name, cmd.env("CI", "true"));
        self.summary.record(name, start, result.is_ok());
        result
    }

    /// `cargo <test_args>`: the test binaries are built first (`test build`, which maps
    /// each binary to its crate), then run with their output streamed and counted
    /// (`test`). `--no-fail-fast` so the table covers every crate.
    fn tests(&mut self, test_args: &[&str]) -> Result {
        let start = Instant::now();
        let built = self.build_tests(test_args);
        self.summary.record("test build", start, built.is_ok());
        let crate_of = built?;

        let start = Instant::now();
        let mut cmd = cargo();
        cmd.args(test_args).arg("--no-fail-fast").env("CI", "true");
        eprintln!("==> test: {cmd:?}");
        let status = self
            .summary
            .run_tests(cmd, &crate_of)
            .map_err(|e| format!("test: cannot run cargo test: {e}"));
        let result = status.and_then(|s| {
            eprintln!("<== test: {s} after {:.0} s", start.elapsed().as_secs_f64());
            summary::check("test", s)
        });
        self.summary.record("test", start, result.is_ok());
        result
    }

    /// `cargo <test_args> --no-run --message-format=json-render-diagnostics`: builds the
    /// test binaries (diagnostics on stderr as usual) and returns binary -> crate.
    fn build_tests(
        &self,
        test_args: &[&str],
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let mut cmd = cargo();
        cmd.args(test_args)
            .args(["--no-run", "--message-format=json-render-diagnostics"])
            .env("CI", "true")
            .stderr(std::process::Stdio::inherit());
        eprintln!("==> test build: {cmd:?}");
        let out = cmd
            .output()
            .map_err(|e| format!("test build: cannot run cargo: {e}"))?;
        summary::check("test build", out.status)?;
        Ok(summary::binaries_from_cargo_json(&String::from_utf8_lossy(
            &out.stdout,
        )))
    }
}

fn fuzz_smoke(seconds: u32) -> Result {
    fuzz_smoke_steps(seconds, &mut step)
}

/// Builds every fuzz target and runs each for `seconds`, each command through `run`.
fn fuzz_smoke_steps(seconds: u32, run: &mut dyn FnMut(&str, &mut Command) -> Result) -> Result {
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
    run("fuzz build", fuzz().arg("build"))?;
    for target in &targets {
        // A temporary corpus directory per run (per process), seeded from the committed
        // corpus: libFuzzer writes what it finds there, and nothing lands in the tree.
        let corpus = env::temp_dir().join(format!("ssr-fuzz-{}-{target}", std::process::id()));
        let _ = std::fs::remove_dir_all(&corpus);
        let seeds = copy_seed_corpus(&fuzz_dir.join("corpus").join(target), &corpus)
            .map_err(|e| format!("fuzz {target}: seed corpus: {e}"))?;
        eprintln!("fuzz {target}: {seeds} seed inputs");
        let result = run(
            &format!("fuzz {target}"),
            fuzz()
                .args(["run", target])
                .arg(&corpus)
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-rss_limit_mb=2048",
                ])
                .args(fuzz_max_len(target).map(|n| format!("-max_len={n}"))),
        );
        let _ = std::fs::remove_dir_all(&corpus);
        result?;
    }
    Ok(())
}

/// Targets whose inputs are packets or packet metadata: run with inputs up to 64 KiB
/// (libFuzzer's default is 4 KiB).
fn fuzz_max_len(target: &str) -> Option<u32> {
    matches!(target, "ssr_svr_crypto_metadata" | "ssr_svr_crypto_packet").then_some(65_536)
}

/// Creates `dest` and copies the files of `seeds` (`fuzz/corpus/<target>/`, made by
/// `cargo xtask fuzz-seeds`) into it; a target without seeds starts empty.
fn copy_seed_corpus(seeds: &Path, dest: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dest)?;
    let entries = match std::fs::read_dir(seeds) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut copied = 0;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), dest.join(entry.file_name()))?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// `fuzz-seeds`: regenerates `fuzz/corpus/<target>/` with the project's own encoders
/// (the `fuzz-seeds` example); commit the result.
fn fuzz_seeds() -> Result {
    step(
        "fuzz seeds",
        cargo().args([
            "run",
            "--quiet",
            "-p",
            "examples",
            "--example",
            "fuzz-seeds",
        ]),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_corpus_is_copied_and_a_missing_one_starts_empty() {
        let base = env::temp_dir().join(format!("xtask-seeds-{}", std::process::id()));
        let seeds = base.join("seeds");
        std::fs::create_dir_all(&seeds).unwrap();
        std::fs::write(seeds.join("a"), b"seed a").unwrap();
        std::fs::write(seeds.join("b"), b"seed b").unwrap();
        let dest = base.join("run");
        assert_eq!(copy_seed_corpus(&seeds, &dest).unwrap(), 2);
        assert_eq!(std::fs::read(dest.join("b")).unwrap(), b"seed b");
        let empty = base.join("empty-run");
        assert_eq!(copy_seed_corpus(&base.join("none"), &empty).unwrap(), 0);
        assert!(empty.is_dir());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn packet_targets_get_64_kib_inputs() {
        assert_eq!(fuzz_max_len("ssr_svr_crypto_packet"), Some(65_536));
        assert_eq!(fuzz_max_len("ssr_svr_crypto_metadata"), Some(65_536));
        assert_eq!(fuzz_max_len("ssr_pki_cert"), None);
    }

    /// Tidy check: no test, example, bench or fuzz target names a path outside the
    /// repository (a fresh clone has no `../shared` beside it).
    #[test]
    fn tests_examples_and_benches_read_only_inside_the_repository() {
        const OUTSIDE: &[&str] = &["/../..", "\"../..", "../shared", "\"/work/"];
        let mut offenders = Vec::new();
        let mut files = Vec::new();
        collect_rs(&root(), &mut files);
        for file in files {
            let rel = file.strip_prefix(root()).unwrap_or(&file).to_path_buf();
            let in_scope = rel.components().any(|c| {
                matches!(
                    c.as_os_str().to_str(),
                    Some("tests" | "examples" | "benches" | "fuzz_targets")
                )
            });
            if !in_scope {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                if OUTSIDE.iter().any(|p| line.contains(p)) {
                    offenders.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "paths outside the repository (vendor the data instead): {offenders:#?}"
        );
    }

    /// Every `.rs` file under `dir`, skipping build output and hidden folders.
    fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                collect_rs(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_fuzz_target_has_seeds() {
        let fuzz = root().join("fuzz");
        for entry in std::fs::read_dir(fuzz.join("fuzz_targets")).unwrap() {
            let path = entry.unwrap().path();
            let target = path.file_stem().unwrap().to_string_lossy().into_owned();
            let seeds = std::fs::read_dir(fuzz.join("corpus").join(&target))
                .map(|d| d.count())
                .unwrap_or(0);
            assert!(
                seeds > 0,
                "fuzz target {target} has no seed corpus: run `cargo xtask fuzz-seeds`"
            );
        }
    }
}
