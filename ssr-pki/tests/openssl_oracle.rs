//! `openssl verify` as an independent oracle: on an accept / revoked / expired /
//! not-yet-valid / wrong-CA matrix over RSA and ECDSA chains built with rcgen, our verdict
//! must equal openssl's on every case (and the case must mean what it says: the accept
//! case accepted, every other case rejected).

use std::path::Path;
use std::process::Command;

use ssr_pki::{
    Certificate, ChainOptions, Crl, Error, KeyAlgorithm, RevocationPolicy, verify_chain,
};
use ssr_testkit::pki::{INTERMEDIATE_SERIAL, KeyKind, LEAF_SERIAL, TestPki};

const DAY: i64 = 86_400;

struct Case {
    name: &'static str,
    anchor_pem: String,
    crls: Vec<String>,
    time: i64,
    should_accept: bool,
}

fn openssl_verify(dir: &Path, pki: &TestPki, case: &Case) -> (bool, String) {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write fixture");
        p
    };
    let root = write("root.pem", &case.anchor_pem);
    let inter = write("inter.pem", &pki.intermediate_pem);
    let leaf = write("leaf.pem", &pki.leaf_pem);
    let crls = write("crls.pem", &case.crls.concat());
    let out = Command::new("openssl")
        .arg("verify")
        .args(["-no-CApath", "-no-CAstore"])
        .arg("-CAfile")
        .arg(&root)
        .arg("-untrusted")
        .arg(&inter)
        .args(["-attime", &case.time.to_string()])
        .args(["-crl_check_all", "-CRLfile"])
        .arg(&crls)
        .arg(&leaf)
        .output()
        .expect("run openssl verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().replace('\n', " | "))
}

fn ours(pki: &TestPki, case: &Case) -> Result<(), Error> {
    let leaf = Certificate::from_pem(&pki.leaf_pem)?;
    let inter = Certificate::from_pem(&pki.intermediate_pem)?;
    let anchor = Certificate::from_pem(&case.anchor_pem)?;
    let crls = case
        .crls
        .iter()
        .map(|c| Crl::from_pem(c))
        .collect::<Result<Vec<_>, _>>()?;
    // openssl -crl_check_all: every certificate below the anchor needs its issuer's CRL.
    let mut opts = ChainOptions::new(case.time).with_crls(crls);
    opts.revocation = RevocationPolicy::Required;
    verify_chain(&leaf, &[inter], &[anchor], &opts).map(|_| ())
}

fn matrix(kind: KeyKind) {
    let pki = TestPki::new(kind, "Oracle");
    let other = TestPki::new(kind, "Other");
    let impostor = TestPki::new(kind, "Oracle"); // same names, other keys
    let leaf = Certificate::from_pem(&pki.leaf_pem).expect("leaf parses");
    let valid_at = leaf.not_before() + 30 * DAY;
    let clean_crls = vec![pki.root_crl(&[]), pki.intermediate_crl(&[])];

    let cases = vec![
        Case {
            name: "accept",
            anchor_pem: pki.root_pem.clone(),
            crls: clean_crls.clone(),
            time: valid_at,
            should_accept: true,
        },
        Case {
            name: "leaf revoked",
            anchor_pem: pki.root_pem.clone(),
            crls: vec![pki.root_crl(&[]), pki.intermediate_crl(&[LEAF_SERIAL])],
            time: valid_at,
            should_accept: false,
        },
        Case {
            name: "intermediate revoked",
            anchor_pem: pki.root_pem.clone(),
            crls: vec![
                pki.root_crl(&[INTERMEDIATE_SERIAL]),
                pki.intermediate_crl(&[]),
            ],
            time: valid_at,
            should_accept: false,
        },
        Case {
            name: "expired",
            anchor_pem: pki.root_pem.clone(),
            crls: clean_crls.clone(),
            time: leaf.not_after() + DAY,
            should_accept: false,
        },
        Case {
            name: "not yet valid",
            anchor_pem: pki.root_pem.clone(),
            crls: clean_crls.clone(),
            time: leaf.not_before() - DAY,
            should_accept: false,
        },
        Case {
            name: "wrong CA (other name)",
            anchor_pem: other.root_pem.clone(),
            crls: clean_crls.clone(),
            time: valid_at,
            should_accept: false,
        },
        Case {
            name: "wrong CA (same name, other key)",
            anchor_pem: impostor.root_pem.clone(),
            crls: clean_crls.clone(),
            time: valid_at,
            should_accept: false,
        },
        Case {
            name: "CRL missing for the leaf's issuer",
            anchor_pem: pki.root_pem.clone(),
            crls: vec![pki.root_crl(&[])],
            time: valid_at,
            should_accept: false,
        },
    ];

    let dir = tempfile::tempdir().expect("tempdir");
    let mut report = Vec::new();
    for case in &cases {
        let (openssl_ok, openssl_says) = openssl_verify(dir.path(), &pki, case);
        let ours = ours(&pki, case);
        let ours_ok = ours.is_ok();
        if ours_ok != openssl_ok || ours_ok != case.should_accept {
            report.push(format!(
                "{kind:?} / {}: ours {:?}, openssl {} ({openssl_says}), expected {}",
                case.name,
                ours,
                if openssl_ok { "accepts" } else { "rejects" },
                if case.should_accept {
                    "accept"
                } else {
                    "reject"
                },
            ));
        }
    }
    assert!(report.is_empty(), "verdicts differ:\n{}", report.join("\n"));
}

