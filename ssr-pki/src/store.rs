//! The on-disk PKI store (an adapter: files only, no network, no clock).
//!
//! ```text
//! <dir>/                       0700
//!   router.key                 PKCS#8 PEM P-256 private key, 0600 (routers without a TPM)
//!   tpm-keys/router.key        or: the router key in the TPM, an ssr-tpm key store entry
//!                              (the private part wrapped by the TPM's master key)
//!   router.csr                 the last CSR (PEM)
//!   router.pem                 the imported certificate, then its chain (PEM)
//!   trust/<name>.pem           installed trust bundles
//!   crl/config.json            {"urls":[…],"polling_hours":24,"backoff_secs":60}
//!   crl/<sha256(url)>.crl      the last CRL ingested from each URL (DER)
//!   crl/master.json            the merged master revoked list
//!   crl/status.json            per-URL fetch status and alarms
//!   audit.jsonl                audit events, one JSON object per line
//!   counters.json              the security counters
//! ```
//! Every file is replaced atomically (written beside, fsynced, renamed, directory
//! fsynced), so a crash leaves the old or the new version, never a mix.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::Error;
use crate::audit::{AuditEvent, Counter, Counters};
use crate::cert::Certificate;
use crate::crl::Crl;
use crate::crl_manager::{
    CrlConfig, DEFAULT_BACKOFF_SECS, DEFAULT_POLLING_HOURS, MasterList, SourceStatus,
};
use crate::keys::PrivateKey;
use crate::pem::{PemItem, parse_pem_bundle};

/// The default store directory.
pub const DEFAULT_DIR: &str = "/var/lib/ssr/pki";
/// The store's subdirectory that is the ssr-tpm key store of the TPM-held router key.
pub const TPM_KEY_DIR: &str = "tpm-keys";

/// The CRL manager's persisted configuration (`crl/config.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlSettings {
    /// CRL URLs.
    pub urls: Vec<String>,
    /// `polling-interval`, hours.
    pub polling_hours: u32,
    /// `backoff-interval`, seconds.
    pub backoff_secs: u32,
}

impl Default for CrlSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            polling_hours: DEFAULT_POLLING_HOURS,
            backoff_secs: DEFAULT_BACKOFF_SECS,
        }
    }
}

impl CrlSettings {
    /// The validated manager configuration.
    pub fn to_config(&self) -> Result<CrlConfig, Error> {
        CrlConfig::new(&self.urls)?
            .with_polling_hours(self.polling_hours)?
            .with_backoff_secs(self.backoff_secs)
    }
}

/// The CRL state's update right ([`Store::try_lock_crls`]); released on drop (the
/// file is held only for its lock).
#[derive(Debug)]
pub struct CrlLock {
    _file: fs::File,
}

