//! `ssr cert …` and `ssr crl …`: the router's key, CSR and certificate, trust bundles,
//! verification, and CRL fetching, over the store of `ssr_pki::store` (`--store DIR`,
//! default `/var/lib/ssr/pki`).
//!
//! Exit codes: 0 success; 1 the operation was refused or failed (a rejected
//! certificate or bundle, a chain that does not verify, a CRL that could not be
//! fetched); 2 bad input (arguments, unreadable files, invalid UUID).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use getrandom::SysRng;
use p256::ecdsa::VerifyingKey;
use rand_core::UnwrapErr;
use ssr_pki::alarm::{Condition, FailMode, decide};
use ssr_pki::audit::{AuditEvent, Counter, fingerprint_hex};
use ssr_pki::crl_manager::{CrlManager, Output, split_supported};
use ssr_pki::csr::{Csr, RouterUuid};
use ssr_pki::http::{Client, FetchOptions, crl_client, drive_with, fetch_with};
use ssr_pki::import::{ChainCheck, ImportPolicy, import_certificate};
use ssr_pki::keys::{PrivateKey, verifying_key_from_der};
use ssr_pki::store::{CrlLock, CrlSettings, DEFAULT_DIR, Store};
use ssr_pki::tpm::ROUTER_KEY_NAME;
use ssr_pki::trust::{TrustBundle, ValidationMode};
use ssr_pki::{
    Certificate, ChainOptions, Crl, Error, PemItem, RevocationPolicy, Role, check_certificate,
    parse_pem_bundle, verify_chain,
};
use ssr_tpm::esapi::TpmKey;
use ssr_tpm::identity::DEFAULT_MASTER_KEY_HANDLE;
use ssr_tpm::keystore::KeyStore;

use super::{CmdResult, Failure};

/// Where the store lives.
#[derive(Debug, Clone, Args)]
pub struct StoreArg {
    /// PKI store directory (router key, certificate, trust bundles, CRL state, audit).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub store: PathBuf,
}

/// A validation time other than now.
#[derive(Debug, Clone, Args)]
pub struct AtArg {
    /// Check at this time (Unix seconds) instead of now.
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    pub at: Option<i64>,
}

impl AtArg {
    fn unix(&self) -> i64 {
        self.at.unwrap_or_else(unix_now)
    }
}

