//! Trusted CA bundles, `strict` and `warn`, on ECDSA and RSA hierarchies (issuing CA,
//! intermediate, root in one file, as in the product's sample), including bad roots.

mod ops_fixtures;

use ops_fixtures::{Ca, DAY, NOW, intermediate, openssl_rsa_key, root, root_with};
use rcgen::{KeyPair, PKCS_RSA_SHA256};
use ssr_pki::trust::{BundleIssue, TrustBundle, ValidationMode};
use ssr_pki::{Error, IssueKind};

/// issuing CA, intermediate, root: the order of the product's sample bundle.
fn bundle(cas: &[&Ca]) -> String {
    cas.iter().map(|c| format!("{}\n", c.pem())).collect()
}

fn rsa_key(dir: &std::path::Path, name: &str) -> KeyPair {
    let pem = openssl_rsa_key(dir, name, 2048);
    KeyPair::from_pem_and_sign_algo(&pem, &PKCS_RSA_SHA256).unwrap()
}

fn ecdsa_chain() -> (Ca, Ca, Ca) {
    let r = root("ECDSA Root CA");
    let i = intermediate(&r, "ECDSA Intermediate CA", KeyPair::generate().unwrap());
    let s = intermediate(&i, "ECDSA Issuing CA", KeyPair::generate().unwrap());
    (r, i, s)
}

fn rsa_chain(dir: &std::path::Path) -> (Ca, Ca, Ca) {
    let r = root_with("RSA Root CA", rsa_key(dir, "r.key"));
    let i = intermediate(&r, "RSA Intermediate CA", rsa_key(dir, "i.key"));
    let s = intermediate(&i, "RSA Issuing CA", rsa_key(dir, "s.key"));
    (r, i, s)
}

#[test]
fn good_bundles_install_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    for (r, i, s) in [ecdsa_chain(), rsa_chain(dir.path())] {
        let text = bundle(&[&s, &i, &r]);
        for mode in [ValidationMode::Strict, ValidationMode::Warn] {
            let b = TrustBundle::install(&text, mode, NOW).unwrap();
            assert_eq!(b.certificates().len(), 3);
            assert_eq!(b.roots().count(), 1);
            assert_eq!(b.intermediates().count(), 2);
            assert!(b.warnings().is_empty(), "{:?}", b.warnings());
            // What is stored re-installs identically.
            let again = TrustBundle::install(&b.to_pem(), mode, NOW).unwrap();
            assert_eq!(again.certificates(), b.certificates());
        }
    }
}

#[test]
fn expired_root_rejects_in_strict_and_warns_in_warn() {
    let dir = tempfile::tempdir().unwrap();
    for key in [KeyPair::generate().unwrap(), rsa_key(dir.path(), "old.key")] {
        // A root whose validity ended yesterday, and a CA under it.
        let mut old = root_with("Old Root", key);
        old.params.not_after = rcgen::date_time_ymd(1970, 1, 1)
            + std::time::Duration::from_secs(u64::try_from(NOW - DAY).unwrap());
        old.cert = old.params.self_signed(&old.key).unwrap();
        let ca = intermediate(&old, "Under Old Root", KeyPair::generate().unwrap());
        let text = bundle(&[&ca, &old]);

        let err = TrustBundle::install(&text, ValidationMode::Strict, NOW).unwrap_err();
        let Error::TrustBundleRejected { issues } = &err else {
            panic!("{err:?}")
        };
        assert!(
            issues
                .iter()
                .any(|i| matches!(i, BundleIssue::Certificate(x)
                if x.subject == "CN=Old Root" && matches!(x.kind, IssueKind::Expired { .. }))),
            "{err}"
        );
        assert!(err.to_string().contains("CN=Old Root"), "{err}");

        let b = TrustBundle::install(&text, ValidationMode::Warn, NOW).unwrap();
        assert_eq!(b.certificates().len(), 2);
        assert!(!b.warnings().is_empty());
    }
}

