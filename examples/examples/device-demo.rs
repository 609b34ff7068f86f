//! The device demo on built-in defaults: what a router does with the ssr crates.
//!
//! 1. Configuration Integrity (`ssr_bin::integrity`, over ssr-tpm and ssr-fscrypt):
//!    on a software TPM it starts itself and, as root, a loop-mounted ext4 with the
//!    `encrypt` feature: onboarding, a file written into a protected directory, a
//!    simulated reboot (lock, then start: unlock), each directory's status, an
//!    integrity event when the disk meets another TPM, the downgrade guard.
//! 2. SVR key management between two peers (ssr-svr-crypto).
//! 3. Secure Conductor Onboarding on loopback (ssr-onboard), the router key in the TPM.
//! 4. Certificate provisioning (ssr-pki): key, CSR, import through the three checks.
//! 5. Download failover between three local HTTP sources (ssr-download).
//!
//! `cargo xtask demo` (or `cargo run -p examples --example device-demo`). Without
//! root or without swtpm, the steps that need them are skipped and the demo says so.
//! A failing step does not stop the others; the demo then exits non-zero, and its last
//! line names the failed steps (and the skipped ones).

use std::error::Error;
use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use examples::steps::Steps;
use ssr_bin::integrity::downgrade::{self, Version};
use ssr_bin::integrity::journal::Logger;
use ssr_bin::integrity::{Config, Handler, StartError, Started, StepHook, connect_esapi};
use ssr_svr_crypto::kex::KexAlgorithm;
use ssr_testkit::{LoopExt4, Swtpm};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    println!("ssr device demo\n");
    let mut steps = Steps::default();
    let tpm = match Swtpm::start() {
        Ok(tpm) => {
            println!("software TPM started: {}", tpm.tcti());
            Some(tpm)
        }
        Err(e) => {
            println!("no software TPM ({e}); the TPM-backed steps are skipped");
            None
        }
    };

    heading("1. Configuration Integrity");
    const CI_STEP: &str = "Configuration Integrity";
    match (&tpm, ssr_testkit::is_root()) {
        (Some(tpm), true) => {
            steps.record(CI_STEP, configuration_integrity(tpm));
        }
        (_, false) => steps.skip(
            CI_STEP,
            "onboarding, lock and unlock need root (a loop-mounted ext4 and the fscrypt ioctls); run the demo as root",
        ),
        (None, true) => steps.skip(
            CI_STEP,
            "onboarding needs a TPM 2.0 (swtpm is not installed)",
        ),
    }
    steps.record("downgrade guard", downgrade_guard());

    heading("2. SVR key management (two peers, ECDH P-256, 200 packets)");
    let svr = examples::svr::run(KexAlgorithm::EcdhP256, 200).and_then(|summary| {
        println!("{summary:#}");
        if summary["delivered"] == 200 {
            Ok(())
        } else {
            Err("not every genuine packet was delivered".into())
        }
    });
    steps.record("SVR key management", svr);

    heading("3. Secure Conductor Onboarding (loopback HTTPS)");
    steps.record(
        "Secure Conductor Onboarding",
        secure_conductor_onboarding(tpm.as_ref()),
    );

    heading("4. Certificates (P-256 key, CSR with the router UUID, import checks)");
    steps.record("certificates", certificates());

    heading("5. Download failover (three local HTTP sources, 4 MiB image in 64 KiB chunks)");
    steps.record("download failover", download_failover());

    // The last line says which steps failed (and which were skipped).
    println!("\n{}", steps.last_line());
    steps.exit_code()
}

fn secure_conductor_onboarding(tpm: Option<&Swtpm>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = examples::onboard::run(dir.path(), tpm.map(Swtpm::tcti).as_deref())?;
    println!("router key held in the TPM: {}", s.tpm_key);
    println!("SSH port for router-conductor traffic: {}", s.ssh_port);
    println!("router known_hosts: {}", s.known_hosts.trim());
    println!("replayed token refused: {}", s.replay_refused);
    println!("conductor audit: {}", s.conductor_audit.join(" | "));
    if tpm.is_some() && !s.tpm_key {
        return Err("a TPM was there, yet the router key was not held in it".into());
    }
    Ok(())
}

fn certificates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = examples::pki::run(dir.path())?;
    println!("router UUID (CSR common name): {}", s.uuid);
    println!("imported certificate: {}", s.subject);
    println!("SHA-256 fingerprint: {}", s.fingerprint);
    println!("expiry alarm (issued for 20 days): {}", s.alarm);
    println!(
        "bundle with the private key refused: {}",
        s.key_bundle_refused
    );
    Ok(())
}

