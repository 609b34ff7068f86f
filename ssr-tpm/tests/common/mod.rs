//! Helpers shared by the swtpm integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use ssr_testkit::Swtpm;
use ssr_tpm::esapi::EsapiTpm;

pub fn connect(tpm: &Swtpm) -> EsapiTpm {
    EsapiTpm::connect(&tpm.tcti()).expect("connect to swtpm")
}

/// Runs a command (tpm2-tools get this swtpm as their TCTI), asserting success.
pub fn run(tpm: Option<&Swtpm>, args: &[&str]) -> String {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    if let Some(tpm) = tpm {
        cmd.env("TPM2TOOLS_TCTI", tpm.tcti());
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
