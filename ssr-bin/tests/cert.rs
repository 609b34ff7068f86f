//! `ssr cert …` and `ssr crl …` end to end through the built binary: a store in a
//! temporary directory, a CA made with rcgen, the router certificate signed by the
//! `openssl` CLI from the CSR `ssr` produced, CRLs served by real local HTTP servers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber, date_time_ymd,
};
use ssr_testkit::http::{Fault, HttpServer, StaticFiles, TlsIdentity};

const UUID: &str = "6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e90";
const DAY: i64 = 86_400;

fn ssr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ssr"))
        .args(args)
        .output()
        .expect("run ssr")
}

/// `ssr cert install-ca --store <store> --mode <mode> <extra…> <file>`.
fn install_ca(store: &str, mode: &str, extra: &[&str], file: &str) -> Output {
    ssr(&[
        &["cert", "install-ca", "--store", store, "--mode", mode],
        extra,
        &[file],
    ]
    .concat())
}

/// `ssr cert verify --trust <trust> <extra…> <leaf>`.
fn cert_verify(trust: &str, extra: &[&str], leaf: &str) -> Output {
    ssr(&[&["cert", "verify", "--trust", trust], extra, &[leaf]].concat())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "ssr failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Fails with `code`, one `ssr: …` line on stderr containing `needle`.
#[track_caller]
fn fails(o: Output, code: i32, needle: &str) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout {} stderr {err}",
        stdout(&o)
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("ssr: "), "{err}");
    assert!(last.contains(needle), "expected {needle:?} in {err}");
    err
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = ssr_testkit::run(Command::new("openssl").args(args).current_dir(dir)).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Pki {
    root_params: CertificateParams,
    root_key: KeyPair,
    root_pem: String,
    ica_params: CertificateParams,
    ica_key: KeyPair,
    ica_pem: String,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = date_time_ymd(2025, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p
}

fn pki() -> Pki {
    pki_named("CLI Test Root CA", "CLI Test Issuing CA")
}

fn pki_named(root: &str, issuing: &str) -> Pki {
    let root_params = ca_params(root);
    let root_key = KeyPair::generate().unwrap();
    let root_pem = root_params.self_signed(&root_key).unwrap().pem();
    let mut ica_params = ca_params(issuing);
    ica_params.use_authority_key_identifier_extension = true;
    let ica_key = KeyPair::generate().unwrap();
    let ica_pem = ica_params
        .signed_by(&ica_key, &Issuer::from_params(&root_params, &root_key))
        .unwrap()
        .pem();
    Pki {
        root_params,
        root_key,
        root_pem,
        ica_params,
        ica_key,
        ica_pem,
    }
}

impl Pki {
    fn bundle(&self) -> String {
        format!("{}\n{}", self.ica_pem, self.root_pem)
    }

    /// A CRL of the issuing CA listing `serials`.
    fn crl(&self, serials: &[u64]) -> Vec<u8> {
        Self::crl_of(&self.ica_params, &self.ica_key, serials)
    }

    /// A CRL of the root CA listing `serials`.
    fn root_crl(&self, serials: &[u64]) -> Vec<u8> {
        Self::crl_of(&self.root_params, &self.root_key, serials)
    }

    /// A CRL signed by the CA of `params` and `key`, listing `serials`.
    fn crl_of(params: &CertificateParams, key: &KeyPair, serials: &[u64]) -> Vec<u8> {
        let crl_params = CertificateRevocationListParams {
            this_update: date_time_ymd(2026, 1, 1),
            next_update: date_time_ymd(2036, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: date_time_ymd(2026, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        crl_params
            .signed_by(&Issuer::from_params(params, key))
            .unwrap()
            .der()
            .to_vec()
    }

    /// The issuing CA signs `csr` with openssl (30 days, serial `serial`, CRL URL).
    fn sign(&self, dir: &Path, csr: &str, serial: u64, crl_url: &str, out: &str) {
        std::fs::write(dir.join("ica.pem"), &self.ica_pem).unwrap();
        std::fs::write(dir.join("ica.key"), self.ica_key.serialize_pem()).unwrap();
        std::fs::write(
            dir.join("leaf.ext"),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\ncrlDistributionPoints=URI:{crl_url}\n"
            ),
        )
        .unwrap();
        let serial = format!("{serial}");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                "ica.pem",
                "-CAkey",
                "ica.key",
                "-set_serial",
                &serial,
                "-days",
                "30",
                "-sha256",
                "-extfile",
                "leaf.ext",
                "-out",
                out,
            ],
        );
    }
}

#[test]
fn provisioning_import_show_verify_and_crls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = dir.join("store");
    let store_s = store.to_str().unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let pki = pki();
    std::fs::write(dir.join("bundle.pem"), pki.bundle()).unwrap();

    // CRL servers: one good, one failing.
    let files = StaticFiles::new();
    files.insert("/issuing.crl", pki.crl(&[999]));
    let server = HttpServer::start(files.clone()).unwrap();
    let crl_url = format!("{}/issuing.crl", server.url());
    let broken = HttpServer::start(StaticFiles::new()).unwrap();
    broken.set_faults(|_r, _n| Some(Fault::Status(500)));
    let broken_url = format!("{}/down.crl", broken.url());

    // 1. Key generation: 0600, never silently replaced.
    let out = ok(ssr(&["cert", "keygen", "--store", store_s]));
    assert!(out.contains("-----BEGIN PUBLIC KEY-----"), "{out}");
    let mode = std::fs::metadata(store.join("router.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    fails(
        ssr(&["cert", "keygen", "--store", store_s]),
        1,
        "exists already",
    );

    // 2. CSR: openssl verifies it, CN is the UUID; a bad UUID is a usage error.
    fails(
        ssr(&["cert", "csr", "--store", store_s, "--uuid", "router-1"]),
        2,
        "invalid router UUID",
    );
    let csr_path = path("router.csr");
    let pem = ok(ssr(&[
        "cert", "csr", "--store", store_s, "--uuid", UUID, "--out", &csr_path,
    ]));
    assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert_eq!(std::fs::read_to_string(&csr_path).unwrap(), pem);
    let verify = Command::new("openssl")
        .args([
            "req", "-in", &csr_path, "-noout", "-verify", "-subject", "-nameopt", "RFC2253",
        ])
        .output()
        .unwrap();
    assert!(verify.status.success() && stderr(&verify).contains("verify OK"));
    assert!(String::from_utf8_lossy(&verify.stdout).contains(&format!("subject=CN={UUID}")));

    // 3. The CA signs it (openssl); the trust bundle is installed strictly.
    pki.sign(dir, "router.csr", 0x1234, &crl_url, "router.pem");
    let out = ok(install_ca(store_s, "strict", &[], &path("bundle.pem")));
    assert!(out.contains("installed 2 certificate(s)"), "{out}");
    fails(
        install_ca(store_s, "lenient", &[], &path("bundle.pem")),
        2,
        "validation-mode",
    );

    // 4. Import: a PEM with a key is refused; a certificate for another key is refused;
    //    the router's certificate is accepted and audited.
    let with_key = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("router.pem")).unwrap(),
        pki.ica_key.serialize_pem()
    );
    std::fs::write(dir.join("with-key.pem"), with_key).unwrap();
    fails(
        ssr(&["cert", "import", "--store", store_s, &path("with-key.pem")]),
        1,
        "private key",
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "other.key",
            "-subj",
            &format!("/CN={UUID}"),
            "-out",
            "other.csr",
        ],
    );
    pki.sign(dir, "other.csr", 0x4321, &crl_url, "other.pem");
    fails(
        ssr(&["cert", "import", "--store", store_s, &path("other.pem")]),
        1,
        "not the router's key",
    );
    let out = ok(ssr(&[
        "cert",
        "import",
        "--store",
        store_s,
        &path("router.pem"),
    ]));
    assert!(out.contains(&format!("CN={UUID}")), "{out}");
    let audit = std::fs::read_to_string(store.join("audit.jsonl")).unwrap();
    let ingest = audit
        .lines()
        .find(|l| l.contains("\"system.ingest_certificate\""))
        .expect("an ingest event");
    assert!(ingest.contains(&crl_url), "{ingest}");
    assert!(ingest.contains("\"fingerprint\""), "{ingest}");
    assert!(audit.contains("system.generate_csr") && audit.contains("system.reject_certificate"));
    let counters = std::fs::read_to_string(store.join("counters.json")).unwrap();
    assert!(
        counters.contains("\"import_success\": 1") && counters.contains("\"import_failure\": 2"),
        "{counters}"
    );
    assert!(counters.contains("\"csr_success\": 1"), "{counters}");
    // The key mismatch counts as an invalid certificate; the bundle with a key does not.
    assert!(
        counters.contains("\"certificate_invalid\": 1"),
        "{counters}"
    );

    // 5. Show: a 30-day certificate is a minor alarm now, major at 25 days, critical after.
    let now = unix_now();
    let show = ok(ssr(&["cert", "show", "--store", store_s]));
    assert!(show.contains(&format!("subject:     CN={UUID}")), "{show}");
    assert!(
        show.contains("issuer:      CN=CLI Test Issuing CA"),
        "{show}"
    );
    assert!(show.contains("alarm:       minor"), "{show}");
    let at = (now + 25 * DAY).to_string();
    assert!(
        ok(ssr(&["cert", "show", "--store", store_s, "--at", &at])).contains("alarm:       major")
    );
    let at = (now + 31 * DAY).to_string();
    let show = ok(ssr(&[
        "cert",
        "show",
        "--at",
        &at,
        "--fail-mode",
        "fail-hard",
        &path("router.pem"),
    ]));
    assert!(
        show.contains("alarm:       critical") && show.contains("status:      expired"),
        "{show}"
    );
    assert!(show.contains("fail-hard: remove all peerings"), "{show}");

    // 6. Verify: valid now; expired later; revoked with a CRL that lists it.
    let out = ok(cert_verify(&path("bundle.pem"), &[], &path("router.pem")));
    assert!(out.contains("OK"), "{out}");
    fails(
        cert_verify(&path("bundle.pem"), &["--at", &at], &path("router.pem")),
        1,
        "expired",
    );
    std::fs::write(dir.join("revoking.crl"), pki.crl(&[0x1234])).unwrap();
    fails(
        cert_verify(
            &path("bundle.pem"),
            &["--crl", &path("revoking.crl")],
            &path("router.pem"),
        ),
        1,
        "revoked",
    );
    // --require-crl: every certificate of the path needs a CRL of its issuer: none,
    // then only the issuing CA's (the issuing CA itself is not covered), then both.
    std::fs::write(dir.join("ica.crl"), pki.crl(&[])).unwrap();
    std::fs::write(dir.join("root.crl"), pki.root_crl(&[])).unwrap();
    for crls in [&[][..], &["--crl", &path("ica.crl")]] {
        let args = [&["--require-crl"][..], crls].concat();
        fails(
            cert_verify(&path("bundle.pem"), &args, &path("router.pem")),
            1,
            "revocation status unknown",
        );
    }
    ok(cert_verify(
        &path("bundle.pem"),
        &[
            "--require-crl",
            "--crl",
            &path("ica.crl"),
            "--crl",
            &path("root.crl"),
        ],
        &path("router.pem"),
    ));
    // Only the root trusted, the issuing CA given as untrusted: still valid.
    std::fs::write(dir.join("root.pem"), &pki.root_pem).unwrap();
    std::fs::write(dir.join("ica.pem"), &pki.ica_pem).unwrap();
    ok(cert_verify(
        &path("root.pem"),
        &["--untrusted", &path("ica.pem")],
        &path("router.pem"),
    ));
    fails(
        cert_verify(&path("root.pem"), &[], &path("router.pem")),
        1,
        "unknown issuer",
    );

    // 7. CRLs: the certificate's distribution point was learnt at import; add a broken
    //    URL. The fetch reports the failure and raises its alarm; the good CRL is
    //    published.
    let err = fails(
        ssr(&["crl", "fetch", "--store", store_s, "--url", &broken_url]),
        1,
        "1 of 2 CRL(s) could not be fetched",
    );
    assert!(
        err.contains("alarm raised") && err.contains("HTTP status 500"),
        "{err}"
    );
    let master = std::fs::read_to_string(store.join("crl/master.json")).unwrap();
    assert!(master.contains("\"serial\": \"03E7\""), "{master}");
    let status = ok(ssr(&["crl", "status", "--store", store_s]));
    assert!(status.contains(&format!("{broken_url}: ALARM")), "{status}");
    assert!(
        status.contains(&format!(
            "{crl_url}: ok, issuer CN=CLI Test Issuing CA, 1 entries"
        )),
        "{status}"
    );
    assert!(
        status.contains("master list: 1 revoked certificate(s)"),
        "{status}"
    );

    // The CA revokes the router certificate; the broken server recovers.
    files.insert("/issuing.crl", pki.crl(&[999, 0x1234]));
    broken.clear_faults();
    // It now serves 404 (no such file): still failing, alarm kept.
    fails(
        ssr(&["crl", "fetch", "--store", store_s]),
        1,
        "HTTP status 404",
    );
    let status = ok(ssr(&["crl", "status", "--store", store_s]));
    assert!(status.contains(&format!("{broken_url}: ALARM")), "{status}");
    assert!(status.contains("2 failure(s)"), "{status}");
    // Re-import is now refused: check 3, revoked by a known CRL.
    fails(
        ssr(&["cert", "import", "--store", store_s, &path("router.pem")]),
        1,
        "revoked",
    );
    let counters = std::fs::read_to_string(store.join("counters.json")).unwrap();
    assert!(
        counters.contains("\"certificate_revoked\": 1"),
        "{counters}"
    );
    let show = ok(ssr(&["cert", "show", "--store", store_s]));
    assert!(
        show.contains("status:      revoked") && show.contains("alarm:       critical"),
        "{show}"
    );
}

