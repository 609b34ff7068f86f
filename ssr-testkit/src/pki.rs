//! A small test PKI (root -> intermediate -> leaf, RSA-2048 or ECDSA P-256) built with
//! rcgen, with CRLs from either CA. RSA keys come from the `openssl` CLI (ring, rcgen's
//! backend here, cannot generate RSA keys).
//!
//! Validity windows (UTC): root 2020-01-01..2040-01-01, intermediate
//! 2021-01-01..2039-01-01, leaf 2024-01-01..2025-01-01. CRLs: thisUpdate 2023-01-01,
//! nextUpdate 2039-01-01.

use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};

/// Key type of every certificate of a [`TestPki`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256 with SHA-256.
    EcdsaP256,
    /// RSA-2048, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
}

/// A fresh key pair of `kind`.
///
/// # Panics
/// If key generation fails (the `openssl` CLI is missing, for RSA).
pub fn key_pair(kind: KeyKind) -> KeyPair {
    match kind {
        KeyKind::EcdsaP256 => {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key")
        }
        KeyKind::Rsa2048 => {
            let out = Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ])
                .output()
                .expect("run openssl genpkey");
            assert!(out.status.success(), "openssl genpkey failed");
            let pem = String::from_utf8(out.stdout).expect("PEM is UTF-8");
            KeyPair::from_pem(&pem).expect("RSA PKCS#8 key")
        }
    }
}

/// Serial numbers of the certificates of a [`TestPki`].
pub const ROOT_SERIAL: u64 = 0x1001;
/// The intermediate's serial number.
pub const INTERMEDIATE_SERIAL: u64 = 0x2002;
/// The leaf's serial number.
pub const LEAF_SERIAL: u64 = 0x3003;

/// root -> intermediate -> leaf, each with its PEM, and the two CAs able to sign CRLs.
#[derive(Debug)]
pub struct TestPki {
    /// The self-signed root, PEM.
    pub root_pem: String,
    /// The intermediate CA, PEM.
    pub intermediate_pem: String,
    /// The leaf, PEM (CN = `leaf_cn`, SAN DNS `router.example`, EKU server+client).
    pub leaf_pem: String,
    /// The leaf's commonName.
    pub leaf_cn: String,
    root: Issuer<'static, KeyPair>,
    intermediate: Issuer<'static, KeyPair>,
}

fn ca_params(cn: &str, serial: u64, from: i32, to: i32) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "ssr test PKI");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = date_time_ymd(from, 1, 1);
    p.not_after = date_time_ymd(to, 1, 1);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

impl TestPki {
    /// Builds a new PKI whose CA names start with `name` (two PKIs with the same name
    /// have the same distinguished names but different keys).
    pub fn new(kind: KeyKind, name: &str) -> Self {
        let root_key = key_pair(kind);
        let root_params = ca_params(&format!("{name} Root CA"), ROOT_SERIAL, 2020, 2040);
        let root_cert = root_params.self_signed(&root_key).expect("root");
        let root = Issuer::new(root_params, root_key);

        let inter_key = key_pair(kind);
        let mut inter_params = ca_params(
            &format!("{name} Intermediate CA"),
            INTERMEDIATE_SERIAL,
            2021,
            2039,
        );
        inter_params.use_authority_key_identifier_extension = true;
        let inter_cert = inter_params
            .signed_by(&inter_key, &root)
            .expect("intermediate");
        let intermediate = Issuer::new(inter_params, inter_key);

        let leaf_cn = "6f1c2a3e-8d4b-4c5a-9e7f-0123456789ab".to_owned();
        let leaf_key = key_pair(kind);
        let leaf_cert = leaf_params(&leaf_cn, LEAF_SERIAL, (2024, 2025))
            .signed_by(&leaf_key, &intermediate)
            .expect("leaf");

        Self {
            root_pem: root_cert.pem(),
            intermediate_pem: inter_cert.pem(),
            leaf_pem: leaf_cert.pem(),
            leaf_cn,
            root,
            intermediate,
        }
    }

    /// A leaf like [`TestPki::leaf_pem`] for `key`, with commonName `cn`, serial `serial`,
    /// valid from January 1st of `from` to January 1st of `to`, signed by the
    /// intermediate; PEM.
    pub fn issue_leaf(
        &self,
        cn: &str,
        serial: u64,
        key: &KeyPair,
        (from, to): (i32, i32),
    ) -> String {
        leaf_params(cn, serial, (from, to))
            .signed_by(key, &self.intermediate)
            .expect("leaf")
            .pem()
    }

    /// A leaf like [`TestPki::issue_leaf`] for a P-256 public key held elsewhere (a
    /// TPM): `sec1_point` is the uncompressed point (`04 | x | y`, 65 bytes).
    pub fn issue_leaf_for_p256_point(
        &self,
        cn: &str,
        serial: u64,
        sec1_point: &[u8],
        (from, to): (i32, i32),
    ) -> String {
        assert!(
            sec1_point.len() == 65 && sec1_point[0] == 4,
            "an uncompressed P-256 point"
        );
        leaf_params(cn, serial, (from, to))
            .signed_by(&P256Point(sec1_point), &self.intermediate)
            .expect("leaf")
            .pem()
    }

    /// A CRL signed by the root revoking `serials`, PEM.
    pub fn root_crl(&self, serials: &[u64]) -> String {
        crl(&self.root, serials)
    }

    /// A CRL signed by the intermediate revoking `serials`, PEM.
    pub fn intermediate_crl(&self, serials: &[u64]) -> String {
        crl(&self.intermediate, serials)
    }

    /// A CRL signed by the intermediate, revoking nothing, with thisUpdate on the given
    /// (year, month, day) instead of 2023-01-01.
    pub fn intermediate_crl_issued(&self, (year, month, day): (i32, u8, u8)) -> String {
        crl_issued(&self.intermediate, &[], (year, month, day))
    }
}

/// A P-256 public key given by its point, for rcgen to put in a certificate.
struct P256Point<'a>(&'a [u8]);

impl rcgen::PublicKeyData for P256Point<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// An end-entity certificate's parameters: CN `cn`, SAN DNS `router.example`, digital
/// signature, EKU server + client authentication.
fn leaf_params(cn: &str, serial: u64, (from, to): (i32, i32)) -> CertificateParams {
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.serial_number = Some(SerialNumber::from(serial));
    leaf.not_before = date_time_ymd(from, 1, 1);
    leaf.not_after = date_time_ymd(to, 1, 1);
    leaf.subject_alt_names = vec![SanType::DnsName(
        "router.example".try_into().expect("DNS name"),
    )];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.use_authority_key_identifier_extension = true;
    leaf
}

fn crl(issuer: &Issuer<'static, KeyPair>, serials: &[u64]) -> String {
    crl_issued(issuer, serials, (2023, 1, 1))
}

fn crl_issued(
    issuer: &Issuer<'static, KeyPair>,
    serials: &[u64],
    (year, month, day): (i32, u8, u8),
) -> String {
    CertificateRevocationListParams {
        this_update: date_time_ymd(year, month, day),
        next_update: date_time_ymd(2039, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: date_time_ymd(2023, 6, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .expect("CRL")
    .pem()
    .expect("CRL PEM")
}
