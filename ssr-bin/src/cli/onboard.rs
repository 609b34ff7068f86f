//! `ssr onboard`: not implemented yet (see the capability issue).

use clap::Subcommand;

use super::{CmdResult, Failure};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Not implemented yet.
    Todo,
}

pub fn run(_cmd: Cmd) -> CmdResult {
    Err(Failure::general("ssr onboard: not implemented yet"))
}
