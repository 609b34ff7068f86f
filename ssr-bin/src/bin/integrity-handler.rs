//! The Configuration Integrity service: not implemented yet (see its issue).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("integrity-handler: not implemented yet");
    ExitCode::FAILURE
}