#[test]
fn install_ca_strict_and_warn_with_an_expired_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = dir.join("store");
    let store_s = store.to_str().unwrap();
    let pki = pki();
    let mut old = pki.root_params.clone();
    old.not_after = date_time_ymd(2025, 6, 1);
    let old_root = old.self_signed(&pki.root_key).unwrap().pem();
    let file = dir.join("old.pem");
    std::fs::write(&file, format!("{}\n{old_root}", pki.ica_pem)).unwrap();
    let file = file.to_str().unwrap();

    fails(
        install_ca(store_s, "strict", &[], file),
        1,
        "CN=CLI Test Root CA: expired",
    );
    assert!(!store.join("trust/svrv2-root-of-trust.pem").exists());
    let out = install_ca(store_s, "warn", &["--name", "old-root"], file);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ssr: warning: CN=CLI Test Root CA: expired"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("1 warning(s)"), "{}", stdout(&out));
    assert!(store.join("trust/old-root.pem").exists());
    fails(
        install_ca(store_s, "warn", &["--name", "../x"], file),
        1,
        "name",
    );
}

#[test]
fn errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let store_s = store.to_str().unwrap();
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &["cert", "csr", "--store", store_s, "--uuid", UUID],
            1,
            "run `ssr cert keygen` first",
        ),
        (
            &["cert", "import", "--store", store_s, "/nonexistent.pem"],
            2,
            "/nonexistent.pem",
        ),
        (
            &["cert", "show", "--store", store_s],
            2,
            "no certificate imported",
        ),
        (
            &["crl", "fetch", "--store", store_s],
            2,
            "no CRL URL configured",
        ),
        (
            &["crl", "fetch", "--store", store_s, "--url", "ftp://x/y"],
            2,
            "http://",
        ),
        (
            &["cert", "verify", "--trust", "/nonexistent", "/x"],
            2,
            "/nonexistent",
        ),
    ];
    for (args, code, needle) in cases {
        fails(ssr(args), code, needle);
    }
}