#[test]
fn openssl_agrees_on_ecdsa_chains() {
    matrix(KeyKind::EcdsaP256);
}

#[test]
fn openssl_agrees_on_rsa_chains() {
    matrix(KeyKind::Rsa2048);
}

#[test]
fn rejection_names_the_reason() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "Reasons");
    let leaf = Certificate::from_pem(&pki.leaf_pem).expect("leaf");
    let inter = Certificate::from_pem(&pki.intermediate_pem).expect("intermediate");
    let root = Certificate::from_pem(&pki.root_pem).expect("root");
    let at = leaf.not_before() + DAY;
    let verify = |opts: ChainOptions| {
        verify_chain(
            &leaf,
            std::slice::from_ref(&inter),
            std::slice::from_ref(&root),
            &opts,
        )
    };

    let chain = verify(ChainOptions::new(at)).expect("valid chain");
    assert_eq!(chain.certificates().len(), 3);
    assert_eq!(chain.anchor(), &root);
    ssr_pki::check_peer_identity(chain.leaf(), &pki.leaf_cn).expect("identity");
    assert!(matches!(
        ssr_pki::check_peer_identity(chain.leaf(), "00000000-0000-0000-0000-000000000000"),
        Err(Error::PeerIdentityMismatch { .. })
    ));

    let revoked = Crl::from_pem(&pki.intermediate_crl(&[LEAF_SERIAL])).expect("crl");
    assert!(matches!(
        verify(ChainOptions::new(at).with_crls(vec![revoked.clone()])),
        Err(Error::Revoked { ref serial_hex, .. }) if serial_hex == &leaf.serial_hex()
    ));
    assert!(ssr_pki::is_revoked(&leaf, std::slice::from_ref(&revoked)).is_some());
    revoked
        .verify_signature(&inter)
        .expect("CRL signed by the intermediate");
    assert!(revoked.verify_signature(&root).is_err());

    assert!(matches!(
        verify(ChainOptions::new(leaf.not_after() + DAY)),
        Err(Error::Expired { .. })
    ));
    assert!(matches!(
        verify(ChainOptions::new(leaf.not_before() - DAY)),
        Err(Error::NotYetValid { .. })
    ));
    // A CRL issued after the validation time is no evidence (openssl: "CRL is not yet
    // valid"); `at` is 2024-01-02, this CRL's thisUpdate 2024-06-01.
    let future = Crl::from_pem(&pki.intermediate_crl_issued((2024, 6, 1))).expect("crl");
    assert!(matches!(
        verify(ChainOptions::new(at).with_crls(vec![future.clone()])),
        Err(Error::CrlNotYetValid { .. })
    ));
    assert!(verify(ChainOptions::new(future.this_update() + DAY).with_crls(vec![future])).is_ok());

    // Several anchors: the one that fits is found and reported.
    let stranger = TestPki::new(KeyKind::EcdsaP256, "Stranger");
    let stranger_root = Certificate::from_pem(&stranger.root_pem).expect("root");
    let chain = verify_chain(
        &leaf,
        std::slice::from_ref(&inter),
        &[stranger_root, root.clone()],
        &ChainOptions::new(at),
    )
    .expect("second anchor fits");
    assert_eq!(chain.anchor(), &root);

    let mut no_budget = ChainOptions::new(at);
    no_budget.max_candidate_paths = 0;
    assert_eq!(
        verify(no_budget).unwrap_err(),
        Error::BudgetExceeded {
            what: "candidate paths"
        }
    );
    let mut short = ChainOptions::new(at);
    short.max_intermediates = 0;
    assert!(matches!(
        verify(short),
        Err(Error::MaxDepthExceeded { max: 0 })
    ));
    assert_eq!(
        verify_chain(
            &leaf,
            &[],
            std::slice::from_ref(&root),
            &ChainOptions::new(at)
        )
        .unwrap_err(),
        Error::UnknownIssuer
    );
}

