//! FEK sealing against a real (software) TPM: a fresh swtpm per test.

use std::process::Command;

use sha2::{Digest as _, Sha256};
use ssr_testkit::Swtpm;
use ssr_tpm::esapi::EsapiTpm;
use ssr_tpm::{Error, PcrSelection, SealConfig, SealedFek, seal_new_fek, unseal_fek};

fn connect(tpm: &Swtpm) -> EsapiTpm {
    EsapiTpm::connect(&tpm.tcti()).expect("connect to swtpm")
}

/// Runs a tpm2-tools command against this swtpm.
fn tpm2(tpm: &Swtpm, args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .expect("tpm2-tools installed");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One command or response on swtpm's TCP channel, from its level-20 log.
#[derive(Debug)]
struct Frame {
    command: bool,
    bytes: Vec<u8>,
}

/// Parses swtpm's log: `SWTPM_IO_Read: length N` (a command) or `SWTPM_IO_Write`
/// (a response), then the bytes in hex over several lines.
fn frames(log: &str) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    let mut current: Option<Frame> = None;
    for line in log.lines() {
        let line = line.trim();
        if line.starts_with("SWTPM_IO_Read") || line.starts_with("SWTPM_IO_Write") {
            out.extend(current.take());
            current = Some(Frame {
                command: line.starts_with("SWTPM_IO_Read"),
                bytes: Vec::new(),
            });
        } else if line.contains(':') {
            out.extend(current.take());
        } else if let Some(frame) = current.as_mut() {
            for pair in line.split_whitespace() {
                frame.bytes.push(u8::from_str_radix(pair, 16).unwrap());
            }
        }
    }
    out.extend(current);
    out
}

