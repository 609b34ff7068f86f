//! The `ssr` operator CLI: one module per command group, each owning its clap
//! subcommand enum and its `run` function.

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod cert;
pub mod download;
pub mod fscrypt;
pub mod onboard;
pub mod tpm;

/// A failed command: one line for the operator and the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Process exit code (never 0).
    pub code: u8,
    /// One line, no trailing newline, no secrets.
    pub message: String,
}

impl Failure {
    /// Generic failure exit code.
    pub const GENERAL: u8 = 1;
    /// Bad command-line or configuration input.
    pub const USAGE: u8 = 2;

    /// A failure with exit code `code` (0 is turned into 1).
    pub fn new(code: u8, message: impl fmt::Display) -> Self {
        Self {
            code: code.max(1),
            message: message.to_string(),
        }
    }

    /// A failure with the generic exit code.
    pub fn general(message: impl fmt::Display) -> Self {
        Self::new(Self::GENERAL, message)
    }

    /// A failure caused by bad input from the operator.
    pub fn usage(message: impl fmt::Display) -> Self {
        Self::new(Self::USAGE, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every command returns.
pub type CmdResult = Result<(), Failure>;

/// Operator CLI for the session-smart router's security core.
#[derive(Debug, Parser)]
#[command(name = "ssr", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// fscrypt forensics and status: key identifiers, names, contents.
    #[command(subcommand)]
    Fscrypt(fscrypt::Cmd),
    /// TPM information.
    #[command(subcommand)]
    Tpm(tpm::Cmd),
    /// Certificates: the router key (in the TPM with `keygen --tpm`, else software), CSRs,
    /// import, trust bundles, verification.
    ///
    /// One router key: `ssr cert keygen --tpm` creates it through ssr-tpm's key store
    /// (`<store>/tpm-keys`, entry `router`); `ssr cert csr` signs with it inside the
    /// TPM; `ssr onboard join` proves possession of the same key. `ssr cert import`
    /// refuses a certificate when no trusted CA bundle is installed unless
    /// `--no-chain-check` is given (audited).
    #[command(subcommand)]
    Cert(cert::CertCmd),
    /// Certificate revocation lists.
    #[command(subcommand)]
    Crl(cert::CrlCmd),
    /// Download a software image from several sources with failover.
    Download(download::Args),
    /// Secure Conductor Onboarding (conductor and router sides).
    #[command(subcommand)]
    Onboard(onboard::Cmd),
    /// Throughput measurements on this device.
    #[command(subcommand)]
    Bench(bench::Cmd),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CmdResult {
    match cli.command {
        Command::Fscrypt(cmd) => fscrypt::run(cmd),
        Command::Tpm(cmd) => tpm::run(cmd),
        Command::Cert(cmd) => cert::run_cert(cmd),
        Command::Crl(cmd) => cert::run_crl(cmd),
        Command::Download(args) => download::run(args),
        Command::Onboard(cmd) => onboard::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

/// Prints a failure as one line on stderr and maps it to the exit code.
pub fn exit(result: CmdResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("ssr: {failure}");
            ExitCode::from(failure.code)
        }
    }
}
