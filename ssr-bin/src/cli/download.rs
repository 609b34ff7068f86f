//! `ssr download`: not implemented yet (see the capability issue).

use clap::Args as ClapArgs;

use super::{CmdResult, Failure};

#[derive(Debug, ClapArgs)]
pub struct Args {}

pub fn run(_args: Args) -> CmdResult {
    Err(Failure::general("ssr download: not implemented yet"))
}
