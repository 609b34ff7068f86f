use std::process::ExitCode;

use clap::Parser;
use ssr_bin::cli;

fn main() -> ExitCode {
    cli::exit(cli::run(cli::Cli::parse()))
}
