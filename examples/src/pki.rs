//! Certificate provisioning as a router does it: a P-256 key, a CSR whose common name is
//! the router UUID, a CA (the `openssl` CLI standing in for the authority) signs it,
//! the certificate is imported through the three checks, its expiry alarm is read, and
//! a bundle that carries a private key is refused.

use std::error::Error as StdError;
use std::fs;
use std::path::Path;
use std::process::Command;

use getrandom::SysRng;
use rand_core::{Rng, UnwrapErr};
use ssr_pki::alarm::Condition;
use ssr_pki::csr::{Csr, RouterUuid};
use ssr_pki::import::{ImportPolicy, import_certificate};
use ssr_pki::keys::PrivateKey;
use ssr_pki::{Certificate, Role};

type Result<T> = std::result::Result<T, Box<dyn StdError>>;

/// What the walk-through observed.
#[derive(Debug)]
pub struct Summary {
    /// The router UUID, the CSR's common name.
    pub uuid: String,
    /// Subject of the imported certificate.
    pub subject: String,
    /// SHA-256 fingerprint of the imported certificate, hex.
    pub fingerprint: String,
    /// Alarm level of the imported certificate now (issued for 20 days: minor).
    pub alarm: String,
    /// Why a bundle with the private key in it was refused.
    pub key_bundle_refused: String,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// A random (version 4) router UUID.
fn random_uuid(rng: &mut impl Rng) -> Result<RouterUuid> {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let s = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    Ok(RouterUuid::parse(&s)?)
}

/// Runs the walk-through in `dir` (needs the `openssl` CLI).
pub fn run(dir: &Path) -> Result<Summary> {
    let mut rng = UnwrapErr(SysRng);
    let key = PrivateKey::generate(&mut rng);
    let uuid = random_uuid(&mut rng)?;
    let csr = Csr::build(&key, &uuid)?;
    fs::write(dir.join("router.csr"), csr.to_pem()?)?;

    // The authority: a P-256 root that signs the CSR as a 20-day leaf.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "365",
            "-subj",
            "/CN=Demo Router CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "router.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "20",
            "-sha256",
            "-extfile",
            "leaf.ext",
            "-out",
            "router.pem",
        ],
    )?;

    let ca = Certificate::from_pem(&fs::read_to_string(dir.join("ca.pem"))?)?;
    let pem = fs::read_to_string(dir.join("router.pem"))?;
    let now = crate::unix_now() as i64;
    let trusted = [ca];
    let policy = ImportPolicy {
        now_unix: now,
        role: Role::Leaf,
        crls: &[],
        trusted: &trusted,
        router_key: Some(key.verifying_key()),
        chain_check: ssr_pki::import::ChainCheck::Required,
    };
    let imported = import_certificate(&pem, &policy)?;
    let cert = &imported.certificate;
    let alarm = Condition::from_validity(cert.not_before(), cert.not_after(), now).alarm();

    // Check 1: a certificate file that carries the private key is refused whole.
    let with_key = format!("{pem}{}", key.secret_pkcs8_pem()?.as_str());
    let key_bundle_refused = match import_certificate(&with_key, &policy) {
        Ok(_) => return Err("a bundle with a private key was accepted".into()),
        Err(e) => e.to_string(),
    };
    Ok(Summary {
        uuid: uuid.as_str().to_owned(),
        subject: cert.subject(),
        fingerprint: cert
            .fingerprint_sha256()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        alarm: alarm.to_string(),
        key_bundle_refused,
    })
}
