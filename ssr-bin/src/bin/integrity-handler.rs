//! `integrity-handler`: the Configuration Integrity systemd service.
//!
//! ```text
//! integrity-handler --config /etc/integrity-handler.toml start
//! integrity-handler --config … lock
//! integrity-handler --config … status
//! integrity-handler --config … check-target VERSION [--previous VERSION]
//! integrity-handler --config … record-installed VERSION [--previous VERSION]
//! ```
//!
//! Exit codes: 0 success (including "no TPM 2.0: stays unencrypted"), 1 failure
//! (onboarding refused or failed, lock failed), 2 usage or configuration error,
//! 3 integrity event, 4 target version refused by the downgrade guard.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ssr_bin::integrity::downgrade::{self, Version};
use ssr_bin::integrity::journal::Logger;
use ssr_bin::integrity::{
    Config, Handler, StartError, Started, StepHook, config, connect_esapi, hardening,
    integrity_event, state_shows_onboarded,
};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INTEGRITY_EVENT: u8 = 3;
const EXIT_REFUSED: u8 = 4;

/// Configuration Integrity: onboard, unlock at every boot, react to integrity events.
#[derive(Debug, Parser)]
#[command(name = "integrity-handler", version, about)]
struct Args {
    /// The TOML configuration (see packaging/integrity-handler.toml).
    #[arg(long, default_value = "/etc/integrity-handler.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Onboard when not onboarded (TPM 2.0 and fscrypt present), unlock otherwise.
    Start,
    /// Remove the FEK from the kernel: the protected directories lock.
    Lock,
    /// Onboarding state, each directory's key status, the TPM's state.
    Status,
    /// For installers: may VERSION be installed? Refuses versions without
    /// Configuration Integrity once onboarded, except a rollback to the version the
    /// state directory's history shows installed before the current one.
    CheckTarget {
        /// The version to install (MAJOR.MINOR.PATCH[-suffix]).
        target: String,
        /// The previously installed version as the installer believes it: must agree
        /// with the recorded history (it never allows anything on its own).
        #[arg(long)]
        previous: Option<String>,
    },
    /// For installers, after an install or rollback: records VERSION as installed
    /// in the state directory's history.
    RecordInstalled {
        /// The version now installed.
        version: String,
        /// The version it replaced; recorded only when the history is empty (the
        /// first install of a release with Configuration Integrity).
        #[arg(long)]
        previous: Option<String>,
    },
}

/// Overrides of the compiled-in state directory and journal socket, used only when
/// the configuration cannot be loaded (tests; unusual installs). The unit sets none.
const STATE_DIR_ENV: &str = "INTEGRITY_HANDLER_STATE_DIR";
const JOURNAL_SOCKET_ENV: &str = "INTEGRITY_HANDLER_JOURNAL_SOCKET";

fn main() -> ExitCode {
    // First of all: no core dump, no swapped-out page may ever hold the FEK.
    let hardening = hardening::harden_process();
    let args = Args::parse();
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return config_failure(&args.command, e),
    };
    let log = Logger::new(&cfg.journal_socket);
    if let Some(e) = &hardening.dumpable_error {
        log.warn(&format!(
            "prctl(PR_SET_DUMPABLE, 0) failed: {e}: a core dump could hold the FEK"
        ));
    }
    if let (Some(e), Cmd::Start) = (&hardening.mlock_error, &args.command) {
        log.warn(&format!(
            "mlockall failed: {e}: pages holding the FEK could be swapped out (needs CAP_IPC_LOCK or LimitMEMLOCK=infinity)"
        ));
    }
    let handler = Handler::new(&cfg, &log);
    let connect = || connect_esapi(&cfg);
    match args.command {
        Cmd::Start => match handler.start(connect, &mut StepHook::from_env()) {
            Ok(Started::Unencrypted { .. })
            | Ok(Started::Onboarded { .. })
            | Ok(Started::Unlocked { .. }) => ExitCode::SUCCESS,
            Err(StartError::IntegrityEvent(_)) => ExitCode::from(EXIT_INTEGRITY_EVENT),
            Err(e @ StartError::Onboarding(_)) => {
                log.error(&e.to_string());
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Cmd::Lock => match handler.lock() {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                log.error(&format!("lock failed: {e}"));
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Cmd::Status => {
            print!("{}", handler.status(connect));
            ExitCode::SUCCESS
        }
        Cmd::CheckTarget { target, previous } => {
            let parse = |s: &str| s.parse::<Version>();
            let (target, previous) =
                match (parse(&target), previous.as_deref().map(parse).transpose()) {
                    (Ok(t), Ok(p)) => (t, p),
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("integrity-handler: {e}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                };
            // A damaged record still means onboarded, a damaged history shows no
            // previous version: be conservative.
            let onboarded = handler.is_onboarded().unwrap_or(true);
            let history = handler.installed_history().unwrap_or_else(|e| {
                eprintln!("integrity-handler: {e}");
                downgrade::History::default()
            });
            match downgrade::check_target(onboarded, target, previous, &history) {
                Ok(why) => {
                    println!("allowed: {target} ({why:?})");
                    ExitCode::SUCCESS
                }
                Err(refused) => {
                    eprintln!("integrity-handler: {refused}");
                    ExitCode::from(EXIT_REFUSED)
                }
            }
        }
        Cmd::RecordInstalled { version, previous } => {
            let parse = |s: &str| s.parse::<Version>();
            let (version, previous) =
                match (parse(&version), previous.as_deref().map(parse).transpose()) {
                    (Ok(v), Ok(p)) => (v, p),
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("integrity-handler: {e}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                };
            match handler.record_installed(version, previous) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    log.error(&format!("cannot record the installed version: {e}"));
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

/// The configuration is missing, unreadable or invalid. On a system whose
/// (compiled-in) state directory shows it onboarded, `start` cannot unlock: an
/// integrity event (the network blocked with the default `nft`, the emergency record
/// to the default journal socket). Otherwise a configuration error, exit 2.
fn config_failure(command: &Cmd, e: ssr_bin::integrity::Error) -> ExitCode {
    let state_dir = std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_STATE_DIR));
    if !matches!(command, Cmd::Start) || !state_shows_onboarded(&state_dir) {
        eprintln!("integrity-handler: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let socket = std::env::var_os(JOURNAL_SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_JOURNAL_SOCKET));
    let log = Logger::new(&socket);
    log.error(&format!(
        "the state directory {} shows an onboarded system, but its configuration cannot be used",
        state_dir.display()
    ));
    integrity_event(&log, Some(std::path::Path::new("nft")), e);
    ExitCode::from(EXIT_INTEGRITY_EVENT)
}
