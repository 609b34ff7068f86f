//! Unit tests of the sealing logic and the sealed-FEK format over [`FakeTpm`].

use proptest::prelude::*;

use crate::fake::FakeTpm;
use crate::*;

fn sealed_on(tpm: &mut FakeTpm) -> (Fek, SealedFek) {
    seal_new_fek(tpm, &SealConfig::default()).unwrap()
}

#[test]
fn seal_then_unseal_gives_the_same_fek() {
    let mut tpm = FakeTpm::new(1);
    let (fek, sealed) = sealed_on(&mut tpm);
    // Both handles looked at, the sealing key created, the FEK sealed and unsealed
    // once, the HMAC key created, the file tagged and unsealed once more.
    assert_eq!(
        tpm.calls,
        [
            "ours",
            "ours-mac",
            "create",
            "read",
            "random",
            "encrypt",
            "name",
            "decrypt",
            "create-mac",
            "read",
            "hmac",
            "name",
            "name",
            "hmac",
            "decrypt"
        ]
    );
    let again = unseal_fek(&mut tpm, &sealed).unwrap();
    assert_eq!(fek.secret_bytes(), again.secret_bytes());
    assert_eq!(sealed.key_handle(), DEFAULT_FEK_KEY_HANDLE);
}

#[test]
fn unlock_is_one_lookup_and_one_decrypt() {
    let mut tpm = FakeTpm::new(1);
    let (_, sealed) = sealed_on(&mut tpm);
    tpm.calls.clear();
    unseal_fek(&mut tpm, &sealed).unwrap();
    assert_eq!(tpm.calls, ["name", "name", "hmac", "decrypt"]);
}

#[test]
fn second_seal_reuses_the_key_and_draws_a_new_fek() {
    let mut tpm = FakeTpm::new(1);
    let (a, sa) = sealed_on(&mut tpm);
    tpm.calls.clear();
    let (b, sb) = sealed_on(&mut tpm);
    assert!(!tpm.calls.contains(&"create"));
    assert_ne!(a.secret_bytes(), b.secret_bytes());
    assert_eq!(sa.key_fingerprint(), sb.key_fingerprint());
}

#[test]
fn another_tpm_with_its_own_key_is_wrong_tpm() {
    let mut first = FakeTpm::new(1);
    let (_, sealed) = sealed_on(&mut first);
    let mut second = FakeTpm::new(2);
    sealed_on(&mut second);
    assert!(matches!(
        unseal_fek(&mut second, &sealed),
        Err(Error::WrongTpm {
            handle: DEFAULT_FEK_KEY_HANDLE,
            ..
        })
    ));
}

#[test]
fn another_tpm_without_the_key_is_key_missing() {
    let mut first = FakeTpm::new(1);
    let (_, sealed) = sealed_on(&mut first);
    assert_eq!(
        unseal_fek(&mut FakeTpm::new(2), &sealed).unwrap_err(),
        Error::KeyMissing {
            handle: DEFAULT_FEK_KEY_HANDLE
        }
    );
}

#[test]
fn lockout_is_reported_as_such() {
    let mut tpm = FakeTpm::new(1);
    let (_, sealed) = sealed_on(&mut tpm);
    tpm.locked_out = true;
    assert_eq!(unseal_fek(&mut tpm, &sealed).unwrap_err(), Error::LockedOut);
}

#[test]
fn pcr_bound_key_refuses_after_a_change() {
    let mut tpm = FakeTpm::new(1);
    let cfg = SealConfig {
        pcrs: PcrSelection::from_indices(&[0, 7]).unwrap(),
        ..SealConfig::default()
    };
    let (fek, sealed) = seal_new_fek(&mut tpm, &cfg).unwrap();
    assert_eq!(sealed.pcrs().indices().collect::<Vec<_>>(), [0, 7]);
    let back = SealedFek::parse(&sealed.to_bytes()).unwrap();
    assert_eq!(
        unseal_fek(&mut tpm, &back).unwrap().secret_bytes(),
        fek.secret_bytes()
    );
    tpm.pcrs_changed = true;
    assert!(matches!(
        unseal_fek(&mut tpm, &back),
        Err(Error::PcrMismatch { .. })
    ));
}

#[test]
fn pcr_binding_must_match_an_existing_key() {
    let mut tpm = FakeTpm::new(1);
    sealed_on(&mut tpm);
    let cfg = SealConfig {
        pcrs: PcrSelection::from_indices(&[7]).unwrap(),
        ..SealConfig::default()
    };
    assert!(matches!(
        seal_new_fek(&mut tpm, &cfg),
        Err(Error::ForeignKey { .. })
    ));
}

