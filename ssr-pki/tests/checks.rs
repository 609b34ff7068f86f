//! Per-certificate checks (usable on a root), PEM bundle parsing, and "any bytes give an
//! error, never a panic" for the three parsers.

use std::process::Command;

use proptest::prelude::*;
use rcgen::{CertificateParams, CustomExtension, DnType, IsCa, KeyUsagePurpose};
use ssr_pki::{
    Certificate, Crl, Error, IssueKind, KeyAlgorithm, PemItem, Role, check_certificate,
    parse_pem_bundle,
};
use ssr_testkit::pki::{KeyKind, TestPki, key_pair};

const DAY: i64 = 86_400;

fn kinds(cert: &Certificate, role: Role, now: i64) -> Vec<IssueKind> {
    check_certificate(cert, role, now)
        .into_iter()
        .map(|i| i.kind)
        .collect()
}

fn self_signed(edit: impl FnOnce(&mut CertificateParams)) -> Certificate {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "Check Root");
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    p.serial_number = Some(7u64.into());
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    edit(&mut p);
    let key = key_pair(KeyKind::EcdsaP256);
    Certificate::from_pem(&p.self_signed(&key).expect("self-signed").pem()).expect("parses")
}

/// 2030-01-01, inside the roots' validity.
const IN_2030: i64 = 1_893_456_000;

#[test]
fn a_good_chain_has_no_issues_in_its_roles() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "Checks");
    let root = Certificate::from_pem(&pki.root_pem).expect("root");
    let inter = Certificate::from_pem(&pki.intermediate_pem).expect("intermediate");
    let leaf = Certificate::from_pem(&pki.leaf_pem).expect("leaf");
    let now = leaf.not_before() + DAY;

    assert_eq!(kinds(&root, Role::Root, now), vec![]);
    assert_eq!(kinds(&inter, Role::Intermediate, now), vec![]);
    assert_eq!(kinds(&leaf, Role::Leaf, now), vec![]);
    assert_eq!(leaf.subject_cn().as_deref(), Some(pki.leaf_cn.as_str()));
    assert_eq!(leaf.san_dns_names(), vec!["router.example".to_owned()]);
    assert_eq!(leaf.public_key_algorithm(), KeyAlgorithm::EcP256);
    assert!(root.is_ca() && !leaf.is_ca());
    assert_eq!(leaf.fingerprint_sha256().len(), 32);
    leaf.verify_signed_by(&inter)
        .expect("leaf signed by the intermediate");
    assert_eq!(leaf.verify_signed_by(&root), Err(Error::BadSignature));

    // Wrong roles and times are named.
    assert!(
        kinds(&leaf, Role::Leaf, leaf.not_after() + 1).contains(&IssueKind::Expired {
            not_after: leaf.not_after(),
            now: leaf.not_after() + 1,
        })
    );
    assert!(matches!(
        kinds(&leaf, Role::Leaf, leaf.not_before() - 1)[..],
        [IssueKind::NotYetValid { .. }]
    ));
    assert!(kinds(&leaf, Role::Intermediate, now).contains(&IssueKind::NotCa));
    assert!(kinds(&root, Role::Leaf, now).contains(&IssueKind::CaUsedAsLeaf));
    assert!(matches!(
        kinds(&inter, Role::Root, now)[..],
        [IssueKind::NotSelfSigned { .. }]
    ));
}

#[test]
fn root_itself_is_checked() {
    let no_ku = self_signed(|p| p.key_usages.clear());
    assert_eq!(
        kinds(&no_ku, Role::Root, IN_2030),
        vec![IssueKind::KeyUsageMissing]
    );

    let no_cert_sign = self_signed(|p| p.key_usages = vec![KeyUsagePurpose::CrlSign]);
    assert_eq!(
        kinds(&no_cert_sign, Role::Root, IN_2030),
        vec![IssueKind::KeyUsageMissingKeyCertSign]
    );

    let not_ca = self_signed(|p| p.is_ca = IsCa::ExplicitNoCa);
    assert!(kinds(&not_ca, Role::Root, IN_2030).contains(&IssueKind::NotCa));

    let expired = self_signed(|p| p.not_after = rcgen::date_time_ymd(2021, 1, 1));
    assert!(matches!(
        kinds(&expired, Role::Root, IN_2030)[..],
        [IssueKind::Expired { .. }]
    ));

    let critical = self_signed(|p| {
        let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    });
    assert_eq!(
        kinds(&critical, Role::Root, IN_2030),
        vec![IssueKind::UnknownCriticalExtension {
            oid: "1.3.6.1.4.1.99999.1".to_owned()
        }]
    );
    // Each issue names the certificate it concerns.
    let issue = &check_certificate(&critical, Role::Root, IN_2030)[0];
    assert!(issue.to_string().contains("Check Root"), "{issue}");
}

