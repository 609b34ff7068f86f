//! Certificate import: each of the three checks refuses with its named reason, and a
//! good certificate is accepted. Certificates come from rcgen and from the `openssl`
//! CLI (RSA keys, SHA-1 signatures, RSA-1024 keys).

mod ops_fixtures;

use ops_fixtures::{DAY, Leaf, NOW, crl, intermediate, leaf, openssl_leaf, root};
use rcgen::KeyPair;
use ssr_pki::import::{ChainCheck, ImportPolicy, import_certificate, reject_private_keys};
use ssr_pki::{Certificate, Crl, Error, IssueKind, Role};

fn issue_kinds(err: &Error) -> Vec<IssueKind> {
    match err {
        Error::CertificateRejected { issues } => issues.iter().map(|i| i.kind.clone()).collect(),
        other => panic!("expected CertificateRejected, got {other:?}"),
    }
}

#[test]
fn good_leaf_is_accepted_with_and_without_chain_check() {
    let ca = root("Import Root");
    let ica = intermediate(&ca, "Import Issuing CA", KeyPair::generate().unwrap());
    let key = KeyPair::generate().unwrap();
    let mut opts = Leaf::new("6f1e0c62-8d4b-4f55-9a4e-2b8f3c1d7e90", 100);
    opts.crl_url = Some("http://crl.test/issuing.crl".into());
    let pem = leaf(&ica, &opts, &key);

    let imported = import_certificate(&pem, &ImportPolicy::new(NOW).skip_chain_check()).unwrap();
    assert_eq!(
        imported.certificate.subject_cn().as_deref(),
        Some(opts.cn.as_str())
    );
    assert_eq!(
        imported.certificate.crl_distribution_points(),
        vec!["http://crl.test/issuing.crl".to_string()]
    );

    // With the CA bundle installed, the chain is checked too.
    let trusted = vec![
        Certificate::from_pem(&ca.pem()).unwrap(),
        Certificate::from_pem(&ica.pem()).unwrap(),
    ];
    let policy = ImportPolicy {
        trusted: &trusted,
        ..ImportPolicy::new(NOW)
    };
    assert!(import_certificate(&pem, &policy).is_ok());
    // Leaf followed by its chain in one PEM text is fine too.
    let with_chain = format!("{pem}{}", ica.pem());
    assert_eq!(
        import_certificate(&with_chain, &policy)
            .unwrap()
            .chain
            .len(),
        1
    );

    // A leaf of another hierarchy does not chain to the installed CA.
    let stranger = root("Stranger Root");
    let other = leaf(&stranger, &Leaf::new("x", 5), &KeyPair::generate().unwrap());
    assert_eq!(
        import_certificate(&other, &policy).unwrap_err(),
        Error::UnknownIssuer
    );
}

#[test]
fn no_trusted_ca_refuses_unless_the_chain_check_is_skipped() {
    let stranger = root("Anyone's Root");
    let pem = leaf(
        &stranger,
        &Leaf::new("anyone", 9),
        &KeyPair::generate().unwrap(),
    );
    // By default the chain check is required: with no trusted CA it cannot be met.
    let err = import_certificate(&pem, &ImportPolicy::new(NOW)).unwrap_err();
    assert_eq!(err, Error::NoTrustAnchor);
    assert!(err.to_string().contains("--no-chain-check"), "{err}");
    // Only the operator's explicit choice imports it.
    let skipped = ImportPolicy::new(NOW).skip_chain_check();
    assert_eq!(skipped.chain_check, ChainCheck::SkippedByOperator);
    assert!(import_certificate(&pem, &skipped).is_ok());
    // The other checks still run without the chain check.
    let mut old = Leaf::new("old", 10);
    old.not_after = NOW - 1;
    let expired = leaf(&stranger, &old, &KeyPair::generate().unwrap());
    assert!(matches!(
        import_certificate(&expired, &skipped),
        Err(Error::CertificateRejected { .. })
    ));
}