fn command_code(frame: &Frame) -> u32 {
    u32::from_be_bytes(frame.bytes[6..10].try_into().unwrap())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const TPM_CC_GET_RANDOM: u32 = 0x17B;
const TPM_CC_RSA_ENCRYPT: u32 = 0x174;
const TPM_CC_RSA_DECRYPT: u32 = 0x159;
const TPM_CC_START_AUTH_SESSION: u32 = 0x176;
const TPM_RH_NULL: u32 = 0x4000_0007;

/// The session attributes of the first session of a command with `handles` handles.
fn first_session_attributes(frame: &Frame, handles: usize) -> u8 {
    let b = &frame.bytes;
    assert_eq!(&b[0..2], &[0x80, 0x02], "command carries sessions");
    let at = 10 + 4 * handles + 4 + 4; // header, handles, authorizationSize, session handle
    let nonce_len = usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    b[at + 2 + nonce_len]
}

#[test]
fn seal_then_unseal_on_the_same_tpm() {
    let swtpm = Swtpm::start().unwrap();
    let mut tpm = connect(&swtpm);
    let (fek, sealed) = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap();
    let bytes = sealed.to_bytes();
    assert!(!contains(&bytes, &fek.secret_bytes()[..8]));
    drop(tpm);
    // A new connection, as after a reboot of the service.
    let mut tpm = connect(&swtpm);
    let back = unseal_fek(&mut tpm, &SealedFek::parse(&bytes).unwrap()).unwrap();
    assert_eq!(back.secret_bytes(), fek.secret_bytes());
}

#[test]
fn the_clear_fek_never_crosses_the_bus_and_an_unlock_is_six_commands() {
    let swtpm = Swtpm::builder().log_level(20).start().unwrap();
    let mut tpm = connect(&swtpm);
    let (fek, sealed) = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap();
    drop(tpm);
    let seal_frames = frames(&swtpm.log().unwrap()).len();

    let mut tpm = connect(&swtpm);
    let back = unseal_fek(&mut tpm, &sealed).unwrap();
    assert_eq!(back.secret_bytes(), fek.secret_bytes());
    let counted = tpm.commands_sent();
    let all = frames(&swtpm.log().unwrap());
    let unlock: Vec<&Frame> = all[seal_frames..].iter().filter(|f| f.command).collect();
    // Our own count agrees with what the TPM saw, and meets the target.
    assert_eq!(unlock.len() as u64, counted, "{unlock:?}");
    // ReadPublic of both keys, StartAuthSession, HMAC, RSA_Decrypt, FlushContext.
    assert_eq!(unlock.len(), 6, "{} commands per unlock", unlock.len());

    // Neither direction of any exchange, seal or unseal, holds the FEK.
    for frame in &all {
        assert!(
            !contains(&frame.bytes, &fek.secret_bytes()[..8]),
            "{frame:?}"
        );
    }
    // Every FEK-carrying command runs in a session with parameter encryption in the
    // direction the FEK travels (decrypt 0x20: command, encrypt 0x40: response), and
    // every such session is salted.
    let mut seen = Vec::new();
    for frame in all.iter().filter(|f| f.command) {
        let cc = command_code(frame);
        match cc {
            TPM_CC_GET_RANDOM => assert_eq!(first_session_attributes(frame, 0) & 0x40, 0x40),
            TPM_CC_RSA_ENCRYPT => assert_eq!(first_session_attributes(frame, 1) & 0x20, 0x20),
            TPM_CC_RSA_DECRYPT => assert_eq!(first_session_attributes(frame, 1) & 0x40, 0x40),
            _ => continue,
        }
        seen.push(cc);
    }
    // Sealing unseals twice to check the round trip (bare, then tagged), then the
    // unlock.
    assert_eq!(
        seen,
        [
            TPM_CC_GET_RANDOM,
            TPM_CC_RSA_ENCRYPT,
            TPM_CC_RSA_DECRYPT,
            TPM_CC_RSA_DECRYPT,
            TPM_CC_RSA_DECRYPT
        ]
    );
    let salted = all
        .iter()
        .filter(|f| f.command && command_code(f) == TPM_CC_START_AUTH_SESSION)
        .filter(|f| u32::from_be_bytes(f.bytes[10..14].try_into().unwrap()) != TPM_RH_NULL)
        .count();
    assert_eq!(
        salted, 6,
        "GetRandom, RSA_Encrypt, the file's HMAC and both RSA_Decrypt sessions are salted"
    );

    // The check above can fail: GetRandom without a session shows its bytes in the log.
    let plain = tpm
        .context_mut()
        .execute_without_session(|c| c.get_random(16))
        .unwrap();
    let log = frames(&swtpm.log().unwrap());
    assert!(log.iter().any(|f| contains(&f.bytes, plain.value())));
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
fn a_corrupt_blob_is_caught_by_the_checksum_or_by_the_tpm() {
    let swtpm = Swtpm::start().unwrap();
    let mut tpm = connect(&swtpm);
    let (_, sealed) = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap();
    let mut bytes = sealed.to_bytes();
    bytes[100] ^= 1;
    assert!(matches!(
        SealedFek::parse(&bytes),
        Err(Error::Corrupt { .. })
    ));
    // Forged with a valid checksum: the TPM's HMAC does not vouch for it.
    let n = bytes.len() - 32;
    let sum = Sha256::digest(&bytes[..n]);
    bytes[n..].copy_from_slice(&sum);
    let forged = SealedFek::parse(&bytes).unwrap();
    let err = unseal_fek(&mut tpm, &forged).unwrap_err();
    assert!(matches!(err, Error::NotAuthentic { .. }), "{err:?}");
    // In a version-1 file (no tag) the TPM's OAEP check refuses it.
    let v1 = SealedFek::new_v1(
        forged.key_handle(),
        *forged.key_fingerprint(),
        forged.pcrs(),
        forged.ciphertext().to_vec(),
    )
    .unwrap();
    let err = unseal_fek(&mut tpm, &v1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongTpm {
                reason: "the TPM cannot decrypt this blob",
                ..
            }
        ),
        "{err:?}"
    );
    // The TPM is still fine and the genuine blob still unseals.
    assert!(unseal_fek(&mut connect(&swtpm), &sealed).is_ok());
}

#[test]
fn an_evicted_key_is_key_missing() {
    let swtpm = Swtpm::start().unwrap();
    let (_, sealed) = seal_new_fek(&mut connect(&swtpm), &SealConfig::default()).unwrap();
    tpm2(
        &swtpm,
        &["tpm2_evictcontrol", "-C", "o", "-c", "0x81000100"],
    );
    assert_eq!(
        unseal_fek(&mut connect(&swtpm), &sealed).unwrap_err(),
        Error::KeyMissing {
            handle: 0x8100_0100
        }
    );
}

#[test]
fn a_pcr_bound_fek_does_not_unseal_after_the_pcr_changes() {
    let swtpm = Swtpm::start().unwrap();
    let cfg = SealConfig {
        key_handle: 0x8100_0200,
        pcrs: PcrSelection::from_indices(&[7, 16]).unwrap(),
        ..SealConfig::default()
    };
    let (fek, sealed) = seal_new_fek(&mut connect(&swtpm), &cfg).unwrap();
    let back = unseal_fek(&mut connect(&swtpm), &sealed).unwrap();
    assert_eq!(back.secret_bytes(), fek.secret_bytes());
    tpm2(
        &swtpm,
        &["tpm2_pcrextend", &format!("16:sha256={}", "ab".repeat(32))],
    );
    // The HMAC key, bound to the same PCRs, is the first to refuse.
    let err = unseal_fek(&mut connect(&swtpm), &sealed).unwrap_err();
    assert!(matches!(err, Error::PcrMismatch { .. }), "{err:?}");
}

#[test]
fn the_key_survives_a_tpm_restart() {
    let swtpm = Swtpm::start().unwrap();
    let (fek, sealed) = seal_new_fek(&mut connect(&swtpm), &SealConfig::default()).unwrap();
    let state = swtpm.stop().unwrap().unwrap();
    let again = Swtpm::builder().state_dir(state.path()).start().unwrap();
    let back = unseal_fek(&mut connect(&again), &sealed).unwrap();
    assert_eq!(back.secret_bytes(), fek.secret_bytes());
}

#[test]
fn no_tpm_is_reported() {
    let swtpm = Swtpm::start().unwrap();
    let tcti = swtpm.tcti();
    drop(swtpm);
    assert!(matches!(EsapiTpm::connect(&tcti), Err(Error::NoTpm { .. })));
    assert!(matches!(
        EsapiTpm::connect("device:/dev/no-such-tpm"),
        Err(Error::NoTpm { .. })
    ));
}

#[test]
fn info_names_the_tpm_and_the_key() {
    let swtpm = Swtpm::start().unwrap();
    let mut tpm = connect(&swtpm);
    let info = tpm.info().unwrap();
    assert_eq!(info.manufacturer, "IBM");
    assert!(info.fek_key.is_none());
    seal_new_fek(&mut tpm, &SealConfig::default()).unwrap();
    let info = tpm.info().unwrap();
    assert!(info.fek_key.is_some_and(|k| !k.policy_bound));
}

#[test]
fn a_tpm_that_goes_away_is_no_tpm() {
    let swtpm = Swtpm::start().unwrap();
    let mut tpm = connect(&swtpm);
    let (_, sealed) = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap();
    drop(swtpm);
    let err = unseal_fek(&mut tpm, &sealed).unwrap_err();
    assert!(matches!(err, Error::NoTpm { .. }), "{err:?}");
}

/// Puts a key made by tpm2-tools (not by this crate) at 0x81000100: RSA-2048 OAEP
/// SHA-256 under an owner primary, with `extra` arguments to `tpm2_create`. The tools
/// leave transient objects behind on a raw TPM; they are flushed after each step.
fn plant_foreign_key(swtpm: &Swtpm, dir: &std::path::Path, attributes: &str, extra: &[&str]) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (prim, public, private, key) = (p("prim.ctx"), p("k.pub"), p("k.priv"), p("k.ctx"));
    tpm2(swtpm, &["tpm2_createprimary", "-Q", "-C", "o", "-c", &prim]);
    tpm2(swtpm, &["tpm2_flushcontext", "-t"]);
    let mut create = vec![
        "tpm2_create",
        "-Q",
        "-C",
        &prim,
        "-G",
        "rsa2048:oaep-sha256:null",
        "-a",
        attributes,
        "-u",
        &public,
        "-r",
        &private,
    ];
    create.extend_from_slice(extra);
    tpm2(swtpm, &create);
    tpm2(swtpm, &["tpm2_flushcontext", "-t"]);
    tpm2(
        swtpm,
        &[
            "tpm2_load",
            "-Q",
            "-C",
            &prim,
            "-u",
            &public,
            "-r",
            &private,
            "-c",
            &key,
        ],
    );
    tpm2(
        swtpm,
        &[
            "tpm2_evictcontrol",
            "-Q",
            "-C",
            "o",
            "-c",
            &key,
            "0x81000100",
        ],
    );
    tpm2(swtpm, &["tpm2_flushcontext", "-t"]);
}

