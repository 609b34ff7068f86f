//! FEK sealing against a real (software) TPM: a fresh swtpm per test.

use ssr_testkit::Swtpm;
use ssr_tpm::esapi::EsapiTpm;
use ssr_tpm::{Error, SealConfig, SealedFek, seal_new_fek, unseal_fek};

fn connect(tpm: &Swtpm) -> EsapiTpm {
    EsapiTpm::connect(&tpm.tcti()).expect("connect to swtpm")
}

#[test]
fn seal_then_unseal_on_the_same_tpm() {
    let swtpm = Swtpm::start().unwrap();
    let mut tpm = connect(&swtpm);
    let (fek, sealed) = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap();
    let bytes = sealed.to_bytes();
    drop(tpm);
    // A new connection, as after a reboot of the service.
    let mut tpm = connect(&swtpm);
    let before = tpm.commands_sent();
    let back = unseal_fek(&mut tpm, &SealedFek::parse(&bytes).unwrap()).unwrap();
    assert_eq!(back.secret_bytes(), fek.secret_bytes());
    assert!(
        tpm.commands_sent() - before <= 4,
        "{}",
        tpm.commands_sent() - before
    );
}

#[test]
fn unseal_on_another_tpm_is_wrong_tpm() {
    let first = Swtpm::start().unwrap();
    let (_, sealed) = seal_new_fek(&mut connect(&first), &SealConfig::default()).unwrap();
    let second = Swtpm::start().unwrap();
    let mut other = connect(&second);
    assert_eq!(
        unseal_fek(&mut other, &sealed).unwrap_err(),
        Error::KeyMissing {
            handle: sealed.key_handle()
        }
    );
    seal_new_fek(&mut other, &SealConfig::default()).unwrap();
    assert!(matches!(
        unseal_fek(&mut other, &sealed),
        Err(Error::WrongTpm { .. })
    ));
}

#[test]
fn no_tpm_is_reported() {
    let swtpm = Swtpm::start().unwrap();
    let tcti = swtpm.tcti();
    drop(swtpm);
    assert!(matches!(EsapiTpm::connect(&tcti), Err(Error::NoTpm { .. })));
}
