//! The TPM-bound key store against swtpm, with openssl verifying the signatures.

mod common;

use common::{connect, path_str};
use ssr_testkit::Swtpm;
use ssr_tpm::Error;
use ssr_tpm::esapi::EsapiTpm;
use ssr_tpm::identity::DEFAULT_MASTER_KEY_HANDLE;
use ssr_tpm::keystore::{KeyStore, KeyStoreTpm as _, ecdsa_der};

fn ready(swtpm: &Swtpm) -> EsapiTpm {
    let mut tpm = connect(swtpm);
    tpm.ensure_master_key(DEFAULT_MASTER_KEY_HANDLE).unwrap();
    tpm
}

fn openssl_verifies(spki: &[u8], message: &[u8], sig: &[u8; 64]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (k, m, s) = (
        dir.path().join("k.der"),
        dir.path().join("m"),
        dir.path().join("s"),
    );
    std::fs::write(&k, spki).unwrap();
    std::fs::write(&m, message).unwrap();
    std::fs::write(&s, ecdsa_der(sig)).unwrap();
    std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-keyform",
            "DER",
            "-verify",
            path_str(&k),
        ])
        .args(["-signature", path_str(&s), path_str(&m)])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn generate_list_sign_delete() {
    let swtpm = Swtpm::start().unwrap();
    let mut tpm = ready(&swtpm);
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(dir.path().join("keys"), DEFAULT_MASTER_KEY_HANDLE).unwrap();
    assert_eq!(store.list().unwrap(), Vec::<String>::new());
    let web = store.generate(&mut tpm, "web-server").unwrap();
    let peer = store.generate(&mut tpm, "svr-peer.1").unwrap();
    assert_ne!(web.spki_der(), peer.spki_der(), "every key is fresh");
    assert!(matches!(
        store.generate(&mut tpm, "web-server"),
        Err(Error::KeyExists { .. })
    ));
    assert_eq!(store.list().unwrap(), ["svr-peer.1", "web-server"]);

    // A new connection (a reboot): load from disk and sign inside the TPM.
    drop(tpm);
    let mut tpm = connect(&swtpm);
    let loaded = store.load("web-server").unwrap();
    assert_eq!(loaded, web);
    let message = b"certificate signing request body";
    let sig = loaded.sign(&mut tpm, message).unwrap();
    assert!(openssl_verifies(loaded.spki_der(), message, &sig));
    assert!(!openssl_verifies(peer.spki_der(), message, &sig));
    let mut bad = sig;
    bad[10] ^= 1;
    assert!(!openssl_verifies(loaded.spki_der(), message, &bad));

    store.delete("web-server").unwrap();
    assert_eq!(store.list().unwrap(), ["svr-peer.1"]);
    assert!(matches!(
        store.load("web-server"),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(
        store.delete("web-server"),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(
        store.generate(&mut tpm, "../escape"),
        Err(Error::InvalidKeyName { .. })
    ));
}

#[test]
fn key_files_copied_to_another_tpm_are_useless() {
    let first = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(dir.path(), DEFAULT_MASTER_KEY_HANDLE).unwrap();
    let entry = store.generate(&mut ready(&first), "web").unwrap();

    // The same files, another TPM with its own master key at the same handle.
    let second = Swtpm::start().unwrap();
    let mut other = ready(&second);
    let copied = store.load("web").unwrap();
    assert!(matches!(
        copied.sign(&mut other, b"m"),
        Err(Error::WrongTpm { .. })
    ));
    // Even past the Name check, the TPM itself refuses to load the foreign blob.
    assert!(matches!(
        other.sign_with_wrapped_key(DEFAULT_MASTER_KEY_HANDLE, entry.wrapped(), &[7; 32]),
        Err(Error::WrongTpm { .. })
    ));
    // And without any master key: key missing.
    let third = Swtpm::start().unwrap();
    assert!(matches!(
        copied.sign(&mut connect(&third), b"m"),
        Err(Error::KeyMissing { .. })
    ));
}

#[test]
fn a_tampered_entry_is_corrupt() {
    let swtpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(dir.path(), DEFAULT_MASTER_KEY_HANDLE).unwrap();
    store.generate(&mut ready(&swtpm), "web").unwrap();
    let path = dir.path().join("web.key");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[60] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(store.load("web"), Err(Error::Corrupt { .. })));
    // A valid entry under another file name is refused too.
    std::fs::remove_file(&path).unwrap();
    store.generate(&mut connect(&swtpm), "api").unwrap();
    std::fs::copy(dir.path().join("api.key"), dir.path().join("web.key")).unwrap();
    assert!(matches!(store.load("web"), Err(Error::Corrupt { .. })));
}

#[test]
fn tpm_key_holds_the_router_key_across_connections() {
    use ssr_tpm::esapi::TpmKey;
    use ssr_tpm::keystore::ROUTER_KEY_NAME;
    let swtpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A TPM without a master key gets one.
    let created = TpmKey::create(&swtpm.tcti(), dir.path(), ROUTER_KEY_NAME, false).unwrap();
    assert!(dir.path().join("router.key").exists());
    assert!(format!("{created:?}").contains("router"));
    let spki = created.spki_der().to_vec();
    drop(created);
    assert!(matches!(
        TpmKey::create(&swtpm.tcti(), dir.path(), ROUTER_KEY_NAME, false),
        Err(Error::KeyExists { .. })
    ));
    let opened = TpmKey::open(&swtpm.tcti(), dir.path(), ROUTER_KEY_NAME).unwrap();
    assert_eq!(opened.spki_der(), spki);
    for m in [&b"one"[..], b"two"] {
        assert!(openssl_verifies(&spki, m, &opened.sign(m).unwrap()));
    }
    let same = TpmKey::open_or_create(&swtpm.tcti(), dir.path(), ROUTER_KEY_NAME).unwrap();
    assert_eq!(same.spki_der(), spki);
    // Replacing makes a new key.
    let replaced = TpmKey::create(&swtpm.tcti(), dir.path(), ROUTER_KEY_NAME, true).unwrap();
    assert_ne!(replaced.spki_der(), spki);
    // Another TPM with its own master key refuses the entry when it is opened.
    let other = Swtpm::start().unwrap();
    TpmKey::create(
        &other.tcti(),
        tempfile::tempdir().unwrap().path(),
        "x",
        false,
    )
    .unwrap();
    assert!(matches!(
        TpmKey::open(&other.tcti(), dir.path(), ROUTER_KEY_NAME),
        Err(Error::WrongTpm { .. })
    ));
    assert!(matches!(
        TpmKey::open(&swtpm.tcti(), dir.path(), "absent"),
        Err(Error::KeyNotFound { .. })
    ));
}