#[test]
fn a_foreign_key_at_the_handle_is_refused_and_left_alone() {
    let mut tpm = FakeTpm::new(1);
    tpm.plant(DEFAULT_FEK_KEY_HANDLE, Some("it has an auth policy"), false);
    let err = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap_err();
    assert!(
        matches!(&err, Error::ForeignKey { reason, .. } if reason.contains("auth policy")),
        "{err:?}"
    );
    assert!(!tpm.calls.contains(&"create"));
    assert!(!tpm.calls.contains(&"random"));
    assert!(!tpm.calls.contains(&"create-mac"));
    // Same public area as ours, but a password: sealing works, the check unseal fails.
    let mut tpm = FakeTpm::new(1);
    tpm.plant(DEFAULT_FEK_KEY_HANDLE, None, true);
    let err = seal_new_fek(&mut tpm, &SealConfig::default()).unwrap_err();
    assert!(
        matches!(&err, Error::ForeignKey { reason, .. } if reason.contains("does not unseal")),
        "{err:?}"
    );
    assert!(!tpm.calls.contains(&"create-mac"));
}

#[test]
fn handles_outside_the_owner_range_are_refused() {
    for handle in [
        EK_HANDLE,
        0x8101_0000,
        0x8180_0000,
        0x80ff_ffff,
        0x0100_0000,
    ] {
        let cfg = SealConfig {
            key_handle: handle,
            ..SealConfig::default()
        };
        assert!(matches!(
            seal_new_fek(&mut FakeTpm::new(1), &cfg),
            Err(Error::InvalidConfig { .. })
        ));
    }
    assert!(PcrSelection::from_indices(&[24]).is_err());
    assert!(PcrSelection::from_mask(1 << 24).is_err());
}

#[test]
fn fek_debug_is_redacted_and_the_file_never_holds_it() {
    let mut tpm = FakeTpm::new(1);
    let (fek, sealed) = sealed_on(&mut tpm);
    assert_eq!(format!("{fek:?}"), "Fek([redacted])");
    let bytes = sealed.to_bytes();
    assert_eq!(bytes.len(), SEALED_FEK_LEN);
    assert!(
        !bytes
            .windows(8)
            .any(|w| fek.secret_bytes().windows(8).any(|k| k == w))
    );
}

#[test]
fn format_round_trips_and_is_stable() {
    let mut tpm = FakeTpm::new(1);
    let (_, sealed) = sealed_on(&mut tpm);
    let bytes = sealed.to_bytes();
    assert_eq!(&bytes[..8], b"SFEK\x02\x01\0\0");
    assert_eq!(&bytes[8..12], &DEFAULT_FEK_KEY_HANDLE.to_be_bytes());
    assert_eq!(&bytes[48..50], &[1, 0]);
    assert_eq!(&bytes[306..310], &DEFAULT_FEK_MAC_KEY_HANDLE.to_be_bytes());
    assert_eq!(bytes.len(), 406);
    assert_eq!(SealedFek::parse(&bytes).unwrap(), sealed);
}

fn corrupt(bytes: &[u8]) -> &'static str {
    match SealedFek::parse(bytes) {
        Err(Error::Corrupt { reason, .. }) => reason,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Rewrites the checksum so a test reaches the field checks behind it.
fn resum(bytes: &mut [u8]) {
    use sha2::{Digest as _, Sha256};
    let n = bytes.len() - 32;
    let sum = Sha256::digest(&bytes[..n]);
    bytes[n..].copy_from_slice(&sum);
}

#[test]
fn parser_rejects_every_malformation() {
    let mut tpm = FakeTpm::new(1);
    let (_, sealed) = sealed_on(&mut tpm);
    let good = sealed.to_bytes();

    assert_eq!(corrupt(&[]), "truncated header");
    assert_eq!(corrupt(&good[..SEALED_FEK_LEN - 1]), "wrong length");
    let mut long = good.clone();
    long.push(0);
    assert_eq!(corrupt(&long), "wrong length");

    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(corrupt(&b), "bad magic");
    let mut b = good.clone();
    b[4] = 3;
    assert_eq!(corrupt(&b), "unknown version");
    let mut b = good.clone();
    b[4] = 1;
    assert_eq!(corrupt(&b), "wrong length");
    // Any single flipped bit anywhere else is caught by the checksum.
    for i in 5..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x10;
        assert_eq!(corrupt(&b), "checksum mismatch", "byte {i}");
    }
    let cases: [(usize, u8, &str); 7] = [
        (
            306,
            0x80,
            "HMAC key handle outside 0x81000000-0x8100ffff or the sealing key's",
        ),
        (
            309,
            0x00,
            "HMAC key handle outside 0x81000000-0x8100ffff or the sealing key's",
        ),
        (5, 9, "unknown algorithm"),
        (7, 1, "reserved bytes not zero"),
        (8, 0x80, "key handle outside 0x81000000-0x8100ffff"),
        (44, 1, "PCR outside 0-23"),
        (49, 1, "ciphertext length is not 256"),
    ];
    for (at, value, reason) in cases {
        let mut b = good.clone();
        b[at] = value;
        resum(&mut b);
        assert_eq!(corrupt(&b), reason);
    }
}

