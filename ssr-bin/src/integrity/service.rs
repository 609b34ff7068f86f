//! The service's three commands, wired to the TPM (ssr-tpm), the kernel (ssr-fscrypt),
//! the journal and nftables. The decisions are in [`super::plan`]; this module does
//! the I/O in a crash-safe order and logs every step.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ssr_fscrypt::kernel::{self, KeyStatus, RemoveOutcome};
use ssr_fscrypt::{KeyIdentifier, MasterKey, PolicyV2};
use ssr_tpm::esapi::EsapiTpm;
use ssr_tpm::{SealConfig, SealedFek, Tpm};

use super::config::Config;
use super::error::{Error, Result};
use super::fsutil;
use super::journal::Logger;
use super::nft;
use super::plan::{self, DirAction, DirState};
use super::record::Record;

/// The environment variable of the crash-test hook: `N` makes the process SIGKILL
/// itself right after the N-th durable onboarding step.
pub const KILL_AFTER_STEP_ENV: &str = "INTEGRITY_HANDLER_KILL_AFTER_STEP";

/// Counts the durable steps of onboarding; with a kill point set, the process kills
/// itself (SIGKILL, no destructors, no flush) right after that step, as a power loss
/// would.
#[derive(Debug, Default)]
pub struct StepHook {
    kill_after: Option<u32>,
    count: u32,
}

impl StepHook {
    /// No kill point.
    pub fn none() -> Self {
        Self::default()
    }

    /// Kill point from [`KILL_AFTER_STEP_ENV`], if set to a number.
    pub fn from_env() -> Self {
        StepHook {
            kill_after: std::env::var(KILL_AFTER_STEP_ENV)
                .ok()
                .and_then(|v| v.parse().ok()),
            count: 0,
        }
    }

    /// Steps passed so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    fn reached(&mut self, log: &Logger, step: &str) {
        self.count += 1;
        if self.kill_after == Some(self.count) {
            log.warn(&format!(
                "{KILL_AFTER_STEP_ENV}: killed after step {}: {step}",
                self.count
            ));
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            // `kill` cannot fail on our own pid; never go past the kill point anyway.
            std::process::abort();
        }
    }
}

/// Connects to the TPM at the configured TCTI and proves it answers by reading its
/// properties; the description names the manufacturer, firmware and sealing key.
pub fn connect_esapi(cfg: &Config) -> std::result::Result<(EsapiTpm, String), ssr_tpm::Error> {
    let mut tpm = EsapiTpm::connect(&cfg.tcti)?;
    // Without a resource manager, what a killed earlier run left loaded stays in
    // the TPM: clear it before it fills the TPM's object and session slots.
    let flushed = tpm.flush_stale()?;
    let handle = cfg.key_handle.unwrap_or(SealConfig::default().key_handle);
    let info = tpm.info_for(handle)?;
    let mut description = format!(
        "TPM 2.0 at {} answers: manufacturer {} {}, firmware {}.{}, spec revision {}.{:02}, sealing key {:#010x} {}",
        cfg.tcti,
        info.manufacturer,
        info.vendor,
        info.firmware.0,
        info.firmware.1,
        info.spec_revision / 100,
        info.spec_revision % 100,
        handle,
        if info.fek_key.is_some() {
            "present"
        } else {
            "not provisioned yet"
        },
    );
    if flushed > 0 {
        description.push_str(&format!(
            "; flushed {flushed} stale transient object(s)/session(s) left by an earlier run"
        ));
    }
    Ok((tpm, description))
}

/// What `start` achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The system stays unencrypted (no usable TPM 2.0, or no fscrypt support).
    Unencrypted {
        /// Why.
        reason: String,
    },
    /// Onboarding completed now.
    Onboarded {
        /// The FEK's key identifier.
        key: KeyIdentifier,
    },
    /// An onboarded system was unlocked.
    Unlocked {
        /// The FEK's key identifier.
        key: KeyIdentifier,
    },
}

