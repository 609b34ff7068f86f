//! Shared helpers for the criterion benchmarks: OpenSSL measured in the same run, so
//! every figure can be reported as a ratio (absolute numbers drift on shared machines).

use std::process::Command;

/// Throughput of `openssl speed <args>` in bytes per second for one block size,
/// measured now. `None` when the `openssl` CLI is missing or its output is not understood.
///
/// `args` selects the algorithm: `["-evp", "aes-256-xts"]`, `["-hmac", "sha384"]`, …
pub fn openssl_speed(args: &[&str], bytes: usize, seconds: u32) -> Option<f64> {
    let output = Command::new("openssl")
        .arg("speed")
        .args([
            "-elapsed",
            "-mr",
            "-seconds",
            &seconds.to_string(),
            "-bytes",
            &bytes.to_string(),
        ])
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    parse_mr_throughput(&String::from_utf8_lossy(&output.stdout))
}

/// Parses the `+F:` line of `openssl speed -mr` output: `+F:<n>:<name>:<bytes/s>…`
/// with one rate per block size (we ask for exactly one size, in bytes per second).
pub fn parse_mr_throughput(stdout: &str) -> Option<f64> {
    let line = stdout.lines().find(|l| l.starts_with("+F:"))?;
    line.split(':').nth(3)?.trim().parse().ok()
}

/// Runs an `openssl speed` key-agreement measurement (`["ffdh4096"]`, `["ecdhp256"]`) and
/// returns operations per second. `None` when unavailable.
///
/// OpenSSL 3's `-mr` key-agreement lines read `+F<k>:<n>:<bits>:<ops per s>:<s per op>`
/// (signature lines put seconds per operation first instead, so they are not parsed here).
pub fn openssl_derive_ops(algorithm: &str, seconds: u32) -> Option<f64> {
    parse_mr_derive(&openssl_speed_mr(algorithm, seconds)?)
}

/// The machine-readable (`-mr`) output of `openssl speed -seconds S <algorithm>`.
fn openssl_speed_mr(algorithm: &str, seconds: u32) -> Option<String> {
    let output = Command::new("openssl")
        .arg("speed")
        .args([
            "-elapsed",
            "-mr",
            "-seconds",
            &seconds.to_string(),
            algorithm,
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Parses a `+F<k>:` key-agreement line of `openssl speed -mr` output.
pub fn parse_mr_derive(stdout: &str) -> Option<f64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("+F") && !l.starts_with("+F:"))?;
    let ops: f64 = line.split(':').nth(3)?.trim().parse().ok()?;
    (ops > 0.0).then_some(ops)
}

/// Signature verifications per second from `openssl speed <algorithm>` (`rsa2048`,
/// `ecdsap256`), measured now. `None` when unavailable.
pub fn openssl_verify_ops(algorithm: &str, seconds: u32) -> Option<f64> {
    openssl_signature_ops(algorithm, seconds).map(|(_, verifies)| verifies)
}

/// Signatures per second from `openssl speed <algorithm>`, measured now.
pub fn openssl_sign_ops(algorithm: &str, seconds: u32) -> Option<f64> {
    openssl_signature_ops(algorithm, seconds).map(|(signs, _)| signs)
}

/// (signs, verifies) per second from `openssl speed <algorithm>`.
///
/// OpenSSL 3.0's `-mr` signature lines read `+F<k>:<n>:<bits>:<signs per s>:<verifies
/// per s>` (checked against `openssl speed` without `-mr`).
fn openssl_signature_ops(algorithm: &str, seconds: u32) -> Option<(f64, f64)> {
    let stdout = openssl_speed_mr(algorithm, seconds)?;
    let line = stdout
        .lines()
        .find(|l| l.starts_with("+F") && !l.starts_with("+F:"))?;
    let signs: f64 = line.split(':').nth(3)?.trim().parse().ok()?;
    let verifies: f64 = line.split(':').nth(4)?.trim().parse().ok()?;
    (signs > 0.0 && verifies > 0.0).then_some((signs, verifies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cipher_line() {
        let out = "+DT:AES-256-XTS:3:4096\n+R:100:AES-256-XTS:3.0\n+H:4096\n+F:22:AES-256-XTS:123456789.00\n";
        assert_eq!(parse_mr_throughput(out), Some(123456789.0));
        assert_eq!(parse_mr_throughput("garbage"), None);
    }

    #[test]
    fn parses_derive_line() {
        assert_eq!(
            parse_mr_derive("+DTP:4096:ffdh:1\n+F8:2:4096:675.5:0.001481\n"),
            Some(675.5)
        );
        assert_eq!(parse_mr_derive("+F:1:x:2\n"), None);
    }
}
