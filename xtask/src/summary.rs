//! The `cargo xtask ci` summary: each step's time and result, and the tests passed /
//! failed / skipped per crate, read from libtest's output while it streams to the
//! console.
//!
//! libtest reports a test that returned early as `ok`; ssr-testkit's `skip` writes
//! `SKIPPED: <test>: <reason>` to stderr for it, so the table counts those lines as
//! skipped and takes them out of the passed column.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus};
use std::time::Instant;

/// The marker ssr-testkit's `skip` prints (`SKIPPED: <test>: <reason>`).
const SKIPPED: &str = "SKIPPED: ";

/// One step's outcome in the table.
#[derive(Debug)]
struct StepRecord {
    name: String,
    seconds: f64,
    ok: bool,
}

/// The steps run so far and the test counts per crate.
#[derive(Debug, Default)]
pub struct Summary {
    steps: Vec<StepRecord>,
    tests: BTreeMap<String, Tally>,
}

/// Test counts of one crate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Passed, as libtest counts them (skipped tests included).
    pub ok: u64,
    pub failed: u64,
    pub ignored: u64,
    /// `SKIPPED:` lines printed while this crate's tests ran.
    pub skipped: u64,
    /// Test binaries that ended without a `test result:` line (crashed).
    pub crashed: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.skipped += other.skipped;
        self.crashed += other.crashed;
    }

    /// Passed and not skipped.
    pub fn passed(&self) -> u64 {
        self.ok.saturating_sub(self.skipped)
    }
}

impl Summary {
    /// Records a step's time and result.
    pub fn record(&mut self, name: &str, start: Instant, ok: bool) {
        self.steps.push(StepRecord {
            name: name.to_owned(),
            seconds: start.elapsed().as_secs_f64(),
            ok,
        });
    }

    /// Runs `cmd` (a `cargo test`) with its stdout and stderr joined in one pipe, copies
    /// everything to this process's stdout as it comes, and adds the counts it reports
    /// to the table. `crate_of` maps a test binary's file name to its crate.
    pub fn run_tests(
        &mut self,
        mut cmd: Command,
        crate_of: &BTreeMap<String, String>,
    ) -> std::io::Result<ExitStatus> {
        let (mut reader, writer) = std::io::pipe()?;
        cmd.stdout(writer.try_clone()?).stderr(writer);
        let mut child = cmd.spawn()?;
        // The command holds the pipe's write ends: drop it so the read sees EOF.
        drop(cmd);
        let mut parser = TestOutput::new(crate_of);
        let mut out = std::io::stdout();
        let mut buf = [0u8; 8192];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            };
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            parser.feed(&buf[..n]);
        }
        let status = child.wait()?;
        for (krate, tally) in parser.finish() {
            self.tests.entry(krate).or_default().add(tally);
        }
        Ok(status)
    }

    /// The table printed at the end of `cargo xtask ci`.
    pub fn table(&self) -> String {
        let mut t = String::from("\nxtask ci summary\n");
        let width = self
            .steps
            .iter()
            .map(|s| s.name.len())
            .chain(self.tests.keys().map(String::len))
            .chain([5])
            .max()
            .unwrap_or(5);
        t += &format!("{:<width$}  {:>8}  result\n", "step", "seconds");
        for s in &self.steps {
            let result = if s.ok { "ok" } else { "FAILED" };
            t += &format!("{:<width$}  {:>8.0}  {result}\n", s.name, s.seconds);
        }
        if !self.tests.is_empty() {
            t += &format!(
                "\n{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}\n",
                "crate", "passed", "failed", "skipped", "ignored"
            );
            let mut total = Tally::default();
            for (krate, tally) in &self.tests {
                total.add(*tally);
                t += &row(krate, tally, width);
            }
            t += &row("total", &total, width);
            // The plain closing line log readers look for.
            t += &format!(
                "\ntests: {} passed, {} failed, {} skipped\n",
                total.passed(),
                total.failed + total.crashed,
                total.skipped
            );
        }
        t
    }
}

fn row(name: &str, tally: &Tally, width: usize) -> String {
    let failed = if tally.crashed > 0 {
        format!("{}+{}crash", tally.failed, tally.crashed)
    } else {
        tally.failed.to_string()
    };
    format!(
        "{name:<width$}  {:>8}  {failed:>8}  {:>8}  {:>8}\n",
        tally.passed(),
        tally.skipped,
        tally.ignored
    )
}

