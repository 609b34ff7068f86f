//! TPM identity against swtpm: IDevID from NV (written by tpm2-tools), the vTPM DevID.

mod common;

use common::{connect, path_str, run};
use ssr_testkit::Swtpm;
use ssr_tpm::esapi::IdentityConfig;
use ssr_tpm::identity::{CloudProvider, IDEVID_CERT_NV_INDEX, IdentitySource};
use ssr_tpm::keystore::KeyStoreTpm as _;

const NOW: u64 = 1_764_000_000; // 2025-11-24

/// An IDevID-like certificate made by openssl, written to 0x01C90000 with tpm2-tools.
fn install_idevid(swtpm: &Swtpm, subject: &str) -> Vec<u8> {
    let bytes = openssl_cert(subject, "3650", None);
    let dir = tempfile::tempdir().unwrap();
    let der = dir.path().join("idevid.der");
    std::fs::write(&der, &bytes).unwrap();
    let size = bytes.len().to_string();
    run(
        Some(swtpm),
        &[
            "tpm2_nvdefine",
            "0x01C90000",
            "-C",
            "o",
            "-s",
            &size,
            "-a",
            "ownerread|ownerwrite|authread|authwrite|no_da",
        ],
    );
    run(
        Some(swtpm),
        &[
            "tpm2_nvwrite",
            "0x01C90000",
            "-C",
            "o",
            "-i",
            path_str(&der),
        ],
    );
    bytes
}

#[test]
fn idevid_is_read_from_nv_and_nothing_is_created() {
    let swtpm = Swtpm::start().unwrap();
    let der = install_idevid(
        &swtpm,
        "/CN=SSR-1200/serialNumber=JN1234567890/O=Example Networks",
    );
    let mut tpm = connect(&swtpm);
    let id = tpm
        .read_device_identity(IDEVID_CERT_NV_INDEX)
        .unwrap()
        .unwrap();
    assert_eq!(id.serial_number, "JN1234567890");
    assert_eq!(id.model.as_deref(), Some("SSR-1200"));
    assert_eq!(id.der, der);
    let cfg = IdentityConfig::default();
    match tpm.provision_identity(&cfg, &None, NOW).unwrap() {
        IdentitySource::IDevId(found) => assert_eq!(found, id),
        other => panic!("{other:?}"),
    }
    assert_eq!(tpm.master_key_name(cfg.master_key_handle).unwrap(), None);
}

#[test]
fn no_idevid_index_is_none() {
    let swtpm = Swtpm::start().unwrap();
    assert_eq!(
        connect(&swtpm)
            .read_device_identity(IDEVID_CERT_NV_INDEX)
            .unwrap(),
        None
    );
}

#[test]
fn a_garbage_idevid_is_a_certificate_error() {
    let swtpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(
        &junk,
        [
            0x30, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ],
    )
    .unwrap();
    run(
        Some(&swtpm),
        &[
            "tpm2_nvdefine",
            "0x01C90000",
            "-C",
            "o",
            "-s",
            "18",
            "-a",
            "ownerread|ownerwrite|authread|authwrite|no_da",
        ],
    );
    run(
        Some(&swtpm),
        &[
            "tpm2_nvwrite",
            "0x01C90000",
            "-C",
            "o",
            "-i",
            path_str(&junk),
        ],
    );
    assert!(matches!(
        connect(&swtpm).read_device_identity(IDEVID_CERT_NV_INDEX),
        Err(ssr_tpm::Error::Certificate { .. })
    ));
}