#[test]
fn import_without_a_trust_bundle_is_refused_unless_no_chain_check_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = dir.join("store");
    let store_s = store.to_str().unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // Any issuer at all: nothing is installed to say whom to trust.
    let pki = pki();
    ok(ssr(&["cert", "keygen", "--store", store_s]));
    ok(ssr(&[
        "cert",
        "csr",
        "--store",
        store_s,
        "--uuid",
        UUID,
        "--out",
        &path("router.csr"),
    ]));
    pki.sign(
        dir,
        "router.csr",
        0x77,
        // Two distribution points: an ldap:// one (unsupported) before an http:// one.
        "ldap://dir.test/cn=CA?certificateRevocationList,URI:http://127.0.0.1:9/x.crl",
        "router.pem",
    );

    let err = fails(
        ssr(&["cert", "import", "--store", store_s, &path("router.pem")]),
        1,
        "no trusted CA bundle is installed",
    );
    assert!(err.contains("--no-chain-check"), "{err}");
    assert!(!store.join("router.pem").exists(), "nothing imported");
    let audit = std::fs::read_to_string(store.join("audit.jsonl")).unwrap();
    assert!(audit.contains("system.reject_certificate"), "{audit}");
    assert!(!audit.contains("import_without_chain_check"), "{audit}");

    // The operator's explicit choice imports it, and the choice is audited first.
    let o = ssr(&[
        "cert",
        "import",
        "--store",
        store_s,
        "--no-chain-check",
        &path("router.pem"),
    ]);
    assert!(
        stderr(&o).contains(
            "CRL distribution point ldap://dir.test/cn=CA?certificateRevocationList not used"
        ),
        "{}",
        stderr(&o)
    );
    let out = ok(o);
    assert!(out.contains("imported"), "{out}");
    assert!(store.join("router.pem").exists());
    // The ldap:// point is reported, the http:// point of the same certificate is kept.
    let crl_config = std::fs::read_to_string(store.join("crl/config.json")).unwrap();
    assert!(
        crl_config.contains("http://127.0.0.1:9/x.crl"),
        "{crl_config}"
    );
    assert!(!crl_config.contains("ldap"), "{crl_config}");
    let audit = std::fs::read_to_string(store.join("audit.jsonl")).unwrap();
    let skipped = audit
        .lines()
        .position(|l| l.contains("\"system.import_without_chain_check\""))
        .expect("the skipped chain check is audited");
    let ingest = audit
        .lines()
        .position(|l| l.contains("\"system.ingest_certificate\""))
        .expect("ingested");
    assert!(skipped < ingest, "{audit}");
    let line = audit.lines().nth(skipped).unwrap();
    assert!(line.contains("CLI Test Issuing CA"), "{line}");
    assert!(line.contains("\"trusted_certificates\":0"), "{line}");

    // Once a bundle is installed, a plain import checks the chain again: a stranger's
    // certificate is refused.
    std::fs::write(dir.join("bundle.pem"), pki.bundle()).unwrap();
    ok(install_ca(store_s, "strict", &[], &path("bundle.pem")));
    let stranger = pki_named("Stranger Root", "Stranger Issuing CA");
    stranger.sign(
        dir,
        "router.csr",
        0x78,
        "http://127.0.0.1:9/x.crl",
        "stranger.pem",
    );
    fails(
        ssr(&["cert", "import", "--store", store_s, &path("stranger.pem")]),
        1,
        "issuer",
    );
    ok(ssr(&[
        "cert",
        "import",
        "--store",
        store_s,
        &path("router.pem"),
    ]));
}