/// Incremental parser of `cargo test` output (stdout and stderr joined).
#[derive(Debug)]
pub struct TestOutput<'a> {
    crate_of: &'a BTreeMap<String, String>,
    partial: Vec<u8>,
    current: Option<(String, Tally, bool)>,
    done: Vec<(String, Tally)>,
}

impl<'a> TestOutput<'a> {
    pub fn new(crate_of: &'a BTreeMap<String, String>) -> Self {
        TestOutput {
            crate_of,
            partial: Vec::new(),
            current: None,
            done: Vec::new(),
        }
    }

    /// Feeds bytes as they arrive; complete lines are parsed.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.line(&String::from_utf8_lossy(&line));
        }
    }

    /// The counts per crate (one entry per test binary, in order).
    pub fn finish(mut self) -> Vec<(String, Tally)> {
        let rest = std::mem::take(&mut self.partial);
        if !rest.is_empty() {
            self.line(&String::from_utf8_lossy(&rest));
        }
        self.close_binary();
        self.done
    }

    fn close_binary(&mut self) {
        if let Some((krate, mut tally, saw_result)) = self.current.take() {
            if !saw_result {
                tally.crashed += 1;
            }
            self.done.push((krate, tally));
        }
    }

    fn line(&mut self, line: &str) {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            self.close_binary();
            self.current = Some((self.crate_of_running(rest), Tally::default(), false));
        } else if let Some(krate) = trimmed.strip_prefix("Doc-tests ") {
            self.close_binary();
            self.current = Some((self.crate_of_doc(krate), Tally::default(), false));
        } else if let Some(counts) = trimmed.strip_prefix("test result: ") {
            let (ok, failed, ignored) = parse_result(counts);
            let entry = self
                .current
                .get_or_insert_with(|| ("?".to_owned(), Tally::default(), false));
            entry.1.ok += ok;
            entry.1.failed += failed;
            entry.1.ignored += ignored;
            entry.2 = true;
        } else if trimmed.starts_with(SKIPPED) || line.contains(&format!(" ... {SKIPPED}")) {
            let entry = self
                .current
                .get_or_insert_with(|| ("?".to_owned(), Tally::default(), true));
            entry.1.skipped += 1;
        }
    }

    /// `unittests src/lib.rs (target/debug/deps/ssr_pki-0123abcd)` -> the crate of
    /// that binary.
    fn crate_of_running(&self, rest: &str) -> String {
        let path = rest
            .rsplit_once('(')
            .map_or(rest, |(_, p)| p.trim_end_matches(')'));
        let file = path.rsplit('/').next().unwrap_or(path);
        self.crate_of.get(file).cloned().unwrap_or_else(|| {
            // Unknown binary: its name without the hash.
            file.rsplit_once('-').map_or(file, |(n, _)| n).to_owned()
        })
    }

    /// `ssr_pki` -> `ssr-pki` when a package of that name is known.
    fn crate_of_doc(&self, krate: &str) -> String {
        self.crate_of
            .values()
            .find(|p| p.replace('-', "_") == krate)
            .cloned()
            .unwrap_or_else(|| krate.to_owned())
    }
}

/// `ok. 3 passed; 1 failed; 2 ignored; 0 measured; ...` -> (3, 1, 2).
fn parse_result(counts: &str) -> (u64, u64, u64) {
    let mut r = (0, 0, 0);
    for part in counts.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else {
            continue;
        };
        match label {
            "passed" => r.0 = n,
            "failed" => r.1 = n,
            "ignored" => r.2 = n,
            _ => {}
        }
    }
    r
}

/// Test binary file name -> package name, from the JSON messages of
/// `cargo test --no-run --message-format=json...` (one object per line). Plain string
/// search: xtask has no JSON dependency.
pub fn binaries_from_cargo_json(json_lines: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in json_lines.lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        let (Some(id), Some(exe)) = (
            json_string(line, "package_id"),
            json_string(line, "executable"),
        ) else {
            continue;
        };
        let file = exe.rsplit('/').next().unwrap_or(exe).to_owned();
        map.insert(file, package_name(id));
    }
    map
}

/// The string value of `"key":"..."` in a JSON line (values here hold no escapes).
fn json_string<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The package name in a package id: `path+file:///w/ssr-pki#0.1.0` -> `ssr-pki`,
/// `path+file:///w/dir#name@0.1.0` -> `name`, `name 0.1.0 (path+file:///w)` -> `name`.
fn package_name(id: &str) -> String {
    if let Some((url, frag)) = id.split_once('#') {
        if let Some((name, _)) = frag.split_once('@') {
            return name.to_owned();
        }
        return url.rsplit('/').next().unwrap_or(url).to_owned();
    }
    id.split_whitespace().next().unwrap_or(id).to_owned()
}