/// The TPM holding the router key.
#[derive(Debug, Clone, Args)]
pub struct TctiArg {
    /// TCTI of the TPM holding the router key (`device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=2321`); default: $TPM2TOOLS_TCTI, else
    /// device:/dev/tpmrm0. Used only when the router key is in the TPM.
    #[arg(long)]
    pub tcti: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Generate the router's P-256 key: in the TPM with `--tpm`, else in software.
    ///
    /// `--tpm` creates the key through ssr-tpm's key store (entry `router` in
    /// `<store>/tpm-keys`, wrapped by the TPM's master key at 0x81000101, which is
    /// created first if absent): the private key never leaves the TPM. It is the one
    /// router key (SPEC 3.4): `ssr cert csr` signs with it, `ssr onboard join` proves
    /// possession of it (its `tpm-key-store` defaults to the same directory), and SVR
    /// peer authentication uses the certificate issued for it. Without `--tpm`, a
    /// software key is written 0600 to `<store>/router.key` (routers without a TPM).
    /// An existing key of either kind is never replaced without `--force`; with
    /// `--force` the other kind is removed so one router key remains.
    Keygen {
        #[command(flatten)]
        store: StoreArg,
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
        /// Create the key in the TPM (ssr-tpm key store) instead of in software.
        #[arg(long)]
        tpm: bool,
        #[command(flatten)]
        tcti: TctiArg,
    },
    /// Build a PKCS#10 CSR with CN = the router UUID, signed by the router key (inside
    /// the TPM when `ssr cert keygen --tpm` made it); prints it (PEM).
    Csr {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        tcti: TctiArg,
        /// The router UUID (8-4-4-4-12 hex).
        #[arg(long)]
        uuid: String,
        /// Also write the CSR here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Import the router's certificate after the three checks (no private key in the
    /// file; valid leaf that chains to an installed CA and carries the router key; not
    /// on a known CRL).
    ///
    /// With no trusted CA bundle installed (`ssr cert install-ca`) the chain check
    /// cannot be met and the import is refused, unless `--no-chain-check` is given: the
    /// certificate is then imported without checking its issuer, and the choice is
    /// written to the audit log (`system.import_without_chain_check`).
    Import {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        at: AtArg,
        /// Import without verifying the chain to a trusted CA (audited). The other checks
        /// (no private key, validity and role, router key, CRLs) still run.
        #[arg(long)]
        no_chain_check: bool,
        /// PEM file: the certificate, optionally followed by its chain.
        file: PathBuf,
    },
    /// Install a trusted CA bundle (issuing CA up to the root, one PEM file).
    InstallCa {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        at: AtArg,
        /// `strict`: any issue rejects the bundle; `warn`: install and list every issue.
        #[arg(long, value_name = "strict|warn")]
        mode: String,
        /// Name of the trusted-ca-certificate entry.
        #[arg(long, default_value = "svrv2-root-of-trust")]
        name: String,
        /// The PEM bundle.
        bundle: PathBuf,
    },
    /// Verify a certificate chain (exit 0 when valid, 1 with the reason otherwise).
    Verify {
        /// Trust anchors (PEM; self-signed certificates are anchors, others intermediates).
        #[arg(long, value_name = "BUNDLE")]
        trust: PathBuf,
        /// Untrusted intermediate certificates (PEM).
        #[arg(long, value_name = "PEM")]
        untrusted: Option<PathBuf>,
        /// CRL (PEM or DER); repeatable.
        #[arg(long, value_name = "PEM")]
        crl: Vec<PathBuf>,
        /// Every certificate of the path must be covered by a current CRL of its
        /// issuer (without it, certificates whose issuer has no CRL given are accepted).
        #[arg(long)]
        require_crl: bool,
        #[command(flatten)]
        at: AtArg,
        /// The certificate to verify (PEM).
        cert: PathBuf,
    },
    /// Show a certificate: subject, issuer, validity, alarm level.
    Show {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        at: AtArg,
        /// `fail-soft` or `fail-hard`: prints what the router would do.
        #[arg(long, default_value = "fail-soft")]
        fail_mode: String,
        /// PEM file (default: the imported router certificate).
        cert: Option<PathBuf>,
    },
}

/// What `ssr crl fetch` and `ssr crl watch` share.
#[derive(Debug, Args)]
pub struct CrlArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Add this CRL URL to the configuration (repeatable).
    #[arg(long)]
    url: Vec<String>,
    /// Set `polling-interval` (hours).
    #[arg(long)]
    polling_hours: Option<u32>,
    /// Set `backoff-interval` (seconds).
    #[arg(long)]
    backoff_secs: Option<u32>,
    /// Per-fetch time limit (seconds).
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// PEM bundle of the CAs that authenticate `https://` CRL distribution points
    /// (their TLS servers; the CRLs themselves are checked against the installed
    /// trusted CAs). Without it an `https://` point fails with a clear error.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CrlCmd {
    /// Fetch every configured CRL now, publish the master revoked list, update alarms.
    Fetch {
        #[command(flatten)]
        crl: CrlArgs,
    },
    /// Keep the CRLs fresh: a long-running CRL manager on the wall clock.
    ///
    /// Every configured CRL URL (`crl/config.json`, plus `--url`, plus the `http(s)://`
    /// distribution points of the imported router certificate; `ldap://` and other
    /// points are reported and skipped) is fetched on its schedule: `polling-interval`
    /// after a success, or the CRL's nextUpdate when sooner; after a failure
    /// `backoff-interval`, doubling up to the polling interval. Each CRL must be signed
    /// by an installed trusted CA and not be older than the one held. A failure, or a CRL
    /// whose nextUpdate has passed, raises the URL's alarm (stderr `alarm raised: …`,
    /// audit `system.crl_update`, `ssr crl status` shows ALARM) until a current CRL is
    /// ingested. The merged master list (`crl/master.json`), each CRL, the per-URL state
    /// with its next due time (`crl/status.json`) and the counters are replaced
    /// atomically after every fetch, so a restart (or a crash) continues the schedule,
    /// the failure count and the alarms where they were. `https://` points are fetched
    /// over TLS by the shared HTTP client, their servers authenticated by `--tls-ca`.
    /// Runs until stopped (`--once`: until the fetches due now are done, for a systemd
    /// timer). URLs added to `crl/config.json` while it runs are picked up within a
    /// minute. Packaged as `packaging/systemd/crl-watch.service`.
    Watch {
        #[command(flatten)]
        crl: CrlArgs,
        /// Do the fetches due now, persist, and exit (for a systemd timer).
        #[arg(long)]
        once: bool,
    },
    /// Show each CRL URL's state, its alarm, and the master list.
    Status {
        #[command(flatten)]
        store: StoreArg,
    },
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

fn open_store(arg: &StoreArg) -> Result<Store, Failure> {
    Store::open(&arg.store).map_err(|e| Failure::usage(format!("store: {e}")))
}

fn read_text(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

fn read_certs(path: &Path) -> Result<Vec<Certificate>, Failure> {
    let text = read_text(path)?;
    let items =
        parse_pem_bundle(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    Ok(items
        .into_iter()
        .filter_map(|i| match i {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect())
}

fn read_crl(path: &Path) -> Result<Crl, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    match std::str::from_utf8(&bytes) {
        Ok(t) if t.trim_start().starts_with("-----BEGIN") => Crl::from_pem(t),
        _ => Crl::from_der(&bytes),
    }
    .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

/// Store failures are reported but never hide the command's own outcome.
fn note(result: Result<(), Error>) {
    if let Err(e) = result {
        eprintln!("ssr: warning: {e}");
    }
}

/// The public key of the TPM-held router key, read from its key store entry (no TPM
/// access needed).
fn tpm_router_public_key(store: &Store) -> Result<Option<VerifyingKey>, Error> {
    if !store.has_tpm_router_key() {
        return Ok(None);
    }
    let entry = KeyStore::new(store.tpm_key_dir(), DEFAULT_MASTER_KEY_HANDLE)
        .and_then(|ks| ks.load(ROUTER_KEY_NAME))
        .map_err(|e| Error::InvalidKey {
            reason: format!("TPM router key: {e}"),
        })?;
    verifying_key_from_der(entry.spki_der()).map(Some)
}

/// The router key's public half, wherever it is held.
fn router_public_key(store: &Store) -> Result<Option<VerifyingKey>, Error> {
    match tpm_router_public_key(store)? {
        Some(k) => Ok(Some(k)),
        None => Ok(store.load_private_key()?.map(|k| *k.verifying_key())),
    }
}

fn public_pem(key: &VerifyingKey) -> Result<String, Failure> {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| Failure::general(format!("public key: {e}")))
}

fn keygen(store: &Store, force: bool, tpm: bool, tcti: TctiArg) -> CmdResult {
    let exists = |what: &str| {
        Failure::general(format!(
            "a router key exists already ({what}; use --force to replace it)"
        ))
    };
    if tpm {
        if !force && store.path("router.key").exists() {
            return Err(exists("in software"));
        }
        let tcti = super::tpm::tcti_or_default(tcti.tcti);
        let key = TpmKey::create(&tcti, &store.tpm_key_dir(), ROUTER_KEY_NAME, force).map_err(
            |e| match e {
                ssr_tpm::Error::KeyExists { .. } => exists("in the TPM"),
                e => Failure::general(format!("TPM router key: {e}")),
            },
        )?;
        // One router key: a replaced software key goes.
        store.remove_private_key().map_err(Failure::general)?;
        let vk = verifying_key_from_der(key.spki_der()).map_err(Failure::general)?;
        println!(
            "router key created in the TPM at {tcti} (key store entry {}, wrapped by the master key {DEFAULT_MASTER_KEY_HANDLE:#010x})",
            store.tpm_key_dir().join("router.key").display()
        );
        print!("{}", public_pem(&vk)?);
        return Ok(());
    }
    if !force && store.has_tpm_router_key() {
        return Err(exists("in the TPM"));
    }
    let key = PrivateKey::generate(&mut UnwrapErr(SysRng));
    let path = store
        .save_private_key(&key, force)
        .map_err(Failure::general)?;
    if store.has_tpm_router_key() {
        KeyStore::new(store.tpm_key_dir(), DEFAULT_MASTER_KEY_HANDLE)
            .and_then(|ks| ks.delete(ROUTER_KEY_NAME))
            .map_err(|e| Failure::general(format!("TPM router key: {e}")))?;
    }
    let public = key.public_key_pem().map_err(Failure::general)?;
    println!("router key written to {} (mode 0600)", path.display());
    print!("{public}");
    Ok(())
}

/// CRL discovery: adds a certificate's `http(s)://` distribution points to the CRL
/// configuration. Other points (`ldap://`, …) are reported, one line each, and skipped;
/// they never cost the usable points of the same certificate.
fn discover_crl_urls(store: &Store, urls: &[String]) -> Result<(), Error> {
    let (supported, unsupported) = split_supported(urls);
    for (url, why) in &unsupported {
        eprintln!("ssr: warning: CRL distribution point {url} not used: {why}");
    }
    let mut settings = store.crl_settings()?;
    let before = settings.urls.len();
    for u in supported {
        if !settings.urls.contains(&u) {
            settings.urls.push(u);
        }
    }
    if settings.urls.len() != before {
        store.save_crl_settings(&settings)?;
    }
    Ok(())
}

pub fn run_cert(cmd: CertCmd) -> CmdResult {
    match cmd {
        CertCmd::Keygen {
            store,
            force,
            tpm,
            tcti,
        } => {
            let store = open_store(&store)?;
            keygen(&store, force, tpm, tcti)
        }
        CertCmd::Csr {
            store,
            tcti,
            uuid,
            out,
        } => {
            let store = open_store(&store)?;
            let uuid = RouterUuid::parse(&uuid).map_err(Failure::usage)?;
            let result = (|| {
                if store.has_tpm_router_key() {
                    let tcti = super::tpm::tcti_or_default(tcti.tcti);
                    let key = TpmKey::open(&tcti, &store.tpm_key_dir(), ROUTER_KEY_NAME).map_err(
                        |e| Error::InvalidKey {
                            reason: format!("TPM router key: {e}"),
                        },
                    )?;
                    let csr = Csr::build(&key, &uuid)?;
                    return Ok::<_, Error>((csr.to_pem()?, csr, "ecdsa-p256-tpm"));
                }
                let key = store.load_private_key()?.ok_or_else(|| Error::InvalidKey {
                    reason: "no router key in the store (run `ssr cert keygen` first)".into(),
                })?;
                let csr = Csr::build(&key, &uuid)?;
                Ok::<_, Error>((csr.to_pem()?, csr, "ecdsa-p256"))
            })();
            let (pem, csr, key_kind) = match result {
                Ok(r) => r,
                Err(e) => {
                    note(store.count(Counter::CsrFailure));
                    return Err(Failure::general(e));
                }
            };
            store
                .save_text("router.csr", &pem)
                .map_err(Failure::general)?;
            if let Some(out) = out {
                std::fs::write(&out, &pem)
                    .map_err(|e| Failure::general(format!("{}: {e}", out.display())))?;
            }
            note(store.count(Counter::CsrSuccess));
            note(store.audit(&AuditEvent::GenerateCsr {
                time: unix_now(),
                common_name: uuid.to_string(),
                key: key_kind,
                fingerprint: fingerprint_hex(&csr.fingerprint_sha256()),
            }));
            print!("{pem}");
            Ok(())
        }
        CertCmd::Import {
            store,
            at,
            no_chain_check,
            file,
        } => {
            let store = open_store(&store)?;
            let text = read_text(&file)?;
            let now = at.unix();
            let result = (|| {
                let key = router_public_key(&store)?;
                let crls = store.known_crls()?;
                let trusted = store.trusted_certificates()?;
                let policy = ImportPolicy {
                    now_unix: now,
                    role: Role::Leaf,
                    crls: &crls,
                    trusted: &trusted,
                    router_key: key.as_ref(),
                    chain_check: if no_chain_check {
                        ChainCheck::SkippedByOperator
                    } else {
                        ChainCheck::Required
                    },
                };
                import_certificate(&text, &policy).map(|i| (i, trusted.len()))
            })();
            let (imported, trusted_certificates) = match result {
                Ok(i) => i,
                Err(e) => {
                    note(store.count(Counter::ImportFailure));
                    if !matches!(
                        e,
                        Error::PrivateKeyInBundle { .. } | Error::NoCertificate | Error::Pem { .. }
                    ) {
                        note(store.count(Counter::for_rejection(&e, false)));
                    }
                    let fingerprint = Certificate::from_pem(&text)
                        .ok()
                        .map(|c| fingerprint_hex(&c.fingerprint_sha256()));
                    note(store.audit(&AuditEvent::RejectCertificate {
                        time: unix_now(),
                        fingerprint,
                        reason: e.to_string(),
                    }));
                    return Err(Failure::general(format!("import {}: {e}", file.display())));
                }
            };
            let cert = &imported.certificate;
            if no_chain_check {
                // The operator's choice is on record before the certificate is stored.
                store
                    .audit(&AuditEvent::ImportWithoutChainCheck {
                        time: unix_now(),
                        subject: cert.subject(),
                        issuer: cert.issuer(),
                        fingerprint: fingerprint_hex(&cert.fingerprint_sha256()),
                        trusted_certificates,
                    })
                    .map_err(|e| Failure::general(format!("audit: {e}")))?;
                eprintln!(
                    "ssr: warning: {} imported WITHOUT a chain check (--no-chain-check, audited)",
                    cert.subject()
                );
            }
            let mut pem = cert.to_pem();
            for c in &imported.chain {
                pem.push_str(&c.to_pem());
            }
            store
                .save_text("router.pem", &pem)
                .map_err(Failure::general)?;
            // CRL discovery: the certificate's distribution points join the CRL list.
            let urls = cert.crl_distribution_points();
            note(discover_crl_urls(&store, &urls));
            note(store.count(Counter::ImportSuccess));
            note(store.audit(&AuditEvent::IngestCertificate {
                time: unix_now(),
                common_name: cert.subject_cn(),
                subject: cert.subject(),
                issuer: cert.issuer(),
                serial: cert.serial_hex(),
                fingerprint: fingerprint_hex(&cert.fingerprint_sha256()),
                crl_urls: urls,
                certificate_authority: cert.is_ca(),
            }));
            println!(
                "imported {} (serial {}, SHA-256 {})",
                cert.subject(),
                cert.serial_hex(),
                fingerprint_hex(&cert.fingerprint_sha256())
            );
            Ok(())
        }
        CertCmd::InstallCa {
            store,
            at,
            mode,
            name,
            bundle,
        } => {
            let store = open_store(&store)?;
            let mode: ValidationMode = mode.parse().map_err(Failure::usage)?;
            let text = read_text(&bundle)?;
            let installed = TrustBundle::install(&text, mode, at.unix())
                .map_err(|e| Failure::general(format!("install-ca {}: {e}", bundle.display())))?;
            let path = store
                .save_trust_bundle(&name, &installed.to_pem())
                .map_err(Failure::general)?;
            for w in installed.warnings() {
                eprintln!("ssr: warning: {w}");
            }
            println!(
                "installed {} certificate(s) as {} ({} warning(s))",
                installed.certificates().len(),
                path.display(),
                installed.warnings().len()
            );
            Ok(())
        }
        CertCmd::Verify {
            trust,
            untrusted,
            crl,
            require_crl,
            at,
            cert,
        } => {
            let trust_certs = read_certs(&trust)?;
            let (anchors, mut intermediates): (Vec<_>, Vec<_>) = trust_certs
                .into_iter()
                .partition(Certificate::is_self_issued);
            if anchors.is_empty() {
                return Err(Failure::usage(format!(
                    "{}: no self-signed trust anchor",
                    trust.display()
                )));
            }
            if let Some(u) = &untrusted {
                intermediates.extend(read_certs(u)?);
            }
            let crls = crl
                .iter()
                .map(|p| read_crl(p))
                .collect::<Result<Vec<_>, _>>()?;
            let leaf = read_certs(&cert)?
                .into_iter()
                .next()
                .ok_or_else(|| Failure::usage(format!("{}: no certificate", cert.display())))?;
            let mut opts = ChainOptions::new(at.unix()).with_crls(crls);
            if require_crl {
                opts.revocation = RevocationPolicy::Required;
            }
            let chain = verify_chain(&leaf, &intermediates, &anchors, &opts)
                .map_err(|e| Failure::general(format!("{}: {e}", cert.display())))?;
            let names: Vec<String> = chain.certificates().iter().map(|c| c.subject()).collect();
            println!("{}: OK ({})", cert.display(), names.join(" <- "));
            Ok(())
        }
        CertCmd::Show {
            store,
            at,
            fail_mode,
            cert,
        } => {
            let fail_mode: FailMode = fail_mode.parse().map_err(Failure::usage)?;
            let now = at.unix();
            // A certificate file is checked against the store's master list too, when
            // a store exists (it is not created just to show a file).
            let store = match &cert {
                Some(_) if !store.store.exists() => None,
                _ => Some(open_store(&store)?),
            };
            let c = match (&cert, &store) {
                (Some(p), _) => read_certs(p)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Failure::usage(format!("{}: no certificate", p.display())))?,
                (None, Some(s)) => s
                    .load_certificate()
                    .map_err(Failure::general)?
                    .ok_or_else(|| Failure::usage("no certificate imported in the store"))?,
                (None, None) => return Err(Failure::usage("no certificate given")),
            };
            let role = match (c.is_ca(), c.is_self_issued()) {
                (true, true) => Role::Root,
                (true, false) => Role::Intermediate,
                _ => Role::Leaf,
            };
            let mut condition = Condition::from_validity(c.not_before(), c.not_after(), now);
            if condition.is_usable() {
                let issues: Vec<String> = check_certificate(&c, role, now)
                    .iter()
                    .map(|i| i.kind.to_string())
                    .collect();
                if !issues.is_empty() {
                    condition = Condition::Invalid {
                        reason: issues.join("; "),
                    };
                }
            }
            if let Some(list) = store.as_ref().and_then(|s| s.master_list().ok().flatten())
                && list.find(&c).is_some()
            {
                condition = Condition::Revoked;
            }
            let decision = decide(fail_mode, condition);
            println!("subject:     {}", c.subject());
            println!("issuer:      {}", c.issuer());
            println!("serial:      {}", c.serial_hex());
            println!("not before:  {} ({})", utc(c.not_before()), c.not_before());
            println!("not after:   {} ({})", utc(c.not_after()), c.not_after());
            println!("sha-256:     {}", fingerprint_hex(&c.fingerprint_sha256()));
            println!("ca:          {}", c.is_ca());
            let crls = c.crl_distribution_points();
            if !crls.is_empty() {
                println!("crl urls:    {}", crls.join(", "));
            }
            println!("status:      {}", decision.condition);
            println!("alarm:       {}", decision.alarm);
            if decision.remove_peerings {
                println!("action:      fail-hard: remove all peerings, leave SVR");
            }
            Ok(())
        }
    }
}

/// `crl/config.json` with the command line's additions, saved; the router
/// certificate's supported distribution points are added too.
fn crl_settings_with(
    store: &Store,
    url: Vec<String>,
    polling_hours: Option<u32>,
    backoff_secs: Option<u32>,
) -> Result<CrlSettings, Failure> {
    if let Some(cert) = store.load_certificate().ok().flatten() {
        note(discover_crl_urls(store, &cert.crl_distribution_points()));
    }
    let mut settings = store.crl_settings().map_err(Failure::general)?;
    for u in url {
        if !settings.urls.contains(&u) {
            settings.urls.push(u);
        }
    }
    if let Some(h) = polling_hours {
        settings.polling_hours = h;
    }
    if let Some(s) = backoff_secs {
        settings.backoff_secs = s;
    }
    settings.to_config().map_err(Failure::usage)?;
    store
        .save_crl_settings(&settings)
        .map_err(Failure::general)?;
    if settings.urls.is_empty() {
        return Err(Failure::usage(
            "no CRL URL configured (add one with --url, or import a certificate with CRL distribution points)",
        ));
    }
    Ok(settings)
}

/// Writes what a round changed: each CRL held, the per-URL state (with next due
/// times), the counters. Every file is replaced atomically.
fn persist_crl_state(store: &Store, manager: &mut CrlManager) {
    for (u, crl) in manager.crls() {
        note(store.save_crl(u, crl));
    }
    note(store.save_crl_status(&manager.status()));
    note(store.add_counters(&manager.take_counters()));
}

/// Acts on the manager's outputs until none is left; fetches synchronously. Returns
/// whether anything happened.
fn crl_round(
    store: &Store,
    manager: &mut CrlManager,
    client: &Client,
    options: &FetchOptions,
) -> bool {
    let mut any = false;
    while let Some(output) = manager.poll_output() {
        any = true;
        match output {
            Output::Fetch { url } => match fetch_with(client, &url, options) {
                Ok(body) => {
                    manager.handle_fetched(&url, &body, Instant::now());
                    // On disk before anything is reported.
                    persist_crl_state(store, manager);
                }
                Err(e) => {
                    let reason = match &e {
                        Error::Fetch { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    manager.handle_fetch_failed(&url, &reason, Instant::now());
                    persist_crl_state(store, manager);
                    if let Some(s) = manager.status().iter().find(|s| s.url == url) {
                        eprintln!(
                            "ssr: CRL {url}: attempt failed ({} consecutive): {reason}; next try at {}",
                            s.consecutive_failures,
                            s.next_fetch.map_or_else(|| "?".into(), utc)
                        );
                    }
                }
            },
            Output::Publish(list) => match store.publish_master_list(&list) {
                Ok(path) => println!(
                    "published {} revoked certificate(s) to {}",
                    list.entries.len(),
                    path.display()
                ),
                Err(e) => eprintln!("ssr: warning: {e}"),
            },
            Output::Alarm {
                url,
                raised,
                reason,
            } => {
                if raised {
                    eprintln!("ssr: alarm raised: CRL {url}: {reason}");
                } else {
                    println!("alarm cleared: CRL {url}");
                }
            }
            Output::Audit(e) => {
                if let AuditEvent::CrlUpdate {
                    crl_url,
                    success: true,
                    total_entries,
                    ..
                } = &e
                {
                    println!("{crl_url}: ingested, {total_entries} entr(y/ies)");
                }
                note(store.audit(&e));
            }
            _ => {}
        }
    }
    any
}

fn watch(
    store: &Store,
    settings: CrlSettings,
    client: &Client,
    timeout_secs: u64,
    once: bool,
) -> CmdResult {
    let timeout = timeout_secs.clamp(1, 3600);
    let config = settings
        .to_config()
        .and_then(|c| c.with_fetch_timeout_secs(u32::try_from(timeout).unwrap_or(30)))
        .map_err(Failure::usage)?;
    let trusted = store.trusted_certificates().map_err(Failure::general)?;
    if trusted.is_empty() {
        eprintln!(
            "ssr: warning: no trusted CA installed: every CRL will be refused (ssr cert install-ca)"
        );
    }
    let t0 = Instant::now();
    let mut manager = CrlManager::new(config, trusted, t0, unix_now());
    for u in &settings.urls {
        if let Ok(Some(der)) = store.load_crl_bytes(u) {
            // A stored CRL that no longer verifies (CA replaced) is just not reused.
            let _ = manager.restore(u, &der);
        }
    }
    // Continue where the last run (or `ssr crl fetch`) left off.
    for saved in store.crl_status().unwrap_or_default() {
        manager.restore_status(&saved, t0);
    }
    // A crash between a CRL's save and the master list's leaves the list behind the
    // CRLs held: republish it from them.
    let merged = manager.master_list(unix_now());
    let published = store.master_list().ok().flatten();
    if manager.crls().next().is_some() && published.is_none_or(|p| p.entries != merged.entries) {
        match store.publish_master_list(&merged) {
            Ok(path) => println!(
                "published {} revoked certificate(s) to {} (from the CRLs held)",
                merged.entries.len(),
                path.display()
            ),
            Err(e) => eprintln!("ssr: warning: {e}"),
        }
    }
    for s in manager.status() {
        println!(
            "{}: {}next fetch at {}",
            s.url,
            if s.alarm { "ALARM, " } else { "" },
            s.next_fetch.map_or_else(|| "?".into(), utc)
        );
    }
    let options = FetchOptions {
        timeout: Duration::from_secs(timeout),
        ..FetchOptions::default()
    };
    let mut known = settings;
    loop {
        let now = Instant::now();
        manager.handle_timeout(now);
        if crl_round(store, &mut manager, client, &options) {
            // Timeouts and other state changes without a fetch.
            persist_crl_state(store, &mut manager);
        }
        if once && !manager.is_fetching() {
            let due_now = manager.poll_timeout().is_some_and(|t| t <= Instant::now());
            if !due_now {
                return Ok(());
            }
            continue;
        }
        // Sleep until the next timer, waking at least once a minute for URLs added to
        // the configuration meanwhile.
        let wake = manager
            .poll_timeout()
            .map_or(Duration::from_secs(60), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_secs(60));
        std::thread::sleep(wake);
        if let Ok(fresh) = store.crl_settings()
            && fresh.urls != known.urls
        {
            for u in fresh.urls.iter().filter(|u| !known.urls.contains(u)) {
                match manager.add_url(u, Instant::now()) {
                    Ok(()) => println!("{u}: added"),
                    Err(e) => eprintln!("ssr: warning: {e}"),
                }
            }
            known = fresh;
        }
    }
}

impl CrlArgs {
    /// The store, the CRL settings with this command's changes saved, and the shared
    /// HTTP client (`--tls-ca` authenticates `https://` distribution points).
    /// The store (with the CRL update lock held: see [`Store::try_lock_crls`]), the
    /// CRL settings with the command line's additions, and the HTTP client.
    fn open(&self) -> Result<(Store, CrlLock, CrlSettings, Client), Failure> {
        let store = open_store(&self.store)?;
        let lock = store
            .try_lock_crls()
            .map_err(Failure::general)?
            .ok_or_else(|| {
                Failure::general(format!(
                    "{}: another `ssr crl fetch` or `ssr crl watch` is updating the CRLs \
                     (the watch service fetches on its own schedule; stop it to fetch by hand)",
                    store.dir().display()
                ))
            })?;
        let settings = crl_settings_with(
            &store,
            self.url.clone(),
            self.polling_hours,
            self.backoff_secs,
        )?;
        let pem = self
            .tls_ca
            .as_deref()
            .map(|p| {
                std::fs::read(p)
                    .map_err(|e| Failure::usage(format!("--tls-ca {}: {e}", p.display())))
            })
            .transpose()?;
        let client =
            crl_client(pem, Vec::new()).map_err(|e| Failure::usage(format!("--tls-ca: {e}")))?;
        Ok((store, lock, settings, client))
    }
}

pub fn run_crl(cmd: CrlCmd) -> CmdResult {
    match cmd {
        CrlCmd::Watch { crl, once } => {
            let (store, _lock, settings, client) = crl.open()?;
            watch(&store, settings, &client, crl.timeout_secs, once)
        }
        CrlCmd::Fetch { crl } => {
            let (store, _lock, settings, client) = crl.open()?;
            let timeout_secs = crl.timeout_secs;
            let config = settings.to_config().map_err(Failure::usage)?;
            let timeout = u32::try_from(timeout_secs.clamp(1, 3600)).unwrap_or(30);
            let config = config
                .with_fetch_timeout_secs(timeout)
                .map_err(Failure::usage)?;
            let trusted = store.trusted_certificates().map_err(Failure::general)?;
            let t0 = Instant::now();
            let mut manager = CrlManager::new(config, trusted, t0, unix_now());
            for u in &settings.urls {
                if let Ok(Some(der)) = store.load_crl_bytes(u) {
                    // A stored CRL that no longer verifies (CA replaced) is just not reused.
                    let _ = manager.restore(u, &der);
                }
            }
            let options = FetchOptions {
                timeout: std::time::Duration::from_secs(timeout_secs.clamp(1, 3600)),
                ..FetchOptions::default()
            };
            let outputs = drive_with(&mut manager, &client, &options, Instant::now);
            for output in outputs {
                match output {
                    Output::Publish(list) => {
                        let path = store.publish_master_list(&list).map_err(Failure::general)?;
                        println!(
                            "published {} revoked certificate(s) to {}",
                            list.entries.len(),
                            path.display()
                        );
                    }
                    Output::Alarm {
                        url,
                        raised,
                        reason,
                    } => {
                        if raised {
                            eprintln!("ssr: alarm raised: CRL {url} cannot be fetched: {reason}");
                        } else {
                            println!("alarm cleared: CRL {url}");
                        }
                    }
                    Output::Audit(e) => note(store.audit(&e)),
                    _ => {}
                }
            }
            for (u, crl) in manager.crls() {
                note(store.save_crl(u, crl));
            }
            // Alarms persist across runs through status.json: a URL that failed before
            // keeps its alarm until a run fetches it.
            let previous = store.crl_status().unwrap_or_default();
            let mut status = manager.status();
            for s in &mut status {
                if let Some(p) = previous.iter().find(|p| p.url == s.url) {
                    if s.alarm {
                        s.consecutive_failures = s
                            .consecutive_failures
                            .saturating_add(p.consecutive_failures);
                    } else if p.alarm {
                        println!("alarm cleared: CRL {}", s.url);
                    }
                }
            }
            note(store.save_crl_status(&status));
            note(store.add_counters(manager.counters()));
            let failed: Vec<String> = status
                .iter()
                .filter(|s| s.alarm)
                .map(|s| format!("{}: {}", s.url, s.last_error.as_deref().unwrap_or("failed")))
                .collect();
            for s in status.iter().filter(|s| !s.alarm) {
                println!(
                    "{}: ok, {} entr{} from {}",
                    s.url,
                    s.entries,
                    if s.entries == 1 { "y" } else { "ies" },
                    s.issuer.as_deref().unwrap_or("?")
                );
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Failure::general(format!(
                    "{} of {} CRL(s) could not be fetched: {}",
                    failed.len(),
                    status.len(),
                    failed.join("; ")
                )))
            }
        }
        CrlCmd::Status { store } => {
            let store = open_store(&store)?;
            let settings = store.crl_settings().map_err(Failure::general)?;
            let status = store.crl_status().map_err(Failure::general)?;
            println!(
                "polling-interval {} h, backoff-interval {} s",
                settings.polling_hours, settings.backoff_secs
            );
            for url in &settings.urls {
                match status.iter().find(|s| &s.url == url) {
                    None => println!("{url}: never fetched"),
                    Some(s) => {
                        let alarm = if s.alarm { "ALARM" } else { "ok" };
                        let mut line = format!("{url}: {alarm}");
                        if let Some(i) = &s.issuer {
                            line.push_str(&format!(", issuer {i}, {} entries", s.entries));
                        }
                        if let Some(t) = s.next_update {
                            line.push_str(&format!(", next update {}", utc(t)));
                        }
                        if let Some(t) = s.next_fetch {
                            line.push_str(&format!(", next fetch {}", utc(t)));
                        }
                        if let Some(e) = &s.last_error {
                            line.push_str(&format!(
                                ", {} failure(s), last error: {e}",
                                s.consecutive_failures
                            ));
                        }
                        println!("{line}");
                    }
                }
            }
            match store.master_list().map_err(Failure::general)? {
                Some(list) => println!(
                    "master list: {} revoked certificate(s), generated {}",
                    list.entries.len(),
                    utc(list.generated_at)
                ),
                None => println!("master list: not published yet"),
            }
            let c = store.counters().map_err(Failure::general)?;
            println!(
                "counters: crl fetch {} ok / {} failed, ingestion {} ok / {} failed",
                c.crl_fetch_success,
                c.crl_fetch_failure,
                c.crl_ingestion_success,
                c.crl_ingestion_failure
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }
}