#[test]
fn tpm_router_key_signs_the_csr_and_is_the_imported_certificates_key() {
    let swtpm = ssr_testkit::Swtpm::start().expect("swtpm");
    let tcti = swtpm.tcti();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = dir.join("store");
    let store_s = store.to_str().unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let pki = pki();

    // keygen --tpm: the key store entry, no software key; never silently replaced,
    // neither by another TPM key nor by a software key.
    let out = ok(ssr(&[
        "cert", "keygen", "--tpm", "--tcti", &tcti, "--store", store_s,
    ]));
    assert!(out.contains("router key created in the TPM"), "{out}");
    let public = &out[out.find("-----BEGIN PUBLIC KEY-----").expect("public key")..];
    assert!(store.join("tpm-keys/router.key").exists());
    assert!(!store.join("router.key").exists());
    fails(
        ssr(&[
            "cert", "keygen", "--tpm", "--tcti", &tcti, "--store", store_s,
        ]),
        1,
        "exists already",
    );
    fails(
        ssr(&["cert", "keygen", "--store", store_s]),
        1,
        "exists already (in the TPM",
    );

    // The CSR is signed inside the TPM: openssl verifies it, and its key is the
    // TPM key keygen printed.
    let csr = path("router.csr");
    ok(ssr(&[
        "cert", "csr", "--tcti", &tcti, "--store", store_s, "--uuid", UUID, "--out", &csr,
    ]));
    let verify = Command::new("openssl")
        .args(["req", "-in", &csr, "-noout", "-verify", "-pubkey"])
        .output()
        .unwrap();
    // openssl 3.0 may exit 0 on a verify failure: the verdict is its message.
    assert!(
        verify.status.success() && stderr(&verify).contains("verify OK"),
        "{}",
        stderr(&verify)
    );
    assert_eq!(String::from_utf8_lossy(&verify.stdout), public);
    let audit = std::fs::read_to_string(store.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"key\":\"ecdsa-p256-tpm\""), "{audit}");
    // A tampered CSR fails the same oracle (the check is not vacuous).
    let mut der = {
        let pem = std::fs::read_to_string(&csr).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-in",
                "router.csr",
                "-outform",
                "DER",
                "-out",
                "csr.der",
            ],
        );
        drop(pem);
        std::fs::read(dir.join("csr.der")).unwrap()
    };
    let n = der.len();
    der[n - 10] ^= 1;
    std::fs::write(dir.join("bad.der"), &der).unwrap();
    let bad = Command::new("openssl")
        .args([
            "req", "-inform", "DER", "-in", "bad.der", "-noout", "-verify",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!stderr(&bad).contains("verify OK"), "{}", stderr(&bad));
    assert!(
        !bad.status.success() || stderr(&bad).contains("verify failure"),
        "{}",
        stderr(&bad)
    );

    // Without the TPM the CSR cannot be made (the key is not in software).
    let gone = ssr_testkit::Swtpm::start().expect("swtpm 2");
    let gone_tcti = gone.tcti();
    drop(gone);
    fails(
        ssr(&[
            "cert", "csr", "--tcti", &gone_tcti, "--store", store_s, "--uuid", UUID,
        ]),
        1,
        "TPM router key",
    );

    // The certificate for the TPM key is imported; one for another key is refused.
    std::fs::write(dir.join("bundle.pem"), pki.bundle()).unwrap();
    ok(install_ca(store_s, "strict", &[], &path("bundle.pem")));
    pki.sign(
        dir,
        "router.csr",
        0x51,
        "http://127.0.0.1:9/x.crl",
        "router.pem",
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other.key",
            "-subj",
            "/CN=other",
            "-out",
            "other.csr",
        ],
    );
    pki.sign(
        dir,
        "other.csr",
        0x52,
        "http://127.0.0.1:9/x.crl",
        "other.pem",
    );
    fails(
        ssr(&["cert", "import", "--store", store_s, &path("other.pem")]),
        1,
        "not the router's key",
    );
    ok(ssr(&[
        "cert",
        "import",
        "--store",
        store_s,
        &path("router.pem"),
    ]));

    // --force to software: one router key remains.
    ok(ssr(&["cert", "keygen", "--force", "--store", store_s]));
    assert!(store.join("router.key").exists());
    assert!(!store.join("tpm-keys/router.key").exists());
}

