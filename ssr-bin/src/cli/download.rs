//! `ssr download --config FILE --version V --dest DIR`: fetch a software image from
//! the configured sources with failover, retries and resume (see the ssr-download
//! crate for the configuration, wire protocol and rules).
//!
//! `ssr download sign-manifest --key KEY.pem --image FILE --version V --out PATH`:
//! build the manifest of an image and sign it with a release key (ES256), ready to
//! publish as `images/{V}/manifest.json`.
//!
//! Progress goes to stderr (an `indicatif` bar on a terminal: bytes, rate, ETA and
//! the source in use; a line every few seconds otherwise); on success stdout gets
//! `<path> sha256:<hex>`.
//!
//! Exit codes: 2 configuration, 3 timed out, 4 every attempt failed, 5 the assembled
//! file does not match the manifest, 6 local I/O, 1 anything else.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use p256::pkcs8::DecodePrivateKey;
use ssr_download::http::{self, Report};
use ssr_download::{ChunkHash, Config, Error, Event, Manifest, Progress, ReleaseKey, SourceConfig};

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
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// The download configuration (TOML: access mode, sources, TLS, release keys,
    /// retry settings).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The image version to fetch.
    #[arg(long)]
    pub version: Option<String>,
    /// Directory that receives the verified image (and the resumable partial state).
    #[arg(long)]
    pub dest: Option<PathBuf>,
    /// No progress output (events and the result are still printed).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Build an image's manifest and sign it with a release key (ES256).
    SignManifest(SignArgs),
}

#[derive(Debug, ClapArgs)]
pub struct SignArgs {
    /// The release signing key: PEM PKCS#8 P-256 private key
    /// (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    #[arg(long)]
    pub key: PathBuf,
    /// The image file.
    #[arg(long)]
    pub image: PathBuf,
    /// The version it is published as.
    #[arg(long)]
    pub version: String,
    /// Chunk size in bytes (4 KiB-64 MiB).
    #[arg(long, default_value_t = 4 << 20)]
    pub chunk_size: u64,
    /// The chunk digests: `sha256` (manifest format 1, every reader knows it) or
    /// `blake3` (format 2: about four times faster to verify per core; readers from
    /// before format 2 refuse it, and so do routers set to `sha256-chunks-only`).
    #[arg(long, default_value = "sha256", value_parser = parse_chunk_hash)]
    pub chunk_hash: ChunkHash,
    /// The file name in the manifest (default: the image's file name).
    #[arg(long)]
    pub file: Option<String>,
    /// Where to write the signed manifest.
    #[arg(long)]
    pub out: PathBuf,
}