/// A key at the handle that this crate did not create is never reused: one with a
/// password (its public area is exactly ours; only the check unseal finds it) and one
/// with an auth policy. Each is refused with `ForeignKey`, and nothing changes in the
/// TPM: the same object stays at the handle, no other is persisted.
#[test]
fn a_foreign_key_at_the_handle_is_refused_and_nothing_is_touched() {
    const OURS: &str = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|decrypt";
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.dat");
    std::fs::write(&policy, [0x42u8; 32]).unwrap();
    let cases: [(&str, Vec<&str>, &str); 3] = [
        (OURS, vec!["-p", "secret"], "does not unseal"),
        (OURS, vec!["-L", policy.to_str().unwrap()], "auth policy"),
        (
            "fixedtpm|fixedparent|sensitivedataorigin|noda|decrypt",
            vec!["-L", policy.to_str().unwrap()],
            "attributes",
        ),
    ];
    for (attributes, extra, want) in cases {
        let swtpm = Swtpm::start().unwrap();
        plant_foreign_key(&swtpm, dir.path(), attributes, &extra);
        let mut tpm = connect(&swtpm);
        let before = tpm.handles_in_use(0x8100_0000, 0x8100_ffff).unwrap();
        assert_eq!(before, [0x8100_0100]);
        let name = ssr_tpm::Tpm::fek_key_name(&mut tpm, 0x8100_0100).unwrap();
        let err = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap_err();
        assert!(
            matches!(&err, Error::ForeignKey { handle: 0x8100_0100, reason } if reason.contains(want)),
            "{extra:?}: {err:?}"
        );
        assert!(err.to_string().contains("nothing was changed"));
        let mut tpm = connect(&swtpm);
        assert_eq!(
            tpm.handles_in_use(0x8100_0000, 0x8100_ffff).unwrap(),
            before
        );
        assert_eq!(
            ssr_tpm::Tpm::fek_key_name(&mut tpm, 0x8100_0100).unwrap(),
            name
        );
    }
}