fn openssl_self_signed(args: &[&str]) -> Certificate {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("c.pem");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=weak"])
        .args(["-keyout", &dir.path().join("k.pem").to_string_lossy()])
        .args(["-out", &out.to_string_lossy()])
        .args(args)
        .output()
        .expect("run openssl req");
    assert!(
        output.status.success(),
        "openssl req {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Certificate::from_pem(&std::fs::read_to_string(out).expect("read")).expect("parses")
}

#[test]
fn algorithm_policy_is_enforced() {
    let weak = openssl_self_signed(&["-newkey", "rsa:1024", "-sha1"]);
    let now = weak.not_before() + 60;
    let found = kinds(&weak, Role::Root, now);
    assert!(
        found.contains(&IssueKind::RsaKeyTooSmall { bits: 1024 }),
        "{found:?}"
    );
    assert!(
        found.contains(&IssueKind::WeakSignatureAlgorithm {
            algorithm: "sha1WithRSAEncryption".to_owned()
        }),
        "{found:?}"
    );

    let p521 = openssl_self_signed(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"]);
    let found = kinds(&p521, Role::Root, now);
    assert!(
        found.contains(&IssueKind::UnsupportedCurve {
            curve: "1.3.132.0.35".to_owned()
        }),
        "{found:?}"
    );

    let rsa = openssl_self_signed(&["-newkey", "rsa:2048", "-sha256"]);
    assert_eq!(rsa.public_key_algorithm(), KeyAlgorithm::Rsa { bits: 2048 });
    let found = kinds(&rsa, Role::Leaf, now);
    assert!(
        !found.iter().any(|k| matches!(
            k,
            IssueKind::RsaKeyTooSmall { .. } | IssueKind::WeakSignatureAlgorithm { .. }
        )),
        "{found:?}"
    );
}

#[test]
fn pem_bundle_reports_keys_without_decoding_them() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "Pem");
    let key = "-----BEGIN PRIVATE KEY-----\nnot even base64!\n-----END PRIVATE KEY-----\n";
    let crl = pki.root_crl(&[]);
    let text = format!(
        "subject=CN=whatever\n{}\n{key}{crl}{}",
        pki.leaf_pem, pki.root_pem
    );
    let items = parse_pem_bundle(&text).expect("bundle parses");
    let labels: Vec<&str> = items.iter().map(PemItem::label).collect();
    assert_eq!(
        labels,
        ["CERTIFICATE", "PRIVATE KEY", "X509 CRL", "CERTIFICATE"]
    );
    assert!(matches!(&items[2], PemItem::Crl(c) if c.revoked_count() == 0));

    // CRLF line endings are fine.
    let crlf = pki.root_pem.replace('\n', "\r\n");
    assert_eq!(parse_pem_bundle(&crlf).expect("CRLF").len(), 1);
    // Exactly one block for from_pem.
    assert_eq!(
        Certificate::from_pem(&format!("{}{}", pki.root_pem, pki.root_pem)).unwrap_err(),
        Error::PemCount { found: 2 }
    );
    assert!(matches!(
        Crl::from_pem(&pki.root_pem),
        Err(Error::PemLabel { .. })
    ));
}

#[test]
fn malformed_pem_is_rejected_with_its_line() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "Bad");
    let cert = pki.root_pem.trim_end();
    let cases = [
        ("", "no PEM block found"),
        ("text only\n", "no PEM block found"),
        (
            &cert.replace("END CERTIFICATE", "END X509 CRL")[..],
            "END label differs from BEGIN label",
        ),
        (
            &cert.replace("-----END CERTIFICATE-----", "")[..],
            "block is never terminated by END",
        ),
        (
            &format!("{}\n{cert}", cert.replace("-----END CERTIFICATE-----", "")),
            "BEGIN inside an unterminated block",
        ),
        ("-----END CERTIFICATE-----\n", "END without BEGIN"),
        (
            &cert.replacen('M', "*", 1)[..],
            "block contents are not strict RFC 7468 base64",
        ),
    ];
    for (text, reason) in cases {
        match parse_pem_bundle(text) {
            Err(Error::Pem { reason: r, .. }) => assert_eq!(r, reason, "{text:?}"),
            other => panic!("{text:?}: expected Pem({reason}), got {other:?}"),
        }
    }
    // A well-formed block holding a bad certificate fails the whole bundle.
    let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        parse_pem_bundle(junk),
        Err(Error::CertificateMalformed { .. })
    ));
}