#[test]
fn root_that_is_not_a_ca_or_lacks_key_usage_is_an_issue() {
    let key = KeyPair::generate().unwrap();
    // Self-signed but basicConstraints cA = FALSE.
    let mut not_ca = root_with("Not A CA Root", key);
    not_ca.params.is_ca = rcgen::IsCa::ExplicitNoCa;
    not_ca.cert = not_ca.params.self_signed(&not_ca.key).unwrap();
    let err = TrustBundle::install(&bundle(&[&not_ca]), ValidationMode::Strict, NOW).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");

    // A CA root whose keyUsage lacks keyCertSign.
    let mut no_ku = root("No KeyCertSign Root");
    no_ku.params.key_usages = vec![rcgen::KeyUsagePurpose::CrlSign];
    no_ku.cert = no_ku.params.self_signed(&no_ku.key).unwrap();
    let err = TrustBundle::install(&bundle(&[&no_ku]), ValidationMode::Strict, NOW).unwrap_err();
    let Error::TrustBundleRejected { issues } = &err else {
        panic!("{err:?}")
    };
    assert!(
        issues.contains(&BundleIssue::Certificate(ssr_pki::Issue {
            subject: "CN=No KeyCertSign Root".into(),
            kind: IssueKind::KeyUsageMissingKeyCertSign
        })),
        "{err}"
    );
    let warned = TrustBundle::install(&bundle(&[&no_ku]), ValidationMode::Warn, NOW).unwrap();
    assert_eq!(warned.warnings(), &issues[..]);
}

#[test]
fn structural_issues() {
    let (r, i, s) = ecdsa_chain();
    // The root is missing: the intermediate's issuer is not in the bundle, no root.
    let err = TrustBundle::install(&bundle(&[&s, &i]), ValidationMode::Strict, NOW).unwrap_err();
    let Error::TrustBundleRejected { issues } = &err else {
        panic!("{err:?}")
    };
    assert!(issues.contains(&BundleIssue::NoRoot));
    assert!(issues.iter().any(|x| matches!(x, BundleIssue::IssuerNotInBundle { subject, .. } if subject == "CN=ECDSA Intermediate CA")));

    // A duplicate certificate.
    let err =
        TrustBundle::install(&bundle(&[&s, &i, &r, &r]), ValidationMode::Strict, NOW).unwrap_err();
    assert!(err.to_string().contains("appears more than once"), "{err}");

    // A root impostor: same name, other key. The intermediate's signature does not
    // verify under it.
    let impostor = root("ECDSA Root CA");
    let err = TrustBundle::install(&bundle(&[&s, &i, &impostor]), ValidationMode::Strict, NOW)
        .unwrap_err();
    assert!(err.to_string().contains("is not in the bundle"), "{err}");

    // A private key anywhere refuses the bundle in both modes.
    let text = format!("{}{}", bundle(&[&s, &i, &r]), r.key.serialize_pem());
    for mode in [ValidationMode::Strict, ValidationMode::Warn] {
        assert!(matches!(
            TrustBundle::install(&text, mode, NOW),
            Err(Error::PrivateKeyInBundle { .. })
        ));
    }
    assert!(matches!(
        TrustBundle::install("", ValidationMode::Warn, NOW),
        Err(Error::Pem { .. })
    ));
    // A CRL alone is no bundle.
    let only_crl = ssr_pki::Crl::from_der(&ops_fixtures::crl(&r, &[], NOW, 1))
        .unwrap()
        .to_pem();
    assert_eq!(
        TrustBundle::install(&only_crl, ValidationMode::Warn, NOW).unwrap_err(),
        Error::NoCertificate
    );
    assert!("lenient".parse::<ValidationMode>().is_err());
    assert_eq!(
        "warn".parse::<ValidationMode>().unwrap(),
        ValidationMode::Warn
    );
}