/// Why `start` failed.
#[derive(Debug)]
pub enum StartError {
    /// Unlocking an onboarded system failed: the event was logged at emergency
    /// priority and the network blocked (when configured). Exit non-zero.
    IntegrityEvent(Error),
    /// Onboarding failed or was refused; an interrupted onboarding is resumed or
    /// restarted cleanly by the next `start`.
    Onboarding(Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::IntegrityEvent(e) => write!(f, "integrity event: {e}"),
            StartError::Onboarding(e) => write!(f, "onboarding failed: {e}"),
        }
    }
}

/// The integrity handler over one configuration.
#[derive(Debug)]
pub struct Handler<'a> {
    cfg: &'a Config,
    log: &'a Logger,
}

impl<'a> Handler<'a> {
    /// A handler logging through `log`.
    pub fn new(cfg: &'a Config, log: &'a Logger) -> Self {
        Handler { cfg, log }
    }

    /// Onboards a system that is not onboarded, unlocks one that is. `connect` opens
    /// the TPM and describes it (for the real one: [`connect_esapi`]).
    pub fn start<T: Tpm>(
        &self,
        connect: impl FnMut() -> std::result::Result<(T, String), ssr_tpm::Error>,
        hook: &mut StepHook,
    ) -> std::result::Result<Started, StartError> {
        let record_path = self.cfg.record_path();
        let record = match Record::read(&record_path) {
            Ok(r) => r,
            Err(e) => {
                // A record that exists but cannot be read: the system is onboarded
                // and its state is damaged.
                return Err(self.integrity_event(e));
            }
        };
        let sealed_present = self.cfg.sealed_fek_path().exists();
        match record {
            Some(record) => {
                self.log.info(&format!(
                    "system is onboarded (record {}, key identifier {}): unlocking",
                    record_path.display(),
                    record.key_identifier()
                ));
                match self.unlock(&record, connect) {
                    Ok(key) => {
                        self.unblock_network();
                        Ok(Started::Unlocked { key })
                    }
                    Err(e) => Err(self.integrity_event(e)),
                }
            }
            None => {
                self.log
                    .info("system is not onboarded: detecting capabilities");
                match self.onboard(sealed_present, connect, hook) {
                    Ok(started) => Ok(started),
                    // Encrypted content without its key: this system was onboarded
                    // and its state is gone.
                    Err(e @ Error::LostKey { .. }) => Err(self.integrity_event(e)),
                    Err(e) => Err(StartError::Onboarding(e)),
                }
            }
        }
    }