/// A root -> intermediate -> leaf chain made entirely by the `openssl` CLI, for the
/// algorithms rcgen-over-ring cannot sign with (RSA-PSS) and for P-384.
struct OpensslChain {
    dir: tempfile::TempDir,
}

impl OpensslChain {
    fn new(key: &[&str], sig: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("ext.cnf"),
            "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n\
             [leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:router.example\n\
             authorityKeyIdentifier=keyid:always\n",
        )
        .expect("ext file");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(d)
                .args(args)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let root = [
            &[
                "req",
                "-x509",
                "-config",
                "/dev/null",
                "-nodes",
                "-days",
                "3650",
            ][..],
            &[
                "-subj",
                "/CN=CLI Root",
                "-keyout",
                "root.key",
                "-out",
                "root.pem",
            ],
            &["-newkey"],
            key,
            sig,
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            &["-addext", "subjectKeyIdentifier=hash"],
        ]
        .concat();
        run(&root);
        for (name, issuer, section, serial) in
            [("inter", "root", "ca", "2"), ("leaf", "inter", "leaf", "3")]
        {
            let subj = format!("/CN=CLI {name}");
            let (k, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let req = [
                &[
                    "req",
                    "-new",
                    "-config",
                    "/dev/null",
                    "-nodes",
                    "-subj",
                    &subj,
                ][..],
                &["-keyout", &k, "-out", &csr, "-newkey"],
                key,
            ]
            .concat();
            run(&req);
            let (ca, ca_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
            let sign = [
                &["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key][..],
                &["-set_serial", serial, "-days", "365", "-out", &pem],
                &["-extfile", "ext.cnf", "-extensions", section],
                sig,
            ]
            .concat();
            run(&sign);
        }
        Self { dir }
    }

    fn pem(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.pem"))).expect("read PEM")
    }

    fn openssl_accepts(&self, anchor: &Path, time: i64) -> bool {
        let d = self.dir.path();
        Command::new("openssl")
            .args(["verify", "-no-CApath", "-no-CAstore", "-CAfile"])
            .arg(anchor)
            .arg("-untrusted")
            .arg(d.join("inter.pem"))
            .args(["-attime", &time.to_string()])
            .arg(d.join("leaf.pem"))
            .output()
            .expect("run openssl verify")
            .status
            .success()
    }
}

fn cli_matrix(key: &[&str], sig: &[&str], algorithm: &str, key_alg: KeyAlgorithm) {
    let chain = OpensslChain::new(key, sig);
    let other = OpensslChain::new(key, sig);
    let leaf = Certificate::from_pem(&chain.pem("leaf")).expect("leaf");
    let inter = Certificate::from_pem(&chain.pem("inter")).expect("intermediate");
    let root = Certificate::from_pem(&chain.pem("root")).expect("root");
    let other_root = Certificate::from_pem(&other.pem("root")).expect("other root");
    assert_eq!(leaf.signature_algorithm(), algorithm);
    assert_eq!(inter.public_key_algorithm(), key_alg);
    let now = leaf.not_before() + 60;
    for (name, anchor, anchor_path, time, should_accept) in [
        (
            "accept",
            &root,
            chain.dir.path().join("root.pem"),
            now,
            true,
        ),
        (
            "expired",
            &root,
            chain.dir.path().join("root.pem"),
            leaf.not_after() + DAY,
            false,
        ),
        (
            "wrong CA",
            &other_root,
            other.dir.path().join("root.pem"),
            now,
            false,
        ),
    ] {
        let ours = verify_chain(
            &leaf,
            std::slice::from_ref(&inter),
            std::slice::from_ref(anchor),
            &ChainOptions::new(time),
        );
        let theirs = chain.openssl_accepts(&anchor_path, time);
        assert_eq!(
            (ours.is_ok(), theirs),
            (should_accept, should_accept),
            "{key:?} {sig:?} / {name}: ours {ours:?}, openssl accepts: {theirs}"
        );
    }
}

#[test]
fn openssl_agrees_on_rsa_pss_chains() {
    cli_matrix(
        &["rsa:2048"],
        &[
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ],
        "RSASSA-PSS",
        KeyAlgorithm::Rsa { bits: 2048 },
    );
}

#[test]
fn openssl_agrees_on_p384_chains() {
    cli_matrix(
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        &["-sha384"],
        "ecdsa-with-SHA384",
        KeyAlgorithm::EcP384,
    );
}
