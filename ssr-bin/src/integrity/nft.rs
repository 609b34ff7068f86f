//! Blocking the network on an integrity event: an nftables table of its own whose
//! base chains drop everything but loopback.
//!
//! The table has the highest priority (-400) on the input, forward and output hooks;
//! a packet dropped by any base chain is dropped whatever other tables say. Loading is
//! one `nft -f -` transaction that replaces any earlier copy of the table, so loading
//! twice (systemd restarts the service) is harmless. Inspect it with
//! `nft list table inet integrity_handler`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::error::{Error, Result};

/// The nftables family and table name.
pub const TABLE: &str = "inet integrity_handler";

/// The ruleset text `nft -f -` loads.
pub fn block_ruleset() -> String {
    format!(
        "add table {TABLE}
delete table {TABLE}
table {TABLE} {{
	chain input {{
		type filter hook input priority -400; policy drop;
		iif \"lo\" accept
	}}
	chain forward {{
		type filter hook forward priority -400; policy drop;
	}}
	chain output {{
		type filter hook output priority -400; policy drop;
		oif \"lo\" accept
	}}
}}
"
    )
}

/// Loads [`block_ruleset`] with `nft -f -`.
pub fn block_network(nft: &Path) -> Result<()> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("cannot run {}: {e}", nft.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(block_ruleset().as_bytes())
            .map_err(|e| Error::Nft(format!("writing the ruleset to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(format!(
            "nft -f - failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Removes the table after a successful unlock. `Ok(true)` when it was there and is
/// gone, `Ok(false)` when there was none (or `nft` is not installed: then nothing
/// can have loaded it).
pub fn unblock_network(nft: &Path) -> Result<bool> {
    let listed = match Command::new(nft)
        .args(["list", "table"])
        .args(TABLE.split(' '))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) => status.success(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::Nft(format!("cannot run {}: {e}", nft.display()))),
    };
    if !listed {
        return Ok(false);
    }
    let out = Command::new(nft)
        .args(["delete", "table"])
        .args(TABLE.split(' '))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::Nft(format!("cannot run {}: {e}", nft.display())))?;
    if out.status.success() {
        Ok(true)
    } else {
        Err(Error::Nft(format!(
            "nft delete table {TABLE} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft --check` parses the ruleset without touching the kernel's tables.
    #[test]
    fn ruleset_passes_nft_check() {
        if !ssr_testkit::require_root() {
            return;
        }
        let mut child = Command::new("nft")
            .args(["--check", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft installed (apt-get install nftables)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(block_ruleset().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