fn parse_chunk_hash(s: &str) -> Result<ChunkHash, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn sign_manifest(args: SignArgs) -> CmdResult {
    let pem = fs::read_to_string(&args.key).map_err(|e| {
        Failure::usage(format!(
            "sign-manifest: cannot read {}: {e}",
            args.key.display()
        ))
    })?;
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        Failure::usage(format!(
            "sign-manifest: {}: not a PKCS#8 P-256 private key: {e}",
            args.key.display()
        ))
    })?;
    let image = fs::File::open(&args.image).map_err(|e| {
        Failure::new(
            EXIT_IO,
            format!("sign-manifest: cannot read {}: {e}", args.image.display()),
        )
    })?;
    let file = match args.file {
        Some(f) => f,
        None => args
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    // One chunk in memory at a time: images of any size.
    let m = Manifest::build_from_reader(
        &args.version,
        &file,
        image,
        args.chunk_size,
        args.chunk_hash,
    )
    .map_err(|e| match e {
        Error::Io { .. } => Failure::new(
            EXIT_IO,
            format!("sign-manifest: {}: {e}", args.image.display()),
        ),
        e => Failure::usage(format!("sign-manifest: {e}")),
    })?;
    let signed = ssr_download::sign_manifest(&m, &key);
    fs::write(&args.out, signed).map_err(|e| {
        Failure::new(
            EXIT_IO,
            format!("sign-manifest: cannot write {}: {e}", args.out.display()),
        )
    })?;
    println!(
        "{} key-id:{}",
        args.out.display(),
        hex::encode(ReleaseKey::of(&key).id())
    );
    Ok(())
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
                "chunk {index} from {} failed its digest; fetching again",
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

/// The bar's message: `12.3 MiB/s ETA 5s via conductor-1`.
fn rate_eta_via(p: &Progress, sources: &[SourceConfig]) -> String {
    let via = p
        .source
        .and_then(|s| sources.get(s.0))
        .map_or(String::new(), |s| format!(" via {}", s.kind));
    let eta = p
        .eta
        .map_or(String::new(), |e| format!(" ETA {}s", e.as_secs()));
    format!("{:.1} MiB/s{eta}{via}", mib(p.bytes_per_sec))
}

/// A line for logs: `[#####.....] 42.0/100.0 MiB 12.3 MiB/s ETA 5s via conductor-1`.
fn bar(p: &Progress, sources: &[SourceConfig]) -> String {
    let total = p.total_bytes.unwrap_or(0);
    let filled = p
        .done_bytes
        .saturating_mul(30)
        .checked_div(total)
        .unwrap_or(0)
        .min(30) as usize;
    format!(
        "[{}{}] {:.1}/{:.1} MiB {}",
        "#".repeat(filled),
        ".".repeat(30 - filled),
        mib(p.done_bytes),
        mib(total),
        rate_eta_via(p, sources),
    )
}

pub fn run(args: Args) -> CmdResult {
    if let Some(Sub::SignManifest(sign)) = args.command {
        return sign_manifest(sign);
    }
    let (Some(config_path), Some(version), Some(dest)) = (args.config, args.version, args.dest)
    else {
        return Err(Failure::usage(
            "download: --config, --version and --dest are required (or: download sign-manifest)",
        ));
    };
    let text = fs::read_to_string(&config_path).map_err(|e| {
        Failure::usage(format!(
            "download: cannot read {}: {e}",
            config_path.display()
        ))
    })?;
    let config = Config::parse(&text)
        .map_err(|e| Failure::usage(format!("download: {}: {e}", config_path.display())))?;
    let sources = config.usable_sources();
    if sources.is_empty() {
        return Err(Failure::usage(format!(
            "download: {}: no configured source is allowed in this access mode",
            config_path.display()
        )));
    }
    let tty = std::io::stderr().is_terminal();
    let bar_ui = (tty && !args.quiet).then(|| {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("[{bar:30}] {binary_bytes}/{binary_total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("#>.");
        pb.set_style(style);
        pb
    });
    let mut last_line = Instant::now();
    let mut observer = |report: Report<'_>| {
        let line = match report {
            Report::Event(e) => describe(e, &sources),
            Report::SourceError { source, reason } => Some(format!(
                "{}: {reason}",
                sources
                    .get(source.0)
                    .map_or_else(|| format!("source {}", source.0), |s| s.kind.to_string())
            )),
            Report::Progress(p) => {
                if let Some(pb) = &bar_ui {
                    if let Some(total) = p.total_bytes {
                        pb.set_length(total);
                    }
                    pb.set_position(p.done_bytes);
                    pb.set_message(rate_eta_via(&p, &sources));
                } else if !args.quiet && last_line.elapsed() >= Duration::from_secs(5) {
                    last_line = Instant::now();
                    eprintln!("ssr download: {}", bar(&p, &sources));
                }
                None
            }
        };
        if let Some(line) = line {
            let print = || {
                let _ = writeln!(std::io::stderr().lock(), "ssr download: {line}");
            };
            match &bar_ui {
                Some(pb) => pb.suspend(print),
                None => print(),
            }
        }
    };
    let result = http::download(&config, &version, &dest, &mut observer);
    if let Some(pb) = &bar_ui {
        pb.finish_and_clear();
    }
    let done = result.map_err(|e| failure(&e))?;
    println!(
        "{} sha256:{}",
        done.path.display(),
        hex::encode(done.manifest.sha256())
    );
    Ok(())
}