/// Conductor 1 fails every image request, conductor 2 closes connections after 20
/// chunks, the repository is healthy: the window rule moves the download along without
/// losing the bytes it has, and the file arrives verified.
fn download_failover() -> Result<()> {
    use ssr_download::http::{Options, Report, download_with};
    use ssr_download::wire::versions_json;
    use ssr_download::{
        Event, Manifest, ManifestTrust, ReleaseKey, Settings, SourceConfig, SourceKind,
        sign_manifest,
    };
    use ssr_testkit::http::{Fault, HttpServer, StaticFiles};

    const VERSION: &str = "7.1.3";
    const FILE: &str = "ssr-7.1.3.img";
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let manifest = Manifest::build(VERSION, FILE, &data, 64 << 10)?;
    // The release key signs the manifest; the router trusts its public half.
    let release = p256::ecdsa::SigningKey::from_slice(&[0x42; 32])?;
    let signed = sign_manifest(&manifest, &release);
    let options = Options {
        trust: ManifestTrust {
            keys: vec![ReleaseKey::of(&release)],
            ..ManifestTrust::default()
        },
        ..Options::default()
    };
    let serve = || -> Result<HttpServer> {
        let files = StaticFiles::new();
        files.insert("/versions", versions_json(&[VERSION]));
        files.insert(&format!("/images/{VERSION}/manifest.json"), signed.clone());
        files.insert(&format!("/images/{VERSION}/{FILE}"), data.clone());
        Ok(HttpServer::start(files)?)
    };
    let failing = serve()?;
    failing.set_faults(|r, _| r.path.ends_with(FILE).then_some(Fault::Status(500)));
    let dying = serve()?;
    let image_requests = std::sync::atomic::AtomicU64::new(0);
    dying.set_faults(move |r, _| {
        let n = image_requests.fetch_add(u64::from(r.path.ends_with(FILE)), Ordering::Relaxed);
        (r.path.ends_with(FILE) && n >= 20).then_some(Fault::Close)
    });
    let healthy = serve()?;
    let sources = [
        (SourceKind::Conductor1, &failing),
        (SourceKind::Conductor2, &dying),
        (SourceKind::Repository, &healthy),
    ]
    .map(|(kind, s)| SourceConfig { kind, url: s.url() });
    let mut settings = Settings::default();
    settings.health.request_timeout = std::time::Duration::from_secs(2);
    let dest = tempfile::tempdir()?;
    let done = download_with(
        &sources,
        settings,
        &options,
        VERSION,
        dest.path(),
        &mut |r| {
            if let Report::Event(
                e @ (Event::Discovered { .. }
                | Event::SourceSelected { .. }
                | Event::SourceUnavailable { .. }),
            ) = r
            {
                println!("  {e:?}");
            }
        },
    )?;
    let verified = fs::read(&done.path)? == data;
    println!(
        "{} arrived, {} bytes, identical to the published image: {verified}",
        done.path.display(),
        data.len()
    );
    for (name, s) in [
        ("conductor 1 (500s)", &failing),
        ("conductor 2 (dies)", &dying),
        ("repository", &healthy),
    ] {
        println!("  {name}: {} body bytes served", s.stats().body_bytes);
    }
    if !verified {
        return Err("the downloaded file differs from the published image".into());
    }
    Ok(())
}

fn heading(title: &str) {
    println!("\n== {title} ==");
}

fn config(root: &Path, tcti: &str) -> Result<Config> {
    let text = format!(
        "tcti = {tcti:?}\nstate-dir = {:?}\ndirectories = [{:?}, {:?}]\nblock-network-on-event = false\njournal-socket = {:?}\n",
        root.join("var/lib/integrity-handler").display().to_string(),
        root.join("etc/128technology/secure").display().to_string(),
        root.join("var/lib/128technology/secure")
            .display()
            .to_string(),
        // No journald here: every record goes to stderr instead.
        root.join("no-journal.sock").display().to_string(),
    );
    Ok(Config::parse(&text)?)
}