#[test]
fn check1_bundle_with_a_private_key() {
    let ca = root("Key Root");
    let key = KeyPair::generate().unwrap();
    let pem = leaf(&ca, &Leaf::new("leaf", 7), &key);
    for block in [
        key.serialize_pem(),
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n".to_string(),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nnot even base64\n-----END ENCRYPTED PRIVATE KEY-----\n".to_string(),
    ] {
        for text in [format!("{pem}{block}"), format!("{block}{pem}")] {
            let err = import_certificate(&text, &ImportPolicy::new(NOW).skip_chain_check()).unwrap_err();
            assert!(matches!(err, Error::PrivateKeyInBundle { .. }), "{err:?}");
            assert!(err.to_string().contains("private key"), "{err}");
        }
    }
    assert!(reject_private_keys(&pem).is_ok());
}

#[test]
fn check2_dates_roles_extensions() {
    let ca = root("Check Root");
    let key = KeyPair::generate().unwrap();

    let mut expired = Leaf::new("expired", 10);
    expired.not_before = NOW - 100 * DAY;
    expired.not_after = NOW - 1;
    let err = import_certificate(
        &leaf(&ca, &expired, &key),
        &ImportPolicy::new(NOW).skip_chain_check(),
    )
    .unwrap_err();
    assert!(
        matches!(issue_kinds(&err)[..], [IssueKind::Expired { .. }]),
        "{err}"
    );
    assert!(err.to_string().contains("expired"), "{err}");

    let mut future = Leaf::new("future", 11);
    future.not_before = NOW + DAY;
    let err = import_certificate(
        &leaf(&ca, &future, &key),
        &ImportPolicy::new(NOW).skip_chain_check(),
    )
    .unwrap_err();
    assert!(
        matches!(issue_kinds(&err)[..], [IssueKind::NotYetValid { .. }]),
        "{err}"
    );
    assert!(err.to_string().contains("not yet valid"), "{err}");

    let mut ca_leaf = Leaf::new("a CA", 12);
    ca_leaf.ca = true;
    let err = import_certificate(
        &leaf(&ca, &ca_leaf, &key),
        &ImportPolicy::new(NOW).skip_chain_check(),
    )
    .unwrap_err();
    assert!(
        issue_kinds(&err).contains(&IssueKind::CaUsedAsLeaf),
        "{err}"
    );

    let mut crit = Leaf::new("critical", 13);
    crit.critical_unknown_extension = true;
    let err = import_certificate(
        &leaf(&ca, &crit, &key),
        &ImportPolicy::new(NOW).skip_chain_check(),
    )
    .unwrap_err();
    assert!(
        issue_kinds(&err).contains(&IssueKind::UnknownCriticalExtension {
            oid: "1.3.6.1.4.1.55555.1".into()
        }),
        "{err}"
    );

    // A CA certificate imported for the CA role is fine.
    let policy = ImportPolicy {
        role: Role::Intermediate,
        ..ImportPolicy::new(NOW).skip_chain_check()
    };
    assert!(import_certificate(&leaf(&ca, &ca_leaf, &key), &policy).is_ok());

    // Not a certificate at all.
    assert!(matches!(
        import_certificate("hello", &ImportPolicy::new(NOW).skip_chain_check()),
        Err(Error::Pem { .. })
    ));
    let public_only =
        ssr_pki::keys::PrivateKey::generate(&mut rand_core::UnwrapErr(getrandom::SysRng))
            .public_key_pem()
            .unwrap();
    assert_eq!(
        import_certificate(&public_only, &ImportPolicy::new(NOW).skip_chain_check()).unwrap_err(),
        Error::NoCertificate
    );
    assert!(
        import_certificate(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &ImportPolicy::new(NOW).skip_chain_check()
        )
        .is_err()
    );
}