    /// Removes the FEK from the kernel: every protected directory locks (files still
    /// open stay readable until closed, and are reported).
    pub fn lock(&self) -> Result<LockReport> {
        let Some(record) = Record::read(&self.cfg.record_path())? else {
            self.log.info("system is not onboarded: nothing to lock");
            return Ok(LockReport::default());
        };
        let key = record.key_identifier();
        let mut report = LockReport::default();
        for (fs_path, dirs) in by_filesystem(record.directories()) {
            let names = join(&dirs);
            match kernel::remove_key(&fs_path, key) {
                Ok(RemoveOutcome::Removed) => {
                    self.log.info(&format!(
                        "FEK {key} removed from the kernel: locked {names}"
                    ));
                    report.locked.extend(dirs);
                }
                Ok(RemoveOutcome::FilesBusy) => {
                    self.log.warn(&format!(
                        "FEK {key} removed, but files under {names} are still open: they stay readable until closed; run `lock` again after closing them"
                    ));
                    report.busy.extend(dirs);
                }
                Ok(RemoveOutcome::OtherUsers) | Ok(_) => {
                    self.log.warn(&format!(
                        "FEK {key}: only this user's claim was removed; other users keep {names} unlocked"
                    ));
                    report.busy.extend(dirs);
                }
                Err(ssr_fscrypt::Error::Kernel { errno, .. }) if errno == libc::ENOKEY => {
                    self.log.info(&format!(
                        "FEK {key} is not in the kernel: {names} already locked"
                    ));
                    report.locked.extend(dirs);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }

    /// Onboarded or not, each directory's key status, the TPM's state.
    pub fn status<T: Tpm>(
        &self,
        connect: impl FnOnce() -> std::result::Result<(T, String), ssr_tpm::Error>,
    ) -> Status {
        let record = Record::read(&self.cfg.record_path());
        let tpm = match connect() {
            Ok((_, description)) => description,
            Err(e) => format!("unavailable: {e}"),
        };
        let sealed_fek = match SealedFek::read(&self.cfg.sealed_fek_path()) {
            Ok(s) => format!(
                "{} (sealing key {:#010x})",
                self.cfg.sealed_fek_path().display(),
                s.key_handle()
            ),
            Err(e) => e.to_string(),
        };
        let (onboarded, directories) = match &record {
            Ok(Some(r)) => (
                Onboarded::Yes(*r.key_identifier()),
                r.directories()
                    .iter()
                    .map(|d| (d.clone(), dir_status(d, Some(r.key_identifier()))))
                    .collect(),
            ),
            Ok(None) => (
                Onboarded::No,
                self.cfg
                    .directories
                    .iter()
                    .map(|d| (d.clone(), dir_status(d, None)))
                    .collect(),
            ),
            Err(e) => (Onboarded::Damaged(e.to_string()), Vec::new()),
        };
        Status {
            onboarded,
            tpm,
            sealed_fek,
            directories,
        }
    }

    /// The installed-version history of the state directory (empty when there is
    /// none yet).
    pub fn installed_history(&self) -> Result<super::downgrade::History> {
        let path = self.cfg.history_path();
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() > 64 * 1024 => Err(Error::Version(format!(
                "{}: larger than 64 KiB",
                path.display()
            ))),
            Ok(bytes) => super::downgrade::History::parse(&String::from_utf8_lossy(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Records an install of `installed` (replacing `before`, used only to start an
    /// empty history) in the state directory, atomically.
    pub fn record_installed(
        &self,
        installed: super::downgrade::Version,
        before: Option<super::downgrade::Version>,
    ) -> Result<super::downgrade::History> {
        let mut history = self.installed_history()?;
        history.record(installed, before);
        std::fs::create_dir_all(&self.cfg.state_dir)
            .map_err(|e| Error::io("create", &self.cfg.state_dir, e))?;
        fsutil::write_atomic(&self.cfg.history_path(), history.to_text().as_bytes())?;
        self.log.info(&format!(
            "installed version {installed} recorded (previous: {})",
            history
                .previous()
                .map_or_else(|| "none".to_string(), |v| v.to_string())
        ));
        Ok(history)
    }

    /// Whether the onboarding record exists (for the downgrade guard).
    pub fn is_onboarded(&self) -> Result<bool> {
        Ok(Record::read(&self.cfg.record_path())?.is_some())
    }

    fn unlock<T: Tpm>(
        &self,
        record: &Record,
        connect: impl FnMut() -> std::result::Result<(T, String), ssr_tpm::Error>,
    ) -> Result<KeyIdentifier> {
        let sealed_path = self.cfg.sealed_fek_path();
        let sealed = SealedFek::read(&sealed_path).map_err(tpm_error)?;
        self.log.info(&format!(
            "sealed FEK located at {} (sealing key {:#010x})",
            sealed_path.display(),
            sealed.key_handle()
        ));
        let (mut tpm, description) = self.wait_for_tpm(connect).map_err(tpm_error)?;
        self.log.info(&format!("TPM status: {description}"));
        let fek = ssr_tpm::unseal_fek(&mut tpm, &sealed).map_err(tpm_error)?;
        if sealed.is_authenticated() {
            self.log
                .info("sealed FEK authenticated by the TPM's HMAC key");
        }
        let key = MasterKey::from_bytes(fek.secret_bytes())?;
        drop(fek);
        let id = key.identifier();
        self.log.info(&format!(
            "FEK retrieved: unsealed by the TPM (key identifier {id})"
        ));
        if id != *record.key_identifier() {
            return Err(Error::WrongKey {
                path: self.cfg.record_path(),
                expected: record.key_identifier().to_string(),
                actual: id.to_string(),
            });
        }
        for dir in record.directories() {
            match kernel::get_policy(dir) {
                Ok(Some(p)) if p.key_identifier() == id => {}
                Ok(Some(p)) => {
                    return Err(Error::WrongKey {
                        path: dir.clone(),
                        expected: p.key_identifier().to_string(),
                        actual: id.to_string(),
                    });
                }
                Ok(None) => return Err(Error::NotProtected { path: dir.clone() }),
                Err(ssr_fscrypt::Error::Kernel { errno, .. }) if errno == libc::ENOENT => {
                    return Err(Error::NotProtected { path: dir.clone() });
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (fs_path, dirs) in by_filesystem(record.directories()) {
            kernel::add_key(&fs_path, &key)?;
            for dir in dirs {
                match kernel::key_status(&dir, &id)? {
                    KeyStatus::Present { .. } => self
                        .log
                        .info(&format!("directory {} unlocked", dir.display())),
                    other => {
                        return Err(Error::KeyNotPresent {
                            path: dir,
                            status: format!("{other:?}"),
                        });
                    }
                }
            }
        }
        for dir in &self.cfg.directories {
            if !record.directories().contains(dir) {
                self.log.warn(&format!(
                    "directory {} is configured but was not part of the onboarding: it is NOT protected",
                    dir.display()
                ));
            }
        }
        if !sealed.is_authenticated() {
            // A version-1 file from an earlier release: its FEK has just matched the
            // record and every directory's policy, so it is genuine; have the TPM tag it.
            self.upgrade_sealed_fek(&mut tpm, &sealed, &sealed_path);
        }
        self.log
            .info("all protected directories are unlocked; Configuration Integrity active");
        Ok(id)
    }

    /// Connects to the TPM of an onboarded system, retrying for up to
    /// `tpm-wait-seconds` while nothing answers (the TPM driver may probe after the
    /// service starts: systemd 252 has no tpm2.target to wait for).
    fn wait_for_tpm<T>(
        &self,
        mut connect: impl FnMut() -> std::result::Result<(T, String), ssr_tpm::Error>,
    ) -> std::result::Result<(T, String), ssr_tpm::Error> {
        let wait = std::time::Duration::from_secs(self.cfg.tpm_wait_seconds);
        let started = std::time::Instant::now();
        let mut said = false;
        loop {
            match connect() {
                Err(e @ ssr_tpm::Error::NoTpm { .. }) if started.elapsed() < wait => {
                    if !said {
                        self.log.warn(&format!(
                            "the TPM does not answer yet ({e}): waiting up to {} s",
                            wait.as_secs()
                        ));
                        said = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
                Ok(ok) => {
                    if said {
                        self.log.info(&format!(
                            "the TPM answered after {} ms",
                            started.elapsed().as_millis()
                        ));
                    }
                    return Ok(ok);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Rewrites a genuine version-1 sealed FEK as a version-2 one (same ciphertext,
    /// tagged by the TPM's HMAC key). A failure leaves the version-1 file in place and
    /// is only a warning: it still unlocks this system.
    fn upgrade_sealed_fek<T: Tpm>(&self, tpm: &mut T, sealed: &SealedFek, path: &Path) {
        match ssr_tpm::authenticate_sealed_fek(tpm, sealed, &self.seal_config())
            .and_then(|v2| v2.write_atomic(path))
        {
            Ok(()) => self.log.info(&format!(
                "sealed FEK at {} upgraded to version 2 (authenticated by the TPM's HMAC key)",
                path.display()
            )),
            Err(e) => self.log.warn(&format!(
                "sealed FEK at {} is version 1 (not authenticated by the TPM) and could not be upgraded: {e}",
                path.display()
            )),
        }
    }

    /// The sealing parameters of this configuration.
    fn seal_config(&self) -> SealConfig {
        let mut seal = SealConfig::default();
        if let Some(h) = self.cfg.key_handle {
            seal.key_handle = h;
        }
        if let Some(h) = self.cfg.mac_key_handle {
            seal.mac_key_handle = h;
        }
        seal.pcrs = self.cfg.pcr_selection();
        seal
    }

    fn onboard<T: Tpm>(
        &self,
        resume: bool,
        connect: impl FnOnce() -> std::result::Result<(T, String), ssr_tpm::Error>,
        hook: &mut StepHook,
    ) -> Result<Started> {
        // TPM 2.0 present and usable.
        let mut tpm =
            match connect() {
                Ok((t, description)) => {
                    self.log.info(&format!("TPM status: {description}"));
                    t
                }
                Err(e) => {
                    // Encrypted content with no TPM to unseal its key: the system was
                    // onboarded and has lost its TPM or its state.
                    if let Some(dir) = self.cfg.directories.iter().find(|d| {
                        matches!(inspect(d), Ok(DirState::Encrypted { empty: false, .. }))
                    }) {
                        return Err(Error::LostKey { path: dir.clone() });
                    }
                    let reason = format!("no usable TPM 2.0 ({e})");
                    self.log.warn(&format!(
                        "capability check: {reason}: the system stays unencrypted"
                    ));
                    return Ok(Started::Unencrypted { reason });
                }
            };
        self.log.info(&format!(
            "capability check: TPM 2.0 present and usable at {}",
            self.cfg.tcti
        ));
        // The file system of every directory supports encryption.
        for dir in &self.cfg.directories {
            if let Err(reason) = encryption_supported(dir) {
                self.log.warn(&format!(
                    "capability check: {}: {reason}: the system stays unencrypted",
                    dir.display()
                ));
                return Ok(Started::Unencrypted { reason });
            }
        }
        self.log.info(
            "capability check: the file system supports encryption for every protected directory",
        );
        let states = self
            .cfg
            .directories
            .iter()
            .map(|d| inspect(d).map(|s| (d.clone(), s)))
            .collect::<Result<Vec<_>>>()?;
        hook.reached(self.log, "capabilities detected");

        // An interrupted onboarding left a sealed FEK: use it if it still unseals.
        let sealed_path = self.cfg.sealed_fek_path();
        let mut key = None;
        if resume {
            // Only a file the TPM vouches for (version 2) is resumed from: anyone can
            // write a version-1 file for a FEK of their choice.
            let authenticated = SealedFek::read(&sealed_path).and_then(|s| {
                if s.is_authenticated() {
                    Ok(s)
                } else {
                    Err(ssr_tpm::Error::Corrupt {
                        what: "sealed FEK",
                        reason: "version 1 (not authenticated by the TPM)",
                    })
                }
            });
            match authenticated.and_then(|s| ssr_tpm::unseal_fek(&mut tpm, &s)) {
                Ok(fek) => {
                    let k = MasterKey::from_bytes(fek.secret_bytes())?;
                    self.log.info(&format!(
                        "FEK retrieved: the sealed FEK of an interrupted onboarding unseals (key identifier {}); resuming",
                        k.identifier()
                    ));
                    key = Some(k);
                }
                Err(e) => self.log.warn(&format!(
                    "the sealed FEK of an interrupted onboarding cannot be used ({e}); onboarding starts again"
                )),
            }
        }
        let known = key.as_ref().map(MasterKey::identifier);
        if let Err((dir, refusal)) = plan::precheck(
            states.iter().map(|(d, s)| (d.as_path(), *s)),
            known.as_ref(),
        ) {
            return Err(self.refusal(dir, refusal));
        }
        let key = match key {
            Some(k) => k,
            None => {
                if resume {
                    let aside = set_aside_path(&sealed_path);
                    std::fs::rename(&sealed_path, &aside)
                        .map_err(|e| Error::io("set aside", &sealed_path, e))?;
                    self.log
                        .warn(&format!("unusable sealed FEK kept as {}", aside.display()));
                }
                self.fresh_fek(&mut tpm, hook)?
            }
        };
        let id = key.identifier();

        for (fs_path, _) in by_filesystem(&self.cfg.directories) {
            kernel::add_key(&fs_path, &key)?;
        }
        self.log
            .info(&format!("FEK added to the kernel (key identifier {id})"));
        hook.reached(self.log, "key added");

        let policy = PolicyV2::new(id);
        for (dir, state) in &states {
            let action = plan::plan_directory(*state, &id)
                .map_err(|r| Error::Refused(format!("{}: {}", dir.display(), r.reason())))?;
            match action {
                DirAction::Keep => {}
                DirAction::Recreate => {
                    fsutil::remove_empty_dir_durable(dir)?;
                    self.log.info(&format!(
                        "removed {}: empty, encrypted with a key of an abandoned onboarding",
                        dir.display()
                    ));
                    hook.reached(self.log, "stale directory removed");
                    self.create_dir(dir, hook)?;
                }
                DirAction::Create => self.create_dir(dir, hook)?,
                DirAction::SetPolicy => {}
            }
            if action != DirAction::Keep {
                kernel::set_policy(dir, &policy)?;
                fsutil::sync_dir(dir)?;
                hook.reached(self.log, "policy set");
            }
            self.log.info(&format!(
                "directory {} encrypted (fscrypt v2, AES-256-XTS / AES-256-CBC-CTS, key {id}) and unlocked",
                dir.display()
            ));
        }

        let record = Record::new(id, self.cfg.directories.clone()).ok_or_else(|| {
            Error::Refused("a protected directory path is not writable in the record".into())
        })?;
        record.write_atomic(&self.cfg.record_path())?;
        self.log.info(&format!(
            "onboarding recorded at {}: Configuration Integrity active",
            self.cfg.record_path().display()
        ));
        hook.reached(self.log, "onboarding recorded");
        Ok(Started::Onboarded { key: id })
    }

    /// The error for a directory onboarding cannot take; encrypted content whose key
    /// is gone is [`Error::LostKey`] (an integrity event for the caller).
    fn refusal(&self, dir: &Path, refusal: plan::Refusal) -> Error {
        if refusal == plan::Refusal::ForeignEncryptedContent {
            return Error::LostKey {
                path: dir.to_path_buf(),
            };
        }
        let msg = format!("{}: {}", dir.display(), refusal.reason());
        self.log
            .error(&format!("onboarding refused, nothing changed: {msg}"));
        Error::Refused(msg)
    }

    fn fresh_fek<T: Tpm>(&self, tpm: &mut T, hook: &mut StepHook) -> Result<MasterKey> {
        let seal = self.seal_config();
        let (fek, sealed) = ssr_tpm::seal_new_fek(tpm, &seal).map_err(tpm_error)?;
        let key = MasterKey::from_bytes(fek.secret_bytes())?;
        drop(fek);
        self.log.info(&format!(
            "FEK generated by the TPM and sealed by its RSA-2048 key {:#010x}, the file tagged by its HMAC key {:#010x}, unsealed once as a check (key identifier {})",
            seal.key_handle,
            seal.mac_key_handle,
            key.identifier()
        ));
        hook.reached(self.log, "FEK generated");
        std::fs::create_dir_all(&self.cfg.state_dir)
            .map_err(|e| Error::io("create", &self.cfg.state_dir, e))?;
        let path = self.cfg.sealed_fek_path();
        sealed.write_atomic(&path).map_err(tpm_error)?;
        self.log
            .info(&format!("sealed FEK stored at {}", path.display()));
        hook.reached(self.log, "FEK stored");
        Ok(key)
    }

    fn create_dir(&self, dir: &Path, hook: &mut StepHook) -> Result<()> {
        fsutil::create_dir_durable(dir)?;
        self.log
            .info(&format!("directory {} created, empty", dir.display()));
        hook.reached(self.log, "directory created");
        Ok(())
    }

    /// Blocks the network (when configured) and emits the emergency line.
    fn integrity_event(&self, cause: Error) -> StartError {
        integrity_event(
            self.log,
            self.cfg
                .block_network_on_event
                .then_some(self.cfg.nft.as_path()),
            cause,
        )
    }

    /// After a successful unlock: an earlier integrity event's drop table (a TPM that
    /// answered late, a file put back) is removed, and the journal says so.
    fn unblock_network(&self) {
        match nft::unblock_network(&self.cfg.nft) {
            Ok(true) => self.log.info(&format!(
                "network unblocked: nftables table `{}` of an earlier integrity event removed after a successful unlock",
                nft::TABLE
            )),
            Ok(false) => {}
            Err(e) => self.log.error(&format!(
                "unlocked, but the drop table of an earlier integrity event could not be removed: {e}"
            )),
        }
    }
}

/// An integrity event: logs the cause, loads the drop table with `nft` (when given),
/// sends the emergency record.
pub fn integrity_event(log: &Logger, block_with: Option<&Path>, cause: Error) -> StartError {
    log.error(&format!("unlock failed: {cause}"));
    if let Some(nft_program) = block_with {
        match nft::block_network(nft_program) {
            Ok(()) => log.warn(&format!(
                "network blocked: nftables table `{}` drops everything but loopback",
                nft::TABLE
            )),
            Err(e) => log.error(&format!("cannot block the network: {e}")),
        }
    }
    log.integrity_event();
    StartError::IntegrityEvent(cause)
}

/// True when the state directory shows an onboarded system: the onboarding record
/// exists, or cannot be examined (conservative). Used when the configuration cannot
/// be loaded, with the compiled-in state directory.
pub fn state_shows_onboarded(state_dir: &Path) -> bool {
    match std::fs::symlink_metadata(state_dir.join(super::config::RECORD_FILE)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// What `lock` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LockReport {
    /// Directories now locked.
    pub locked: Vec<PathBuf>,
    /// Directories with files still open (or other users' claims): still readable.
    pub busy: Vec<PathBuf>,
}

/// Onboarding state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onboarded {
    /// Onboarded with this FEK.
    Yes(KeyIdentifier),
    /// Not onboarded.
    No,
    /// The record exists but cannot be read.
    Damaged(String),
}

/// A protected directory's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirStatus {
    /// Encrypted with the FEK, key in the kernel.
    Unlocked,
    /// Encrypted with the FEK, key not in the kernel.
    Locked,
    /// Key removed but files still open.
    IncompletelyLocked,
    /// Encrypted, but not with the recorded FEK (or the system is not onboarded).
    Encrypted(KeyIdentifier),
    /// Exists, not encrypted.
    NotEncrypted,
    /// Does not exist.
    Missing,
    /// Could not be examined.
    Error(String),
}

impl fmt::Display for DirStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirStatus::Unlocked => f.write_str("unlocked"),
            DirStatus::Locked => f.write_str("locked"),
            DirStatus::IncompletelyLocked => f.write_str("locked, files still open"),
            DirStatus::Encrypted(k) => write!(f, "encrypted with another key {k}"),
            DirStatus::NotEncrypted => f.write_str("not encrypted"),
            DirStatus::Missing => f.write_str("missing"),
            DirStatus::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Onboarded or not.
    pub onboarded: Onboarded,
    /// The TPM's state.
    pub tpm: String,
    /// The sealed FEK file's state.
    pub sealed_fek: String,
    /// Each protected directory.
    pub directories: Vec<(PathBuf, DirStatus)>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.onboarded {
            Onboarded::Yes(k) => writeln!(f, "onboarded: yes (FEK key identifier {k})")?,
            Onboarded::No => writeln!(f, "onboarded: no")?,
            Onboarded::Damaged(e) => writeln!(f, "onboarded: record damaged: {e}")?,
        }
        writeln!(f, "tpm: {}", self.tpm)?;
        writeln!(f, "sealed FEK: {}", self.sealed_fek)?;
        for (d, s) in &self.directories {
            writeln!(f, "directory {}: {s}", d.display())?;
        }
        Ok(())
    }
}

fn dir_status(dir: &Path, key: Option<&KeyIdentifier>) -> DirStatus {
    if !dir.exists() {
        return DirStatus::Missing;
    }
    let policy = match kernel::get_policy(dir) {
        Ok(Some(p)) => p,
        Ok(None) => return DirStatus::NotEncrypted,
        Err(e) => return DirStatus::Error(e.to_string()),
    };
    let id = policy.key_identifier();
    if key != Some(&id) {
        return DirStatus::Encrypted(id);
    }
    match kernel::key_status(dir, &id) {
        Ok(KeyStatus::Present { .. }) => DirStatus::Unlocked,
        Ok(KeyStatus::Absent) => DirStatus::Locked,
        Ok(_) => DirStatus::IncompletelyLocked,
        Err(e) => DirStatus::Error(e.to_string()),
    }
}

/// A protected directory as it is on disk.
fn inspect(dir: &Path) -> Result<DirState> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirState::Missing),
        Err(e) => return Err(Error::io("stat", dir, e)),
    };
    if !meta.is_dir() {
        return Ok(DirState::NotADirectory);
    }
    let empty = fsutil::dir_is_empty(dir)?;
    Ok(match kernel::get_policy(dir)? {
        Some(p) => DirState::Encrypted {
            key: p.key_identifier(),
            empty,
        },
        None => DirState::Plain { empty },
    })
}

/// `Ok` when `dir` (or, while it does not exist, its nearest existing ancestor) is on
/// a file system with fscrypt and not inside another encrypted directory.
fn encryption_supported(dir: &Path) -> std::result::Result<(), String> {
    let exists = std::fs::symlink_metadata(dir).is_ok();
    let probe = if exists {
        dir
    } else {
        dir.ancestors()
            .skip(1)
            .find(|a| a.is_dir())
            .ok_or_else(|| "no existing ancestor".to_string())?
    };
    match kernel::get_policy(probe) {
        Ok(None) => Ok(()),
        Ok(Some(_)) if exists => Ok(()),
        Ok(Some(_)) => Err(format!(
            "{} is itself encrypted; a protected directory cannot be nested in it",
            probe.display()
        )),
        Err(ssr_fscrypt::Error::EncryptionUnsupported { .. }) => Err(format!(
            "the file system of {} does not support encryption",
            probe.display()
        )),
        Err(e) => Err(format!("cannot probe encryption support: {e}")),
    }
}

/// Groups directories by file system (device number). Each group comes with the
/// path the key ioctls are issued on: the file system's topmost directory on the way
/// to the first directory (its mount point), never a protected directory itself,
/// whose open descriptor would keep it "busy" during key removal. A missing directory
/// is placed through its nearest existing ancestor.
fn by_filesystem(dirs: &[PathBuf]) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut groups: BTreeMap<u64, (PathBuf, Vec<PathBuf>)> = BTreeMap::new();
    for (i, dir) in dirs.iter().enumerate() {
        let dev = dir
            .ancestors()
            .find_map(|a| std::fs::metadata(a).ok().map(|m| m.dev()));
        let Some(dev) = dev else {
            // Nothing on the way exists (not even /): keep the directory on its own.
            groups.insert(u64::MAX - i as u64, (dir.clone(), vec![dir.clone()]));
            continue;
        };
        let top = dir
            .ancestors()
            .filter(|a| std::fs::metadata(a).is_ok_and(|m| m.dev() == dev))
            .last()
            .unwrap_or(dir)
            .to_path_buf();
        groups
            .entry(dev)
            .or_insert_with(|| (top, Vec::new()))
            .1
            .push(dir.clone());
    }
    groups.into_values().collect()
}

fn set_aside_path(sealed: &Path) -> PathBuf {
    let mut n = 1u32;
    loop {
        let mut name = sealed.as_os_str().to_os_string();
        name.push(format!(".unusable-{n}"));
        let p = PathBuf::from(name);
        if !p.exists() || n == u32::MAX {
            return p;
        }
        n += 1;
    }
}

fn tpm_error(e: ssr_tpm::Error) -> Error {
    Error::Tpm(e.to_string())
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