fn configuration_integrity(tpm: &Swtpm) -> Result<()> {
    let fs_ = LoopExt4::create(32, 4096)?;
    let root = fs_.mount_point();
    println!("ext4 with `-O encrypt` loop-mounted at {}", root.display());
    let cfg = config(&root, &tpm.tcti())?;
    let log = Logger::new(&cfg.journal_socket);
    let handler = Handler::new(&cfg, &log);
    let connect = || connect_esapi(&cfg);

    println!(
        "\n-- status before onboarding --\n{}",
        handler.status(connect)
    );
    println!("-- first boot: integrity-handler start (onboarding) --");
    match handler.start(connect, &mut StepHook::none()) {
        Ok(Started::Onboarded { key }) => println!("=> onboarded, FEK key identifier {key}"),
        Ok(other) => return Err(format!("first boot: expected onboarding, got {other:?}").into()),
        Err(e) => return Err(e.to_string().into()),
    }
    let secret = cfg.directories[0].join("router-private.key");
    fs::write(&secret, b"-----BEGIN PRIVATE KEY----- (demo)\n")?;
    println!("wrote {}", secret.display());
    println!("\n-- status --\n{}", handler.status(connect));

    println!("-- shutdown: integrity-handler lock --");
    handler.lock()?;
    let names: Vec<_> = fs::read_dir(&cfg.directories[0])?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    println!(
        "locked: {} no longer shows router-private.key, only the no-key name(s) {:?}",
        cfg.directories[0].display(),
        names
            .iter()
            .filter_map(|p| p.file_name())
            .collect::<Vec<_>>()
    );
    if let Some(first) = names.first() {
        println!(
            "reading it gives: {}",
            fs::read(first).map_or_else(|e| e.to_string(), |_| "its contents (unexpected)".into())
        );
    }
    println!("\n-- status --\n{}", handler.status(connect));

    println!("-- next boot: integrity-handler start (unlock) --");
    match handler.start(connect, &mut StepHook::none()) {
        Ok(Started::Unlocked { key }) => println!("=> unlocked with FEK {key}"),
        Ok(other) => return Err(format!("next boot: expected unlock, got {other:?}").into()),
        Err(e) => return Err(e.to_string().into()),
    }
    println!(
        "read back {}: {:?}",
        secret.display(),
        String::from_utf8_lossy(&fs::read(&secret)?).trim()
    );
    println!("\n-- status --\n{}", handler.status(connect));

    println!("-- the disk moved next to another TPM --");
    handler.lock()?;
    let other = Swtpm::start()?;
    let moved = config(&root, &other.tcti())?;
    let moved_handler = Handler::new(&moved, &log);
    match moved_handler.start(|| connect_esapi(&moved), &mut StepHook::none()) {
        Err(StartError::IntegrityEvent(cause)) => println!(
            "=> integrity event ({cause}); the service exits 3 and systemd restarts it. \
             Network blocking is off in this demo (it would cut this machine off); the \
             tests load the nftables table inside a network namespace."
        ),
        other => {
            return Err(format!("another TPM: expected an integrity event, got {other:?}").into());
        }
    }
    println!(
        "\nsealed FEK untouched: {} bytes at {}",
        fs::metadata(cfg.sealed_fek_path())?.len(),
        cfg.sealed_fek_path().display()
    );
    handler.lock()?;
    Ok(())
}

/// The guard's answers after onboarding, installed-version history 7.1.2 then 7.1.3: a
/// newer version and the rollback to 7.1.2 are allowed; 6.3.0 (no Configuration
/// Integrity) is refused even when the installer claims it as `--previous`.
fn downgrade_guard() -> Result<()> {
    println!(
        "\n-- downgrade guard (after onboarding; installed-version history: 7.1.2 then 7.1.3) --"
    );
    let previous: Version = "7.1.2".parse()?;
    let current: Version = "7.1.3".parse()?;
    let mut history = downgrade::History::default();
    history.record(current, Some(previous));
    // The installer's `--previous` claim cannot widen what the history allows.
    for (target, claimed, allowed) in [
        ("7.2.0", None, true),
        ("7.1.2", None, true),
        ("6.3.0", Some("6.3.0"), false),
    ] {
        let v = target.parse::<Version>()?;
        let claimed = claimed.map(str::parse::<Version>).transpose()?;
        let answer = downgrade::check_target(true, v, claimed, &history);
        match (&answer, claimed) {
            (Ok(why), _) => println!("install {target}: allowed ({why:?})"),
            (Err(refused), Some(c)) => println!("install {target} (--previous {c}): {refused}"),
            (Err(refused), None) => println!("install {target}: {refused}"),
        }
        if answer.is_ok() != allowed {
            return Err(format!("install {target}: the guard answered wrongly").into());
        }
    }
    Ok(())
}