#[test]
fn check2_algorithm_policy_with_openssl_made_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = root("OpenSSL Root");
    let at = |pem: &str| Certificate::from_pem(pem).unwrap().not_before() + 60;

    // Control: openssl with SHA-256 and RSA-2048 is accepted.
    let good = openssl_leaf(
        dir.path(),
        &ca,
        "rsa2048",
        "sha256",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    import_certificate(&good, &ImportPolicy::new(at(&good)).skip_chain_check()).unwrap();

    let sha1 = openssl_leaf(
        dir.path(),
        &ca,
        "sha1",
        "sha1",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let err =
        import_certificate(&sha1, &ImportPolicy::new(at(&sha1)).skip_chain_check()).unwrap_err();
    assert!(
        issue_kinds(&err)
            .iter()
            .any(|k| matches!(k, IssueKind::WeakSignatureAlgorithm { .. })),
        "{err}"
    );
    assert!(
        err.to_string().to_lowercase().contains("sha1")
            || err.to_string().to_lowercase().contains("sha-1"),
        "{err}"
    );

    let rsa1024 = openssl_leaf(
        dir.path(),
        &ca,
        "rsa1024",
        "sha256",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let err = import_certificate(
        &rsa1024,
        &ImportPolicy::new(at(&rsa1024)).skip_chain_check(),
    )
    .unwrap_err();
    assert!(
        issue_kinds(&err).contains(&IssueKind::RsaKeyTooSmall { bits: 1024 }),
        "{err}"
    );

    let p521 = openssl_leaf(
        dir.path(),
        &ca,
        "p521",
        "sha256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
    );
    let err =
        import_certificate(&p521, &ImportPolicy::new(at(&p521)).skip_chain_check()).unwrap_err();
    assert!(
        issue_kinds(&err)
            .iter()
            .any(|k| matches!(k, IssueKind::UnsupportedCurve { .. })),
        "{err}"
    );
}

#[test]
fn check3_revoked_by_a_known_crl() {
    let ca = root("CRL Root");
    let key = KeyPair::generate().unwrap();
    let pem = leaf(&ca, &Leaf::new("revoked", 77), &key);
    let crls = vec![Crl::from_der(&crl(&ca, &[5, 77], NOW - DAY, 1)).unwrap()];
    let policy = ImportPolicy {
        crls: &crls,
        ..ImportPolicy::new(NOW).skip_chain_check()
    };
    let err = import_certificate(&pem, &policy).unwrap_err();
    assert!(
        matches!(&err, Error::Revoked { serial_hex, .. } if serial_hex == "4D"),
        "{err:?}"
    );
    assert!(err.to_string().contains("revoked"), "{err}");

    // Not listed: accepted. A CRL of another issuer listing the same serial does not count.
    let other_root = root("Other CRL Root");
    let other = vec![Crl::from_der(&crl(&other_root, &[77], NOW - DAY, 1)).unwrap()];
    let not_listed = leaf(&ca, &Leaf::new("fine", 78), &key);
    assert!(import_certificate(&not_listed, &policy).is_ok());
    let policy = ImportPolicy {
        crls: &other,
        ..ImportPolicy::new(NOW).skip_chain_check()
    };
    assert!(import_certificate(&pem, &policy).is_ok());
}

#[test]
fn router_key_must_match() {
    let ca = root("Match Root");
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let router = ssr_pki::keys::PrivateKey::generate(&mut rng);
    let router_spki = P256Public(router.verifying_key().to_sec1_bytes().to_vec());
    let mine = leaf(&ca, &Leaf::new("mine", 1), &router_spki);
    let theirs = leaf(&ca, &Leaf::new("theirs", 2), &KeyPair::generate().unwrap());
    let policy = ImportPolicy {
        router_key: Some(router.verifying_key()),
        ..ImportPolicy::new(NOW).skip_chain_check()
    };
    assert!(import_certificate(&mine, &policy).is_ok());
    assert_eq!(
        import_certificate(&theirs, &policy).unwrap_err(),
        Error::KeyMismatch
    );
}

/// A bare P-256 public key for rcgen to certify (the router's key, whose private half
/// rcgen never sees).
struct P256Public(Vec<u8>);

impl rcgen::PublicKeyData for P256Public {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}
