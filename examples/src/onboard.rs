//! Secure Conductor Onboarding on loopback: a conductor with a certificate from its own
//! CA, a router-specific token, the router joining with the PSK and its key (held in a
//! TPM when a TCTI is given), the SSH key exchange, then the same token replayed and
//! refused.

use std::error::Error as StdError;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;

use getrandom::SysRng;
use rand_core::UnwrapErr;
use serde_json::json;
use ssr_onboard::config::{ConductorConfig, OnboardingConfig};
use ssr_onboard::https::{ConductorServer, conductor_policy, join};
use ssr_onboard::ssh::Ed25519SshKey;
use ssr_onboard::{Psk, RouterSigner, SoftwareSigner};

type Result<T> = std::result::Result<T, Box<dyn StdError>>;

const ROUTER: &str = "edge-router-1";

/// What the walk-through observed.
#[derive(Debug)]
pub struct Summary {
    /// The router's key was held in a TPM (else a software key).
    pub tpm_key: bool,
    /// Port of all further router-conductor traffic.
    pub ssh_port: u16,
    /// The router's `known_hosts` line for the conductor.
    pub known_hosts: String,
    /// Why the replayed token was refused.
    pub replay_refused: String,
    /// The conductor's audit events, in order.
    pub conductor_audit: Vec<String>,
}

/// A throwaway CA and a conductor certificate for 127.0.0.1 signed by it, written as
/// `ca.pem`, `conductor.pem`, `conductor-key.pem` and `token-key.pem` in `dir`.
fn conductor_pki(dir: &Path) -> Result<()> {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let (ca, issuer) = crate::throwaway_ca("demo conductor CA")?;
    fs::write(dir.join("ca.pem"), ca.pem())?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "conductor-1");
    leaf.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    fs::write(
        dir.join("conductor.pem"),
        leaf.signed_by(&key, &issuer)?.pem(),
    )?;
    fs::write(dir.join("conductor-key.pem"), key.serialize_pem())?;
    // The token-signing key: a key of its own, not the TLS key.
    fs::write(
        dir.join("token-key.pem"),
        KeyPair::generate()?.serialize_pem(),
    )?;
    Ok(())
}

/// Runs the walk-through in `dir`; `tpm_tcti` puts the router key in that TPM.
pub fn run(dir: &Path, tpm_tcti: Option<&str>) -> Result<Summary> {
    let mut rng = UnwrapErr(SysRng);
    let c = dir.join("conductor");
    let r = dir.join("router");
    fs::create_dir_all(&c)?;
    fs::create_dir_all(r.join("ssh"))?;
    conductor_pki(&c)?;
    let host = Ed25519SshKey::generate(&mut rng)?;
    fs::write(
        c.join("ssh_host_ed25519_key.pub"),
        host.public_key().authorized_keys_line("conductor-host"),
    )?;
    // The router-level PSK: generated once from the OS CSPRNG, known to both sides.
    let psk = Psk::generate(&mut rng);
    let p = |name: &str| -> PathBuf { c.join(name) };
    let conductor_json = json!({
        "version": 1,
        "name": "conductor-1",
        "listen": "127.0.0.1:0",
        "certificate": p("conductor.pem"),
        "private-key": p("conductor-key.pem"),
        "token-key": p("token-key.pem"),
        "routers": { ROUTER: psk.secret_str() },
        "used-tokens": p("used-tokens.jsonl"),
        "audit-log": p("audit.jsonl"),
        "ssh-host-key": p("ssh_host_ed25519_key.pub"),
        "authorized-keys": p("authorized_keys"),
    })
    .to_string();

    // Router key: in the TPM when there is one.
    let signer: Box<dyn RouterSigner> = match tpm_tcti {
        // The key store entry `router` of ssr-tpm, as `ssr cert keygen --tpm` makes it.
        Some(tcti) => Box::new(ssr_onboard::tpm::open_router_key(
            tcti,
            &dir.join("tpm-keys"),
        )?),
        None => Box::new(SoftwareSigner::generate(&mut rng)),
    };
    let spki = signer.public_key_spki()?;

    // Conductor: a token bound to this router's key, then serve two connections.
    let mut cfg = ConductorConfig::parse(conductor_json.as_bytes())?;
    let (token, _created) = conductor_policy(&mut cfg)?.issue_token(
        ROUTER,
        crate::unix_now(),
        600,
        Some(&spki),
        &mut rng,
    )?;
    let mut server =
        ConductorServer::from_config(ConductorConfig::parse(conductor_json.as_bytes())?)?;
    let addr = server.local_addr()?;
    let serving = thread::spawn(move || (0..2).map(|_| server.serve_one().is_ok()).count());

    fs::copy(c.join("ca.pem"), r.join("ca.pem"))?;
    fs::copy(c.join("conductor.pem"), r.join("conductor.pem"))?;
    let router_json = json!({
        "version": 1,
        "router-name": ROUTER,
        "conductor-address": addr.to_string(),
        "ca-certificate": r.join("ca.pem"),
        "conductor-certificate": r.join("conductor.pem"),
        "pre-shared-key": psk.secret_str(),
        "ssh-dir": r.join("ssh"),
        "audit-log": r.join("audit.jsonl"),
    })
    .to_string();
    let router_cfg = OnboardingConfig::parse(router_json.as_bytes())?;
    let outcome = join(&router_cfg, &token, signer.as_ref())?;
    let replay = match join(&router_cfg, &token, signer.as_ref()) {
        Ok(_) => return Err("a replayed token was accepted".into()),
        Err(e) => e.to_string(),
    };
    serving.join().map_err(|_| "conductor thread panicked")?;
    let conductor_audit = fs::read_to_string(c.join("audit.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["event"].as_str().map(str::to_owned))
        .collect();
    Ok(Summary {
        tpm_key: tpm_tcti.is_some(),
        ssh_port: outcome.ssh_port,
        known_hosts: fs::read_to_string(&outcome.known_hosts)?.trim().to_owned(),
        replay_refused: replay,
        conductor_audit,
    })
}
