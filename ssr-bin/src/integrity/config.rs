//! The service configuration (TOML).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{Error, Result};

/// Where journald listens for native-protocol datagrams.
pub const DEFAULT_JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The state directory the packaged configuration names; compiled in so that a
/// missing or broken configuration of an onboarded system is still recognised.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/integrity-handler";
/// The onboarding record's name in the state directory.
pub const RECORD_FILE: &str = "onboarded";

/// The integrity handler's configuration.
///
/// ```toml
/// tcti = "device:/dev/tpmrm0"
/// state-dir = "/var/lib/integrity-handler"
/// directories = ["/etc/128technology/secure", "/var/lib/128technology/secure"]
/// block-network-on-event = true
/// # optional
/// key-handle = 0x81000100
/// mac-key-handle = 0x81000110
/// pcrs = [7]
/// tpm-wait-seconds = 30
/// journal-socket = "/run/systemd/journal/socket"
/// nft = "nft"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// The TPM's TCTI (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`).
    pub tcti: String,
    /// Holds the sealed FEK and the onboarding record; must not be protected itself.
    pub state_dir: PathBuf,
    /// The directories to protect: absolute, distinct, none inside another.
    pub directories: Vec<PathBuf>,
    /// Load the drop-everything nftables ruleset on an integrity event.
    pub block_network_on_event: bool,
    /// The persistent handle of the TPM sealing key (default: ssr-tpm's).
    #[serde(default)]
    pub key_handle: Option<u32>,
    /// The persistent handle of the TPM HMAC key that authenticates the sealed FEK
    /// (default: ssr-tpm's).
    #[serde(default)]
    pub mac_key_handle: Option<u32>,
    /// PCRs (SHA-256 bank, 0-23) the sealing keys are bound to at onboarding, e.g.
    /// `[7]` (Secure Boot state): a changed value is an integrity event. Empty (the
    /// default): not bound. An onboarded system keeps the binding of its sealed FEK.
    #[serde(default)]
    pub pcrs: Vec<u8>,
    /// On an onboarded system, how long `start` waits for a TPM that does not answer
    /// yet before that is an integrity event.
    #[serde(default = "default_tpm_wait_seconds")]
    pub tpm_wait_seconds: u64,
    /// journald's native socket; records are sent there and to stderr.
    #[serde(default = "default_journal_socket")]
    pub journal_socket: PathBuf,
    /// The `nft` program.
    #[serde(default = "default_nft")]
    pub nft: PathBuf,
}

fn default_journal_socket() -> PathBuf {
    PathBuf::from(DEFAULT_JOURNAL_SOCKET)
}

fn default_tpm_wait_seconds() -> u64 {
    30
}