/// The RSA key is public: anyone can encrypt a FEK of their choice to it with
/// `openssl pkeyutl` (OAEP, SHA-256). Such a file, with the right fingerprints and a
/// valid checksum, is refused because the TPM's HMAC does not vouch for it. The same
/// ciphertext in a version-1 file does unseal to the forger's FEK (the control that
/// shows the forgery is a genuine OAEP ciphertext, and why a version-1 file must be
/// vouched for by its caller).
#[test]
fn a_file_sealed_with_the_public_key_by_openssl_is_not_authentic() {
    let swtpm = Swtpm::start().unwrap();
    let mut tpm = connect(&swtpm);
    let (_, sealed) = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    tpm2(
        &swtpm,
        &[
            "tpm2_readpublic",
            "-Q",
            "-c",
            "0x81000100",
            "-f",
            "pem",
            "-o",
            &p("key.pem"),
        ],
    );
    let chosen = [0x33u8; 32];
    std::fs::write(p("fek.bin"), chosen).unwrap();
    let out = Command::new("openssl")
        .args(["pkeyutl", "-encrypt", "-pubin", "-inkey", &p("key.pem")])
        .args([
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
        ])
        .args([
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            &p("fek.bin"),
            "-out",
            &p("ct.bin"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ct = std::fs::read(p("ct.bin")).unwrap();
    assert_eq!(ct.len(), 256);

    let mut bytes = sealed.to_bytes();
    bytes[50..306].copy_from_slice(&ct);
    let n = bytes.len() - 32;
    let sum = Sha256::digest(&bytes[..n]);
    bytes[n..].copy_from_slice(&sum);
    let forged = SealedFek::parse(&bytes).unwrap();
    let mut tpm = connect(&swtpm);
    assert_eq!(
        unseal_fek(&mut tpm, &forged).unwrap_err(),
        Error::NotAuthentic {
            handle: ssr_tpm::DEFAULT_FEK_MAC_KEY_HANDLE
        }
    );
    // Control: the forged ciphertext is one the TPM decrypts.
    let v1 = SealedFek::new_v1(
        sealed.key_handle(),
        *sealed.key_fingerprint(),
        sealed.pcrs(),
        ct,
    )
    .unwrap();
    assert_eq!(unseal_fek(&mut tpm, &v1).unwrap().secret_bytes(), &chosen);
    // And the genuine file still unseals.
    assert!(unseal_fek(&mut tpm, &sealed).is_ok());
}

/// A version-1 file from an earlier release, once vouched for, is upgraded in place:
/// the HMAC key is created, the new file unseals to the same FEK on a new connection.
#[test]
fn a_version_1_file_is_upgraded_to_an_authenticated_one() {
    let swtpm = Swtpm::start().unwrap();
    let (fek, sealed) = seal_new_fek(&mut connect(&swtpm), &SealConfig::default()).unwrap();
    // As an earlier release left it: no HMAC key, a version-1 file.
    tpm2(
        &swtpm,
        &["tpm2_evictcontrol", "-C", "o", "-c", "0x81000110"],
    );
    let v1 = SealedFek::new_v1(
        sealed.key_handle(),
        *sealed.key_fingerprint(),
        sealed.pcrs(),
        sealed.ciphertext().to_vec(),
    )
    .unwrap();
    let mut tpm = connect(&swtpm);
    assert_eq!(
        unseal_fek(&mut tpm, &v1).unwrap().secret_bytes(),
        fek.secret_bytes()
    );
    let v2 = ssr_tpm::authenticate_sealed_fek(&mut tpm, &v1, &SealConfig::default()).unwrap();
    assert!(v2.is_authenticated());
    let back = unseal_fek(
        &mut connect(&swtpm),
        &SealedFek::parse(&v2.to_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(back.secret_bytes(), fek.secret_bytes());
}

/// A raw TPM keeps what a dead process left loaded (tpm2-tools leave their primary
/// and sessions behind, as a killed process would): `flush_stale` clears transient
/// objects, loaded and saved sessions, so sealing works again.
#[test]
fn stale_transient_objects_and_sessions_are_flushed() {
    let swtpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        let ctx = dir.path().join(format!("p{i}.ctx"));
        tpm2(
            &swtpm,
            &[
                "tpm2_createprimary",
                "-Q",
                "-C",
                "o",
                "-c",
                ctx.to_str().unwrap(),
            ],
        );
    }
    // The TPM is full: sealing fails.
    let err = seal_new_fek(&mut connect(&swtpm), &SealConfig::default()).unwrap_err();
    assert!(err.to_string().contains("memory"), "{err:?}");
    // Two sessions of a connection that goes away without flushing them.
    let mut dead = connect(&swtpm);
    for _ in 0..2 {
        dead.context_mut()
            .start_auth_session(
                None,
                None,
                None,
                tss_esapi::constants::SessionType::Hmac,
                tss_esapi::structures::SymmetricDefinition::AES_128_CFB,
                tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256,
            )
            .unwrap();
    }
    std::mem::forget(dead);
    let mut tpm = connect(&swtpm);
    assert_eq!(
        tpm.handles_in_use(0x8000_0000, 0x80ff_ffff).unwrap().len(),
        3
    );
    assert_eq!(
        tpm.handles_in_use(0x0200_0000, 0x02ff_ffff).unwrap().len(),
        2
    );
    assert_eq!(tpm.flush_stale().unwrap(), 5);
    assert!(
        tpm.handles_in_use(0x8000_0000, 0x80ff_ffff)
            .unwrap()
            .is_empty()
    );
    assert!(
        tpm.handles_in_use(0x0200_0000, 0x02ff_ffff)
            .unwrap()
            .is_empty()
    );
    assert!(
        tpm.handles_in_use(0x0300_0000, 0x03ff_ffff)
            .unwrap()
            .is_empty()
    );
    let (fek, sealed) = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap();
    let back = unseal_fek(&mut connect(&swtpm), &sealed).unwrap();
    assert_eq!(back.secret_bytes(), fek.secret_bytes());
    assert_eq!(connect(&swtpm).flush_stale().unwrap(), 0);
}