#[test]
fn crl_accessors_and_lookup() {
    let pki = TestPki::new(KeyKind::EcdsaP256, "Crl");
    let crl = Crl::from_pem(&pki.intermediate_crl(&[0x3003, 0x42])).expect("CRL");
    let leaf = Certificate::from_pem(&pki.leaf_pem).expect("leaf");
    let inter = Certificate::from_pem(&pki.intermediate_pem).expect("intermediate");
    assert_eq!(crl.revoked_count(), 2);
    let entries: Vec<_> = crl.revoked().collect();
    assert_eq!(entries[0].serial_hex, "3003");
    assert_eq!(entries[0].reason.as_deref(), Some("KeyCompromise"));
    assert!(crl.this_update() < crl.next_update());
    assert!(!crl.is_stale(crl.next_update()) && crl.is_stale(crl.next_update() + 1));
    let hit = ssr_pki::is_revoked(&leaf, std::slice::from_ref(&crl)).expect("revoked");
    assert_eq!(hit.entry.serial_hex, leaf.serial_hex());
    assert_eq!(hit.crl_issuer, inter.subject());
    assert!(ssr_pki::is_revoked(&inter, std::slice::from_ref(&crl)).is_none());
    crl.verify_signature(&inter).expect("signature");
    assert!(matches!(
        crl.verify_signature(&leaf),
        Err(Error::CrlIssuerMismatch { .. })
    ));
    assert_eq!(Crl::from_der(crl.der()).expect("DER round trip"), crl);
    assert_eq!(Crl::from_pem(&crl.to_pem()).expect("PEM round trip"), crl);
}

fn sample_ders() -> (Vec<u8>, Vec<u8>) {
    let pki = TestPki::new(KeyKind::EcdsaP256, "Fuzz");
    let cert = Certificate::from_pem(&pki.leaf_pem).expect("leaf");
    let crl = Crl::from_pem(&pki.root_crl(&[1, 2, 3])).expect("crl");
    (cert.der().to_vec(), crl.der().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Certificate::from_der(&bytes);
        let _ = Crl::from_der(&bytes);
        let _ = parse_pem_bundle(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_der_never_panics(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        thread_local!(static SAMPLES: (Vec<u8>, Vec<u8>) = sample_ders());
        SAMPLES.with(|(cert, crl)| {
            for der in [cert, crl] {
                let mut m = der.clone();
                let i = pos.index(m.len());
                m[i] = byte;
                m.truncate(cut.index(m.len() + 1).max(i));
                if let Ok(c) = Certificate::from_der(&m) {
                    let _ = check_certificate(&c, Role::Root, 0);
                    let _ = c.verify_signed_by(&c);
                }
                if let Ok(c) = Crl::from_der(&m) {
                    let _ = c.revoked().count();
                }
            }
        });
    }
}

#[test]
fn required_revocation_with_no_crl_held_fails_instead_of_skipping() {
    use ssr_pki::{ChainOptions, Crl, RevocationPolicy, verify_chain};
    use ssr_testkit::pki::{KeyKind, TestPki};
    let pki = TestPki::new(KeyKind::EcdsaP256, "Required");
    let leaf = Certificate::from_pem(&pki.leaf_pem).unwrap();
    let ica = Certificate::from_pem(&pki.intermediate_pem).unwrap();
    let root = Certificate::from_pem(&pki.root_pem).unwrap();
    let now = leaf.not_before() + 3600;
    let verify = |crls: Vec<String>, policy| {
        let mut opts = ChainOptions::new(now)
            .with_crls(crls.iter().map(|c| Crl::from_pem(c).unwrap()).collect());
        opts.revocation = policy;
        verify_chain(
            &leaf,
            std::slice::from_ref(&ica),
            std::slice::from_ref(&root),
            &opts,
        )
        .map(|_| ())
    };
    // No CRL held: `Required` refuses, `IfCrlAvailable` accepts.
    assert_eq!(
        verify(vec![], RevocationPolicy::Required),
        Err(Error::UnknownRevocationStatus)
    );
    assert_eq!(verify(vec![], RevocationPolicy::IfCrlAvailable), Ok(()));
    // Every issuer's CRL held and clean: accepted; one missing: refused.
    let both = vec![pki.root_crl(&[]), pki.intermediate_crl(&[])];
    assert_eq!(verify(both, RevocationPolicy::Required), Ok(()));
    assert_eq!(
        verify(vec![pki.intermediate_crl(&[])], RevocationPolicy::Required),
        Err(Error::UnknownRevocationStatus)
    );
}