fn default_nft() -> PathBuf {
    PathBuf::from("nft")
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Config::parse(&text).map_err(|reason| Error::Config {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> std::result::Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.message().to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// The sealed FEK file.
    pub fn sealed_fek_path(&self) -> PathBuf {
        self.state_dir.join("sealed-fek")
    }

    /// The installed-version history of the downgrade guard.
    pub fn history_path(&self) -> PathBuf {
        self.state_dir.join("installed-versions")
    }

    /// The onboarding record.
    pub fn record_path(&self) -> PathBuf {
        self.state_dir.join(RECORD_FILE)
    }

    /// The configured PCRs as ssr-tpm's selection (validated by [`Config::parse`]).
    pub fn pcr_selection(&self) -> ssr_tpm::PcrSelection {
        ssr_tpm::PcrSelection::from_indices(&self.pcrs).unwrap_or_default()
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let mut seen_pcrs = HashSet::new();
        for &pcr in &self.pcrs {
            if pcr > 23 {
                return Err(format!("pcrs: PCR {pcr} does not exist (0-23)"));
            }
            if !seen_pcrs.insert(pcr) {
                return Err(format!("pcrs: PCR {pcr} is listed twice"));
            }
        }
        if self.tpm_wait_seconds > 600 {
            return Err("tpm-wait-seconds: at most 600".into());
        }
        if self.tcti.trim().is_empty() {
            return Err("tcti is empty".into());
        }
        if !self.state_dir.is_absolute() {
            return Err(format!(
                "state-dir {} is not absolute",
                self.state_dir.display()
            ));
        }
        if self.directories.is_empty() {
            return Err("directories is empty: nothing to protect".into());
        }
        let mut seen = HashSet::new();
        for dir in &self.directories {
            if !dir.is_absolute() || dir.parent().is_none() {
                return Err(format!(
                    "directory {} is not an absolute path below /",
                    dir.display()
                ));
            }
            if dir.components().any(|c| {
                matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            }) {
                return Err(format!("directory {} contains . or ..", dir.display()));
            }
            if !seen.insert(dir) {
                return Err(format!("directory {} is listed twice", dir.display()));
            }
            if self.state_dir.starts_with(dir) {
                return Err(format!(
                    "state-dir {} is inside protected directory {}: the sealed FEK must be readable before unlocking",
                    self.state_dir.display(),
                    dir.display()
                ));
            }
        }
        for a in &self.directories {
            for b in &self.directories {
                if a != b && b.starts_with(a) {
                    return Err(format!(
                        "protected directory {} is inside protected directory {}",
                        b.display(),
                        a.display()
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
tcti = "device:/dev/tpmrm0"
state-dir = "/var/lib/integrity-handler"
directories = ["/etc/secure", "/var/lib/secure"]
block-network-on-event = true
"#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.directories.len(), 2);
        assert!(c.block_network_on_event);
        assert_eq!(c.journal_socket, Path::new(DEFAULT_JOURNAL_SOCKET));
        assert_eq!(c.key_handle, None);
        assert!(c.pcr_selection().is_empty());
        assert_eq!(c.tpm_wait_seconds, 30);
        let bound = Config::parse(&format!("{GOOD}pcrs = [0, 7]\n")).unwrap();
        assert_eq!(bound.pcr_selection().mask(), 0x81);
        assert_eq!(
            c.sealed_fek_path(),
            Path::new("/var/lib/integrity-handler/sealed-fek")
        );
    }

    #[test]
    fn rejects_bad_configurations() {
        let cases = [
            (
                GOOD.replace("block-network", "blocknetwork"),
                "unknown field",
            ),
            (GOOD.replace("\"/etc/secure\", ", ""), ""),
            (
                GOOD.replace("\"/etc/secure\"", "\"etc/secure\""),
                "not an absolute",
            ),
            (
                GOOD.replace("\"/etc/secure\"", "\"/var/lib/secure\""),
                "listed twice",
            ),
            (
                GOOD.replace("\"/etc/secure\"", "\"/var/lib/secure/inner\""),
                "inside protected directory",
            ),
            (
                GOOD.replace("/var/lib/integrity-handler", "/etc/secure/state"),
                "state-dir",
            ),
            (
                GOOD.replace("\"/etc/secure\", \"/var/lib/secure\"", ""),
                "nothing to protect",
            ),
            (GOOD.replace("\"/etc/secure\"", "\"/etc/../x\""), ".."),
            (GOOD.replace("device:/dev/tpmrm0", " "), "tcti"),
            (GOOD.replace("tcti = \"device:/dev/tpmrm0\"", ""), "tcti"),
            (format!("{GOOD}pcrs = [7, 24]\n"), "PCR 24 does not exist"),
            (format!("{GOOD}pcrs = [7, 7]\n"), "listed twice"),
            (format!("{GOOD}pcrs = [-1]\n"), "invalid value"),
            (format!("{GOOD}tpm-wait-seconds = 601\n"), "at most 600"),
        ];
        for (text, want) in cases {
            match Config::parse(&text) {
                Ok(c) if want.is_empty() => assert_eq!(c.directories.len(), 1),
                Ok(c) => panic!("accepted {text}: {c:?}"),
                Err(e) => assert!(e.contains(want), "{e:?} lacks {want:?}"),
            }
        }
    }
}