/// A PKI store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl Store {
    /// Opens (creating with mode 0700 if needed) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        for d in [dir.clone(), dir.join("trust"), dir.join("crl")] {
            fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err(&dir, e))?;
        Ok(Self { dir })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of a file of the store.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Replaces `path` atomically with `bytes`, created with `mode`.
    pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
        let parent = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = parent.join(format!(".{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(parent, e))
    }

    fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, Error> {
        match fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path, e)),
        }
    }

    fn read_text_opt(path: &Path) -> Result<Option<String>, Error> {
        Self::read_opt(path)?
            .map(|b| String::from_utf8(b).map_err(|_| io_err(path, "not UTF-8 text")))
            .transpose()
    }

    fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, Error> {
        Self::read_text_opt(path)?
            .map(|t| serde_json::from_str(&t).map_err(|e| io_err(path, e)))
            .transpose()
    }

    fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
        let mut text = serde_json::to_string_pretty(value).map_err(|e| io_err(path, e))?;
        text.push('\n');
        Self::write_atomic(path, text.as_bytes(), 0o644)
    }

    /// Writes the router key (0600). Refuses to replace an existing key unless
    /// `replace` is set.
    pub fn save_private_key(&self, key: &PrivateKey, replace: bool) -> Result<PathBuf, Error> {
        let path = self.path("router.key");
        if !replace && path.exists() {
            return Err(io_err(
                &path,
                "a router key exists already (use --force to replace it)",
            ));
        }
        let pem = key.secret_pkcs8_pem()?;
        Self::write_atomic(&path, pem.as_bytes(), 0o600)?;
        Ok(path)
    }

    /// The directory of the ssr-tpm key store holding the TPM-held router key (entry
    /// `router`): `<dir>/tpm-keys`.
    pub fn tpm_key_dir(&self) -> PathBuf {
        self.path(TPM_KEY_DIR)
    }

    /// Whether the router key is held in the TPM (the key store entry exists).
    pub fn has_tpm_router_key(&self) -> bool {
        self.tpm_key_dir().join("router.key").exists()
    }

    /// Removes the software router key (after a TPM key replaced it).
    pub fn remove_private_key(&self) -> Result<(), Error> {
        let path = self.path("router.key");
        match fs::remove_file(&path) {
            Ok(()) => fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(&self.dir, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// The router key, if one was generated.
    pub fn load_private_key(&self) -> Result<Option<PrivateKey>, Error> {
        let path = self.path("router.key");
        let Some(text) = Self::read_text_opt(&path)? else {
            return Ok(None);
        };
        let text = zeroize::Zeroizing::new(text);
        PrivateKey::from_pkcs8_pem(&text).map(Some)
    }

    /// Writes a text file of the store (0644).
    pub fn save_text(&self, name: &str, text: &str) -> Result<PathBuf, Error> {
        let path = self.path(name);
        Self::write_atomic(&path, text.as_bytes(), 0o644)?;
        Ok(path)
    }

    /// The imported certificate, if any.
    pub fn load_certificate(&self) -> Result<Option<Certificate>, Error> {
        let path = self.path("router.pem");
        Self::read_text_opt(&path)?
            .map(|t| {
                parse_pem_bundle(&t)?
                    .into_iter()
                    .find_map(|i| match i {
                        PemItem::Certificate(c) => Some(c),
                        _ => None,
                    })
                    .ok_or_else(|| io_err(&path, "no certificate"))
            })
            .transpose()
    }

    /// Saves a trust bundle under `name` (letters, digits, `-`, `_`, `.`).
    pub fn save_trust_bundle(&self, name: &str, pem: &str) -> Result<PathBuf, Error> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(Error::InvalidConfig {
                field: "trusted-ca-certificate name",
                reason: format!("{name:?}: use 1-64 letters, digits, '-', '_' or '.'"),
            });
        }
        let path = self.dir.join("trust").join(format!("{name}.pem"));
        Self::write_atomic(&path, pem.as_bytes(), 0o644)?;
        Ok(path)
    }

    /// Every certificate of every installed trust bundle.
    pub fn trusted_certificates(&self) -> Result<Vec<Certificate>, Error> {
        let dir = self.dir.join("trust");
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| io_err(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem"))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for p in names {
            let text = fs::read_to_string(&p).map_err(|e| io_err(&p, e))?;
            for item in parse_pem_bundle(&text)? {
                if let PemItem::Certificate(c) = item {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// The CRL settings (defaults when none were saved).
    pub fn crl_settings(&self) -> Result<CrlSettings, Error> {
        Ok(Self::read_json(&self.path("crl/config.json"))?.unwrap_or_default())
    }

    /// Saves the CRL settings.
    pub fn save_crl_settings(&self, settings: &CrlSettings) -> Result<(), Error> {
        settings.to_config()?;
        Self::write_json(&self.path("crl/config.json"), settings)
    }

    fn crl_path(&self, url: &str) -> PathBuf {
        let h = sha2::Sha256::digest(url.as_bytes());
        let name: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
        self.dir.join("crl").join(format!("{name}.crl"))
    }

    /// Saves the last CRL ingested from `url`.
    pub fn save_crl(&self, url: &str, crl: &Crl) -> Result<(), Error> {
        Self::write_atomic(&self.crl_path(url), crl.der(), 0o644)
    }

    /// The CRL last ingested from `url`, as stored (DER).
    pub fn load_crl_bytes(&self, url: &str) -> Result<Option<Vec<u8>>, Error> {
        Self::read_opt(&self.crl_path(url))
    }

    /// Every stored CRL of the configured URLs (the known CRLs for import checks).
    pub fn known_crls(&self) -> Result<Vec<Crl>, Error> {
        let mut out = Vec::new();
        for url in self.crl_settings()?.urls {
            if let Some(der) = self.load_crl_bytes(&url)? {
                out.push(Crl::from_der(&der)?);
            }
        }
        Ok(out)
    }

    /// Publishes the master list atomically.
    pub fn publish_master_list(&self, list: &MasterList) -> Result<PathBuf, Error> {
        let path = self.path("crl/master.json");
        Self::write_atomic(&path, list.to_json().as_bytes(), 0o644)?;
        Ok(path)
    }

    /// The published master list, if any.
    pub fn master_list(&self) -> Result<Option<MasterList>, Error> {
        Self::read_text_opt(&self.path("crl/master.json"))?
            .map(|t| MasterList::from_json(&t))
            .transpose()
    }

    /// Saves the per-URL status.
    pub fn save_crl_status(&self, status: &[SourceStatus]) -> Result<(), Error> {
        Self::write_json(&self.path("crl/status.json"), &status)
    }

    /// The per-URL status of the last `ssr crl fetch`.
    pub fn crl_status(&self) -> Result<Vec<SourceStatus>, Error> {
        Ok(Self::read_json(&self.path("crl/status.json"))?.unwrap_or_default())
    }

    /// Appends an audit event to `audit.jsonl`.
    pub fn audit(&self, event: &AuditEvent) -> Result<(), Error> {
        let path = self.path("audit.jsonl");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        f.write_all(event.to_json_line().as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| io_err(&path, e))
    }

    /// Takes the right to update the CRL state (the stored CRLs, `crl/status.json`, the
    /// master list), or `None` while another process holds it. `ssr crl fetch` holds it
    /// for its run and `ssr crl watch` for its whole life, so two of them never
    /// interleave their read-modify-write of the status. An advisory `flock` on
    /// `crl/.lock`: released when the [`CrlLock`] is dropped or its process dies (a
    /// crashed holder leaves nothing stale behind).
    pub fn try_lock_crls(&self) -> Result<Option<CrlLock>, Error> {
        let path = self.path("crl/.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(CrlLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_err(&path, e)),
        }
    }

    /// The counters.
    pub fn counters(&self) -> Result<Counters, Error> {
        Ok(Self::read_json(&self.path("counters.json"))?.unwrap_or_default())
    }

    /// Adds `delta` to the stored counters.
    pub fn add_counters(&self, delta: &Counters) -> Result<(), Error> {
        let mut c = self.counters()?;
        c.merge(delta);
        Self::write_json(&self.path("counters.json"), &c)
    }

    /// Adds one to a stored counter.
    pub fn count(&self, counter: Counter) -> Result<(), Error> {
        let mut delta = Counters::default();
        delta.incr(counter);
        self.add_counters(&delta)
    }
}