/// A running `ssr crl watch`: its stdout and stderr lines arrive on one channel; killed
/// (SIGKILL, no chance to tidy up) on drop.
struct Watch {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ssr"))
            .args(["crl", "watch"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssr crl watch");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for reader in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(reader)
                    .lines()
                    .map_while(Result::ok)
                {
                    let _ = tx.send(line);
                }
            });
        }
        Watch {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line containing `needle`; returns it.
    #[track_caller]
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_json(store: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(store.join("crl/status.json")).unwrap()).unwrap()
}

#[test]
fn crl_watch_keeps_crls_fresh_and_a_restart_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = dir.join("store");
    let store_s = store.to_str().unwrap();
    let pki = pki();
    std::fs::write(dir.join("bundle.pem"), pki.bundle()).unwrap();
    ok(install_ca(
        store_s,
        "strict",
        &[],
        dir.join("bundle.pem").to_str().unwrap(),
    ));

    // A serves a CRL revoking 0x31; B is down until told otherwise, then revokes 0x32.
    let files = StaticFiles::new();
    files.insert("/a.crl", pki.crl(&[0x31]));
    let a = HttpServer::start(files.clone()).unwrap();
    let files_b = StaticFiles::new();
    files_b.insert("/b.crl", pki.crl(&[0x32]));
    let b = HttpServer::start(files_b).unwrap();
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = down.clone();
    b.set_faults(move |_r, _n| {
        flag.load(std::sync::atomic::Ordering::SeqCst)
            .then_some(Fault::Status(503))
    });
    let (url_a, url_b) = (format!("{}/a.crl", a.url()), format!("{}/b.crl", b.url()));

    // First run: A ingested and published; B fails, its alarm is raised once, and it is
    // retried on the doubling backoff (1 s, 2 s, …).
    let mut w = Watch::start(&[
        "--store",
        store_s,
        "--url",
        &url_a,
        "--url",
        &url_b,
        "--backoff-secs",
        "1",
        "--polling-hours",
        "1",
    ]);
    w.wait_for(&format!("{url_a}: ingested"));
    w.wait_for("published 1 revoked");
    w.wait_for(&format!("alarm raised: CRL {url_b}"));
    w.wait_for(&format!("CRL {url_b}: attempt failed (2 consecutive)"));
    // While the watch runs, a fetch by hand is refused: the two would interleave their
    // read-modify-write of the CRL status.
    fails(
        ssr(&["crl", "fetch", "--store", store_s]),
        1,
        "another `ssr crl fetch` or `ssr crl watch` is updating the CRLs",
    );
    // A crash (SIGKILL) right after: the state on disk is whole.
    drop(w);
    let st = status_json(&store);
    let sa = st
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["url"] == url_a)
        .unwrap();
    let sb = st
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["url"] == url_b)
        .unwrap();
    assert_eq!(sa["alarm"], false);
    assert_eq!(sb["alarm"], true);
    let failures = sb["consecutive_failures"].as_u64().unwrap();
    assert!(failures >= 2, "{st}");
    // A is next due a polling interval after its success.
    assert!(
        sa["next_fetch"].as_i64().unwrap() > unix_now() + 3000,
        "{st}"
    );
    let master = std::fs::read_to_string(store.join("crl/master.json")).unwrap();
    assert!(master.contains("\"31\""), "{master}");
    let out = ok(ssr(&["crl", "status", "--store", store_s]));
    assert!(out.contains(&format!("{url_b}: ALARM")), "{out}");
    assert!(out.contains(", next fetch 20"), "{out}");
    assert_eq!(a.stats().requests, 1);

    // Restart: B's failure count continues (its alarm is not raised a second time), A
    // is not refetched before its schedule.
    let mut w = Watch::start(&["--store", store_s]);
    w.wait_for(&format!("{url_a}: next fetch at"));
    w.wait_for(&format!(
        "CRL {url_b}: attempt failed ({} consecutive)",
        failures + 1
    ));
    // B comes back: its next try ingests it, the alarm clears, the merged list holds both.
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    w.wait_for(&format!("alarm cleared: CRL {url_b}"));
    w.wait_for("published 2 revoked");
    assert!(
        !w.seen.iter().any(|l| l.contains("alarm raised")),
        "{:#?}",
        w.seen
    );
    drop(w);
    assert_eq!(a.stats().requests, 1, "A was not refetched at the restart");
    let master = std::fs::read_to_string(store.join("crl/master.json")).unwrap();
    assert!(
        master.contains("\"31\"") && master.contains("\"32\""),
        "{master}"
    );
    let st = status_json(&store);
    assert!(
        st.as_array().unwrap().iter().all(|s| s["alarm"] == false),
        "{st}"
    );
    let out = ok(ssr(&["crl", "status", "--store", store_s]));
    assert!(!out.contains("ALARM"), "{out}");
    let counters = std::fs::read_to_string(store.join("counters.json")).unwrap();
    assert!(counters.contains("\"crl_fetch_failure\": "), "{counters}");
    // The killed watches left no lock behind: a fetch by hand runs.
    let out = ok(ssr(&["crl", "fetch", "--store", store_s]));
    assert!(out.contains(&format!("{url_a}: ok")), "{out}");
}

