//! x509-limbo harness for `ssr-pki` (suite format version 1).
//!
//! Contract (from the suite): the suite JSON on stdin, the results JSON on stdout,
//! a non-zero exit only when the harness itself breaks.
//!
//! ```text
//! cargo run -p ssr-pki --example limbo_harness < limbo-subset-core.json > results.json
//! ```
//!
//! `tests/limbo.rs` includes this file as a module and calls [`run_suite`].

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use ssr_pki::{ChainOptions, Crl, RequiredEku, verify_chain};

/// The harness name written in the results.
pub const HARNESS: &str = concat!("ssr-pki ", env!("CARGO_PKG_VERSION"));

/// Runs every testcase of a suite document and returns the results document.
pub fn run_suite(suite: &Value, now_unix: i64) -> Result<Value, String> {
    if suite.get("version").and_then(Value::as_u64) != Some(1) {
        return Err("unsupported suite version (expected 1)".to_owned());
    }
    let cases = suite
        .get("testcases")
        .and_then(Value::as_array)
        .ok_or("suite has no testcases array")?;
    let results: Vec<Value> = cases
        .iter()
        .map(|case| {
            let id = case.get("id").and_then(Value::as_str).unwrap_or("?");
            let (actual, context) = match run_case(case, now_unix) {
                Outcome::Success => ("SUCCESS", String::new()),
                Outcome::Failure(why) => ("FAILURE", why),
                Outcome::Skipped(why) => ("SKIPPED", why),
            };
            json!({ "id": id, "actual_result": actual, "context": context })
        })
        .collect();
    Ok(json!({ "version": 1, "harness": HARNESS, "results": results }))
}

/// The verdict on one testcase.
#[derive(Debug)]
pub enum Outcome {
    /// The chain validates.
    Success,
    /// It does not, with the reason.
    Failure(String),
    /// The case asks for something this harness does not do.
    Skipped(String),
}

fn pem_list(case: &Value, key: &str) -> Vec<String> {
    case.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn run_case(case: &Value, now_unix: i64) -> Outcome {
    if case.get("validation_kind").and_then(Value::as_str) != Some("SERVER") {
        return Outcome::Skipped("only SERVER validation is supported".to_owned());
    }
    let time = match case.get("validation_time").and_then(Value::as_str) {
        None => now_unix,
        Some(t) => match parse_rfc3339(t) {
            Some(t) => t,
            None => return Outcome::Skipped(format!("unparsable validation_time {t}")),
        },
    };
    // SERVER validation: the peer is a TLS server, so serverAuth is the purpose checked
    // (in the leaf's EKU if it has one, and through the CAs' EKUs).
    let mut opts = ChainOptions::new(time).with_required_eku(RequiredEku::ServerAuth);
    if case
        .get("extended_key_usage")
        .and_then(Value::as_array)
        .is_some_and(|ekus| ekus.iter().any(|e| e != "serverAuth"))
    {
        return Outcome::Skipped("only serverAuth is supported as extended_key_usage".to_owned());
    }
    if case
        .get("key_usage")
        .and_then(Value::as_array)
        .is_some_and(|k| !k.is_empty())
    {
        return Outcome::Skipped("key_usage requirements are not supported".to_owned());
    }
    if let Some(depth) = case.get("max_chain_depth").and_then(Value::as_u64) {
        opts.max_intermediates = usize::try_from(depth).unwrap_or(usize::MAX);
    }

    let parse_certs = |key: &str| -> Result<Vec<ssr_pki::Certificate>, String> {
        pem_list(case, key)
            .iter()
            .map(|p| ssr_pki::Certificate::from_pem(p).map_err(|e| format!("{key}: {e}")))
            .collect()
    };
    let trusted = match parse_certs("trusted_certs") {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(e),
    };
    let intermediates = match parse_certs("untrusted_intermediates") {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(e),
    };
    let Some(peer) = case.get("peer_certificate").and_then(Value::as_str) else {
        return Outcome::Skipped("no peer_certificate".to_owned());
    };
    let peer = match ssr_pki::Certificate::from_pem(peer) {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(format!("peer_certificate: {e}")),
    };
    let crls: Result<Vec<Crl>, String> = pem_list(case, "crls")
        .iter()
        .map(|p| Crl::from_pem(p).map_err(|e| format!("crls: {e}")))
        .collect();
    opts.crls = match crls {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(e),
    };

    match verify_chain(&peer, &intermediates, &trusted, &opts) {
        Ok(_) => Outcome::Success,
        Err(e) => Outcome::Failure(e.to_string()),
    }
}

/// RFC 3339 `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

#[allow(dead_code)] // Unused when this file is included by tests/limbo.rs.
fn main() {
    let mut input = String::new();
    let result = std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))
        .and_then(|_| serde_json::from_str::<Value>(&input).map_err(|e| format!("suite: {e}")))
        .and_then(|suite| {
            // The harness, not the library, reads the clock: cases without a time use now.
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            run_suite(&suite, now)
        });
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{out}");
        }
        Err(e) => {
            eprintln!("limbo_harness: {e}");
            std::process::exit(2);
        }
    }
}
