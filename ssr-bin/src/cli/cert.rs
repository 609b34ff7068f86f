//! `ssr cert` and `ssr crl`: not implemented yet (see the capability issue).

use clap::Subcommand;

use super::{CmdResult, Failure};

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Not implemented yet.
    Todo,
}

#[derive(Debug, Subcommand)]
pub enum CrlCmd {
    /// Not implemented yet.
    Todo,
}

pub fn run_cert(_cmd: CertCmd) -> CmdResult {
    Err(Failure::general("ssr cert: not implemented yet"))
}

pub fn run_crl(_cmd: CrlCmd) -> CmdResult {
    Err(Failure::general("ssr crl: not implemented yet"))
}