#[test]
fn crl_watch_once_fetches_what_is_due_and_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = dir.join("store");
    let store_s = store.to_str().unwrap();
    let pki = pki();
    std::fs::write(dir.join("bundle.pem"), pki.bundle()).unwrap();
    ok(install_ca(
        store_s,
        "strict",
        &[],
        dir.join("bundle.pem").to_str().unwrap(),
    ));
    let files = StaticFiles::new();
    files.insert("/a.crl", pki.crl(&[0x41]));
    let a = HttpServer::start(files).unwrap();
    let url = format!("{}/a.crl", a.url());
    let out = ok(ssr(&[
        "crl", "watch", "--once", "--store", store_s, "--url", &url,
    ]));
    assert!(out.contains("published 1 revoked"), "{out}");
    // Nothing is due at the second run: no request.
    let out = ok(ssr(&["crl", "watch", "--once", "--store", store_s]));
    assert!(out.contains("next fetch at"), "{out}");
    assert_eq!(a.stats().requests, 1);
}

/// An `https://` distribution point is fetched over TLS when `--tls-ca` names the CA of
/// its server (`ssr crl fetch` and `ssr crl watch`); without it, or with another CA,
/// the fetch fails, the alarm is raised and nothing is published.
#[test]
fn crl_watch_fetches_https_points_with_the_tls_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = dir.join("store");
    let store_s = store.to_str().unwrap();
    let pki = pki();
    std::fs::write(dir.join("bundle.pem"), pki.bundle()).unwrap();
    ok(install_ca(
        store_s,
        "strict",
        &[],
        dir.join("bundle.pem").to_str().unwrap(),
    ));
    let files = StaticFiles::new();
    files.insert("/a.crl", pki.crl(&[0x41]));
    let id = TlsIdentity::generate(&["localhost", "127.0.0.1"]).unwrap();
    let server = HttpServer::start_tls(files, &id).unwrap();
    let url = format!("{}/a.crl", server.url());
    assert!(url.starts_with("https://"), "{url}");
    let other = TlsIdentity::generate(&["localhost"]).unwrap();
    std::fs::write(dir.join("tls-ca.pem"), id.ca_pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other.ca_pem()).unwrap();

    for tls_ca in [None, Some("other-ca.pem")] {
        let mut args = vec!["crl", "fetch", "--store", store_s, "--url", &url];
        let path;
        if let Some(f) = tls_ca {
            path = dir.join(f).to_str().unwrap().to_owned();
            args.extend(["--tls-ca", &path]);
        }
        let out = ssr(&args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("published"), "{tls_ca:?}: {all}");
        assert!(all.contains("alarm raised"), "{tls_ca:?}: {all}");
    }
    let tls_ca = dir.join("tls-ca.pem");
    let out = ok(ssr(&[
        "crl",
        "fetch",
        "--store",
        store_s,
        "--tls-ca",
        tls_ca.to_str().unwrap(),
    ]));
    assert!(out.contains("published 1 revoked"), "{out}");
    // The watch takes the same option: due at once on a fresh store, it fetches over TLS.
    let fresh = dir.join("fresh");
    ok(install_ca(
        fresh.to_str().unwrap(),
        "strict",
        &[],
        dir.join("bundle.pem").to_str().unwrap(),
    ));
    let out = ok(ssr(&[
        "crl",
        "watch",
        "--once",
        "--store",
        fresh.to_str().unwrap(),
        "--url",
        &url,
        "--tls-ca",
        tls_ca.to_str().unwrap(),
    ]));
    assert!(out.contains("published 1 revoked"), "{out}");
}

#[test]
fn the_crl_watch_unit_runs_the_watch_command() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/crl-watch.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/ssr"));
    let args: Vec<&str> = words.collect();
    assert_eq!(&args[..2], ["crl", "watch"]);
    // The unit's arguments parse (with --help, nothing runs).
    let help = ok(ssr(&[&args[..], &["--help"]].concat()));
    assert!(help.contains("--once"), "{help}");
    let store = args
        .iter()
        .position(|a| *a == "--store")
        .and_then(|i| args.get(i + 1))
        .expect("--store");
    assert!(unit.contains(&format!("ReadWritePaths={store}")), "{unit}");
}