#[test]
fn file_is_written_atomically_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fek.sealed");
    assert_eq!(
        SealedFek::read(&path).unwrap_err(),
        Error::SealedFekMissing { path: path.clone() }
    );
    let mut tpm = FakeTpm::new(1);
    let (fek, sealed) = sealed_on(&mut tpm);
    sealed.write_atomic(&path).unwrap();
    let (_, newer) = sealed_on(&mut tpm);
    newer.write_atomic(&path).unwrap();
    assert_eq!(SealedFek::read(&path).unwrap(), newer);
    let on_disk = std::fs::read(&path).unwrap();
    assert!(!on_disk.windows(32).any(|w| w == fek.secret_bytes()));
    // Only the file itself is left: no temporary files.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    std::fs::write(&path, b"SFEK\x01garbage").unwrap();
    assert!(matches!(SealedFek::read(&path), Err(Error::Corrupt { .. })));
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    assert!(matches!(SealedFek::read(&path), Err(Error::Corrupt { .. })));
}

#[test]
fn write_into_a_missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/fek.sealed");
    let mut tpm = FakeTpm::new(1);
    let (_, sealed) = sealed_on(&mut tpm);
    assert!(matches!(
        sealed.write_atomic(&path),
        Err(Error::Io { op: "create", .. })
    ));
}

proptest! {
    #[test]
    fn any_bytes_give_an_error_or_a_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..420)) {
        if let Ok(s) = SealedFek::parse(&bytes) {
            prop_assert_eq!(s.to_bytes(), bytes);
        }
    }

    #[test]
    fn valid_header_random_body_never_panics(v2 in any::<bool>(), body in proptest::collection::vec(any::<u8>(), 398)) {
        let mut bytes = if v2 { b"SFEK\x02\x01\0\0".to_vec() } else { b"SFEK\x01\x01\0\0".to_vec() };
        let body = if v2 { &body[..] } else { &body[..330] };
        bytes.extend_from_slice(body);
        resum(&mut bytes);
        if let Ok(s) = SealedFek::parse(&bytes) {
            prop_assert_eq!(s.to_bytes(), bytes);
        }
    }
}

/// Anyone can RSA-encrypt a FEK to the public sealing key; the file's TPM tag is what
/// tells a sealed FEK from a forged one. A forged file with a valid checksum and the
/// right key fingerprints is refused before anything is decrypted.
#[test]
fn a_forged_file_is_not_authentic_and_nothing_is_decrypted() {
    let mut tpm = FakeTpm::new(1);
    let (_, sealed) = sealed_on(&mut tpm);
    let mut bytes = sealed.to_bytes();
    bytes[60] ^= 1; // another ciphertext
    resum(&mut bytes);
    let forged = SealedFek::parse(&bytes).unwrap();
    tpm.calls.clear();
    assert_eq!(
        unseal_fek(&mut tpm, &forged).unwrap_err(),
        Error::NotAuthentic {
            handle: DEFAULT_FEK_MAC_KEY_HANDLE
        }
    );
    assert!(!tpm.calls.contains(&"decrypt"));
}

/// A version-1 file (an earlier release) still unseals; `authenticate_sealed_fek`
/// turns it into a version-2 file over the same ciphertext, which unseals to the same
/// FEK and whose forgeries are refused.
#[test]
fn a_version_1_file_unseals_and_is_upgraded() {
    let mut tpm = FakeTpm::new(1);
    let (fek, v2) = sealed_on(&mut tpm);
    let v1 = SealedFek::new_v1(
        v2.key_handle(),
        *v2.key_fingerprint(),
        v2.pcrs(),
        v2.ciphertext().to_vec(),
    )
    .unwrap();
    let bytes = v1.to_bytes();
    assert_eq!(bytes.len(), SEALED_FEK_V1_LEN);
    assert_eq!(bytes[4], 1);
    let v1 = SealedFek::parse(&bytes).unwrap();
    assert!(!v1.is_authenticated());
    assert_eq!(
        unseal_fek(&mut tpm, &v1).unwrap().secret_bytes(),
        fek.secret_bytes()
    );
    let upgraded = authenticate_sealed_fek(&mut tpm, &v1, &SealConfig::default()).unwrap();
    assert_eq!(upgraded.version(), 2);
    assert_eq!(upgraded, v2);
    assert_eq!(
        unseal_fek(&mut tpm, &SealedFek::parse(&upgraded.to_bytes()).unwrap())
            .unwrap()
            .secret_bytes(),
        fek.secret_bytes()
    );
}
