//! `ssr download --config FILE --version V --dest DIR`: fetch a software image from
//! the configured sources with failover, retries and resume (see the ssr-download
//! crate for the configuration, wire protocol and rules).
//!
//! Progress goes to stderr (a bar on a terminal, a line every few seconds
//! otherwise); on success stdout gets `<path> sha256:<hex>`.
//!
//! Exit codes: 2 configuration, 3 timed out, 4 every attempt failed, 5 the assembled
//! file does not match the manifest, 6 local I/O, 1 anything else.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use ssr_download::http::{self, Report};
use ssr_download::{Config, Error, Event, Progress, SourceConfig};

use super::{CmdResult, Failure};

/// Exit code: the overall timeout expired.
pub const EXIT_TIMED_OUT: u8 = 3;
/// Exit code: every allowed attempt failed.
pub const EXIT_ATTEMPTS_EXHAUSTED: u8 = 4;
/// Exit code: the assembled file does not match the manifest's SHA-256.
pub const EXIT_INTEGRITY: u8 = 5;
/// Exit code: local file-system error.
pub const EXIT_IO: u8 = 6;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The download configuration (TOML: access mode, sources, retry settings).
    #[arg(long)]
    pub config: PathBuf,
    /// The image version to fetch.
    #[arg(long)]
    pub version: String,
    /// Directory that receives the verified image (and the resumable partial state).
    #[arg(long)]
    pub dest: PathBuf,
    /// No progress output (events and the result are still printed).
    #[arg(long)]
    pub quiet: bool,
}

fn failure(e: &Error) -> Failure {
    let code = match e {
        Error::OutOfRange { .. }
        | Error::InvalidConfig { .. }
        | Error::ConfigSyntax(_)
        | Error::InvalidVersion(_) => Failure::USAGE,
        Error::TimedOut { .. } => EXIT_TIMED_OUT,
        Error::AttemptsExhausted { .. } => EXIT_ATTEMPTS_EXHAUSTED,
        Error::FileDigestMismatch { .. } => EXIT_INTEGRITY,
        Error::Io { .. } => EXIT_IO,
        _ => Failure::GENERAL,
    };
    Failure::new(code, format!("download: {e}"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn describe(event: &Event, sources: &[SourceConfig]) -> Option<String> {
    let name = |id: ssr_download::SourceId| {
        sources.get(id.0).map_or_else(
            || format!("source {}", id.0),
            |s| format!("{} ({})", s.kind, s.url),
        )
    };
    Some(match event {
        Event::PeerReady => "HA peer has the version; fetching from it first".into(),
        Event::PeerFailed => "HA peer stopped answering; using the other sources".into(),
        Event::Discovered { sources: with } => format!(
            "sources with the version: {}",
            with.iter().map(|s| name(*s)).collect::<Vec<_>>().join(", ")
        ),
        Event::SourceSelected { source } => format!("downloading from {}", name(*source)),
        Event::SourceUnavailable { source, failures } => format!(
            "{} marked unavailable ({failures} failed requests in the window)",
            name(*source)
        ),
        Event::SourceRestored { source } => format!("{} is back", name(*source)),
        Event::ManifestMismatch { source } => {
            format!("{} serves a different manifest; not used", name(*source))
        }
        Event::ChunkRejected { source, index } => {
            format!(
                "chunk {index} from {} failed its SHA-256; fetching again",
                name(*source)
            )
        }
        Event::PartialDiscarded => "the partial download matches no source; starting over".into(),
        Event::AttemptFailed {
            attempt,
            reason,
            retry_in: Some(d),
        } => format!(
            "attempt {attempt} failed: {reason}; retrying in {}s",
            d.as_secs()
        ),
        Event::AttemptFailed {
            attempt, reason, ..
        } => format!("attempt {attempt} failed: {reason}"),
        _ => return None,
    })
}

/// Draws `[#####.....] 42.0/100.0 MiB 12.3 MiB/s ETA 5s via conductor-1`.
fn bar(p: &Progress, sources: &[SourceConfig]) -> String {
    let total = p.total_bytes.unwrap_or(0);
    let filled = p
        .done_bytes
        .saturating_mul(30)
        .checked_div(total)
        .unwrap_or(0) as usize;
    let via = p
        .source
        .and_then(|s| sources.get(s.0))
        .map_or(String::new(), |s| format!(" via {}", s.kind));
    let eta = p
        .eta
        .map_or(String::new(), |e| format!(" ETA {}s", e.as_secs()));
    format!(
        "[{}{}] {:.1}/{:.1} MiB {:.1} MiB/s{eta}{via}",
        "#".repeat(filled.min(30)),
        ".".repeat(30 - filled.min(30)),
        mib(p.done_bytes),
        mib(total),
        mib(p.bytes_per_sec),
    )
}

pub fn run(args: Args) -> CmdResult {
    let text = fs::read_to_string(&args.config).map_err(|e| {
        Failure::usage(format!(
            "download: cannot read {}: {e}",
            args.config.display()
        ))
    })?;
    let config = Config::parse(&text)
        .map_err(|e| Failure::usage(format!("download: {}: {e}", args.config.display())))?;
    let sources = config.usable_sources();
    if sources.is_empty() {
        return Err(Failure::usage(format!(
            "download: {}: no configured source is allowed in this access mode",
            args.config.display()
        )));
    }
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let mut observer = |report: Report<'_>| {
        let mut err = std::io::stderr().lock();
        match report {
            Report::Event(e) => {
                if let Some(line) = describe(e, &sources) {
                    let _ = writeln!(
                        err,
                        "{}ssr download: {line}",
                        if tty { "\r\x1b[K" } else { "" }
                    );
                }
            }
            Report::Progress(p) if !args.quiet => {
                if tty {
                    let _ = write!(err, "\r\x1b[K{}", bar(&p, &sources));
                } else if last_line.elapsed() >= Duration::from_secs(5) {
                    last_line = Instant::now();
                    let _ = writeln!(err, "ssr download: {}", bar(&p, &sources));
                }
            }
            Report::Progress(_) => {}
        }
    };
    let result = http::download(&config, &args.version, &args.dest, &mut observer);
    if tty && !args.quiet {
        eprintln!();
    }
    let done = result.map_err(|e| failure(&e))?;
    println!(
        "{} sha256:{}",
        done.path.display(),
        hex::encode(done.manifest.sha256())
    );
    Ok(())
}
