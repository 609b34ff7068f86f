//! A small PKI for the import, trust-bundle and CRL-manager tests: CAs, leaves and
//! CRLs made with rcgen at chosen Unix times, plus the `openssl` CLI for what rcgen
//! with ring cannot make (RSA keys, SHA-1 signatures, RSA-1024 keys).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};

/// The tests' "now": 2027-01-15.
pub const NOW: i64 = 1_800_000_000;
pub const DAY: i64 = 86_400;

/// Unix seconds as rcgen's date type (a macro: the `time` crate stays unnamed).
macro_rules! at {
    ($unix:expr) => {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(u64::try_from($unix).unwrap())
    };
}

/// A CA: its parameters, key and certificate.
pub struct Ca {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub cert: rcgen::Certificate,
}

impl Ca {
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn ca_params(cn: &str, serial: u64, not_before: i64, not_after: i64) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = at!(not_before);
    p.not_after = at!(not_after);
    p.serial_number = Some(SerialNumber::from(serial));
    p
}

/// A self-signed root with this key.
pub fn root_with(cn: &str, key: KeyPair) -> Ca {
    let params = ca_params(cn, 1, NOW - 365 * DAY, NOW + 10 * 365 * DAY);
    let cert = params.self_signed(&key).unwrap();
    Ca { params, key, cert }
}

/// A P-256 root.
pub fn root(cn: &str) -> Ca {
    root_with(cn, KeyPair::generate().unwrap())
}

/// An intermediate CA under `parent`.
pub fn intermediate(parent: &Ca, cn: &str, key: KeyPair) -> Ca {
    let mut params = ca_params(cn, 2, NOW - 300 * DAY, NOW + 5 * 365 * DAY);
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &parent.issuer()).unwrap();
    Ca { params, key, cert }
}

/// Leaf options.
pub struct Leaf {
    pub cn: String,
    pub serial: u64,
    pub not_before: i64,
    pub not_after: i64,
    pub ca: bool,
    pub critical_unknown_extension: bool,
    pub crl_url: Option<String>,
}

impl Leaf {
    pub fn new(cn: &str, serial: u64) -> Self {
        Self {
            cn: cn.into(),
            serial,
            not_before: NOW - DAY,
            not_after: NOW + 365 * DAY,
            ca: false,
            critical_unknown_extension: false,
            crl_url: None,
        }
    }
}

/// A leaf certificate (PEM) for `key`'s public key, issued by `ca`.
pub fn leaf(ca: &Ca, opts: &Leaf, key: &impl rcgen::PublicKeyData) -> String {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, opts.cn.as_str());
    p.serial_number = Some(SerialNumber::from(opts.serial));
    p.not_before = at!(opts.not_before);
    p.not_after = at!(opts.not_after);
    p.use_authority_key_identifier_extension = true;
    if opts.ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
    }
    if opts.critical_unknown_extension {
        // 1.3.6.1.4.1.55555.1: a private OID nobody processes, marked critical.
        let mut ext =
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![0x05, 0x00]);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    }
    if let Some(url) = &opts.crl_url {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.clone()],
        }];
    }
    p.signed_by(key, &ca.issuer()).unwrap().pem()
}

/// A CRL (DER) from `ca` listing `serials`, issued at `this_update`.
pub fn crl(ca: &Ca, serials: &[u64], this_update: i64, crl_number: u64) -> Vec<u8> {
    let params = CertificateRevocationListParams {
        this_update: at!(this_update),
        next_update: at!(this_update + 7 * DAY),
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|&s| RevokedCertParams {
                serial_number: SerialNumber::from(s),
                revocation_time: at!(this_update - DAY),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(&ca.issuer()).unwrap().der().to_vec()
}

/// Runs `openssl` with `args` in `dir`; panics with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = ssr_testkit::run(Command::new("openssl").args(args).current_dir(dir)).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An RSA private key of `bits` made by openssl (PKCS#8 PEM).
pub fn openssl_rsa_key(dir: &Path, name: &str, bits: u32) -> String {
    let bits = format!("rsa_keygen_bits:{bits}");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &bits,
            "-out",
            name,
        ],
    );
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// A leaf issued by `ca` with the `openssl` CLI: `digest` (e.g. `sha1`, `sha256`), a
/// key of `key_args` (`genpkey` arguments), the usual leaf extensions.
pub fn openssl_leaf(dir: &Path, ca: &Ca, cn: &str, digest: &str, key_args: &[&str]) -> String {
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("ca.key"), ca.key.serialize_pem()).unwrap();
    let mut genpkey = vec!["genpkey"];
    genpkey.extend_from_slice(key_args);
    genpkey.extend_from_slice(&["-out", "leaf.key"]);
    openssl(dir, &genpkey);
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-new", "-key", "leaf.key", "-subj", &subj, "-out", "leaf.csr",
        ],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    let md = format!("-{digest}");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "4242",
            "-days",
            "90",
            &md,
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
    );
    std::fs::read_to_string(dir.join("leaf.pem")).unwrap()
}