#[test]
fn a_vtpm_gets_one_devid_and_master_key_and_keeps_them() {
    let swtpm = Swtpm::start().unwrap();
    let cfg = IdentityConfig {
        model: "SSR vRouter".into(),
        serial_number: "VM-0042".into(),
        ..IdentityConfig::default()
    };
    let mut tpm = connect(&swtpm);
    let created = match tpm.provision_identity(&cfg, &None, NOW).unwrap() {
        IdentitySource::CreatedDevId(id) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(created.serial_number, "VM-0042");
    assert_eq!(created.model.as_deref(), Some("SSR vRouter"));
    let master = tpm.master_key_name(cfg.master_key_handle).unwrap();
    assert!(master.is_some());

    // openssl, as an independent oracle, checks the TPM-made self-signature.
    let dir = tempfile::tempdir().unwrap();
    let der = dir.path().join("devid.der");
    std::fs::write(&der, &created.der).unwrap();
    let pem = dir.path().join("devid.pem");
    run(
        None,
        &[
            "openssl",
            "x509",
            "-inform",
            "DER",
            "-in",
            path_str(&der),
            "-out",
            path_str(&pem),
        ],
    );
    let out = run(
        None,
        &[
            "openssl",
            "verify",
            "-check_ss_sig",
            "-CAfile",
            path_str(&pem),
            path_str(&pem),
        ],
    );
    assert!(out.contains("OK"), "{out}");

    // A second start (new connection) finds them again and creates nothing.
    drop(tpm);
    let mut tpm = connect(&swtpm);
    match tpm.provision_identity(&cfg, &None, NOW + 86_400).unwrap() {
        IdentitySource::ExistingDevId(id) => assert_eq!(id, created),
        other => panic!("{other:?}"),
    }
    assert_eq!(tpm.master_key_name(cfg.master_key_handle).unwrap(), master);
}

#[test]
fn a_cloud_vtpm_is_left_alone() {
    let swtpm = Swtpm::start().unwrap();
    let cfg = IdentityConfig::default();
    let mut tpm = connect(&swtpm);
    assert_eq!(
        tpm.provision_identity(&cfg, &Some(CloudProvider::Azure), NOW)
            .unwrap(),
        IdentitySource::Cloud(CloudProvider::Azure)
    );
    assert_eq!(tpm.master_key_name(cfg.master_key_handle).unwrap(), None);
    assert!(!tpm.nv_index_exists(cfg.devid_nv_index).unwrap());
}

/// A self-signed P-256 certificate made by openssl (the oracle), valid for `days`, with
/// the `extensions` config lines when given.
fn openssl_cert(subject: &str, days: &str, extensions: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let der = dir.path().join("c.der");
    let key = dir.path().join("k.pem");
    let cnf = dir.path().join("c.cnf");
    let mut args = vec![
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path_str(&key),
        "-subj",
        subject,
        "-days",
        days,
    ];
    if let Some(extensions) = extensions {
        std::fs::write(
            &cnf,
            format!("[req]\ndistinguished_name = dn\n[dn]\n[ext]\n{extensions}\n"),
        )
        .unwrap();
        args.extend(["-config", path_str(&cnf), "-extensions", "ext"]);
    }
    args.extend(["-outform", "DER", "-out", path_str(&der)]);
    run(None, &args);
    std::fs::read(der).unwrap()
}

#[test]
fn serial_and_model_from_a_hardware_module_name() {
    use ssr_tpm::identity::parse_device_certificate;
    let der = openssl_cert(
        "/O=Example Networks",
        "30",
        Some(
            "subjectAltName = otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hmn\n\
         [hmn]\nhwType = OID:1.3.6.1.4.1.2636.1.1.1.2.133\n\
         hwSerialNum = OCTETSTRING:JN11AB22CD",
        ),
    );
    let id = parse_device_certificate(&der, "test").unwrap();
    assert_eq!(id.serial_number, "JN11AB22CD");
    assert_eq!(id.model.as_deref(), Some("1.3.6.1.4.1.2636.1.1.1.2.133"));

    // NV padding (zeros or 0xFF) after the certificate is fine; anything else is not.
    let mut padded = der.clone();
    padded.extend_from_slice(&[0; 40]);
    assert_eq!(parse_device_certificate(&padded, "t").unwrap().der, der);
    let mut padded = der.clone();
    padded.extend_from_slice(&[0xff; 40]);
    assert!(parse_device_certificate(&padded, "t").is_ok());
    let mut junk = der.clone();
    junk.extend_from_slice(&[0, 1, 0]);
    assert!(parse_device_certificate(&junk, "t").is_err());
}

#[test]
fn without_names_the_serial_is_the_certificate_serial() {
    use ssr_tpm::identity::parse_device_certificate;
    let der = openssl_cert(
        "/O=Example Networks",
        "30",
        Some("basicConstraints = CA:FALSE"),
    );
    let id = parse_device_certificate(&der, "test").unwrap();
    assert_eq!(id.model, None);
    assert!(id.serial_number.len() >= 2);
    assert!(id.serial_number.chars().all(|c| c.is_ascii_hexdigit()));
}