/// The command's exit status as the step's result.
pub fn check(name: &str, status: ExitStatus) -> Result<(), String> {
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
   Compiling ssr-pki v0.1.0
    Finished `test` profile [unoptimized] target(s) in 1.0s
     Running unittests src/lib.rs (target/debug/deps/ssr_pki-0123)

running 3 tests
test a ... ok
test b ... ok
test c ... FAILED

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/sim.rs (target/debug/deps/sim-aaaa)

running 2 tests
SKIPPED: needs_root: needs root (ssr-download/tests/sim.rs:3:9)
test needs_root ... ok
test other ... ok
test quoted ... ok
---- quoted stdout ----
assertion failed: contains(\"SKIPPED: x\")

test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/sim.rs (target/debug/deps/sim-bbbb)

running 1 test
test x ... SKIPPED: x: needs root (a.rs:1:1)
ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/boom.rs (target/debug/deps/boom-cccc)

running 1 test
error: test failed, to rerun pass `-p ssr-pki --test boom`
   Doc-tests ssr_pki

running 1 test
test src/lib.rs - (line 1) ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s
";

    fn binaries() -> BTreeMap<String, String> {
        [
            ("ssr_pki-0123", "ssr-pki"),
            ("sim-aaaa", "ssr-download"),
            ("sim-bbbb", "ssr-svr-crypto"),
            ("boom-cccc", "ssr-pki"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
    }

    fn totals(chunk: usize) -> BTreeMap<String, Tally> {
        let map = binaries();
        let mut p = TestOutput::new(&map);
        for c in OUTPUT.as_bytes().chunks(chunk) {
            p.feed(c);
        }
        let mut t: BTreeMap<String, Tally> = BTreeMap::new();
        for (k, v) in p.finish() {
            t.entry(k).or_default().add(v);
        }
        t
    }

    #[test]
    fn counts_per_crate_whatever_the_chunking() {
        for chunk in [1, 7, 4096] {
            let t = totals(chunk);
            assert_eq!(
                t["ssr-pki"],
                Tally {
                    ok: 3,
                    failed: 1,
                    ignored: 0,
                    skipped: 0,
                    crashed: 1
                }
            );
            assert_eq!(
                t["ssr-download"],
                Tally {
                    ok: 2,
                    failed: 0,
                    ignored: 1,
                    skipped: 1,
                    crashed: 0
                }
            );
            assert_eq!(t["ssr-download"].passed(), 1);
            assert_eq!(t["ssr-svr-crypto"].ok, 1);
            assert_eq!(t["ssr-svr-crypto"].skipped, 1);
            assert_eq!(t.len(), 3);
        }
    }

    #[test]
    fn table_lists_steps_and_crates() {
        let mut s = Summary::default();
        s.record("fmt", Instant::now(), true);
        s.record("test", Instant::now(), false);
        for (k, v) in totals(4096) {
            s.tests.entry(k).or_default().add(v);
        }
        let table = s.table();
        assert!(table.contains("fmt"), "{table}");
        assert!(table.contains("FAILED"), "{table}");
        let line = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} in {table}"))
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(line("ssr-download"), "1 0 1 1");
        assert_eq!(line("ssr-pki"), "3 1+1crash 0 0");
        assert_eq!(line("total"), "4 1+1crash 2 1");
        assert!(
            table.ends_with("\ntests: 4 passed, 2 failed, 2 skipped\n"),
            "{table}"
        );
    }

    #[test]
    fn cargo_json_maps_binaries_to_packages() {
        let json = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/ssr-download#0.1.0","target":{"name":"sim"},"executable":"/w/target/debug/deps/sim-aaaa","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/examples#demo@0.1.0","executable":null}
{"reason":"compiler-artifact","package_id":"path+file:///w/dir#other@0.1.0","executable":"/w/target/debug/deps/x-1"}
{"reason":"build-finished","success":true}"#;
        let map = binaries_from_cargo_json(json);
        assert_eq!(map.len(), 2);
        assert_eq!(map["sim-aaaa"], "ssr-download");
        assert_eq!(map["x-1"], "other");
        assert_eq!(package_name("ssr-pki 0.1.0 (path+file:///w)"), "ssr-pki");
    }

    #[test]
    fn result_line_counts() {
        assert_eq!(
            parse_result("ok. 12 passed; 0 failed; 3 ignored; 0 measured; 1 filtered out"),
            (12, 0, 3)
        );
        assert_eq!(parse_result("garbage"), (0, 0, 0));
    }
}
